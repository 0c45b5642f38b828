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

// ---- 2. Delegate with real gunicorn ----------------------------------------------------------------

#[test]
fn delegate_runs_one_gunicorn_master_that_forks_web_concurrency_workers() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        let port = free_port();
        let (run, master, workers) = delegate(&venv, port, 2);
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("mode"), "delegate", "{}", start.line);
        assert_eq!(start.get("server"), "gunicorn", "{}", start.line);
        assert_eq!(start.get("workers"), "2", "{}", start.line);

        for _ in 0..4 {
            let root = get_json(port, "/");
            let pid = json_pid(&root);
            assert!(
                workers.contains(&pid),
                "answered by {pid}, not a worker {workers:?}"
            );
            assert_eq!(root["web_concurrency"], "2", "{root}");
        }
        assert_eq!(children(run.pid()), vec![master], "\n{}", run.log());
        assert_eq!(children(master), workers, "\n{}", run.log());
        Ok(())
    });
}

/// A gthread worker of gunicorn 23 or older that holds `--worker-connections` connections none of
/// which has sent its request stops polling them and spins at full CPU for good (gunicorn issues
/// #3146 and #3407): with the launcher's threads, two idle connections (a browser's preconnect, a
/// TCP health check) once froze a worker of two threads. The launcher leaves gunicorn's 1000 and
/// closes each connection after its response instead (docs/sizing.md, "Threads").
#[test]
fn idle_connections_do_not_freeze_a_gthread_worker_run_with_the_launchers_threads() {
    needs_machine(|| {
        let (run, port) = one_gthread_worker_of_2_threads(&venv(&["gunicorn"])?, &[]);
        let idle: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let answer = support::http::get(port, "/", secs(5));
        drop(idle);
        let response = answer
            .unwrap_or_else(|e| panic!("GET / with 2 idle connections open: {e}\n{}", run.log()));
        assert_eq!(response.status, 200, "{}", response.body);
        Ok(())
    });
}

/// `launcher run -- gunicorn app:app` serving test/fixtures/flask-memory with one worker and
/// `LAUNCHER_THREADS=2`, and the `extra` settings, once it is ready; with its port.
fn one_gthread_worker_of_2_threads(venv: &Path, extra: &[(&str, &str)]) -> (Run, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let mut env = vec![
        ("PORT", port_text.as_str()),
        ("WEB_CONCURRENCY", "1"),
        ("LAUNCHER_THREADS", "2"),
    ];
    env.extend_from_slice(extra);
    let args = ["run", "--", "gunicorn", "app:app"];
    let run = Run::spawn(launcher(venv, "flask-memory", &env, &args));
    let master = run.wait_children(1, BOOT)[0];
    run.wait_grandchildren(master, 1, BOOT);
    run.wait_ready(1);
    (run, port)
}

/// On gunicorn 24 and newer, `launcher run` caps a gthread worker's connections at the threads it
/// gives it: a request that no thread can take waits in the shared socket's accept queue, where
/// the next free thread of any worker takes it and adaptive sizing sees it. On gunicorn 23, where
/// that cap can freeze a worker (above), it does not, and the worker takes the request in.
#[test]
fn gthread_workers_take_no_more_connections_than_threads_on_a_gunicorn_that_allows_it() {
    needs_machine(|| {
        for (venv, capped) in [(new_gunicorn_venv()?, true), (venv(&["gunicorn"])?, false)] {
            let (run, port) = one_gthread_worker_of_2_threads(&venv, &[("SLEEP_MS", "3000")]);
            let start = &run.events("start")[0];
            let want = capped.then_some("2");
            assert_eq!(start.opt("worker_connections"), want, "{}", run.log());

            // 3 requests of 3 s for 2 threads: the third waits, in the queue if capped.
            let requests = support::http::in_flight(port, "/sleep", 3);
            std::thread::sleep(Duration::from_millis(1500));
            let queued = accept_queue(port);
            let statuses: Vec<_> = requests.into_iter().map(|r| r.join().unwrap()).collect();
            let venv = venv.display();
            assert_eq!(queued, Some(u32::from(capped)), "{venv}\n{}", run.log());
            assert_eq!(
                statuses,
                [Ok(200), Ok(200), Ok(200)],
                "{venv}\n{}",
                run.log()
            );
        }
        Ok(())
    });
}

/// An event loop's worker connections are its concurrency: with the launcher's threads asked for
/// all the same, gunicorn's uvicorn worker keeps its 1000 (it had the threads' cap once).
#[test]
fn event_loop_workers_keep_their_worker_connections() {
    needs_machine(|| {
        let venv = new_gunicorn_venv()?;
        let port = free_port();
        let port_text = port.to_string();
        let env = [
            ("PORT", port_text.as_str()),
            ("WEB_CONCURRENCY", "1"),
            ("LAUNCHER_THREADS", "2"),
        ];
        let worker = "uvicorn.workers.UvicornWorker";
        let args = ["run", "--", "gunicorn", "-k", worker, "app:app"];
        let run = Run::spawn(launcher(&venv, "asgi", &env, &args));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.opt("worker_connections"), None, "{}", start.line);
        let master = run.wait_children(1, BOOT)[0];
        let workers = run.wait_grandchildren(master, 1, BOOT);
        let environ =
            fs::read(format!("/proc/{}/environ", workers[0])).map_err(|e| e.to_string())?;
        let environ = String::from_utf8_lossy(&environ);
        let args = environ
            .split('\0')
            .find(|v| v.starts_with("GUNICORN_CMD_ARGS="));
        assert_eq!(
            args,
            Some("GUNICORN_CMD_ARGS=--threads 2 --keep-alive 0"),
            "{}",
            run.log()
        );
        Ok(())
    });
}

/// The connections waiting in the accept queue of the listening TCP socket on `port`: its
/// `rx_queue` in /proc/net/tcp or tcp6 (`st` 0A is LISTEN).
fn accept_queue(port: u16) -> Option<u32> {
    let hex = |text: &str| u32::from_str_radix(text, 16).ok();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields.get(1)?.rsplit(':').next()?;
                let listening = hex(local_port)? == u32::from(port) && fields.get(3)? == &"0A";
                listening.then(|| hex(fields.get(4)?.split(':').nth(1)?))?
            })
        })
}

// ---- 3. Slow boot -----------------------------------------------------------------------------------

#[test]
fn the_port_accepts_at_once_and_answers_when_a_slow_booting_worker_is_up() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port();
        let run = Run::spawn(launcher(
            &venv,
            "asgi",
            &[
                ("PORT", &port.to_string()),
                ("WEB_CONCURRENCY", "1"),
                ("BOOT_SLEEP", "5"),
            ],
            &["run", "--", "uvicorn", "app:app", "--no-access-log"],
        ));
        let mut conn = run.wait("the port to accept a connection", SECOND, || {
            Conn::open(port, secs(20)).ok()
        });
        let connected = run.started().elapsed();
        assert!(connected < SECOND, "connected after {connected:?}");

        let response = conn
            .get("/")
            .unwrap_or_else(|e| panic!("GET / sent at {connected:?}: {e}\n{}", run.log()));
        let answered = run.started().elapsed();
        assert_eq!(response.status, 200, "{}", response.body);
        // BOOT_SLEEP=5 holds the import, so an answer before 5 s means it did not wait for it.
        assert!(answered >= secs(5), "answered after only {answered:?}");
        Ok(())
    });
}

// ---- 4. Crash at boot -------------------------------------------------------------------------------

#[test]
fn a_worker_crashing_at_boot_is_respawned_with_growing_backoff_then_the_launcher_gives_up() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port().to_string();
        let mut run = Run::spawn(launcher(
            &venv,
            "asgi",
            &[
                ("PORT", &port),
                ("WEB_CONCURRENCY", "1"),
                ("CRASH_AT_BOOT", "1"),
                ("LAUNCHER_GIVE_UP_AFTER", "3"),
                // A crashing uvicorn lives ~0.5 s; on a busy machine it could pass the default
                // 1 s grace, count as ready and reset the backoff.
                ("LAUNCHER_READY_GRACE", "5"),
            ],
            &["run", "--", "uvicorn", "app:app"],
        ));
        let status = run.wait_exit(secs(20));
        assert_eq!(status.code(), Some(1), "\n{}", run.log());

        let exits: Vec<Event> = run
            .events("worker_exit")
            .into_iter()
            .filter(|e| e.opt("restart_in_s").is_some())
            .collect();
        assert!(exits.len() >= 3, "{} respawns\n{}", exits.len(), run.log());
        for pair in exits.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            assert!(
                after.num::<f64>("restart_in_s") > before.num::<f64>("restart_in_s"),
                "the backoff did not grow: {:?} then {:?}",
                before.line,
                after.line
            );
            assert!(
                after.num::<u32>("failures") > before.num::<u32>("failures"),
                "{:?} then {:?}",
                before.line,
                after.line
            );
        }
        for exit in &exits {
            assert_eq!(
                exit.get("worker"),
                "1",
                "a respawn keeps its slot: {}",
                exit.line
            );
            assert_ne!(exit.get("status"), "exit:0", "{}", exit.line);
        }
        let give_up = run.wait_event("give_up", SECOND, |_| true);
        assert!(give_up.line.contains("at=error"), "{}", give_up.line);
        assert!(!give_up.get("reason").is_empty(), "{}", give_up.line);
        assert!(run.events("worker_ready").is_empty(), "\n{}", run.log());
        Ok(())
    });
}

// ---- 5. Bad input -------------------------------------------------------------------------------------

/// Runs the launcher to its end (killing it after `timeout`) in a temporary directory.
fn finish(env: &[(&str, &str)], args: &[&str], timeout: Duration) -> Output {
    let dir = TempDir::new().expect("temp dir");
    let mut command = Command::new(LAUNCHER);
    command
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .envs(env.iter().copied());
    Run::output(command, timeout)
}

/// In fan-out each copy gets `WEB_CONCURRENCY=1` and the threads' exports, after the user's own
/// `GUNICORN_CMD_ARGS` (the copies once got neither: the user's text was dropped with the threads).
#[test]
fn fan_out_copies_get_the_threads_and_keep_the_users_gunicorn_args() {
    // Each copy says what it got; after a second (both have), one stops the launcher.
    let script = r#"echo "args=[$GUNICORN_CMD_ARGS] rails=[$RAILS_MAX_THREADS] web=[$WEB_CONCURRENCY]"; sleep 1; kill -TERM $PPID; exec sleep 30"#;
    let env = [
        ("LAUNCHER_THREADS", "4"),
        ("GUNICORN_CMD_ARGS", "--timeout 60"),
        ("WEB_CONCURRENCY", "2"),
    ];
    let output = finish(&env, &["run", "--", "sh", "-c", script], secs(10));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("args=")).collect();
    let want = "args=[--timeout 60 --threads 4 --keep-alive 0] rails=[4] web=[1]";
    assert_eq!(
        lines,
        [want; 2],
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One line on stderr, `launcher: error: ...`, and exit code `code`.
fn assert_error(case: &str, output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        output.status.code(),
        Some(code),
        "{case}: exit status\n--- stderr\n{stderr}\n--- stdout\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        lines.len() == 1 && lines[0].starts_with("launcher: error: "),
        "{case}: want one `launcher: error: ` line on stderr, got:\n{stderr}"
    );
    lines[0].to_owned()
}

/// A case name, the environment, the arguments and the exit code wanted.
type BadInput<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str], i32);

#[test]
fn bad_input_is_one_error_line_and_its_exit_code() {
    let dir = TempDir::new().expect("temp dir");
    let script = dir.path().join("app.sh");
    fs::write(&script, "#!/bin/sh\nsleep 30\n").expect("write");
    let not_executable = script.to_str().expect("utf-8");
    fs::write(dir.path().join("launcher.toml"), "mode = [\n").expect("write");
    let bad_toml = dir.path().to_str().expect("utf-8");
    // A launcher that wrongly accepts the input runs `sleep 30` and is caught by the timeout.
    let cases: [BadInput; 9] = [
        ("no command", &[], &["run"], 2),
        ("no command after --", &[], &["run", "--"], 2),
        (
            "command not found",
            &[],
            &["run", "--", "no-such-command-for-launcher"],
            127,
        ),
        ("not executable", &[], &["run", "--", not_executable], 126),
        (
            "PORT=abc",
            &[("PORT", "abc")],
            &["run", "--", "sleep", "30"],
            2,
        ),
        ("PORT=0", &[("PORT", "0")], &["run", "--", "sleep", "30"], 2),
        // Set but empty is not "no socket": a web process would silently serve nothing.
        ("PORT=", &[("PORT", "")], &["run", "--", "sleep", "30"], 2),
        (
            "PORT=65536",
            &[("PORT", "65536")],
            &["run", "--", "sleep", "30"],
            2,
        ),
        (
            "invalid launcher.toml",
            &[],
            &["run", "--app-dir", bad_toml, "--", "sleep", "30"],
            2,
        ),
    ];
    for (case, env, args, code) in cases {
        let output = finish(env, args, secs(10));
        let line = assert_error(case, &output, code);
        eprintln!("{case}: {line}");
    }
}

#[test]
fn a_worker_that_dies_before_it_is_ready_gets_a_hint_without_port_too() {
    let env = [
        ("WEB_CONCURRENCY", "1"),
        ("LAUNCHER_READY_GRACE", "5"),
        ("LAUNCHER_GIVE_UP_AFTER", "2"),
    ];
    let output = finish(&env, &["run", "--", "sh", "-c", "exit 3"], secs(15));
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let hints: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("event=hint"))
        .collect();
    assert_eq!(hints.len(), 1, "{stdout}");
    assert!(hints[0].contains("before it was ready"), "{}", hints[0]);
}

#[test]
fn a_port_in_use_is_an_error_exit_1() {
    for address in ["[::]", "0.0.0.0"] {
        let holder = TcpListener::bind(format!("{address}:0")).expect("bind");
        let port = holder.local_addr().expect("addr").port().to_string();
        let output = finish(&[("PORT", &port)], &["run", "--", "sleep", "30"], secs(10));
        let line = assert_error(&format!("PORT {port} held on {address}"), &output, 1);
        eprintln!("{address}:{port} in use: {line}");
        drop(holder);
    }
}

#[test]
fn an_invalid_web_concurrency_is_reported_and_the_computed_default_boots() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let sizing = [("WEB_CONCURRENCY", "abc"), ("LAUNCHER_MAX_WORKERS", "2")];
        let size = Command::new(LAUNCHER)
            .args(["size", "--json"])
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .envs(sizing)
            .output()
            .expect("launcher size");
        let size: serde_json::Value = serde_json::from_slice(&size.stdout).expect("size JSON");
        let expected = size["web_concurrency"].as_u64().expect("web_concurrency") as usize;

        let port = free_port().to_string();
        let mut env = sizing.to_vec();
        env.push(("PORT", port.as_str()));
        let run = Run::spawn(launcher(
            &venv,
            "asgi",
            &env,
            &["run", "--", "uvicorn", "app:app", "--no-access-log"],
        ));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.num::<usize>("workers"), expected, "{}", start.line);
        run.wait_ready(expected);
        let warned = run.stderr().iter().any(|l| l.contains("abc"))
            || run.events("config").iter().any(|e| e.line.contains("abc"));
        assert!(
            warned,
            "no warning about WEB_CONCURRENCY=abc\n{}",
            run.log()
        );
        run.wait_children(expected, BOOT);
        let root = get_json(port.parse().expect("port"), "/");
        assert_eq!(root["web_concurrency"], "1", "{root}");
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
