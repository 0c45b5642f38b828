//! Memory accounting: the dyno's usage as the kernel charges it against the limit and cannot give
//! back (resident, swap, shared memory such as tmpfs and /dev/shm files, kernel memory; not page
//! cache, which it reclaims first), the kernel's OOM kills, and each worker's own memory (`smaps`).
//!
//! Everything is read through a `Snapshot` root, `/` on a live machine, so the tests run over
//! fake host trees.

pub mod cpu;
pub mod pressure;
pub mod smaps;

use std::path::{Path, PathBuf};

use crate::host::{CgroupDir, Host, Snapshot, Version, PROC};
use crate::procs;
use pressure::Pressure;

/// Where the dyno's usage is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meter {
    /// The cgroup that holds the memory limit: its `memory.stat` (and v2 `memory.swap.current`).
    Cgroup(CgroupDir),
    /// Heroku's Cedar layout: a limit file but no cgroup mounted. The dyno's processes are the
    /// ones in /proc (its own pid namespace); their proportional memory is summed, so pages
    /// shared after fork count once.
    Processes,
    /// No limit at all: the machine's memory is the quota, and what counts against it is the app's
    /// own: the proportional memory of `pid` (the launcher) and everything under it. Other
    /// processes on the machine are not the app's to recycle for.
    OwnTree { pid: i32 },
}

/// The dyno's memory that counts against its limit and that the kernel cannot reclaim: what the
/// OOM killer acts on when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Anonymous memory, resident (Heroku's `memory_rss`).
    pub rss_bytes: u64,
    pub swap_bytes: u64,
    /// Shared memory: tmpfs and /dev/shm files, shared anonymous mappings. It is page cache to the
    /// kernel, but without swap it cannot be reclaimed, and it outlives the worker that wrote it.
    pub shmem_bytes: u64,
    /// Kernel memory charged to the dyno: slab, page tables, stacks, socket buffers.
    pub kernel_bytes: u64,
}

impl Usage {
    pub fn total_bytes(&self) -> u64 {
        self.rss_bytes + self.swap_bytes + self.shmem_bytes + self.kernel_bytes
    }
}

impl Meter {
    /// The meter for the limit `host` found; `pid` is the launcher's own.
    pub fn for_host(snapshot: &Snapshot, host: &Host, pid: i32) -> Meter {
        match &host.memory_cgroup {
            Some(dir) if snapshot.path(&dir.path.join("memory.stat")).is_file() => {
                Meter::Cgroup(dir.clone())
            }
            Some(_) => Meter::Processes,
            None => Meter::OwnTree { pid },
        }
    }

    /// Where the figures come from, for log lines and `launcher size`.
    pub fn describe(&self) -> String {
        match self {
            Meter::Cgroup(dir) => format!(
                "{} {}",
                dir.version.label(),
                dir.path.join("memory.stat").display()
            ),
            Meter::Processes => format!("the sum over {PROC}/*/smaps_rollup (no cgroup mounted)"),
            Meter::OwnTree { .. } => {
                "smaps_rollup of the launcher and its processes (no memory limit)".to_owned()
            }
        }
    }

    /// The dyno's usage now; None when its files cannot be read.
    pub fn usage(&self, snapshot: &Snapshot) -> Option<Usage> {
        match self {
            Meter::Cgroup(dir) => cgroup_usage(snapshot, dir),
            Meter::Processes => {
                let proc_dir = snapshot.proc_dir();
                Some(proportional(&proc_dir, &procs::pids(&proc_dir)))
            }
            Meter::OwnTree { pid } => {
                let proc_dir = snapshot.proc_dir();
                Some(proportional(&proc_dir, &procs::tree(&proc_dir, *pid)))
            }
        }
    }

    /// The pressure (PSI) of the dyno's cgroup, where it is a cgroup v2 one with PSI on.
    pub fn pressure(&self, snapshot: &Snapshot) -> Option<Pressure> {
        match self {
            Meter::Cgroup(dir) => Pressure::read(snapshot, dir),
            _ => None,
        }
    }

    /// How many processes the kernel's OOM killer has killed in the dyno so far; None where there
    /// is no cgroup to count them (the kill is then not claimed).
    pub fn oom_kills(&self, snapshot: &Snapshot) -> Option<u64> {
        let Meter::Cgroup(dir) = self else {
            return None;
        };
        match dir.version {
            // v2's memory.events counts the whole subtree.
            Version::V2 => {
                let events = snapshot.read(&dir.path.join("memory.events")).ok()?;
                stat_field(&events, "oom_kill")
            }
            // v1 counts a kill only in the killed process's own cgroup: sum the subtree.
            Version::V1 => {
                let dirs = subtree(snapshot, &dir.path);
                let counts = dirs.iter().filter_map(|d| {
                    let text = snapshot.read(&d.join("memory.oom_control")).ok()?;
                    stat_field(&text, "oom_kill")
                });
                counts.reduce(|a, b| a + b)
            }
        }
    }
}

fn cgroup_usage(snapshot: &Snapshot, dir: &CgroupDir) -> Option<Usage> {
    let stat = snapshot.read(&dir.path.join("memory.stat")).ok()?;
    let number = |file: &str| {
        let text = snapshot.read(&dir.path.join(file)).ok()?;
        text.trim().parse::<u64>().ok()
    };
    match dir.version {
        // `total_*` include the cgroups below; `rss` is anonymous memory, `shmem` is counted in
        // `cache` (so not in `rss`); kernel memory has a counter of its own, hierarchical too.
        Version::V1 => {
            let total = |name: &str| {
                stat_field(&stat, &format!("total_{name}")).or_else(|| stat_field(&stat, name))
            };
            Some(Usage {
                rss_bytes: total("rss")?,
                swap_bytes: total("swap").unwrap_or(0),
                shmem_bytes: total("shmem").unwrap_or(0),
                kernel_bytes: number("memory.kmem.usage_in_bytes").unwrap_or(0),
            })
        }
        // `anon` excludes shared memory (`shmem`, file-backed); `kernel` (5.18 and later) sums
        // slab, stacks, page tables and the rest, else those are summed here; socket buffers
        // are `sock`, apart.
        Version::V2 => {
            let field = |name: &str| stat_field(&stat, name).unwrap_or(0);
            let kernel = stat_field(&stat, "kernel").unwrap_or_else(|| {
                let parts = ["kernel_stack", "pagetables", "percpu", "slab_unreclaimable"];
                parts.iter().map(|p| field(p)).sum()
            });
            Some(Usage {
                rss_bytes: stat_field(&stat, "anon")?,
                swap_bytes: number("memory.swap.current").unwrap_or(0),
                shmem_bytes: field("shmem"),
                kernel_bytes: kernel + field("sock"),
            })
        }
    }
}

/// The proportional memory of `pids`, resident and swapped: shared pages count once.
fn proportional(proc_dir: &Path, pids: &[i32]) -> Usage {
    let total = smaps::total(proc_dir, pids);
    Usage {
        rss_bytes: total.pss_bytes - total.swap_bytes,
        swap_bytes: total.swap_bytes,
        ..Usage::default()
    }
}

/// `name value` from a `memory.stat`, `memory.events` or `memory.oom_control` file.
fn stat_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// `dir` and every directory below it, as host paths.
fn subtree(snapshot: &Snapshot, dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    let mut next = 0;
    // Bounded: a cgroup tree is small, and a fake or odd one must not hang the launcher.
    while next < found.len() && found.len() < 4096 {
        let Ok(entries) = std::fs::read_dir(snapshot.path(&found[next])) else {
            next += 1;
            continue;
        };
        let children = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| found[next].join(e.file_name()));
        let children: Vec<PathBuf> = children.collect();
        found.extend(children);
        next += 1;
    }
    found
}

#[cfg(test)]
mod tests;
