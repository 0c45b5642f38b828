//! The supervisor's one loop, as in gunicorn's arbiter: wait for a signal, a readiness message or
//! a timer -> handle signals -> reap -> read readiness -> check memory -> converge.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::log::Event;
use super::memory::{mb, Watch};
use super::pool::{Action, Pool};
use super::{net, spawn};
use crate::procs;
use crate::servers::Mode;
use crate::state;

/// How often the state file for `launcher size` is rewritten, at most.
const STATE_INTERVAL: Duration = Duration::from_secs(10);

pub struct Loop<'a> {
    pub pool: Pool,
    pub watch: Watch,
    pub signals: SignalFd,
    pub notify: Option<net::Notify>,
    pub listener: Option<net::Listener>,
    pub command: &'a mut spawn::Prepared,
    pub sample_interval: Option<Duration>,
    pub next_sample: Option<Instant>,
    pub mode: Mode,
    pub state_dir: PathBuf,
    pub next_state: Instant,
}

impl Loop<'_> {
    pub fn run(&mut self) -> u8 {
        loop {
            let now = Instant::now();
            let actions = self.pool.converge(now);
            self.carry_out(actions);
            if let Some(code) = self.pool.exit_code() {
                if !has_children() {
                    let reason = if code == 0 {
                        "shutdown complete"
                    } else {
                        "gave up"
                    };
                    Event::info("exit")
                        .with("status", code)
                        .with("reason", reason)
                        .emit();
                    state::remove(&self.state_dir, std::process::id());
                    return code;
                }
            }
            self.wait();
            let now = Instant::now();
            self.read_signals(now);
            self.reap(now);
            self.read_notify(now);
            self.check_memory(now);
            self.sample(now);
        }
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        // What was decided is logged before it is done, so the app's reaction comes after.
        self.emit_events();
        for action in actions {
            match action {
                Action::Spawn { slot } => match self.command.spawn() {
                    Ok(pid) => self.pool.spawned(slot, pid.as_raw(), Instant::now()),
                    Err(err) => self.pool.spawn_failed(slot, err.desc(), Instant::now()),
                },
                Action::Signal { pid, signal } => {
                    let _ = signal::kill(Pid::from_raw(pid), signal);
                }
                Action::KillAll => {
                    let parents = procs::parents(Path::new("/proc"));
                    for pid in procs::descendants(&parents, std::process::id() as i32) {
                        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                Action::CloseListener => self.listener = None,
            }
        }
        self.emit_events();
    }

    fn emit_events(&mut self) {
        for event in self
            .watch
            .take_events()
            .into_iter()
            .chain(self.pool.take_events())
        {
            event.emit();
        }
    }

    /// Sleeps until a signal, a readiness message or the next timer.
    fn wait(&self) {
        let now = Instant::now();
        let memory = Some(self.watch.next_wakeup()).filter(|_| self.pool.exit_code().is_none());
        let wakeups = [self.pool.next_wakeup(), self.next_sample, memory];
        let timeout = wakeups
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now) + Duration::from_millis(1));
        let timeout = timeout.map_or(PollTimeout::NONE, |d| {
            PollTimeout::try_from(d.min(Duration::from_secs(60))).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        if let Some(notify) = &self.notify {
            fds.push(PollFd::new(notify.as_fd(), PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => {
                Event::error("poll_failed").with("error", err.desc()).emit();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn read_signals(&mut self, now: Instant) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if signal == Signal::SIGCHLD {
                continue;
            }
            if self.mode == Mode::Delegate && self.pool.exit_code().is_none() {
                // Forwarded to the server, which scales itself: measuring goes on from there.
                self.watch.scaled_by_signal(signal);
            }
            let actions = self.pool.signal(signal, now);
            self.carry_out(actions);
        }
    }

    /// Reaps every child that ended: workers, and orphans adopted as subreaper.
    fn reap(&mut self, now: Instant) {
        loop {
            let (pid, status, killed) =
                match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit:{code}"), false),
                    Ok(WaitStatus::Signaled(pid, signal, _)) => (
                        pid,
                        format!("signal:{}", signal as i32),
                        signal == Signal::SIGKILL,
                    ),
                    Ok(WaitStatus::StillAlive) | Err(_) => return,
                    Ok(_) => continue,
                };
            let worker = self.pool.worker_pids().contains(&pid.as_raw());
            let oom = killed && worker && self.watch.claim_oom_kill(pid.as_raw());
            let cause = oom.then_some("oom_kill");
            self.pool.exited(pid.as_raw(), &status, cause, now);
        }
    }

    fn read_notify(&mut self, now: Instant) {
        let Some(notify) = &self.notify else { return };
        let senders = notify.ready_senders();
        if senders.is_empty() {
            return;
        }
        let parents = procs::parents(Path::new("/proc"));
        let workers = self.pool.worker_pids();
        for sender in senders {
            if let Some(worker) = procs::ancestor_in(&parents, sender, &workers) {
                self.pool.notified_ready(worker, now);
            }
        }
    }

    /// The memory guard and measured sizing, every `CHECK_INTERVAL`; the state file with them.
    fn check_memory(&mut self, now: Instant) {
        let sample_due = self.next_sample.is_some_and(|due| now >= due);
        let state_due = now >= self.next_state;
        let check_due = now >= self.watch.next_wakeup();
        if self.pool.exit_code().is_some() || !(check_due || sample_due || state_due) {
            return;
        }
        let actions = self
            .watch
            .check(&mut self.pool, now, sample_due || state_due);
        self.carry_out(actions);
        if state_due {
            self.next_state = now + STATE_INTERVAL;
            self.write_state();
        }
    }

    fn sample(&mut self, now: Instant) {
        let (Some(interval), Some(due)) = (self.sample_interval, self.next_sample) else {
            return;
        };
        if now < due {
            return;
        }
        self.next_sample = Some(now + interval);
        let proc_dir = Path::new("/proc");
        let me = std::process::id() as i32;
        let (mut workers, mut ready, restarts) = self.pool.counts();
        if self.mode == Mode::Delegate {
            // The server's own workers, not the one server process.
            let servers = self.pool.worker_pids().into_iter();
            let forked = servers.map(|s| procs::children(proc_dir, s).len()).sum();
            (workers, ready) = (forked, if ready > 0 { forked } else { 0 });
        }
        let mut event = Event::info("sample")
            .with("sample#workers", workers)
            .with("sample#workers_ready", ready)
            .with("sample#restarts", restarts);
        if let Some(usage) = self.watch.usage {
            event = event
                .with("sample#memory_total", mb(usage.total_bytes()))
                .with("sample#memory_rss", mb(usage.rss_bytes))
                .with("sample#memory_swap", mb(usage.swap_bytes));
        }
        event = event.with("sample#memory_quota", mb(self.watch.config().quota_bytes));
        if let Some(reading) = &self.watch.reading {
            let uss = reading.workers.iter().map(|w| w.uss_bytes).max();
            let pss: u64 = reading.workers.iter().map(|w| w.pss_bytes).sum();
            event = event
                .with("sample#worker_uss_max", mb(uss.unwrap_or(0)))
                .with("sample#worker_pss_total", mb(pss));
        }
        if let Some(fit) = self.watch.sizer().and_then(|s| s.last_fit) {
            event = event.with("sample#workers_fit", format!("{:.2}", fit.workers));
        }
        event
            .with("sample#memory_recycles", self.watch.recycles)
            .with("sample#oom_kills", self.watch.oom_total)
            .with("sample#launcher_rss", mb(procs::rss_bytes(proc_dir, me)))
            .emit();
    }

    fn write_state(&self) {
        let megabytes = |bytes: u64| (bytes as f64 / 104_857.6).round() / 10.0;
        let config = self.watch.config();
        let workers = self.watch.reading.as_ref().map(|r| &r.workers[..]);
        let mut uss: Vec<u64> = workers
            .unwrap_or_default()
            .iter()
            .map(|w| w.uss_bytes)
            .collect();
        uss.sort_unstable_by(|a, b| b.cmp(a));
        let fit = self.watch.sizer().and_then(|s| s.last_fit);
        let written = state::State {
            pid: std::process::id(),
            mode: self.mode.to_string(),
            // What runs: `measured` asked for a user's WEB_CONCURRENCY is static.
            sizing: if self.watch.sizer().is_some() {
                "measured"
            } else {
                "static"
            }
            .to_owned(),
            memory_guard: config.guard.is_some(),
            workers: workers.map_or(0, <[_]>::len),
            meter: self.watch.meter().describe(),
            memory_quota_mb: megabytes(config.quota_bytes),
            soft_limit_mb: megabytes(config.soft_limit_bytes),
            memory_total_mb: self.watch.usage.map(|u| megabytes(u.total_bytes())),
            worker_uss_mb: uss.into_iter().map(megabytes).collect(),
            fit: fit.map(|f| (f.workers * 100.0).round() / 100.0),
            worker_cost_mb: fit.map(|f| megabytes(f.worker_bytes)),
            base_mb: fit.map(|f| megabytes(f.base_bytes)),
            oom_kills: self.watch.oom_total,
            memory_recycles: self.watch.recycles,
            updated_at: state::unix_now(),
        };
        // Best effort: a read-only /tmp costs `launcher size` its figures, not the dyno its app.
        let _ = state::write(&self.state_dir, &written);
    }
}

/// Whether any child (worker or adopted orphan) is left to wait for.
fn has_children() -> bool {
    !matches!(
        nix::sys::wait::waitid(
            nix::sys::wait::Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
        ),
        Err(Errno::ECHILD)
    )
}
