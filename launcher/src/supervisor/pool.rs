//! The worker pool's policy, free of I/O: what to spawn, signal or kill, given what happened and the
//! time. The loop in `supervisor` feeds it events (exits, signals, readiness) and carries out the
//! actions it returns; every decision is also an `Event` for the log.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::backoff::{self, Jitter};
use super::log::Event;
use crate::servers::Mode;
use crate::sizing::MAX_WEB_CONCURRENCY;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a worker in this slot, then report it with `spawned`.
    Spawn {
        slot: u32,
    },
    Signal {
        pid: i32,
        signal: Signal,
    },
    /// SIGKILL every process left under the launcher.
    KillAll,
    /// Stop accepting: close the launcher's copy of the listening socket.
    CloseListener,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub workers: u32,
    pub ready_grace: Duration,
    pub give_up_after: Duration,
    pub graceful_timeout: Duration,
    /// On Heroku every process of the dyno gets SIGTERM itself: it is not forwarded.
    pub on_heroku: bool,
    /// Logged once, the first time a worker dies before it was ready.
    pub boot_failure_hint: Option<String>,
}

#[derive(Debug, Clone)]
struct Worker {
    slot: u32,
    pid: i32,
    started: Instant,
    ready: bool,
    stopping: bool,
    /// Failed boots of this slot in a row before this worker was started.
    failures: u32,
}

#[derive(Debug, Clone)]
struct Pending {
    slot: u32,
    /// None once its `Spawn` has been handed out.
    due: Option<Instant>,
    failures: u32,
}

/// A rolling restart: the slots still to replace, and the step under way (old slot, new slot).
#[derive(Debug, Clone)]
struct Rolling {
    queue: VecDeque<u32>,
    step: Option<(u32, u32)>,
    started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Stopping {
        deadline: Instant,
        fast: bool,
        killed: bool,
        exit_code: u8,
    },
}

pub struct Pool {
    config: Config,
    target: u32,
    workers: Vec<Worker>,
    pending: Vec<Pending>,
    next_slot: u32,
    rolling: Option<Rolling>,
    phase: Phase,
    last_ready: Instant,
    restarts: u64,
    last_exit: Option<String>,
    jitter: Jitter,
    events: Vec<Event>,
}

impl Pool {
    pub fn new(config: Config, now: Instant, seed: u64) -> Self {
        let target = match config.mode {
            Mode::FanOut => config.workers,
            Mode::Delegate => 1,
        };
        Pool {
            config,
            target,
            workers: Vec::new(),
            pending: Vec::new(),
            next_slot: 1,
            rolling: None,
            phase: Phase::Running,
            last_ready: now,
            restarts: 0,
            last_exit: None,
            jitter: Jitter::new(seed),
            events: Vec::new(),
        }
    }

    /// The events logged since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn worker_pids(&self) -> Vec<i32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    /// (workers not being stopped, of which ready, restarts so far): the `sample#` figures.
    pub fn counts(&self) -> (usize, usize, u64) {
        let live = self.workers.iter().filter(|w| !w.stopping);
        let ready = live.clone().filter(|w| w.ready).count();
        (live.count(), ready, self.restarts)
    }

    /// Some(exit code) once shutting down: the loop exits with it when no child is left.
    pub fn exit_code(&self) -> Option<u8> {
        match self.phase {
            Phase::Running => None,
            Phase::Stopping { exit_code, .. } => Some(exit_code),
        }
    }

    pub fn spawned(&mut self, slot: u32, pid: i32, now: Instant) {
        let failures = self.take_pending_failures(slot);
        self.workers.push(Worker {
            slot,
            pid,
            started: now,
            ready: false,
            stopping: false,
            failures,
        });
        self.events.push(
            Event::info("worker_spawn")
                .with("worker", slot)
                .with("pid", pid),
        );
    }

    /// fork failed (out of processes or memory): retried like a crash.
    pub fn spawn_failed(&mut self, slot: u32, error: &str, now: Instant) {
        let failures = self.take_pending_failures(slot) + 1;
        let delay = backoff::delay(failures, self.jitter.next());
        self.pending.push(Pending {
            slot,
            due: Some(now + delay),
            failures,
        });
        self.events.push(
            Event::error("spawn_failed")
                .with("worker", slot)
                .with("error", error)
                .secs("restart_in_s", delay),
        );
    }

    fn take_pending_failures(&mut self, slot: u32) -> u32 {
        let index = self.pending.iter().position(|p| p.slot == slot);
        index.map_or(0, |i| self.pending.swap_remove(i).failures)
    }

    /// A child exited; `status` is `exit:N` or `signal:N`. Unknown pids (orphans the launcher
    /// adopted as subreaper) are ignored.
    pub fn exited(&mut self, pid: i32, status: &str, now: Instant) {
        let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
            return;
        };
        let worker = self.workers.remove(index);
        let uptime = now.saturating_duration_since(worker.started);
        let mut event = Event::info("worker_exit")
            .with("worker", worker.slot)
            .with("pid", pid)
            .with("status", status)
            .secs("uptime_s", uptime);
        self.last_exit = Some(format!(
            "worker {} (pid {pid}) ended with {status} after {:.1} s",
            worker.slot,
            uptime.as_secs_f64()
        ));
        if !worker.stopping && self.phase == Phase::Running {
            if let Some(hint) = self
                .config
                .boot_failure_hint
                .take()
                .filter(|_| !worker.ready)
            {
                self.events.push(Event::warn("hint").with("message", hint));
            }
            let failures = if worker.ready { 1 } else { worker.failures + 1 };
            let delay = backoff::delay(failures, self.jitter.next());
            self.pending.push(Pending {
                slot: worker.slot,
                due: Some(now + delay),
                failures,
            });
            self.restarts += 1;
            event = Event::warn("worker_exit")
                .with("worker", worker.slot)
                .with("pid", pid)
                .with("status", status)
                .secs("uptime_s", uptime)
                .with("restart_in_s", format!("{:.2}", delay.as_secs_f64()))
                .with("failures", failures);
        }
        self.events.push(event);
    }

    /// `READY=1` from this worker (or a process under it).
    pub fn notified_ready(&mut self, pid: i32, now: Instant) {
        if let Some(index) = self.workers.iter().position(|w| w.pid == pid && !w.ready) {
            self.mark_ready(index, "notify", now);
        }
    }

    fn mark_ready(&mut self, index: usize, by: &str, now: Instant) {
        let worker = &mut self.workers[index];
        worker.ready = true;
        self.last_ready = now;
        self.events.push(
            Event::info("worker_ready")
                .with("worker", worker.slot)
                .with("pid", worker.pid)
                .secs("boot_s", now.saturating_duration_since(worker.started))
                .with("by", by),
        );
    }

    /// The earliest time something is due: a respawn, a grace period, a deadline.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let grace = self
            .workers
            .iter()
            .filter(|w| !w.ready && !w.stopping)
            .map(|w| w.started + self.config.ready_grace);
        let respawns = self.pending.iter().filter_map(|p| p.due);
        let deadline = match self.phase {
            Phase::Running => self.last_ready + self.config.give_up_after,
            Phase::Stopping { deadline, .. } => deadline,
        };
        grace.chain(respawns).chain([deadline]).min()
    }
}

/// Signals and the convergence towards the wanted set of workers.
impl Pool {
    pub fn signal(&mut self, signal: Signal, now: Instant) -> Vec<Action> {
        // The signal's line comes before the lines of what it caused.
        let mark = self.events.len();
        let stopping = self.phase != Phase::Running;
        let delegate = self.config.mode == Mode::Delegate;
        let (action, actions) = match signal {
            Signal::SIGTERM if stopping => ("ignored", Vec::new()),
            Signal::SIGTERM => ("shutdown", self.shut_down(false, Signal::SIGTERM, now)),
            Signal::SIGINT | Signal::SIGQUIT => match self.phase {
                Phase::Stopping { fast: true, .. } => ("kill", vec![Action::KillAll]),
                _ => {
                    let forwarded = if delegate { signal } else { Signal::SIGQUIT };
                    ("fast_shutdown", self.shut_down(true, forwarded, now))
                }
            },
            _ if stopping => ("ignored", Vec::new()),
            Signal::SIGHUP | Signal::SIGTTIN | Signal::SIGTTOU if delegate => {
                ("forwarded", self.to_all(signal))
            }
            Signal::SIGHUP if self.rolling.is_some() => ("ignored", Vec::new()),
            Signal::SIGHUP => {
                let mut queue: Vec<u32> = self
                    .workers
                    .iter()
                    .filter(|w| !w.stopping)
                    .map(|w| w.slot)
                    .collect();
                queue.sort_unstable();
                self.rolling = Some(Rolling {
                    queue: queue.into(),
                    step: None,
                    started: now,
                });
                ("rolling_restart", Vec::new())
            }
            Signal::SIGTTIN => {
                self.target = (self.target + 1).min(MAX_WEB_CONCURRENCY);
                ("scale_up", Vec::new())
            }
            Signal::SIGTTOU => {
                self.target = self.target.saturating_sub(1).max(1);
                ("scale_down", Vec::new())
            }
            _ => ("forwarded", self.to_all(signal)),
        };
        let mut event = Event::info("signal")
            .with("signal", signal.as_str().trim_start_matches("SIG"))
            .with("action", action);
        if matches!(signal, Signal::SIGTTIN | Signal::SIGTTOU) && !delegate && !stopping {
            event = event.with("workers", self.target);
        }
        self.events.insert(mark, event);
        actions
    }

    fn to_all(&self, signal: Signal) -> Vec<Action> {
        let pids = self.workers.iter().map(|w| w.pid);
        pids.map(|pid| Action::Signal { pid, signal }).collect()
    }

    fn shut_down(&mut self, fast: bool, forwarded: Signal, now: Instant) -> Vec<Action> {
        let forward = fast || !self.config.on_heroku;
        self.phase = Phase::Stopping {
            deadline: now + self.config.graceful_timeout,
            fast,
            killed: false,
            exit_code: 0,
        };
        self.pending.clear();
        self.rolling = None;
        self.events.push(
            Event::info("shutdown")
                .with("fast", fast)
                .with(
                    "forwarded",
                    if forward { forwarded.as_str() } else { "none" },
                )
                .secs("timeout_s", self.config.graceful_timeout)
                .with("workers", self.workers.len()),
        );
        let mut actions = vec![Action::CloseListener];
        for worker in &mut self.workers {
            // A worker a rolling restart already stopped got its TERM.
            if forward && (fast || !worker.stopping) {
                actions.push(Action::Signal {
                    pid: worker.pid,
                    signal: forwarded,
                });
            }
            worker.stopping = true;
        }
        actions
    }

    /// Moves towards the wanted workers; call after every batch of events.
    pub fn converge(&mut self, now: Instant) -> Vec<Action> {
        if let Phase::Stopping {
            deadline,
            fast,
            killed: false,
            exit_code,
        } = self.phase
        {
            if now < deadline {
                return Vec::new();
            }
            self.phase = Phase::Stopping {
                deadline,
                fast,
                killed: true,
                exit_code,
            };
            self.events.push(
                Event::warn("shutdown_timeout")
                    .with("killed", self.workers.len())
                    .secs("timeout_s", self.config.graceful_timeout),
            );
            return vec![Action::KillAll];
        }
        if self.phase != Phase::Running {
            return Vec::new();
        }
        for index in 0..self.workers.len() {
            let worker = &self.workers[index];
            let graced = now.saturating_duration_since(worker.started) >= self.config.ready_grace;
            if !worker.ready && !worker.stopping && graced {
                self.mark_ready(index, "grace", now);
            }
        }
        if self.workers.iter().any(|w| w.ready && !w.stopping) {
            self.last_ready = now;
        } else if now.saturating_duration_since(self.last_ready) >= self.config.give_up_after {
            return self.give_up(now);
        }
        let mut actions = self.roll(now);
        actions.extend(self.respawn_due(now));
        actions.extend(self.scale());
        actions
    }

    fn give_up(&mut self, now: Instant) -> Vec<Action> {
        let last = self.last_exit.as_deref().unwrap_or("no worker has exited");
        self.events.push(
            Event::error("give_up")
                .with(
                    "reason",
                    format!(
                        "no worker has been ready for {} s; exiting so that the platform restarts the dyno",
                        self.config.give_up_after.as_secs_f64()
                    ),
                )
                .with("last", last),
        );
        self.phase = Phase::Stopping {
            deadline: now,
            fast: true,
            killed: true,
            exit_code: 1,
        };
        vec![Action::CloseListener, Action::KillAll]
    }

    /// One step at a time: a new worker is spawned, and once it is ready the old one is stopped.
    fn roll(&mut self, now: Instant) -> Vec<Action> {
        let Some(mut rolling) = self.rolling.take() else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if let Some((old, new)) = rolling.step {
            if !self.workers.iter().any(|w| w.slot == new && w.ready) {
                self.rolling = Some(rolling);
                return actions;
            }
            rolling.step = None;
            actions.extend(self.stop_slot(old, "rolling_restart"));
        }
        while let Some(old) = rolling.queue.pop_front() {
            if self.workers.iter().any(|w| w.slot == old && !w.stopping) {
                rolling.step = Some((old, self.next_slot));
                actions.push(self.new_slot());
                self.rolling = Some(rolling);
                return actions;
            }
        }
        if self.workers.iter().any(|w| w.stopping) {
            // Done once the last old worker has exited.
            self.rolling = Some(rolling);
            return actions;
        }
        self.events.push(
            Event::info("restart_done")
                .with("workers", self.target)
                .secs("took_s", now.saturating_duration_since(rolling.started)),
        );
        actions
    }

    /// TERM to the worker in `slot`, which is not replaced.
    fn stop_slot(&mut self, slot: u32, reason: &str) -> Option<Action> {
        let worker = self
            .workers
            .iter_mut()
            .find(|w| w.slot == slot && !w.stopping)?;
        worker.stopping = true;
        self.events.push(
            Event::info("worker_stop")
                .with("worker", slot)
                .with("pid", worker.pid)
                .with("signal", "TERM")
                .with("reason", reason),
        );
        Some(Action::Signal {
            pid: worker.pid,
            signal: Signal::SIGTERM,
        })
    }

    fn respawn_due(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for pending in &mut self.pending {
            if pending.due.is_some_and(|due| due <= now) {
                pending.due = None;
                actions.push(Action::Spawn { slot: pending.slot });
            }
        }
        actions
    }

    /// A new slot number, held as pending until `spawned` so that it is counted once.
    fn new_slot(&mut self) -> Action {
        let slot = self.next_slot;
        self.next_slot += 1;
        self.pending.push(Pending {
            slot,
            due: None,
            failures: 0,
        });
        Action::Spawn { slot }
    }

    /// New slots up to the target (a rolling step may add one); the newest workers stopped above it.
    fn scale(&mut self) -> Vec<Action> {
        let stepping = self.rolling.as_ref().is_some_and(|r| r.step.is_some());
        let wanted = self.target as usize + usize::from(stepping);
        let live = self.workers.iter().filter(|w| !w.stopping).count() + self.pending.len();
        let mut actions = Vec::new();
        for _ in live..wanted {
            actions.push(self.new_slot());
        }
        if live > wanted && !stepping {
            actions.extend(self.stop_extra(live - wanted));
        }
        actions
    }

    fn stop_extra(&mut self, mut extra: usize) -> Vec<Action> {
        // Slots waiting for a respawn go first: nothing runs there.
        while extra > 0 && self.pending.iter().any(|p| p.due.is_some()) {
            if let Some(i) = self.pending.iter().position(|p| p.due.is_some()) {
                self.pending.swap_remove(i);
            }
            extra -= 1;
        }
        let mut newest: Vec<&Worker> = self.workers.iter().filter(|w| !w.stopping).collect();
        newest.sort_by_key(|w| std::cmp::Reverse((w.started, w.slot)));
        let slots: Vec<u32> = newest.iter().take(extra).map(|w| w.slot).collect();
        slots
            .into_iter()
            .filter_map(|slot| self.stop_slot(slot, "scale_down"))
            .collect()
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
