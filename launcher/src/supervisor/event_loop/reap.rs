//! Reaping: every child that ended, workers (their exits to the pool, OOM kills claimed) and
//! orphans adopted as subreaper (one line per turn), and the groups workers left behind.

use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};

use super::report::adopted_exits;
use super::Loop;
use crate::supervisor::kill;

impl Loop {
    /// Reaps every child that ended: workers, and orphans adopted as subreaper, whose exits are
    /// summed up in one line per turn. The OOM kill counter is read once for all the workers
    /// SIGKILLed in the turn, so that a mass kill is attributed to every worker it ended.
    pub(super) fn reap(&mut self, now: Instant) {
        let workers = self.pool.worker_pids();
        let mut ended: Vec<(i32, String, bool)> = Vec::new();
        let mut adopted: Vec<(i32, String)> = Vec::new();
        loop {
            let (pid, status, killed) =
                match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit:{code}"), false),
                    Ok(WaitStatus::Signaled(pid, signal, _)) => (
                        pid,
                        format!("signal:{}", signal as i32),
                        signal == Signal::SIGKILL,
                    ),
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                };
            let pid = pid.as_raw();
            if workers.contains(&pid) {
                ended.push((pid, status, killed));
            } else {
                adopted.push((pid, status));
            }
        }
        let killed: Vec<i32> = ended.iter().filter(|e| e.2).map(|e| e.0).collect();
        let counted = match killed.is_empty() {
            true => None,
            false => self.reader.oom_kills(),
        };
        let oom_killed = self.control.claim_oom_kills(counted, &killed, now);
        for (pid, status, _) in ended {
            let cause = oom_killed.contains(&pid).then_some("oom_kill");
            let group_alive = kill::group_alive(pid);
            let actions = self.pool.exited(pid, &status, cause, group_alive, now);
            self.carry_out(actions);
        }
        if !adopted.is_empty() {
            adopted_exits(&adopted).emit();
        }
    }

    /// Groups that workers left behind: done with once no process is left in them.
    pub(super) fn look_at_groups(&mut self) {
        for pgid in self.pool.lingering_groups() {
            if !kill::group_alive(pgid) {
                self.pool.group_gone(pgid);
            }
        }
    }
}

/// Whether any child (worker or adopted orphan) is left to wait for.
pub(super) fn has_children() -> bool {
    !matches!(
        nix::sys::wait::waitid(
            nix::sys::wait::Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
        ),
        Err(Errno::ECHILD)
    )
}
