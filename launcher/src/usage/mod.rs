//! Memory accounting: the dyno's usage the way Heroku counts it (resident plus swap, not page
//! cache), the kernel's OOM kills, and each worker's own memory (`smaps`).
//!
//! Everything is read through a `Snapshot` root, `/` on a live machine, so the tests run over
//! fake host trees.

pub mod cpu;
pub mod pressure;
pub mod smaps;

use std::path::{Path, PathBuf};

use crate::host::{CgroupDir, Host, Snapshot, Version};
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

/// The dyno's memory as Heroku counts it against the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub rss_bytes: u64,
    pub swap_bytes: u64,
}

impl Usage {
    pub fn total_bytes(&self) -> u64 {
        self.rss_bytes + self.swap_bytes
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
            Meter::Processes => "the sum over /proc/*/smaps_rollup (no cgroup mounted)".to_owned(),
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
                let proc_dir = snapshot.path(Path::new("/proc"));
                Some(proportional(&proc_dir, &procs::pids(&proc_dir)))
            }
            Meter::OwnTree { pid } => {
                let proc_dir = snapshot.path(Path::new("/proc"));
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
    match dir.version {
        // `total_*` include the cgroups below; `rss` is anonymous memory (page cache is `cache`).
        Version::V1 => Some(Usage {
            rss_bytes: stat_field(&stat, "total_rss").or_else(|| stat_field(&stat, "rss"))?,
            swap_bytes: stat_field(&stat, "total_swap")
                .or_else(|| stat_field(&stat, "swap"))
                .unwrap_or(0),
        }),
        Version::V2 => {
            let swap = snapshot.read(&dir.path.join("memory.swap.current"));
            Some(Usage {
                rss_bytes: stat_field(&stat, "anon")?,
                swap_bytes: swap.ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0),
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
