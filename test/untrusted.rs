//! Black-box tests that nothing the launcher reads is trusted: a `launcher.toml` or a snapshot's
//! files that are devices, FIFOs or absurdly large, run under `prlimit --as` so that a read
//! without a bound fails the same way every run; the state directory, which lives in a /tmp
//! shared with every user; and files a non-root user cannot read. A dyno always boots.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

#[path = "untrusted/state.rs"]
mod state;
mod support;
use support::harness::{command, launcher_as_nobody, secs, Run, BOOT, LAUNCHER, SYSTEM_PATH};
use support::text;
use support::{needs_machine, MemoryCgroup};

/// The address space a command gets: a read of /dev/zero or a quadratic walk runs out of it at
/// once, where it would take the machine's memory without the limit.
const ADDRESS_SPACE: &str = "--as=268435456";

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.to_str().expect("utf-8")).expect("cstring");
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
}

/// `launcher ARGS` under prlimit, with only PATH and `env`, run to its end within 5 s.
fn bounded(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("prlimit");
    command
        .arg(ADDRESS_SPACE)
        .arg("--")
        .arg(LAUNCHER)
        .args(args)
        .current_dir("/")
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .envs(env.iter().copied());
    Run::output(command, secs(5))
}

#[test]
fn a_launcher_toml_that_is_a_device_or_a_fifo_is_refused_without_blocking() {
    for kind in ["/dev/zero", "/dev/urandom", "fifo"] {
        let app = TempDir::new().expect("temp dir");
        let file = app.path().join("launcher.toml");
        match kind {
            "fifo" => mkfifo(&file),
            device => std::os::unix::fs::symlink(device, &file).expect("symlink"),
        }
        let dir = app.path().to_str().expect("utf-8");
        for command in ["profile", "size"] {
            let output = bounded(&[command, "--app-dir", dir], &[]);
            let all = text(&output.stdout) + &text(&output.stderr);
            assert_eq!(output.status.code(), Some(0), "{kind}, {command}: {all}");
            assert!(
                all.contains("not a regular file"),
                "{kind}, {command}: {all}"
            );
        }
        let profile = bounded(&["profile", "--app-dir", dir], &[]);
        assert!(
            text(&profile.stdout).contains("export WEB_CONCURRENCY="),
            "the dyno still boots with its sizing: {}",
            text(&profile.stdout)
        );
        let run = bounded(&["run", "--app-dir", dir, "--", "sleep", "30"], &[]);
        assert_eq!(run.status.code(), Some(2), "{kind}: {}", text(&run.stderr));
        assert!(
            text(&run.stderr).contains("refusing to start"),
            "{}",
            text(&run.stderr)
        );
    }
}

#[test]
fn a_snapshot_with_devices_fifos_and_a_50000_level_cgroup_is_sized_at_once() {
    let root = TempDir::new().expect("temp dir");
    let write = |path: &str, content: &str| {
        let path = root.path().join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    };
    write("proc/self/cgroup", "0::/\n");
    write(
        "proc/self/mountinfo",
        "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
    );
    write("sys/devices/system/cpu/online", "0-3\n");
    fs::create_dir_all(root.path().join("sys/fs/cgroup")).expect("mkdir");
    // The link resolves inside the snapshot, as on the host it was taken from: to its /dev/zero.
    std::os::unix::fs::symlink("/dev/zero", root.path().join("sys/fs/cgroup/memory.max"))
        .expect("symlink");
    fs::create_dir(root.path().join("dev")).expect("mkdir");
    let zero = nix::sys::stat::mknod(
        &root.path().join("dev/zero"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    );
    // Without CAP_MKNOD, a FIFO stands for it: read, it would block as /dev/zero never ends.
    let device = if zero.is_ok() { "a device" } else { "a FIFO" };
    if zero.is_err() {
        mkfifo(&root.path().join("dev/zero"));
    }
    mkfifo(&root.path().join("proc/meminfo"));
    let dir = root.path().to_str().expect("utf-8");
    for command in ["size", "profile"] {
        let output = bounded(&[command, "--root", dir], &[]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{command}: {}",
            text(&output.stderr)
        );
    }
    let size = bounded(&["size", "--json", "--root", dir], &[]);
    let report: serde_json::Value = serde_json::from_slice(&size.stdout).expect("json");
    assert_eq!(report["memory_mb"], 512, "the last fallback: {report}");
    let notes = report["notes"].to_string();
    assert!(
        notes.contains(&format!("memory.max: not a regular file ({device})")),
        "{notes}"
    );
    assert!(notes.contains("/proc/meminfo"), "{notes}");

    // 100 KB of /proc/self/cgroup holding one path of 50,000 levels.
    write("proc/self/cgroup", &format!("0::{}\n", "/a".repeat(50_000)));
    let deep = bounded(&["size", "--json", "--root", dir], &[]);
    assert_eq!(deep.status.code(), Some(0), "{}", text(&deep.stderr));
    let report: serde_json::Value = serde_json::from_slice(&deep.stdout).expect("json");
    assert!(
        report["notes"]
            .to_string()
            .contains("longer than 4096 bytes"),
        "{report}"
    );
}

/// A snapshot tree in a temp dir: 4 CPUs, 16 GB of MemTotal, `cgroup` as /proc/self/cgroup and
/// `mountinfo` as its mountinfo; `write` adds files.
struct Tree {
    dir: TempDir,
}

impl Tree {
    fn new(cgroup: &str, mountinfo: &str) -> Tree {
        let tree = Tree {
            dir: TempDir::new().expect("temp dir"),
        };
        tree.write("proc/self/cgroup", cgroup);
        tree.write("proc/self/mountinfo", mountinfo);
        tree.write("proc/meminfo", "MemTotal: 16777216 kB\n");
        tree.write("sys/devices/system/cpu/online", "0-3\n");
        tree
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.root().join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }

    /// `launcher size --json --root` over the tree, bounded in memory and time.
    fn size(&self) -> (serde_json::Value, usize) {
        let root = self.root().to_str().expect("utf-8");
        let output = bounded(&["size", "--json", "--root", root], &[]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        let report = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)));
        (report, output.stdout.len())
    }
}

#[test]
fn finding_7_a_2048_level_cgroup_under_a_100_kb_mount_point_is_sized_in_bounded_memory() {
    // The cgroup path is within PATH_MAX (4096 bytes), the mount point is not; every level's
    // limit files were read and noted with the whole path, 200 MB a file.
    let mount_point = format!("/{}", "m".repeat(100_000));
    let tree = Tree::new(
        &format!("0::{}\n", "/a".repeat(2048)),
        &format!(
            "30 25 0:26 / {mount_point} rw - cgroup2 cgroup2 rw\n\
             35 31 0:32 / {mount_point} rw - cgroup cgroup rw,memory,cpu\n"
        ),
    );
    tree.write(
        "proc/self/cgroup",
        &format!("4:memory,cpu:{0}\n0::{0}\n", "/a".repeat(2048)),
    );
    let (report, bytes) = tree.size();
    assert_eq!(report["memory_mb"], 16384, "MemTotal: {report}");
    let notes = report["notes"].as_array().expect("notes");
    // At most 32 of the reading's own and a count of the rest, beside the formula's.
    assert!(notes.len() <= 40, "{} notes", notes.len());
    assert!(bytes < 64 * 1024, "{bytes} bytes of output");

    // The same depth under an ordinary mount point: the deepest levels' paths are longer than
    // PATH_MAX and cannot be opened, each worth a note.
    let tree = Tree::new(
        &format!("0::{}\n", "/a".repeat(2048)),
        "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
    );
    let (report, bytes) = tree.size();
    assert_eq!(report["memory_mb"], 16384, "MemTotal: {report}");
    let notes = report["notes"].as_array().expect("notes");
    // At most 32 of the reading's own and a count of the rest, beside the formula's.
    assert!(notes.len() <= 40, "{} notes", notes.len());
    assert!(bytes < 64 * 1024, "{bytes} bytes of output");
}

#[test]
fn finding_7_dot_dot_in_a_mount_point_and_links_out_of_the_tree_read_nothing_outside_root() {
    // Beside the tree, a limit of 256 MB the tree must not reach, in both versions' names.
    let outside = TempDir::new().expect("temp dir");
    fs::write(outside.path().join("memory.max"), "268435456\n").expect("write");
    fs::write(outside.path().join("memory.limit_in_bytes"), "268435456\n").expect("write");
    fs::write(outside.path().join("meminfo"), "MemTotal: 1048576 kB\n").expect("write");
    let up = "/..".repeat(Path::new("/").join(outside.path()).components().count() + 4);
    let escape = format!("{up}{}", outside.path().display());
    let cases = [
        // `..` in the mount point of either version.
        (
            "0::/\n".to_owned(),
            format!("30 25 0:26 / {escape} rw - cgroup2 cgroup2 rw\n"),
            vec![],
        ),
        (
            "4:memory:/\n".to_owned(),
            format!("35 31 0:32 / {escape} rw - cgroup cgroup rw,memory\n"),
            vec![],
        ),
        // `..` in the mount point's root, and a mount point that is a link out of the tree.
        (
            "0::/x\n".to_owned(),
            "30 25 0:26 /.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n".to_owned(),
            vec![("sys/fs/cgroup", outside.path().to_path_buf())],
        ),
        // Heroku's well-known v1 path as a relative link that climbs out.
        (
            "0::/\n".to_owned(),
            String::new(),
            vec![(
                "sys/fs/cgroup/memory",
                Path::new(&escape[1..]).to_path_buf(),
            )],
        ),
    ];
    for (cgroup, mountinfo, links) in cases {
        let tree = Tree::new(&cgroup, &mountinfo);
        for (link, target) in &links {
            let link = tree.root().join(link);
            fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
            std::os::unix::fs::symlink(target, link).expect("symlink");
        }
        let (report, _) = tree.size();
        assert_eq!(
            report["memory_mb"], 16384,
            "{mountinfo} {links:?}: the tree's MemTotal, not the limit outside it: {report}"
        );
    }
    // /proc/meminfo itself as a link out of the tree.
    let tree = Tree::new("0::/\n", "");
    fs::remove_file(tree.root().join("proc/meminfo")).expect("rm");
    std::os::unix::fs::symlink(
        outside.path().join("meminfo"),
        tree.root().join("proc/meminfo"),
    )
    .expect("symlink");
    let (report, _) = tree.size();
    assert_eq!(report["memory_mb"], 512, "the last fallback: {report}");
}

#[test]
fn finding_7_an_implausible_mem_total_does_not_drop_real_limits() {
    for (meminfo, mountinfo, limit_file) in [
        (
            "MemTotal: 1 kB\n",
            "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "sys/fs/cgroup/memory.max",
        ),
        (
            "MemTotal: 40000 kB\n",
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
        ),
        // Heroku's Cedar layout: no cgroup mount, the limit file at the well-known path.
        (
            "MemTotal: 0 kB\n",
            "",
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
        ),
    ] {
        let tree = Tree::new("4:memory:/\n0::/\n", mountinfo);
        tree.write("proc/meminfo", meminfo);
        tree.write(limit_file, "536870912\n");
        let (report, _) = tree.size();
        assert_eq!(report["memory_mb"], 512, "{meminfo}: {report}");
        assert_eq!(report["web_concurrency"], 2, "{meminfo}: {report}");
        let notes = report["notes"].to_string();
        assert!(notes.contains("MemTotal"), "{meminfo}: {notes}");
        assert!(!notes.contains("more than the host"), "{meminfo}: {notes}");
    }
    // Without any limit, an implausible MemTotal is not the dyno's size either.
    let tree = Tree::new("0::/\n", "");
    tree.write("proc/meminfo", "MemTotal: 1 kB\n");
    let (report, _) = tree.size();
    assert_eq!(report["memory_mb"], 512, "{report}");
    assert!(
        report["memory_source"].to_string().contains("default"),
        "{report}"
    );
}

#[test]
fn an_unreadable_limit_file_is_named_in_the_notes_for_a_non_root_user() {
    needs_machine(|| {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root, to run launcher size as nobody".to_owned());
        }
        let root = TempDir::new().map_err(|e| e.to_string())?;
        let write = |path: &str, content: &str| {
            let path = root.path().join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, content).expect("write");
        };
        write("proc/self/cgroup", "0::/\n");
        write(
            "proc/self/mountinfo",
            "20 1 0:5 / /proc rw - proc proc rw\n",
        );
        write("proc/meminfo", "MemTotal: 16777216 kB\n");
        write("sys/devices/system/cpu/online", "0-7\n");
        write("sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n");
        let limit = root
            .path()
            .join("sys/fs/cgroup/memory/memory.limit_in_bytes");
        fs::set_permissions(&limit, fs::Permissions::from_mode(0o000)).expect("chmod");
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut size = launcher_as_nobody(&["size", "--json", "--root"]);
        size.arg(root.path());
        let output = Run::output(size, secs(5));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        assert_eq!(
            report["memory_mb"], 16384,
            "MemTotal, the limit unreadable: {report}"
        );
        let notes = report["notes"].to_string();
        assert!(
            notes.contains("cannot read /sys/fs/cgroup/memory/memory.limit_in_bytes")
                && notes.contains("ermission denied"),
            "{notes}"
        );
        Ok(())
    });
}

#[test]
fn finding_9_the_exec_d_program_does_not_wait_on_a_full_fd_3_nobody_reads() {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;

    let layer = TempDir::new().expect("temp dir");
    let program = layer.path().join("web-concurrency");
    std::os::unix::fs::symlink(LAUNCHER, &program).expect("symlink");
    // A pipe filled to the brim; this test holds its read end and reads nothing until the end.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let (mut read_end, mut write_end) = (fs::File::from(read_end), fs::File::from(write_end));
    let nonblocking = |file: &fs::File, on: bool| {
        let flags = if on { libc::O_NONBLOCK } else { 0 };
        // SAFETY: F_SETFL on a descriptor this test owns.
        assert_eq!(
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags) },
            0
        );
    };
    nonblocking(&write_end, true);
    let mut filled = 0;
    while let Ok(n) = write_end.write(&[b'x'; 4096]) {
        filled += n;
    }
    // As the lifecycle hands it over: blocking.
    nonblocking(&write_end, false);
    let fd = OwnedFd::from(write_end);
    let raw = fd.as_raw_fd();
    let mut exec_d = Command::new(&program);
    exec_d
        .current_dir(layer.path())
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("DYNO", "web-12a34b56d-e78f9");
    // SAFETY: dup2 is async-signal-safe; it leaves fd 3 open across exec (no FD_CLOEXEC).
    unsafe {
        exec_d.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = std::time::Instant::now();
    let output = Run::output(exec_d, secs(10));
    let took = started.elapsed();
    drop(fd);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(took < secs(5), "{took:?}");
    let stderr = text(&output.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("fd 3"), "{stderr}");
    assert!(
        stderr
            .lines()
            .next()
            .unwrap_or_default()
            .starts_with("launcher: WEB_CONCURRENCY="),
        "the boot line is still written: {stderr}"
    );
    // Nothing was written into the pipe: no half of the output for the lifecycle to parse.
    nonblocking(&read_end, true);
    let mut held = Vec::new();
    let _ = read_end.read_to_end(&mut held);
    assert_eq!(held.len(), filled);
    assert!(held.iter().all(|b| *b == b'x'));
}
