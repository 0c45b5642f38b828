//! A slow boot, a crash at boot, and bad input.

use super::*;

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
