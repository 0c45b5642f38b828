//! The dyno's limits, read again while the app runs: every `INTERVAL`, the limit files that
//! `host::read` found at boot (`LimitFiles`), and only those (docs/architecture.md, "Limits that
//! change").

use std::time::{Duration, Instant};

use crate::host::{LimitFiles, Size, Snapshot};

/// How often the limits are read again: a few small files each time (8 on this project's cgroup
/// v1 machines: docs/architecture.md, "Limits that change", gives them and their cost).
pub const INTERVAL: Duration = Duration::from_secs(2);

pub struct Limits {
    files: LimitFiles,
    next: Instant,
}

impl Limits {
    pub fn new(files: LimitFiles, now: Instant) -> Limits {
        Limits {
            files,
            next: now + INTERVAL,
        }
    }

    /// The limits, when a reading is due and every file could be read.
    pub fn due(&mut self, snapshot: &Snapshot, now: Instant) -> Option<Size> {
        if now < self.next {
            return None;
        }
        self.next = now + INTERVAL;
        self.files.read(snapshot)
    }
}
