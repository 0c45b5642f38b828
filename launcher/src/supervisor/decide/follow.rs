//! A check whose reading has the limits read again (`Reading::limits`): when they changed, each
//! policy takes its new bounds at once (`limits::follow` says which), the change is logged, and
//! the count moves where the launcher sizes it (docs/architecture.md, "Limits that change").

use std::time::Instant;

use super::{Control, Decision};
use crate::host::Size;
use crate::supervisor::limits::{self, Change, Rules};
use crate::supervisor::reading::Reading;

/// The limits followed so far, and the rules of this run.
#[derive(Debug, Clone)]
pub struct Following {
    rules: Rules,
    size: Size,
}

impl Control {
    /// From now on, the limits are followed from `size`, the ones at start.
    pub fn follow(&mut self, rules: Rules, size: Size) {
        self.following = Some(Following { rules, size });
    }

    /// The decision of a check whose limits changed: a new count, or none. Called before the
    /// check's other wants, so that they are judged against the new soft limit; the sizers then
    /// wait for the next check, whose reading has the new count.
    pub fn follow_limits(&mut self, reading: &Reading, now: Instant) -> Vec<Decision> {
        let fit = self.fit();
        let (Some(following), Some(new)) = (&mut self.following, &reading.limits) else {
            return Vec::new();
        };
        let workers = reading.target;
        let (old, rules) = (&following.size, &following.rules);
        let Some(change) = limits::follow(old, new, rules, workers, fit) else {
            return Vec::new();
        };
        following.size = new.clone();
        self.rebound(&change, now);
        self.events.push(change.event);
        self.limits_resized = change.resize.is_some();
        if change.resize.is_some_and(|to| to < workers) {
            let wait = self.config.guard.as_ref().map(|g| g.kill_after);
            self.shedding = wait.map(|wait| now + wait);
        }
        change
            .resize
            .map(|to| Decision::Resize { to })
            .into_iter()
            .collect()
    }

    /// Whether the guard waits for the workers shed for lowered limits: their memory is on its
    /// way out, and a recycle besides (a replacement booting while they exit) would only add to
    /// it. Until they have exited (fan-out: none stopping; delegate: no more workers than the
    /// count), and the graceful timeout at most, after which a stopped worker is killed.
    pub(super) fn shedding(&mut self, reading: &Reading, now: Instant) -> bool {
        let Some(until) = self.shedding else {
            return false;
        };
        let exiting =
            !reading.stopping.is_empty() || reading.workers.len() > reading.target as usize;
        if now < until && (exiting || self.limits_resized) {
            return true;
        }
        self.shedding = None;
        false
    }

    /// The new bounds: the soft limit of the guard, of the fit, of the lines; measured sizing's
    /// most; adaptive sizing's floor. The sizers measure again at once.
    fn rebound(&mut self, change: &Change, now: Instant) {
        let limits = change.limits;
        self.config.limits = limits;
        self.oom
            .set_limits(limits.soft_limit_bytes, limits.quota_bytes);
        if let Some(guard) = &mut self.guard {
            guard.config.soft_limit_bytes = limits.soft_limit_bytes;
        }
        if let Some(config) = &mut self.config.guard {
            config.soft_limit_bytes = limits.soft_limit_bytes;
        }
        if let Some(sizer) = &mut self.sizer {
            sizer.config.soft_limit_bytes = limits.soft_limit_bytes;
            sizer.config.max_workers = change.measured_max;
            self.next_sizing = now;
        }
        if let Some(config) = &mut self.config.sizer {
            config.soft_limit_bytes = limits.soft_limit_bytes;
            config.max_workers = change.measured_max;
        }
        if let Some(adaptive) = &mut self.adaptive {
            adaptive.rebound(change.formula.value, limits.soft_limit_bytes, now);
        }
        if let Some(config) = &mut self.config.adaptive {
            config.floor = change.formula.value;
        }
    }
}

#[cfg(test)]
mod tests;
