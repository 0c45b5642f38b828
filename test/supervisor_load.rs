//! Black-box tests of `launcher run` under load on loopback: a worker killed with keep-alive
//! connections open, fan-out rolling restarts (SIGHUP) under keep-alive clients and under a new
//! connection per request (old workers out of the accept set first, also for a launcher running
//! as nobody, and stopped at once where a seccomp filter refuses that), and SIGHUP forwarded to
//! gunicorn, which replaces its own workers. Real uvicorn, Node and gunicorn serve the fixtures;
//! the load generator (support/http.rs) is bounded in requests and time, and counts every failed
//! request.

use std::collections::HashSet;
use std::time::{Duration, Instant};

mod support;
use support::harness::{
    command, delegate, fanout, launcher_as_nobody, refuse_pidfd_getfd, secs, Run, BOOT, LAUNCHER,
    SECOND,
};
use support::http::{get_json, json_pid, percentile, Load};
use support::logfmt::Event;
use support::procs::{alive, children, established_connections, signal};
use support::{fixture, free_port, needs_machine, venv};

// ---- Fan-out: real uvicorn ---------------------------------------------------------------------------

#[test]
fn a_killed_worker_is_respawned_and_costs_at_most_its_open_connections() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port();
        let (run, workers) = fanout(&venv, port, 3, &[]);
        let load = Load::start(port, 8);
        load.wait_more(200, &run);

        let (open, victim) = workers
            .iter()
            .map(|&pid| (established_connections(pid), pid))
            .max()
            .expect("a worker");
        assert!(
            open > 0,
            "8 keep-alive clients but no worker holds a connection"
        );
        let slot = run
            .events("worker_spawn")
            .into_iter()
            .find(|e| e.pid() == victim)
            .expect("the victim's worker_spawn")
            .get("worker")
            .to_owned();
        signal("KILL", &[victim]);

        let exit = run.wait_event("worker_exit", secs(10), |e| e.pid() == victim);
        assert_eq!(exit.get("status"), "signal:9", "{}", exit.line);
        assert!(
            exit.opt("restart_in_s").is_some(),
            "not respawned: {}",
            exit.line
        );
        let respawn = run.wait_event("worker_spawn", secs(10), |e| e.index > exit.index);
        assert_eq!(
            respawn.get("worker"),
            slot,
            "a respawn keeps its slot: {}",
            respawn.line
        );
        let now = run.wait_children(3, BOOT);
        assert!(!now.contains(&victim), "{now:?}");
        load.wait_more(200, &run);

        let tally = load.finish();
        // Each connection the worker held breaks once, on its next request: retried or failed.
        assert!(
            tally.retried + tally.failures.len() >= open,
            "the {open} connections of the killed worker did not all break: {tally:?}"
        );
        assert!(
            tally.failures.len() <= open,
            "{} failures, more than the {open} connections the killed worker held: {tally:?}",
            tally.failures.len()
        );
        eprintln!("kill -9 of a worker holding {open} connections: {tally:?}");
        Ok(())
    });
}

/// p99 latency of the requests begun during a rolling restart must stay under this. A worker
/// answers GET / in about a millisecond; 500 ms leaves room for a shared 2-CPU machine booting a
/// replacement Python process, and is far below a request waiting for a stopped worker.
const RESTART_P99: Duration = Duration::from_millis(500);

#[test]
fn hup_replaces_every_worker_one_at_a_time_without_a_failed_request() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port();
        let (run, originals) = fanout(&venv, port, 3, &[]);
        let original_slots: HashSet<String> = run
            .events("worker_spawn")
            .iter()
            .map(|e| e.get("worker").to_owned())
            .collect();
        let load = Load::start(port, 8);
        load.wait_more(200, &run);

        let hup = Instant::now();
        signal("HUP", &[run.pid()]);
        let signal_line = run.wait_event("signal", secs(5), |e| e.get("signal") == "HUP");
        assert_eq!(
            signal_line.get("action"),
            "rolling_restart",
            "{}",
            signal_line.line
        );
        let done = run.wait_event("restart_done", secs(30), |_| true);
        let restart = hup.elapsed();
        assert_eq!(done.get("workers"), "3", "{}", done.line);
        load.wait_more(100, &run);
        let tally = load.finish();

        let now = run.wait_children(3, secs(10));
        for pid in &originals {
            assert!(
                !now.contains(pid),
                "worker {pid} was not replaced: {now:?}\n{}",
                run.log()
            );
            let stop = run.wait_event("worker_stop", SECOND, |e| e.pid() == *pid);
            assert_eq!(stop.get("reason"), "rolling_restart", "{}", stop.line);
        }
        // Each old worker exits only after a replacement of its own is ready: matching the k-th
        // old exit with the k-th new ready, in log order, proves one distinct replacement each.
        let old_exits: Vec<Event> = run
            .events("worker_exit")
            .into_iter()
            .filter(|e| originals.contains(&e.pid()))
            .collect();
        let new_readies: Vec<Event> = run
            .events("worker_ready")
            .into_iter()
            .filter(|e| e.index > signal_line.index && !originals.contains(&e.pid()))
            .collect();
        assert_eq!(old_exits.len(), 3, "\n{}", run.log());
        assert_eq!(new_readies.len(), 3, "\n{}", run.log());
        for (ready, exit) in new_readies.iter().zip(&old_exits) {
            assert!(
                ready.index < exit.index,
                "{:?} before its replacement's {:?}\n{}",
                exit.line,
                ready.line,
                run.log()
            );
            assert!(
                !original_slots.contains(ready.get("worker")),
                "a replacement gets a new slot: {}",
                ready.line
            );
        }

        assert!(tally.failures.is_empty(), "failed requests: {tally:?}");
        let during: Vec<Duration> = tally
            .samples
            .iter()
            .filter(|(begun, _)| *begun >= hup && *begun <= hup + restart)
            .map(|(_, took)| *took)
            .collect();
        assert!(
            during.len() >= 50,
            "only {} requests during the restart",
            during.len()
        );
        let p99 = percentile(during, 99);
        assert!(
            p99 < RESTART_P99,
            "p99 {p99:?} during the restart ({tally:?})"
        );
        eprintln!("rolling restart in {restart:?}: p99 {p99:?}, {tally:?}");
        Ok(())
    });
}

/// Rolling restarts in a row in `rolling_restarts_lose_no_request_on_new_connections`.
const HUPS: usize = 5;

/// Sends SIGHUP and waits for the run's `round`th `restart_done`.
fn rolling_restart(run: &Run, round: usize) {
    signal("HUP", &[run.pid()]);
    run.wait(&format!("restart {round} done"), secs(30), || {
        (run.events("restart_done").len() >= round).then_some(())
    });
}

#[test]
fn rolling_restarts_lose_no_request_on_new_connections() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port();
        let (run, _) = fanout(&venv, port, 2, &[]);
        let load = Load::fresh(port, 8);
        load.wait_more(200, &run);
        for round in 1..=HUPS {
            rolling_restart(&run, round);
            load.wait_more(100, &run);
        }
        let tally = load.finish();
        assert!(tally.failures.is_empty(), "lost: {tally:?}\n{}", run.log());
        // Each old worker was out of the accept set before its TERM.
        let stops = run.events("worker_stop");
        assert_eq!(stops.len(), 2 * HUPS, "\n{}", run.log());
        for stop in stops {
            let drain = run.wait_event("worker_drain", SECOND, |e| e.pid() == stop.pid());
            assert!(drain.index > stop.index, "{}", drain.line);
            assert_eq!(drain.get("epoll_sets"), "1", "{}", drain.line);
        }
        assert!(run.events("drain_failed").is_empty(), "\n{}", run.log());
        eprintln!("{HUPS} rolling restarts, a new connection per request: {tally:?}");
        Ok(())
    });
}

/// A dyno runs the launcher as a user without root's capabilities: taking a worker out of the
/// accept set needs ptrace rights over it, which a parent running as the same user has. Node
/// (libuv waits on the inherited fd 3 itself, where uvicorn waits on a dup of it) from a copy of
/// its fixture in a directory every user can enter, with the system's node.
#[test]
fn a_supervisor_running_as_nobody_takes_its_workers_out_of_the_accept_set() {
    needs_machine(|| {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root, to run a supervisor as nobody".to_owned());
        }
        let tmp = tempfile::TempDir::new().expect("temp dir");
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o1777);
        std::fs::set_permissions(tmp.path(), mode).expect("chmod");
        let server = fixture("node").join("server.js");
        std::fs::copy(server, tmp.path().join("server.js")).expect("copy server.js");
        let mut launcher = launcher_as_nobody(&["run", "--", "node", "server.js"]);
        launcher
            .current_dir(tmp.path())
            .env("PORT", free_port().to_string())
            .env("WEB_CONCURRENCY", "2")
            .env("TMPDIR", tmp.path());
        let run = Run::spawn(launcher);
        run.wait_ready(2);
        signal("HUP", &[run.pid()]);
        run.wait_event("restart_done", secs(30), |_| true);
        let stops = run.events("worker_stop");
        assert_eq!(stops.len(), 2, "\n{}", run.log());
        for stop in stops {
            let drain = run.wait_event("worker_drain", SECOND, |e| e.pid() == stop.pid());
            assert_eq!(drain.get("epoll_sets"), "1", "{}", drain.line);
        }
        assert!(run.events("drain_failed").is_empty(), "\n{}", run.log());
        Ok(())
    });
}

/// Docker's and containerd's default seccomp profiles refuse `pidfd_getfd(2)` to a container
/// without CAP_SYS_PTRACE: workers are then stopped at once, as before the drain, rolling restarts
/// go on, and one `drain_failed` line says why, however many workers stop after it.
#[test]
fn where_seccomp_refuses_the_drain_rolling_restarts_go_on_and_say_so_once() {
    needs_machine(|| {
        let port = free_port().to_string();
        let env = [("PORT", port.as_str()), ("WEB_CONCURRENCY", "2")];
        let args = ["run", "--", "node", "server.js"];
        let mut launcher = command(None, "node", &env, LAUNCHER, &args);
        refuse_pidfd_getfd(&mut launcher);
        let run = Run::spawn(launcher);
        run.wait_ready(2);
        for round in 1..=2 {
            rolling_restart(&run, round);
        }
        assert_eq!(run.events("worker_stop").len(), 4, "\n{}", run.log());
        assert!(run.events("worker_drain").is_empty(), "\n{}", run.log());
        let refused = run.events("drain_failed");
        assert_eq!(refused.len(), 1, "\n{}", run.log());
        assert_eq!(
            refused[0].get("error"),
            "Operation not permitted",
            "{}",
            refused[0].line
        );
        let first_stop = &run.events("worker_stop")[0];
        assert_eq!(refused[0].pid(), first_stop.pid(), "{}", refused[0].line);
        Ok(())
    });
}

#[test]
fn a_rolling_restart_whose_new_workers_hang_at_boot_keeps_the_old_ones_serving() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port();
        let dir = tempfile::TempDir::new().map_err(|e| e.to_string())?;
        let hang = dir.path().join("hang");
        let hang_text = hang.display().to_string();
        // uvicorn catches TERM before it imports the app, and a hung import never gets to act
        // on it: the stopped replacement gets SIGKILL at the graceful timeout.
        let env = [
            ("HANG_IF_EXISTS", hang_text.as_str()),
            ("LAUNCHER_READY_TIMEOUT", "4"),
            ("LAUNCHER_GRACEFUL_TIMEOUT", "3"),
        ];
        let (run, originals) = fanout(&venv, port, 2, &env);
        let load = Load::start(port, 8);
        load.wait_more(100, &run);
        // From now on a new worker hangs at import: it never sends READY=1 (uvicorn does not) and
        // never waits on the socket; its grace period passes all the same.
        std::fs::write(&hang, "").map_err(|e| e.to_string())?;
        signal("HUP", &[run.pid()]);
        let failed = run.wait_event("restart_failed", secs(20), |_| true);
        assert!(failed.num::<f64>("waited_s") >= 4.0, "{}", failed.line);
        load.wait_more(100, &run);
        let tally = load.finish();
        assert!(
            tally.failures.is_empty(),
            "failed requests: {tally:?}\n{}",
            run.log()
        );
        run.wait_event("worker_kill", secs(10), |e| {
            e.get("worker") == failed.get("worker")
        });
        let now = run.wait_children(2, secs(10));
        assert_eq!(now, originals, "the old workers serve on\n{}", run.log());
        assert!(
            run.events("worker_stop")
                .iter()
                .all(|e| !originals.contains(&e.pid())),
            "an old worker was stopped\n{}",
            run.log()
        );
        assert!(run.events("restart_done").is_empty(), "\n{}", run.log());
        let _ = std::fs::remove_file(&hang);
        Ok(())
    });
}

// ---- Delegate: real gunicorn -------------------------------------------------------------------------

#[test]
fn delegate_hup_is_forwarded_and_gunicorn_replaces_its_workers_without_a_failed_request() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        let port = free_port();
        let (run, master, originals) = delegate(&venv, port, 2);
        let load = Load::start(port, 8);
        load.wait_more(200, &run);

        let sent = Instant::now();
        signal("HUP", &[run.pid()]);
        let hup = run.wait_event("signal", secs(5), |e| e.get("signal") == "HUP");
        assert_eq!(hup.get("action"), "forwarded", "{}", hup.line);
        // gunicorn forks new workers and sends TERM to the old ones, which finish their request.
        let replacements = run.wait(
            "gunicorn's 2 new workers, the old ones gone",
            secs(30),
            || {
                let now = children(master);
                let old_gone = originals.iter().all(|&pid| !alive(pid));
                (old_gone && now.len() == 2 && !now.iter().any(|pid| originals.contains(pid)))
                    .then_some(now)
            },
        );
        // The new workers import the app before they accept: the reload is over when one answers.
        let pid = json_pid(&get_json(port, "/"));
        let reload = sent.elapsed();
        assert!(
            replacements.contains(&pid),
            "answered by {pid}, not a new worker {replacements:?}"
        );
        load.wait_more(200, &run);
        let tally = load.finish();

        assert_eq!(
            children(run.pid()),
            vec![master],
            "the master is still the launcher's only child\n{}",
            run.log()
        );
        let launcher_side = ["worker_spawn", "worker_stop", "worker_exit"]
            .iter()
            .flat_map(|name| run.events(name))
            .filter(|e| e.index > hup.index)
            .map(|e| e.line)
            .collect::<Vec<_>>();
        assert!(
            launcher_side.is_empty(),
            "the launcher itself acted on a forwarded HUP: {launcher_side:?}"
        );
        assert!(tally.failures.is_empty(), "failed requests: {tally:?}");
        let during = tally
            .samples
            .iter()
            .filter(|(begun, _)| *begun >= sent && *begun <= sent + reload)
            .count();
        assert!(during >= 5, "only {during} requests during the reload");
        eprintln!(
            "gunicorn reload {originals:?} -> {replacements:?} in {reload:?}, {during} requests during it: {tally:?}"
        );
        Ok(())
    });
}
