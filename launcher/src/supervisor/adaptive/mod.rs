//! Adaptive sizing's policy, free of I/O: from the accept queue the launcher owns, the dyno's CPU
//! use and the memory fit, when to add a worker and when to take one away. One step at a time,
//! a step interval apart; never below the static count for want of load (memory may shed below
//! it) nor above `LAUNCHER_MAX_WORKERS` or what fits in memory; never growing while the CPUs are
//! busy (a CPU-bound app would only queue inside more workers). See docs/architecture.md,
//! "Adaptive sizing". `step` feeds it from a check's reading and writes its `resize` lines.

pub mod step;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::supervisor::memory::fit::{one_more_fits, over, shed_to};
/// Busy workers must be this far under one fewer for a worker to go: half a worker to spare.
pub const BUSY_HEADROOM: f64 = 0.5;
/// A grow decision needs at least this many queue reads since the last step, or as many as the
/// grow window and the step interval leave room for when the reads are further apart.
pub const MIN_READS: usize = 10;
/// Threaded workers bound by their interpreter lock grow until the CPUs are this busy, unless
/// the user set `LAUNCHER_ADAPTIVE_CPU_MAX`: saturated, short of a reading's noise.
pub const LOCK_BOUND_CPU_MAX: f64 = 0.95;

#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConfig {
    /// The static count: never fewer workers.
    pub floor: u32,
    /// `LAUNCHER_MAX_WORKERS`, else the largest count taken from anyone.
    pub max_workers: u32,
    /// Grow when the queue was not empty in at least `grow_share` of the reads of the last
    /// `grow_window`.
    pub grow_window: Duration,
    pub grow_share: f64,
    /// Never grow when the dyno's CPU use, scaled up by one worker more, would reach this share
    /// of its CPUs.
    pub cpu_max: f64,
    /// The same for threaded workers while one is bound by its interpreter lock.
    pub lock_bound_cpu_max: f64,
    /// Shrink when the queue was empty in every read for this long and the workers were idle.
    pub shrink_after: Duration,
    /// The least time between two steps.
    pub step: Duration,
    /// How often the queue is read (`LAUNCHER_QUEUE_READ_INTERVAL`).
    pub read_interval: Duration,
    /// Threaded workers (`LAUNCHER_THREADS`, gthread, puma): each brings an interpreter lock of
    /// its own, so the CPU rule asks for room left on the CPUs, not room for one more of equals.
    pub threaded: bool,
}

impl AdaptiveConfig {
    /// The queue reads a grow decision needs: `MIN_READS`, or fewer when the reads are so far
    /// apart that the grow window or the step interval holds fewer (2 s reads in a 10 s window
    /// with 2 s steps: one), so that every valid setting can grow.
    pub fn min_reads(&self) -> usize {
        let room = self.grow_window.min(self.step).as_secs_f64();
        let reads = room / self.read_interval.as_secs_f64().max(0.001);
        (reads.floor() as usize).clamp(1, MIN_READS)
    }
}

/// What one decision looked at, for the `resize` line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Share of the recent queue reads that found connections waiting.
    pub queued_share: f64,
    pub cpu_busy: Option<f64>,
    pub fit: Option<f64>,
    /// Busy workers on average over the shrink window.
    pub busy_workers: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub from: u32,
    pub to: u32,
    pub why: &'static str,
    pub figures: Figures,
}

#[derive(Debug, Clone)]
pub struct Adaptive {
    pub config: AdaptiveConfig,
    target: u32,
    last_step: Instant,
    /// Queue reads: when, and whether connections were waiting.
    reads: VecDeque<(Instant, bool)>,
    last_queued: Instant,
    /// Samples of how many workers were busy: when, how many.
    busy: VecDeque<(Instant, f64)>,
    /// A shrink the queue undid soon after: shrinking waits twice as long before it tries again.
    shrink_backoff: u32,
    last_shrink: Option<Instant>,
    /// A threaded worker was bound by its interpreter lock at the last check.
    lock_bound: bool,
}

impl Adaptive {
    pub fn new(config: AdaptiveConfig, workers: u32, now: Instant) -> Self {
        Adaptive {
            target: workers.max(config.floor),
            config,
            last_step: now,
            reads: VecDeque::new(),
            last_queued: now,
            busy: VecDeque::new(),
            shrink_backoff: 0,
            last_shrink: None,
            lock_bound: false,
        }
    }

    pub fn target(&self) -> u32 {
        self.target
    }

    /// The count changed by someone else (TTIN/TTOU): adapt from there.
    pub fn retarget(&mut self, workers: u32, now: Instant) {
        self.target = workers.max(1);
        self.last_step = now;
    }

    /// One read of the accept queue.
    pub fn queue_read(&mut self, now: Instant, queued: bool) {
        self.reads.push_back((now, queued));
        if queued {
            self.last_queued = now;
        }
        let keep = self.config.grow_window.max(self.config.step);
        while self
            .reads
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > keep)
        {
            self.reads.pop_front();
        }
    }

    /// How many workers were busy (not waiting for a connection) at one look.
    pub fn busy_sample(&mut self, now: Instant, busy: f64) {
        self.busy.push_back((now, busy));
        let keep = self.shrink_wait();
        while self
            .busy
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > keep)
        {
            self.busy.pop_front();
        }
    }

    /// Whether a threaded worker is bound by its interpreter lock, at one check.
    pub fn lock_bound_read(&mut self, bound: bool) {
        self.lock_bound = bound;
    }

    /// Busy workers cannot be counted: what was counted before is not taken as current.
    pub fn busy_unknown(&mut self) {
        self.busy.clear();
    }

    /// How long the queue must stay empty before a worker goes, doubled per undone shrink.
    fn shrink_wait(&self) -> Duration {
        self.config.shrink_after * 2u32.saturating_pow(self.shrink_backoff.min(6))
    }

    /// The share of the reads since the last step (within the grow window) that found connections
    /// waiting, and how many reads that was.
    fn queued_share(&self, now: Instant) -> (f64, usize) {
        let window_start = now.checked_sub(self.config.grow_window);
        let since = window_start.map_or(self.last_step, |start| start.max(self.last_step));
        let recent = self.reads.iter().filter(|(at, _)| *at >= since);
        let (count, queued) = recent.fold((0, 0), |(n, q), (_, w)| (n + 1, q + usize::from(*w)));
        if count == 0 {
            return (0.0, 0);
        }
        (queued as f64 / count as f64, count)
    }

    fn busy_workers(&self) -> Option<f64> {
        let samples = self.busy.iter().map(|(_, b)| *b);
        let (n, sum) = samples.fold((0usize, 0.0), |(n, s), b| (n + 1, s + b));
        (n > 0).then(|| sum / n as f64)
    }

    /// Whether a worker would be added now, memory aside: the last step is a step interval
    /// ago and its worker is up (`ready`), connections kept waiting, and the CPUs have room for
    /// one worker more. The caller then measures the memory fit.
    pub fn wants_more(&self, now: Instant, ready: bool, cpu_busy: Option<f64>) -> bool {
        let (queued_share, reads) = self.queued_share(now);
        now.duration_since(self.last_step) >= self.config.step
            && ready
            && reads >= self.config.min_reads()
            && queued_share >= self.config.grow_share
            && self.cpu_room(cpu_busy)
            && self.target < self.config.max_workers
    }

    /// The CPU use scaled up by one worker more stays under `cpu_max`: an I/O-bound app that
    /// uses 30% of its CPUs with 10 workers may have an 11th, a CPU-bound one at 60% with 2 may
    /// not (the third would only share the same CPUs). Threaded workers: the CPU use is under
    /// `cpu_max`, since a worker whose threads wait for its interpreter lock leaves CPU unused
    /// that a worker more (a lock of its own) takes: two of 32 threads used 75% of 2 CPUs where
    /// four of 16 used 88% and served 17% more. And while a worker is lock-bound, under
    /// `lock_bound_cpu_max`: its lock changes hands at every switch between its threads, and
    /// the CPU left idle in those hand-offs is what another worker fills, up to the CPUs being
    /// saturated (two lock-bound workers on 2 CPUs used 85-93% of them and served 0.95x what
    /// two sync workers did, three 0.99x; docs/benchmarks.md, "Threads"). Unknown before two
    /// readings: no growth.
    fn cpu_room(&self, cpu_busy: Option<f64>) -> bool {
        let n = f64::from(self.target.max(1));
        let (projected, max) = match (self.config.threaded, self.lock_bound) {
            (true, true) => (1.0, self.config.lock_bound_cpu_max),
            (true, false) => (1.0, self.config.cpu_max),
            (false, _) => ((n + 1.0) / n, self.config.cpu_max),
        };
        cpu_busy.is_some_and(|busy| busy * projected < max)
    }

    /// One decision: a step of one worker, or None. `ready`: every wanted worker is up and ready
    /// (the last step's worker has booted), which growing waits for and shrinking does not (a
    /// worker that crashes at boot would otherwise hold the count up for good). `cpu_busy` is the dyno's CPU use in shares of its
    /// CPUs, `fit` how many workers fit in memory (None: not measured yet).
    pub fn decide(
        &mut self,
        now: Instant,
        ready: bool,
        cpu_busy: Option<f64>,
        fit: Option<f64>,
    ) -> Option<Step> {
        let figures = Figures {
            queued_share: self.queued_share(now).0,
            cpu_busy,
            fit,
            busy_workers: self.busy_workers(),
        };
        let from = self.target;
        // A shrink that held for its whole wait (nothing grew since) was right: back to the
        // shortest wait.
        if self
            .last_shrink
            .is_some_and(|at| self.last_step == at && now.duration_since(at) >= self.shrink_wait())
        {
            self.shrink_backoff = 0;
        }
        let step = |to: u32, why: &'static str| Step {
            from,
            to,
            why,
            figures,
        };
        // Memory first: never more workers than fit, whatever the queue says.
        if let Some(fit) = fit.filter(|fit| over(*fit, from)) {
            return Some(self.take(step(shed_to(fit, from), "memory"), now));
        }
        let fits = fit.is_some_and(|fit| one_more_fits(fit, from));
        if self.wants_more(now, ready, cpu_busy) && fits {
            // A shrink undone within its wait: the next one waits longer.
            if self
                .last_shrink
                .is_some_and(|at| now.duration_since(at) < self.shrink_wait())
            {
                self.shrink_backoff += 1;
            }
            return Some(self.take(step(from + 1, "queue"), now));
        }
        if now.duration_since(self.last_step) < self.config.step {
            return None;
        }
        let empty = now.duration_since(self.last_queued) >= self.shrink_wait();
        let idle = figures
            .busy_workers
            .is_some_and(|busy| busy <= f64::from(from) - 1.0 - BUSY_HEADROOM);
        if empty && idle && from > self.config.floor {
            self.last_shrink = Some(now);
            return Some(self.take(step(from - 1, "idle"), now));
        }
        None
    }

    fn take(&mut self, step: Step, now: Instant) -> Step {
        self.target = step.to;
        self.last_step = now;
        step
    }
}

#[cfg(test)]
mod tests;
