//! The state file: what a running `launcher run` measured, for `launcher size` in the same dyno or
//! container (`heroku ps:exec`, `docker exec`). One JSON file per supervisor,
//! `<place>/<pid>.<pid namespace>.json` (see `place.rs`; two containers' PID 1 may share a
//! TMPDIR), created new (never through a name an attacker could have planted), renamed into
//! place at each update, and removed at exit. `launcher size` reads only regular files of
//! bounded size, of supervisors of the same user in the same cgroup and pid namespace.

mod place;

use crate::host::Snapshot;

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use place::{check, place, prepare};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub pid: u32,
    pub mode: String,
    /// `static`, `measured` or `adaptive`.
    pub sizing: String,
    pub memory_guard: bool,
    /// Workers running now (in delegate mode, the server's own).
    pub workers: usize,
    /// Where the dyno's usage is read.
    pub meter: String,
    pub memory_quota_mb: f64,
    pub soft_limit_mb: f64,
    pub memory_total_mb: Option<f64>,
    /// Each worker's unique memory, largest first.
    pub worker_uss_mb: Vec<f64>,
    /// Measured sizing's last measurement: how many workers fit, what one costs, the rest.
    pub fit: Option<f64>,
    pub worker_cost_mb: Option<f64>,
    pub base_mb: Option<f64>,
    pub oom_kills: u64,
    pub memory_recycles: u64,
    /// Workers holding a connection (servers that accept only when free).
    #[serde(default)]
    pub workers_busy: Option<u32>,
    /// The accept queue at the last read, its peak over the last state interval, the backlog.
    #[serde(default)]
    pub listen_queue: Option<u32>,
    #[serde(default)]
    pub listen_queue_max: Option<u32>,
    #[serde(default)]
    pub listen_backlog: Option<u32>,
    /// The dyno's CPU use over the last state interval, as a share of `cpu_capacity` CPUs.
    #[serde(default)]
    pub cpu_busy: Option<f64>,
    #[serde(default)]
    pub cpu_capacity: Option<f64>,
    /// Seconds since the Unix epoch.
    pub updated_at: u64,
    /// Where the supervisor runs: `launcher size` shows only its own container's.
    #[serde(flatten)]
    pub scope: Scope,
}

/// A process's pid namespace (`pid:[4026531836]`) and cgroup (/proc/self/cgroup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub pid_namespace: String,
    pub cgroup: String,
}

impl Scope {
    /// This process's, as `snapshot` shows it.
    pub fn own(snapshot: &Snapshot) -> Scope {
        let cgroup = snapshot.read(&Snapshot::proc_file("self/cgroup"));
        Scope {
            pid_namespace: own_pid_namespace(snapshot),
            cgroup: cgroup.map(|t| t.trim().to_owned()).unwrap_or_default(),
        }
    }
}

/// This process's pid namespace as its link reads (`pid:[4026531836]`), or empty.
fn own_pid_namespace(snapshot: &Snapshot) -> String {
    let link = snapshot.path(&Snapshot::proc_file("self/ns/pid"));
    let namespace = std::fs::read_link(link).ok();
    namespace.map_or_else(String::new, |p| p.display().to_string())
}

/// The name of the state file of the supervisor `pid` in the pid namespace `pid_namespace`:
/// `<pid>.<the namespace's inode>.json`. A pid alone names one process per namespace only, and
/// two containers' PID 1 sharing a TMPDIR would write one file in turn.
fn file_name(pid: u32, pid_namespace: &str) -> String {
    let inode = pid_namespace
        .strip_prefix("pid:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("0");
    format!("{pid}.{inode}.json")
}

/// The largest state file read.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// Writes `state` to `<dir>/<pid>.<pid namespace>.json` through a file created new next to it
/// (exclusive, not following a symlink), renamed into place, so a reader never sees half and a
/// name planted beforehand is never written through.
pub fn write(dir: &Path, state: &State) -> io::Result<()> {
    let name = file_name(state.pid, &state.scope.pid_namespace);
    let path = dir.join(&name);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temporary = dir.join(format!(".{name}.{nanos}.tmp"));
    let text = serde_json::to_string_pretty(state).map_err(io::Error::other)? + "\n";
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temporary)?;
    let written = file.write_all(text.as_bytes());
    drop(file);
    if let Err(err) = written.and_then(|()| std::fs::rename(&temporary, &path)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(err);
    }
    Ok(())
}

/// Removes what supervisors that were killed left in `dir` (checked by `prepare`): state files
/// and half-written ones not written for `STALE_AFTER_SECS`. A running supervisor rewrites its
/// file every 10 s, whatever its container, so an old file is nobody's.
pub fn sweep(dir: &Path, now: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name
            .to_str()
            .is_some_and(|n| n.ends_with(".json") || n.ends_with(".tmp"));
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let written = meta.modified().ok().and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs())
        });
        let old = written.is_some_and(|at| now.saturating_sub(at) > STALE_AFTER_SECS);
        if ours && old && meta.file_type().is_file() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes the state file of this process's supervisor `pid` (its own, in its pid namespace).
pub fn remove(dir: &Path, pid: u32) {
    let _ = std::fs::remove_file(dir.join(file_name(pid, &own_pid_namespace(&Snapshot::live()))));
}

/// A state file not rewritten for this long is taken as left behind (the launcher was killed and
/// its pid reused); it is rewritten every 10 s.
const STALE_AFTER_SECS: u64 = 60;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The states of the supervisors still running in `scope`, by pid; files left by one that was
/// killed, and anything that is not a regular file of bounded size, are passed over. The
/// directory is checked first (`place::check`); why it was not read is the `Err`.
pub fn read_live(dir: &Path, uid: u32, scope: &Scope) -> Result<Vec<State>, String> {
    let now = unix_now();
    if !dir.exists() {
        return Ok(Vec::new());
    }
    check(dir, uid)?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut states: Vec<State> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?;
            if !name.ends_with(".json") {
                return None;
            }
            let text = crate::files::read_own_text(&path, MAX_STATE_BYTES).ok()?;
            let state: State = serde_json::from_str(&text).ok()?;
            let named = name == file_name(state.pid, &state.scope.pid_namespace);
            let fresh = now.saturating_sub(state.updated_at) <= STALE_AFTER_SECS;
            let here = state.scope == *scope;
            (named && fresh && here && alive(state.pid)).then_some(state)
        })
        .collect();
    states.sort_by_key(|s| s.pid);
    Ok(states)
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    let result = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None);
    matches!(result, Ok(()) | Err(nix::errno::Errno::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pid: u32) -> State {
        State {
            pid,
            mode: "fanout".to_owned(),
            sizing: "measured".to_owned(),
            memory_guard: true,
            workers: 3,
            meter: "cgroup v1 /sys/fs/cgroup/memory/dyno/memory.stat".to_owned(),
            memory_quota_mb: 512.0,
            soft_limit_mb: 435.2,
            memory_total_mb: Some(301.5),
            worker_uss_mb: vec![90.1, 88.0, 87.5],
            fit: Some(3.71),
            worker_cost_mb: Some(90.1),
            base_mb: Some(35.0),
            oom_kills: 0,
            memory_recycles: 1,
            workers_busy: Some(2),
            listen_queue: Some(0),
            listen_queue_max: Some(7),
            listen_backlog: Some(2048),
            cpu_busy: Some(0.31),
            cpu_capacity: Some(2.0),
            updated_at: unix_now(),
            scope: Scope::own(&Snapshot::live()),
        }
    }

    fn read(dir: &Path) -> Vec<State> {
        let me = nix::unistd::geteuid().as_raw();
        read_live(dir, me, &Scope::own(&Snapshot::live())).expect("read")
    }

    #[test]
    fn live_states_are_read_back_and_dead_ones_passed_over() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let me = std::process::id();
        write(dir.path(), &state(me)).expect("write");
        let elsewhere = State {
            scope: Scope {
                pid_namespace: "pid:[1]".to_owned(),
                ..Scope::own(&Snapshot::live())
            },
            ..state(me)
        };
        assert_eq!(read(dir.path()), vec![state(me)]);
        write(dir.path(), &elsewhere).expect("write");
        assert_eq!(read(dir.path()), vec![state(me)], "not another namespace's");
        remove(dir.path(), me);
        assert!(read(dir.path()).is_empty(), "another pid namespace's alone");
        write(dir.path(), &state(me)).expect("write");
        // No process has pid 2^22 + 1 (above the kernel's pid_max).
        write(dir.path(), &state(4_194_305)).expect("write");
        std::fs::write(dir.path().join("12.json"), "{ half").expect("write");
        assert_eq!(read(dir.path()), vec![state(me)]);
        let stale = State {
            updated_at: unix_now() - 61,
            ..state(me)
        };
        write(dir.path(), &stale).expect("write");
        assert!(
            read(dir.path()).is_empty(),
            "a file not rewritten for a minute"
        );
        write(dir.path(), &state(me)).expect("write");
        remove(dir.path(), me);
        assert!(read(dir.path()).is_empty());
        assert!(read(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn supervisors_with_one_pid_in_two_pid_namespaces_keep_a_file_each() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let me = std::process::id();
        let elsewhere = State {
            workers: 7,
            scope: Scope {
                pid_namespace: "pid:[1]".to_owned(),
                ..Scope::own(&Snapshot::live())
            },
            ..state(me)
        };
        write(dir.path(), &state(me)).expect("write");
        write(dir.path(), &elsewhere).expect("write");
        assert_eq!(
            read(dir.path()),
            vec![state(me)],
            "ours, not the last written"
        );
        let own = read_live(
            dir.path(),
            nix::unistd::geteuid().as_raw(),
            &elsewhere.scope,
        );
        assert_eq!(
            own.expect("read"),
            vec![elsewhere.clone()],
            "theirs, to them"
        );
        // A file renamed to the other namespace's name is not believed.
        let ours = dir
            .path()
            .join(file_name(me, &Scope::own(&Snapshot::live()).pid_namespace));
        std::fs::rename(&ours, dir.path().join(format!("{me}.json"))).expect("rename");
        assert!(read(dir.path()).is_empty());
        remove(dir.path(), me);
        assert!(
            dir.path().join(file_name(me, "pid:[1]")).exists(),
            "theirs stays"
        );
        assert_eq!(file_name(1, "pid:[4026531836]"), "1.4026531836.json");
        assert_eq!(file_name(1, "garbage/../x"), "1.0.json");
    }

    #[test]
    fn the_files_of_killed_supervisors_are_swept_and_nothing_else() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let me = std::process::id();
        write(dir.path(), &state(me)).expect("write");
        std::fs::write(dir.path().join(".77.123.tmp"), "{ half").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "mine").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("9.json")).expect("symlink");
        let names = || {
            let entries = std::fs::read_dir(dir.path()).expect("list").flatten();
            let mut names: Vec<String> = entries
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        sweep(dir.path(), unix_now());
        assert_eq!(names().len(), 4, "all fresh: {:?}", names());
        // A minute and more later, with nobody writing: the state files go, a symlink and
        // what is not the launcher's stay.
        sweep(dir.path(), unix_now() + STALE_AFTER_SECS + 5);
        assert_eq!(names(), ["9.json", "notes.txt"]);
    }

    #[test]
    fn a_planted_name_is_never_written_through_nor_a_fifo_read() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let me = std::process::id();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious").expect("write");
        let name = file_name(me, &Scope::own(&Snapshot::live()).pid_namespace);
        std::os::unix::fs::symlink(&target, dir.path().join(name)).expect("ln");
        assert!(read(dir.path()).is_empty(), "a symlink is not read");
        write(dir.path(), &state(me)).expect("write");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "precious");
        assert_eq!(read(dir.path()), vec![state(me)], "the link was replaced");
        let fifo = dir
            .path()
            .join(file_name(4, &Scope::own(&Snapshot::live()).pid_namespace));
        let c_path = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("cstring");
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read(dir.path()).len(),
            1,
            "the FIFO is passed over, not waited on"
        );
    }
}
