//! Black-box tests of `launcher run`, the pre-fork supervisor, at boot: the real binary serving
//! the fixtures with real uvicorn (fan-out: N workers sharing the launcher's socket as fd 3) and
//! real gunicorn (delegate: one master that forks its own workers) on loopback; a slow boot, a
//! crash loop, and bad input. supervisor_load.rs has the tests under keep-alive load,
//! supervisor_signals.rs those of shutdown, scaling and the sample line. They assert on the
//! contract's log lines (stdout, `launcher: ` logfmt), exit codes, and the process tree in /proc.
//!
//! Every launcher runs in its own process group under a guard (`Run`) that kills the group and
//! every descendant on drop, so a failing test leaks no process. Every wait has a deadline.

use std::collections::HashSet;
use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

#[path = "supervisor/boot.rs"]
mod boot;
#[path = "supervisor/gunicorn.rs"]
mod gunicorn;
mod support;
use support::harness::{delegate, launcher, secs, Run, BOOT, LAUNCHER, SECOND, SYSTEM_PATH};
use support::http::{get_json, json_pid, Conn};
use support::logfmt::Event;
use support::procs::children;
use support::{free_port, needs_machine, new_gunicorn_venv, venv};

// ---- 1. Fan-out with real uvicorn ------------------------------------------------------------------

#[test]
fn fanout_runs_web_concurrency_uvicorn_workers_sharing_the_socket_as_fd_3() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port().to_string();
        let run = Run::spawn(launcher(
            &venv,
            "asgi",
            &[("PORT", &port), ("WEB_CONCURRENCY", "3")],
            &["run", "--", "uvicorn", "app:app", "--no-access-log"],
        ));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("mode"), "fanout", "{}", start.line);
        assert_eq!(start.get("server"), "uvicorn", "{}", start.line);
        assert_eq!(start.get("workers"), "3", "{}", start.line);
        assert_eq!(start.get("port"), port, "{}", start.line);
        assert_eq!(start.pid(), run.pid(), "{}", start.line);

        run.wait_ready(3);
        let spawned: HashSet<u32> = run.events("worker_spawn").iter().map(Event::pid).collect();
        let workers = run.wait_children(3, BOOT);
        assert_eq!(
            workers.iter().copied().collect::<HashSet<_>>(),
            spawned,
            "the launcher's children are not the workers it logged\n{}",
            run.log()
        );

        let port: u16 = port.parse().expect("port");
        for _ in 0..6 {
            let fd = get_json(port, "/fd");
            let pid = json_pid(&fd);
            assert!(
                workers.contains(&pid),
                "answered by {pid}, not a worker {workers:?}"
            );
            assert_eq!(fd["fd3_listening"], true, "{fd}");
            assert_eq!(fd["listen_pid"], pid.to_string().as_str(), "{fd}");
            assert_eq!(fd["listen_fds"], "1", "{fd}");
            assert_eq!(fd["listen_fdnames"], "web", "{fd}");
        }
        let root = get_json(port, "/");
        assert_eq!(
            root["web_concurrency"], "1",
            "each fan-out worker is one process: {root}"
        );
        assert_eq!(children(run.pid()), workers, "\n{}", run.log());
        Ok(())
    });
}

#[test]
fn fanout_rewrites_the_procfile_host_and_port_of_uvicorn_to_fd_3() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port().to_string();
        // What a Procfile `web: launcher run -- uvicorn app:app --host 0.0.0.0 --port $PORT` runs.
        let run = Run::spawn(launcher(
            &venv,
            "asgi",
            &[("PORT", &port), ("WEB_CONCURRENCY", "1")],
            &[
                "run", "--", "uvicorn", "app:app", "--host", "0.0.0.0", "--port", &port,
            ],
        ));
        let rewritten = run.wait_event("args_rewritten", BOOT, |_| true);
        assert_eq!(
            rewritten.get("removed"),
            format!("--host 0.0.0.0 --port {port}"),
            "{}",
            rewritten.line
        );
        assert_eq!(rewritten.get("added"), "--fd 3", "{}", rewritten.line);
        run.wait_ready(1);
        let fd = get_json(port.parse().expect("port"), "/fd");
        assert_eq!(fd["fd3_listening"], true, "{fd}");
        Ok(())
    });
}

// ---- What `launcher run` says of the server it runs --------------------------------------------

#[test]
fn a_worker_count_the_command_pins_is_the_one_logged_and_run() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        let port = free_port().to_string();
        let run = Run::spawn(launcher(
            &venv,
            "flask",
            &[("PORT", &port), ("WEB_CONCURRENCY", "5")],
            &["run", "--", "gunicorn", "-w", "3", "app:app"],
        ));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("workers"), "3", "{}", start.line);
        assert_eq!(start.get("pinned"), "-w 3", "{}", start.line);
        let said = run.wait_event("config", BOOT, |e| e.get("message").contains("pins"));
        assert!(
            said.get("message")
                .contains("runs 3 workers, not WEB_CONCURRENCY's 5"),
            "{}",
            said.line
        );
        let master = run.wait_children(1, BOOT)[0];
        run.wait_grandchildren(master, 3, BOOT);
        Ok(())
    });
}

#[test]
fn a_delegated_server_whose_app_cannot_load_is_never_logged_ready() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        let port = free_port().to_string();
        let run = Run::spawn(launcher(
            &venv,
            "broken",
            &[("PORT", &port), ("WEB_CONCURRENCY", "2")],
            // When both workers exit at once, gunicorn's arbiter reaps the first, halts, and
            // waits its graceful timeout (30 s) for the second, whose SIGCHLD it has already
            // taken: the arbiter's stop() only sleeps. 1 s keeps that wait inside the ready grace.
            &[
                "run",
                "--",
                "gunicorn",
                "--graceful-timeout",
                "1",
                "app:app",
            ],
        ));
        // gunicorn's arbiter says READY=1 at start; its workers fail to boot, and it exits 3.
        let exits = run.wait_events("worker_exit", 2, BOOT, |_| true);
        let first_exit = exits[0].index;
        assert!(run.events("worker_ready").is_empty(), "{}", run.log());
        let hint = run.wait_event("hint", SECOND, |_| true);
        assert!(hint.index < first_exit, "{}", run.log());
        Ok(())
    });
}
