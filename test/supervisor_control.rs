//! Black-box tests that `launcher run` controls every process it starts and that nothing a worker
//! or a reader of its output does can stall its loop: a shell that does not `exec` its server, a
//! worker that ignores TERM while it forks and leaves a daemon behind, a process stuck in
//! uninterruptible sleep (a frozen cgroup), a stdout nobody reads, a thousand busy workers at
//! once, a worker flooding the notify socket. Bounds are correctness bounds (the deadline plus a
//! few seconds), not performance targets.
//!
//! The tests of this file run one at a time (`SERIAL`): some of them load both CPUs on purpose.

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "supervisor_control/floods.rs"]
mod floods;
#[path = "supervisor_control/stdout.rs"]
mod stdout;
mod support;
use support::harness::{command, launcher, secs, Run, BOOT, LAUNCHER, SECOND, SYSTEM_PATH};
use support::http::{get_json, json_pid, Conn};
use support::procs::{alive, descendants, signal, signal_pending};
use support::{fixture, free_port, needs_machine, venv, MemoryCgroup};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The command name of a process (`uvicorn`, `bash`), empty once it has ended.
fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The launcher's uvicorn processes, however deep below it.
fn servers(run: &Run) -> Vec<u32> {
    let mut found: Vec<u32> = descendants(run.pid())
        .into_iter()
        .filter(|pid| comm(*pid) == "uvicorn" && alive(*pid))
        .collect();
    found.sort_unstable();
    found
}

fn wait_servers(run: &Run, count: usize, what: &str) -> Vec<u32> {
    run.wait(&format!("{count} uvicorn servers {what}"), secs(15), || {
        let found = servers(run);
        (found.len() == count).then_some(found)
    })
}

/// CPU time (user + system) a process has used, from /proc/PID/stat, at 100 ticks a second.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect(")") + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

#[test]
fn a_shell_that_does_not_exec_is_stopped_whole_by_restarts_scale_down_and_recycles() {
    let _serial = serial();
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port();
        let script = "uvicorn app:app --fd 3 --no-access-log; echo shell done";
        let mut run = Run::spawn(launcher(
            &venv,
            "asgi",
            &[
                ("PORT", &port.to_string()),
                ("WEB_CONCURRENCY", "2"),
                ("LAUNCHER_GRACEFUL_TIMEOUT", "10"),
                ("LAUNCHER_WORKER_MEMORY_MAX", "90"),
                ("LAUNCHER_SAMPLE_INTERVAL", "0"),
            ],
            &["run", "--", "bash", "-c", script],
        ));
        run.wait_ready(2);
        wait_servers(&run, 2, "at start");
        let hint = run.wait_event("hint", BOOT, |_| true);
        assert!(hint.get("message").contains("exec"), "{}", hint.line);

        for round in 1..=3 {
            signal("HUP", &[run.pid()]);
            run.wait_events("restart_done", round, secs(30), |_| true);
            let now = wait_servers(&run, 2, &format!("after rolling restart {round}"));
            for _ in 0..6 {
                let pid = json_pid(&get_json(port, "/"));
                assert!(
                    now.contains(&pid),
                    "answered by {pid}, not one of {now:?}\n{}",
                    run.log()
                );
            }
        }

        signal("TTOU", &[run.pid()]);
        run.wait_event("worker_stop", secs(5), |e| e.get("reason") == "scale_down");
        let one = wait_servers(&run, 1, "after TTOU");

        // 2 MB a call, on one connection: the one server left crosses the 90 MB cap.
        let mut conn = Conn::open(port, secs(10))?;
        let recycle = run.wait("a memory recycle", secs(30), || {
            let _ = conn.get("/leak");
            run.events("memory_recycle").into_iter().next()
        });
        assert_eq!(recycle.get("reason"), "worker_cap", "{}", recycle.line);
        run.wait("the leaking server to end", secs(15), || {
            (!alive(one[0])).then_some(())
        });
        wait_servers(&run, 1, "after the recycle");

        // The group gets the TERM: the server stops at once, no SIGKILL at the deadline.
        let term = Instant::now();
        signal("TERM", &[run.pid()]);
        let status = run.wait_exit(secs(10));
        assert_eq!(status.code(), Some(0), "\n{}", run.log());
        assert!(
            term.elapsed() < secs(8),
            "took {:?}\n{}",
            term.elapsed(),
            run.log()
        );
        assert!(run.events("shutdown_timeout").is_empty(), "\n{}", run.log());
        Ok(())
    });
}

#[test]
fn shutdown_ends_a_fork_loop_and_a_setsid_daemon_within_the_bound() {
    let _serial = serial();
    needs_machine(|| {
        let cgroup = MemoryCgroup::create(&["stubborn"], 2 << 30)?;
        let script = fixture("hostile").join("stubborn.sh");
        let mut run = Run::spawn(cgroup.wrap(&command(
            None,
            "hostile",
            &[
                ("WEB_CONCURRENCY", "2"),
                ("LAUNCHER_GRACEFUL_TIMEOUT", "1"),
                ("LAUNCHER_SAMPLE_INTERVAL", "0"),
            ],
            LAUNCHER,
            &["run", "--", "sh", script.to_str().expect("utf-8")],
        )));
        run.wait_ready(2);
        run.wait("the daemons and the forked sleeps", secs(10), || {
            (cgroup.pids().len() > 12).then_some(())
        });
        let term = Instant::now();
        signal("TERM", &[run.pid()]);
        let status = run.wait_exit(secs(1 + 5));
        assert_eq!(status.code(), Some(0), "\n{}", run.log());
        let killed = run.wait_event("shutdown_timeout", SECOND, |_| true);
        assert!(killed.num::<usize>("killed") > 4, "{}", killed.line);
        assert!(term.elapsed() < secs(6), "{:?}", term.elapsed());
        let left = cgroup.pids();
        assert!(left.is_empty(), "left behind: {left:?}\n{}", run.log());
        Ok(())
    });
}

/// A cgroup v1 freezer cgroup: its processes are frozen in uninterruptible sleep (state D) and
/// cannot die, not even of SIGKILL, until it is thawed. Thawed and removed on drop.
struct Freezer {
    dir: std::path::PathBuf,
}

impl Freezer {
    fn create() -> Result<Freezer, String> {
        let root = Path::new("/sys/fs/cgroup/freezer");
        if !root.join("cgroup.procs").exists() {
            return Err("no cgroup v1 freezer at /sys/fs/cgroup/freezer".to_owned());
        }
        let dir = root.join(format!("launcher-test-{}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Freezer { dir })
    }

    fn state(&self, state: &str) {
        fs::write(self.dir.join("freezer.state"), state).expect("freezer.state");
    }

    fn pids(&self) -> Vec<u32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        self.state("THAWED");
        let deadline = Instant::now() + secs(10);
        while fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            for pid in self.pids() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_process_stuck_in_d_state_is_named_and_the_launcher_exits_2_s_after_the_deadline() {
    let _serial = serial();
    needs_machine(|| {
        let freezer = Freezer::create()?;
        let procs = freezer.dir.join("cgroup.procs");
        let script = format!("echo $$ > {} && exec sleep 1000", procs.display());
        let mut run = Run::spawn(command(
            None,
            "hostile",
            &[
                ("WEB_CONCURRENCY", "1"),
                ("LAUNCHER_GRACEFUL_TIMEOUT", "1"),
                ("LAUNCHER_SAMPLE_INTERVAL", "0"),
            ],
            LAUNCHER,
            &["run", "--", "sh", "-c", &script],
        ));
        let frozen = run.wait("the worker in the freezer", BOOT, || {
            freezer.pids().first().copied()
        });
        freezer.state("FROZEN");
        run.wait("the worker frozen", secs(5), || {
            let status = fs::read_to_string(format!("/proc/{frozen}/status")).ok()?;
            status.contains("State:\tD").then_some(())
        });
        let term = Instant::now();
        signal("TERM", &[run.pid()]);
        let status = run.wait_exit(secs(1 + 2 + 3));
        let took = term.elapsed();
        assert_eq!(status.code(), Some(0), "\n{}", run.log());
        assert!(took >= secs(3), "left before the stuck wait: {took:?}");
        let stuck = run.wait_event("stuck", SECOND, |_| true);
        assert_eq!(stuck.get("count"), "1", "{}", stuck.line);
        assert!(
            stuck
                .get("processes")
                .contains(&format!("{frozen}:sleep:D")),
            "{}",
            stuck.line
        );
        Ok(())
    });
}

#[test]
fn a_second_sigint_kills_everything_at_once() {
    let _serial = serial();
    let mut run = Run::spawn(command(
        None,
        "hostile",
        &[
            ("WEB_CONCURRENCY", "2"),
            ("LAUNCHER_GRACEFUL_TIMEOUT", "60"),
            ("LAUNCHER_SAMPLE_INTERVAL", "0"),
        ],
        LAUNCHER,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "trap '' INT QUIT TERM; while :; do sleep 1; done",
        ],
    ));
    run.wait_ready(2);
    signal("INT", &[run.pid()]);
    run.wait_event("signal", secs(5), |e| e.get("action") == "fast_shutdown");
    let second = Instant::now();
    signal("INT", &[run.pid()]);
    let status = run.wait_exit(secs(5));
    assert_eq!(status.code(), Some(0), "\n{}", run.log());
    assert!(second.elapsed() < secs(3), "{:?}", second.elapsed());
    run.wait_event("signal", SECOND, |e| e.get("action") == "kill");
}

#[test]
fn workers_are_the_oom_killers_choice_before_the_launcher() {
    let _serial = serial();
    let run = Run::spawn(command(
        None,
        "hostile",
        &[("WEB_CONCURRENCY", "1"), ("LAUNCHER_SAMPLE_INTERVAL", "0")],
        LAUNCHER,
        &["run", "--", "sleep", "30"],
    ));
    let worker = run.wait_children(1, BOOT)[0];
    let adj = |pid: u32| -> i32 {
        let text = fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).expect("read");
        text.trim().parse().expect("number")
    };
    assert_eq!(
        adj(worker),
        (adj(run.pid()) + 300).min(1000),
        "\n{}",
        run.log()
    );
}

/// SIGWINCH, which the launcher forwards to its workers with a `signal` line each time, `count`
/// times, each once the launcher has taken the one before (it is no longer pending for the
/// process, /proc/PID/status `ShdPnd`): signals of one kind pending at once count as one.
fn flood_with_winch(pid: u32, count: usize) {
    for sent in 0..count {
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGWINCH) };
        let taken_by = Instant::now() + secs(2);
        while signal_pending(pid, libc::SIGWINCH) {
            assert!(
                Instant::now() < taken_by,
                "the launcher stopped reading signals after {sent}: its loop is stalled"
            );
            std::hint::spin_loop();
        }
    }
}

/// Kills the launcher and every process under it when dropped (the tests that spawn it without
/// `Run`).
struct KillOnDrop(u32);

fn scopeguard(pid: u32) -> KillOnDrop {
    KillOnDrop(pid)
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let mut pids = descendants(self.0);
        pids.push(self.0);
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
    }
}
