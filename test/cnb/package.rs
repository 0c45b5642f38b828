//! bin/package given a binary for this machine built elsewhere (no cargo): a C program standing in
//! for the launcher, compiled with gcc. Which binaries it takes as static, and which files of the
//! source its tarball takes: in a git checkout, only those git tracks.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

use super::release::with_checksum;
use super::support::lifecycle::{BUILD_TIMEOUT, SYSTEM_PATH};
use super::support::{needs_machine, output_within, repo};
use super::{copy, log, text, BUILDPACK_FILES};

const ARCH: &str = std::env::consts::ARCH;

/// `dir/launcher-linux-ARCH` and its .sha256: a C program that reports the buildpack's version as
/// the launcher does, linked as `flags` say (`-static`: plain static, not static-pie).
fn c_launcher(dir: &Path, flags: &[&str]) -> Result<String, String> {
    let version = super::descriptor()["buildpack"]["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let source = dir.join("launcher.c");
    let program =
        format!("#include <stdio.h>\nint main(void) {{ puts(\"launcher {version}\"); }}\n");
    fs::write(&source, program).map_err(|e| e.to_string())?;
    let name = format!("launcher-linux-{ARCH}");
    let binary = dir.join(&name);
    let out = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .map_err(|e| format!("gcc (to compile a stand-in binary): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gcc {flags:?} failed (libc6-dev has the static C library): {}",
            log(&out)
        ));
    }
    with_checksum(dir, &name, &fs::read(&binary).map_err(|e| e.to_string())?);
    Ok(binary.display().to_string())
}

/// `buildpack/bin/package --binary BINARY OUT` with the system's PATH (no cargo).
fn package(buildpack: &Path, binary: &str, out: &Path) -> Output {
    let mut command = Command::new(buildpack.join("bin/package"));
    command
        .args(["--binary", binary])
        .arg(out)
        .env_clear()
        .env("PATH", SYSTEM_PATH);
    output_within(&mut command, BUILD_TIMEOUT)
}

#[test]
fn bin_package_takes_a_plain_static_binary_and_refuses_a_dynamic_one() {
    needs_machine(|| {
        let dir = TempDir::new().map_err(|e| e.to_string())?;
        let binary = c_launcher(dir.path(), &["-static"])?;
        // Plain static, as ldd sees it: "not a dynamic executable", and it exits 1.
        let ldd = Command::new("ldd").arg(&binary).output().expect("ldd");
        assert!(
            text(&ldd.stdout).contains("not a dynamic executable")
                || text(&ldd.stderr).contains("not a dynamic executable"),
            "{}",
            log(&ldd)
        );
        assert!(!ldd.status.success());
        let out = package(&repo(), &binary, &dir.path().join("out"));
        assert!(out.status.success(), "{}", log(&out));
        assert!(
            text(&out.stdout).contains("Static, reports launcher "),
            "{}",
            log(&out)
        );

        let binary = c_launcher(dir.path(), &[])?;
        let out = package(&repo(), &binary, &dir.path().join("out"));
        assert!(!out.status.success(), "{}", log(&out));
        assert!(
            text(&out.stderr).contains("is dynamically linked"),
            "{}",
            log(&out)
        );
        Ok(())
    });
}

/// The entries of the tarball bin/package wrote to `out`.
fn listing(out: &Path) -> Vec<String> {
    let tarball = fs::read_dir(out)
        .expect("out")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .expect("a tarball");
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(tarball)
        .output()
        .expect("tar");
    text(&list.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn in_a_git_checkout_the_tarball_takes_only_the_files_git_tracks() {
    needs_machine(|| {
        let dir = TempDir::new().map_err(|e| e.to_string())?;
        let binary = c_launcher(dir.path(), &["-static"])?;
        let checkout = dir.path().join("checkout");
        fs::create_dir_all(checkout.join("bin")).map_err(|e| e.to_string())?;
        for file in BUILDPACK_FILES {
            copy(&repo().join(file), &checkout.join(file));
        }
        fs::write(checkout.join("NOTES"), "tracked, then deleted").map_err(|e| e.to_string())?;
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(&checkout)
                .args(args)
                .output()
                .map_err(|e| format!("git: {e}"))
                .and_then(|out| match out.status.success() {
                    true => Ok(()),
                    false => Err(format!("git {args:?}: {}", log(&out))),
                })
        };
        git(&["init", "--quiet"])?;
        git(&["add", "--all"])?;
        fs::remove_file(checkout.join("NOTES")).map_err(|e| e.to_string())?;
        // Untracked: what a benchmark makes in the checkout, and a stray plot.
        fs::create_dir_all(checkout.join(".venv-bench/bin")).map_err(|e| e.to_string())?;
        fs::write(checkout.join(".venv-bench/bin/python3"), "").map_err(|e| e.to_string())?;
        fs::write(checkout.join("plot.png"), "").map_err(|e| e.to_string())?;

        let out = package(&checkout, &binary, &dir.path().join("git"));
        assert!(out.status.success(), "{}", log(&out));
        let entries = listing(&dir.path().join("git"));
        for file in ["./bin/compile", "./lib/binary.sh", "./launcher/Cargo.toml"] {
            assert!(
                entries.iter().any(|e| e == file),
                "no {file} in {entries:?}"
            );
        }
        for left_out in [
            "./plot.png",
            "./.venv-bench",
            "./NOTES",
            "./bin/package",
            "./bin/build-launcher",
        ] {
            assert!(
                !entries.iter().any(|e| e.starts_with(left_out)),
                "{entries:?}"
            );
        }

        // Not a git checkout: every file but the fixed list of what a release leaves out.
        fs::remove_dir_all(checkout.join(".git")).map_err(|e| e.to_string())?;
        let out = package(&checkout, &binary, &dir.path().join("plain"));
        assert!(out.status.success(), "{}", log(&out));
        let entries = listing(&dir.path().join("plain"));
        assert!(entries.iter().any(|e| e == "./plot.png"), "{entries:?}");
        assert!(
            !entries.iter().any(|e| e.starts_with("./.venv-bench")),
            "{entries:?}"
        );
        Ok(())
    });
}
