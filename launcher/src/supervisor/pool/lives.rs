//! A worker's life in the pool: started (or not: fork failed), ready (by `READY=1`, by being
//! seen on the socket, or by the grace period), exited, and what it left in its group.

use std::time::Instant;

use nix::sys::signal::Signal;

use super::{Action, Event, Level, Lingering, Pending, Phase, Pool, Worker, SINGLE_PROCESS_READY};
use crate::servers::Mode;
use crate::supervisor::backoff;

impl Pool {
    pub fn spawned(&mut self, slot: u32, pid: i32, now: Instant) {
        let failures = self.take_pending_failures(slot);
        // A new server starts with the count its command and config give it.
        self.server_workers = self.config.workers;
        self.told = self.config.workers;
        self.last_scale = None;
        self.workers.push(Worker {
            slot,
            pid,
            started: now,
            ready: false,
            serving: false,
            stopping: false,
            kill_at: None,
            failures,
            group_signalled: false,
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

    /// A child exited; `status` is `exit:N` or `signal:N`, `cause` what is known of why (the
    /// kernel's OOM killer), `group_alive` whether processes are left in its process group.
    /// Unknown pids (orphans the launcher adopted as subreaper) are the loop's to report.
    pub fn exited(
        &mut self,
        pid: i32,
        status: &str,
        cause: Option<&str>,
        group_alive: bool,
        now: Instant,
    ) -> Vec<Action> {
        let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
            return Vec::new();
        };
        let worker = self.workers.remove(index);
        let actions = if group_alive {
            self.left_behind(&worker, now)
        } else {
            Vec::new()
        };
        let uptime = now.saturating_duration_since(worker.started);
        let mut event = Event::info("worker_exit")
            .with("worker", worker.slot)
            .with("pid", pid)
            .with("status", status)
            .secs("uptime_s", uptime);
        if let Some(cause) = cause {
            event = event.with("cause", cause);
        }
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
            // A worker that was ready and ran a while was fine: its slot starts over. One that died
            // soon after its grace period (say, on connecting to a database) is still failing.
            let stable = worker.ready && uptime >= backoff::STABLE;
            let failures = if stable { 1 } else { worker.failures + 1 };
            let delay = backoff::delay(failures, self.jitter.next());
            self.pending.push(Pending {
                slot: worker.slot,
                due: Some(now + delay),
                failures,
            });
            self.restarts += 1;
            // Not asked for: a warning, with when it comes back.
            event.level = Level::Warn;
            event = event
                .with("restart_in_s", format!("{:.2}", delay.as_secs_f64()))
                .with("failures", failures);
        }
        self.events.push(event);
        actions
    }

    /// The worker exited and left processes in its group: they are stopped too (a shell that ran
    /// the server without `exec` and died would leave the server serving on), with SIGKILL after
    /// the graceful timeout, or at the shutdown's deadline.
    fn left_behind(&mut self, worker: &Worker, now: Instant) -> Vec<Action> {
        let running = self.phase == Phase::Running;
        let kill_at = running.then(|| worker.kill_at.unwrap_or(now + self.config.graceful_timeout));
        self.lingering.push(Lingering {
            slot: worker.slot,
            pgid: worker.pid,
            kill_at,
        });
        if worker.group_signalled {
            return Vec::new();
        }
        self.events.push(
            Event::info("worker_stop")
                .with("worker", worker.slot)
                .with("group", worker.pid)
                .with("signal", "TERM")
                .with("reason", "left_behind"),
        );
        vec![Action::SignalGroup {
            pgid: worker.pid,
            signal: Signal::SIGTERM,
        }]
    }

    /// `READY=1` from this worker (or a process under it).
    pub fn notified_ready(&mut self, pid: i32, now: Instant) {
        self.serves(pid, "notify", now);
    }

    /// The worker (or a process under it) was seen waiting on the listening socket.
    pub fn seen_serving(&mut self, pid: i32, now: Instant) {
        self.serves(pid, "listening", now);
    }

    fn serves(&mut self, pid: i32, by: &str, now: Instant) {
        let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
            return;
        };
        self.workers[index].serving = true;
        // A delegated server says READY=1 before its workers have loaded the app (gunicorn's
        // arbiter does, at start): it is ready once one of its workers is (`server_workers_seen`).
        if !self.workers[index].ready && self.config.mode == Mode::FanOut {
            self.mark_ready(index, by, now);
        }
    }

    /// Delegate mode, at each check: whether one of the server's workers has been up for the grace
    /// period, and whether it has any. The server is ready then, or, running no worker process of
    /// its own, once it has been up for `SINGLE_PROCESS_READY`.
    pub fn server_workers_seen(&mut self, one_ready: bool, none: bool, now: Instant) {
        let Some(index) = self.workers.iter().position(|w| !w.stopping && !w.ready) else {
            return;
        };
        let worker = &self.workers[index];
        let alone = none && now.saturating_duration_since(worker.started) >= SINGLE_PROCESS_READY;
        let by = match (one_ready, worker.serving) {
            (true, true) => "notify",
            (true, false) => "workers",
            (false, _) if alone => "grace",
            (false, _) => return,
        };
        self.mark_ready(index, by, now);
    }

    /// The new worker of the rolling restart's step, while it has not been seen to serve: the
    /// loop looks for it waiting on the socket.
    pub fn awaiting_serving(&self) -> Option<i32> {
        if !self.config.socket {
            return None;
        }
        let (_, new, _) = self.rolling.as_ref()?.step?;
        let worker = self.workers.iter().find(|w| w.slot == new && !w.stopping)?;
        (!worker.serving).then_some(worker.pid)
    }

    pub(super) fn mark_ready(&mut self, index: usize, by: &str, now: Instant) {
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
}
