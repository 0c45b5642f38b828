//! Adaptive sizing in the watch: the busy workers, the memory fit when a worker is about to be
//! added, and the controller's steps carried out like measured sizing's (docs/architecture.md,
//! "Adaptive sizing").

use std::path::Path;
use std::time::{Duration, Instant};

use super::{mb, Watch, WorkerMemory};
use crate::servers::Mode;
use crate::supervisor::adaptive::FIT_HEADROOM;
use crate::supervisor::log::Event;
use crate::supervisor::pool::{Action, Pool};
use crate::supervisor::{diag, load};

/// The CPU figures of one adaptive decision: the dyno's CPU use and what its workers asked of
/// the CPUs, as shares of its CPUs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cpu {
    pub busy: Option<f64>,
    pub demand: Option<f64>,
}

impl Cpu {
    /// What the CPU rule goes by: the larger. CPU-bound workers on a machine whose other load
    /// takes half its CPUs use half of the dyno's CPUs and wait for the rest; more of them
    /// would only wait too. Unknown before the dyno's CPU use is.
    pub fn rule(self) -> Option<f64> {
        self.busy
            .map(|busy| self.demand.map_or(busy, |d| busy.max(d)))
    }
}

/// How far back a workers' demand reading is kept.
const DEMAND_KEEP: Duration = Duration::from_secs(60);

impl Watch {
    /// The dyno's CPU use (measured by the loop) and the workers' demand, read now, over the
    /// same window (a step, at least a second).
    pub(super) fn cpu_figures(
        &mut self,
        workers: &[WorkerMemory],
        now: Instant,
        busy: Option<f64>,
    ) -> Cpu {
        let Some(adaptive) = &self.adaptive else {
            return Cpu { busy, demand: None };
        };
        let window = adaptive.config.step.max(Duration::from_secs(1));
        let pids: Vec<i32> = workers.iter().map(|w| w.pid).collect();
        self.demand
            .read(Path::new("/proc"), &pids, now, DEMAND_KEEP.max(window * 2));
        let demand = self.demand.share(window, self.config.cpu_capacity);
        Cpu { busy, demand }
    }

    /// How many workers hold a connection accepted from the socket now. While connections wait
    /// in the queue, every worker is busy (they accept when free): the kernel is not asked.
    /// Unknown when it cannot be asked (no NETLINK_SOCK_DIAG): adaptive sizing then never takes a
    /// worker away.
    pub(super) fn look_for_busy(&mut self, workers: &[WorkerMemory], now: Instant) {
        let Some(port) = self.config.port.filter(|_| self.config.busy_known) else {
            return;
        };
        let pids: Vec<i32> = workers.iter().map(|w| w.pid).collect();
        self.busy = match self.queued {
            true => Some(pids.len() as u32),
            false => diag::accepted_sockets(port).ok().map(|sockets| {
                let busy = load::busy_workers(Path::new("/proc"), &pids, &sockets);
                self.serving.extend(&busy);
                busy.len() as u32
            }),
        };
        match (self.busy, &mut self.adaptive) {
            (Some(busy), Some(adaptive)) => adaptive.busy_sample(now, f64::from(busy)),
            (None, Some(adaptive)) => adaptive.busy_unknown(),
            (_, None) => {}
        }
    }

    /// Whether every wanted worker is up: running, ready, and, when a worker would be added now,
    /// seen serving a connection since it started. A delegated server's worker, or a copy that
    /// does not send `READY=1`, counts as ready a second after it appears, while an app may take
    /// several to import; but while connections wait, a worker that has booted takes one at
    /// once. (The kernel is asked only then, about the workers not seen serving yet; when it
    /// cannot be asked, ready is ready.)
    pub(super) fn booted(
        &mut self,
        pool: &Pool,
        workers: &[WorkerMemory],
        now: Instant,
        cpu_busy: Option<f64>,
    ) -> bool {
        let Some(adaptive) = &mut self.adaptive else {
            return false;
        };
        if self.config.mode == Mode::FanOut && pool.target() != adaptive.target() {
            // TTIN/TTOU changed the count: adapt from there.
            adaptive.retarget(pool.target(), now);
        }
        self.serving
            .retain(|pid| workers.iter().any(|w| w.pid == *pid));
        let up = all_ready(workers, adaptive.target());
        if !up || !adaptive.wants_more(now, true, cpu_busy) {
            return up;
        }
        let unseen: Vec<i32> = workers
            .iter()
            .map(|w| w.pid)
            .filter(|pid| !self.serving.contains(pid))
            .collect();
        let port = self.config.port.filter(|_| self.config.busy_known);
        let (Some(port), false) = (port, unseen.is_empty()) else {
            return true;
        };
        let Ok(sockets) = diag::accepted_sockets(port) else {
            return true;
        };
        let serving = load::busy_workers(Path::new("/proc"), &unseen, &sockets);
        self.serving.extend(&serving);
        serving.len() == unseen.len()
    }

    /// Whether adaptive sizing needs the workers' memory now: it is about to add one and the
    /// last fit did not already say that none fits, or the fit has not been measured for
    /// `FIT_INTERVAL`. (At the memory cap the queue keeps asking for a worker; reading every
    /// worker's smaps_rollup at each check to be told no again cost 1% of a core.)
    pub(super) fn fit_due(&self, ready: bool, now: Instant, cpu_busy: Option<f64>) -> bool {
        let Some(adaptive) = &self.adaptive else {
            return false;
        };
        let next = f64::from(adaptive.target() + 1) + FIT_HEADROOM;
        let full = self.adaptive_fit.is_some_and(|fit| fit.workers < next);
        now >= self.next_fit || (!full && adaptive.wants_more(now, ready, cpu_busy))
    }

    pub(super) fn adaptive_actions(
        &mut self,
        pool: &mut Pool,
        ready: bool,
        now: Instant,
        cpu: Cpu,
    ) -> Vec<Action> {
        let Some(adaptive) = &mut self.adaptive else {
            return Vec::new();
        };
        let fit = self.adaptive_fit;
        let Some(step) = adaptive.decide(now, ready, cpu.rule(), fit.map(|f| f.workers)) else {
            return Vec::new();
        };
        let two = |value: Option<f64>| value.map_or("unknown".to_owned(), |v| format!("{v:.2}"));
        let figures = step.figures;
        let mut event = Event::info("resize")
            .with("from", step.from)
            .with("to", step.to)
            .with("sizing", "adaptive")
            .with("reason", step.why)
            .with("queued_share", two(Some(figures.queued_share)))
            .with("cpu_busy", two(cpu.busy))
            .with("cpu_demand", two(cpu.demand))
            .with(
                "workers_busy",
                self.busy.map_or("unknown".to_owned(), |b| b.to_string()),
            )
            .with("workers_busy_mean", two(figures.busy_workers))
            .with("fit", two(figures.fit));
        if let Some(fit) = fit {
            event = event.with("worker_cost", mb(fit.worker_bytes));
        }
        self.events.push(self.with_usage(event));
        self.resize(step.from, step.to, pool)
    }
}

/// Every wanted worker is running and ready: the last step's worker has booted.
fn all_ready(workers: &[WorkerMemory], target: u32) -> bool {
    workers.len() == target as usize && workers.iter().all(|w| w.ready)
}
