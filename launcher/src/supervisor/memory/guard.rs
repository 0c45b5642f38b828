//! The memory guard's policy, free of I/O: given the dyno's usage and each worker's own memory,
//! which worker to recycle, one at a time, with a cool-down after each.

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardAction {
    /// Stop this worker gracefully; it is replaced (by the launcher, or by the delegated server).
    Recycle { worker: WorkerMemory, why: Why },
    /// The recycled worker did not stop in time.
    Kill { pid: i32, waited: Duration },
}

#[derive(Debug, Clone)]
pub struct Guard {
    pub config: GuardConfig,
    /// The worker being recycled and since when, until it has exited.
    recycling: Option<(i32, Instant)>,
    killed: bool,
    quiet_until: Option<Instant>,
}

impl Guard {
    pub fn new(config: GuardConfig) -> Self {
        Guard {
            config,
            recycling: None,
            killed: false,
            quiet_until: None,
        }
    }

    /// The worker being recycled, if one is.
    pub fn recycling(&self) -> Option<i32> {
        self.recycling.map(|(pid, _)| pid)
    }

    /// One decision for this reading. A recycled worker neither among `reading.workers` nor
    /// among `reading.stopping` has exited, and the cool-down starts. One the launcher is
    /// stopping (fan-out) is the pool's to kill after the graceful timeout; the guard kills a
    /// delegated server's worker itself.
    pub fn check(&mut self, reading: &Reading, now: Instant) -> Option<GuardAction> {
        if let Some((pid, since)) = self.recycling {
            let stopping = reading.stopping.contains(&pid);
            if stopping || reading.workers.iter().any(|w| w.pid == pid) {
                let waited = now.saturating_duration_since(since);
                if waited >= self.config.kill_after && !self.killed && !stopping {
                    self.killed = true;
                    return Some(GuardAction::Kill { pid, waited });
                }
                return None;
            }
            self.recycling = None;
            self.quiet_until = Some(now + self.config.cooldown);
        }
        if self.quiet_until.is_some_and(|until| now < until) {
            return None;
        }
        let (worker, why) = self.choose(reading)?;
        self.recycling = Some((worker.pid, now));
        self.killed = false;
        Some(GuardAction::Recycle {
            worker: worker.clone(),
            why,
        })
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
