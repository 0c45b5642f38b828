//! A fake host tree in a temp dir, for the tests that read /proc and /sys through a root.

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use super::{read, Host};

pub struct FakeHost {
    dir: TempDir,
}

impl FakeHost {
    /// A machine with 8 online CPUs, 16 GiB of RAM and no cgroup at all.
    pub fn new() -> Self {
        let host = FakeHost {
            dir: TempDir::new().expect("temp dir"),
        };
        host.write("/sys/devices/system/cpu/online", "0-7\n");
        host.write(
            "/proc/meminfo",
            &format!("MemTotal: {} kB\n", 16 * 1024 * 1024),
        );
        host.write(
            "/proc/self/status",
            "Name:\tlauncher\nCpus_allowed_list:\t0-7\n",
        );
        host
    }

    /// Nothing at all: no /proc, no /sys.
    pub fn empty() -> Self {
        FakeHost {
            dir: TempDir::new().expect("temp dir"),
        }
    }

    pub fn write(&self, host_path: &str, text: &str) -> &Self {
        let path = self.dir.path().join(host_path.trim_start_matches('/'));
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
        self
    }

    /// cgroup v1 with the memory and cpu controllers mounted, the process in `path` of both.
    pub fn cgroup_v1(&self, path: &str) -> &Self {
        self.write(
            "/proc/self/cgroup",
            &format!("5:memory:{path}\n3:cpu,cpuacct:{path}\n0::/\n"),
        )
        .write(
            "/proc/self/mountinfo",
            "\
25 1 0:22 / / rw - ext4 /dev/vda rw
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
",
        )
    }

    /// cgroup v2 unified hierarchy at /sys/fs/cgroup, the process in `path`.
    pub fn cgroup_v2(&self, path: &str) -> &Self {
        self.write("/proc/self/cgroup", &format!("0::{path}\n")).write(
            "/proc/self/mountinfo",
            "25 1 0:22 / / rw - ext4 /dev/vda rw\n30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        )
    }

    pub fn read(&self) -> Host {
        read(self.dir.path())
    }

    /// The root the host's paths are under.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}
