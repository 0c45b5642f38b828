//! Carrying out what was decided: the pool's actions (spawn, signal, kill, close the socket) and
//! the policies' decisions, which become requests to the pool (it alone changes the workers) or
//! signals to a delegated server. What was decided is logged before it is done, so that the
//! app's reaction comes after in the log.

use std::os::fd::AsFd;
use std::time::Instant;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::Loop;
use crate::servers::Mode;
use crate::supervisor::decide::Decision;
use crate::supervisor::log::Event;
use crate::supervisor::pool::{Action, KillTarget};
use crate::supervisor::{drain, kill};

impl Loop {
    pub(super) fn carry_out(&mut self, actions: Vec<Action>) {
        self.emit_events();
        for action in actions {
            self.act(action);
        }
        self.emit_events();
    }

    /// The policies' decisions: a recycle (the pool replaces a copy at once; a delegated server
    /// is sent its `stop_worker` signal and replaces its worker), a kill, a new worker count.
    pub(super) fn apply(&mut self, decisions: Vec<Decision>, now: Instant) {
        self.emit_events();
        for decision in decisions {
            if let Decision::Recycle { pid } = decision {
                self.stop_detached(pid, now);
            }
            let actions = match (decision, self.mode) {
                (Decision::Recycle { pid }, Mode::FanOut) => self.pool.recycle(pid, now),
                (Decision::Recycle { pid }, Mode::Delegate) => {
                    let signal = self.pool.signals().stop_worker;
                    vec![Action::Signal { pid, signal }]
                }
                (Decision::Kill { pid }, _) => vec![Action::Signal {
                    pid,
                    signal: Signal::SIGKILL,
                }],
                (Decision::Resize { to }, _) => self.pool.resize(to, now),
            };
            self.carry_out(actions);
        }
    }

    /// A recycled worker's processes that left its group (a `setsid()` helper) would outlive it
    /// and hold the memory the recycle is for: they are stopped with it.
    fn stop_detached(&mut self, pid: i32, now: Instant) {
        let proc_dir = self.reader.proc_dir();
        let Some(group) = crate::procs::stat(&proc_dir, pid).map(|s| s.group) else {
            return;
        };
        let kill_at = now + self.pool.graceful_timeout();
        let stopped = self.detached.stop(pid, group, Signal::SIGTERM, kill_at);
        if stopped > 0 {
            Event::info("detached_stop")
                .with("pid", pid)
                .with("processes", stopped)
                .with("signal", "TERM")
                .with(
                    "reason",
                    "processes the recycled worker started outside its group",
                )
                .emit();
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Spawn { slot } => match self.command.spawn() {
                Ok(pid) => self.pool.spawned(slot, pid.as_raw(), Instant::now()),
                Err(err) => self.pool.spawn_failed(slot, err.desc(), Instant::now()),
            },
            Action::Signal { pid, signal } => {
                kill::sent(signal::kill(Pid::from_raw(pid), signal), "pid", pid, signal);
            }
            Action::Scale { pid, signal } => {
                let proc_dir = self.reader.proc_dir();
                if crate::procs::signal_pending(&proc_dir, pid, signal as i32) {
                    self.pool.scale_held(signal, Instant::now());
                } else {
                    kill::sent(signal::kill(Pid::from_raw(pid), signal), "pid", pid, signal);
                }
            }
            Action::SignalGroup { pgid, signal } => signal_group(pgid, signal),
            Action::Retire { pgid, signal } => self.retire(pgid, signal, Instant::now()),
            Action::Kill { target, report } => {
                let killed = match target {
                    KillTarget::Group(pgid) => kill::group(pgid),
                    KillTarget::All => {
                        let mut groups = self.pool.worker_pids();
                        groups.extend(self.pool.lingering_groups());
                        kill::everything(&groups)
                    }
                };
                // A sweep that found nothing left says nothing.
                let quiet = report.as_ref().is_some_and(|r| r.name == "sweep") && killed == 0;
                if let Some(report) = report.filter(|_| !quiet) {
                    report.with("killed", killed).emit();
                }
            }
            Action::CloseListener => self.listener = None,
        }
    }

    /// A fan-out worker out of the accept set (`drain`), its signal `drain::WAIT` later; at once
    /// where it waits on the socket in no epoll set, or the kernel refuses (said once).
    fn retire(&mut self, pgid: i32, signal: Signal, now: Instant) {
        let proc_dir = self.reader.proc_dir();
        let drained = self.listener.as_ref().and_then(|listener| {
            let inode = listener.inode?;
            Some(drain::drain(&proc_dir, pgid, listener.fd.as_fd(), inode))
        });
        match drained {
            Some(Ok(sets)) if sets > 0 => {
                Event::info("worker_drain")
                    .with("pid", pgid)
                    .with("epoll_sets", sets)
                    .with("signal_in_ms", drain::WAIT.as_millis())
                    .emit();
                self.retiring.push((now + drain::WAIT, pgid, signal));
                return;
            }
            Some(Err(err)) if !self.drain_refused => {
                self.drain_refused = true;
                Event::warn("drain_failed")
                    .with("pid", pgid)
                    .with("error", err.desc())
                    .with(
                        "message",
                        "the kernel refused to take a stopping worker out of the accept set \
                         (pidfd_getfd needs Linux 5.6 and ptrace rights over the worker; Docker's \
                         and containerd's default seccomp profiles allow it only with the \
                         SYS_PTRACE capability): workers are stopped at once, and a server that \
                         drops the connections it has accepted but not read (uvicorn) loses a \
                         request now and then in a rolling restart or scale-down",
                    )
                    .emit();
            }
            _ => {}
        }
        signal_group(pgid, signal);
    }

    /// The signals of retired workers that are due.
    pub(super) fn signal_retired(&mut self, now: Instant) {
        let (due, later) = std::mem::take(&mut self.retiring)
            .into_iter()
            .partition(|(at, ..)| *at <= now);
        self.retiring = later;
        for (_, pgid, signal) in due {
            signal_group(pgid, signal);
        }
    }

    pub(super) fn emit_events(&mut self) {
        let events = (self.reader.load.take_events().into_iter())
            .chain(self.control.take_events())
            .chain(self.pool.take_events());
        for event in events {
            event.emit();
        }
    }
}

fn signal_group(pgid: i32, signal: Signal) {
    kill::sent(
        signal::killpg(Pid::from_raw(pgid), signal),
        "group",
        pgid,
        signal,
    );
}
