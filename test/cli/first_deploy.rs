//! Real cgroups, and the frictions a first deploy meets.

use super::*;

/// Runs the launcher inside the cgroup's innermost directory.
fn run_launcher_in(cgroup: &MemoryCgroup, args: &str) -> Output {
    let mut launcher = Command::new(LAUNCHER);
    launcher
        .args(args.split_whitespace())
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    cgroup.wrap(&launcher).output().expect("run in cgroup")
}

#[test]
fn real_cgroup_of_512_mb() {
    needs_machine(|| {
        let cgroup = MemoryCgroup::create(&["launcher-test-512"], 512 * 1024 * 1024)?;
        let report = json(&run_launcher_in(&cgroup, "size --json"));
        assert_eq!(report["memory_mb"], 512, "{report}");
        let source = report["memory_source"].as_str().expect("str");
        let own_dir = format!(
            "/launcher-test-512-{}/memory.limit_in_bytes",
            std::process::id()
        );
        assert!(
            source.starts_with("cgroup v1 /sys/fs/cgroup/memory/"),
            "{source}"
        );
        assert!(source.ends_with(&own_dir), "{source}");
        Ok(())
    });
}

#[test]
fn real_nested_cgroup_gets_the_parents_limit() {
    needs_machine(|| {
        let cgroup = MemoryCgroup::create(&["launcher-test-parent", "child"], 512 * 1024 * 1024)?;
        let report = json(&run_launcher_in(&cgroup, "size --json"));
        assert_eq!(report["memory_mb"], 512, "{report}");
        let source = report["memory_source"].as_str().expect("str");
        assert!(
            !source.contains("/child-"),
            "the limit is the parent's: {source}"
        );
        Ok(())
    });
}

// ---- Frictions a first deploy meets -------------------------------------------------------------

#[test]
fn a_pinned_worker_count_is_noted_by_launcher_size_and_at_boot() {
    let root = cedar_root(512, 8);
    let pinned = app_with(&[("Procfile", "web: gunicorn -w 4 app:app\n")]);
    let note = "Procfile pins the worker count (-w 4), so WEB_CONCURRENCY=2 does not take effect";
    let size = launcher(&in_app("size", &root, &pinned), &[]);
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("warning: ") && l.contains(note)),
        "{text}"
    );
    let args = [in_app("size", &root, &pinned), vec!["--json"]].concat();
    let notes = json(&launcher(&args, &[]))["notes"].to_string();
    assert!(notes.contains(note), "{notes}");
    // The boot: the line on web dynos says so; other dynos stay quiet.
    let boot = stderr(&launcher(
        &in_app("profile", &root, &pinned),
        &[("DYNO", "web.1")],
    ));
    let lines: Vec<&str> = boot.lines().collect();
    assert_eq!(lines.len(), 2, "{boot}");
    assert!(lines[0].starts_with("launcher: WEB_CONCURRENCY=2 set by launcher ("));
    assert!(
        lines[1].starts_with("launcher: warning: ") && lines[1].contains(note),
        "{boot}"
    );
    let worker = launcher(&in_app("profile", &root, &pinned), &[("DYNO", "worker.1")]);
    assert_eq!(stderr(&worker), "");
    // A user's value is pinned over just the same; an app that reads it is not warned about.
    let users = stderr(&launcher(
        &in_app("profile", &root, &pinned),
        &[("DYNO", "web.1"), ("WEB_CONCURRENCY", "3")],
    ));
    assert!(
        users.contains("so WEB_CONCURRENCY=3 does not take effect"),
        "{users}"
    );
    let reads = app_with(&[("Procfile", "web: gunicorn -w $WEB_CONCURRENCY app:app\n")]);
    let boot = stderr(&launcher(
        &in_app("profile", &root, &reads),
        &[("DYNO", "web.1")],
    ));
    assert_eq!(boot.lines().count(), 1, "{boot}");
    let size = launcher(&in_app("size", &root, &reads), &[]);
    assert!(!String::from_utf8_lossy(&size.stdout).contains("pins"));
}

#[test]
fn the_build_log_gives_the_launcher_run_mode_only_for_a_web_process_under_it() {
    let plain = app_with(&[("Procfile", "web: gunicorn app:app\n")]);
    let build = launcher(&["build-report", "--app-dir", utf8(plain.path())], &[]);
    let log = String::from_utf8_lossy(&build.stdout);
    assert!(build.status.success(), "{}", stderr(&build));
    assert!(!log.contains("launcher run"), "{log}");
    assert!(!log.contains("mode"), "{log}");
    let under = app_with(&[("Procfile", "web: launcher run -- gunicorn app:app\n")]);
    let build = launcher(&["build-report", "--app-dir", utf8(under.path())], &[]);
    let log = String::from_utf8_lossy(&build.stdout);
    assert!(
        log.contains("The web process runs gunicorn under `launcher run`, in delegate mode"),
        "{log}"
    );
    // `launcher size` is where the question is asked: it answers for both.
    let root = cedar_root(512, 8);
    let size = launcher(&in_app("size", &root, &plain), &[]);
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(
        text.contains("`launcher run` would run it in delegate mode"),
        "{text}"
    );
}

#[test]
fn launcher_run_without_the_dashes_says_where_they_go() {
    for (args, fixed) in [
        (
            &["run", "gunicorn", "app:app"][..],
            "launcher run -- gunicorn app:app",
        ),
        (
            &[
                "run", "--mode", "fanout", "uvicorn", "main:app", "--port", "5000",
            ][..],
            "launcher run --mode fanout -- uvicorn main:app --port 5000",
        ),
    ] {
        let output = launcher(args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let err = stderr(&output);
        assert!(err.contains(fixed), "{args:?}: {err}");
        assert!(err.contains("`--`"), "{args:?}: {err}");
    }
    // Other mistakes keep clap's own message alone.
    let other = stderr(&launcher(&["size", "--colour"], &[]));
    assert!(!other.contains("launcher run"), "{other}");
}

#[test]
fn web_concurrency_with_spaces_around_it_is_taken_as_gunicorn_and_puma_take_it() {
    // gunicorn reads it with Python's int(), puma's config with Ruby's Integer(): both take ASCII
    // whitespace around the digits (Python also takes Unicode spaces, which Ruby refuses).
    let root = cedar_root(512, 8);
    let root_dir = utf8(root.path());
    for spaced in [" 3", "3 ", "\t3\n", " 3\r\n", "\u{b}3\u{c}"] {
        let report = size_json(root.path(), &[("WEB_CONCURRENCY", spaced)]);
        assert_eq!(report["web_concurrency"], 3, "{spaced:?}: {report}");
        assert_eq!(report["set_by"], serde_json::Value::Null, "{spaced:?}");
        let profile = launcher(
            &["profile", "--root", root_dir],
            &[("WEB_CONCURRENCY", spaced)],
        );
        assert_eq!(stderr(&profile), "", "{spaced:?}: no warning");
        let exports = String::from_utf8_lossy(&profile.stdout);
        assert!(!exports.contains("export WEB_CONCURRENCY="), "{exports}");
    }
    for bad in ["\u{a0}3", "3 3", " ", " 04"] {
        let report = size_json(root.path(), &[("WEB_CONCURRENCY", bad)]);
        assert_eq!(report["web_concurrency"], 2, "{bad:?}: {report}");
        assert_eq!(report["set_by"], "launcher", "{bad:?}");
    }
}

#[test]
fn launcher_size_calls_a_warning_a_warning() {
    let root = cedar_root(512, 8);
    let size = launcher(
        &["size", "--root", utf8(root.path())],
        &[
            ("LAUNCHER_GRACEFUL_TIMEOUT", "25s"),
            ("WEB_CONCURRENCY", "abc"),
        ],
    );
    let text = String::from_utf8_lossy(&size.stdout);
    for named in [
        "LAUNCHER_GRACEFUL_TIMEOUT=\"25s\"",
        "WEB_CONCURRENCY=\"abc\"",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(named))
            .unwrap_or_else(|| panic!("no line names {named}:\n{text}"));
        assert!(line.starts_with("warning: "), "{line}");
    }
    // What the host reading passed over is a note, not a warning.
    fs::write(
        root.path()
            .join("sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "abc\n",
    )
    .expect("write");
    let size = launcher(&["size", "--root", utf8(root.path())], &[]);
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(text.lines().any(|l| l.starts_with("note: ")), "{text}");
    assert!(!text.contains("warning:"), "{text}");
}
