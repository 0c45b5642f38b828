//! Ending processes for good: SIGKILL to a worker's group or to everything under the launcher,
//! counting what was still there; whether a group still has processes; what is left that will not
//! die. The launcher is a child subreaper, so every process it started, also one that left its
//! worker's group with `setsid()`, is below it until it has ended.

use std::collections::HashSet;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::log::Event;
use crate::host::Snapshot;
use crate::procs::{self, Stat};

/// How many times everything under the launcher is listed and killed in one sweep: a process
/// that forked between the listing and the kill is found by the next listing.
const LISTINGS: usize = 3;

fn me() -> i32 {
    std::process::id() as i32
}

fn proc_dir() -> PathBuf {
    Snapshot::live().proc_dir()
}

/// What sending a signal returned: a process that has just exited (ESRCH) is normal; anything
/// else (EPERM: a process that runs as another user now) is said. `key` is `pid` or `group`.
pub fn sent(result: nix::Result<()>, key: &'static str, target: i32, signal: Signal) {
    match result {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(err) => Event::warn("signal_failed")
            .with(key, target)
            .with("signal", signal.as_str().trim_start_matches("SIG"))
            .with("error", err.desc())
            .with(
                "message",
                "the process did not get the signal from the launcher",
            )
            .emit(),
    }
}

/// SIGKILL to every process under the launcher: each worker group in `groups` first (a group
/// kill reaches a process that is forking at that moment, and its new child), then every
/// process found below the launcher, listed again until a listing finds nothing new. Returns
/// how many processes were still there.
pub fn everything(groups: &[i32]) -> usize {
    let proc_dir = proc_dir();
    let mut killed: HashSet<i32> = HashSet::new();
    for round in 0..LISTINGS {
        let found: Vec<i32> = procs::living_under(&proc_dir, me())
            .into_iter()
            .map(|s| s.pid)
            .filter(|pid| !killed.contains(pid))
            .collect();
        if round == 0 {
            for pgid in groups {
                let killed = signal::killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
                sent(killed, "group", *pgid, Signal::SIGKILL);
            }
        }
        if found.is_empty() {
            break;
        }
        for pid in found {
            sent(
                signal::kill(Pid::from_raw(pid), Signal::SIGKILL),
                "pid",
                pid,
                Signal::SIGKILL,
            );
            killed.insert(pid);
        }
    }
    killed.len()
}

/// SIGKILL to a worker's process group; returns how many of its processes were still there.
pub fn group(pgid: i32) -> usize {
    let members = procs::living_under(&proc_dir(), me())
        .into_iter()
        .filter(|s| s.group == pgid)
        .count();
    let killed = signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    sent(killed, "group", pgid, Signal::SIGKILL);
    members
}

/// Whether any process is left in the group (`kill(-pgid, 0)`).
pub fn group_alive(pgid: i32) -> bool {
    !matches!(signal::killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// The processes still under the launcher: what would not die (state `D`: in a system call that
/// cannot be interrupted, even by SIGKILL).
pub fn left() -> Vec<Stat> {
    procs::living_under(&proc_dir(), me())
}

/// Processes that left a worker the launcher stopped (a `setsid()` helper, a double fork): they
/// got the worker's stop signal, and get SIGKILL at its deadline if they are still there. Each is
/// named by its pid and start time, so that a reused pid is never killed.
#[derive(Debug, Default)]
pub struct Detached {
    left: Vec<(i32, u64, std::time::Instant)>,
}

impl Detached {
    /// The processes under `worker` (in any group or session) outside `group`: signalled with
    /// `signal` now, killed at `kill_at`. Returns how many.
    pub fn stop(
        &mut self,
        worker: i32,
        group: i32,
        signal: Signal,
        kill_at: std::time::Instant,
    ) -> usize {
        let proc_dir = proc_dir();
        let tree = procs::tree(&proc_dir, worker).into_iter().skip(1);
        let outside: Vec<Stat> = tree
            .filter_map(|pid| procs::stat(&proc_dir, pid))
            .filter(|s| s.group != group && s.state != 'Z')
            .collect();
        for process in &outside {
            sent(
                signal::kill(Pid::from_raw(process.pid), signal),
                "pid",
                process.pid,
                signal,
            );
            if let Some(started) = procs::start_time(&proc_dir, process.pid) {
                self.left.push((process.pid, started, kill_at));
            }
        }
        outside.len()
    }

    /// SIGKILL to those still there at their deadline; forgets those gone. The next deadline.
    pub fn sweep(&mut self, now: std::time::Instant) -> Option<std::time::Instant> {
        let proc_dir = proc_dir();
        self.left.retain(|(pid, started, kill_at)| {
            let same = procs::start_time(&proc_dir, *pid) == Some(*started)
                && procs::stat(&proc_dir, *pid).is_some_and(|s| s.state != 'Z');
            if same && now >= *kill_at {
                sent(
                    signal::kill(Pid::from_raw(*pid), Signal::SIGKILL),
                    "pid",
                    *pid,
                    Signal::SIGKILL,
                );
                return false;
            }
            same
        });
        self.left.iter().map(|(.., at)| *at).min()
    }
}
