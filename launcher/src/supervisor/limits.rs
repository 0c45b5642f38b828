//! Limits that change while the app runs (a container resized in place), free of I/O: from the
//! limits before, the limits now and the rules of this run, what follows. The soft limit (the
//! guard's, the memory fit's) follows at once; the worker count moves only where it is the
//! launcher's: static sizing to what a boot with the new limits would choose (the same
//! `sizing::Formula`), measured sizing within its new most, adaptive sizing never under its new
//! floor. A user's `WEB_CONCURRENCY`, a count the command pins and `LAUNCHER_DISABLE` are kept
//! (docs/architecture.md, "Limits that change").

use super::log::Event;
use super::memory::fit::{over, shed_to, workers_under, Fit};
use super::memory::Limits;
use crate::host::Size;
use crate::sizing::{cpu_cap, Formula, Sizing, MAX_WEB_CONCURRENCY};
use crate::units::mb;

/// Whose worker count it is, as set at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    /// The launcher's, sized this way (the sizing that runs, not the one asked for).
    Sized(Sizing),
    /// Not the launcher's to change, and why.
    Kept(String),
}

/// What the limits are turned into, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `LAUNCHER_MEMORY_SOFT_LIMIT`, percent of the quota.
    pub soft_limit_percent: u64,
    /// The formula's memory per worker (`WEB_MEMORY`), MB.
    pub web_memory_mb: u64,
    /// `LAUNCHER_MAX_WORKERS`.
    pub max_workers: Option<u32>,
    pub count: Count,
}

impl Rules {
    /// The quota and the soft limit under these limits.
    pub fn limits(&self, size: &Size) -> Limits {
        Limits::of(size.memory_bytes, self.soft_limit_percent)
    }

    /// The count a boot with these limits chooses.
    pub fn formula(&self, size: &Size) -> Formula {
        let mb = size.memory_mb();
        Formula::new(mb, size.cpus, self.web_memory_mb, self.max_workers)
    }

    /// Measured sizing's most: the CPU term, and `LAUNCHER_MAX_WORKERS` under it.
    pub fn measured_max(&self, size: &Size) -> u32 {
        measured_max(size.cpus, self.max_workers)
    }
}

/// Measured sizing's most: the CPU term (`2 * cpus + 1`), and `LAUNCHER_MAX_WORKERS` under it.
pub fn measured_max(cpus: u32, max_workers: Option<u32>) -> u32 {
    let by_cpu = cpu_cap(cpus);
    let max = max_workers.map_or(by_cpu, |cap| cap.min(by_cpu));
    max.min(MAX_WEB_CONCURRENCY)
}

/// What a change of limits changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The new quota and soft limit: the guard's, the memory fit's, the lines'.
    pub limits: Limits,
    /// The count a boot with the new limits would choose: static sizing's count, adaptive
    /// sizing's floor.
    pub formula: Formula,
    /// Measured sizing's new most.
    pub measured_max: u32,
    /// The worker count to move to at once, if any.
    pub resize: Option<u32>,
    /// The `limits_changed` line.
    pub event: Event,
}

/// The limits read again, against those followed so far: None when no figure the launcher sizes
/// by changed (a source alone is no change). `workers` is the count now; `fit` the sizers' last
/// memory fit, whose measured base and worker cost are taken under the new soft limit at once.
pub fn follow(
    old: &Size,
    new: &Size,
    rules: &Rules,
    workers: u32,
    fit: Option<Fit>,
) -> Option<Change> {
    let memory_changed = old.memory_bytes != new.memory_bytes;
    let cpus_changed = old.cpus != new.cpus || old.cpu_capacity != new.cpu_capacity;
    if !memory_changed && !cpus_changed {
        return None;
    }
    let limits = rules.limits(new);
    let formula = rules.formula(new);
    let measured_max = rules.measured_max(new);
    let mut event = Event::info("limits_changed")
        .with("memory_quota", mb(new.memory_bytes))
        .with("memory_quota_was", mb(old.memory_bytes))
        .with("cpus", new.cpu_capacity)
        .with("cpus_was", old.cpu_capacity)
        .with("soft_limit", mb(limits.soft_limit_bytes));
    let resize = match &rules.count {
        Count::Sized(Sizing::Static) => {
            event = event
                .with("sizing", Sizing::Static)
                .with("formula", formula.explain());
            Some(formula.value)
        }
        Count::Sized(Sizing::Measured) => {
            event = event
                .with("sizing", Sizing::Measured)
                .with("max_workers", measured_max)
                .with("max_workers_was", rules.measured_max(old));
            event = with_fit(event, fit, limits);
            let fits = refit(fit, limits, workers);
            Some(fits.unwrap_or(workers).min(measured_max))
        }
        Count::Sized(Sizing::Adaptive) => {
            event = event
                .with("sizing", Sizing::Adaptive)
                .with("min_workers", formula.value)
                .with("min_workers_was", rules.formula(old).value);
            event = with_fit(event, fit, limits);
            // Memory first, as adaptive sizing's own rule: under its floor if that is what fits.
            Some(refit(fit, limits, workers).unwrap_or(workers.max(formula.value)))
        }
        Count::Kept(why) => {
            event = event.with("kept", why);
            None
        }
    };
    let resize = resize.filter(|to| *to != workers);
    event = match resize {
        Some(to) => event.with("workers", to).with("workers_was", workers),
        None => event.with("workers", workers),
    };
    if memory_changed {
        event = event.with("memory_source", &new.memory_source);
    }
    if cpus_changed {
        event = event.with("cpus_source", &new.cpus_source);
    }
    Some(Change {
        limits,
        formula,
        measured_max,
        resize,
        event,
    })
}

/// How many workers fit under the new soft limit, with the base and the worker's cost last
/// measured (`memory::fit`): `(soft limit - base) / cost`.
fn under(fit: Fit, limits: Limits) -> f64 {
    workers_under(limits.soft_limit_bytes, fit.base_bytes, fit.worker_bytes)
}

/// The fit under the new soft limit on the line, once there is one.
fn with_fit(event: Event, fit: Option<Fit>, limits: Limits) -> Event {
    match fit {
        Some(fit) => event.with("fit", format!("{:.2}", under(fit, limits))),
        None => event,
    }
}

/// The count to shed to when fewer than `workers` fit under the new soft limit.
fn refit(fit: Option<Fit>, limits: Limits, workers: u32) -> Option<u32> {
    let fits = under(fit?, limits);
    over(fits, workers).then(|| shed_to(fits, workers))
}

#[cfg(test)]
mod tests;
