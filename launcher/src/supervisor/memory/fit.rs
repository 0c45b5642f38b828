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
        Some(Fit {
            worker_bytes,
            base_bytes,
            workers: workers_under(soft_limit_bytes, base_bytes, worker_bytes),
        })
    }
}

/// How many workers of `worker_bytes` fit over `base_bytes` under `soft_limit_bytes`, as a
/// fraction: `(soft limit - base) / per worker`.
pub fn workers_under(soft_limit_bytes: u64, base_bytes: u64, worker_bytes: u64) -> f64 {
    soft_limit_bytes.saturating_sub(base_bytes) as f64 / worker_bytes.max(1) as f64
}

/// `from` workers no longer fit (and there is one to shed).
pub fn over(fit: f64, from: u32) -> bool {
    fit < f64::from(from) && from > 1
}

/// One worker more than `from` fits, with `HEADROOM_WORKERS` to spare.
pub fn one_more_fits(fit: f64, from: u32) -> bool {
    fit >= f64::from(from) + 1.0 + HEADROOM_WORKERS
}

/// More workers than fit: the count that fits, all at once, at least one fewer and never none
/// (a dyno far over its fit would otherwise shed one worker per step while the kernel's OOM
/// killer acts).
pub fn shed_to(fit: f64, from: u32) -> u32 {
    let fits = if fit.is_finite() && fit > 0.0 {
        fit.floor().min(f64::from(u32::MAX)) as u32
    } else {
        0
    };
    fits.clamp(1, from.saturating_sub(1).max(1))
}

/// How many workers `TTIN` may take the count to: what fits with measured sizing's headroom
/// (none more when no worker is warm enough to be measured), and `LAUNCHER_MAX_WORKERS`; never
/// fewer than the count now (`TTIN` adds, it does not take away).
pub fn ttin_cap(fit: Option<f64>, max_workers: u32, now: u32) -> u32 {
    let fits = fit.map_or(now, |fit| {
        let room = (fit - HEADROOM_WORKERS).floor();
        if room.is_finite() && room > 0.0 {
            room.min(f64::from(u32::MAX)) as u32
        } else {
            0
        }
    });
    fits.min(max_workers).max(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shedding_goes_to_what_fits_at_once() {
        for (fit, from, to) in [
            (3.64, 4, 3),
            (3.99, 4, 3),
            (2.0, 10, 2),
            (0.4, 10, 1),
            (f64::NAN, 6, 1),
            (0.5, 1, 1),
        ] {
            assert_eq!(shed_to(fit, from), to, "fit {fit} from {from}");
        }
    }

    #[test]
    fn ttin_is_capped_by_the_fit_and_the_maximum() {
        for (fit, max, now, cap) in [
            (Some(14.6), 1024, 2, 14),
            (Some(14.2), 1024, 2, 13),
            (Some(14.6), 3, 2, 3),
            (None, 3, 2, 2),
            (None, 1024, 7, 7),
            (Some(1.1), 1024, 2, 2),
            (Some(30.0), 3, 7, 7),
        ] {
            assert_eq!(ttin_cap(fit, max, now), cap, "{fit:?} {max} {now}");
        }
    }
}
