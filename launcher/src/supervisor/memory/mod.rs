//! The memory guard and measured sizing. Every check reads the dyno's usage (`usage::Meter`), the
//! kernel's OOM kill count, and, when a decision needs them, each worker's own memory; then the
//! guard and the sizer decide, and their decisions become pool actions or signals, each logged
//! with the figures that led to it.

mod adaptive;
mod guard;
mod oom;
mod setup;
mod sizer;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::adaptive::{Adaptive, AdaptiveConfig};
use super::log::Event;
use super::pool::{Action, Pool};
use crate::host::Snapshot;
use crate::procs;
use crate::servers::{self, Mode};
use crate::usage::cpu::Demand;
use crate::usage::{smaps, Meter, Usage};
pub use guard::{Guard, GuardAction, GuardConfig};
pub use setup::{configure, log_start};
pub use sizer::{Fit, Resize, Sizer, SizerConfig};

/// How often the dyno's usage is read: a leak of 40 MB/s moves 20 MB between two checks.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How often measured sizing measures the workers (each step waits for a warm-up anyway).
pub const SIZING_INTERVAL: Duration = Duration::from_secs(5);
/// How often adaptive sizing counts the busy workers at most, for the mean its shrink rule takes
/// over the shrink wait (a minute: every 5 s): asking the kernel for the connections walks its whole TCP table, TIME_WAIT sockets
/// included (about 1 ms with 30,000 of them).
pub const BUSY_INTERVAL: Duration = Duration::from_secs(5);
/// How often adaptive sizing measures the memory fit when it is not about to add a worker (for
/// the rule that no more workers run than fit).
pub const FIT_INTERVAL: Duration = Duration::from_secs(10);

/// One worker as the guard and the sizer see it: in fan-out a copy of the command, in delegate
/// mode one of the server's own workers. Memory is summed over the worker's process tree.
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

/// What one check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The dyno's usage as Heroku counts it: resident plus swap.
    pub usage_bytes: u64,
    pub workers: Vec<WorkerMemory>,
    /// Workers the launcher is stopping (fan-out: a recycle, a resize, a rolling restart) that
    /// have not exited yet: the usage still counts their memory. (A delegated server's
    /// stopping workers are still its children, among `workers`.)
    pub stopping: Vec<i32>,
}

/// What the watch was set up with.
pub struct WatchConfig {
    pub mode: Mode,
    pub quota_bytes: u64,
    pub soft_limit_bytes: u64,
    pub ready_grace: Duration,
    pub guard: Option<GuardConfig>,
    pub sizer: Option<SizerConfig>,
    pub adaptive: Option<AdaptiveConfig>,
    /// The launcher's socket's port, where its accepted connections are found; None: no socket.
    pub port: Option<u16>,
    /// Whether a worker holding a connection is a busy one (a server that accepts when free), so
    /// that `sample#workers_busy` means something.
    pub busy_known: bool,
    /// The worker count the sizer starts from.
    pub workers: u32,
    /// The CPUs the dyno may use (`Host::cpu_capacity`), for the workers' CPU demand.
    pub cpu_capacity: f64,
    /// The server's signals: how one of its workers is stopped, how it is resized.
    pub signals: crate::servers::Signals,
}

pub struct Watch {
    snapshot: Snapshot,
    meter: Meter,
    config: WatchConfig,
    guard: Option<Guard>,
    sizer: Option<Sizer>,
    adaptive: Option<Adaptive>,
    /// Adaptive sizing's last memory fit, and when it is measured again at the latest.
    adaptive_fit: Option<Fit>,
    next_fit: Instant,
    /// How many workers held a connection at the last look, and when adaptive sizing looks next.
    pub busy: Option<u32>,
    next_busy: Instant,
    /// Workers seen holding a connection since they started: they have booted.
    serving: HashSet<i32>,
    /// What the workers asked of the CPUs, for adaptive sizing's CPU rule.
    demand: Demand,
    /// Whether the last read of the accept queue found connections waiting.
    queued: bool,
    oom: oom::Ledger,
    /// Delegate mode: the server process, to notice when it was restarted.
    server: Option<i32>,
    next_check: Instant,
    next_sizing: Instant,
    /// Delegate mode: the server's workers, and when each was first seen.
    seen: HashMap<i32, Instant>,
    /// The last check's figures, for the `sample#` line and the state file.
    pub usage: Option<Usage>,
    /// When `usage` was read.
    usage_at: Option<Instant>,
    pub reading: Option<Reading>,
    pub recycles: u64,
    events: Vec<Event>,
}

impl Watch {
    pub fn new(snapshot: Snapshot, meter: Meter, config: WatchConfig, now: Instant) -> Self {
        let oom = oom::Ledger::new(meter.oom_kills(&snapshot));
        Watch {
            guard: config.guard.clone().map(Guard::new),
            sizer: config.sizer.clone().map(|c| Sizer::new(c, config.workers)),
            adaptive: config
                .adaptive
                .clone()
                .map(|c| Adaptive::new(c, config.workers, now)),
            adaptive_fit: None,
            next_fit: now,
            busy: None,
            next_busy: now,
            serving: HashSet::new(),
            demand: Demand::default(),
            queued: false,
            snapshot,
            meter,
            config,
            oom,
            server: None,
            next_check: now,
            next_sizing: now,
            seen: HashMap::new(),
            usage: None,
            usage_at: None,
            reading: None,
            recycles: 0,
            events: Vec::new(),
        }
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// The sizing that runs: `measured` or `adaptive` asked for a user's `WEB_CONCURRENCY` is
    /// static.
    pub fn sizing(&self) -> &'static str {
        match (&self.sizer, &self.adaptive) {
            (Some(_), _) => "measured",
            (None, Some(_)) => "adaptive",
            (None, None) => "static",
        }
    }

    pub fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    /// The last memory fit, of whichever sizing measures it.
    pub fn fit(&self) -> Option<Fit> {
        self.sizer
            .as_ref()
            .and_then(|s| s.last_fit)
            .or(self.adaptive_fit)
    }

    pub fn next_wakeup(&self) -> Instant {
        self.next_check
    }

    /// One read of the accept queue, for adaptive sizing.
    pub fn queue_read(&mut self, now: Instant, queued: bool) {
        self.queued = queued;
        if let Some(adaptive) = &mut self.adaptive {
            adaptive.queue_read(now, queued);
        }
    }

    /// The events logged since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// TTIN/TTOU forwarded to a delegated server: measured or adaptive sizing goes on from the
    /// new count. A rolling restart (SIGHUP) that takes the server back to the count it was
    /// started with: from that count.
    pub fn scaled_by_signal(&mut self, signal: Signal, now: Instant) {
        let restart = self.config.signals.restart;
        let resets = restart.is_some_and(|r| !servers::restart_keeps_count(r));
        let boot = self.config.workers;
        let change = |target: u32| match signal {
            Signal::SIGTTIN => Some(target + 1),
            Signal::SIGTTOU => Some(target.saturating_sub(1)),
            Signal::SIGHUP if resets => Some(boot),
            _ => None,
        };
        if let Some(sizer) = &mut self.sizer {
            if let Some(to) = change(sizer.target()) {
                sizer.retarget(to);
            }
        }
        if let Some(adaptive) = &mut self.adaptive {
            if let Some(to) = change(adaptive.target()) {
                adaptive.retarget(to, now);
            }
        }
    }

    /// Workers, children of the launcher, that died of SIGKILL in one turn of the loop: which of
    /// them did the kernel's OOM killer end? Only a rise in the cgroup's own counter says so (a
    /// SIGKILL alone is not taken as proof), and how many: each claims one kill of the rise.
    pub fn claim_oom_kills(&mut self, killed: &[i32], now: Instant) -> Vec<i32> {
        if killed.is_empty() {
            return Vec::new();
        }
        self.oom.counted(self.meter.oom_kills(&self.snapshot), now);
        let claimed = self.oom.claim(killed);
        if !claimed.is_empty() {
            let event = self.oom_event(&claimed, 0, now);
            self.events.push(event);
        }
        claimed
    }

    /// OOM kills no process was found for in time, all of them at `now` = None (at exit).
    pub fn report_unclaimed_oom_kills(&mut self, now: Instant, all: bool) {
        if all {
            self.oom.counted(self.meter.oom_kills(&self.snapshot), now);
        }
        let unattributed = self.oom.expire((!all).then_some(now));
        if unattributed > 0 {
            let event = self.oom_event(&[], unattributed, now);
            self.events.push(event);
        }
    }

    pub fn oom_total(&self) -> u64 {
        self.oom.total
    }

    /// The `oom_kill` line: the kills it reports (`kills`), those attributed to the pids named
    /// and those that could not be, and the dyno's usage as last read before the counter rose
    /// (after the kill it has fallen), with its age.
    fn oom_event(&self, pids: &[i32], unattributed: u64, now: Instant) -> Event {
        let named: Vec<String> = pids.iter().take(10).map(i32::to_string).collect();
        let more = if pids.len() > 10 { ",..." } else { "" };
        let pid = match named.is_empty() {
            true => "unknown".to_owned(),
            false => named.join(",") + more,
        };
        let mut event = Event::error("oom_kill")
            .with("pid", pid)
            .with("kills", pids.len() as u64 + unattributed)
            .with("attributed", pids.len())
            .with("unattributed", unattributed);
        event = match (self.usage, self.usage_at) {
            (Some(usage), Some(at)) => event
                .with("memory_total", mb(usage.total_bytes()))
                .secs("memory_total_age_s", now.saturating_duration_since(at)),
            _ => event.with("memory_total", "unknown"),
        };
        event
            .with("soft_limit", mb(self.config.soft_limit_bytes))
            .with("memory_quota", mb(self.config.quota_bytes))
    }

    /// Reads the dyno's usage and lets the guard and the sizers decide. `all_figures` asks for
    /// every worker's memory even when no decision needs it (the `sample#` line); `cpu_busy` is
    /// the dyno's recent CPU use, for adaptive sizing.
    pub fn check(
        &mut self,
        pool: &mut Pool,
        now: Instant,
        all_figures: bool,
        cpu_busy: Option<f64>,
    ) -> Vec<Action> {
        self.next_check = now + CHECK_INTERVAL;
        let Some(usage) = self.meter.usage(&self.snapshot) else {
            return Vec::new();
        };
        let mut workers = self.workers(pool, now);
        // Before the new reading replaces the last one: that one was taken before the kill.
        self.report_vanished_oom_kills(&workers, now);
        self.usage = Some(usage);
        self.usage_at = Some(now);
        let over = usage.total_bytes() > self.config.soft_limit_bytes;
        let capped = self
            .guard
            .as_ref()
            .is_some_and(|g| g.config.worker_max_bytes.is_some());
        let sizer_due = self.sizer.is_some() && now >= self.next_sizing;
        if all_figures || (self.adaptive.is_some() && now >= self.next_busy) {
            // A dozen looks or more over the shrink wait, for its mean.
            let shrink_after = self.config.adaptive.as_ref().map(|a| a.shrink_after);
            self.next_busy =
                now + shrink_after.map_or(BUSY_INTERVAL, |s| (s / 12).min(BUSY_INTERVAL));
            self.look_for_busy(&workers, now);
        }
        let cpu = self.cpu_figures(&workers, now, cpu_busy);
        let booted = self.booted(pool, &workers, now, cpu.rule());
        // A worker still stopping holds memory the usage counts and the fit would charge to
        // the others: the sizers wait until it has exited (and the fit is not measured).
        let stopping = pool.stopping_pids();
        let settled = stopping.is_empty();
        let fit_due = settled && self.fit_due(booted, now, cpu.rule());
        if all_figures || over || capped || (sizer_due && settled) || fit_due {
            // Only when needed: smaps_rollup walks each worker's page tables, and on a busy host
            // /proc has hundreds of entries.
            measure(&mut workers, &procs::parents(Path::new("/proc")));
        }
        let reading = Reading {
            usage_bytes: usage.total_bytes(),
            workers,
            stopping,
        };
        let mut actions = self.guard_actions(&reading, pool, now);
        let recycling = self.guard.as_ref().is_some_and(|g| g.recycling().is_some());
        if sizer_due && actions.is_empty() && !recycling && settled {
            self.next_sizing = now + SIZING_INTERVAL;
            actions.extend(self.sizer_actions(&reading, pool));
        }
        if fit_due {
            self.next_fit = now + FIT_INTERVAL;
            self.adaptive_fit = Fit::measure(&reading, self.config.soft_limit_bytes);
        }
        if self.adaptive.is_some() && actions.is_empty() && !recycling && settled {
            actions.extend(self.adaptive_actions(pool, booted, now, cpu));
        }
        self.reading = Some(reading);
        actions
    }

    /// The live workers, without their memory yet.
    fn workers(&mut self, pool: &Pool, now: Instant) -> Vec<WorkerMemory> {
        let blank = |pid, slot, ready, age| WorkerMemory {
            pid,
            slot,
            uss_bytes: 0,
            pss_bytes: 0,
            shared_dirty_bytes: 0,
            ready,
            age,
        };
        match self.config.mode {
            Mode::FanOut => pool
                .live_workers()
                .into_iter()
                .map(|(slot, pid, ready, started)| {
                    blank(
                        pid,
                        Some(slot),
                        ready,
                        now.saturating_duration_since(started),
                    )
                })
                .collect(),
            Mode::Delegate => {
                let server = pool.worker_pids().first().copied();
                if server.is_some() && self.server.is_some() && server != self.server {
                    // A new server starts with the static count again.
                    if let Some(sizer) = &mut self.sizer {
                        sizer.retarget(self.config.workers);
                    }
                    if let Some(adaptive) = &mut self.adaptive {
                        adaptive.retarget(self.config.workers, now);
                    }
                }
                self.server = server.or(self.server);
                let proc_dir = Path::new("/proc");
                // A worker that has ended is no worker, zombie or not: its kill is claimed now,
                // not when the server gets round to reaping it (docs/architecture.md, "OOM kills").
                let mut children: Vec<i32> = pool
                    .worker_pids()
                    .into_iter()
                    .flat_map(|server| procs::children(proc_dir, server))
                    .filter(|pid| !procs::has_ended(proc_dir, *pid))
                    .collect();
                children.sort_unstable();
                self.seen.retain(|pid, _| children.contains(pid));
                let grace = self.config.ready_grace;
                children
                    .into_iter()
                    .map(|pid| {
                        let age =
                            now.saturating_duration_since(*self.seen.entry(pid).or_insert(now));
                        blank(pid, None, age >= grace, age)
                    })
                    .collect()
            }
        }
    }

    /// OOM kills the reaper did not claim: in delegate mode the server's workers (the launcher's
    /// grandchildren) that vanished since the last check claim them; what is left unclaimed for
    /// a check is reported as not attributed (another process of the dyno, or lost to a race).
    fn report_vanished_oom_kills(&mut self, workers: &[WorkerMemory], now: Instant) {
        self.oom.counted(self.meter.oom_kills(&self.snapshot), now);
        if self.config.mode == Mode::Delegate {
            let before = self
                .reading
                .as_ref()
                .map(|r| &r.workers[..])
                .unwrap_or_default();
            let gone: Vec<i32> = before
                .iter()
                .map(|w| w.pid)
                .filter(|pid| !workers.iter().any(|w| w.pid == *pid))
                .collect();
            let claimed = self.oom.claim(&gone);
            if !claimed.is_empty() {
                let event = self.oom_event(&claimed, 0, now);
                self.events.push(event);
            }
        }
        self.report_unclaimed_oom_kills(now, false);
    }

    fn guard_actions(&mut self, reading: &Reading, pool: &mut Pool, now: Instant) -> Vec<Action> {
        let Some(guard) = &mut self.guard else {
            return Vec::new();
        };
        match guard.check(reading, now) {
            None => Vec::new(),
            Some(GuardAction::Kill { pid, waited }) => {
                let event = Event::warn("worker_kill")
                    .with("pid", pid)
                    .secs("waited_s", waited)
                    .with("reason", "a recycled worker did not stop in time");
                self.events.push(event);
                vec![Action::Signal {
                    pid,
                    signal: Signal::SIGKILL,
                }]
            }
            Some(GuardAction::Recycle { worker, why }) => {
                self.recycles += 1;
                let cap = guard.config.worker_max_bytes;
                let mut event = Event::warn("memory_recycle");
                if let Some(slot) = worker.slot {
                    event = event.with("worker", slot);
                }
                event = event
                    .with("pid", worker.pid)
                    .with("reason", why.as_str())
                    .with("worker_uss", mb(worker.uss_bytes))
                    .with("worker_pss", mb(worker.pss_bytes));
                if let Some(cap) = cap.filter(|_| why == guard::Why::WorkerCap) {
                    event = event.with("worker_max", mb(cap));
                }
                self.events.push(self.with_usage(event));
                match self.config.mode {
                    Mode::FanOut => pool.recycle(worker.pid, now),
                    // The server replaces the worker it loses (unicorn's graceful stop is QUIT).
                    Mode::Delegate => vec![Action::Signal {
                        pid: worker.pid,
                        signal: self.config.signals.stop_worker,
                    }],
                }
            }
        }
    }

    fn sizer_actions(&mut self, reading: &Reading, pool: &mut Pool) -> Vec<Action> {
        let Some(sizer) = &mut self.sizer else {
            return Vec::new();
        };
        if self.config.mode == Mode::FanOut && pool.target() != sizer.target() {
            // TTIN/TTOU changed the count: measure from there.
            sizer.retarget(pool.target());
        }
        let Some(Resize { from, to, fit }) = sizer.check(reading) else {
            return Vec::new();
        };
        let event = Event::info("resize")
            .with("from", from)
            .with("to", to)
            .with("sizing", "measured")
            .with("fit", format!("{:.2}", fit.workers))
            .with("worker_cost", mb(fit.worker_bytes))
            .with("base", mb(fit.base_bytes));
        self.events.push(self.with_usage(event));
        self.resize(from, to, pool)
    }

    /// A new worker count carried out: the pool's target in fan-out, the server's own scaling
    /// signal in delegate mode.
    fn resize(&self, from: u32, to: u32, pool: &mut Pool) -> Vec<Action> {
        match self.config.mode {
            Mode::FanOut => {
                pool.set_target(to);
                Vec::new()
            }
            Mode::Delegate => {
                // The sizers run only for a server with scaling signals (`setup::configure`).
                let Some((more, fewer)) = self.config.signals.scale else {
                    return Vec::new();
                };
                let signal = if to > from { more } else { fewer };
                let pids = pool.worker_pids().into_iter();
                pids.map(|pid| Action::Signal { pid, signal }).collect()
            }
        }
    }

    /// The dyno's figures on a decision's line.
    fn with_usage(&self, event: Event) -> Event {
        let total = self.usage.map_or(0, |u| u.total_bytes());
        event
            .with("memory_total", mb(total))
            .with("soft_limit", mb(self.config.soft_limit_bytes))
            .with("memory_quota", mb(self.config.quota_bytes))
    }
}

/// Fills in each worker's memory, summed over the worker and everything under it.
fn measure(workers: &mut [WorkerMemory], parents: &HashMap<i32, i32>) {
    let proc_dir = Path::new("/proc");
    for worker in workers {
        let mut tree = vec![worker.pid];
        tree.extend(procs::descendants(parents, worker.pid));
        let footprint = smaps::total(proc_dir, &tree);
        worker.uss_bytes = footprint.uss_bytes;
        worker.pss_bytes = footprint.pss_bytes;
        worker.shared_dirty_bytes = footprint.shared_dirty_bytes;
    }
}

/// Bytes as a log figure: `123.4MB`, as Heroku's `sample#` lines write them.
pub fn mb(bytes: u64) -> String {
    format!("{:.1}MB", bytes as f64 / (1024.0 * 1024.0))
}
