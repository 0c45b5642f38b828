//! The memory policies, free of I/O: the guard (`guard`: which worker to recycle), measured
//! sizing (`measured`: how many workers fit, measured), the fit they share (`fit`), and OOM kill
//! attribution (`oom`). Each takes a `Reading` and the time and returns what to do; the lines
//! that say so are built here, with the dyno's figures (docs/architecture.md, "One turn of the
//! loop").

pub mod fit;
pub mod guard;
pub mod measured;
pub mod oom;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::supervisor::log::Event;
use crate::supervisor::reading::WorkerMemory;
use crate::units::mb;
use crate::usage::Usage;
pub use guard::{Guard, GuardAction, GuardConfig};
pub use measured::{Resize, Sizer, SizerConfig};

/// How often the dyno's usage is read: a leak of 40 MB/s moves 20 MB between two checks.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How often measured sizing measures the workers (each step waits for a warm-up anyway).
pub const SIZING_INTERVAL: Duration = Duration::from_secs(5);

/// The dyno's limits, for the lines of the decisions made against them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub quota_bytes: u64,
    pub soft_limit_bytes: u64,
}

impl Limits {
    /// A quota and its soft limit, `soft_limit_percent` of it (`LAUNCHER_SOFT_LIMIT_PERCENT`).
    pub fn of(quota_bytes: u64, soft_limit_percent: u64) -> Limits {
        Limits {
            quota_bytes,
            soft_limit_bytes: quota_bytes / 100 * soft_limit_percent,
        }
    }

    /// The dyno's figures on a decision's line.
    pub fn with_usage(self, event: Event, usage_bytes: u64) -> Event {
        event
            .with("memory_total", mb(usage_bytes))
            .with("soft_limit", mb(self.soft_limit_bytes))
            .with("memory_quota", mb(self.quota_bytes))
    }
}

/// The `memory_recycle` line.
pub fn recycle_event(worker: &WorkerMemory, why: guard::Why, cap: Option<u64>) -> Event {
    let mut event = Event::warn("memory_recycle");
    if let Some(slot) = worker.slot {
        event = event.with("worker", slot);
    }
    event = event
        .with("pid", worker.pid)
        .with("reason", why.as_str())
        .with("worker_uss", mb(worker.uss_bytes))
        .with("worker_pss", mb(worker.pss_bytes));
    match cap.filter(|_| why == guard::Why::WorkerCap) {
        Some(cap) => event.with("worker_max", mb(cap)),
        None => event,
    }
}

/// The line of a recycled worker that did not stop in time.
pub fn kill_event(pid: i32, waited: Duration) -> Event {
    Event::warn("worker_kill")
        .with("pid", pid)
        .secs("waited_s", waited)
        .with("reason", "a recycled worker did not stop in time")
}

/// The `memory_full` line: the dyno is over its soft limit and recycling cannot help.
pub fn full_event(full: guard::Full, usage: &Usage) -> Event {
    let event = Event::warn("memory_full");
    let event = match full {
        guard::Full::OutsideWorkers { workers_uss_bytes } => event
            .with("reason", "outside_workers")
            .with("workers_uss", mb(workers_uss_bytes))
            .with(
                "message",
                "what fills the dyno is no worker's own memory (tmpfs or /dev/shm files, kernel \
                 memory, a master's): recycling a worker cannot free it, so the guard does not",
            ),
        guard::Full::RecyclesFreeNothing { recycles } => event
            .with("reason", "recycles_free_nothing")
            .with("recycles", recycles)
            .with(
                "message",
                "the last recycles freed next to nothing: the guard stops recycling until the \
                 dyno is under its soft limit",
            ),
    };
    event
        .with("memory_shmem", mb(usage.shmem_bytes))
        .with("memory_kernel", mb(usage.kernel_bytes))
}

/// Measured sizing's `resize` line.
pub fn resize_event(resize: &Resize) -> Event {
    Event::info("resize")
        .with("from", resize.from)
        .with("to", resize.to)
        .with("sizing", "measured")
        .with("fit", format!("{:.2}", resize.fit.workers))
        .with("worker_cost", mb(resize.fit.worker_bytes))
        .with("base", mb(resize.fit.base_bytes))
}
