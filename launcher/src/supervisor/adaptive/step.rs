//! Adaptive sizing at a check, free of I/O: the controller (`Adaptive`) with the figures it
//! decides on, taken from the check's `Reading` (the CPU rule, the memory fit, whether the last
//! worker added has booted), and the `resize` line of each step (docs/architecture.md,
//! "Adaptive sizing").

use std::time::{Duration, Instant};

use super::{Adaptive, AdaptiveConfig};
use crate::supervisor::log::Event;
use crate::supervisor::memory::fit::{one_more_fits, Fit};
use crate::supervisor::reading::{Busy, Cpu, Reading, WorkerMemory};
use crate::units::mb;

/// How often the memory fit is measured when no worker is about to be added (for the rule that
/// no more workers run than fit).
pub const FIT_INTERVAL: Duration = Duration::from_secs(10);

/// What the CPU rule goes by: the larger of the dyno's CPU use and its workers' demand.
/// CPU-bound workers on a machine whose other load takes half its CPUs use half of the dyno's
/// CPUs and wait for the rest; more of them would only wait too. Threaded workers: the CPU use
/// alone, since the demand sums every thread's wait to run, and threads woken together each
/// wait a little at the same time: 6 workers of 8 threads serving a 50 ms sleep used 36% of the
/// CPUs and showed a demand of 0.79, which held them under what the load needed (test/bench/
/// threads). Unknown before the dyno's CPU use is.
pub(super) fn cpu_rule(cpu: Cpu, threaded: bool) -> Option<f64> {
    let demand = cpu.demand.filter(|_| !threaded);
    cpu.busy.map(|busy| demand.map_or(busy, |d| busy.max(d)))
}

/// Every wanted worker is running and ready: the last step's worker is up.
fn all_ready(workers: &[WorkerMemory], target: u32) -> bool {
    workers.len() == target as usize && workers.iter().all(|w| w.ready)
}

/// The controller and the memory fit it last measured.
pub struct Sizing {
    pub controller: Adaptive,
    /// The last fit, and when it is measured again at the latest.
    pub fit: Option<Fit>,
    next_fit: Instant,
    soft_limit_bytes: u64,
}

impl Sizing {
    pub fn new(config: AdaptiveConfig, workers: u32, soft_limit_bytes: u64, now: Instant) -> Self {
        Sizing {
            controller: Adaptive::new(config, workers, now),
            fit: None,
            next_fit: now,
            soft_limit_bytes,
        }
    }

    /// The pool's count, taken at each check: TTIN/TTOU, a delegated server's reload or restart
    /// changed it, and adapting goes on from there.
    pub fn observe(&mut self, target: u32, now: Instant) {
        if target != self.controller.target() {
            self.controller.retarget(target, now);
        }
    }

    /// The dyno's limits changed: a new floor (the static count) and soft limit, and the fit
    /// measured again at once.
    pub fn rebound(&mut self, floor: u32, soft_limit_bytes: u64, now: Instant) {
        self.controller.config.floor = floor;
        self.soft_limit_bytes = soft_limit_bytes;
        self.next_fit = now;
    }

    fn cpu_rule(&self, cpu: Cpu) -> Option<f64> {
        cpu_rule(cpu, self.controller.config.threaded)
    }

    pub fn busy(&mut self, busy: Busy, now: Instant) {
        match busy {
            Busy::Count(n) => self.controller.busy_sample(now, f64::from(n)),
            Busy::Unknown => self.controller.busy_unknown(),
        }
    }

    /// Whether the workers not seen serving yet should be asked about: every wanted worker is up
    /// and a worker would be added now. A delegated server's worker, or a copy that sends no
    /// `READY=1`, counts as ready a second after it appears while an app may take several to
    /// import; but while connections wait, a worker that has booted takes one at once.
    pub fn wants_serving(&self, reading: &Reading, now: Instant) -> bool {
        let up = all_ready(&reading.workers, self.controller.target());
        up && self
            .controller
            .wants_more(now, true, self.cpu_rule(reading.cpu))
    }

    /// Every wanted worker is up and, when one would be added now, seen serving a connection
    /// since it started (when the kernel cannot be asked, ready is booted).
    pub fn booted(&self, reading: &Reading, now: Instant) -> bool {
        let up = all_ready(&reading.workers, self.controller.target());
        if !up || !self.wants_serving(reading, now) {
            return up;
        }
        reading.not_serving.as_ref().is_none_or(Vec::is_empty)
    }

    /// Whether the workers' memory is needed for the fit now: a worker is about to be added and
    /// the last fit did not already say that none fits, or the fit has not been measured for
    /// `FIT_INTERVAL`. (At the memory cap the queue keeps asking for a worker; reading every
    /// worker's smaps_rollup at each check to be told no again cost 1% of a core.)
    pub fn fit_due(&self, reading: &Reading, now: Instant) -> bool {
        let target = self.controller.target();
        let full = self
            .fit
            .is_some_and(|fit| !one_more_fits(fit.workers, target));
        let booted = self.booted(reading, now);
        now >= self.next_fit
            || (!full
                && self
                    .controller
                    .wants_more(now, booted, self.cpu_rule(reading.cpu)))
    }

    /// Measures the fit on a reading with the workers' memory.
    pub fn measure_fit(&mut self, reading: &Reading, now: Instant) {
        self.next_fit = now + FIT_INTERVAL;
        self.fit = Fit::measure(reading, self.soft_limit_bytes);
    }

    /// One step, with its `resize` line (the dyno's figures are added by the caller), or None.
    pub fn step(
        &mut self,
        reading: &Reading,
        busy: Option<u32>,
        now: Instant,
    ) -> Option<(u32, Event)> {
        let booted = self.booted(reading, now);
        let cpu = reading.cpu;
        let fit = self.fit;
        let step =
            self.controller
                .decide(now, booted, self.cpu_rule(cpu), fit.map(|f| f.workers))?;
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
                busy.map_or("unknown".to_owned(), |b| b.to_string()),
            )
            .with("workers_busy_mean", two(figures.busy_workers))
            .with("fit", two(figures.fit));
        if let Some(fit) = fit {
            event = event.with("worker_cost", mb(fit.worker_bytes));
        }
        if let Some(bound) = reading.gil_bound {
            event = event.with("workers_gil_bound", bound);
        }
        Some((step.to, event))
    }
}
