//! cgroup v2 cgroups made for one test, in the lane's guest (test/support/vm.rs), where the
//! unified hierarchy is mounted at /sys/fs/cgroup with +memory +cpu +pids in the root's
//! subtree_control. On drop, the processes left in one are killed and its directory removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const MOUNT: &str = "/sys/fs/cgroup";

pub struct Cgroup2 {
    dir: PathBuf,
    /// Children made with `child`, removed first.
    nested: bool,
}

impl Cgroup2 {
    /// `/sys/fs/cgroup/<name>-<pid>` with each `(file, value)` written into it.
    pub fn create(name: &str, files: &[(&str, &str)]) -> Result<Self, String> {
        let mount = Path::new(MOUNT);
        if !mount.join("cgroup.subtree_control").exists() {
            return Err(format!("no cgroup v2 hierarchy at {MOUNT}"));
        }
        Cgroup2::make(mount.join(format!("{name}-{}", std::process::id())), files)
    }

    /// A cgroup under this one, which then holds no process itself (cgroup v2 puts processes in
    /// leaves): the controllers are enabled for its children first.
    pub fn child(&mut self, name: &str, files: &[(&str, &str)]) -> Result<Cgroup2, String> {
        self.write("cgroup.subtree_control", "+memory +cpu +pids")?;
        self.nested = true;
        Cgroup2::make(self.dir.join(name), files)
    }

    fn make(dir: PathBuf, files: &[(&str, &str)]) -> Result<Self, String> {
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cgroup = Cgroup2 { dir, nested: false };
        for (file, value) in files {
            cgroup.write(file, value)?;
        }
        Ok(cgroup)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let path = self.dir.join(file);
        fs::write(&path, value)
            .map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
    }

    pub fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// `name value` of a flat-keyed file (memory.events, memory.stat, cpu.stat).
    pub fn field(&self, file: &str, name: &str) -> u64 {
        self.read(file)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The kernel's OOM kills in this cgroup and below (v2's memory.events counts the subtree).
    pub fn oom_kills(&self) -> u64 {
        self.field("memory.events", "oom_kill")
    }

    pub fn pids(&self) -> Vec<u32> {
        super::pids_in(&self.dir)
    }

    /// `command` run inside this cgroup (see `super::wrap_in`).
    pub fn wrap(&self, command: &Command) -> Command {
        super::wrap_in(&[self.dir.join("cgroup.procs")], command)
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut dirs = Vec::new();
        if self.nested {
            if let Ok(entries) = fs::read_dir(&self.dir) {
                dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
        }
        dirs.push(self.dir.clone());
        for dir in &dirs {
            // cgroup.kill (Linux 5.14) SIGKILLs every process in the cgroup and below.
            let _ = fs::write(dir.join("cgroup.kill"), "1");
            while fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if dir.exists() {
                eprintln!("could not remove {}", dir.display());
            }
        }
    }
}
