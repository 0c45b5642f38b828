//! Adaptive sizing in the watch: the busy workers, the memory fit when a worker is about to be
//! added, and the controller's steps carried out like measured sizing's (docs/architecture.md,
//! "Adaptive sizing").

use std::path::Path;
use std::time::Instant;

use super::{mb, Reading, Watch, WorkerMemory};
use crate::servers::Mode;
use crate::supervisor::adaptive::FIT_HEADROOM;
use crate::supervisor::log::Event;
use crate::supervisor::pool::{Action, Pool};
use crate::supervisor::{diag, load};

impl Watch {
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
            false => diag::accepted_sockets(port)
                .ok()
                .map(|sockets| load::busy_workers(Path::new("/proc"), &pids, &sockets)),
        };
        match (self.busy, &mut self.adaptive) {
            (Some(busy), Some(adaptive)) => adaptive.busy_sample(now, f64::from(busy)),
            (None, Some(adaptive)) => adaptive.busy_unknown(),
            (_, None) => {}
        }
    }

    /// Whether adaptive sizing needs the workers' memory now: it is about to add one and the
    /// last fit did not already say that none fits, or the fit has not been measured for
    /// `FIT_INTERVAL`. (At the memory cap the queue keeps asking for a worker; reading every
    /// worker's smaps_rollup at each check to be told no again cost 1% of a core.)
    pub(super) fn fit_due(
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
        let ready = all_ready(workers, adaptive.target());
        let next = f64::from(adaptive.target() + 1) + FIT_HEADROOM;
        let full = self.adaptive_fit.is_some_and(|fit| fit.workers < next);
        now >= self.next_fit || (!full && adaptive.wants_more(now, ready, cpu_busy))
    }

    pub(super) fn adaptive_actions(
        &mut self,
        reading: &Reading,
        pool: &mut Pool,
        now: Instant,
        cpu_busy: Option<f64>,
    ) -> Vec<Action> {
        let Some(adaptive) = &mut self.adaptive else {
            return Vec::new();
        };
        let ready = all_ready(&reading.workers, adaptive.target());
        let fit = self.adaptive_fit;
        let Some(step) = adaptive.decide(now, ready, cpu_busy, fit.map(|f| f.workers)) else {
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
            .with("cpu_busy", two(figures.cpu_busy))
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
