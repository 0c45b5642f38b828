//! The state file: what a running `launcher run` measured, for `launcher size` in the same dyno or
//! container (`heroku ps:exec`, `docker exec`). One JSON file per supervisor,
//! `$TMPDIR/launcher/<pid>.json`, replaced whole at each update and removed at exit.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub pid: u32,
    pub mode: String,
    /// `static` or `measured`.
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
    /// Seconds since the Unix epoch.
    pub updated_at: u64,
}

/// Where the state files are: `$TMPDIR/launcher`.
pub fn dir() -> PathBuf {
    std::env::temp_dir().join("launcher")
}

/// Writes `state` to `<dir>/<pid>.json` through a temporary file, so a reader never sees half.
pub fn write(dir: &Path, state: &State) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.json", state.pid));
    let temporary = dir.join(format!(".{}.json.tmp", state.pid));
    let text = serde_json::to_string_pretty(state).map_err(io::Error::other)?;
    std::fs::write(&temporary, text + "\n")?;
    std::fs::rename(&temporary, path)
}

pub fn remove(dir: &Path, pid: u32) {
    let _ = std::fs::remove_file(dir.join(format!("{pid}.json")));
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

/// The states of the supervisors still running, by pid; files left by one that was killed are
/// passed over.
pub fn read_live(dir: &Path) -> Vec<State> {
    let now = unix_now();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut states: Vec<State> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let pid: u32 = path
                .file_name()?
                .to_str()?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            let state: State = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
            let fresh = now.saturating_sub(state.updated_at) <= STALE_AFTER_SECS;
            (state.pid == pid && fresh && alive(pid)).then_some(state)
        })
        .collect();
    states.sort_by_key(|s| s.pid);
    states
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
            updated_at: unix_now(),
        }
    }

    #[test]
    fn live_states_are_read_back_and_dead_ones_passed_over() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let me = std::process::id();
        write(dir.path(), &state(me)).expect("write");
        // No process has pid 2^22 + 1 (above the kernel's pid_max).
        write(dir.path(), &state(4_194_305)).expect("write");
        std::fs::write(dir.path().join("12.json"), "{ half").expect("write");
        assert_eq!(read_live(dir.path()), vec![state(me)]);
        let stale = State {
            updated_at: unix_now() - 61,
            ..state(me)
        };
        write(dir.path(), &stale).expect("write");
        assert!(
            read_live(dir.path()).is_empty(),
            "a file not rewritten for a minute"
        );
        write(dir.path(), &state(me)).expect("write");
        remove(dir.path(), me);
        assert!(read_live(dir.path()).is_empty());
        assert!(read_live(&dir.path().join("missing")).is_empty());
    }
}
