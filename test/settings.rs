//! Black-box tests of the settings: what `launcher run` does with a bad `launcher.toml` (refuses to
//! start, and says so), that every key of the settings table is taken by every command, and the
//! labels `launcher run`'s children get, seen by sourcing the real `.profile.d` script inside a
//! child, as anything that runs the profile again in that environment would.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

mod support;
use support::harness::{secs, Run, BOOT, LAUNCHER, SYSTEM_PATH};
use support::slug::Slug;
use support::text;

/// `launcher ARGS` in `dir` with only PATH and `env`, run to its end (killed after 10 s).
fn finish(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(LAUNCHER);
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .envs(env.iter().copied());
    Run::output(command, secs(10))
}

#[test]
fn launcher_run_refuses_a_bad_launcher_toml_and_says_so_where_the_boot_script_ignores_it() {
    let cases = [
        ("colour = 1\n", "unknown setting \"colour\""),
        ("graceful_timeout = \"25s\"\n", "graceful_timeout"),
        ("sizing = \"fast\"\n", "sizing"),
        ("mode = [\n", "not valid TOML"),
    ];
    for (file, named) in cases {
        let dir = TempDir::new().expect("temp dir");
        fs::write(dir.path().join("launcher.toml"), file).expect("write");
        let run = finish(dir.path(), &[], &["run", "--", "sleep", "30"]);
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{file:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{file:?}: one line: {stderr}");
        assert!(
            lines[0].starts_with("launcher: error: launcher.toml"),
            "{stderr}"
        );
        assert!(lines[0].contains(named), "{file:?}: {stderr}");
        assert!(lines[0].contains("refusing to start"), "{file:?}: {stderr}");
        assert!(
            !lines[0].contains("ignored"),
            "{file:?} says ignored, then exits: {stderr}"
        );

        // The boot script and `launcher size` carry on, and say what they did instead.
        let size = finish(dir.path(), &[], &["size"]);
        assert_eq!(
            size.status.code(),
            Some(0),
            "{file:?}: {}",
            text(&size.stderr)
        );
        let stdout = text(&size.stdout);
        let note = stdout
            .lines()
            .find(|l| l.starts_with("warning: ") && l.contains(named))
            .unwrap_or_else(|| panic!("{file:?}: no warning naming {named}:\n{stdout}"));
        assert!(
            note.contains("ignored") || note.contains("using the default"),
            "{note}"
        );
        assert!(!note.contains("refusing"), "{note}");
    }
}

#[test]
fn a_launcher_toml_holding_every_run_setting_starts_launcher_run() {
    let dir = TempDir::new().expect("temp dir");
    fs::write(
        dir.path().join("launcher.toml"),
        "disable = false\nmax_workers = 2\nmode = \"fanout\"\ngraceful_timeout = 5\n\
         ready_grace = 0.5\ngive_up_after = 30\nsample_interval = 0\nmemory_guard = \"on\"\n\
         memory_soft_limit = 80\nworker_memory_max = 300\nmemory_cooldown = 3\n\
         sizing = \"measured\"\nsizing_warmup = 5\n",
    )
    .expect("write");
    let mut command = Command::new(LAUNCHER);
    command
        .args(["run", "--", "sleep", "30"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", SYSTEM_PATH);
    let run = Run::spawn(command);
    let start = run.wait_event("start", BOOT, |_| true);
    assert_eq!(start.get("workers"), "2", "{}", run.log());
    let memory = run.wait_event("memory", BOOT, |_| true);
    assert_eq!(memory.get("sizing"), "measured", "{}", memory.line);
    assert_eq!(memory.get("warmup_s"), "5.0", "{}", memory.line);
    run.wait_events("worker_spawn", 2, BOOT, |_| true);
    let (_, stderr) = run.end();
    assert!(stderr.is_empty(), "{stderr:?}");
}

#[test]
fn launcher_run_mode_auto_on_the_command_line_wins_over_launcher_mode_and_the_file() {
    // `sleep` is no server auto delegates to: auto runs it in fan-out.
    for (env, file) in [
        (&[("LAUNCHER_MODE", "delegate")][..], None),
        (&[][..], Some("mode = \"delegate\"\n")),
    ] {
        let dir = TempDir::new().expect("temp dir");
        if let Some(file) = file {
            fs::write(dir.path().join("launcher.toml"), file).expect("write");
        }
        let mut command = Command::new(LAUNCHER);
        command
            .args(["run", "--mode", "auto", "--", "sleep", "30"])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("LAUNCHER_SAMPLE_INTERVAL", "0")
            .envs(env.iter().copied());
        let run = Run::spawn(command);
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(
            start.get("mode"),
            "fanout",
            "{env:?} {file:?}: {}",
            start.line
        );
        assert!(
            start.get("mode_reason").starts_with("--mode auto"),
            "{}",
            start.line
        );
        run.end();
    }
}

/// The launcher's names as a child of `launcher run` sees them after sourcing the profile again,
/// one map per child: the child writes them to `<dir>/<its pid>` and stays up.
fn labels_after_profile(mode: &str, env: &[(&str, &str)]) -> Vec<BTreeMap<String, String>> {
    let slug = Slug::new();
    let out = TempDir::new().expect("temp dir");
    let script = format!(
        "set -eu; for f in \"$HOME\"/.profile.d/*.sh; do source \"$f\"; done; \
         launcher size --json > {0}/$$.json.tmp; \
         env | grep -E '^(WEB_CONCURRENCY|LAUNCHER_WEB_CONCURRENCY)' >> {0}/$$.json.tmp || true; \
         mv {0}/$$.json.tmp {0}/$$.json; exec sleep 30",
        out.path().display()
    );
    let mut command = Command::new(LAUNCHER);
    command
        .args(["run", "--mode", mode, "--", "bash", "--norc", "-c", &script])
        .current_dir(slug.path())
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("HOME", slug.path())
        .env("LAUNCHER_SAMPLE_INTERVAL", "0")
        .envs(env.iter().copied());
    let run = Run::spawn(command);
    let start = run.wait_event("start", BOOT, |_| true);
    let children: usize = match mode {
        "delegate" => 1,
        _ => start.num("workers"),
    };
    let files = run.wait(&format!("{children} children's labels"), BOOT, || {
        let done: Vec<_> = fs::read_dir(out.path())
            .expect("read dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        (done.len() == children).then_some(done)
    });
    files
        .iter()
        .map(|path| {
            let text = fs::read_to_string(path).expect("read");
            let (json, vars) = text.split_at(text.rfind('}').expect("json") + 1);
            let json: serde_json::Value = serde_json::from_str(json).expect("json");
            let mut labels: BTreeMap<String, String> = vars
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            labels.insert(
                "size.web_concurrency".into(),
                json["web_concurrency"].to_string(),
            );
            labels.insert("size.set_by".into(), json["set_by"].to_string());
            labels
        })
        .collect()
}

#[test]
fn a_delegated_server_keeps_the_users_value_when_the_profile_runs_again_inside_it() {
    let children = labels_after_profile("delegate", &[("WEB_CONCURRENCY", "3")]);
    let child = &children[0];
    assert_eq!(child["WEB_CONCURRENCY"], "3", "{child:?}");
    assert!(!child.contains_key("WEB_CONCURRENCY_SET_BY"), "{child:?}");
    assert_eq!(child["size.web_concurrency"], "3", "{child:?}");
    assert_eq!(
        child["size.set_by"], "null",
        "the user's value stays the user's: {child:?}"
    );
}

#[test]
fn a_delegated_server_of_the_launchers_own_count_gets_it_marked_as_the_launchers() {
    let children = labels_after_profile("delegate", &[("LAUNCHER_MAX_WORKERS", "2")]);
    let child = &children[0];
    assert_eq!(child["WEB_CONCURRENCY"], "2", "{child:?}");
    assert_eq!(child["WEB_CONCURRENCY_SET_BY"], "launcher", "{child:?}");
    assert_eq!(child["LAUNCHER_WEB_CONCURRENCY"], "2", "{child:?}");
    assert_eq!(child["size.set_by"], "\"launcher\"", "{child:?}");
}

#[test]
fn fan_out_children_keep_one_worker_each_when_the_profile_runs_again_inside_them() {
    for env in [
        &[("WEB_CONCURRENCY", "3")][..],
        &[("LAUNCHER_MAX_WORKERS", "3")][..],
    ] {
        let children = labels_after_profile("fanout", env);
        assert_eq!(children.len(), 3, "{env:?}");
        for child in &children {
            assert_eq!(child["WEB_CONCURRENCY"], "1", "{env:?}: {child:?}");
            assert_eq!(child["size.web_concurrency"], "1", "{env:?}: {child:?}");
        }
    }
}
