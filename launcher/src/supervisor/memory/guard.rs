//! The memory guard's policy, free of I/O: given the dyno's usage and each worker's own memory,
//! which worker to recycle, one at a time, with a cool-down after each. It does not recycle in
//! vain: not when what fills the dyno is no worker's (tmpfs files, kernel memory, the master's),
//! and not again after recycles that freed nothing, until the dyno is under its soft limit.

use std::time::{Duration, Instant};

use crate::supervisor::reading::{Reading, WorkerMemory};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// The dyno's usage above which a worker is recycled.
    pub soft_limit_bytes: u64,
    /// A worker's unique memory above which it is recycled; None: no per-worker cap.
    pub worker_max_bytes: Option<u64>,
    /// The pause after a recycled worker has exited, before the next decision.
    pub cooldown: Duration,
    /// A recycled worker still running after this long gets SIGKILL.
    pub kill_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The dyno's usage is above the soft limit.
    DynoSoftLimit,
    /// This worker's unique memory is above the per-worker cap.
    WorkerCap,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::DynoSoftLimit => "dyno_soft_limit",
            Why::WorkerCap => "worker_cap",
        }
    }
}

/// How many recycles in a row may free less than `FREED_SHARE` of what the recycled worker held
/// before the guard stops recycling.
pub const FUTILE_RECYCLES: u32 = 2;
/// A recycle freed something when the dyno's usage (less what the workers started since hold)
/// fell by at least this share of the recycled worker's unique memory.
pub const FREED_SHARE: f64 = 0.25;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardAction {
    /// Stop this worker gracefully; it is replaced (by the launcher, or by the delegated server).
    Recycle { worker: WorkerMemory, why: Why },
    /// The recycled worker did not stop in time.
    Kill { pid: i32, waited: Duration },
    /// The dyno is over its soft limit, and recycling cannot help: said once, until it is under
    /// the soft limit again.
    Full(Full),
}

/// Why recycling cannot bring the dyno under its soft limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// What is left with every worker's unique memory freed is still over the soft limit.
    OutsideWorkers { workers_uss_bytes: u64 },
    /// The last recycles freed (almost) nothing.
    RecyclesFreeNothing { recycles: u32 },
}

/// A recycle under way: the worker, since when, and what the dyno used then.
#[derive(Debug, Clone, Copy)]
struct Recycling {
    pid: i32,
    since: Instant,
    usage_bytes: u64,
    worker_uss_bytes: u64,
    why: Why,
}

#[derive(Debug, Clone)]
pub struct Guard {
    pub config: GuardConfig,
    /// The worker being recycled, until it has exited.
    recycling: Option<Recycling>,
    killed: bool,
    quiet_until: Option<Instant>,
    /// Recycles in a row that freed nothing.
    futile: u32,
    /// Whether the `Full` of this time over the soft limit was said.
    said: bool,
}

impl Guard {
    pub fn new(config: GuardConfig) -> Self {
        Guard {
            config,
            recycling: None,
            killed: false,
            quiet_until: None,
            futile: 0,
            said: false,
        }
    }

    /// The worker being recycled, if one is.
    pub fn recycling(&self) -> Option<i32> {
        self.recycling.map(|r| r.pid)
    }

    /// One decision for this reading. A recycled worker neither among `reading.workers` nor
    /// among `reading.stopping` has exited, and the cool-down starts. One the launcher is
    /// stopping (fan-out) is the pool's to kill after the graceful timeout; the guard kills a
    /// delegated server's worker itself.
    pub fn check(&mut self, reading: &Reading, now: Instant) -> Option<GuardAction> {
        if let Some(recycling) = self.recycling {
            let pid = recycling.pid;
            let stopping = reading.stopping.contains(&pid);
            if stopping || reading.workers.iter().any(|w| w.pid == pid) {
                let waited = now.saturating_duration_since(recycling.since);
                if waited >= self.config.kill_after && !self.killed && !stopping {
                    self.killed = true;
                    return Some(GuardAction::Kill { pid, waited });
                }
                return None;
            }
            self.recycling = None;
            self.quiet_until = Some(now + self.config.cooldown);
            self.count_freed(&recycling, reading, now);
        }
        let over = reading.usage_bytes > self.config.soft_limit_bytes;
        if !over {
            (self.futile, self.said) = (0, false);
        }
        if self.quiet_until.is_some_and(|until| now < until) {
            return None;
        }
        let (worker, why) = self.choose(reading)?;
        if why == Why::DynoSoftLimit {
            if let Some(full) = self.full(reading) {
                return (!std::mem::replace(&mut self.said, true))
                    .then_some(GuardAction::Full(full));
            }
        }
        self.recycling = Some(Recycling {
            pid: worker.pid,
            since: now,
            usage_bytes: reading.usage_bytes,
            worker_uss_bytes: worker.uss_bytes,
            why,
        });
        self.killed = false;
        Some(GuardAction::Recycle {
            worker: worker.clone(),
            why,
        })
    }

    /// Why recycling for the dyno's soft limit cannot help now, if it cannot.
    fn full(&self, reading: &Reading) -> Option<Full> {
        let workers_uss_bytes: u64 = reading.workers.iter().map(|w| w.uss_bytes).sum();
        let outside = reading.usage_bytes.saturating_sub(workers_uss_bytes);
        if outside > self.config.soft_limit_bytes {
            return Some(Full::OutsideWorkers { workers_uss_bytes });
        }
        let recycles = self.futile;
        (recycles >= FUTILE_RECYCLES).then_some(Full::RecyclesFreeNothing { recycles })
    }

    /// A recycle for the soft limit is over (its worker has exited): did the dyno's usage fall,
    /// less what the workers started since then hold (a fan-out replacement starts at once)?
    fn count_freed(&mut self, recycling: &Recycling, reading: &Reading, now: Instant) {
        if recycling.why != Why::DynoSoftLimit {
            return;
        }
        let since = now.saturating_duration_since(recycling.since);
        let new: u64 = reading
            .workers
            .iter()
            .filter(|w| w.age < since)
            .map(|w| w.uss_bytes)
            .sum();
        let now_bytes = reading.usage_bytes.saturating_sub(new);
        let freed = recycling.usage_bytes.saturating_sub(now_bytes);
        let enough = freed as f64 >= recycling.worker_uss_bytes as f64 * FREED_SHARE;
        self.futile = if enough { 0 } else { self.futile + 1 };
    }

    /// The worker over the cap with the most unique memory; else, above the soft limit, the
    /// ready worker with the most unique memory.
    fn choose<'a>(&self, reading: &'a Reading) -> Option<(&'a WorkerMemory, Why)> {
        let ready = reading.workers.iter().filter(|w| w.ready);
        let largest = |over: u64| {
            ready
                .clone()
                .filter(move |w| w.uss_bytes > over)
                .max_by_key(|w| (w.uss_bytes, std::cmp::Reverse(w.pid)))
        };
        if let Some(worker) = self.config.worker_max_bytes.and_then(largest) {
            return Some((worker, Why::WorkerCap));
        }
        if reading.usage_bytes > self.config.soft_limit_bytes {
            return largest(0).map(|w| (w, Why::DynoSoftLimit));
        }
        None
    }
}
