//! Moving towards the wanted workers: readiness by grace, giving up, rolling restart steps,
//! respawns when due, and scaling to the target.

use std::time::Instant;

use nix::sys::signal::Signal;

use super::{Action, Event, KillTarget, Pending, Phase, Pool, Worker};
use super::{SCALE_SPACING, SPAWN_BATCH, SWEEP_INTERVAL};

impl Pool {
    /// Moves towards the wanted workers; call after every batch of events.
    pub fn converge(&mut self, now: Instant) -> Vec<Action> {
        if let Phase::Stopping {
            deadline, killed, ..
        } = self.phase
        {
            return self.finish_stopping(now, deadline, killed);
        }
        self.more_to_spawn = false;
        for index in 0..self.workers.len() {
            let worker = &self.workers[index];
            let graced = now.saturating_duration_since(worker.started) >= self.config.ready_grace;
            // A delegated server is ready when one of its workers is (`server_workers_seen`).
            let copy = self.config.mode == crate::servers::Mode::FanOut;
            if copy && !worker.ready && !worker.stopping && graced {
                self.mark_ready(index, "grace", now);
            }
        }
        if self.workers.iter().any(|w| w.ready && !w.stopping) {
            self.last_ready = now;
        } else if now.saturating_duration_since(self.last_ready) >= self.config.give_up_after {
            return self.give_up(now);
        }
        let mut actions = self.kill_overdue(now);
        actions.extend(self.scale_server(now));
        actions.extend(self.roll(now));
        let mut budget = SPAWN_BATCH.saturating_sub(actions.len());
        actions.extend(self.respawn_due(now, &mut budget));
        actions.extend(self.scale(now, &mut budget));
        actions
    }

    /// During a shutdown: SIGKILL to everything left at the deadline, then again every
    /// `SWEEP_INTERVAL` (whatever forked or left its group since) until nothing is left.
    fn finish_stopping(
        &mut self,
        now: Instant,
        deadline: Instant,
        killed: Option<(Instant, Instant)>,
    ) -> Vec<Action> {
        let (report, at) = match killed {
            None if now >= deadline => {
                let report =
                    Event::warn("shutdown_timeout").secs("timeout_s", self.config.graceful_timeout);
                (report, now)
            }
            Some((at, swept)) if now >= swept + SWEEP_INTERVAL => {
                let report = Event::warn("sweep").with("reason", "started after the final SIGKILL");
                (report, at)
            }
            _ => return Vec::new(),
        };
        self.kill_all((at, now), Some(report))
    }

    /// SIGKILL to everything left, marked in the shutdown: `killed` is (the first SIGKILL, this
    /// one), from which the sweeps and the stuck wait count.
    pub(super) fn kill_all(
        &mut self,
        killed: (Instant, Instant),
        report: Option<Event>,
    ) -> Vec<Action> {
        if let Phase::Stopping {
            deadline,
            fast,
            exit_code,
            ..
        } = self.phase
        {
            self.phase = Phase::Stopping {
                deadline,
                fast,
                killed: Some(killed),
                exit_code,
            };
        }
        vec![Action::Kill {
            target: KillTarget::All,
            report,
        }]
    }

    fn give_up(&mut self, now: Instant) -> Vec<Action> {
        let reason = format!(
            "no worker has been ready for {} s; exiting so that the platform restarts the dyno",
            self.config.give_up_after.as_secs_f64()
        );
        self.fail(&reason, now)
    }

    /// Something the dyno cannot serve without: every process is killed at once, and the
    /// launcher exits 1 so that the platform restarts the dyno.
    pub fn fail(&mut self, reason: &str, now: Instant) -> Vec<Action> {
        if self.phase != Phase::Running {
            return Vec::new();
        }
        let last = self.last_exit.as_deref().unwrap_or("no worker has exited");
        self.events.push(
            Event::error("give_up")
                .with("reason", reason)
                .with("last", last),
        );
        self.phase = Phase::Stopping {
            deadline: now,
            fast: true,
            killed: Some((now, now)),
            exit_code: 1,
        };
        let kill = Action::Kill {
            target: KillTarget::All,
            report: None,
        };
        vec![Action::CloseListener, kill]
    }

    /// One step at a time: a new worker is spawned, and once it is seen to serve (`READY=1`, or
    /// waiting on the socket; the grace period is not enough) the old one is stopped. A new worker
    /// not serving within `ready_timeout` ends the restart: it is stopped, the old ones stay.
    fn roll(&mut self, now: Instant) -> Vec<Action> {
        let Some(mut rolling) = self.rolling.take() else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if let Some((old, new, since)) = rolling.step {
            let socket = self.config.socket;
            let serves = |w: &&Worker| w.slot == new && (w.serving || (!socket && w.ready));
            if !self.workers.iter().any(|w| serves(&w)) {
                if now.saturating_duration_since(since) >= self.config.ready_timeout {
                    return self.restart_failed(new, since, now);
                }
                self.rolling = Some(rolling);
                return actions;
            }
            rolling.step = None;
            actions.extend(self.stop_slot(old, "rolling_restart", now));
        }
        while let Some(old) = rolling.queue.pop_front() {
            if self.workers.iter().any(|w| w.slot == old && !w.stopping) {
                rolling.step = Some((old, self.next_slot, now));
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

    /// The rolling restart's new worker did not serve in time: it is stopped, the old workers
    /// that are left keep serving, and the restart ends.
    fn restart_failed(&mut self, new: u32, since: Instant, now: Instant) -> Vec<Action> {
        let pid = self.workers.iter().find(|w| w.slot == new).map(|w| w.pid);
        let mut event = Event::error("restart_failed")
            .with("worker", new)
            .secs("waited_s", now.saturating_duration_since(since))
            .with(
                "reason",
                "the new worker neither sent READY=1 nor waited on the socket within \
                 LAUNCHER_READY_TIMEOUT; the old workers keep serving",
            );
        if let Some(pid) = pid {
            event = event.with("pid", pid);
        }
        self.events.push(event);
        // The slot is not respawned: it was the restart's extra one.
        self.pending.retain(|p| p.slot != new);
        self.stop_slot(new, "restart_failed", now)
            .into_iter()
            .collect()
    }

    /// TERM to the worker in `slot` (its whole group), which is not replaced here; SIGKILL
    /// follows after the graceful timeout.
    pub(super) fn stop_slot(&mut self, slot: u32, reason: &str, now: Instant) -> Option<Action> {
        let index = self
            .workers
            .iter()
            .position(|w| w.slot == slot && !w.stopping)?;
        let action = self.retire(self.workers[index].pid, Signal::SIGTERM);
        let worker = &mut self.workers[index];
        worker.stopping = true;
        worker.group_signalled = matches!(action, Action::Retire { .. });
        worker.kill_at = Some(now + self.config.graceful_timeout);
        self.events.push(
            Event::info("worker_stop")
                .with("worker", slot)
                .with("pid", worker.pid)
                .with("signal", "TERM")
                .with("reason", reason),
        );
        Some(action)
    }

    /// Workers stopped while the pool runs on, and what workers left behind, that outlived the
    /// graceful timeout: SIGKILL to the whole group.
    fn kill_overdue(&mut self, now: Instant) -> Vec<Action> {
        let overdue = |at: &mut Option<Instant>| at.take_if(|at| *at <= now).is_some();
        let mut due: Vec<(u32, &str, i32)> = Vec::new();
        for worker in &mut self.workers {
            if overdue(&mut worker.kill_at) {
                due.push((worker.slot, "pid", worker.pid));
            }
        }
        for left in &mut self.lingering {
            if overdue(&mut left.kill_at) {
                due.push((left.slot, "group", left.pgid));
            }
        }
        let timeout = self.config.graceful_timeout;
        due.into_iter()
            .map(|(slot, key, pgid)| Action::Kill {
                target: KillTarget::Group(pgid),
                report: Some(
                    Event::warn("worker_kill")
                        .with("worker", slot)
                        .with(key, pgid)
                        .secs("waited_s", timeout)
                        .with("reason", "did not stop within the graceful timeout"),
                ),
            })
            .collect()
    }

    /// A delegated server's next scaling signal towards the count asked for, when it is due: one
    /// at a time, the same signal not within `SCALE_SPACING` of the last, to the server running.
    pub(super) fn scale_server(&mut self, now: Instant) -> Vec<Action> {
        let Some((signal, due)) = self.scale_due(now) else {
            self.scale_was_held = false;
            return Vec::new();
        };
        let server = self.workers.iter().find(|w| !w.stopping);
        let (Some(server), true) = (server, now >= due) else {
            return Vec::new();
        };
        self.told = self.told_after(signal, 1);
        self.last_scale = Some((signal, now));
        vec![Action::Scale {
            pid: server.pid,
            signal,
        }]
    }

    /// The loop found the last `signal` still pending at the server, which has not run since
    /// (stopped, frozen, starved of CPU): it was not sent, and is tried again `SCALE_SPACING`
    /// later. Said once until the count is reached.
    pub fn scale_held(&mut self, signal: Signal, now: Instant) {
        self.told = self.told_after(signal, -1);
        self.last_scale = Some((signal, now));
        if std::mem::replace(&mut self.scale_was_held, true) {
            return;
        }
        let name = signal.as_str().trim_start_matches("SIG");
        self.events.push(
            Event::info("scale_held")
                .with("signal", name)
                .with("workers", self.server_workers)
                .with(
                    "reason",
                    "the server has not taken the last one yet (stopped, frozen or starved of \
                     CPU): the next is sent once it has, as two would count as one",
                ),
        );
    }

    /// When the next scaling signal is due, for the loop's wait.
    pub(super) fn next_scale(&self, now: Instant) -> Option<Instant> {
        self.scale_due(now).map(|(_, due)| due)
    }

    /// The scaling signal still owed to a delegated server, and from when it may be sent.
    fn scale_due(&self, now: Instant) -> Option<(Signal, Instant)> {
        let (more, fewer) = self.config.signals.scale?;
        if self.phase != Phase::Running || self.config.mode != crate::servers::Mode::Delegate {
            return None;
        }
        let signal = match self.told.cmp(&self.server_workers) {
            std::cmp::Ordering::Less => more,
            std::cmp::Ordering::Greater => fewer,
            std::cmp::Ordering::Equal => return None,
        };
        let due = match self.last_scale {
            Some((last, at)) if last == signal => at + SCALE_SPACING,
            _ => now,
        };
        Some((signal, due.max(now)))
    }

    /// `told` after `times` of `signal` (negative: taken back).
    fn told_after(&self, signal: Signal, times: i32) -> u32 {
        let up = self
            .config
            .signals
            .scale
            .is_some_and(|(more, _)| more == signal);
        let step = if up { times } else { -times };
        self.told.saturating_add_signed(step)
    }

    fn respawn_due(&mut self, now: Instant, budget: &mut usize) -> Vec<Action> {
        let mut actions = Vec::new();
        for pending in &mut self.pending {
            if pending.due.is_some_and(|due| due <= now) {
                if *budget == 0 {
                    self.more_to_spawn = true;
                    break;
                }
                *budget -= 1;
                pending.due = None;
                actions.push(Action::Spawn { slot: pending.slot });
            }
        }
        actions
    }

    /// A new slot number, held as pending until `spawned` so that it is counted once.
    pub(super) fn new_slot(&mut self) -> Action {
        let slot = self.next_slot;
        self.next_slot += 1;
        self.pending.push(Pending {
            slot,
            due: None,
            failures: 0,
        });
        Action::Spawn { slot }
    }

    /// New slots up to the target (a rolling step may add one), `budget` at a time; the newest
    /// workers stopped above it.
    fn scale(&mut self, now: Instant, budget: &mut usize) -> Vec<Action> {
        let stepping = self.rolling.as_ref().is_some_and(|r| r.step.is_some());
        let wanted = self.target as usize + usize::from(stepping);
        let live = self.workers.iter().filter(|w| !w.stopping).count() + self.pending.len();
        let mut actions = Vec::new();
        let missing = wanted.saturating_sub(live);
        let now_started = missing.min(*budget);
        *budget -= now_started;
        self.more_to_spawn |= missing > now_started;
        for _ in 0..now_started {
            actions.push(self.new_slot());
        }
        if live > wanted && !stepping {
            actions.extend(self.stop_extra(live - wanted, now));
        }
        actions
    }

    fn stop_extra(&mut self, mut extra: usize, now: Instant) -> Vec<Action> {
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
            .filter_map(|slot| self.stop_slot(slot, "scale_down", now))
            .collect()
    }
}
