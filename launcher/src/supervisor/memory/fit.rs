//! The memory fit, free of I/O: how many workers fit under the soft limit, from one reading of
//! the dyno's usage and each worker's own memory. Measured sizing steps towards it; adaptive
//! sizing never grows past it; `TTIN` is capped by it.

use crate::supervisor::reading::Reading;

/// How far above the next whole worker the fit must be before one is added: a quarter of a
/// worker's memory, so that measurement noise at a boundary cannot add and remove a worker in turn.
pub const HEADROOM_WORKERS: f64 = 0.25;

/// What the measurement found: `fit = (soft limit - base) / per worker`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// What one more worker is taken to cost: the largest of the workers' unique memory plus
    /// the written pages they still share since the fork, which they may copy (all of them when
    /// they exit: 27 gunicorn workers stopping together copied 7 MB each and reached the quota).
    pub worker_bytes: u64,
    /// Everything else: the dyno's usage less the workers' unique memory (the master, the
    /// launcher, memory the workers share, counted once).
    pub base_bytes: u64,
    /// How many workers fit, as a fraction.
    pub workers: f64,
}

impl Fit {
    pub fn measure(reading: &Reading, soft_limit_bytes: u64) -> Option<Fit> {
        let costs = reading
            .workers
            .iter()
            .map(|w| w.uss_bytes + w.shared_dirty_bytes);
        let worker_bytes = costs.max()?;
        if reading.workers.iter().all(|w| w.uss_bytes == 0) {
            return None;
        }
        let unique: u64 = reading.workers.iter().map(|w| w.uss_bytes).sum();
        let base_bytes = reading.usage_bytes.saturating_sub(unique);
        let room = soft_limit_bytes.saturating_sub(base_bytes);
        Some(Fit {
            worker_bytes,
            base_bytes,
            workers: room as f64 / worker_bytes as f64,
        })
    }
}
