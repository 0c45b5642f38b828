//! test/local-dyno's command line: every argument is checked before anything is built (a build
//! takes minutes when cold), `--help` is an answer and not an error, and a size without a unit is
//! megabytes (512 bytes would only get the dyno killed).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

mod support;
use support::{output_within, repo, text};

/// Long enough for bash to parse arguments; far too short for a build.
const CHECKS: Duration = Duration::from_secs(20);

fn local_dyno(args: &[&str]) -> Output {
    let mut command = Command::new(repo().join("test/local-dyno"));
    command.args(args);
    output_within(&mut command, CHECKS)
}

/// Whether `--memory` can work here, as the script decides it.
fn memory_cgroups_here() -> bool {
    let root = Path::new("/sys/fs/cgroup/memory");
    is_root() && root.join("cgroup.procs").is_file()
}

fn is_root() -> bool {
    let status = Command::new("id").arg("-u").output().expect("id -u");
    text(&status.stdout).trim() == "0"
}

#[test]
fn help_exits_zero_and_says_what_a_size_without_a_unit_means() {
    let help = local_dyno(&["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", text(&help.stderr));
    let said = text(&help.stdout);
    assert!(said.starts_with("Usage: test/local-dyno"), "{said}");
    assert!(said.contains("a number alone is MB"), "{said}");
    assert!(said.contains("--dry-run"), "{said}");
}

#[test]
fn bad_arguments_are_refused_before_anything_is_built() {
    for args in [
        &["--memory", "lots"][..],
        &["--memory=12X"][..],
        &["--memory", "0"][..],
        &["--memory", "512", "--port", "http"][..],
        &["--port", "70000"][..],
        &["--env", "NOT_A_PAIR"][..],
        &["--env", "1BAD=x"][..],
        &["--web", ""][..],
        &["--colour"][..],
        &["/no/such/app"][..],
        &["--memory"][..],
    ] {
        let output = local_dyno(args);
        let (out, err) = (text(&output.stdout), text(&output.stderr));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(!out.contains("----->"), "{args:?} started a build: {out}");
        assert!(err.contains("test/local-dyno"), "{args:?}: {err}");
    }
    let lots = text(&local_dyno(&["--memory", "lots"]).stderr);
    assert!(lots.contains("\"lots\""), "names the value: {lots}");
}

#[test]
fn a_size_without_a_unit_is_megabytes() {
    for (size, megabytes) in [("512", 512), ("512M", 512), ("1G", 1024), ("1536m", 1536)] {
        let output = local_dyno(&["--dry-run", "--memory", size]);
        let (out, err) = (text(&output.stdout), text(&output.stderr));
        if memory_cgroups_here() {
            assert_eq!(output.status.code(), Some(0), "{size}: {err}");
            let bytes = megabytes * 1024 * 1024;
            let said = format!("a {megabytes} MB memory cgroup ({bytes} bytes)");
            assert!(out.contains(&said), "{size}: {out}");
        } else {
            // The machine cannot give the dyno a memory cgroup: that too is said before building.
            assert_eq!(output.status.code(), Some(2), "{size}: {out}{err}");
            assert!(err.contains("--memory needs"), "{size}: {err}");
        }
    }
    let plain = local_dyno(&["--dry-run"]);
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain.stderr));
    assert!(text(&plain.stdout).contains("this machine's size"));
}
