//! The release. The release workflow's `run:` steps (.github/workflows/release.yml) run here as
//! its jobs run them, in order, in the shared buildpack copy (the checkout), each taken from the
//! workflow's text: the build job's (this machine's static binary), the release job's (the tarball,
//! from that binary and a stand-in for the other architecture's), and the image step's, with a
//! `pack` that records what it was asked to package (pack and a registry cannot run here). The
//! tarball in use is test/cnb/release_used.rs.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::support::lifecycle::toolchain::with_toolchain;
use super::support::lifecycle::{BUILD_TIMEOUT, SYSTEM_PATH};
use super::support::{make_executable, needs_machine, once, output_within, repo};
use super::{descriptor, log, shared, text};

const WORKFLOW: &str = ".github/workflows/release.yml";
pub(super) const ARCH: &str = std::env::consts::ARCH;

fn other_arch() -> &'static str {
    if ARCH == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    }
}

pub(super) fn version() -> String {
    descriptor()["buildpack"]["version"]
        .as_str()
        .expect("version")
        .to_owned()
}

// ---- The workflow's run steps ----------------------------------------------------------------------

/// A step of the workflow with a `run:`: its job, name, the names its `env:` sets, the command.
#[derive(Debug)]
struct RunStep {
    job: String,
    name: String,
    env: Vec<String>,
    run: String,
}

/// The workflow's `run:` steps in order, read line by line: the workflow is written with two-space
/// indents and keeps each `run:` to one line (one call to a script), which this enforces.
fn run_steps() -> Vec<RunStep> {
    let workflow = fs::read_to_string(repo().join(WORKFLOW)).expect(WORKFLOW);
    let (mut steps, mut job, mut in_jobs) = (Vec::new(), String::new(), false);
    let (mut name, mut env, mut in_env) = (String::new(), Vec::new(), false);
    for line in workflow.lines() {
        let content = line.trim_start();
        let indent = line.len() - content.len();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if indent == 0 {
            in_jobs = content == "jobs:";
        }
        if !in_jobs || indent == 0 {
            continue;
        }
        if indent == 2 {
            job = content.trim_end_matches(':').to_owned();
            continue;
        }
        let (indent, key) = match content.strip_prefix("- ") {
            Some(rest) if indent == 6 => {
                name.clear();
                env.clear();
                in_env = false;
                (8, rest)
            }
            _ => (indent, content),
        };
        match (indent, key.split_once(':')) {
            (8, Some(("name", value))) => name = value.trim().to_owned(),
            (8, Some(("env", _))) => in_env = true,
            (8, Some(("run", value))) => {
                let run = value.trim().to_owned();
                assert!(
                    !run.is_empty() && !run.starts_with(['|', '>']),
                    "{WORKFLOW}: keep each run: one line, a call to a script: {line}"
                );
                assert!(!name.is_empty(), "{WORKFLOW}: a run: step without a name");
                steps.push(RunStep {
                    job: job.clone(),
                    name: name.clone(),
                    env: env.clone(),
                    run,
                });
            }
            (8, _) => in_env = false,
            (10, Some((var, _))) if in_env => env.push(var.to_owned()),
            _ => {}
        }
    }
    steps
}

/// Runs the workflow's step `name` as its job would (`shell: bash` is `bash --noprofile --norc
/// -eo pipefail`) in `checkout`, through `bash` (a command for /bin/bash: plain, or in the
/// toolchain's namespace), with `env` for GitHub's variables and the step's own `env:`.
fn run_step(name: &str, mut bash: Command, checkout: &Path, env: &[(&str, String)]) -> Output {
    let steps = run_steps();
    let step = steps
        .iter()
        .find(|step| step.name == name)
        .unwrap_or_else(|| panic!("{WORKFLOW} has no run step named {name:?}"));
    for var in &step.env {
        assert!(
            env.iter().any(|(k, _)| k == var),
            "{name}: the test gives no {var}"
        );
    }
    bash.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &step.run])
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .current_dir(checkout);
    output_within(&mut bash, BUILD_TIMEOUT)
}

fn plain_bash(path: &str) -> Command {
    let mut bash = Command::new("/bin/bash");
    bash.env_clear().env("PATH", path);
    bash
}

/// The first 64 bytes of an ELF binary for `arch`: what bin/package checks of a binary it is given
/// for another architecture (it cannot run one).
fn elf_header(arch: &str) -> Vec<u8> {
    let mut header = vec![0u8; 64];
    header[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    header[16] = 2;
    header[18] = if arch == "x86_64" { 0x3e } else { 0xb7 };
    header
}

/// Writes `dir/name` and `dir/name.sha256` as sha256sum writes it.
pub(super) fn with_checksum(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).expect("write");
    let sum = Command::new("sha256sum")
        .arg(name)
        .current_dir(dir)
        .output()
        .expect("sha256sum");
    fs::write(dir.join(format!("{name}.sha256")), sum.stdout).expect("write");
}

/// What the release workflow's steps made here.
pub(super) struct Release {
    /// The release job's dist/: what it uploads.
    pub(super) dist: PathBuf,
    /// The steps that ran, in order.
    pub(super) ran: Vec<String>,
    /// The arguments the image step gave pack, one per line, and a copy of what it packaged.
    pub(super) pack_args: String,
    pub(super) pack_tree: PathBuf,
}

pub(super) fn release() -> Result<&'static Release, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "the release steps run as root (the toolchain is mounted in a namespace)".into(),
        );
    }
    static RELEASE: OnceLock<Result<Release, String>> = OnceLock::new();
    Ok(once(&RELEASE, run_release, "the release workflow's steps"))
}

fn run_release() -> Result<Release, String> {
    let shared = shared();
    // The checkout: the shared copy (cargo's fingerprints hold its path), with the one script of
    // .ci/ that a step calls. bin/package leaves .ci/ and the outputs out of the tarball.
    let checkout = shared.buildpack.clone();
    // Beside the shared build (statics are never dropped), removed with it.
    let base = checkout.with_file_name("release");
    let (binaries, record, stub) = (base.join("binaries"), base.join("pack"), base.join("stub"));
    for dir in [&binaries, &record, &stub, &checkout.join(".ci")] {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    fs::copy(
        repo().join(".ci/release-image"),
        checkout.join(".ci/release-image"),
    )
    .map_err(|e| e.to_string())?;
    let github = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("GITHUB_REF_NAME", format!("v{}", version())),
            ("RUNNER_TEMP", base.display().to_string()),
            ("HOME", base.display().to_string()),
        ];
        env.extend_from_slice(extra);
        env
    };
    let mut ran = Vec::new();
    let mut step = |name: &str, bash: Command, env: &[(&str, String)]| {
        let out = run_step(name, bash, &checkout, env);
        ran.push(name.to_owned());
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{name}:\n{}", log(&out)))
        }
    };

    // The build job, on this machine's runner: its static binary, then its upload-artifact.
    // CARGO_TARGET_DIR: the shared build's, so cargo finds its work done.
    let target = shared
        .cold_layers
        .join("launcher/source-build/launcher/target");
    let env = github(&[("CARGO_TARGET_DIR", target.display().to_string())]);
    step(
        "Build the static binary",
        with_toolchain(Path::new("/bin/bash"), &[]),
        &env,
    )?;
    let built = checkout.join("dist");
    for file in [
        format!("launcher-linux-{ARCH}"),
        format!("launcher-linux-{ARCH}.sha256"),
    ] {
        fs::rename(built.join(&file), binaries.join(&file)).map_err(|e| e.to_string())?;
    }
    fs::remove_dir_all(&built).map_err(|e| e.to_string())?;
    // What download-artifact gives the release job: the files without their execute bits.
    let artifact = binaries.join(format!("launcher-linux-{ARCH}"));
    fs::set_permissions(&artifact, fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())?;
    // The other runner's artifact: a stand-in (nothing here builds or runs that architecture).
    let other = format!("launcher-linux-{}", other_arch());
    with_checksum(&binaries, &other, &elf_header(other_arch()));

    // The release job: no toolchain at all.
    step("Package the release", plain_bash(SYSTEM_PATH), &github(&[]))?;
    let pack = "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$PACK_RECORD/args\"\nwhile [ $# -gt 0 ]; do\n  [ \"$1\" = --config ] && cp -a \"$(dirname \"$2\")\" \"$PACK_RECORD/tree\"\n  shift\ndone\n";
    fs::write(stub.join("pack"), pack).map_err(|e| e.to_string())?;
    make_executable(&stub.join("pack"));
    let env = github(&[
        ("IMAGE", "ghcr.io/Launcher-Buildpack/launcher".to_owned()),
        ("PACK_RECORD", record.display().to_string()),
    ]);
    let path = format!("{}:{SYSTEM_PATH}", stub.display());
    step("Publish the CNB image", plain_bash(&path), &env)?;
    Ok(Release {
        dist: checkout.join("dist"),
        ran,
        pack_args: fs::read_to_string(record.join("args")).map_err(|e| e.to_string())?,
        pack_tree: record.join("tree"),
    })
}

#[test]
fn every_run_step_of_the_release_workflow_is_a_script_run_here() {
    needs_machine(|| {
        let release = release()?;
        let steps = run_steps();
        let mut here = Vec::new();
        for step in &steps {
            if step.run.ends_with(" bash .ci/run") {
                // CI itself, which is what runs this test: as root, with CI=true.
                assert_eq!(step.job, "test", "{step:?}");
                assert!(
                    step.run.starts_with("sudo env ") && step.run.contains(" CI=true "),
                    "{step:?}"
                );
                continue;
            }
            let script = step.run.split_whitespace().next().unwrap_or_default();
            assert!(
                (script.starts_with("bin/") || script.starts_with(".ci/"))
                    && repo().join(script).is_file(),
                "not a script of the repository: {step:?}"
            );
            here.push(step.name.clone());
        }
        assert_eq!(
            release.ran, here,
            "the steps run here, in the workflow's order"
        );
        assert_eq!(here.len() + 1, steps.len());
        Ok(())
    });
}

#[test]
fn the_release_is_one_tarball_with_both_binaries_and_a_package_toml_for_pack() {
    needs_machine(|| {
        let release = release()?;
        let version = version();
        let tarball = format!("launcher-buildpack-{version}.tgz");
        let mut files: Vec<String> = fs::read_dir(&release.dist)
            .expect("dist")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut expected = vec![
            tarball.clone(),
            format!("{tarball}.sha256"),
            "launcher-linux-aarch64".to_owned(),
            "launcher-linux-aarch64.sha256".to_owned(),
            "launcher-linux-x86_64".to_owned(),
            "launcher-linux-x86_64.sha256".to_owned(),
        ];
        expected.sort();
        assert_eq!(files, expected, "exactly what the release uploads");
        for arch in ["x86_64", "aarch64"] {
            let binary = release.dist.join(format!("launcher-linux-{arch}"));
            let mode = fs::metadata(&binary).expect("binary").permissions().mode();
            assert_eq!(mode & 0o777, 0o755, "{}", binary.display());
        }
        let check = Command::new("sh")
            .args(["-c", "sha256sum --check --strict *.sha256"])
            .current_dir(&release.dist)
            .output()
            .expect("sha256sum");
        assert!(check.status.success(), "{}", log(&check));

        let listing = Command::new("tar")
            .arg("-tzf")
            .arg(release.dist.join(&tarball))
            .output()
            .expect("tar");
        let listing = text(&listing.stdout);
        let entries: Vec<&str> = listing.lines().collect();
        assert!(entries.iter().all(|e| e.starts_with("./")), "{listing}");
        for arch in ["x86_64", "aarch64"] {
            for file in [
                format!("./bin/prebuilt/launcher-linux-{arch}"),
                format!("./bin/prebuilt/launcher-linux-{arch}.sha256"),
            ] {
                assert!(entries.contains(&file.as_str()), "no {file} in {listing}");
            }
        }
        for file in [
            "./bin/detect",
            "./bin/compile",
            "./bin/release",
            "./bin/build",
            "./lib/binary.sh",
            "./buildpack.toml",
            "./package.toml",
        ] {
            assert!(entries.contains(&file), "no {file} in {listing}");
        }
        for left_out in ["./test/", "./.ci/", "./.github/", "./target/", "./dist/"] {
            assert!(
                !entries.iter().any(|e| e.starts_with(left_out)),
                "{listing}"
            );
        }
        assert!(!entries.contains(&"./bin/package"), "{listing}");

        // What pack was given: the tarball's tree, with package.toml pointing at it.
        let image = format!("ghcr.io/launcher-buildpack/launcher:{version}");
        let args: Vec<&str> = release.pack_args.lines().collect();
        assert_eq!(args[..3], ["buildpack", "package", image.as_str()]);
        assert_eq!(args[3], "--config");
        assert!(args[4].ends_with("/package.toml"), "{args:?}");
        let flags = [
            "--publish",
            "--target",
            "linux/amd64",
            "--target",
            "linux/arm64",
        ];
        assert_eq!(args[5..], flags);
        let package: toml::Table = fs::read_to_string(release.pack_tree.join("package.toml"))
            .expect("package.toml")
            .parse()
            .expect("package.toml is TOML");
        assert_eq!(package["buildpack"]["uri"].as_str(), Some("."));
        assert!(
            !package.contains_key("platform"),
            "pack refuses platform.os with --target"
        );
        assert_eq!(
            fs::read(release.pack_tree.join("buildpack.toml")).expect("buildpack.toml"),
            fs::read(repo().join("buildpack.toml")).expect("buildpack.toml")
        );
        for arch in ["x86_64", "aarch64"] {
            let binary = release
                .pack_tree
                .join(format!("bin/prebuilt/launcher-linux-{arch}"));
            assert!(binary.is_file(), "{}", binary.display());
        }
        Ok(())
    });
}

#[test]
fn bin_package_refuses_a_wrong_tag_a_bad_checksum_and_another_architectures_binary() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let other = other_arch();
    let name = format!("launcher-linux-{other}");
    let package = |args: &[&str]| {
        let mut command = Command::new(repo().join("bin/package"));
        command
            .args(args)
            .arg(dir.path().join("out"))
            .env_clear()
            .env("PATH", SYSTEM_PATH);
        let out = output_within(&mut command, BUILD_TIMEOUT);
        assert!(!out.status.success(), "{args:?}: {}", log(&out));
        text(&out.stderr)
    };
    let given = dir.path().join(&name);
    let given = given.to_str().expect("utf-8");

    let stderr = package(&["--tag", "v9.9.9"]);
    assert!(
        stderr.contains("The tag v9.9.9 is not this buildpack's version"),
        "{stderr}"
    );
    fs::write(dir.path().join(&name), elf_header(other)).expect("write");
    assert!(package(&["--binary", given]).contains("has no checksum file"));
    with_checksum(dir.path(), &name, &elf_header(other));
    tamper(&dir.path().join(&name));
    assert!(package(&["--binary", given]).contains("does not match its SHA-256"));
    with_checksum(dir.path(), &name, &elf_header(ARCH));
    let stderr = package(&["--binary", given]);
    assert!(
        stderr.contains(&format!(
            "is not an {other} Linux binary (its ELF header says {ARCH})"
        )),
        "{stderr}"
    );
    let stderr = package(&["--binary", "/bin/true"]);
    assert!(stderr.contains("A --binary must be named"), "{stderr}");
}

/// Appends a byte to `path`: a damaged or tampered file.
pub(super) fn tamper(path: &Path) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(b"\0"))
        .expect("tamper");
}
