//! How many of the workers' threads serve a request now, from /proc: a thread that runs, or waits
//! in a system call other than a lock's or an event loop's (`futex`, `epoll_wait`), is busy: it
//! computes, sleeps, or waits on a database or an API for its request. An idle pool thread waits
//! in `futex` for work; so does a Python thread that waits for the GIL, which is why a worker near
//! a full core of CPU is taken as GIL-bound, not as idle (docs/architecture.md, "Adaptive sizing").

use std::path::Path;

use crate::files::{read_text, MAX_BYTES};

/// The system calls an idle thread waits in: futex, epoll_wait, epoll_pwait, epoll_pwait2.
#[cfg(target_arch = "x86_64")]
const IDLE_SYSCALLS: [u64; 4] = [202, 232, 281, 441];
#[cfg(target_arch = "aarch64")]
const IDLE_SYSCALLS: [u64; 4] = [98, 22, 22, 441];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const IDLE_SYSCALLS: [u64; 0] = [];

/// The busy threads of `workers`, summed.
pub fn busy(proc_dir: &Path, workers: &[i32]) -> u32 {
    let busy_in = |pid: &i32| {
        let Ok(tasks) = std::fs::read_dir(proc_dir.join(pid.to_string()).join("task")) else {
            return 0;
        };
        let busy = tasks.flatten().filter(|task| {
            let text = read_text(&task.path().join("syscall"), MAX_BYTES).unwrap_or_default();
            is_busy(&text)
        });
        busy.count() as u32
    };
    workers.iter().map(busy_in).sum()
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

    #[test]
    fn this_process_has_a_busy_thread() {
        let proc_dir = crate::host::Snapshot::live().proc_dir();
        assert!(
            busy(&proc_dir, &[std::process::id() as i32]) >= 1,
            "this one runs"
        );
    }
}
