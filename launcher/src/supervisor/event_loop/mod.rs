//! The supervisor's one loop, as in gunicorn's arbiter: wait for a signal, a readiness message or
//! a timer -> handle signals -> reap -> read readiness -> read the dyno -> decide -> converge.
//! Nothing in a turn waits on a worker: log lines are queued (`log`), workers are started a batch
//! at a time, readiness messages are read a bounded number at a time (docs/architecture.md, "One
//! turn of the loop").

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

mod apply;
mod reap;
mod report;
mod socket;

use super::decide::Control;
use super::log::Event;
use super::memory::fit::{ttin_cap, Fit};
use super::pool::{Cap, Pool};
use super::reading::{Reader, Reading};
use super::setup::Setup;
use super::{kill, net, spawn};
use crate::procs;
use crate::servers::{self, Mode};
use crate::sizing::MAX_WEB_CONCURRENCY;
use crate::state;
use reap::has_children;
use report::report_stuck;

/// How often the state file for `launcher size` is rewritten, at most.
const STATE_INTERVAL: Duration = Duration::from_secs(10);
/// At most this many readiness messages are read per turn; when there were more, the socket is
/// left alone for `NOTIFY_PAUSE`, so that a worker flooding it cannot keep a core busy.
const NOTIFY_BATCH: usize = 64;
const NOTIFY_PAUSE: Duration = Duration::from_millis(50);
/// How many adopted processes an `adopted_exit` line names.
const ADOPTED_NAMED: usize = 10;
/// A rolling restart's new worker is looked at for waiting on the socket at once, then this long
/// after, then twice as long after each look, up to `SERVING_MOST`.
const SERVING_FIRST: Duration = crate::supervisor::pool::SERVING_CHECK;
const SERVING_MOST: Duration = Duration::from_secs(1);

pub struct Loop {
    pool: Pool,
    control: Control,
    reader: Reader,
    /// `LAUNCHER_MAX_WORKERS`, else the largest count taken.
    max_workers: u32,
    command: spawn::Prepared,
    listener: Option<net::Listener>,
    signals: SignalFd,
    notify: Option<net::Notify>,
    mode: Mode,
    sample_interval: Option<Duration>,
    next_sample: Option<Instant>,
    /// Where the state file is kept; None when it cannot be (said once at start).
    state_dir: Option<PathBuf>,
    scope: state::Scope,
    /// Whether a failed write of the state file has been logged.
    state_failed: bool,
    next_state: Instant,
    /// The notify socket is not read before then (after a flood).
    notify_paused_until: Option<Instant>,
    /// Whether the first ready worker has been looked at for a wrapper that does not `exec`.
    wrapper_checked: bool,
    /// The last check's reading, for the `sample#` line and the state file.
    last: Option<Reading>,
    /// The rolling restart's new worker last looked at for serving: its pid, when it is looked at
    /// next, and the interval after that.
    serving_check: Option<(i32, Instant, Duration)>,
    /// Workers that wait more than they compute while requests queue: said once (`hint`).
    waiting_hint: Option<crate::supervisor::hint::WaitingWorkers>,
    /// What recycled workers left outside their group, until it is gone or killed.
    detached: kill::Detached,
    next_detached: Option<Instant>,
    /// Workers out of the accept set: when each gets its signal (its group's id, the signal).
    retiring: Vec<(Instant, i32, Signal)>,
    /// Whether the kernel's refusal to take a worker out of the accept set has been said.
    drain_refused: bool,
}

impl Loop {
    pub fn new(setup: Setup, signals: SignalFd) -> Loop {
        let now = Instant::now();
        let oom_counted = setup.reader.oom_kills();
        let mut control = Control::new(setup.control, oom_counted, now);
        let (rules, size) = setup.follow;
        control.follow(rules, size);
        Loop {
            pool: Pool::new(setup.pool, now, seed()),
            control,
            reader: setup.reader,
            max_workers: setup.max_workers,
            command: setup.command,
            listener: setup.listener,
            signals,
            notify: setup.notify,
            mode: setup.mode,
            sample_interval: setup.sample_interval,
            next_sample: setup.sample_interval.map(|i| now + i),
            state_dir: setup.state_dir,
            scope: state::Scope::own(&crate::host::Snapshot::live()),
            state_failed: false,
            next_state: now,
            notify_paused_until: None,
            wrapper_checked: false,
            last: None,
            serving_check: None,
            waiting_hint: setup
                .threads_hint
                .then(crate::supervisor::hint::WaitingWorkers::default),
            detached: kill::Detached::default(),
            next_detached: None,
            retiring: Vec::new(),
            drain_refused: false,
        }
    }

    pub fn run(&mut self) -> u8 {
        loop {
            let now = Instant::now();
            let actions = self.pool.converge(now);
            self.carry_out(actions);
            if let Some(code) = self.exit_code(now) {
                return code;
            }
            self.wait();
            let now = Instant::now();
            self.read_signals(now);
            self.signal_retired(now);
            self.reap(now);
            self.look_at_groups();
            self.next_detached = self.detached.sweep(now);
            self.read_notify(now);
            self.check_serving(now);
            self.check_wrapper();
            self.read_queue(now);
            self.check(now);
            self.sample(now);
        }
    }

    /// Once shutting down and no child is left (or the stuck wait is over): the last lines, the
    /// state file removed, and the exit code.
    fn exit_code(&mut self, now: Instant) -> Option<u8> {
        let code = self.pool.exit_code()?;
        let abandoned = self.pool.abandon_at().is_some_and(|at| now >= at);
        if has_children() && !abandoned {
            return None;
        }
        if has_children() {
            report_stuck();
        }
        // Every OOM kill counted is reported, attributed or not, before the end.
        let counted = self.reader.oom_kills();
        self.control.report_unclaimed_oom_kills(counted, now);
        self.emit_events();
        let reason = if code == 0 {
            "shutdown complete"
        } else {
            "gave up"
        };
        Event::info("exit")
            .with("status", code)
            .with("reason", reason)
            .emit();
        if let Some(dir) = &self.state_dir {
            state::remove(dir, std::process::id());
        }
        if let Some(control) = &self.reader.config.puma {
            // puma's control socket, which puma leaves behind when it is killed.
            let _ = std::fs::remove_file(&control.socket);
        }
        Some(code)
    }

    /// Sleeps until a signal, a readiness message or the next timer.
    fn wait(&self) {
        let now = Instant::now();
        let running = self.pool.exit_code().is_none();
        let check = Some(self.control.next_wakeup()).filter(|_| running);
        let queue = Some(self.reader.load.next_wakeup()).filter(|_| self.listener.is_some());
        let wakeups = [
            self.pool.next_wakeup(now),
            self.next_sample,
            check,
            self.pool.abandon_at(),
            self.notify_paused_until,
            queue,
            self.next_detached,
            self.retiring.iter().map(|(at, ..)| *at).min(),
        ];
        let timeout = wakeups
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now) + Duration::from_millis(1));
        let timeout = timeout.map_or(PollTimeout::NONE, |d| {
            PollTimeout::try_from(d.min(Duration::from_secs(60))).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        let paused = self.notify_paused_until.is_some_and(|until| now < until);
        if let Some(notify) = self.notify.as_ref().filter(|_| !paused) {
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
        let mut signals = Vec::new();
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) | Err(_) => {}
                Ok(signal) => signals.push(signal),
            }
        }
        if signals.contains(&Signal::SIGTTIN) && self.pool.exit_code().is_none() {
            self.measure_cap(now);
        }
        for signal in signals {
            let actions = self.pool.signal(signal, now);
            self.carry_out(actions);
        }
    }

    /// Before a TTIN: how many workers fit now, measured (`memory::fit::ttin_cap`), and
    /// `LAUNCHER_MAX_WORKERS`, in every sizing: TTIN never takes the dyno past either.
    fn measure_cap(&mut self, now: Instant) {
        let soft_limit = self.control.config.limits.soft_limit_bytes;
        let fit = self.reader.now(&self.pool, now).and_then(|mut reading| {
            self.reader.measure(&mut reading);
            Fit::measure(&reading, soft_limit)
        });
        let wanted = self.pool.wanted();
        let workers = ttin_cap(fit.map(|f| f.workers), self.max_workers, wanted);
        let why = match fit {
            _ if workers >= self.max_workers && self.max_workers < MAX_WEB_CONCURRENCY => {
                "LAUNCHER_MAX_WORKERS"
            }
            None => "the workers' memory cannot be read",
            Some(_) if workers < self.max_workers => "one more worker does not fit in memory",
            Some(_) => Cap::default().why,
        };
        self.pool.set_cap(Cap { workers, why });
    }

    fn read_notify(&mut self, now: Instant) {
        if self.notify_paused_until.is_some_and(|until| now < until) {
            return;
        }
        self.notify_paused_until = None;
        let Some(notify) = &self.notify else { return };
        let (senders, more) = notify.ready_senders(NOTIFY_BATCH);
        if more {
            self.notify_paused_until = Some(now + NOTIFY_PAUSE);
        }
        if senders.is_empty() {
            return;
        }
        let workers = self.pool.worker_pids();
        // A worker that sends for itself needs no look at /proc; a process under one does.
        let (direct, below): (Vec<i32>, Vec<i32>) =
            senders.into_iter().partition(|s| workers.contains(s));
        for worker in direct {
            self.pool.notified_ready(worker, now);
        }
        if below.is_empty() {
            return;
        }
        let parents = procs::parents(&self.reader.proc_dir());
        for sender in below {
            if let Some(worker) = procs::ancestor_in(&parents, sender, &workers) {
                self.pool.notified_ready(worker, now);
            }
        }
    }

    /// Once, when the first worker is ready: a worker that is a shell (or npm) with the server
    /// as its child gets a hint, since the server would survive the launcher's SIGKILL.
    fn check_wrapper(&mut self) {
        if self.wrapper_checked {
            return;
        }
        let Some((slot, pid, ..)) = self.pool.live_workers().into_iter().find(|w| w.2) else {
            return;
        };
        self.wrapper_checked = true;
        let proc_dir = self.reader.proc_dir();
        let argv = procs::cmdline(&proc_dir, pid);
        let children = procs::children(&proc_dir, pid);
        if let Some(message) = servers::wrapper_hint(&argv, children.len()) {
            Event::warn("hint")
                .with("worker", slot)
                .with("pid", pid)
                .with("message", message)
                .emit();
        }
    }

    /// Every `CHECK_INTERVAL` (sooner for a sample or the state file): read the dyno, decide,
    /// apply. The pool alone changes the workers; the decisions are requests to it.
    fn check(&mut self, now: Instant) {
        let sample_due = self.next_sample.is_some_and(|due| now >= due);
        let state_due = now >= self.next_state;
        let check_due = now >= self.control.next_wakeup();
        if self.pool.exit_code().is_some() || !(check_due || sample_due || state_due) {
            return;
        }
        let all_figures = sample_due || state_due;
        if let Some(mut reading) = self.reader.read(&self.pool, now) {
            if self.mode == Mode::Delegate {
                let one_ready = reading.workers.iter().any(|w| w.ready);
                self.pool
                    .server_workers_seen(one_ready, reading.workers.is_empty(), now);
            }
            // Limits that changed come first: the soft limit the wants below compare with.
            let mut decisions = self.control.follow_limits(&reading, now);
            let wants = self.control.wants(&reading, now, all_figures);
            self.reader.complete(&mut reading, wants, now);
            if self.control.wants_waiting(&reading, all_figures) {
                self.reader.waiting(&mut reading);
            }
            if self.control.wants_memory(&reading, now, all_figures) {
                self.reader.measure(&mut reading);
            }
            decisions.extend(self.control.decide(&reading, now));
            self.apply(decisions, now);
            let workers = self.pool.wanted();
            let hint = self.waiting_hint.as_mut();
            if let Some(event) = hint.and_then(|h| h.check(now, reading.cpu.busy, workers)) {
                event.emit();
            }
            self.last = Some(reading);
        }
        if state_due {
            self.next_state = now + STATE_INTERVAL;
            self.write_state();
        }
    }
}

/// A seed for the restart jitter, different per launcher.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}
