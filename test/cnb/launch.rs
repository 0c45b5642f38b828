//! Launch: the exec.d program and the process types in the built image.

use super::*;

fn is_number(value: Option<&String>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// A site for the flask fixture with the stand-in language buildpack set up by `web_env`
/// (`TEST_WEB_ENV`, none if empty), built with ours after it, or before it if `ours_first`.
fn flask_with(web_env: &str, ours_first: bool) -> Result<Site, String> {
    let shared = shared();
    let site = Site::new(&fixture("flask"))?;
    if !web_env.is_empty() {
        site.set_config_var("TEST_WEB_ENV", web_env);
    }
    site.restore(&shared.warm_layers);
    let group: [&Path; 2] = if ours_first {
        [&shared.buildpack, &shared.language]
    } else {
        [&shared.language, &shared.buildpack]
    };
    let out = site.build(&group, &BuildOptions::default());
    assert!(out.status.success(), "{}", log(&out));
    Ok(site)
}

#[test]
fn the_real_launcher_takes_the_exec_d_programs_default() {
    needs_machine(|| {
        let (site, _) = built("flask")?;
        let prepared = site.launch("web").env("DYNO", FIR_WEB).prepare()?;
        let env = &prepared.env;
        assert!(is_number(env.get("WEB_CONCURRENCY")), "{env:?}");
        assert_eq!(env["WEB_CONCURRENCY_SET_BY"], "launcher");
        assert_eq!(env["LAUNCHER_WEB_CONCURRENCY"], env["WEB_CONCURRENCY"]);
        assert!(is_number(env.get("DYNO_RAM")), "{env:?}");
        // The launch layer's bin/ first on PATH, before the language buildpack's.
        let first = env["PATH"].split(':').next().unwrap_or_default().to_owned();
        assert!(first.ends_with("/launcher/launcher/bin"), "{}", env["PATH"]);
        let line = prepared.exec_d_stderr.lines().next().unwrap_or_default();
        assert!(
            line.starts_with(&format!(
                "launcher: WEB_CONCURRENCY={} set by launcher (",
                env["WEB_CONCURRENCY"]
            )),
            "{}",
            prepared.exec_d_stderr
        );
        Ok(())
    });
}

#[test]
fn a_users_web_concurrency_wins() {
    needs_machine(|| {
        // Alone, after a buildpack that writes it back as Heroku's Node.js CNB does, and after
        // buildpacks that write over it (a marked exec.d, a launch env file): the platform's value
        // is the user's, and the exec.d program writes it back.
        for web_env in ["", "nodejs", "marked", "env-file"] {
            let site = flask_with(web_env, false)?;
            let launch = site
                .launch("web")
                .env("DYNO", FIR_WEB)
                .env("WEB_CONCURRENCY", "3");
            let prepared = launch.prepare()?;
            let env = &prepared.env;
            assert_eq!(env["WEB_CONCURRENCY"], "3", "{web_env}");
            assert!(
                env.get("WEB_CONCURRENCY_SET_BY")
                    .is_none_or(String::is_empty),
                "{web_env}: {env:?}"
            );
            assert!(is_number(env.get("LAUNCHER_WEB_CONCURRENCY")));
            assert!(
                prepared
                    .exec_d_stderr
                    .contains("launcher: WEB_CONCURRENCY=3 set by the user"),
                "{web_env}: {}",
                prepared.exec_d_stderr
            );
        }
        Ok(())
    });
}

#[test]
fn another_buildpacks_value_is_replaced_marked_or_not() {
    needs_machine(|| {
        let ours = flask_with("", false)?.launch("web").prepare()?.env["WEB_CONCURRENCY"].clone();
        // An exec.d program that marks its value, a launch env file, Heroku's Node.js CNB's exec.d.
        for (web_env, shown) in [
            (
                "marked",
                "replaced WEB_CONCURRENCY=\"99\" set by \"test/language\"",
            ),
            (
                "env-file",
                "replaced WEB_CONCURRENCY=\"99\" set at launch by a buildpack",
            ),
            (
                "nodejs",
                "\" set at launch by a buildpack (no config var, no WEB_CONCURRENCY_SET_BY)",
            ),
        ] {
            let site = flask_with(web_env, false)?;
            let prepared = site.launch("web").env("DYNO", FIR_WEB).prepare()?;
            let env = &prepared.env;
            assert_eq!(env["WEB_CONCURRENCY"], ours, "{web_env}: {env:?}");
            assert_eq!(env["WEB_CONCURRENCY_SET_BY"], "launcher", "{web_env}");
            assert!(
                prepared.exec_d_stderr.contains(shown),
                "{web_env}: {}",
                prepared.exec_d_stderr
            );
            if web_env == "nodejs" {
                // Its exec.d programs ran, before ours.
                assert!(
                    is_number(env.get("HEROKU_AVAILABLE_PARALLELISM")),
                    "{env:?}"
                );
                assert!(is_number(env.get("WEB_MEMORY")), "{env:?}");
            }
        }
        // Listed after ours, its exec.d runs last and its value stays: the order matters.
        let site = flask_with("marked", true)?;
        assert_eq!(site.launch("web").prepare()?.env["WEB_CONCURRENCY"], "99");
        Ok(())
    });
}

#[test]
fn hostile_values_run_nothing() {
    needs_machine(|| {
        let shared = shared();
        let site = Site::new(&fixture("flask"))?;
        site.restore(&shared.warm_layers);
        let marker = site.path("home/ran");
        let code = format!(
            "$(touch '{0}')`touch '{0}'`;touch '{0}'\"\n[x]\nPATH = \"/tmp\"",
            marker.display()
        );
        for name in [
            "WEB_MEMORY",
            "WEB_CONCURRENCY",
            "LAUNCHER_MAX_WORKERS",
            "GUNICORN_CMD_ARGS",
        ] {
            site.set_config_var(name, &code);
        }
        let out = site.build(&[&shared.buildpack], &BuildOptions::default());
        assert!(out.status.success(), "{}", log(&out));
        let mut launch = site.launch("web");
        for name in READ_AT_BOOT {
            launch = launch.env(name, &code);
        }
        let prepared = launch.prepare()?;
        assert!(
            is_number(prepared.env.get("WEB_CONCURRENCY")),
            "{:?}",
            prepared.env
        );
        assert_eq!(prepared.env["WEB_CONCURRENCY_SET_BY"], "launcher");
        assert!(
            prepared.env["PATH"].ends_with("/usr/bin:/bin"),
            "{}",
            prepared.env["PATH"]
        );
        assert!(!marker.exists(), "a variable's shell code ran");
        Ok(())
    });
}

#[test]
fn a_non_web_process_gets_its_default_quietly() {
    needs_machine(|| {
        let (site, _) = built("flask")?;
        for dyno in ["worker-23z34x56y-w78k9", "run-e78f9"] {
            let prepared = site.launch("worker").env("DYNO", dyno).prepare()?;
            assert!(is_number(prepared.env.get("WEB_CONCURRENCY")), "{dyno}");
            assert_eq!(prepared.env["WEB_CONCURRENCY_SET_BY"], "launcher");
            assert_eq!(prepared.exec_d_stderr, "", "{dyno}");
        }
        Ok(())
    });
}

#[test]
fn the_exec_d_program_needs_no_shell_and_never_fails_the_launch() {
    needs_machine(|| {
        let (site, _) = built("flask")?;
        // No PATH but the layers' own bin: the program is run by its path and starts no shell.
        let prepared = site
            .launch("web")
            .env("PATH", "")
            .env("DYNO", FIR_WEB)
            .prepare()?;
        assert!(is_number(prepared.env.get("WEB_CONCURRENCY")));
        let line = prepared.exec_d_stderr.lines().next().unwrap_or_default();
        assert!(
            line.starts_with("launcher: WEB_CONCURRENCY="),
            "{}",
            prepared.exec_d_stderr
        );

        let prepared = site.launch("web").env("LAUNCHER_DISABLE", "1").prepare()?;
        assert_eq!(
            prepared.env.get("WEB_CONCURRENCY"),
            None,
            "disabled: nothing written"
        );

        // Without fd 3: exit 0, nothing but one warning line.
        let program = site
            .buildpack_layers(ID)
            .join("launcher/exec.d/web-concurrency");
        let out = output_within(&mut site.user.command(&program, &[]), SECOND * 10);
        assert!(out.status.success(), "{}", log(&out));
        assert_eq!(text(&out.stdout), "");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("launcher: warning: exec.d: fd 3 is not open"),
            "{stderr}"
        );
        Ok(())
    });
}

/// The flask fixture with `procfile`, built with the test venv as the language buildpack's
/// launch layer, and a port.
fn flask_serving(procfile: &str) -> Result<(Site, u16), String> {
    let venv = venv(&["gunicorn"])?;
    let shared = shared();
    let site = Site::new(&fixture("flask"))?;
    fs::write(site.app().join("Procfile"), procfile).expect("write Procfile");
    site.set_config_var("TEST_VENV", &venv.display().to_string());
    site.restore(&shared.warm_layers);
    let out = site.build(
        &[&shared.language, &shared.buildpack],
        &BuildOptions::default(),
    );
    assert!(out.status.success(), "{}", log(&out));
    Ok((site, free_port()))
}

/// A Fir web dyno's start of the `web` process, serving on `port`; by root, for the test venv's
/// sake.
fn web_launch(site: &Site, port: u16) -> Launch<'_> {
    site.launch("web")
        .env("DYNO", FIR_WEB)
        .env("PORT", &port.to_string())
        .by_root()
}

/// A process group that is killed on drop.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

#[test]
fn gunicorn_in_a_512_mb_cgroup_runs_the_sizings_count() {
    needs_machine(|| {
        let (site, port) = flask_serving("web: gunicorn app:app\n")?;
        let cgroup = MemoryCgroup::create(&["launcher-cnb-test"], 512 * 1024 * 1024)?;
        let launch = web_launch(&site, port).in_cgroup(&cgroup);
        let prepared = launch.prepare()?;
        assert_eq!(prepared.env["DYNO_RAM"], "512", "{:?}", prepared.env);
        assert_eq!(
            prepared.env["WEB_CONCURRENCY"], "2",
            "512 MB / 256 MB per worker"
        );
        assert!(
            prepared.exec_d_stderr.contains("512 MB from cgroup v1"),
            "{}",
            prepared.exec_d_stderr
        );
        // The process type, from the Procfile: the launcher execs `bash -c`, which execs gunicorn.
        let mut process = launch.process();
        process.stdin(Stdio::null()).process_group(0);
        let dyno = Group(process.spawn().expect("start the web process"));
        let master = dyno.0.id();
        let body = wait_for("gunicorn to answer", Duration::from_secs(60), || {
            get(port, "/", Duration::from_secs(5)).ok().map(|r| r.body)
        });
        assert!(body.contains("\"web_concurrency\":\"2\""), "{body}");
        let workers = wait_for("the workers to boot", Duration::from_secs(30), || {
            let workers = children(master);
            (workers.len() >= 2).then_some(workers)
        });
        assert_eq!(workers.len(), 2, "workers {workers:?}");
        let in_cgroup = cgroup.pids();
        assert!(
            workers.iter().all(|w| in_cgroup.contains(w)),
            "{workers:?} in {in_cgroup:?}"
        );
        drop(dyno);
        Ok(())
    });
}

#[test]
fn launcher_run_serves_gunicorn_as_the_web_process_type() {
    needs_machine(|| {
        let (site, port) = flask_serving("web: launcher run -- gunicorn app:app\n")?;
        let launch = web_launch(&site, port);
        let expected = launch.prepare()?.env["WEB_CONCURRENCY"].clone();
        // `launcher` is the launch layer's, first on PATH.
        let run = Run::spawn(launch.process());
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("mode"), "delegate", "{}", start.line);
        assert_eq!(start.get("workers"), expected, "{}", start.line);
        assert_eq!(start.get("set_by"), "launcher", "{}", start.line);
        let body = run.wait("a 200 from gunicorn", BOOT, || {
            get(port, "/", Duration::from_secs(5))
                .ok()
                .filter(|r| r.status == 200)
        });
        assert!(
            body.body
                .contains(&format!("\"web_concurrency\":\"{expected}\"")),
            "{}",
            body.body
        );
        run.end();
        Ok(())
    });
}
