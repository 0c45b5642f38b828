//! OOM kill accounting, free of I/O: the cgroup's counter says how many processes the kernel's
//! OOM killer ended, not which. Each rise is credit that the workers seen to end of SIGKILL
//! claim, one kill each, as they are reaped (a victim may be reaped a turn after the counter
//! rose for it); credit no worker claims within `CLAIM_WINDOW` is reported as not attributed.
//! Every kill is reported exactly once, attributed or not.

use std::time::{Duration, Instant};

/// How long a rise waits for the workers it killed to be reaped: one memory check.
pub const CLAIM_WINDOW: Duration = super::CHECK_INTERVAL;

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// The counter as last read; None where there is no counter (Cedar's layout).
    seen: Option<u64>,
    /// Kills counted but not claimed yet, and since when.
    unclaimed: u64,
    since: Option<Instant>,
    /// Every kill counted since the launcher started.
    pub total: u64,
}

impl Ledger {
    pub fn new(counted: Option<u64>) -> Self {
        Ledger {
            seen: counted,
            ..Ledger::default()
        }
    }

    /// The counter read at `now`: its rise since the last reading is new credit.
    pub fn counted(&mut self, counted: Option<u64>, now: Instant) {
        let Some(counted) = counted else {
            return;
        };
        let rise = counted.saturating_sub(self.seen.unwrap_or(0));
        self.seen = Some(counted);
        if rise > 0 {
            self.total += rise;
            self.unclaimed += rise;
            self.since.get_or_insert(now);
        }
    }

    /// As many of `candidates` (processes seen to end of SIGKILL) as there is credit for.
    pub fn claim(&mut self, candidates: &[i32]) -> Vec<i32> {
        let claimed: Vec<i32> = candidates
            .iter()
            .take(usize::try_from(self.unclaimed).unwrap_or(usize::MAX))
            .copied()
            .collect();
        self.unclaimed -= claimed.len() as u64;
        if self.unclaimed == 0 {
            self.since = None;
        }
        claimed
    }

    /// The credit nobody claimed within the window (or all of it, `now` = None): not attributed.
    pub fn expire(&mut self, now: Option<Instant>) -> u64 {
        let due = match (now, self.since) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(now), Some(since)) => now.saturating_duration_since(since) >= CLAIM_WINDOW,
        };
        if !due {
            return 0;
        }
        self.since = None;
        std::mem::take(&mut self.unclaimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kill_is_claimed_or_expired_exactly_once() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut ledger = Ledger::new(Some(4));
        assert_eq!(ledger.claim(&[10]), Vec::<i32>::new(), "no rise, no claim");
        ledger.counted(Some(7), at(0));
        assert_eq!(ledger.claim(&[10, 11]), vec![10, 11]);
        assert_eq!(ledger.expire(Some(at(100))), 0, "within the window");
        // The third victim is reaped a turn later: it still claims its kill.
        assert_eq!(ledger.claim(&[12, 13]), vec![12]);
        ledger.counted(Some(9), at(200));
        assert_eq!(ledger.claim(&[]), Vec::<i32>::new());
        assert_eq!(ledger.expire(Some(at(300))), 0);
        assert_eq!(ledger.expire(Some(at(700))), 2, "nobody claimed them");
        assert_eq!(ledger.expire(Some(at(900))), 0, "reported once");
        assert_eq!(ledger.total, 5);
        ledger.counted(Some(10), at(1000));
        assert_eq!(ledger.expire(None), 1, "at exit: what is left");
        let mut none = Ledger::new(None);
        none.counted(None, at(0));
        assert!(
            none.claim(&[1]).is_empty(),
            "no counter: no claim from a SIGKILL alone"
        );
    }
}
