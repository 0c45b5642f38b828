//! Process trees, read from /proc (or a fake tree): the launcher's descendants (gunicorn's workers
//! are the launcher's grandchildren), a process's children, and resident memory.

use std::collections::HashMap;
use std::path::Path;

use crate::files::{read_bytes, read_text, MAX_BYTES};

/// Every process id in `proc_dir`.
pub fn pids(proc_dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(proc_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// pid -> parent pid for every process in `proc_dir`.
pub fn parents(proc_dir: &Path) -> HashMap<i32, i32> {
    pids(proc_dir)
        .into_iter()
        .filter_map(|pid| {
            let stat = read_text(&proc_dir.join(pid.to_string()).join("stat"), MAX_BYTES).ok()?;
            Some((pid, parent_in_stat(&stat)?))
        })
        .collect()
}

/// The 4th field of /proc/PID/stat; the command name before it may hold spaces and parentheses.
fn parent_in_stat(stat: &str) -> Option<i32> {
    parse_stat(stat).map(|s| s.parent)
}

/// A process as /proc/PID/stat shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// The command name (`comm`), at most 15 bytes.
    pub name: String,
    /// `R`, `S`, `D` (uninterruptible: not even SIGKILL ends it before its system call does),
    /// `Z` (ended, waiting to be reaped), `T`...
    pub state: char,
    pub parent: i32,
    /// The process group.
    pub group: i32,
}

/// `PID (name) STATE PPID ...`; the name may hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<Stat> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    Some(Stat {
        pid: stat.get(..open)?.trim().parse().ok()?,
        name: stat.get(open + 1..close)?.to_owned(),
        state: rest.next()?.chars().next()?,
        parent: rest.next()?.parse().ok()?,
        group: rest.next()?.parse().ok()?,
    })
}

/// When the process started, in clock ticks since boot (field 22 of /proc/PID/stat): with the pid,
/// it names one process, also after the pid is reused.
pub fn start_time(proc_dir: &Path, pid: i32) -> Option<u64> {
    let text = read_text(&proc_dir.join(pid.to_string()).join("stat"), MAX_BYTES).ok()?;
    let rest = text.get(text.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn stat(proc_dir: &Path, pid: i32) -> Option<Stat> {
    let text = read_text(&proc_dir.join(pid.to_string()).join("stat"), MAX_BYTES).ok()?;
    parse_stat(&text)
}

/// A process's arguments from /proc/PID/cmdline (empty once it has exited).
pub fn cmdline(proc_dir: &Path, pid: i32) -> Vec<String> {
    let path = proc_dir.join(pid.to_string()).join("cmdline");
    let bytes = read_bytes(&path, MAX_BYTES).unwrap_or_default();
    let args = bytes.split(|b| *b == 0).filter(|a| !a.is_empty());
    args.map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Whether `pid` has ended: a zombie (or on its way out of being one) waiting for its parent to
/// reap it, or gone. A server's worker that the kernel killed stays a zombie until the server
/// reaps it, which a server short of memory may take seconds to do.
pub fn has_ended(proc_dir: &Path, pid: i32) -> bool {
    stat(proc_dir, pid).is_none_or(|s| matches!(s.state, 'Z' | 'X'))
}

/// Every process under `root` that has not ended (no zombies), following the children files.
pub fn living_under(proc_dir: &Path, root: i32) -> Vec<Stat> {
    let tree = tree(proc_dir, root).into_iter().skip(1);
    let stats = tree.filter_map(|pid| stat(proc_dir, pid));
    stats.filter(|s| s.state != 'Z').collect()
}

/// Every process under `root`, children before grandchildren.
pub fn descendants(parents: &HashMap<i32, i32>, root: i32) -> Vec<i32> {
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        let mut children: Vec<i32> = parents
            .iter()
            .filter(|(_, ppid)| **ppid == parent)
            .map(|(pid, _)| *pid)
            .collect();
        children.sort_unstable();
        found.extend(children);
        next += 1;
    }
    found.remove(0);
    found
}

/// `pid`'s children, from `/proc/PID/task/*/children` (one small file per thread, where the kernel
/// has it), else from a scan of every process.
pub fn children(proc_dir: &Path, pid: i32) -> Vec<i32> {
    let tasks = proc_dir.join(pid.to_string()).join("task");
    let listed: Option<Vec<i32>> = std::fs::read_dir(&tasks).ok().and_then(|entries| {
        let mut found = Vec::new();
        for entry in entries {
            let text = read_text(&entry.ok()?.path().join("children"), MAX_BYTES).ok()?;
            found.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
        Some(found)
    });
    listed.unwrap_or_else(|| {
        let parents = parents(proc_dir);
        let children = parents.into_iter().filter(|(_, parent)| *parent == pid);
        children.map(|(child, _)| child).collect()
    })
}

/// `pid` and every process under it, following the children files: no scan of all of /proc.
pub fn tree(proc_dir: &Path, pid: i32) -> Vec<i32> {
    let mut found = vec![pid];
    let mut next = 0;
    // Bounded, in case of a pid reused into a loop while reading.
    while next < found.len() && found.len() < 65_536 {
        let more: Vec<i32> = children(proc_dir, found[next])
            .into_iter()
            .filter(|child| !found.contains(child))
            .collect();
        found.extend(more);
        next += 1;
    }
    found
}

/// The first of `candidates` found walking up from `pid` (itself included).
pub fn ancestor_in(parents: &HashMap<i32, i32>, pid: i32, candidates: &[i32]) -> Option<i32> {
    let mut current = pid;
    for _ in 0..64 {
        if candidates.contains(&current) {
            return Some(current);
        }
        current = *parents.get(&current)?;
    }
    None
}

/// The CPU time of a process in clock ticks: its own (user and system) and that of the children
/// it has waited for, fields 14 to 17 of /proc/PID/stat.
pub fn cpu_ticks(proc_dir: &Path, pid: i32) -> Option<u64> {
    let text = read_text(&proc_dir.join(pid.to_string()).join("stat"), MAX_BYTES).ok()?;
    stat_cpu_ticks(&text, 4)
}

/// The CPU time a process spent itself, its threads' (fields 14 and 15), without its children's.
pub fn own_cpu_ticks(proc_dir: &Path, pid: i32) -> Option<u64> {
    let text = read_text(&proc_dir.join(pid.to_string()).join("stat"), MAX_BYTES).ok()?;
    stat_cpu_ticks(&text, 2)
}

/// The sum of `count` CPU time fields from utime (field 14) on.
fn stat_cpu_ticks(stat: &str, count: usize) -> Option<u64> {
    // After the name: state is field 3, utime field 14.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().skip(11).take(count).collect();
    if fields.len() < count {
        return None;
    }
    fields.iter().map(|f| f.parse::<u64>().ok()).sum()
}

/// Whether `signal` was sent to `pid` and not yet delivered: /proc/PID/status's `ShdPnd` (sent
/// to the process) or `SigPnd` (to its main thread). A process that has not run since it was
/// sent one (stopped, frozen, starved of CPU) still has it there; a second would merge into it.
pub fn signal_pending(proc_dir: &Path, pid: i32, signal: i32) -> bool {
    let path = proc_dir.join(pid.to_string()).join("status");
    let Ok(status) = read_text(&path, MAX_BYTES) else {
        return false;
    };
    let Some(bit) = u32::try_from(signal - 1)
        .ok()
        .and_then(|n| 1u64.checked_shl(n))
    else {
        return false;
    };
    let masks = status.lines().filter_map(|line| {
        let mask = line
            .strip_prefix("ShdPnd:")
            .or(line.strip_prefix("SigPnd:"))?;
        u64::from_str_radix(mask.trim(), 16).ok()
    });
    masks.fold(0, |all, mask| all | mask) & bit != 0
}

/// Clock ticks per second, the unit of /proc/PID/stat's CPU times.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Resident memory in bytes, from the second field of /proc/PID/statm (in pages).
pub fn rss_bytes(proc_dir: &Path, pid: i32) -> u64 {
    let statm = read_text(&proc_dir.join(pid.to_string()).join("statm"), MAX_BYTES);
    let pages: u64 = statm
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        assert_eq!(parent_in_stat("41 (gunicorn) S 40 41 1 0"), Some(40));
        assert_eq!(parent_in_stat("42 (a) b (c) R 7 1 1 0"), Some(7));
        assert_eq!(parent_in_stat("garbage"), None);
        let stat = parse_stat("43 (sh -c (x)) D 7 41 1 0").expect("parsed");
        assert_eq!(
            (stat.pid, stat.name.as_str(), stat.state),
            (43, "sh -c (x)", 'D')
        );
        assert_eq!((stat.parent, stat.group), (7, 41));
    }

    #[test]
    fn cpu_ticks_are_own_and_reaped_childrens() {
        let stat = "7 (a (b) c) S 1 7 7 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0";
        assert_eq!(stat_cpu_ticks(stat, 4), Some(110));
        assert_eq!(stat_cpu_ticks(stat, 2), Some(33), "its own alone");
        assert_eq!(stat_cpu_ticks("7 (short) S 1 7", 4), None);
        let me = std::process::id() as i32;
        assert!(cpu_ticks(Path::new("/proc"), me).is_some());
        let started = start_time(Path::new("/proc"), me).expect("start time");
        assert!(started > 0 && start_time(Path::new("/proc"), 1) <= Some(started));
    }

    #[test]
    fn a_signal_is_pending_where_either_mask_has_its_bit() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let status = |pid: i32, shared: &str, own: &str| {
            let path = dir.path().join(pid.to_string());
            std::fs::create_dir(&path).expect("pid dir");
            let text = format!("Name:\tgunicorn\nSigPnd:\t{own}\nShdPnd:\t{shared}\n");
            std::fs::write(path.join("status"), text).expect("status");
        };
        // SIGTTIN is 21: bit 20, 0x100000. SIGTTOU 22.
        status(10, "0000000000100000", "0000000000000000");
        status(11, "0000000000000000", "0000000000100000");
        status(12, "0000000000200000", "0000000000000000");
        let pending = |pid| signal_pending(dir.path(), pid, 21);
        assert_eq!(
            [10, 11, 12, 13].map(pending),
            [true, true, false, false],
            "the process's, its thread's, another signal's, a process that is gone"
        );
    }

    #[test]
    fn a_zombie_or_a_vanished_process_has_ended() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        for (pid, state) in [(10, 'S'), (11, 'Z'), (12, 'D')] {
            let proc = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&proc).expect("mkdir");
            let stat = format!("{pid} (gunicorn) {state} 9 9 9 0");
            std::fs::write(proc.join("stat"), stat).expect("write");
        }
        assert!(!has_ended(dir.path(), 10));
        assert!(has_ended(dir.path(), 11));
        assert!(!has_ended(dir.path(), 12), "uninterruptible, not ended");
        assert!(has_ended(dir.path(), 13), "gone");
    }

    #[test]
    fn a_tree_is_walked() {
        let parents = HashMap::from([(10, 1), (11, 10), (12, 10), (13, 11), (20, 1)]);
        assert_eq!(descendants(&parents, 10), vec![11, 12, 13]);
        assert_eq!(ancestor_in(&parents, 13, &[11, 12]), Some(11));
        assert_eq!(ancestor_in(&parents, 20, &[11, 12]), None);
    }

    #[test]
    fn a_tree_is_followed_through_the_children_files() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        for (pid, children) in [(10, "11 12 "), (11, "13"), (12, ""), (13, "")] {
            let task = dir.path().join(format!("{pid}/task/{pid}"));
            std::fs::create_dir_all(&task).expect("mkdir");
            std::fs::write(task.join("children"), children).expect("write");
        }
        assert_eq!(tree(dir.path(), 10), vec![10, 11, 12, 13]);
        assert_eq!(tree(dir.path(), 12), vec![12]);
    }

    #[test]
    fn this_process_is_found_in_proc() {
        let me = std::process::id() as i32;
        let parents = parents(Path::new("/proc"));
        assert_eq!(
            parents.get(&me).copied(),
            Some(nix::unistd::getppid().as_raw())
        );
        assert!(rss_bytes(Path::new("/proc"), me) > 0);
        let parent = nix::unistd::getppid().as_raw();
        assert!(children(Path::new("/proc"), parent).contains(&me));
        assert!(children(Path::new("/nonexistent"), parent).is_empty());
    }
}
