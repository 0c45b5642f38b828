//! Taking a fan-out worker out of the accept set before it is stopped (docs/architecture.md,
//! "Stopping a fan-out worker"): the shared socket is removed from every epoll set of the worker
//! and the processes under it, so that the kernel wakes only the workers that serve on; the
//! signal follows `WAIT` later, once what the worker accepted has been read. A server that stops
//! on SIGTERM closing the connections it has accepted but not read a request from yet (uvicorn)
//! then closes none that a client is sending on.
//!
//! The launcher copies the worker's epoll fd with `pidfd_getfd(2)` (Linux 5.6; it needs ptrace
//! rights over the worker, which a parent running as the same user has unless a security module
//! or a seccomp filter refuses). `EPOLL_CTL_DEL` finds an entry by its file and the fd number it
//! was added under, in the process that calls it, so the deletion runs in a short-lived child of
//! the launcher that puts the socket at that number in its own copy of the fd table.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use super::reading::serving;
use crate::procs;

/// How long after being taken out of the accept set a worker gets its stop signal: time to read
/// the requests of the connections it accepted just before (a busy event loop reads them on its
/// next turn). 200 ms lost no request in `test/bench/restart-drops`.
pub const WAIT: Duration = Duration::from_millis(200);

/// Removes the socket (`listener`, whose inode is `inode`) from every epoll set of `pid` and the
/// processes under it. Ok(n): n sets watched it and no longer do (0: none did: the worker waits
/// in `accept` or not at all, or is gone). Err: the kernel refused (EPERM, ENOSYS before 5.6).
pub fn drain(
    proc_dir: &Path,
    pid: i32,
    listener: BorrowedFd<'_>,
    inode: u64,
) -> Result<usize, Errno> {
    let mut removed = 0;
    for process in procs::tree(proc_dir, pid) {
        let sets = serving::epoll_sets(&proc_dir.join(process.to_string()), inode);
        if sets.is_empty() {
            continue;
        }
        let pidfd = match pidfd_open(process) {
            Err(Errno::ESRCH) => continue,
            other => other?,
        };
        for (epoll, number) in sets {
            let copy = match pidfd_getfd(&pidfd, epoll) {
                Err(Errno::ESRCH | Errno::EBADF) => continue,
                other => other?,
            };
            match remove(&copy, number, listener) {
                Ok(()) => removed += 1,
                // Removed or closed by the worker since it was read.
                Err(Errno::ENOENT | Errno::EBADF) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(removed)
}

fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    owned(fd)
}

/// A copy of another process's fd `target`, close-on-exec.
fn pidfd_getfd(pidfd: &OwnedFd, target: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_getfd(2) takes a pidfd, an fd number of that process and flags, and returns
    // a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    owned(fd)
}

fn owned(fd: libc::c_long) -> Result<OwnedFd, Errno> {
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a descriptor the kernel has just returned to this process, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Deletes the entry the socket has under fd `number` in `epoll`, from a child whose fd table is
/// a copy: there the socket is put at `number` (whatever the launcher keeps at that number stays
/// where it is) and the epoll fd above it, so that the one cannot replace the other.
fn remove(epoll: &OwnedFd, number: i32, listener: BorrowedFd<'_>) -> Result<(), Errno> {
    if number < 0 {
        return Err(Errno::EBADF);
    }
    let (epoll, listener) = (epoll.as_raw_fd(), listener.as_raw_fd());
    // SAFETY: the child makes only async-signal-safe system calls (fcntl, dup2, epoll_ctl) and
    // leaves with _exit, so the launcher's other thread (its log writer) cannot leave it a lock
    // it needs; its exit status is the errno of the call that failed.
    match unsafe { fork() }? {
        ForkResult::Child => unsafe {
            let above = libc::fcntl(epoll, libc::F_DUPFD, number.saturating_add(1));
            let done = above >= 0
                && libc::dup2(listener, number) == number
                && libc::epoll_ctl(above, libc::EPOLL_CTL_DEL, number, std::ptr::null_mut()) == 0;
            libc::_exit(if done {
                0
            } else {
                Errno::last_raw().clamp(1, 255)
            })
        },
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
                Ok(WaitStatus::Exited(_, errno)) => return Err(Errno::from_raw(errno)),
                Ok(_) => return Err(Errno::EIO),
                Err(Errno::EINTR) => continue,
                Err(err) => return Err(err),
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A child of this test that puts `listener` in an epoll set under fd `number` and waits.
    fn watching(listener: &std::net::TcpListener, number: i32) -> nix::unistd::Pid {
        let fd = listener.as_raw_fd();
        // SAFETY: the child makes only system calls and ends in _exit or is killed.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => unsafe {
                let epoll = libc::epoll_create1(0);
                let mut event = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: 0,
                };
                if epoll < 0
                    || libc::dup2(fd, number) != number
                    || libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, number, &mut event) != 0
                {
                    libc::_exit(1);
                }
                loop {
                    libc::pause();
                }
            },
            ForkResult::Parent { child } => child,
        }
    }

    #[test]
    fn a_worker_taken_out_of_the_accept_set_no_longer_waits_on_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = serving::socket_inode(&listener).expect("inode");
        let proc_dir = crate::host::Snapshot::live().proc_dir();
        let stdin = std::fs::read_link("/proc/self/fd/0").ok();
        // Under a number this process uses for something else (its stdin), as a server's dup
        // of the inherited socket is.
        for number in [0, 77] {
            let child = watching(&listener, number);
            let pid = child.as_raw();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !serving::waits_on(&proc_dir, pid, inode) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the child never waits"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let drained = drain(&proc_dir, pid, listener.as_fd(), inode);
            let still = serving::waits_on(&proc_dir, pid, inode);
            let alive = nix::sys::signal::kill(child, None).is_ok();
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(child, None);
            assert_eq!(drained, Ok(1), "under fd {number}");
            assert!(!still, "still in the epoll set, under fd {number}");
            assert!(alive, "the worker itself is left running");
            assert_eq!(
                drain(&proc_dir, pid, listener.as_fd(), inode),
                Ok(0),
                "gone"
            );
        }
        assert_eq!(
            std::fs::read_link("/proc/self/fd/0").ok(),
            stdin,
            "fd 0 is left alone"
        );
    }

    #[test]
    fn an_epoll_fd_at_the_number_the_socket_was_added_under_is_moved_out_of_the_way() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        // SAFETY: epoll_create1, dup and epoll_ctl on descriptors this test owns.
        let epoll =
            owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }.into()).expect("epoll");
        let number = unsafe { libc::dup(listener.as_raw_fd()) };
        assert!(number >= 0);
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        let ok =
            unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, number, &mut event) };
        assert_eq!(ok, 0);
        // The entry outlives the fd it was added under while the socket is open: the epoll fd
        // takes that number (dup2 closes the socket's copy there, at once, so that no other
        // test's thread can be given the number in between).
        let moved = owned(unsafe { libc::dup2(epoll.as_raw_fd(), number) }.into()).expect("dup2");
        drop(epoll);
        assert_eq!(moved.as_raw_fd(), number);
        assert_eq!(remove(&moved, number, listener.as_fd()), Ok(()));
        assert_eq!(
            remove(&moved, number, listener.as_fd()),
            Err(Errno::ENOENT),
            "removed once"
        );
    }
}
