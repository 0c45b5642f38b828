//! OOM kill attribution, free of I/O: the cgroup's counter says how many processes the kernel's
//! OOM killer ended, not which. Each rise is credit that the workers seen to end of SIGKILL
//! claim, one kill each, as they are reaped (a victim may be reaped a turn after the counter
//! rose for it), and in delegate mode the server's workers that vanished between two checks;
//! credit no worker claims within `CLAIM_WINDOW` is reported as not attributed. Every kill is
//! reported exactly once, attributed or not, in an `oom_kill` line.

use std::time::{Duration, Instant};

use crate::supervisor::log::Event;
use crate::units::mb;

/// How long a rise waits for the workers it killed to be reaped: one memory check.
pub const CLAIM_WINDOW: Duration = super::CHECK_INTERVAL;

/// The ledger with what the `oom_kill` lines show.
#[derive(Debug, Clone)]
pub struct Attribution {
    ledger: Ledger,
    /// The dyno's usage as last read, and when: after a kill it has fallen, so the line shows
    /// the reading before it.
    last_usage: Option<(u64, Instant)>,
    soft_limit_bytes: u64,
    quota_bytes: u64,
}

impl Attribution {
    pub fn new(counted: Option<u64>, soft_limit_bytes: u64, quota_bytes: u64) -> Self {
        Attribution {
            ledger: Ledger::new(counted),
            last_usage: None,
            soft_limit_bytes,
            quota_bytes,
        }
    }

    /// The dyno's limits changed: the lines show the new ones.
    pub fn set_limits(&mut self, soft_limit_bytes: u64, quota_bytes: u64) {
        (self.soft_limit_bytes, self.quota_bytes) = (soft_limit_bytes, quota_bytes);
    }

    /// Every kill counted since the launcher started.
    pub fn total(&self) -> u64 {
        self.ledger.total
    }

    /// The usage a check read, after its kills were accounted for.
    pub fn usage_read(&mut self, usage_bytes: u64, now: Instant) {
        self.last_usage = Some((usage_bytes, now));
    }

    /// Workers, children of the launcher, that died of SIGKILL in one turn of the loop: which of
    /// them did the kernel's OOM killer end? Only a rise in the counter says so (a SIGKILL alone
    /// is not taken as proof), and how many: each claims one kill of the rise.
    pub fn claim_reaped(
        &mut self,
        counted: Option<u64>,
        killed: &[i32],
        now: Instant,
    ) -> (Vec<i32>, Option<Event>) {
        if killed.is_empty() {
            return (Vec::new(), None);
        }
        self.ledger.counted(counted, now);
        let claimed = self.ledger.claim(killed);
        let event = (!claimed.is_empty()).then(|| self.event(&claimed, 0, now));
        (claimed, event)
    }

    /// At a check: the counter as read, and the delegated server's workers that vanished since
    /// the last check (the launcher's grandchildren, which it does not reap), which claim what is
    /// left; what stayed unclaimed for `CLAIM_WINDOW` is reported as not attributed (another
    /// process of the dyno, or lost to a race).
    pub fn check(&mut self, counted: Option<u64>, vanished: &[i32], now: Instant) -> Vec<Event> {
        self.ledger.counted(counted, now);
        let claimed = self.ledger.claim(vanished);
        let mut events = Vec::new();
        if !claimed.is_empty() {
            events.push(self.event(&claimed, 0, now));
        }
        events.extend(self.unclaimed(None, now, false));
        events
    }

    /// OOM kills no process was found for in time; all of them (`all`, at exit, with the
    /// counter read then).
    pub fn unclaimed(&mut self, counted: Option<u64>, now: Instant, all: bool) -> Option<Event> {
        if all {
            self.ledger.counted(counted, now);
        }
        let unattributed = self.ledger.expire((!all).then_some(now));
        (unattributed > 0).then(|| self.event(&[], unattributed, now))
    }

    /// The `oom_kill` line: the kills it reports (`kills`), those attributed to the pids named
    /// and those that could not be, and the dyno's usage as last read before the counter rose,
    /// with its age.
    fn event(&self, pids: &[i32], unattributed: u64, now: Instant) -> Event {
        let named: Vec<String> = pids.iter().take(10).map(i32::to_string).collect();
        let more = if pids.len() > 10 { ",..." } else { "" };
        let pid = match named.is_empty() {
            true => "unknown".to_owned(),
            false => named.join(",") + more,
        };
        let event = Event::error("oom_kill")
            .with("pid", pid)
            .with("kills", pids.len() as u64 + unattributed)
            .with("attributed", pids.len())
            .with("unattributed", unattributed);
        let event = match self.last_usage {
            Some((bytes, at)) => event
                .with("memory_total", mb(bytes))
                .secs("memory_total_age_s", now.saturating_duration_since(at)),
            None => event.with("memory_total", "unknown"),
        };
        event
            .with("soft_limit", mb(self.soft_limit_bytes))
            .with("memory_quota", mb(self.quota_bytes))
    }
}

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

    /// The counter read at `now`: its rise since the last reading is new credit. The first
    /// reading is only the baseline: the kills of the cgroup's whole life before it are no one's.
    pub fn counted(&mut self, counted: Option<u64>, now: Instant) {
        let Some(counted) = counted else {
            return;
        };
        let Some(seen) = self.seen.replace(counted) else {
            return;
        };
        let rise = counted.saturating_sub(seen);
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
        // Unreadable at boot, readable later: the count then is a baseline, not new kills.
        none.counted(Some(6), at(100));
        assert!(none.claim(&[1]).is_empty(), "the cgroup's earlier kills");
        none.counted(Some(7), at(200));
        assert_eq!(none.claim(&[1, 2]), vec![1]);
        assert_eq!(none.total, 1);
    }
}
