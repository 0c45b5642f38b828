//! The limits again, while the app runs: a container's limits can change in place (Kubernetes
//! resizes a running pod's `memory.max` and `cpu.max`). `read` found the limit files once, by
//! walking this process's cgroups; `LimitFiles` reads those same files again, and nothing else:
//! a handful of small reads, no hierarchy discovery (docs/architecture.md, "Limits that change").

use std::path::PathBuf;

use super::cgroup::Version;
use super::memory::HostTotal;
use super::{cpu, memory, Notes, Reading, Snapshot};

/// What the limits give, each figure with its source: the inputs of the formula that change.
#[derive(Debug, Clone, PartialEq)]
pub struct Size {
    pub memory_bytes: u64,
    pub memory_source: String,
    pub cpus: u32,
    pub cpus_source: String,
    /// The CPUs the dyno may use, exactly (a quota of 0.9 CPU is 0.9).
    pub cpu_capacity: f64,
}

impl Size {
    /// Memory in MiB, rounded down.
    pub fn memory_mb(&self) -> u64 {
        crate::units::whole_mb(self.memory_bytes)
    }
}

/// A memory limit file found at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitFile {
    pub path: PathBuf,
    pub version: Version,
    /// One of the well-known paths read when the hierarchy gave no limit (Heroku's Cedar layout).
    pub well_known: bool,
}

/// A cgroup directory whose CPU quota files were found at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaDir {
    pub path: PathBuf,
    pub version: Version,
}

/// The files the limits were read from at boot, and what does not change while running.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitFiles {
    pub(super) memory: Vec<LimitFile>,
    /// MemTotal at boot: the memory when no file gives a limit, and what a limit may not exceed.
    pub(super) host_total: HostTotal,
    pub(super) cpu: Vec<QuotaDir>,
    /// The CPU counts that a resize does not change: the online CPUs, the affinity mask.
    pub(super) cpus_fixed: Vec<Reading<u32>>,
}

impl LimitFiles {
    /// How many files a reading reads.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        let quota_files = |dir: &QuotaDir| match dir.version {
            Version::V1 => 2,
            Version::V2 => 1,
        };
        self.memory.len() + self.cpu.iter().map(quota_files).sum::<usize>()
    }

    /// The limits now, by the rules of the boot (`host::read`), from the files found then. None
    /// when one of them cannot be read now: a limit is never taken from part of its files.
    pub fn read(&self, snapshot: &Snapshot) -> Option<Size> {
        let mut notes = Notes::default();
        let mut by_hierarchy = Vec::new();
        let mut well_known = Vec::new();
        for file in &self.memory {
            let text = snapshot.read(&file.path).ok()?;
            let limit = memory::parse_limit(&text, file, self.host_total.ok(), &mut notes);
            match file.well_known {
                false => by_hierarchy.extend(limit),
                true => well_known.extend(limit),
            }
        }
        // As at boot: the well-known paths count only when the hierarchy gives no limit.
        let limits = match by_hierarchy.is_empty() {
            true => well_known,
            false => by_hierarchy,
        };
        let (memory, _) = memory::choose(limits, self.host_total, &mut notes);
        let mut quotas = Vec::new();
        for dir in &self.cpu {
            let mut unread = Notes::default();
            let texts = cpu::quota_texts(snapshot, dir, &mut unread);
            if !unread.into_vec().is_empty() || texts.is_none() {
                return None;
            }
            quotas.extend(texts.and_then(|t| cpu::parse_quota(&t, dir.version, &mut notes)));
        }
        let (cpus, cpu_capacity) = cpu::choose(self.cpus_fixed.clone(), quotas);
        Some(Size {
            memory_bytes: memory.value,
            memory_source: memory.source,
            cpus: cpus.value,
            cpus_source: cpus.source,
            cpu_capacity,
        })
    }
}

#[cfg(test)]
mod tests;
