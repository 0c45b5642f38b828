//! Everything a turn of the loop measures, in one place and under one root (`Snapshot`: `/` on a
//! live machine, a fake tree in tests): the workers and their memory, the dyno's memory and OOM
//! kill counter, the dyno's CPU use and what its workers ask of the CPUs, the busy workers, and
//! (`load`) the accept queue. A check is read in steps: `read` takes what every check needs, the
//! policies say what more they want (`Wants`, read by `complete`; then each worker's memory,
//! `measure`). The policies decide on the `Reading` alone (docs/architecture.md, "One turn of
//! the loop").

pub mod busy;
pub mod diag;
pub mod limits;
pub mod load;
pub mod puma;
pub mod serving;
pub mod threads;
mod workers;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::host::{LimitFiles, Size, Snapshot};
use crate::servers::Mode;
use crate::supervisor::pool::Pool;
use crate::usage::cpu::Demand;
use crate::usage::pressure::Pressure;
use crate::usage::{Meter, Usage};
pub use load::Load;
pub use workers::WorkerMemory;

/// How far back the workers' CPU demand readings are kept.
const DEMAND_KEEP: Duration = Duration::from_secs(60);

/// The CPU figures of a check, as shares of the dyno's CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    /// The dyno's CPU use over the window.
    pub busy: Option<f64>,
    /// What its workers asked of the CPUs (ran plus waited to run) over the same window.
    pub demand: Option<f64>,
}

/// Busy workers counted at a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    Count(u32),
    /// The kernel could not be asked (no NETLINK_SOCK_DIAG).
    Unknown,
}

/// What threaded workers held at the last look, for the `sample#` line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Inside {
    pub waiting: Option<u32>,
    pub threads_busy: Option<u32>,
    pub gil_bound: Option<u32>,
}

/// What one check saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// The dyno's memory as Heroku counts it.
    pub usage: Usage,
    /// `usage.total_bytes()`, what the guard and the fit compare.
    pub usage_bytes: u64,
    /// The live workers; their memory once `measured`.
    pub workers: Vec<WorkerMemory>,
    pub measured: bool,
    /// Workers the launcher is stopping (fan-out: a recycle, a resize, a rolling restart) that
    /// have not exited yet: the usage still counts their memory. (A delegated server's stopping
    /// workers are still its children, among `workers`.)
    pub stopping: Vec<i32>,
    /// How many workers the pool wants (fan-out: copies; delegate: the server's own count).
    pub target: u32,
    /// The kernel's OOM kill counter; None where there is none.
    pub oom_kills: Option<u64>,
    /// Delegate mode: workers of the last check that are gone.
    pub vanished: Vec<i32>,
    pub cpu: Cpu,
    /// Counted at this check, when asked for.
    pub busy: Option<Busy>,
    /// Workers not seen holding a connection since they started, when asked for; None: not
    /// asked, or the kernel cannot be asked (then ready is taken as booted).
    pub not_serving: Option<Vec<i32>>,
    /// The dyno's limits, when this check read them again (`limits::INTERVAL`).
    pub limits: Option<Size>,
    /// Threaded servers, when asked for: requests waiting inside the workers for a thread (their
    /// connections' unread bytes), and the workers' busy threads (`threads`).
    pub waiting: Option<u32>,
    pub threads_busy: Option<u32>,
    /// Threaded servers: workers bound by their interpreter lock (`threads::Gil`).
    pub gil_bound: Option<u32>,
    /// Connections in the accept queue at its last read.
    pub queued: Option<u32>,
}

/// What a check's policies want read besides what every check reads (each worker's memory is
/// asked for after these are read: `Reader::measure`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    /// How many workers hold a connection now.
    pub busy: bool,
    /// Which workers have not been seen serving yet.
    pub serving: bool,
    /// The requests waiting inside threaded workers, and their busy threads.
    pub inside: bool,
}

/// What the reader is set up with, once.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub ready_grace: Duration,
    /// The launcher's socket, where its accepted connections are found; None: no socket.
    pub socket: Option<diag::Socket>,
    /// Whether a worker holding a connection is a busy one (a server that accepts when free).
    pub busy_known: bool,
    /// The CPUs the dyno may use (`Host::cpu_capacity`), for the workers' CPU demand.
    pub cpu_capacity: f64,
    /// Adaptive sizing reads the CPU at every check over this window; None: only for samples.
    pub cpu_window: Option<Duration>,
    /// The files the limits were read from at boot, read again while running.
    pub limit_files: LimitFiles,
    /// Threads per worker, where the server runs threads: what waits inside them is read.
    pub threads: Option<u32>,
    /// A delegated puma's control app, where the plan added one: its own figures.
    pub puma: Option<puma::Control>,
}

pub struct Reader {
    pub snapshot: Snapshot,
    pub meter: Meter,
    pub load: Load,
    pub config: Config,
    finder: workers::Finder,
    demand: Demand,
    /// Workers seen holding a connection since they started: they have booted.
    serving: HashSet<i32>,
    /// Busy workers at the last count, for the `sample#` line and the state file.
    pub busy: Option<u32>,
    /// The workers of the last check (delegate mode: to see which vanished).
    last_workers: Vec<i32>,
    limits: limits::Limits,
    /// Requests waiting inside threaded workers, and their busy threads, at the last look.
    pub inside_last: Inside,
    gil: threads::Gil,
    /// The dyno's pressure at the last sample (at boot before the first), and when.
    pressure_last: Option<(Instant, Pressure)>,
}

impl Reader {
    pub fn new(snapshot: Snapshot, meter: Meter, load: Load, config: Config) -> Reader {
        let limits = limits::Limits::new(config.limit_files.clone(), Instant::now());
        let pressure_last = meter.pressure(&snapshot).map(|p| (Instant::now(), p));
        Reader {
            pressure_last,
            limits,
            snapshot,
            meter,
            load,
            config,
            finder: workers::Finder::default(),
            demand: Demand::default(),
            serving: HashSet::new(),
            busy: None,
            last_workers: Vec::new(),
            inside_last: Inside::default(),
            gil: threads::Gil::default(),
        }
    }

    pub fn proc_dir(&self) -> PathBuf {
        self.snapshot.proc_dir()
    }

    /// The share of the time since the last call (since boot, the first time) in which the
    /// dyno's tasks stalled, for the `sample#` line; where the kernel has the figures (cgroup v2,
    /// PSI on) and had them at the last call.
    pub fn pressure_since(&mut self, now: Instant) -> Option<Pressure> {
        let reading = self.meter.pressure(&self.snapshot);
        let last = std::mem::replace(&mut self.pressure_last, reading.clone().map(|p| (now, p)));
        let (then, before) = last?;
        Some(reading?.since(&before, now.duration_since(then)))
    }

    /// The kernel's OOM kill counter now.
    pub fn oom_kills(&self) -> Option<u64> {
        self.meter.oom_kills(&self.snapshot)
    }

    /// The dyno's usage and its workers as they are now, with nothing of a check's own (what
    /// vanished since the last check, the CPU): for a decision between checks (TTIN's cap).
    pub fn now(&mut self, pool: &Pool, now: Instant) -> Option<Reading> {
        let usage = self.meter.usage(&self.snapshot)?;
        let proc_dir = self.proc_dir();
        let (mode, grace) = (self.config.mode, self.config.ready_grace);
        let workers = self.finder.live(&proc_dir, pool, mode, grace, now);
        Some(Reading {
            usage,
            usage_bytes: usage.total_bytes(),
            workers,
            stopping: pool.stopping_pids(),
            target: pool.wanted(),
            ..Reading::default()
        })
    }

    /// What every check reads; None when the dyno's usage cannot be read.
    pub fn read(&mut self, pool: &Pool, now: Instant) -> Option<Reading> {
        let mut reading = self.now(pool, now)?;
        let pids: Vec<i32> = reading.workers.iter().map(|w| w.pid).collect();
        let vanished = match self.config.mode {
            Mode::Delegate => self.last_workers.iter().copied(),
            Mode::FanOut => [].iter().copied(),
        };
        reading.vanished = vanished.filter(|pid| !pids.contains(pid)).collect();
        self.last_workers = pids;
        self.serving.retain(|pid| self.last_workers.contains(pid));
        reading.limits = self.limits.due(&self.snapshot, now);
        if let Some(size) = &reading.limits {
            // CPU use is measured against the CPUs the dyno may use now.
            self.config.cpu_capacity = size.cpu_capacity;
            self.load.capacity = size.cpu_capacity;
        }
        reading.cpu = self.cpu(now);
        reading.oom_kills = self.oom_kills();
        reading.queued = self.load.last.map(|read| read.queued);
        Some(reading)
    }

    /// The dyno's CPU use and, read now, what its workers asked of the CPUs, over the same
    /// window; only where adaptive sizing runs.
    fn cpu(&mut self, now: Instant) -> Cpu {
        let Some(window) = self.config.cpu_window else {
            return Cpu::default();
        };
        self.load.read_cpu(&self.snapshot, now);
        let pids = self.last_workers.clone();
        let keep = DEMAND_KEEP.max(window * 2);
        self.demand.read(&self.proc_dir(), &pids, now, keep);
        Cpu {
            busy: self.load.cpu_busy(window),
            demand: self.demand.share(window, self.config.cpu_capacity),
        }
    }

    /// Reads what the policies asked for.
    pub fn complete(&mut self, reading: &mut Reading, wants: Wants, now: Instant) {
        if wants.busy {
            reading.busy = self.count_busy(&reading.workers);
        }
        // Threaded workers are not asked: a gthread worker left at gunicorn's 1000 connections
        // (the user's own `--threads`) takes every keep-alive connection while another serves
        // none, and waiting for that one would hold growth for good; ready is booted then.
        if wants.serving && self.config.threads.is_none() {
            reading.not_serving = self.not_serving(&reading.workers);
        }
        if wants.inside && self.config.threads.is_some() {
            self.inside(reading, now);
        }
    }

    /// What threaded workers hold: their busy threads, the workers bound by their interpreter
    /// lock and, from puma's control app, the requests waiting for a thread (gunicorn's are read
    /// apart, when wanted: `waiting`). The last figures are kept for the `sample#` line.
    fn inside(&mut self, reading: &mut Reading, now: Instant) {
        let pids: Vec<i32> = reading.workers.iter().map(|w| w.pid).collect();
        if let Some(control) = &self.config.puma {
            let stats = control.stats();
            reading.waiting = stats.map(|s| s.backlog);
            reading.threads_busy = stats.map(|s| s.busy_threads);
        } else if self.config.socket.is_some() {
            reading.threads_busy = threads::busy(&self.proc_dir(), &pids);
        }
        reading.gil_bound = Some(self.gil.read(&self.proc_dir(), &pids, now));
        self.inside_last = Inside {
            waiting: match self.config.puma {
                Some(_) => reading.waiting,
                None => self.inside_last.waiting,
            },
            threads_busy: reading.threads_busy,
            gil_bound: reading.gil_bound,
        };
    }

    /// The requests waiting inside threaded workers for a thread, where the server does not say
    /// (gunicorn): their accepted connections with unread bytes, from one `sock_diag` dump, which
    /// walks the kernel's whole TCP table, so only when asked (`Control::wants_waiting`, for
    /// threaded workers alone); puma's came with its stats (`inside`).
    pub fn waiting(&mut self, reading: &mut Reading) {
        let Some(socket) = self.config.socket.filter(|_| self.config.puma.is_none()) else {
            return;
        };
        reading.waiting = diag::accepted(socket)
            .ok()
            .map(|held| held.values().filter(|unread| **unread > 0).count() as u32);
        self.inside_last.waiting = reading.waiting;
    }

    /// Each worker's memory (`smaps_rollup`: a walk of its page tables, so only when asked).
    pub fn measure(&self, reading: &mut Reading) {
        workers::measure(&self.proc_dir(), &mut reading.workers);
        reading.measured = true;
    }

    /// How many workers hold a connection accepted from the socket now. While connections wait
    /// in the queue, every worker is busy (they accept when free): the kernel is not asked.
    /// None: there is no socket, or holding one does not mean busy for this server.
    fn count_busy(&mut self, workers: &[WorkerMemory]) -> Option<Busy> {
        let socket = self.config.socket.filter(|_| self.config.busy_known)?;
        let pids: Vec<i32> = workers.iter().map(|w| w.pid).collect();
        let queued = self.load.last.is_some_and(|read| read.queued > 0);
        let counted = match queued {
            true => Some(pids.len() as u32),
            false => diag::accepted_sockets(socket).ok().map(|sockets| {
                let busy = busy::busy_workers(&self.proc_dir(), &pids, &sockets);
                self.serving.extend(&busy);
                busy.len() as u32
            }),
        };
        self.busy = counted;
        Some(counted.map_or(Busy::Unknown, Busy::Count))
    }

    /// The workers not seen serving a connection since they started, after asking the kernel
    /// about them; None when it cannot be asked.
    fn not_serving(&mut self, workers: &[WorkerMemory]) -> Option<Vec<i32>> {
        let unseen: Vec<i32> = workers
            .iter()
            .map(|w| w.pid)
            .filter(|pid| !self.serving.contains(pid))
            .collect();
        if unseen.is_empty() {
            return Some(unseen);
        }
        let socket = self.config.socket.filter(|_| self.config.busy_known)?;
        let sockets = diag::accepted_sockets(socket).ok()?;
        let mut serving = busy::busy_workers(&self.proc_dir(), &unseen, &sockets);
        // One that cannot be looked at is taken as serving: else it would hold adaptive growth,
        // which waits for every worker to be seen serving, back for good.
        let unknown = unseen
            .iter()
            .filter(|p| busy::fds_unreadable(&self.proc_dir(), **p));
        serving.extend(unknown);
        self.serving.extend(&serving);
        Some(
            unseen
                .into_iter()
                .filter(|p| !serving.contains(p))
                .collect(),
        )
    }
}
