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
use nix::sys::wait::{WaitPidFlag, WaitStatus};

mod apply;

use super::decide::Control;
use super::log::Event;
use super::pool::Pool;
use super::reading::{serving, Reader, Reading};
use super::setup::Setup;
use super::{figures, kill, net, spawn};
use crate::procs;
use crate::servers::{self, Mode};
use crate::state;

/// How often the state file for `launcher size` is rewritten, at most.
const STATE_INTERVAL: Duration = Duration::from_secs(10);
/// At most this many readiness messages are read per turn; when there were more, the socket is
/// left alone for `NOTIFY_PAUSE`, so that a worker flooding it cannot keep a core busy.
const NOTIFY_BATCH: usize = 64;
const NOTIFY_PAUSE: Duration = Duration::from_millis(50);
/// How many adopted processes an `adopted_exit` line names.
const ADOPTED_NAMED: usize = 10;

pub struct Loop {
    pool: Pool,
    control: Control,
    reader: Reader,
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
}

impl Loop {
    pub fn new(setup: Setup, signals: SignalFd) -> Loop {
        let now = Instant::now();
        let oom_counted = setup.reader.oom_kills();
        Loop {
            pool: Pool::new(setup.pool, now, seed()),
            control: Control::new(setup.control, oom_counted, now),
            reader: setup.reader,
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
            self.reap(now);
            self.look_at_groups();
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
        while let Ok(Some(info)) = self.signals.read_signal() {
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if signal == Signal::SIGCHLD {
                continue;
            }
            let actions = self.pool.signal(signal, now);
            self.carry_out(actions);
        }
    }

    /// Reaps every child that ended: workers, and orphans adopted as subreaper, whose exits are
    /// summed up in one line per turn. The OOM kill counter is read once for all the workers
    /// SIGKILLed in the turn, so that a mass kill is attributed to every worker it ended.
    fn reap(&mut self, now: Instant) {
        let workers = self.pool.worker_pids();
        let mut ended: Vec<(i32, String, bool)> = Vec::new();
        let mut adopted: Vec<(i32, String)> = Vec::new();
        loop {
            let (pid, status, killed) =
                match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit:{code}"), false),
                    Ok(WaitStatus::Signaled(pid, signal, _)) => (
                        pid,
                        format!("signal:{}", signal as i32),
                        signal == Signal::SIGKILL,
                    ),
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                };
            let pid = pid.as_raw();
            if workers.contains(&pid) {
                ended.push((pid, status, killed));
            } else {
                adopted.push((pid, status));
            }
        }
        let killed: Vec<i32> = ended.iter().filter(|e| e.2).map(|e| e.0).collect();
        let counted = match killed.is_empty() {
            true => None,
            false => self.reader.oom_kills(),
        };
        let oom_killed = self.control.claim_oom_kills(counted, &killed, now);
        for (pid, status, _) in ended {
            let cause = oom_killed.contains(&pid).then_some("oom_kill");
            let group_alive = kill::group_alive(pid);
            let actions = self.pool.exited(pid, &status, cause, group_alive, now);
            self.carry_out(actions);
        }
        if !adopted.is_empty() {
            adopted_exits(&adopted).emit();
        }
    }

    /// Groups that workers left behind: done with once no process is left in them.
    fn look_at_groups(&mut self) {
        for pgid in self.pool.lingering_groups() {
            if !kill::group_alive(pgid) {
                self.pool.group_gone(pgid);
            }
        }
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

    /// The accept queue, on its interval; adaptive sizing counts each read.
    fn read_queue(&mut self, now: Instant) {
        let Some(listener) = &self.listener else {
            return;
        };
        if let Some(read) = self.reader.load.read_queue(listener, now) {
            self.control.queue_read(now, read.queued > 0);
        }
    }

    /// A rolling restart's new worker that has not sent `READY=1`: is it waiting on the socket?
    fn check_serving(&mut self, now: Instant) {
        let Some(pid) = self.pool.awaiting_serving() else {
            return;
        };
        let inode = self
            .listener
            .as_ref()
            .and_then(|l| serving::socket_inode(&l.fd));
        let proc_dir = self.reader.proc_dir();
        if inode.is_some_and(|inode| serving::waits_on(&proc_dir, pid, inode)) {
            self.pool.seen_serving(pid, now);
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
            let wants = self.control.wants(&reading, now, all_figures);
            self.reader.complete(&mut reading, wants);
            if self.control.wants_memory(&reading, now, all_figures) {
                self.reader.measure(&mut reading);
            }
            let decisions = self.control.decide(&reading, now);
            self.apply(decisions, now);
            self.last = Some(reading);
        }
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
        let load = self
            .reader
            .load
            .sample(&self.reader.snapshot, now, interval);
        let figures = self.figures();
        figures::sample(&self.pool, &figures, &load, &self.reader).emit();
    }

    fn figures(&self) -> figures::Figures<'_> {
        figures::Figures {
            mode: self.mode,
            reading: self.last.as_ref(),
            busy: self.reader.busy,
            fit: self.control.fit(),
            sizing: self.control.sizing(),
            limits: self.control.config.limits,
            guard: self.control.config.guard.is_some(),
            recycles: self.control.recycles,
            oom_kills: self.control.oom_total(),
        }
    }

    fn write_state(&mut self) {
        let Some(dir) = self.state_dir.clone() else {
            return;
        };
        let (snapshot, load) = (&self.reader.snapshot, &mut self.reader.load);
        let figures = load.state(snapshot, Instant::now(), STATE_INTERVAL);
        let capacity = self.reader.load.capacity;
        let written = figures::state(
            &self.figures(),
            &figures,
            capacity,
            &self.reader,
            &self.scope,
        );
        // Best effort: a read-only /tmp costs `launcher size` its figures, not the dyno its app.
        if let Err(err) = state::write(&dir, &written) {
            if !std::mem::replace(&mut self.state_failed, true) {
                let message = format!(
                    "cannot write the state file in {}: {err}; launcher size will not show this supervisor's figures",
                    dir.display()
                );
                Event::warn("state").with("message", message).emit();
            }
        }
    }
}

/// One line for the adopted processes that ended in a turn: how many, the first few, and how
/// they ended.
fn adopted_exits(adopted: &[(i32, String)]) -> Event {
    let mut named: Vec<String> = adopted
        .iter()
        .take(ADOPTED_NAMED)
        .map(|(pid, _)| pid.to_string())
        .collect();
    if adopted.len() > ADOPTED_NAMED {
        named.push("...".to_owned());
    }
    let mut statuses: Vec<(&str, usize)> = Vec::new();
    for (_, status) in adopted {
        match statuses.iter_mut().find(|(s, _)| s == status) {
            Some((_, n)) => *n += 1,
            None => statuses.push((status, 1)),
        }
    }
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{n}x{s}")).collect();
    Event::info("adopted_exit")
        .with("count", adopted.len())
        .with("pids", named.join(","))
        .with("status", statuses.join(","))
}

/// At the end of the wait after the final SIGKILL: what is still there, named.
fn report_stuck() {
    let left = kill::left();
    let named: Vec<String> = left
        .iter()
        .take(ADOPTED_NAMED)
        .map(|s| format!("{}:{}:{}", s.pid, s.name, s.state))
        .collect();
    Event::error("stuck")
        .with("count", left.len())
        .with("processes", named.join(","))
        .with(
            "reason",
            "still there after SIGKILL (state D: in a system call that cannot be interrupted); not waited for",
        )
        .emit();
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

/// A seed for the restart jitter, different per launcher.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}
