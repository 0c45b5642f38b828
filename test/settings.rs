//! Black-box tests of the settings: what `launcher run` does with a bad `launcher.toml` (refuses to
//! start, and says so), that every key of the settings table is taken by every command.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

mod support;
use support::harness::{secs, Run, BOOT, LAUNCHER, SYSTEM_PATH};

/// `launcher ARGS` in `dir` with only PATH and `env`, run to its end (killed after 10 s).
fn finish(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(LAUNCHER);
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .envs(env.iter().copied());
    let mut run = Run::spawn(command);
    let status = run.wait_exit(secs(10));
    let (stdout, stderr) = run.end();
    Output {
        status,
        stdout: stdout.join("\n").into_bytes(),
        stderr: stderr.join("\n").into_bytes(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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
            .find(|l| l.contains(named))
            .unwrap_or_else(|| panic!("{file:?}: no note naming {named}:\n{stdout}"));
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
