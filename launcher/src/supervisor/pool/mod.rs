//! The worker pool's policy, free of I/O: what to spawn, signal or kill, given what happened and the
//! time. The loop in `supervisor` feeds it events (exits, signals, readiness) and carries out the
//! actions it returns; every decision is also an `Event` for the log.

mod converge;
mod lives;
mod signals;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::backoff::Jitter;
use super::log::{Event, Level};
use crate::servers::{Mode, Server, Signals};
use crate::sizing::MAX_WEB_CONCURRENCY;

/// At most this many workers are started per turn of the loop, so that signals and exits are
/// handled in between even when a thousand workers are wanted at once.
pub const SPAWN_BATCH: usize = 8;
/// After the shutdown deadline's SIGKILL, how often what is left is killed again: a process that
/// forks in a loop, or one that left its worker's group, cannot outlast the shutdown.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// How long the launcher waits after the deadline's SIGKILL before it exits anyway, naming what
/// is left (a process in uninterruptible sleep cannot die until its system call returns).
pub const STUCK_WAIT: Duration = Duration::from_secs(2);
/// How often the groups workers left behind are looked at, besides when a child exits.
pub const LINGER_CHECK: Duration = Duration::from_secs(1);
/// How often a rolling restart's new worker is looked at for waiting on the socket.
pub const SERVING_CHECK: Duration = Duration::from_millis(100);
/// A delegated server that runs no worker process of its own (puma in single mode) is ready once
/// it has been up this long.
pub const SINGLE_PROCESS_READY: Duration = Duration::from_secs(5);
/// Between two of the same scaling signal to a delegated server: the first is handled by then,
/// so the second is not merged into it (a standard signal is pending once, and Python runs a
/// handler once for a signal delivered twice before it gets to it). 50 ms was too short for a
/// server starved of CPU: gunicorn in the cgroup v2 guest of a loaded host, and one held frozen
/// for 300 ms (test/limits.rs), ran 3 workers where 2 were asked. A server that has not run for
/// longer still has the last one pending: the next waits for it (`Pool::scale_held`).
pub const SCALE_SPACING: Duration = Duration::from_secs(1);

/// The most workers TTIN may take the count to (`memory::fit::ttin_cap`), and what sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub workers: u32,
    pub why: &'static str,
}

impl Default for Cap {
    fn default() -> Self {
        Cap {
            workers: MAX_WEB_CONCURRENCY,
            why: "the largest count taken",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a worker in this slot, then report it with `spawned`.
    Spawn { slot: u32 },
    /// A signal to one process: a delegated server, or a signal forwarded as it is.
    Signal { pid: i32, signal: Signal },
    /// A delegated server's scaling signal (gunicorn's TTIN or TTOU): sent unless the last one
    /// like it is still pending at the server, which would merge the two; then the loop tells
    /// the pool (`Pool::scale_held`) and it is sent later.
    Scale { pid: i32, signal: Signal },
    /// A signal to a worker's whole process group: the worker and everything it started that
    /// stayed in its group (a shell that does not `exec` and its server).
    SignalGroup { pgid: i32, signal: Signal },
    /// A fan-out worker stopped while the others serve on (a rolling restart, a scale-down, a
    /// recycle): taken out of the accept set first where it can be (`drain`), then `signal` to
    /// its whole group.
    Retire { pgid: i32, signal: Signal },
    /// SIGKILL to a group or to every process under the launcher; `report`, if any, is logged
    /// with `killed=N`, the processes that were still there.
    Kill {
        target: KillTarget,
        report: Option<Event>,
    },
    /// Stop accepting: close the launcher's copy of the listening socket.
    CloseListener,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillTarget {
    Group(i32),
    All,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub server: Server,
    /// What the signals the launcher sends mean to this server in this mode (the table's).
    pub signals: Signals,
    pub workers: u32,
    pub ready_grace: Duration,
    pub give_up_after: Duration,
    pub graceful_timeout: Duration,
    /// How long a rolling restart waits for a new worker to serve before it gives up.
    pub ready_timeout: Duration,
    /// Whether there is a listening socket: without one (a worker dyno) there is nothing to
    /// serve, and readiness by the grace period lets a rolling restart go on.
    pub socket: bool,
    /// On Heroku's Cedar dynos every process of the dyno gets SIGTERM from the platform itself: it
    /// is not forwarded. (On Fir, as in Kubernetes, only the main process gets it.)
    pub on_cedar: bool,
    /// Logged once, the first time a worker dies before it was ready.
    pub boot_failure_hint: Option<String>,
}

#[derive(Debug, Clone)]
struct Worker {
    slot: u32,
    pid: i32,
    started: Instant,
    ready: bool,
    /// Seen to serve: it sent `READY=1`, or waits on the listening socket. Readiness by the grace
    /// period alone is not serving: a rolling restart waits for this.
    serving: bool,
    stopping: bool,
    /// When a worker stopped while the pool runs on (rolling restart, scale-down, memory) gets
    /// SIGKILL if it is still there.
    kill_at: Option<Instant>,
    /// Failed boots of this slot in a row before this worker was started.
    failures: u32,
    /// Whether its whole group has had a stop signal from the launcher.
    group_signalled: bool,
}

/// Processes a worker left in its group when it exited (a shell's server), until they are gone.
#[derive(Debug, Clone)]
struct Lingering {
    slot: u32,
    pgid: i32,
    /// SIGKILL then; None during a shutdown, whose deadline applies.
    kill_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Pending {
    slot: u32,
    /// None once its `Spawn` has been handed out.
    due: Option<Instant>,
    failures: u32,
}

/// A rolling restart: the slots still to replace, and the step under way (old slot, new slot,
/// since when).
#[derive(Debug, Clone)]
struct Rolling {
    queue: VecDeque<u32>,
    step: Option<(u32, u32, Instant)>,
    started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Stopping {
        deadline: Instant,
        fast: bool,
        /// When everything left got SIGKILL, and when it was last killed again.
        killed: Option<(Instant, Instant)>,
        exit_code: u8,
    },
}

pub struct Pool {
    config: Config,
    /// Fan-out: how many copies run. Delegate mode: 1, the server.
    target: u32,
    /// Delegate mode: how many workers the server runs, as the launcher has asked for them (its
    /// sizers' resizes, TTIN/TTOU passed on, a reload that goes back to its config's count).
    server_workers: u32,
    /// Delegate mode: the count the scaling signals sent so far take the server to. The pool
    /// sends one signal at a time until it is `server_workers`, whatever changes that meanwhile.
    told: u32,
    /// Delegate mode: the last scaling signal sent and when (the same one waits `SCALE_SPACING`).
    last_scale: Option<(Signal, Instant)>,
    /// Delegate mode: a scaling signal was held back since the count was last reached (said once).
    scale_was_held: bool,
    /// The most workers TTIN may take the count to, and why.
    cap: Cap,
    workers: Vec<Worker>,
    pending: Vec<Pending>,
    lingering: Vec<Lingering>,
    /// More workers are wanted than the last turn started.
    more_to_spawn: bool,
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
            server_workers: config.workers,
            told: config.workers,
            last_scale: None,
            scale_was_held: false,
            cap: Cap::default(),
            config,
            target,
            workers: Vec::new(),
            pending: Vec::new(),
            lingering: Vec::new(),
            more_to_spawn: false,
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

    /// The workers not being stopped: (slot, pid, ready, started).
    pub fn live_workers(&self) -> Vec<(u32, i32, bool, Instant)> {
        let live = self.workers.iter().filter(|w| !w.stopping);
        live.map(|w| (w.slot, w.pid, w.ready, w.started)).collect()
    }

    /// The workers being stopped that have not exited yet.
    pub fn stopping_pids(&self) -> Vec<i32> {
        let stopping = self.workers.iter().filter(|w| w.stopping);
        stopping.map(|w| w.pid).collect()
    }

    /// How many workers the pool keeps (fan-out), or 1 (the delegated server).
    #[cfg(test)]
    pub fn target(&self) -> u32 {
        self.target
    }

    /// The most workers TTIN may take the count to, as the loop measured it.
    pub fn set_cap(&mut self, cap: Cap) {
        self.cap = cap;
    }

    /// How long a stopped worker has before SIGKILL.
    pub fn graceful_timeout(&self) -> Duration {
        self.config.graceful_timeout
    }

    /// What the signals the launcher sends mean to this server in this mode.
    pub fn signals(&self) -> Signals {
        self.config.signals
    }

    /// The worker count: the copies (fan-out), or the server's own workers (delegate mode). The
    /// one owner of the number; the sizers read it from each check's reading.
    pub fn wanted(&self) -> u32 {
        match self.config.mode {
            Mode::FanOut => self.target,
            Mode::Delegate => self.server_workers,
        }
    }

    /// A sizer's new count: in fan-out converging adds or stops copies to reach it; a delegated
    /// server is sent its scaling signals, one per worker of the change (none without them).
    pub fn resize(&mut self, to: u32, now: Instant) -> Vec<Action> {
        let to = to.clamp(1, MAX_WEB_CONCURRENCY);
        match self.config.mode {
            Mode::FanOut => {
                self.target = to;
                Vec::new()
            }
            Mode::Delegate if self.config.signals.scale.is_some() => {
                self.server_workers = to;
                self.scale_server(now)
            }
            Mode::Delegate => Vec::new(),
        }
    }

    /// The memory guard's recycle (fan-out): the worker is stopped gracefully and its replacement
    /// started at once, not after it is ready: the point is to free memory.
    pub fn recycle(&mut self, pid: i32, now: Instant) -> Vec<Action> {
        if self.phase != Phase::Running {
            return Vec::new();
        }
        let Some(slot) = self.workers.iter().find(|w| w.pid == pid && !w.stopping) else {
            return Vec::new();
        };
        let slot = slot.slot;
        let mut actions: Vec<Action> = self.stop_slot(slot, "memory", now).into_iter().collect();
        actions.push(self.new_slot());
        actions
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

    /// When the loop stops waiting for what is left after the final SIGKILL and exits.
    pub fn abandon_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Stopping {
                killed: Some((at, _)),
                ..
            } => Some(at + STUCK_WAIT),
            _ => None,
        }
    }

    /// The process groups workers left behind, for the loop to see whether they are gone.
    pub fn lingering_groups(&self) -> Vec<i32> {
        self.lingering.iter().map(|l| l.pgid).collect()
    }

    /// No process is left in this group.
    pub fn group_gone(&mut self, pgid: i32) {
        self.lingering.retain(|l| l.pgid != pgid);
    }

    /// The signal that stops a worker gracefully or fast: to its whole group in fan-out; to the
    /// server alone in delegate mode (it stops its own workers, which share its group).
    fn stop(&self, pid: i32, signal: Signal) -> Action {
        match self.config.mode {
            Mode::FanOut => Action::SignalGroup { pgid: pid, signal },
            Mode::Delegate => Action::Signal { pid, signal },
        }
    }

    /// The same for a worker the pool stops while it serves on: a fan-out worker is retired.
    fn retire(&self, pid: i32, signal: Signal) -> Action {
        match self.stop(pid, signal) {
            Action::SignalGroup { pgid, signal } => Action::Retire { pgid, signal },
            other => other,
        }
    }

    /// The earliest time something is due: a respawn, a grace period, a deadline, a sweep;
    /// `now` while more workers are to be started than one turn starts.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        if self.more_to_spawn && self.phase == Phase::Running {
            return Some(now);
        }
        let grace = self
            .workers
            .iter()
            .filter(|w| !w.ready && !w.stopping)
            .map(|w| w.started + self.config.ready_grace);
        let kills = self.workers.iter().filter_map(|w| w.kill_at);
        let left = self.lingering.iter().filter_map(|l| l.kill_at);
        let look = (!self.lingering.is_empty()).then(|| now + LINGER_CHECK);
        let respawns = self.pending.iter().filter_map(|p| p.due);
        // While a step waits for its new worker to serve: look again soon, and give up on time.
        let step = self.rolling.as_ref().and_then(|r| r.step);
        let serving_check =
            step.map(|(.., since)| (now + SERVING_CHECK).min(since + self.config.ready_timeout));
        let deadline = match self.phase {
            Phase::Running => Some(self.last_ready + self.config.give_up_after),
            Phase::Stopping {
                killed: Some((at, swept)),
                ..
            } => Some((swept + SWEEP_INTERVAL).min(at + STUCK_WAIT)),
            Phase::Stopping { deadline, .. } => Some(deadline),
        };
        let all = grace.chain(respawns).chain(kills).chain(left).chain(look);
        let scale = self.next_scale(now);
        let all = all.chain(serving_check).chain(scale);
        all.chain(deadline).min()
    }
}
