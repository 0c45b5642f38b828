//! A dyno boot of a compiled slug, and the Flask fixture served by real gunicorn in a real
//! 512 MB memory cgroup.

use super::*;

/// Like heroku/python's WEB_CONCURRENCY.sh: its own default, only when nobody set one.
const LANGUAGE_SCRIPT: &str = r#"if [ -z "${WEB_CONCURRENCY:-}" ]; then
  export WEB_CONCURRENCY=99 WEB_CONCURRENCY_SET_BY=heroku/python
fi
"#;

/// A compiled slug with the stand-in language script next to ours.
fn compiled_slug(app: &str) -> Build {
    let shared = shared();
    let build = shared.warm_build(app);
    assert_success(&build.compile(&shared.buildpack, false));
    let script = build.app().join(".profile.d/WEB_CONCURRENCY.sh");
    fs::write(script, LANGUAGE_SCRIPT).expect("write language script");
    build
}

/// Boots the slug as a dyno does (env -i, HOME = the slug, .profile.d/*.sh sourced in glob order),
/// then runs `command` (argv, not shell) in place of the Procfile's.
fn boot(slug: &Path, env: &[(&str, &str)], command: &[&str]) -> Output {
    let script = r#"cd "$HOME" && for f in .profile.d/*.sh; do source "$f"; done; exec "$@""#;
    run(Command::new("bash")
        .args(["-c", script, "dyno"])
        .args(command)
        .env_clear()
        .env("HOME", slug)
        .env("PATH", PLATFORM_PATH)
        .env("PORT", "5000")
        .env("DYNO", "web.1")
        .envs(env.iter().copied()))
}

/// A whole-number field of `launcher size --json` (std only: no JSON parser in these tests).
fn json_number(json: &str, key: &str) -> u64 {
    json.split(&format!("\"{key}\":"))
        .nth(1)
        .map(|rest| rest.trim_start())
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no number {key} in {json}"))
}

fn var(output: &Output, name: &str) -> Option<String> {
    text(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

#[test]
fn dyno_boot_our_value_wins_over_the_language_buildpacks_and_the_users_over_both() {
    let build = compiled_slug("flask");
    let slug = build.app();
    let size = run(Command::new(build.installed())
        .args(["size", "--json"])
        .env_clear());
    let ours = json_number(&text(&size.stdout), "web_concurrency").to_string();
    assert_ne!(ours, "99");

    for locale in [("LC_ALL", "C"), ("LANG", "en_US.UTF-8")] {
        let output = boot(&slug, &[locale], &["env"]);
        assert!(output.status.success(), "{}", log(&output));
        assert_eq!(
            var(&output, "WEB_CONCURRENCY").as_deref(),
            Some(ours.as_str()),
            "{locale:?}"
        );
        assert_eq!(
            var(&output, "WEB_CONCURRENCY_SET_BY").as_deref(),
            Some("launcher")
        );
        assert!(
            text(&output.stderr).contains("launcher: WEB_CONCURRENCY="),
            "{}",
            log(&output)
        );
    }

    let output = boot(&slug, &[("WEB_CONCURRENCY", "3")], &["env"]);
    assert_eq!(
        var(&output, "WEB_CONCURRENCY").as_deref(),
        Some("3"),
        "{}",
        log(&output)
    );
    assert_ne!(
        var(&output, "WEB_CONCURRENCY_SET_BY").as_deref(),
        Some("launcher")
    );
}

#[test]
fn dyno_boot_config_vars_holding_shell_code_run_nothing() {
    let build = compiled_slug("flask");
    let marker = build.dir.path().join("ran");
    let code = format!("$(touch '{0}')`touch '{0}'`;touch '{0}'", marker.display());
    let env = [
        ("WEB_CONCURRENCY", code.as_str()),
        ("WEB_MEMORY", code.as_str()),
        ("LAUNCHER_MAX_WORKERS", code.as_str()),
        ("WEB_CONCURRENCY_SET_BY", code.as_str()),
    ];
    let output = boot(&build.app(), &env, &["env"]);
    assert!(output.status.success(), "{}", log(&output));
    assert!(
        !marker.exists(),
        "shell code from a config var ran\n{}",
        log(&output)
    );
    let value = var(&output, "WEB_CONCURRENCY").expect("WEB_CONCURRENCY");
    assert!(
        value.parse::<u32>().is_ok(),
        "the bad value was not replaced: {value:?}"
    );
}

#[test]
fn dyno_boot_without_the_binary_still_runs_the_command_with_the_environment_unchanged() {
    let build = compiled_slug("flask");
    let slug = build.app();
    let ours = slug.join(".profile.d/zzz-launcher.sh");
    let script = fs::read(&ours).expect("our script");

    // Reference: the language buildpack's script alone.
    fs::remove_file(&ours).expect("rm");
    let reference = boot(&slug, &[], &["env"]);
    fs::write(&ours, script).expect("restore");
    fs::remove_file(build.installed()).expect("rm binary");
    let output = boot(&slug, &[], &["env"]);
    assert!(output.status.success(), "the boot failed\n{}", log(&output));

    let without_path = |output: &Output| {
        let mut lines: Vec<String> = text(&output.stdout)
            .lines()
            .filter(|line| !line.starts_with("PATH=") && !line.starts_with('_'))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(without_path(&output), without_path(&reference));
    assert_eq!(var(&output, "WEB_CONCURRENCY").as_deref(), Some("99"));
    let path = var(&output, "PATH").expect("PATH");
    assert_eq!(
        path,
        format!("{}/.launcher/bin:{PLATFORM_PATH}", slug.display())
    );
}

// ---- End to end: gunicorn in a real 512 MB memory cgroup -------------------------------------------

const LIMIT_BYTES: u64 = 512 * 1024 * 1024;

/// A process group that is killed on drop.
struct Dyno {
    child: Child,
}

impl Drop for Dyno {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16) -> Option<String> {
    let output = Command::new("curl")
        .args(["--silent", "--fail", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .ok()?;
    output.status.success().then(|| text(&output.stdout))
}

#[test]
fn flask_fixture_served_by_gunicorn_in_a_512_mb_cgroup_runs_the_sized_worker_count() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        let cgroup = MemoryCgroup::create(&["launcher-buildpack-test"], LIMIT_BYTES)?;
        serve_in_cgroup(&cgroup, &venv);
        Ok(())
    });
}

fn serve_in_cgroup(cgroup: &MemoryCgroup, venv: &Path) {
    let build = compiled_slug("flask");
    let slug = build.app();
    let procfile = fs::read_to_string(slug.join("Procfile")).expect("Procfile");
    let web = procfile
        .lines()
        .find_map(|line| line.strip_prefix("web:"))
        .expect("a web process")
        .trim()
        .to_owned();
    let port = free_port();
    let boot = format!(
        "cd \"$HOME\" && for f in .profile.d/*.sh; do source \"$f\"; done; launcher size --json > \"$HOME/../size.json\"; exec {web}"
    );
    let path = format!("{}:{PLATFORM_PATH}", venv.join("bin").display());
    let mut dyno_boot = Command::new("bash");
    dyno_boot
        .args(["-c", &boot])
        .env_clear()
        .env("HOME", &slug)
        .env("PATH", path)
        .env("PORT", port.to_string())
        .env("DYNO", "web.1");
    let child = cgroup
        .wrap(&dyno_boot)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("boot the dyno");
    let dyno = Dyno { child };
    let master = dyno.child.id();

    let body = wait_for("gunicorn to answer", Duration::from_secs(60), || {
        http_get(port)
    });
    let size = fs::read_to_string(build.dir.path().join("size.json")).expect("size.json");
    assert_eq!(json_number(&size, "memory_mb"), 512, "{size}");
    let expected = json_number(&size, "web_concurrency") as usize;
    assert_eq!(expected, 2, "512 MB / 256 MB per worker: {size}");
    assert!(
        body.contains(&format!("\"web_concurrency\":\"{expected}\"")),
        "{body}"
    );

    // Exactly that many workers, all children of the master, all inside the cgroup.
    let workers = wait_for("the workers to boot", Duration::from_secs(30), || {
        let workers = children(master);
        (workers.len() >= expected).then_some(workers)
    });
    assert_eq!(workers.len(), expected, "workers {workers:?}");
    let in_cgroup = cgroup.pids();
    assert!(
        in_cgroup.contains(&master),
        "master {master} not in {in_cgroup:?}"
    );
    for worker in &workers {
        assert!(
            in_cgroup.contains(worker),
            "worker {worker} not in {in_cgroup:?}"
        );
    }
    for _ in 0..10 {
        let body = http_get(port).expect("a request");
        assert!(
            workers
                .iter()
                .any(|pid| body.contains(&format!("\"pid\":{pid},"))),
            "answered by a process that is not a worker: {body}"
        );
    }
    assert_eq!(children(master).len(), expected);
    drop(dyno);
}
