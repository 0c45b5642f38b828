//! Whether a worker is waiting on the launcher's listening socket: the sign, for a server that
//! does not send `READY=1`, that it serves. Seen from /proc, for the worker and every process
//! under it: the socket in an epoll set (`/proc/PID/fdinfo` of an eventpoll fd: asyncio's
//! uvicorn and hypercorn, Node's libuv, Go), or a thread blocked in `accept`/`accept4` on it
//! (`/proc/PID/task/TID/syscall`). A server that waits in `select` or `poll` cannot be seen.

use std::os::fd::AsFd;
use std::path::Path;

use crate::files::{read_text, MAX_BYTES};
use crate::procs;

/// The system call numbers of accept and accept4.
#[cfg(target_arch = "x86_64")]
const ACCEPT_SYSCALLS: [u64; 2] = [43, 288];
#[cfg(target_arch = "aarch64")]
const ACCEPT_SYSCALLS: [u64; 2] = [202, 242];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ACCEPT_SYSCALLS: [u64; 0] = [];

/// The inode of the listening socket, as /proc names it (`socket:[INODE]`).
pub fn socket_inode(socket: impl AsFd) -> Option<u64> {
    let stat = nix::sys::stat::fstat(socket.as_fd()).ok()?;
    Some(stat.st_ino)
}

/// Whether `pid` or a process under it waits on the socket whose inode is `inode`.
pub fn waits_on(proc_dir: &Path, pid: i32, inode: u64) -> bool {
    procs::tree(proc_dir, pid)
        .into_iter()
        .any(|process| process_waits_on(&proc_dir.join(process.to_string()), inode))
}

/// At most this many of a process's fds are looked at, the lowest first (the shared socket is
/// fd 3, and a server makes its epoll set as it starts): a worker that opens 19,000 files while
/// it boots cannot make each look cost the launcher a core.
pub const MAX_FDS_LOOKED_AT: usize = 1024;

fn process_waits_on(dir: &Path, inode: u64) -> bool {
    let found = look(dir, inode, true);
    !found.epolls.is_empty()
        || (!found.holding.is_empty() && blocked_in_accept(dir, &found.holding))
}

/// The epoll sets of the process at `dir` (`/proc/PID`) that watch the socket whose inode is
/// `inode`: (the set's fd, the fd number the socket was added under), what `drain` removes.
pub fn epoll_sets(dir: &Path, inode: u64) -> Vec<(i32, i32)> {
    look(dir, inode, false).epolls
}

/// What a process holds of the socket: the fds that are it, and the epoll sets that watch it.
struct Found {
    holding: Vec<u64>,
    epolls: Vec<(i32, i32)>,
}

/// Looks through the process's fds for the socket (`first`: only until one epoll set watches it).
fn look(dir: &Path, inode: u64, first: bool) -> Found {
    let mut found = Found {
        holding: Vec::new(),
        epolls: Vec::new(),
    };
    let Ok(entries) = std::fs::read_dir(dir.join("fd")) else {
        return found;
    };
    let mut fds: Vec<u64> = entries
        .flatten()
        .filter_map(|fd| fd.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds.truncate(MAX_FDS_LOOKED_AT);
    let socket = format!("socket:[{inode}]");
    for number in fds {
        let Ok(target) = std::fs::read_link(dir.join("fd").join(number.to_string())) else {
            continue;
        };
        if target.as_os_str() == socket.as_str() {
            found.holding.push(number);
        } else if target.as_os_str() == "anon_inode:[eventpoll]" {
            let info = read_text(&dir.join("fdinfo").join(number.to_string()), MAX_BYTES);
            let watched = info.map_or(Vec::new(), |text| epoll_targets(&text));
            let added = watched.iter().filter(|(_, ino)| *ino == inode);
            let epoll = i32::try_from(number).unwrap_or(-1);
            found
                .epolls
                .extend(added.filter_map(|(tfd, _)| Some((epoll, i32::try_from(*tfd).ok()?))));
            if first && !found.epolls.is_empty() {
                break;
            }
        }
    }
    found
}

/// Whether a thread of the process is in accept/accept4 on one of `fds`.
fn blocked_in_accept(dir: &Path, fds: &[u64]) -> bool {
    let Ok(tasks) = std::fs::read_dir(dir.join("task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        let text = read_text(&task.path().join("syscall"), MAX_BYTES).unwrap_or_default();
        accept_on(&text).is_some_and(|fd| fds.contains(&fd))
    })
}

/// What an epoll fd watches, from its fdinfo: `tfd: 7 events: 19 data: 7 pos:0 ino:1a2b sdev:8`
/// per watched file: (the fd number it was added under, its inode, in hex there).
pub fn epoll_targets(fdinfo: &str) -> Vec<(u64, u64)> {
    fdinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            if fields.next()? != "tfd:" {
                return None;
            }
            let tfd = fields.next()?.parse().ok()?;
            let ino = fields.find_map(|f| f.strip_prefix("ino:"))?;
            Some((tfd, u64::from_str_radix(ino, 16).ok()?))
        })
        .collect()
}

/// The fd a thread is accepting on, from its `syscall` file (`NR ARG0 ARG1 ...`, the arguments
/// in hex); None when it is in another call, or running.
pub fn accept_on(syscall: &str) -> Option<u64> {
    let mut fields = syscall.split_whitespace();
    let number: u64 = fields.next()?.parse().ok()?;
    if !ACCEPT_SYSCALLS.contains(&number) {
        return None;
    }
    let fd = fields.next()?.strip_prefix("0x")?;
    u64::from_str_radix(fd, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn epoll_fdinfo_lists_the_watched_inodes() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\n\
                      tfd:        3 events:       19 data:                3  pos:0 ino:6c5e sdev:9\n\
                      tfd:        9 events:       19 data:                9  pos:0 ino:1f sdev:9\n";
        assert_eq!(epoll_targets(fdinfo), vec![(3, 0x6c5e), (9, 0x1f)]);
        assert!(epoll_targets("pos:\t0\nflags:\t02\n").is_empty());
    }

    #[test]
    fn a_thread_in_accept_names_its_fd() {
        let accept = format!(
            "{} 0x3 0x7ffd8 0x7ffd4 0x80800 0x0 0x0 0x7ffd 0x7f12",
            ACCEPT_SYSCALLS[1]
        );
        assert_eq!(accept_on(&accept), Some(3));
        assert_eq!(
            accept_on("7 0x3 0x1 0x7d0 0x0 0x0 0x0 0x7ffd 0x7f12"),
            None,
            "poll"
        );
        assert_eq!(accept_on("running"), None);
        assert_eq!(accept_on(""), None);
    }

    #[test]
    fn this_process_waiting_on_a_socket_of_its_own_is_seen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = socket_inode(&listener).expect("inode");
        let me = std::process::id() as i32;
        let proc_dir = &crate::host::Snapshot::live().proc_dir();
        assert!(!waits_on(proc_dir, me, inode), "not waiting yet");
        // SAFETY: epoll_create1 and epoll_ctl on descriptors this test owns; closed below.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epoll >= 0);
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        let added = unsafe {
            libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, listener.as_raw_fd(), &mut event)
        };
        assert_eq!(added, 0);
        assert!(
            waits_on(proc_dir, me, inode),
            "the socket is in an epoll set"
        );
        unsafe { libc::close(epoll) };
    }
}
