//! The memory guard and measured sizing. Every check reads the dyno's usage (`usage::Meter`), the
//! kernel's OOM kill count, and, when a decision needs them, each worker's own memory; then the
//! guard and the sizer decide, and their decisions become pool actions or signals, each logged
//! with the figures that led to it.

mod guard;
mod setup;
mod sizer;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::log::Event;
use super::pool::{Action, Pool};
use crate::host::Snapshot;
use crate::procs;
use crate::servers::Mode;
use crate::usage::{smaps, Meter, Usage};
pub use guard::{Guard, GuardAction, GuardConfig};
pub use setup::{configure, log_start};
#[cfg(test)]
use sizer::Fit;
pub use sizer::{Resize, Sizer, SizerConfig};

/// How often the dyno's usage is read: a leak of 40 MB/s moves 20 MB between two checks.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How often measured sizing measures the workers (each step waits for a warm-up anyway).
pub const SIZING_INTERVAL: Duration = Duration::from_secs(5);

/// One worker as the guard and the sizer see it: in fan-out a copy of the command, in delegate
/// mode one of the server's own workers. Memory is summed over the worker's process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerMemory {
    pub pid: i32,
    /// The launcher's slot number (fan-out only).
    pub slot: Option<u32>,
    pub uss_bytes: u64,
    pub pss_bytes: u64,
    pub ready: bool,
    pub age: Duration,
}

/// What one check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The dyno's usage as Heroku counts it: resident plus swap.
    pub usage_bytes: u64,
    pub workers: Vec<WorkerMemory>,
}

/// What the watch was set up with.
pub struct WatchConfig {
    pub mode: Mode,
    pub quota_bytes: u64,
    pub soft_limit_bytes: u64,
    pub ready_grace: Duration,
    pub guard: Option<GuardConfig>,
    pub sizer: Option<SizerConfig>,
    /// The worker count the sizer starts from.
    pub workers: u32,
}

pub struct Watch {
    snapshot: Snapshot,
    meter: Meter,
    config: WatchConfig,
    guard: Option<Guard>,
    sizer: Option<Sizer>,
    oom_kills: Option<u64>,
    /// A rise in the OOM counter left for the reaper to claim, once.
    oom_deferred: bool,
    /// Delegate mode: the server process, to notice when it was restarted.
    server: Option<i32>,
    next_check: Instant,
    next_sizing: Instant,
    /// Delegate mode: the server's workers, and when each was first seen.
    seen: HashMap<i32, Instant>,
    /// The last check's figures, for the `sample#` line and the state file.
    pub usage: Option<Usage>,
    pub reading: Option<Reading>,
    pub recycles: u64,
    pub oom_total: u64,
    events: Vec<Event>,
}

impl Watch {
    pub fn new(snapshot: Snapshot, meter: Meter, config: WatchConfig, now: Instant) -> Self {
        let oom_kills = meter.oom_kills(&snapshot);
        Watch {
            guard: config.guard.clone().map(Guard::new),
            sizer: config.sizer.clone().map(|c| Sizer::new(c, config.workers)),
            snapshot,
            meter,
            config,
            oom_kills,
            oom_deferred: false,
            server: None,
            next_check: now,
            next_sizing: now,
            seen: HashMap::new(),
            usage: None,
            reading: None,
            recycles: 0,
            oom_total: 0,
            events: Vec::new(),
        }
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    pub fn sizer(&self) -> Option<&Sizer> {
        self.sizer.as_ref()
    }

    pub fn next_wakeup(&self) -> Instant {
        self.next_check
    }

    /// The events logged since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// TTIN/TTOU forwarded to a delegated server: measured sizing goes on from the new count.
    pub fn scaled_by_signal(&mut self, signal: Signal) {
        if let Some(sizer) = &mut self.sizer {
            let target = sizer.target();
            match signal {
                Signal::SIGTTIN => sizer.retarget(target + 1),
                Signal::SIGTTOU => sizer.retarget(target.saturating_sub(1)),
                _ => {}
            }
        }
    }

    /// A child of the launcher died of SIGKILL: was it the kernel's OOM killer? Only a rise in the
    /// cgroup's own counter says so; a SIGKILL alone is not taken as proof.
    pub fn claim_oom_kill(&mut self, pid: i32) -> bool {
        let kills = self.take_oom_kills(self.meter.oom_kills(&self.snapshot));
        if kills == 0 {
            return false;
        }
        let event = Event::error("oom_kill")
            .with("pid", pid)
            .with("kills", kills);
        self.events.push(self.with_usage(event));
        true
    }

    /// Reads the dyno's usage and lets the guard and the sizer decide. `all_figures` asks for
    /// every worker's memory even when no decision needs it (the `sample#` line).
    pub fn check(&mut self, pool: &mut Pool, now: Instant, all_figures: bool) -> Vec<Action> {
        self.next_check = now + CHECK_INTERVAL;
        let Some(usage) = self.meter.usage(&self.snapshot) else {
            return Vec::new();
        };
        self.usage = Some(usage);
        let mut workers = self.workers(pool, now);
        self.report_vanished_oom_kills(&workers);
        let over = usage.total_bytes() > self.config.soft_limit_bytes;
        let capped = self
            .guard
            .as_ref()
            .is_some_and(|g| g.config.worker_max_bytes.is_some());
        let sizer_due = self.sizer.is_some() && now >= self.next_sizing;
        if all_figures || over || capped || sizer_due {
            // Only when needed: smaps_rollup walks each worker's page tables, and on a busy host
            // /proc has hundreds of entries.
            measure(&mut workers, &procs::parents(Path::new("/proc")));
        }
        let reading = Reading {
            usage_bytes: usage.total_bytes(),
            workers,
        };
        let mut actions = self.guard_actions(&reading, pool, now);
        let recycling = self.guard.as_ref().is_some_and(|g| g.recycling().is_some());
        if sizer_due && actions.is_empty() && !recycling {
            self.next_sizing = now + SIZING_INTERVAL;
            actions.extend(self.sizer_actions(&reading, pool));
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
                }
                self.server = server.or(self.server);
                let proc_dir = Path::new("/proc");
                let mut children: Vec<i32> = pool
                    .worker_pids()
                    .into_iter()
                    .flat_map(|server| procs::children(proc_dir, server))
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

    /// OOM kills the reaper did not claim: a delegated server's worker, or another process.
    fn report_vanished_oom_kills(&mut self, workers: &[WorkerMemory]) {
        let before: Vec<i32> = self
            .reading
            .as_ref()
            .map(|r| r.workers.iter().map(|w| w.pid).collect())
            .unwrap_or_default();
        let gone: Vec<String> = before
            .iter()
            .filter(|pid| !workers.iter().any(|w| w.pid == **pid))
            .map(i32::to_string)
            .collect();
        let counted = self.meter.oom_kills(&self.snapshot);
        let unseen = counted.unwrap_or(0) > self.oom_kills.unwrap_or(0);
        // A fan-out worker killed since the last reap is still listed: the reaper names it on the
        // next turn of the loop. Wait one check before calling the kill unattributed.
        let reaper_may_claim = self.config.mode == Mode::FanOut && gone.is_empty();
        if unseen && reaper_may_claim && !self.oom_deferred {
            self.oom_deferred = true;
            return;
        }
        self.oom_deferred = false;
        let kills = self.take_oom_kills(counted);
        if kills == 0 {
            return;
        }
        let pid = if gone.is_empty() {
            "unknown".to_owned()
        } else {
            gone.join(",")
        };
        let event = Event::error("oom_kill")
            .with("pid", pid)
            .with("kills", kills);
        self.events.push(self.with_usage(event));
    }

    /// How many OOM kills the cgroup has `counted` since the last look; they are now seen.
    fn take_oom_kills(&mut self, counted: Option<u64>) -> u64 {
        let Some(now) = counted else {
            return 0;
        };
        let new = now.saturating_sub(self.oom_kills.unwrap_or(0));
        self.oom_kills = Some(now);
        self.oom_total += new;
        new
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
                    // The server replaces the worker it loses.
                    Mode::Delegate => vec![Action::Signal {
                        pid: worker.pid,
                        signal: Signal::SIGTERM,
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
            .with("fit", format!("{:.2}", fit.workers))
            .with("worker_uss", mb(fit.worker_bytes))
            .with("base", mb(fit.base_bytes));
        self.events.push(self.with_usage(event));
        match self.config.mode {
            Mode::FanOut => {
                pool.set_target(to);
                Vec::new()
            }
            Mode::Delegate => {
                let signal = if to > from {
                    Signal::SIGTTIN
                } else {
                    Signal::SIGTTOU
                };
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
    }
}

/// Bytes as a log figure: `123.4MB`, as Heroku's `sample#` lines write them.
pub fn mb(bytes: u64) -> String {
    format!("{:.1}MB", bytes as f64 / (1024.0 * 1024.0))
}
