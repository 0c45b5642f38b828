//! Measured sizing's policy, free of I/O: once the workers are warm, how many fit under the soft
//! limit, measured; one step at a time towards it, with a dead band so that it settles.

use std::time::Duration;

use super::fit::{one_more_fits, over, shed_to, Fit};
use crate::supervisor::reading::{Reading, WorkerMemory};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizerConfig {
    pub soft_limit_bytes: u64,
    /// The CPU-based cap (`2*cpus+1`) and `LAUNCHER_MAX_WORKERS`, whichever is lower.
    pub max_workers: u32,
    /// How long every worker must have been up before it is measured.
    pub warmup: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resize {
    pub from: u32,
    pub to: u32,
    pub fit: Fit,
}

#[derive(Debug, Clone)]
pub struct Sizer {
    pub config: SizerConfig,
    target: u32,
    /// The last measurement, shown by `launcher size` and the `sample#` line.
    pub last_fit: Option<Fit>,
}

impl Sizer {
    pub fn new(config: SizerConfig, workers: u32) -> Self {
        Sizer {
            config,
            target: workers,
            last_fit: None,
        }
    }

    #[cfg(test)]
    pub fn target(&self) -> u32 {
        self.target
    }

    /// The count changed by someone else (TTIN/TTOU): measuring goes on from there.
    pub fn retarget(&mut self, workers: u32) {
        self.target = workers.max(1);
    }

    /// One decision: a step of one worker, or None while the workers are not all up and warm,
    /// or when the count fits.
    pub fn check(&mut self, reading: &Reading) -> Option<Resize> {
        if !self.settled(&reading.workers) {
            return None;
        }
        let fit = Fit::measure(reading, self.config.soft_limit_bytes)?;
        self.last_fit = Some(fit);
        let from = self.target;
        let to = if from > self.config.max_workers {
            self.config.max_workers
        } else if over(fit.workers, from) {
            shed_to(fit.workers, from)
        } else if one_more_fits(fit.workers, from) && from < self.config.max_workers {
            from + 1
        } else {
            return None;
        };
        self.target = to;
        Some(Resize { from, to, fit })
    }

    /// Every wanted worker is running, ready, and has been up for the warm-up.
    fn settled(&self, workers: &[WorkerMemory]) -> bool {
        workers.len() == self.target as usize
            && workers
                .iter()
                .all(|w| w.ready && w.age >= self.config.warmup)
    }
}
