//! How many of the workers' threads serve a request now, from /proc: a thread that runs, or waits
//! in a system call other than a lock's or an event loop's (`futex`, `epoll_wait`), is busy: it
//! computes, sleeps, or waits on a database or an API for its request. An idle pool thread waits
//! in `futex` for work; so does a Python thread that waits for the GIL, so a GIL-bound worker
//! shows few busy threads while requests wait for it: the waiting, not the busy count, grows the
//! workers, and the CPU rule stops them where the CPUs are full (docs/architecture.md, "Adaptive
//! sizing").

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::files::{read_text, MAX_BYTES};
use crate::procs;

/// A worker whose threads together used this share of one CPU or more is taken as bound by its
/// interpreter lock (Python's GIL, Ruby's GVL): its threads run one at a time, so more threads
/// add nothing and another worker (a lock of its own) does. Measured here: two gunicorn gthread
/// workers of 32 threads on a request of 10 ms of CPU and 40 ms of sleep used 0.75 of a CPU each,
/// and four of 16 served 17% more on the same 2 CPUs.
pub const GIL_BOUND: f64 = 0.6;
/// Each worker's CPU share is measured over at least this long (the kernel counts CPU time in
/// ticks of 10 ms).
pub const GIL_WINDOW: Duration = Duration::from_secs(2);

/// The system calls an idle thread waits in: futex, epoll_wait, epoll_pwait, epoll_pwait2.
#[cfg(target_arch = "x86_64")]
const IDLE_SYSCALLS: [u64; 4] = [202, 232, 281, 441];
#[cfg(target_arch = "aarch64")]
const IDLE_SYSCALLS: [u64; 4] = [98, 22, 22, 441];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const IDLE_SYSCALLS: [u64; 0] = [];

/// The busy threads of `workers`, summed; None when no thread's `syscall` could be read (it
/// needs the right to trace the worker: one that changed its user or made itself not dumpable
/// keeps it), since counting those threads idle would have the shrink rule see idle workers.
pub fn busy(proc_dir: &Path, workers: &[i32]) -> Option<u32> {
    let (mut read, mut busy) = (0u32, 0u32);
    for pid in workers {
        let Ok(tasks) = std::fs::read_dir(proc_dir.join(pid.to_string()).join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(text) = read_text(&task.path().join("syscall"), MAX_BYTES) {
                read += 1;
                busy += u32::from(is_busy(&text));
            }
        }
    }
    (read > 0 || workers.is_empty()).then_some(busy)
}

/// Which workers are bound by their interpreter lock: each one's CPU time (`/proc/PID/stat`)
/// over the last `GIL_WINDOW` or more, as a share of one CPU.
#[derive(Debug, Default)]
pub struct Gil {
    /// Each worker's CPU ticks, and when they were read, at the start of its window.
    marks: HashMap<i32, (Instant, u64)>,
    /// Each worker's share of one CPU over its last whole window.
    shares: HashMap<i32, f64>,
}

impl Gil {
    /// Reads the workers' CPU time and returns how many were GIL-bound over their last window.
    pub fn read(&mut self, proc_dir: &Path, workers: &[i32], now: Instant) -> u32 {
        let per_second = procs::ticks_per_second();
        self.marks.retain(|pid, _| workers.contains(pid));
        self.shares.retain(|pid, _| workers.contains(pid));
        for &pid in workers {
            // Its own time: a child it ran and reaped is not its threads waiting on its lock.
            let Some(ticks) = procs::own_cpu_ticks(proc_dir, pid) else {
                continue;
            };
            let Some(&(at, before)) = self.marks.get(&pid) else {
                self.marks.insert(pid, (now, ticks));
                continue;
            };
            let elapsed = now.saturating_duration_since(at);
            if elapsed >= GIL_WINDOW {
                let used = ticks.saturating_sub(before) as f64 / per_second;
                self.shares.insert(pid, used / elapsed.as_secs_f64());
                self.marks.insert(pid, (now, ticks));
            }
        }
        self.shares.values().filter(|s| **s >= GIL_BOUND).count() as u32
    }
}

/// A thread's `syscall` file: `running`, or the number of the call it waits in and its
/// arguments. Unreadable (empty): not counted.
pub fn is_busy(syscall: &str) -> bool {
    let Some(first) = syscall.split_whitespace().next() else {
        return false;
    };
    match first.parse::<u64>() {
        Ok(number) => !IDLE_SYSCALLS.contains(&number),
        Err(_) => first == "running",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_waiting_for_work_is_idle_and_one_waiting_on_io_is_busy() {
        assert!(is_busy("running"));
        let futex = format!(
            "{} 0x7f 0x80 0x0 0x0 0x0 0x0 0x7ffd 0x7f12",
            IDLE_SYSCALLS[0]
        );
        assert!(!is_busy(&futex), "a pool thread waiting for work");
        let epoll = format!(
            "{} 0x3 0x7f 0x1 0x3e8 0x0 0x0 0x7ffd 0x7f12",
            IDLE_SYSCALLS[1]
        );
        assert!(
            !is_busy(&epoll),
            "gthread's main thread polling its connections"
        );
        // clock_nanosleep (time.sleep) on x86_64, recvfrom on a database socket.
        assert!(is_busy("230 0x1 0x0 0x7ffd 0x0 0x0 0x0 0x7ffd 0x7f12"));
        assert!(is_busy("45 0x5 0x7f 0x10000 0x0 0x0 0x0 0x7ffd 0x7f12"));
        assert!(!is_busy(""), "unreadable");
    }

    /// A fake /proc with one worker whose CPU time is `ticks` (utime; stime 0).
    fn stat(proc_dir: &Path, pid: i32, ticks: u64) {
        let dir = proc_dir.join(pid.to_string());
        std::fs::create_dir_all(&dir).expect("mkdir");
        let fields: Vec<String> = (4..=52)
            .map(|n| match n {
                14 => ticks.to_string(),
                _ => "0".to_owned(),
            })
            .collect();
        let line = format!("{pid} (python3) S {}\n", fields.join(" "));
        std::fs::write(dir.join("stat"), line).expect("write stat");
    }

    #[test]
    fn a_worker_near_a_full_cpu_is_gil_bound_over_a_whole_window() {
        let dir = tempfile::tempdir().expect("temp dir");
        let per_second = procs::ticks_per_second();
        let (mut gil, start) = (Gil::default(), Instant::now());
        stat(dir.path(), 10, 0);
        stat(dir.path(), 11, 0);
        assert_eq!(gil.read(dir.path(), &[10, 11], start), 0, "no window yet");
        // One second in: not a whole window, nothing measured.
        stat(dir.path(), 10, per_second as u64);
        assert_eq!(
            gil.read(dir.path(), &[10, 11], start + Duration::from_secs(1)),
            0
        );
        // Two seconds: 10 used 0.8 of a CPU, 11 a tenth.
        stat(dir.path(), 10, (1.6 * per_second) as u64);
        stat(dir.path(), 11, (0.2 * per_second) as u64);
        assert_eq!(gil.read(dir.path(), &[10, 11], start + GIL_WINDOW), 1);
        // 10 is gone: it no longer counts.
        assert_eq!(gil.read(dir.path(), &[11], start + GIL_WINDOW), 0);
    }

    #[test]
    fn this_process_has_a_busy_thread() {
        let proc_dir = crate::host::Snapshot::live().proc_dir();
        let busy = busy(&proc_dir, &[std::process::id() as i32]);
        assert!(busy.is_some_and(|n| n >= 1), "this one runs: {busy:?}");
    }

    #[test]
    fn threads_whose_system_calls_cannot_be_read_are_unknown_not_idle() {
        let dir = tempfile::tempdir().expect("temp dir");
        let task = |pid: i32, tid: i32| dir.path().join(format!("{pid}/task/{tid}"));
        std::fs::create_dir_all(task(10, 10)).expect("task");
        std::fs::create_dir_all(task(10, 11)).expect("task");
        assert_eq!(busy(dir.path(), &[10]), None, "no syscall file read");
        std::fs::write(task(10, 11).join("syscall"), "running\n").expect("write");
        assert_eq!(busy(dir.path(), &[10]), Some(1), "the one read");
        assert_eq!(busy(dir.path(), &[]), Some(0), "no worker, none busy");
    }
}
