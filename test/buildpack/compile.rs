//! bin/detect, bin/compile and bin/release as the platform runs them, on every fixture.

use super::*;

#[test]
fn detect_applies_to_every_app_and_release_declares_no_process_types() {
    let home = TempDir::new().expect("temp dir");
    for app in FIXTURES {
        let dir = fixture(app);
        let detect = run(&mut platform(&repo(), "detect", &[&dir], home.path()));
        assert!(detect.status.success(), "{app}: {}", log(&detect));
        assert_eq!(text(&detect.stdout), "launcher\n", "{app}");
        let release = run(&mut platform(&repo(), "release", &[&dir], home.path()));
        assert!(release.status.success(), "{app}: {}", log(&release));
        // An empty YAML map: no default_process_types to override the language buildpack's.
        assert_eq!(text(&release.stdout), "--- {}\n", "{app}");
    }
}

#[test]
fn cold_cache_runs_cargo_once_and_warm_cache_runs_none() {
    let shared = shared();
    assert!(
        shared.cold_log.contains("Built from source with cargo"),
        "{}",
        shared.cold_log
    );
    let expected = format!("build --release --locked --target {ARCH}-unknown-linux-gnu");
    assert!(
        shared.cold_cargo_calls.contains(&expected),
        "cold build ran {:?}",
        shared.cold_cargo_calls
    );

    // Same CACHE_DIR as the cold build: no cargo at all, and the log says so.
    let build = Build::new("flask");
    fs::remove_dir(build.cache()).expect("rmdir");
    cp(&[&shared.cache, &build.cache()]);
    let output = build.compile(&shared.buildpack, true);
    assert_success(&output);
    assert!(text(&output.stdout).contains("cached"), "{}", log(&output));
    assert_eq!(build.cargo_calls(), None, "the warm build ran cargo");
    assert_eq!(
        fs::read(build.installed()).expect("installed binary"),
        fs::read(shared.cached_binary()).expect("cached binary")
    );
}

#[test]
fn every_fixture_compiles_and_pinned_worker_counts_are_warned_about() {
    let shared = shared();
    // (app, config var, what the warning names)
    type Case = (
        &'static str,
        Option<(&'static str, &'static str)>,
        Option<&'static str>,
    );
    let cases: [Case; 6] = [
        ("flask", None, None),
        ("no-procfile", None, None),
        ("pinned-procfile", None, Some("Procfile")),
        ("pinned-gunicorn-conf", None, Some("gunicorn.conf.py")),
        ("pinned-puma", None, Some("config/puma.rb")),
        (
            "flask",
            Some(("GUNICORN_CMD_ARGS", "--workers 3")),
            Some("GUNICORN_CMD_ARGS"),
        ),
    ];
    for (app, config_var, warning) in cases {
        let build = shared.warm_build(app);
        if let Some((name, value)) = config_var {
            build.set_config_var(name, value);
        }
        let output = build.compile(&shared.buildpack, true);
        assert_success(&output);
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(
            stdout.contains("-----> Installing launcher"),
            "{app}: {stdout}"
        );
        assert!(stdout.contains("-----> Sizing"), "{app}: {stdout}");
        assert!(
            stdout.contains("       ") && stdout.contains("cached"),
            "{app}: {stdout}"
        );
        assert_eq!(build.cargo_calls(), None, "{app}: the warm build ran cargo");
        match warning {
            Some(source) => {
                let warned = stderr
                    .lines()
                    .any(|line| line.starts_with(" !     ") && line.contains(source));
                assert!(
                    warned,
                    "{app}: no warning naming {source}\n{}",
                    log(&output)
                );
            }
            None => assert!(!stderr.contains(" !     "), "{app}: {}", log(&output)),
        }
        let script = build.app().join(".profile.d/zzz-launcher.sh");
        let expected = run(Command::new(build.installed()).args(["profile", "--script"]));
        assert_eq!(fs::read(script).expect("profile script"), expected.stdout);
    }
}

#[test]
fn env_dir_is_read_safely() {
    let shared = shared();
    let build = shared.warm_build("flask");
    let marker = build.dir.path().join("ran");
    let code = format!("$(touch '{0}')`touch '{0}'`", marker.display());
    build.set_config_var("WEB_MEMORY", &code);
    build.set_config_var("LAUNCHER_BINARY_URL", "");
    build.set_config_var("GUNICORN_CMD_ARGS", "--timeout '30\"\n--bind x");
    build.set_config_var("not an identifier", &code);
    build.set_config_var("WEB_CONCURRENCY", "3\nexport X=1");
    let output = build.compile(&shared.buildpack, true);
    assert_success(&output);
    assert!(
        !marker.exists(),
        "a config var's shell code ran\n{}",
        log(&output)
    );
    assert!(
        text(&output.stdout).contains("Standard-1X"),
        "{}",
        log(&output)
    );
}

#[test]
fn export_file_puts_the_binary_on_path_for_later_buildpacks() {
    let shared = shared();
    let dir = TempDir::new().expect("temp dir");
    let buildpack = shared.own_buildpack(dir.path());
    let build = shared.warm_build("flask");
    assert_success(&build.compile(&buildpack, false));
    let export = buildpack.join("export");
    let found = run(Command::new("bash")
        .args(["-c", "source \"$1\" && command -v launcher", "bash"])
        .arg(&export)
        .env_clear()
        .env("PATH", PLATFORM_PATH));
    assert!(found.status.success(), "{}", log(&found));
    // BUILD_DIR has a space in its name: the export file quotes it.
    assert_eq!(
        text(&found.stdout).trim_end(),
        build.installed().to_string_lossy()
    );
}
