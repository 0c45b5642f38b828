//! bin/package given a binary for this machine built elsewhere (no cargo): a C program standing in
//! for the launcher, compiled with gcc: which binaries it takes as static.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

use super::release::with_checksum;
use super::support::lifecycle::{BUILD_TIMEOUT, SYSTEM_PATH};
use super::support::{needs_machine, output_within, repo};
use super::{log, text};

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
