//! A process's own memory from `/proc/PID/smaps_rollup`: unique (USS: private pages, resident or
//! swapped) and proportional (PSS: shared pages divided among the processes that map them).

use std::ops::Add;
use std::path::Path;

use crate::host::kib_field_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footprint {
    pub rss_bytes: u64,
    /// Proportional memory, resident plus swapped (`Pss` + `SwapPss`).
    pub pss_bytes: u64,
    /// Unique memory: what ending the process frees (`Private_Clean` + `Private_Dirty` + `SwapPss`
    /// of private pages, which is all of their swap).
    pub uss_bytes: u64,
    /// The process's share of swap (`SwapPss`).
    pub swap_bytes: u64,
    /// Pages written before a fork that the process still shares (`Shared_Dirty`): a Python
    /// worker copies them as it touches their objects' reference counts, and every one of them
    /// as it exits.
    pub shared_dirty_bytes: u64,
}

impl Add for Footprint {
    type Output = Footprint;

    fn add(self, other: Footprint) -> Footprint {
        Footprint {
            rss_bytes: self.rss_bytes + other.rss_bytes,
            pss_bytes: self.pss_bytes + other.pss_bytes,
            uss_bytes: self.uss_bytes + other.uss_bytes,
            swap_bytes: self.swap_bytes + other.swap_bytes,
            shared_dirty_bytes: self.shared_dirty_bytes + other.shared_dirty_bytes,
        }
    }
}

/// Parses the text of `smaps_rollup`. None when it has no `Rss` line (a kernel thread, an exited
/// process).
pub fn parse_rollup(text: &str) -> Option<Footprint> {
    let field = |name| kib_field_bytes(text, name).unwrap_or(0);
    let rss_bytes = kib_field_bytes(text, "Rss")?;
    let swap_bytes = field("SwapPss");
    Some(Footprint {
        rss_bytes,
        pss_bytes: field("Pss") + swap_bytes,
        uss_bytes: field("Private_Clean") + field("Private_Dirty") + swap_bytes,
        swap_bytes,
        shared_dirty_bytes: field("Shared_Dirty"),
    })
}

/// `pid`'s footprint from `proc_dir` (`/proc`, or a fake tree); None once it has exited.
pub fn footprint(proc_dir: &Path, pid: i32) -> Option<Footprint> {
    let dir = proc_dir.join(pid.to_string());
    let read = |name: &str| crate::files::read_text(&dir.join(name), crate::files::MAX_BYTES);
    match read("smaps_rollup") {
        Ok(text) => parse_rollup(&text),
        // Kernels before 4.14 have no smaps_rollup: resident and swap from status, counted as
        // unique (an overestimate, which errs on the safe side).
        Err(_) => {
            let status = read("status").ok()?;
            let rss_bytes = kib_field_bytes(&status, "VmRSS")?;
            let swap_bytes = kib_field_bytes(&status, "VmSwap").unwrap_or(0);
            Some(Footprint {
                rss_bytes,
                pss_bytes: rss_bytes + swap_bytes,
                uss_bytes: rss_bytes + swap_bytes,
                swap_bytes,
                shared_dirty_bytes: 0,
            })
        }
    }
}

/// The sum over several processes (a worker and everything it started).
pub fn total(proc_dir: &Path, pids: &[i32]) -> Footprint {
    pids.iter()
        .filter_map(|pid| footprint(proc_dir, *pid))
        .fold(Footprint::default(), |sum, f| sum + f)
}
