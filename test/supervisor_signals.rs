//! Black-box tests of `launcher run` over its life: shutdown on SIGTERM (on Heroku, and as PID 1),
//! SIGKILL of the launcher, scaling with SIGTTIN and SIGTTOU, and the periodic `sample` line. Real
//! uvicorn and gunicorn serve the fixtures on loopback; every wait has a deadline.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::harness::{command, delegate, fanout, secs, Run, BOOT, LAUNCHER, SECOND};
use support::http::{get_json, in_flight, json_pid};
use support::procs::{alive, signal};
use support::{free_port, needs_machine, venv};

// ---- Shutdown ----------------------------------------------------------------------------------------

#[test]
fn heroku_term_to_every_process_lets_in_flight_requests_finish_and_exits_0() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port();
        let (mut run, workers) = fanout(&venv, port, 2, &[("DYNO", "web.1")]);
        let requests = in_flight(port, "/slow?s=3", 4);
        run.wait("4 requests in flight", secs(10), || {
            (run.fixture_lines("slow_start") >= 4).then_some(())
        });

        // The platform signals every process of the dyno at once.
        let mut everyone = vec![run.pid()];
        everyone.extend(&workers);
        let term = Instant::now();
        signal("TERM", &everyone);
        let first = run.wait_event("signal", secs(5), |e| e.get("signal") == "TERM");
        assert_eq!(first.get("action"), "shutdown", "{}", first.line);
        // A process may end between the look and the kill: this kill(1) may fail for it.
        let alive_now = everyone.iter().filter(|&&p| alive(p)).map(u32::to_string);
        let _ = Command::new("kill").arg("-TERM").args(alive_now).status();
        let second = run.wait_event("signal", secs(5), |e| e.index > first.index);
        assert_eq!(second.get("action"), "ignored", "{}", second.line);

        for request in requests {
            let status = request.join().expect("request thread");
            assert_eq!(status, Ok(200), "an in-flight request\n{}", run.log());
        }
        let status = run.wait_exit(secs(15));
        let took = term.elapsed();
        assert_eq!(status.code(), Some(0), "\n{}", run.log());
        assert!(took < secs(15), "exit took {took:?}");
        let respawns = run
            .events("worker_spawn")
            .into_iter()
            .filter(|e| e.index > first.index);
        assert_eq!(
            respawns.count(),
            0,
            "respawned during shutdown\n{}",
            run.log()
        );
        let exit = run.wait_event("exit", SECOND, |_| true);
        assert_eq!(exit.get("status"), "0", "{}", exit.line);
        Ok(())
    });
}

#[test]
fn as_pid_1_term_to_the_launcher_alone_drains_in_flight_requests_and_exits_0() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let probe = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .output()
            .map_err(|e| format!("unshare: {e}"))?;
        if !probe.status.success() {
            return Err(format!(
                "unshare --pid cannot make a PID namespace here (needs root): {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            ));
        }
        let port = free_port().to_string();
        let mut run = Run::spawn(command(
            Some(&venv),
            "asgi",
            &[("PORT", &port), ("WEB_CONCURRENCY", "2")],
            "unshare",
            &[
                "--pid",
                "--fork",
                "--mount-proc",
                LAUNCHER,
                "run",
                "--",
                "uvicorn",
                "app:app",
                "--no-access-log",
            ],
        ));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("pid"), "1", "{}", start.line);
        let launcher = run.wait_children(1, BOOT)[0];
        run.wait_ready(2);
        let port: u16 = port.parse().expect("port");
        let requests = in_flight(port, "/slow?s=3", 3);
        run.wait("3 requests in flight", secs(10), || {
            (run.fixture_lines("slow_start") >= 3).then_some(())
        });

        signal("TERM", &[launcher]);
        let term = run.wait_event("signal", secs(5), |e| e.get("signal") == "TERM");
        assert_eq!(term.get("action"), "shutdown", "{}", term.line);
        for request in requests {
            let status = request.join().expect("request thread");
            assert_eq!(status, Ok(200), "an in-flight request\n{}", run.log());
        }
        // unshare --fork exits with the status of the namespace's PID 1: the launcher.
        let status = run.wait_exit(secs(15));
        assert_eq!(status.code(), Some(0), "\n{}", run.log());
        Ok(())
    });
}

#[test]
fn term_to_the_launcher_alone_is_forwarded_on_fir_and_left_to_the_platform_on_cedar() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        // Fir runs on Kubernetes, which signals the main process only; Cedar signals every
        // process of the dyno itself, so the launcher sends nothing on there.
        for (dyno, forwarded) in [("web-12a34b56d-e78f9", "SIGTERM"), ("web.1", "none")] {
            let env = [("DYNO", dyno), ("LAUNCHER_GRACEFUL_TIMEOUT", "3")];
            let (mut run, workers) = fanout(&venv, free_port(), 2, &env);
            signal("TERM", &[run.pid()]);
            let shutdown = run.wait_event("shutdown", secs(5), |_| true);
            assert_eq!(
                shutdown.get("forwarded"),
                forwarded,
                "{dyno}: {}",
                shutdown.line
            );
            let status = run.wait_exit(secs(15));
            assert_eq!(status.code(), Some(0), "{dyno}\n{}", run.log());
            let exits = run.events("worker_exit");
            for pid in &workers {
                let exit = exits
                    .iter()
                    .find(|e| e.get("pid") == pid.to_string())
                    .unwrap_or_else(|| panic!("{dyno}: no worker_exit for {pid}\n{}", run.log()));
                // Forwarded: the launcher's TERM ends uvicorn (exit:0, or signal:15 when it
                // comes before its handler). Not forwarded: nobody else signalled the workers
                // here, so the deadline's SIGKILL ends them.
                let killed = exit.get("status") == "signal:9";
                assert_eq!(killed, forwarded == "none", "{dyno}: {}", exit.line);
            }
            let timed_out = !run.events("shutdown_timeout").is_empty();
            assert_eq!(timed_out, forwarded == "none", "{dyno}\n{}", run.log());
        }
        Ok(())
    });
}

/// Waits up to `timeout` for every one of `pids` to end, then names those still running.
fn assert_all_end(run: &Run, pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
    assert!(
        left.is_empty(),
        "{left:?} of {pids:?} still running {timeout:?} after the launcher's SIGKILL\n{}",
        run.log()
    );
}

#[test]
fn sigkill_of_the_launcher_leaves_no_fanout_worker() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let (run, workers) = fanout(&venv, free_port(), 2, &[]);
        signal("KILL", &[run.pid()]);
        assert_all_end(&run, &workers, secs(10));
        Ok(())
    });
}

#[test]
fn sigkill_of_the_launcher_leaves_no_gunicorn_master_or_worker() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        let port = free_port();
        let (run, master, mut pids) = delegate(&venv, port, 2);
        // Idle workers, past their boot: a gunicorn worker notices a new parent only between
        // requests or when its wait for one times out.
        let mut answered = HashSet::new();
        for _ in 0..50 {
            answered.insert(json_pid(&get_json(port, "/")));
            if answered.len() == 2 {
                break;
            }
        }
        pids.push(master);
        signal("KILL", &[run.pid()]);
        assert_all_end(&run, &pids, secs(10));
        Ok(())
    });
}

// ---- Scaling -----------------------------------------------------------------------------------------

#[test]
fn fanout_ttin_adds_a_worker_and_ttou_stops_the_newest() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let (run, originals) = fanout(&venv, free_port(), 2, &[]);

        signal("TTIN", &[run.pid()]);
        let ttin = run.wait_event("signal", secs(5), |e| e.get("signal") == "TTIN");
        assert_eq!(ttin.get("action"), "scale_up", "{}", ttin.line);
        assert_eq!(ttin.get("workers"), "3", "{}", ttin.line);
        let three = run.wait_children(3, BOOT);
        let added: Vec<u32> = three
            .iter()
            .copied()
            .filter(|pid| !originals.contains(pid))
            .collect();
        assert_eq!(added.len(), 1, "{originals:?} -> {three:?}\n{}", run.log());
        let newest = added[0];
        let spawn = run.wait_event("worker_spawn", secs(5), |e| e.pid() == newest);
        assert!(spawn.index > ttin.index, "\n{}", run.log());
        run.wait_event("worker_ready", BOOT, |e| e.pid() == newest);

        signal("TTOU", &[run.pid()]);
        let ttou = run.wait_event("signal", secs(5), |e| e.get("signal") == "TTOU");
        assert_eq!(ttou.get("action"), "scale_down", "{}", ttou.line);
        assert_eq!(ttou.get("workers"), "2", "{}", ttou.line);
        let stop = run.wait_event("worker_stop", secs(5), |e| e.index > ttou.index);
        assert_eq!(stop.get("reason"), "scale_down", "{}", stop.line);
        assert_eq!(stop.pid(), newest, "not the newest worker: {}", stop.line);
        let exit = run.wait_event("worker_exit", secs(10), |e| e.pid() == newest);
        assert_eq!(exit.get("at"), "info", "{}", exit.line);
        assert_eq!(exit.opt("restart_in_s"), None, "restarted: {}", exit.line);
        run.wait("the stopped worker to end", secs(10), || {
            (!alive(newest)).then_some(())
        });
        assert_eq!(run.wait_children(2, secs(10)), originals, "\n{}", run.log());
        Ok(())
    });
}

// ---- The sample line ---------------------------------------------------------------------------------

#[test]
fn the_sample_line_counts_workers_restarts_and_memory() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let interval = [("LAUNCHER_SAMPLE_INTERVAL", "1")];
        let (run, workers) = fanout(&venv, free_port(), 2, &interval);
        let ready = run.wait_ready(2).iter().map(|e| e.index).max();
        let sample = run.wait_event("sample", secs(5), |e| Some(e.index) > ready);
        assert_eq!(sample.get("sample#workers"), "2", "{}", sample.line);
        assert_eq!(sample.get("sample#workers_ready"), "2", "{}", sample.line);
        assert_eq!(sample.get("sample#restarts"), "0", "{}", sample.line);
        let memory = sample.megabytes("sample#memory_rss");
        let own = sample.megabytes("sample#launcher_rss");
        assert!(
            memory > own && own > 0.0,
            "want memory_rss > launcher_rss > 0: {}",
            sample.line
        );

        signal("KILL", &[workers[0]]);
        let exit = run.wait_event("worker_exit", secs(10), |e| e.pid() == workers[0]);
        let next = run.wait_event("sample", secs(5), |e| e.index > exit.index);
        assert_eq!(next.get("sample#restarts"), "1", "{}", next.line);
        // Once the replacement is up: both workers again, the restart still counted.
        run.wait_event("sample", BOOT, |e| {
            e.index > next.index
                && e.get("sample#workers_ready") == "2"
                && e.get("sample#workers") == "2"
                && e.get("sample#restarts") == "1"
        });
        Ok(())
    });
}

/// A shell script's background job starts with SIGINT and SIGQUIT ignored; the launcher and its
/// workers take them back, so that INT is a fast shutdown still (docs/supervisor.md, "Signals").
#[test]
fn a_launcher_started_with_int_and_quit_ignored_stops_fast_on_int() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port().to_string();
        let mut ignoring = command(
            Some(&venv),
            "asgi",
            &[("PORT", &port), ("WEB_CONCURRENCY", "2")],
            "/bin/sh",
            &[
                "-c",
                "trap '' INT QUIT; exec \"$0\" run -- uvicorn app:app --no-access-log",
                LAUNCHER,
            ],
        );
        ignoring.env("LAUNCHER_GRACEFUL_TIMEOUT", "20");
        let mut run = Run::spawn(ignoring);
        run.wait_ready(2);
        let asked = Instant::now();
        signal("INT", &[run.pid()]);
        let line = run.wait_event("signal", secs(5), |e| e.get("signal") == "INT");
        assert_eq!(line.get("action"), "fast_shutdown", "{}", line.line);
        let status = run.wait_exit(secs(10));
        assert!(status.success(), "{status:?}\n{}", run.log());
        assert!(
            asked.elapsed() < secs(10),
            "the workers ignored the fast shutdown's QUIT: {:?}\n{}",
            asked.elapsed(),
            run.log()
        );
        assert!(run.events("shutdown_timeout").is_empty(), "{}", run.log());
        Ok(())
    });
}
