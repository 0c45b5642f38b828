//! What each signal does to the pool: shutdowns (graceful or fast), rolling restarts, scaling,
//! and what is forwarded. A delegated server gets the signals its behaviour names (unicorn's
//! graceful stop is QUIT, puma's restart USR1 or USR2), and none the table blocks.

use std::time::Instant;

use nix::sys::signal::Signal;

use super::{Action, Event, Phase, Pool, Rolling};
use crate::servers::{self, Mode};
use crate::sizing::MAX_WEB_CONCURRENCY;

impl Pool {
    pub fn signal(&mut self, signal: Signal, now: Instant) -> Vec<Action> {
        // The signal's line comes before the lines of what it caused.
        let mark = self.events.len();
        let stopping = self.phase != Phase::Running;
        let delegate = self.config.mode == Mode::Delegate;
        let signals = self.config.signals;
        let blocked = servers::blocked(self.config.server, self.config.mode, signal);
        // What a delegated server gets for what the launcher got.
        let mapped = match signal {
            Signal::SIGHUP => signals.restart.unwrap_or(signal),
            Signal::SIGTTIN => signals.scale.map_or(signal, |(more, _)| more),
            Signal::SIGTTOU => signals.scale.map_or(signal, |(_, fewer)| fewer),
            other => other,
        };
        let (action, actions) = match signal {
            Signal::SIGTERM if stopping => ("ignored", Vec::new()),
            Signal::SIGTERM => ("shutdown", self.shut_down(false, signals.graceful, now)),
            Signal::SIGINT | Signal::SIGQUIT => match self.phase {
                Phase::Stopping { fast: true, .. } => ("kill", self.kill_now(now)),
                _ => ("fast_shutdown", self.shut_down(true, signals.fast, now)),
            },
            _ if stopping => ("ignored", Vec::new()),
            _ if blocked.is_some() => ("blocked", Vec::new()),
            Signal::SIGTTIN if self.wanted() >= self.cap.workers => ("capped", Vec::new()),
            Signal::SIGTTIN | Signal::SIGTTOU if delegate && signals.scale.is_some() => {
                // Sent in turn with the sizers' own scaling signals, never into a pending one.
                self.server_scaled(signal);
                ("forwarded", self.scale_server(now))
            }
            Signal::SIGHUP | Signal::SIGTTIN | Signal::SIGTTOU if delegate => {
                self.server_scaled(signal);
                ("forwarded", self.to_all(mapped))
            }
            Signal::SIGHUP if self.rolling.is_some() => ("ignored", Vec::new()),
            Signal::SIGHUP => {
                self.start_rolling(now);
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
        let scaled = matches!(signal, Signal::SIGTTIN | Signal::SIGTTOU) && !delegate && !stopping;
        let mut event = self.signal_event(signal, action, mapped, blocked);
        if scaled {
            event = event.with("workers", self.target);
        }
        self.events.insert(mark, event);
        actions
    }

    /// The `signal` line: what the launcher did with it, as what it was forwarded, and why it was
    /// blocked or capped.
    fn signal_event(
        &self,
        signal: Signal,
        action: &str,
        mapped: Signal,
        blocked: Option<&str>,
    ) -> Event {
        let name = |s: Signal| s.as_str().trim_start_matches("SIG");
        let mut event = Event::info("signal")
            .with("signal", name(signal))
            .with("action", action);
        if action == "forwarded" && mapped != signal {
            event = event.with("as", name(mapped));
        }
        if let Some(why) = blocked.filter(|_| action == "blocked") {
            event = event.with("reason", why);
        }
        if action == "capped" {
            event = event
                .with("workers", self.wanted())
                .with("reason", self.cap.why);
        }
        event
    }

    /// A rolling restart of every worker running, in slot order.
    fn start_rolling(&mut self, now: Instant) {
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
    }

    /// The server's count after a signal forwarded to it: one more or one fewer worker (never
    /// fewer than one), or, after a reload that reads its config again, the count it started with
    /// (`servers::restart_keeps_count`), with any scaling signal still owed dropped.
    fn server_scaled(&mut self, signal: Signal) {
        let restart = self.config.signals.restart;
        let resets = restart.is_some_and(|r| !servers::restart_keeps_count(r));
        self.server_workers = match signal {
            Signal::SIGTTIN => (self.server_workers + 1).min(MAX_WEB_CONCURRENCY),
            Signal::SIGTTOU => self.server_workers.saturating_sub(1).max(1),
            Signal::SIGHUP if resets => self.config.workers,
            _ => self.server_workers,
        };
        if resets && signal == Signal::SIGHUP {
            self.told = self.server_workers;
        }
    }

    /// A signal forwarded as it is goes to each worker's first process alone: a shell wrapper
    /// would die of a USR1 its server handles.
    pub(super) fn to_all(&self, signal: Signal) -> Vec<Action> {
        let pids = self.workers.iter().map(|w| w.pid);
        pids.map(|pid| Action::Signal { pid, signal }).collect()
    }

    /// A second fast shutdown: SIGKILL to everything at once, and the stuck wait starts.
    fn kill_now(&mut self, now: Instant) -> Vec<Action> {
        self.kill_all((now, now), None)
    }

    fn shut_down(&mut self, fast: bool, forwarded: Signal, now: Instant) -> Vec<Action> {
        // Where the platform sends every process TERM (Cedar), a server whose graceful stop is
        // another signal (unicorn: QUIT) still gets that one.
        let forward = fast || !self.config.on_cedar || forwarded != Signal::SIGTERM;
        let mut deadline = now + self.config.graceful_timeout;
        if let Phase::Stopping {
            deadline: earlier, ..
        } = self.phase
        {
            // A fast shutdown during a graceful one does not push its deadline back.
            deadline = deadline.min(earlier);
        }
        let killed = match self.phase {
            Phase::Stopping { killed, .. } => killed,
            Phase::Running => None,
        };
        self.phase = Phase::Stopping {
            deadline,
            fast,
            killed,
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
        for index in 0..self.workers.len() {
            let worker = &self.workers[index];
            // A worker a rolling restart already stopped got its TERM.
            if forward && (fast || !worker.stopping) {
                let action = self.stop(worker.pid, forwarded);
                self.workers[index].group_signalled |= matches!(action, Action::SignalGroup { .. });
                actions.push(action);
            }
            let worker = &mut self.workers[index];
            worker.stopping = true;
            // The shutdown's own deadline applies now.
            worker.kill_at = None;
        }
        for left in &mut self.lingering {
            left.kill_at = None;
        }
        actions
    }
}
