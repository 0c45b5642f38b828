//! What a check decides, free of I/O: the memory guard first, then measured or adaptive sizing,
//! each a pure function of its own state, the check's `Reading` and the time. The result is a
//! list of `Decision`s, which the loop carries out (the pool alone changes the worker count),
//! and the lines that explain them (docs/architecture.md, "One turn of the loop").

use std::time::{Duration, Instant};

use super::adaptive::step::Sizing as AdaptiveSizing;
use super::adaptive::AdaptiveConfig;
use super::log::Event;
use super::memory::fit::Fit;
use super::memory::oom::Attribution;
use super::memory::{self, Guard, GuardAction, GuardConfig, Limits, Sizer, SizerConfig};
use super::reading::{Reading, Wants};
use crate::sizing::Sizing;

mod follow;

/// How often adaptive sizing counts the busy workers at most, for the mean its shrink rule takes
/// over the shrink wait (a minute: every 5 s): asking the kernel for the connections walks its
/// whole TCP table, TIME_WAIT sockets included (about 1 ms with 30,000 of them).
pub const BUSY_INTERVAL: Duration = Duration::from_secs(5);

/// What a check decided, for the loop to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Stop this worker gracefully to free its memory; it is replaced (fan-out: by the pool, at
    /// once; delegate: by the server, told with its `stop_worker` signal).
    Recycle { pid: i32 },
    /// A recycled worker of a delegated server that did not stop in time.
    Kill { pid: i32 },
    /// A new worker count (fan-out: the pool's copies; delegate: the server's scaling signals).
    Resize { to: u32 },
}

/// The policies a supervisor runs, as set up at start (`setup`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub limits: Limits,
    pub guard: Option<GuardConfig>,
    pub sizer: Option<SizerConfig>,
    pub adaptive: Option<AdaptiveConfig>,
    /// The worker count the sizers start from.
    pub workers: u32,
    /// Threads per worker, where the server runs threads: adaptive sizing follows the requests
    /// waiting inside the workers and their busy threads, read at each check.
    pub threads: Option<u32>,
}

impl Config {
    /// The sizing that runs: `measured` or `adaptive` asked for a user's `WEB_CONCURRENCY` is
    /// static.
    pub fn sizing(&self) -> Sizing {
        match (&self.sizer, &self.adaptive) {
            (Some(_), _) => Sizing::Measured,
            (None, Some(_)) => Sizing::Adaptive,
            (None, None) => Sizing::Static,
        }
    }
}

pub struct Control {
    pub config: Config,
    guard: Option<Guard>,
    sizer: Option<Sizer>,
    adaptive: Option<AdaptiveSizing>,
    oom: Attribution,
    next_check: Instant,
    next_sizing: Instant,
    next_busy: Instant,
    /// This check's answers to `wants_memory`, for `decide`.
    sizer_due: bool,
    fit_due: bool,
    /// Busy workers at the last count, for the `resize` line.
    busy: Option<u32>,
    pub recycles: u64,
    events: Vec<Event>,
    /// The limits followed and the rules they are turned into (`follow`); None: not followed.
    following: Option<follow::Following>,
    /// This check moved the count to new limits: the sizers decide from the next one.
    limits_resized: bool,
    /// Workers shed for lowered limits are stopping: the guard waits for them until then.
    shedding: Option<Instant>,
}

impl Control {
    pub fn new(config: Config, oom_counted: Option<u64>, now: Instant) -> Self {
        let limits = config.limits;
        Control {
            guard: config.guard.clone().map(Guard::new),
            sizer: config.sizer.clone().map(|c| Sizer::new(c, config.workers)),
            adaptive: config
                .adaptive
                .clone()
                .map(|c| AdaptiveSizing::new(c, config.workers, limits.soft_limit_bytes, now)),
            oom: Attribution::new(oom_counted, limits.soft_limit_bytes, limits.quota_bytes),
            config,
            next_check: now,
            next_sizing: now,
            next_busy: now,
            sizer_due: false,
            fit_due: false,
            busy: None,
            recycles: 0,
            events: Vec::new(),
            following: None,
            limits_resized: false,
            shedding: None,
        }
    }

    /// The sizing that runs (`Config::sizing`).
    pub fn sizing(&self) -> Sizing {
        self.config.sizing()
    }

    /// The last memory fit, of whichever sizing measures it.
    pub fn fit(&self) -> Option<Fit> {
        let measured = self.sizer.as_ref().and_then(|s| s.last_fit);
        measured.or_else(|| self.adaptive.as_ref().and_then(|a| a.fit))
    }

    pub fn next_wakeup(&self) -> Instant {
        self.next_check
    }

    pub fn oom_total(&self) -> u64 {
        self.oom.total()
    }

    /// The events logged since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// One read of the accept queue: whether connections were waiting. Threaded workers accept
    /// at once, so for them the checks feed adaptive sizing instead (`decide`).
    pub fn queue_read(&mut self, now: Instant, queued: bool) {
        if self.config.threads.is_some() {
            return;
        }
        if let Some(adaptive) = &mut self.adaptive {
            adaptive.controller.queue_read(now, queued);
        }
    }

    /// Workers reaped after SIGKILL in one turn: those the OOM killer ended (`oom::Attribution`).
    pub fn claim_oom_kills(
        &mut self,
        counted: Option<u64>,
        killed: &[i32],
        now: Instant,
    ) -> Vec<i32> {
        let (claimed, event) = self.oom.claim_reaped(counted, killed, now);
        self.events.extend(event);
        claimed
    }

    /// At exit: every OOM kill counted and not claimed.
    pub fn report_unclaimed_oom_kills(&mut self, counted: Option<u64>, now: Instant) {
        let event = self.oom.unclaimed(counted, now, true);
        self.events.extend(event);
    }

    /// What a check needs read besides what every check reads: the busy workers (every figure
    /// for a sample, else on adaptive sizing's interval) and, when a worker would be added, which
    /// workers have not served yet.
    pub fn wants(&mut self, reading: &Reading, now: Instant, all_figures: bool) -> Wants {
        self.next_check = now + memory::CHECK_INTERVAL;
        if let Some(adaptive) = &mut self.adaptive {
            adaptive.observe(reading.target, now);
        }
        if let Some(sizer) = &mut self.sizer {
            sizer.retarget(reading.target);
        }
        let adaptive = self.adaptive.as_ref();
        let busy = all_figures || (adaptive.is_some() && now >= self.next_busy);
        if busy {
            // A dozen looks or more over the shrink wait, for its mean.
            let shrink_after = self.config.adaptive.as_ref().map(|a| a.shrink_after);
            self.next_busy =
                now + shrink_after.map_or(BUSY_INTERVAL, |s| (s / 12).min(BUSY_INTERVAL));
        }
        let threaded = self.config.threads.is_some();
        Wants {
            busy: busy && !threaded,
            serving: adaptive.is_some_and(|a| a.wants_serving(reading, now)),
            inside: threaded && (adaptive.is_some() || all_figures),
        }
    }

    /// Whether the requests waiting inside threaded workers are needed where the kernel is asked
    /// for them (`Reader::waiting`: a walk of its whole TCP table): for every figure, and for
    /// adaptive sizing unless the check counts as a read of the wait without them (`waited`: a
    /// lock-bound worker, or more in the accept queue than idle threads), which is when the CPUs
    /// or the threads are short.
    pub fn wants_waiting(&self, reading: &Reading, all_figures: bool) -> bool {
        let Some(threads) = self.config.threads else {
            return false;
        };
        all_figures || (self.adaptive.is_some() && waited(reading, threads).is_none())
    }

    /// Whether each worker's memory is needed (only then: smaps_rollup walks each worker's page
    /// tables): for every figure, above the soft limit, under a per-worker cap, when measured
    /// sizing is due, or for adaptive sizing's fit. A worker still stopping holds memory the usage
    /// counts and the fit would charge to the others: the sizers wait until it has exited.
    pub fn wants_memory(&mut self, reading: &Reading, now: Instant, all_figures: bool) -> bool {
        let soft_limit = self.config.limits.soft_limit_bytes;
        let over = reading.usage_bytes > soft_limit;
        let capped = self
            .config
            .guard
            .as_ref()
            .is_some_and(|g| g.worker_max_bytes.is_some());
        let settled = reading.stopping.is_empty();
        self.sizer_due = self.sizer.is_some() && now >= self.next_sizing;
        let adaptive = self.adaptive.as_ref();
        self.fit_due = settled && adaptive.is_some_and(|a| a.fit_due(reading, now));
        all_figures || over || capped || (self.sizer_due && settled) || self.fit_due
    }

    /// The decisions of one check, in order: OOM kills accounted for, the guard, then the sizers
    /// (not while the guard recycles, nor while a stopped worker still holds memory).
    pub fn decide(&mut self, reading: &Reading, now: Instant) -> Vec<Decision> {
        let events = self.oom.check(reading.oom_kills, &reading.vanished, now);
        self.events.extend(events);
        self.oom.usage_read(reading.usage_bytes, now);
        if let Some(busy) = reading.busy {
            self.busy = match busy {
                super::reading::Busy::Count(n) => Some(n),
                super::reading::Busy::Unknown => None,
            };
            if let Some(adaptive) = &mut self.adaptive {
                adaptive.busy(busy, now);
            }
        }
        self.inside(reading, now);
        let mut decisions: Vec<Decision> = match self.shedding(reading, now) {
            true => Vec::new(),
            false => self.guard(reading, now).into_iter().collect(),
        };
        let recycling = self.guard.as_ref().is_some_and(|g| g.recycling().is_some());
        let settled = reading.stopping.is_empty();
        let resized = std::mem::take(&mut self.limits_resized);
        let free = decisions.is_empty() && !recycling && settled && !resized;
        if self.sizer_due && free {
            self.next_sizing = now + memory::SIZING_INTERVAL;
            decisions.extend(self.measured(reading));
        }
        if let Some(adaptive) = self.adaptive.as_mut().filter(|_| self.fit_due) {
            adaptive.measure_fit(reading, now);
        }
        if free {
            decisions.extend(self.adaptive(reading, now));
        }
        decisions
    }

    /// Threaded workers: a check is a read of the wait (`waited`); their busy threads count as
    /// busy workers' worth (threads busy / threads per worker), for the shrink rule.
    fn inside(&mut self, reading: &Reading, now: Instant) {
        let (Some(threads), Some(adaptive)) = (self.config.threads, self.adaptive.as_mut()) else {
            return;
        };
        adaptive
            .controller
            .lock_bound_read(reading.gil_bound.is_some_and(|n| n > 0));
        if let Some(queued) = waited(reading, threads) {
            adaptive.controller.queue_read(now, queued);
        }
        if let Some(busy) = reading.threads_busy {
            let workers = f64::from(busy) / f64::from(threads.max(1));
            adaptive.controller.busy_sample(now, workers);
        }
    }

    fn guard(&mut self, reading: &Reading, now: Instant) -> Option<Decision> {
        let guard = self.guard.as_mut()?;
        match guard.check(reading, now)? {
            GuardAction::Kill { pid, waited } => {
                self.events.push(memory::kill_event(pid, waited));
                Some(Decision::Kill { pid })
            }
            GuardAction::Full(full) => {
                let event = memory::full_event(full, &reading.usage);
                let limits = self.config.limits;
                self.events
                    .push(limits.with_usage(event, reading.usage_bytes));
                None
            }
            GuardAction::Recycle { worker, why } => {
                self.recycles += 1;
                let event = memory::recycle_event(&worker, why, guard.config.worker_max_bytes);
                let limits = self.config.limits;
                self.events
                    .push(limits.with_usage(event, reading.usage_bytes));
                Some(Decision::Recycle { pid: worker.pid })
            }
        }
    }

    fn measured(&mut self, reading: &Reading) -> Option<Decision> {
        let resize = self.sizer.as_mut()?.check(reading)?;
        let event = memory::resize_event(&resize);
        let limits = self.config.limits;
        self.events
            .push(limits.with_usage(event, reading.usage_bytes));
        Some(Decision::Resize { to: resize.to })
    }

    fn adaptive(&mut self, reading: &Reading, now: Instant) -> Option<Decision> {
        let (to, event) = self.adaptive.as_mut()?.step(reading, self.busy, now)?;
        let limits = self.config.limits;
        self.events
            .push(limits.with_usage(event, reading.usage_bytes));
        Some(Decision::Resize { to })
    }
}

/// Whether threaded workers of `threads` each kept requests waiting at this check: when more
/// requests wait (inside the workers and in the accept queue) than the workers have idle threads,
/// or when a worker is bound by its interpreter lock (its requests wait for the lock, which
/// another worker would not share, and the CPU rule then lets workers grow until the CPUs are
/// saturated, `adaptive::LOCK_BOUND_CPU_MAX`). None: it depends on the requests waiting inside,
/// not read. A gthread worker accepts while its threads are busy, so requests wait inside one
/// worker while another's threads idle: a worker more would not serve those sooner: counting
/// every wait grew workers of 8 threads to 18 (317 MB) under 64 clients; weighed against the
/// idle threads, to 9 (test/bench/threads).
fn waited(reading: &Reading, threads: u32) -> Option<bool> {
    let all = threads.saturating_mul(reading.workers.len() as u32);
    let idle = reading
        .threads_busy
        .map_or(0, |busy| all.saturating_sub(busy));
    let queued = reading.queued.unwrap_or(0);
    if reading.gil_bound.is_some_and(|n| n > 0) || queued > idle {
        return Some(true);
    }
    reading
        .waiting
        .map(|waiting| waiting.saturating_add(queued) > idle)
}

#[cfg(test)]
mod tests;
