//! The Cloud Native Buildpack side: buildpack.toml as a CNB descriptor, and the buildpack built and
//! started by the reference lifecycle (`support::lifecycle`: its own detector, builder and
//! launcher, driven as a platform drives them), in a group after a stand-in language buildpack
//! (test/fixtures/buildpacks/language), every build as a non-root user with the buildpacks mounted
//! read-only. Only the image's export (and the cache it carries to the next build) is stood in for:
//! it needs a registry or a Docker daemon.
//!
//! One cold cargo build serves the whole file (`shared()`); other builds find its binary in their
//! restored cache layer, and the release workflow's steps (`release`, test/cnb/release.rs) its
//! cargo target dir. bin/package on binaries built elsewhere: `package`, test/cnb/package.rs.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

#[path = "cnb/build.rs"]
mod build;
#[path = "cnb/launch.rs"]
mod launch;
#[path = "cnb/package.rs"]
mod package;
#[path = "cnb/release.rs"]
mod release;
#[path = "cnb/release_used.rs"]
mod release_used;
mod support;
use support::harness::{Run, BOOT, SECOND};
use support::http::get;
use support::lifecycle::launch::Launch;
use support::lifecycle::toolchain::BuildOptions;
use support::lifecycle::{copy, layer_types, open_to_all, Site, Types};
use support::procs::children;
use support::text;
use support::{
    fixture, free_port, make_executable, needs_machine, once, output_within, repo, run_dir, venv,
    wait_for, MemoryCgroup, READ_AT_BOOT,
};

const ID: &str = "launcher";
const FIR_WEB: &str = "web-12a34b56d-e78f9";
const BUILDPACK_FILES: [&str; 10] = [
    "bin/detect",
    "bin/build",
    "bin/compile",
    "bin/release",
    "bin/package",
    "lib",
    "buildpack.toml",
    "Cargo.toml",
    "Cargo.lock",
    "launcher",
];

fn log(output: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}",
        text(&output.stdout),
        text(&output.stderr)
    )
}

fn copy_buildpack(dest: &Path) {
    fs::create_dir_all(dest.join("bin")).expect("mkdir");
    for file in BUILDPACK_FILES {
        copy(&repo().join(file), &dest.join(file));
    }
}

// ---- The one cold build ----------------------------------------------------------------------------

/// The cold build every test shares: copies of the buildpack and of the stand-in language
/// buildpack, and the layers its first build left (the cache layer holds cargo's target dir and
/// the binary).
struct Shared {
    buildpack: PathBuf,
    language: PathBuf,
    /// The layers root after the cold build.
    cold_layers: PathBuf,
    /// The same with only the cached binary in the cache layer: what warm builds restore.
    warm_layers: PathBuf,
    cold_log: String,
    cold_cargo_calls: String,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    once(&SHARED, cold_build, "the shared cold build")
}

/// In the temp dir, not under target/: the build user must reach the copies, and the checkout
/// may be in a directory closed to other users (root's home).
fn cold_build() -> Result<Shared, String> {
    let run_dir = run_dir(&std::env::temp_dir(), "launcher-cnb-test");
    open_to_all(run_dir.parent().expect("base"));
    open_to_all(&run_dir);
    let buildpack = run_dir.join("buildpack");
    copy_buildpack(&buildpack);
    let language = run_dir.join("language");
    copy(&fixture("buildpacks/language"), &language);
    let site = Site::new(&fixture("flask"))?;
    let output = site.build(&[&buildpack], &BuildOptions::cargo());
    let cold_log = log(&output);
    if !output.status.success() {
        return Err(cold_log);
    }
    let cold_layers = run_dir.join("cold-layers");
    copy(&site.layers(), &cold_layers);
    let warm_layers = run_dir.join("warm-layers");
    copy(&site.layers(), &warm_layers);
    fs::remove_dir_all(warm_layers.join("launcher/source-build/launcher/target"))
        .map_err(|e| format!("slim the cache layer: {e}"))?;
    Ok(Shared {
        buildpack,
        language,
        cold_layers,
        warm_layers,
        cold_log,
        cold_cargo_calls: site.cargo_calls().unwrap_or_default(),
    })
}

/// A temp dir every user can enter (the build user too).
fn open_temp_dir() -> TempDir {
    let dir = TempDir::new().expect("temp dir");
    open_to_all(dir.path());
    dir
}

/// A site for the fixture `app`, with the config vars `config`, built by the stand-in language
/// buildpack then ours from the warm cache (no cargo), with the build's output.
fn built_with(app: &str, config: &[(&str, &str)]) -> Result<(Site, Output), String> {
    let shared = shared();
    let site = Site::new(&fixture(app))?;
    for (name, value) in config {
        site.set_config_var(name, value);
    }
    site.restore(&shared.warm_layers);
    let output = site.build(
        &[&shared.language, &shared.buildpack],
        &BuildOptions::default(),
    );
    assert!(output.status.success(), "{}", log(&output));
    Ok((site, output))
}

fn built(app: &str) -> Result<(Site, Output), String> {
    built_with(app, &[])
}

// ---- The descriptor and the architecture ---------------------------------------------------------

fn descriptor() -> toml::Table {
    let text = fs::read_to_string(repo().join("buildpack.toml")).expect("buildpack.toml");
    text.parse().expect("buildpack.toml is TOML")
}

#[test]
fn the_descriptor_is_a_cnb_for_api_0_10_and_keeps_the_classic_fields() {
    let toml = descriptor();
    assert_eq!(toml["api"].as_str(), Some("0.10"));
    let buildpack = toml["buildpack"].as_table().expect("[buildpack]");
    assert_eq!(buildpack["id"].as_str(), Some(ID));
    for key in [
        "name",
        "version",
        "homepage",
        "description",
        "keywords",
        "licenses",
    ] {
        assert!(buildpack.contains_key(key), "[buildpack] {key}");
    }
    let ignored = toml["publish"]["Ignore"]["files"]
        .as_array()
        .expect("[publish.Ignore] files");
    for left_out in ["test/", ".venv-bench/"] {
        assert!(
            ignored.iter().any(|f| f.as_str() == Some(left_out)),
            "{left_out}"
        );
    }
    for arch in ["x86_64", "aarch64"] {
        let release = toml["metadata"]["release"][arch].as_table().expect(arch);
        assert!(release.contains_key("url") && release.contains_key("sha256"));
    }
    // Every Linux of both architectures: the binary is static, so no distribution is named.
    let targets = toml["targets"].as_array().expect("[[targets]]");
    let declared: Vec<String> = targets
        .iter()
        .map(|target| {
            assert!(target.get("distros").is_none(), "{target:?}");
            format!(
                "{}/{}",
                target["os"].as_str().expect("os"),
                target["arch"].as_str().expect("arch")
            )
        })
        .collect();
    assert_eq!(declared, ["linux/amd64", "linux/arm64"]);
}

/// `bash -c SCRIPT` with lib/output.sh and lib/binary.sh sourced, BUILDPACK_DIR = `buildpack`,
/// and `uname -m` answering `machine` (a stub first on PATH) when given.
fn binary_sh(buildpack: &Path, machine: Option<&str>, script: &str) -> Output {
    let stubs = TempDir::new().expect("temp dir");
    if let Some(machine) = machine {
        let uname = stubs.path().join("uname");
        fs::write(&uname, format!("#!/bin/sh\necho {machine}\n")).expect("write stub");
        make_executable(&uname);
    }
    let source = format!(
        "source \"$BUILDPACK_DIR/lib/output.sh\"; source \"$BUILDPACK_DIR/lib/binary.sh\"; {script}"
    );
    let mut bash = Command::new("bash");
    bash.args(["-c", &source])
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", stubs.path().display()))
        .env("BUILDPACK_DIR", buildpack);
    output_within(&mut bash, SECOND * 30)
}

#[test]
fn the_awk_reader_takes_each_value_from_its_own_table() {
    let read = |buildpack: &Path, table: &str, key: &str| {
        let out = binary_sh(
            buildpack,
            None,
            &format!("binary::toml_field {table} {key}"),
        );
        assert!(out.status.success(), "{}", log(&out));
        text(&out.stdout)
    };
    assert_eq!(read(&repo(), "buildpack", "version"), "0.1.0\n");
    assert_eq!(read(&repo(), "metadata.release.x86_64", "url"), "\n");

    // The CNB tables first, so that a reader taking the first `version =` would read Ubuntu's.
    let dir = TempDir::new().expect("temp dir");
    copy(&repo().join("lib"), dir.path());
    let toml = r#"api = "0.10"

[[targets]]
os = "linux"
arch = "arm64"

[[targets.distros]]
name = "ubuntu"
version = "24.04"

[buildpack]
id = "launcher"
version = "0.1.0"
homepage = "https://example.invalid/home"

[metadata.release.aarch64]
url = "https://example.invalid/arm"
sha256 = "abc"
"#;
    assert!(toml.parse::<toml::Table>().is_ok());
    fs::write(dir.path().join("buildpack.toml"), toml).expect("write");
    assert_eq!(read(dir.path(), "buildpack", "version"), "0.1.0\n");
    assert_eq!(
        read(dir.path(), "buildpack", "homepage"),
        "https://example.invalid/home\n"
    );
    assert_eq!(
        read(dir.path(), "metadata.release.aarch64", "url"),
        "https://example.invalid/arm\n"
    );
    assert_eq!(read(dir.path(), "metadata.release.x86_64", "url"), "");
    assert_eq!(
        read(dir.path(), "targets", "version"),
        "",
        "[[targets]] is no [targets]"
    );
}

#[test]
fn arm64_machines_get_the_aarch64_binary_and_others_are_refused() {
    for (machine, arch) in [
        ("x86_64", "x86_64"),
        ("amd64", "x86_64"),
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
    ] {
        let out = binary_sh(&repo(), Some(machine), "binary::arch");
        assert_eq!(
            text(&out.stdout),
            format!("{arch}\n"),
            "{machine}: {}",
            log(&out)
        );
    }
    let out = binary_sh(&repo(), Some("riscv64"), "binary::arch");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Unsupported architecture: riscv64"),
        "{}",
        log(&out)
    );

    // On an arm64 machine: the aarch64 prebuilt binary of a release tree, verified...
    let tree = TempDir::new().expect("temp dir");
    copy(&repo().join("lib"), tree.path());
    copy(&repo().join("buildpack.toml"), tree.path());
    let prebuilt = tree.path().join("bin/prebuilt");
    fs::create_dir_all(&prebuilt).expect("mkdir");
    fs::write(prebuilt.join("launcher-linux-aarch64"), "an arm64 binary").expect("write");
    let sha = Command::new("sha256sum")
        .arg("launcher-linux-aarch64")
        .current_dir(&prebuilt)
        .output()
        .expect("sha256sum");
    fs::write(prebuilt.join("launcher-linux-aarch64.sha256"), &sha.stdout).expect("write");
    let dest = tree.path().join("out/launcher");
    let script = format!("binary::obtain '{}' /nonexistent ''", dest.display());
    let out = binary_sh(tree.path(), Some("aarch64"), &script);
    assert!(out.status.success(), "{}", log(&out));
    assert!(
        text(&out.stdout).contains(
            "Using the prebuilt binary in the buildpack (launcher-linux-aarch64, SHA-256 verified"
        ),
        "{}",
        log(&out)
    );
    assert_eq!(
        fs::read_to_string(&dest).expect("installed"),
        "an arm64 binary"
    );

    // ...and without one, the [metadata.release.aarch64] download (a file: URL here).
    fs::remove_dir_all(&prebuilt).expect("rm");
    let release = tree.path().join("launcher-linux-aarch64");
    fs::write(&release, "a released arm64 binary").expect("write");
    let sha = text(
        &Command::new("sha256sum")
            .arg(&release)
            .output()
            .expect("sha")
            .stdout,
    );
    let sha = sha.split_whitespace().next().expect("sha");
    let toml_path = tree.path().join("buildpack.toml");
    let toml = fs::read_to_string(&toml_path).expect("read");
    let stanza = "[metadata.release.aarch64]\nurl = \"\"\nsha256 = \"\"";
    assert!(toml.contains(stanza));
    let listed = format!(
        "[metadata.release.aarch64]\nurl = \"file://{}\"\nsha256 = \"{sha}\"",
        release.display()
    );
    fs::write(&toml_path, toml.replace(stanza, &listed)).expect("write");
    let out = binary_sh(tree.path(), Some("arm64"), &script);
    assert!(out.status.success(), "{}", log(&out));
    assert!(
        text(&out.stdout).contains("Downloaded the release binary from file://"),
        "{}",
        log(&out)
    );
    assert_eq!(
        fs::read_to_string(&dest).expect("installed"),
        "a released arm64 binary"
    );
}

#[test]
fn a_binary_that_does_not_run_here_stops_the_cnb_build_saying_so() {
    needs_machine(|| {
        let dir = open_temp_dir();
        let tree = dir.path().join("buildpack");
        copy_buildpack(&tree);
        let prebuilt = tree.join("bin/prebuilt");
        fs::create_dir_all(&prebuilt).expect("mkdir");
        let name = format!("launcher-linux-{}", std::env::consts::ARCH);
        release::with_checksum(&prebuilt, &name, b"#!/bin/sh\nexit 126\n");
        let site = Site::new(&fixture("flask"))?;
        let out = site.build(&[&tree], &BuildOptions::offline());
        assert!(!out.status.success(), "{}", log(&out));
        let headline =
            "! The launcher binary does not run here: `launcher --version` exited with status 126.";
        // The builder writes a buildpack's stderr to its own stdout, with the buildpack's stdout.
        assert!(text(&out.stdout).contains(headline), "{}", log(&out));
        assert!(!text(&out.stdout).contains("installed"), "{}", log(&out));
        Ok(())
    });
}
