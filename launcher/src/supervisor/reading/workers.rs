//! The workers as the memory guard and the sizers see them: in fan-out the launcher's copies of
//! the command, in delegate mode the server's own children (the launcher's grandchildren, ready a
//! grace period after they appear); and, when a decision needs it, each one's memory summed over
//! its process tree.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::procs;
use crate::servers::Mode;
use crate::supervisor::pool::Pool;
use crate::usage::smaps;

/// One worker: in fan-out a copy of the command, in delegate mode one of the server's own
/// workers. Memory is summed over the worker's process tree (zero until measured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerMemory {
    pub pid: i32,
    /// The launcher's slot number (fan-out only).
    pub slot: Option<u32>,
    pub uss_bytes: u64,
    pub pss_bytes: u64,
    /// Written pages it still shares since the fork, which it may copy (`smaps::Footprint`).
    pub shared_dirty_bytes: u64,
    pub ready: bool,
    pub age: Duration,
}

impl WorkerMemory {
    fn blank(pid: i32, slot: Option<u32>, ready: bool, age: Duration) -> WorkerMemory {
        WorkerMemory {
            pid,
            slot,
            uss_bytes: 0,
            pss_bytes: 0,
            shared_dirty_bytes: 0,
            ready,
            age,
        }
    }
}

/// Finds the workers, and remembers when each of a delegated server's was first seen.
#[derive(Debug, Default)]
pub struct Finder {
    first_seen: HashMap<i32, Instant>,
}

impl Finder {
    /// The live workers (not being stopped), without their memory yet.
    pub fn live(
        &mut self,
        proc_dir: &Path,
        pool: &Pool,
        mode: Mode,
        ready_grace: Duration,
        now: Instant,
    ) -> Vec<WorkerMemory> {
        match mode {
            Mode::FanOut => pool
                .live_workers()
                .into_iter()
                .map(|(slot, pid, ready, started)| {
                    let age = now.saturating_duration_since(started);
                    WorkerMemory::blank(pid, Some(slot), ready, age)
                })
                .collect(),
            Mode::Delegate => {
                let mut children: Vec<i32> = pool
                    .worker_pids()
                    .into_iter()
                    .flat_map(|server| procs::children(proc_dir, server))
                    // A worker that has ended is no worker, zombie or not: its kill is claimed
                    // now, not when the server gets round to reaping it (docs/architecture.md,
                    // "One turn of the loop", **OOM kills**).
                    .filter(|pid| !procs::has_ended(proc_dir, *pid))
                    .collect();
                children.sort_unstable();
                self.first_seen.retain(|pid, _| children.contains(pid));
                children
                    .into_iter()
                    .map(|pid| {
                        let seen = *self.first_seen.entry(pid).or_insert(now);
                        let age = now.saturating_duration_since(seen);
                        WorkerMemory::blank(pid, None, age >= ready_grace, age)
                    })
                    .collect()
            }
        }
    }
}

/// Fills in each worker's memory, summed over the worker and everything under it.
pub fn measure(proc_dir: &Path, workers: &mut [WorkerMemory]) {
    let parents = procs::parents(proc_dir);
    for worker in workers {
        let mut tree = vec![worker.pid];
        tree.extend(procs::descendants(&parents, worker.pid));
        let footprint = smaps::total(proc_dir, &tree);
        worker.uss_bytes = footprint.uss_bytes;
        worker.pss_bytes = footprint.pss_bytes;
        worker.shared_dirty_bytes = footprint.shared_dirty_bytes;
    }
}
