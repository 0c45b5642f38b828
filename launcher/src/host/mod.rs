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
use std::path::{Component, Path, PathBuf};

pub use crate::units::MIB;

/// Where the kernel shows processes on a live machine: the one place the path is written. Every
/// reader takes it from a `Snapshot` (`proc_dir`, `proc_file`), so that a fake tree stands in for it.
pub const PROC: &str = "/proc";

/// The longest cgroup path taken from /proc/self/cgroup, and the longest mount point taken from
/// /proc/self/mountinfo: PATH_MAX.
const MAX_PATH: usize = 4096;

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

/// A host's files seen through a root directory. Under a root other than `/` (a snapshot of
/// another host), nothing outside the root is read: a host path with `..` is refused, and
/// symlinks resolve inside the root (`files::read_text_in`).
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
        let relative = relative(host_path)?;
        if self.root == Path::new("/") {
            return crate::files::read_text(host_path, crate::files::MAX_BYTES);
        }
        crate::files::read_text_in(&self.root, relative, crate::files::MAX_BYTES)
    }

    /// Reads a file that may well not exist: a missing one is silent, one that exists but cannot
    /// be read (no permission, not a regular file, too large) is noted, so that `launcher size`
    /// says why a limit was not taken.
    pub fn read_optional(&self, host_path: &Path, notes: &mut Notes) -> Option<String> {
        match self.read(host_path) {
            Ok(text) => Some(text),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => {
                notes.push(format!("cannot read {}: {err}", shown(host_path)));
                None
            }
        }
    }

    /// Whether the host's `host_path` is a regular file that can be read, seen as `read` sees it.
    pub fn is_file(&self, host_path: &Path) -> bool {
        let Ok(relative) = relative(host_path) else {
            return false;
        };
        if self.root == Path::new("/") {
            return host_path.is_file();
        }
        crate::files::is_file_in(&self.root, relative)
    }

    /// Where the host's `host_path` is in this snapshot, for the live machine's walks (the
    /// supervisor's, with the root `/`) and the tests' fake trees: a path joined, not resolved
    /// inside the root as `read` resolves it.
    pub fn path(&self, host_path: &Path) -> PathBuf {
        let relative = host_path.strip_prefix("/").unwrap_or(host_path);
        self.root.join(relative)
    }
}

/// `host_path` without its leading `/`, if it names a file plainly: `..` and `.` are refused, as
/// a mount point or a cgroup path from a snapshot could hold them to lead out of it.
fn relative(host_path: &Path) -> io::Result<&Path> {
    if !is_plain(host_path) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a plain absolute path (.. or . in it)",
        ));
    }
    Ok(host_path.strip_prefix("/").unwrap_or(host_path))
}

/// Reads memory and CPUs. Never fails: what cannot be read falls back, and the source says so.
pub fn read(root: &Path) -> Host {
    let snapshot = Snapshot::new(root);
    let mut notes = Notes::default();
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
    membership.retain(|m| m.path.len() <= MAX_PATH);
    if membership.len() < before {
        notes.push(format!(
            "ignored {PROC}/self/cgroup paths longer than {MAX_PATH} bytes"
        ));
    }
    let mut mounts = match snapshot.read(&Snapshot::proc_file("self/mountinfo")) {
        Ok(text) => procfs::parse_mountinfo(&text),
        Err(err) => {
            notes.push(format!("cannot read {PROC}/self/mountinfo: {err}"));
            Vec::new()
        }
    };
    // The kernel writes a mount point as a plain path of at most PATH_MAX; anything else (`..`
    // in a snapshot's mountinfo, 100 KB of name) would lead out of the snapshot or cost memory
    // at every level read under it.
    let before = mounts.len();
    mounts.retain(|m| is_plain(Path::new(&m.mount_point)) && m.mount_point.len() <= MAX_PATH);
    if mounts.len() < before {
        notes.push(format!(
            "ignored cgroup mounts in {PROC}/self/mountinfo whose mount point is not a plain \
             absolute path of at most {MAX_PATH} bytes"
        ));
    }
    let memory_hierarchies = cgroup::hierarchies(&membership, &mounts, "memory");
    let (memory, memory_cgroup, memory_files, host_total) =
        memory::read(&snapshot, &memory_hierarchies, &mut notes);
    let cpu_hierarchies = cgroup::hierarchies(&membership, &mounts, "cpu");
    let (cpus, cpu_capacity, cpus_fixed, quota_dirs) =
        cpu::read(&snapshot, &cpu_hierarchies, &mut notes);
    let cpuacct_hierarchies = cgroup::hierarchies(&membership, &mounts, "cpuacct");
    let cpu_cgroup = cpu::accounting(&snapshot, &cpuacct_hierarchies);
    Host {
        memory_bytes: memory.value,
        memory_source: memory.source,
        cpus: cpus.value,
        cpus_source: cpus.source,
        cpu_capacity,
        cpu_cgroup,
        memory_cgroup,
        notes: notes.into_vec(),
        limit_files: LimitFiles {
            memory: memory_files,
            host_total,
            cpu: quota_dirs,
            cpus_fixed,
        },
    }
}

/// Whether `path` is absolute with no `..` nor `.` in it.
fn is_plain(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// The most notes one reading keeps: a crafted tree can make every level of a deep hierarchy
/// worth a note, and `launcher size` prints them all.
const MAX_NOTES: usize = 32;

/// The longest path shown in a note; a longer one is shown clipped in the middle.
const MAX_SHOWN_PATH: usize = 256;

/// What a reading passed over and why, for `launcher size`: bounded in number (`MAX_NOTES`, then
/// a count of the rest), a note repeated at once kept once.
#[derive(Debug, Default)]
pub struct Notes {
    kept: Vec<String>,
    left_out: usize,
}

impl Notes {
    pub fn push(&mut self, note: String) {
        if self.kept.last() == Some(&note) {
            return;
        }
        if self.kept.len() < MAX_NOTES {
            self.kept.push(note);
        } else {
            self.left_out += 1;
        }
    }

    fn into_vec(mut self) -> Vec<String> {
        if self.left_out > 0 {
            self.kept.push(format!(
                "{} more notes like these were left out",
                self.left_out
            ));
        }
        self.kept
    }
}

/// `path` for a note: whole up to `MAX_SHOWN_PATH` bytes, else its start and end.
pub fn shown(path: &Path) -> String {
    let text = path.display().to_string();
    if text.len() <= MAX_SHOWN_PATH {
        return text;
    }
    let head: String = text.chars().take(MAX_SHOWN_PATH / 2).collect();
    let tail: Vec<char> = text.chars().rev().take(MAX_SHOWN_PATH / 2 - 8).collect();
    let tail: String = tail.into_iter().rev().collect();
    format!("{head}...({} bytes)...{tail}", text.len())
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
