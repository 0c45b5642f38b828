//! Processes as the kernel sees them, from /proc: parents, children, whether a pid still runs,
//! the TCP connections a process holds; and kill(1) to signal them.

use std::collections::HashSet;
use std::fs;
use std::process::Command;

/// (state, parent pid) from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// The living (not zombie) processes whose parent is `pid`, from /proc/*/stat, sorted.
pub fn children(pid: u32) -> Vec<u32> {
    let mut children: Vec<u32> = fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(
            |&child| matches!(stat(child), Some((state, parent)) if parent == pid && state != 'Z'),
        )
        .collect();
    children.sort_unstable();
    children
}

/// Every living process under `pid`, from one reading of /proc (a thousand processes are read
/// once each, not once per parent).
pub fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter_map(|child| match stat(child) {
            Some((state, parent)) if state != 'Z' => Some((child, parent)),
            _ => None,
        })
        .collect();
    let mut all = Vec::new();
    let mut queue = vec![pid];
    while let Some(next) = queue.pop() {
        for (child, _) in parents.iter().filter(|(_, parent)| *parent == next) {
            all.push(*child);
            queue.push(*child);
        }
    }
    all
}

/// Whether `pid` still runs (a zombie has ended; it only waits for its parent).
pub fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z')
}

/// Whether `signal` (its number) was sent to process `pid` and not yet delivered:
/// /proc/PID/status's `ShdPnd` mask. Signals of one kind pending at once count as one.
pub fn signal_pending(pid: u32, signal: i32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("ShdPnd:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// Sends `signal` (a name: TERM, KILL...) to every pid at once, with one kill(1).
pub fn signal(signal: &str, pids: &[u32]) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pids:?} failed");
}

/// The TCP connections `pid` holds in the established state: its socket fds' inodes looked up in
/// /proc/net/tcp and tcp6 (state 01).
pub fn established_connections(pid: u32) -> usize {
    let inodes: HashSet<u64> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| {
            let target = fs::read_link(fd.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|table| {
            fs::read_to_string(table)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            columns.get(3) == Some(&"01")
                && columns
                    .get(9)
                    .and_then(|inode| inode.parse().ok())
                    .is_some_and(|inode| inodes.contains(&inode))
        })
        .count()
}
