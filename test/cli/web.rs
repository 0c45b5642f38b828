//! The web process: `launcher size`, the build log, the boot.

use super::*;

#[test]
fn the_mode_shown_for_the_web_process_is_the_one_launcher_run_picks() {
    let root = cedar_root(512, 8);
    let mode = |app: &TempDir, env: &[(&str, &str)]| {
        let args = [in_app("size", &root, app), vec!["--json"]].concat();
        let report = json(&launcher(&args, env));
        report["web"]["mode"].as_str().expect("mode").to_owned()
    };
    let gunicorn = app_with(&[("Procfile", "web: gunicorn app:app\n")]);
    assert_eq!(mode(&gunicorn, &[]), "delegate", "auto's pick");
    assert_eq!(mode(&gunicorn, &[("LAUNCHER_MODE", "fanout")]), "fanout");
    let with_file = app_with(&[
        ("Procfile", "web: gunicorn app:app\n"),
        ("launcher.toml", "mode = \"fanout\"\n"),
    ]);
    assert_eq!(mode(&with_file, &[]), "fanout", "launcher.toml");
    let size = launcher(&in_app("size", &root, &with_file), &[]);
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(
        text.contains("`launcher run` would run it in fanout mode"),
        "{text}"
    );
    // `--mode` in the Procfile wins over both, `auto` included.
    for (args, setting, expected) in [
        ("--mode delegate -- node server.js", "fanout", "delegate"),
        ("--mode auto -- gunicorn app:app", "fanout", "delegate"),
        ("--mode=auto -- node server.js", "delegate", "fanout"),
    ] {
        let app = app_with(&[("Procfile", &format!("web: launcher run {args}\n"))]);
        let env = [("LAUNCHER_MODE", setting)];
        let case = format!("launcher run {args}, LAUNCHER_MODE={setting}");
        assert_eq!(mode(&app, &env), expected, "{case}");
    }
}

#[test]
fn unicorn_warnings_are_for_the_build_log_and_launcher_size_not_the_boot() {
    let root = cedar_root(512, 8);
    let app = app_with(&[("Procfile", "web: unicorn -p $PORT\n")]);
    let warning = "unicorn runs without a config file";
    let profile = in_app("profile", &root, &app);
    for dyno in ["web.1", "worker.1", "run.1234"] {
        let err = stderr(&launcher(&profile, &[("DYNO", dyno)]));
        assert!(!err.contains("unicorn"), "{dyno}: {err}");
        let lines = usize::from(dyno == "web.1");
        assert_eq!(
            err.lines().count(),
            lines,
            "{dyno}, the boot line only: {err}"
        );
    }
    assert_eq!(stderr(&launcher(&profile, &[])), "");
    let size = launcher(&in_app("size", &root, &app), &[]);
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(text.contains(&format!("warning: {warning}")), "{text}");
    let build = launcher(&["build-report", "--app-dir", utf8(app.path())], &[]);
    assert!(stderr(&build).contains(warning), "{}", stderr(&build));
}

#[test]
fn workers_times_threads_does_not_overflow() {
    let root = cedar_root(512, 8);
    let app = app_with(&[
        ("Procfile", "web: bundle exec puma -C config/puma.rb\n"),
        ("config/puma.rb", "threads 1, 4294967295\n"),
    ]);
    let size = launcher(&in_app("size", &root, &app), &[("WEB_CONCURRENCY", "1024")]);
    assert!(size.status.success(), "{}", stderr(&size));
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(
        text.contains("1024 workers x 4294967295 threads = 4398046510080 requests at once"),
        "{text}"
    );
    let build = launcher(&["build-report", "--app-dir", utf8(app.path())], &[]);
    assert!(build.status.success(), "{}", stderr(&build));
    let log = String::from_utf8_lossy(&build.stdout);
    assert!(
        log.contains("2 workers x 4294967295 threads = 8589934590 requests at once"),
        "{log}"
    );
}

#[test]
fn the_help_says_which_servers_auto_delegates_to() {
    let help = launcher(&["run", "--help"], &[]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("auto: delegate for gunicorn, puma and unicorn, fanout otherwise"),
        "{text}"
    );
}
