//! Reading the size of the machine (memory limit and usable CPUs) from /proc and cgroup files.
//!
//! Every path is read relative to a root directory, `/` on a live machine, so that a snapshot of
//! another host (`launcher size --root DIR`) and the tests' fake trees are read the same way.

mod cgroup;
mod cpu;
mod limits;
mod memory;
mod procfs;

pub use cgroup::{CgroupDir, Version};
pub use limits::{LimitFiles, Size};
pub use procfs::kib_field_bytes;

use std::io;
use std::path::{Path, PathBuf};

pub use crate::units::MIB;

/// Where the kernel shows processes on a live machine: the one place the path is written. Every
/// reader takes it from a `Snapshot` (`proc_dir`, `proc_file`), so that a fake tree stands in for it.
pub const PROC: &str = "/proc";

/// The longest cgroup path taken from /proc/self/cgroup: PATH_MAX.
const MAX_CGROUP_PATH: usize = 4096;

/// What the machine offers this process, each figure with the place it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub memory_bytes: u64,
    pub memory_source: String,
    pub cpus: u32,
    pub cpus_source: String,
    /// The CPUs the dyno may use, exactly: a quota of 0.9 CPU is 0.9, not the 1 of `cpus`.
    pub cpu_capacity: f64,
    /// The cgroup directory the dyno's CPU time is counted in, if one can be read.
    pub cpu_cgroup: Option<CgroupDir>,
    /// The cgroup directory the memory limit was read from, if it came from a cgroup file.
    pub memory_cgroup: Option<CgroupDir>,
    /// Values that were present but ignored, and files that could not be read, for `launcher size`.
    pub notes: Vec<String>,
    /// The files the limits were read from, for reading them again while running.
    pub limit_files: LimitFiles,
}

impl Host {
    /// Memory in MiB, rounded down.
    pub fn memory_mb(&self) -> u64 {
        crate::units::whole_mb(self.memory_bytes)
    }

    /// The figures the limits gave.
    pub fn size(&self) -> Size {
        Size {
            memory_bytes: self.memory_bytes,
            memory_source: self.memory_source.clone(),
            cpus: self.cpus,
            cpus_source: self.cpus_source.clone(),
            cpu_capacity: self.cpu_capacity,
        }
    }
}

/// A host's files seen through a root directory.
pub struct Snapshot {
    root: PathBuf,
}

impl Snapshot {
    pub fn new(root: &Path) -> Self {
        Snapshot {
            root: root.to_path_buf(),
        }
    }

    /// The live machine.
    pub fn live() -> Self {
        Snapshot::new(Path::new("/"))
    }

    /// The process filesystem in this snapshot.
    pub fn proc_dir(&self) -> PathBuf {
        self.path(Path::new(PROC))
    }

    /// A host path under the process filesystem, `self/cgroup` -> `/proc/self/cgroup`, as the
    /// host names it (for `read` and for messages).
    pub fn proc_file(relative: &str) -> PathBuf {
        Path::new(PROC).join(relative)
    }

    /// Reads the file that the host knows as `host_path` (an absolute path): a regular file of
    /// bounded size, never blocking (`files`), whatever a snapshot holds under that name.
    pub fn read(&self, host_path: &Path) -> io::Result<String> {
        crate::files::read_text(&self.path(host_path), crate::files::MAX_BYTES)
    }

    /// Reads a file that may well not exist: a missing one is silent, one that exists but cannot
    /// be read (no permission, not a regular file, too large) is noted, so that `launcher size`
    /// says why a limit was not taken.
    pub fn read_optional(&self, host_path: &Path, notes: &mut Vec<String>) -> Option<String> {
        match self.read(host_path) {
            Ok(text) => Some(text),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => {
                notes.push(format!("cannot read {}: {err}", host_path.display()));
                None
            }
        }
    }

    /// Where the host's `host_path` is in this snapshot.
    pub fn path(&self, host_path: &Path) -> PathBuf {
        let relative = host_path.strip_prefix("/").unwrap_or(host_path);
        self.root.join(relative)
    }
}

/// Reads memory and CPUs. Never fails: what cannot be read falls back, and the source says so.
pub fn read(root: &Path) -> Host {
    let snapshot = Snapshot::new(root);
    let mut notes = Vec::new();
    let mut membership = match snapshot.read(&Snapshot::proc_file("self/cgroup")) {
        Ok(text) => procfs::parse_cgroup_membership(&text),
        Err(err) => {
            notes.push(format!("cannot read {PROC}/self/cgroup: {err}"));
            Vec::new()
        }
    };
    // No real cgroup path is longer than a path can be; a longer one would cost time and memory
    // in proportion to its square (every level up to the mount is read).
    let before = membership.len();
    membership.retain(|m| m.path.len() <= MAX_CGROUP_PATH);
    if membership.len() < before {
        notes.push(format!(
            "ignored {PROC}/self/cgroup paths longer than {MAX_CGROUP_PATH} bytes"
        ));
    }
    let mounts = match snapshot.read(&Snapshot::proc_file("self/mountinfo")) {
        Ok(text) => procfs::parse_mountinfo(&text),
        Err(err) => {
            notes.push(format!("cannot read {PROC}/self/mountinfo: {err}"));
            Vec::new()
        }
    };
    let host_total = snapshot
        .read(&Snapshot::proc_file("meminfo"))
        .ok()
        .and_then(|text| procfs::meminfo_total_bytes(&text));
    let memory_hierarchies = cgroup::hierarchies(&membership, &mounts, "memory");
    let (memory, memory_cgroup, memory_files) =
        memory::read(&snapshot, &memory_hierarchies, host_total, &mut notes);
    let cpu_hierarchies = cgroup::hierarchies(&membership, &mounts, "cpu");
    let (cpus, cpu_capacity, cpus_fixed, quota_dirs) =
        cpu::read(&snapshot, &cpu_hierarchies, &mut notes);
    let cpuacct_hierarchies = cgroup::hierarchies(&membership, &mounts, "cpuacct");
    let cpu_cgroup = cpu::accounting(&snapshot, &cpuacct_hierarchies);
    notes.dedup();
    Host {
        memory_bytes: memory.value,
        memory_source: memory.source,
        cpus: cpus.value,
        cpus_source: cpus.source,
        cpu_capacity,
        cpu_cgroup,
        memory_cgroup,
        notes,
        limit_files: LimitFiles {
            memory: memory_files,
            host_total,
            cpu: quota_dirs,
            cpus_fixed,
        },
    }
}

/// A value and the place it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reading<T> {
    value: T,
    source: String,
}

/// Of several readings, the smallest; on a tie, the first (callers list the broadest source first,
/// so that a limit equal to the whole machine is not named as the reason).
/// `value` says which figure of an item is compared.
fn smallest<I, T: Ord>(readings: Vec<I>, value: impl Fn(&I) -> T) -> Option<I> {
    readings.into_iter().reduce(|best, next| {
        if value(&next) < value(&best) {
            next
        } else {
            best
        }
    })
}

#[cfg(test)]
pub mod fake;
#[cfg(test)]
mod tests;
