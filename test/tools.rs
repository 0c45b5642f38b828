//! The scripts a developer runs by hand. test/local-dyno: every argument is checked before
//! anything is built (a build takes minutes when cold), `--help` is an answer and not an error,
//! and a size without a unit is megabytes (512 bytes would only get the dyno killed).
//! bin/build-launcher: the static binary bin/compile builds, where the user wants it. test/vm:
//! a working directory under /tmp reaches the guest.

use std::fs;
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

/// Whether `--memory` can work here, as the script decides it: root with the cgroup v1 memory
/// controller, or the cgroup v2 hierarchy with systemd to make the cgroup, or root.
fn memory_cgroups_here() -> bool {
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let v2 = Path::new("/sys/fs/cgroup");
    if v1.join("memory.limit_in_bytes").is_file() {
        return is_root() && v1.join("cgroup.procs").is_file();
    }
    let controllers = fs::read_to_string(v2.join("cgroup.controllers"));
    let Ok(controllers) = controllers else {
        return false;
    };
    let systemd_run = Command::new("sh")
        .args(["-c", "command -v systemd-run"])
        .output()
        .is_ok_and(|o| o.status.success());
    let systemd = Path::new("/run/systemd/system").is_dir() && systemd_run;
    let memory = controllers.split_whitespace().any(|c| c == "memory");
    systemd || (is_root() && memory)
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

/// A cargo that records how it was called and "builds" a launcher that reports its version.
const CARGO_STUB: &str = r#"#!/bin/sh
printf '%s\n' "RUSTFLAGS=$RUSTFLAGS" "$@" >"$CARGO_TARGET_DIR/cargo-args"
while [ "$1" != --target ]; do shift; done
mkdir -p "$CARGO_TARGET_DIR/$2/release"
printf '#!/bin/sh\necho launcher 0.1.0\n' >"$CARGO_TARGET_DIR/$2/release/launcher"
chmod 0700 "$CARGO_TARGET_DIR/$2/release/launcher"
"#;

#[test]
fn build_launcher_builds_what_bin_compile_builds_and_puts_it_where_asked() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let stub_bin = dir.path().join("stub-bin");
    fs::create_dir(&stub_bin).expect("mkdir");
    fs::write(stub_bin.join("cargo"), CARGO_STUB).expect("write");
    support::make_executable(&stub_bin.join("cargo"));
    let target = dir.path().join("target");
    fs::create_dir(&target).expect("mkdir");
    let dest = dir.path().join("bin/launcher");
    let mut command = Command::new(repo().join("bin/build-launcher"));
    command
        .arg(&dest)
        .env("PATH", format!("{}:/usr/bin:/bin", stub_bin.display()))
        .env("CARGO_TARGET_DIR", &target);
    let output = output_within(&mut command, CHECKS);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), dest.display().to_string());
    let args = fs::read_to_string(target.join("cargo-args")).expect("cargo ran");
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    for arg in [
        "RUSTFLAGS=-C target-feature=+crt-static",
        "build",
        "--release",
        "--locked",
        triple.as_str(),
    ] {
        assert!(args.lines().any(|l| l == arg), "{arg} not in:\n{args}");
    }
    let version = Command::new(&dest).arg("--version").output().expect("run");
    assert_eq!(text(&version.stdout), "launcher 0.1.0\n");
    let help = output_within(
        Command::new(repo().join("bin/build-launcher")).arg("--help"),
        CHECKS,
    );
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).starts_with("Usage: bin/build-launcher [DEST]"));
}

/// test/vm run from a directory under /tmp (a checkout there, as a CI clone may be): the guest
/// mounts its own tmpfs on /tmp, and the directory is shared with it on its own, so the command
/// finds its files (before, the guest could not even `cd` to it and reported no status).
#[test]
fn test_vm_runs_its_command_in_a_working_directory_under_tmp() {
    let vm = repo().join("test/vm");
    let check = output_within(Command::new(&vm).arg("--check"), CHECKS);
    if check.status.code() == Some(3) {
        let ci = std::env::var("CI").as_deref() == Ok("true");
        let no_vm = std::env::var(support::vm::NO_VM).unwrap_or_default();
        match support::vm::skip(text(&check.stderr).trim(), ci, &no_vm) {
            Ok(message) => return eprintln!("SKIPPED: {message}"),
            Err(message) => panic!("{message}"),
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("launcher-test-vm-cwd")
        .tempdir_in("/tmp")
        .expect("a directory under /tmp");
    fs::write(dir.path().join("marker"), "seen in the guest\n").expect("write");
    let run = output_within(
        Command::new(&vm)
            .args(["--timeout", "180", "--", "cat", "marker"])
            .current_dir(dir.path()),
        Duration::from_secs(200),
    );
    let stdout = text(&run.stdout);
    assert!(
        run.status.success() && stdout.contains("seen in the guest"),
        "{:?}\n{stdout}\n{}",
        run.status,
        text(&run.stderr)
    );
}
