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

#[path = "cnb/package.rs"]
mod package;
#[path = "cnb/release.rs"]
mod release;
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

// ---- detect and build ------------------------------------------------------------------------------

#[test]
fn detect_passes_for_both_apis() {
    needs_machine(|| {
        let site = Site::new(&fixture("no-procfile"))?;
        // The shared copy: the checkout itself may be out of the build user's reach.
        let out = site.detect(&[&shared().buildpack]);
        assert!(out.status.success(), "{}", log(&out));
        let group = fs::read_to_string(site.layers().join("group.toml")).expect("group.toml");
        let group: toml::Table = group.parse().expect("TOML");
        let group = group["group"].as_array().expect("[[group]]");
        assert_eq!(group.len(), 1, "{group:?}");
        assert_eq!(group[0]["id"].as_str(), Some(ID));
        assert_eq!(group[0]["api"].as_str(), Some("0.10"));
        let plan = fs::read_to_string(site.layers().join("plan.toml")).expect("plan.toml");
        assert!(!plan.contains("[[entries]]"), "no plan entries: {plan}");

        let mut detect = Command::new(repo().join("bin/detect"));
        detect
            .arg(site.app())
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        let classic = output_within(&mut detect, SECOND * 10);
        assert_eq!(text(&classic.stdout), "launcher\n", "{}", log(&classic));
        Ok(())
    });
}

/// The detector matches each buildpack's `[[targets]]` against the run image's (analyzed.toml):
/// ours is a static binary, so every Linux run image of its architectures passes, whatever its
/// distribution.
#[test]
fn detect_passes_on_every_linux_run_image() {
    needs_machine(|| {
        for distro in [("ubuntu", "24.04"), ("ubuntu", "22.04"), ("debian", "12")] {
            let mut site = Site::new(&fixture("flask"))?;
            site.distro = (distro.0.to_owned(), distro.1.to_owned());
            let out = site.detect(&[&shared().language, &shared().buildpack]);
            assert!(out.status.success(), "{distro:?}: {}", log(&out));
        }
        Ok(())
    });
}

#[test]
fn the_repository_with_cargo_cold_then_warm() {
    needs_machine(|| {
        let shared = shared();
        assert!(
            shared.cold_log.contains("Built from source with cargo"),
            "{}",
            shared.cold_log
        );
        let expected = format!(
            "build --release --locked --target {}-unknown-linux-gnu",
            std::env::consts::ARCH
        );
        assert!(
            shared.cold_cargo_calls.contains(&expected),
            "{}",
            shared.cold_cargo_calls
        );
        let ours = shared.cold_layers.join(ID);
        let types = layer_types(&ours);
        let launch = Types {
            launch: true,
            build: true,
            cache: false,
        };
        let cache = Types {
            cache: true,
            ..Types::default()
        };
        assert_eq!(
            types,
            [
                ("launcher".to_owned(), launch),
                ("source-build".to_owned(), cache)
            ]
        );
        let exec_d = ours.join("launcher/exec.d/web-concurrency");
        assert_eq!(
            fs::read_link(&exec_d).expect("a symlink"),
            Path::new("../bin/launcher")
        );

        // The next build, with the cache layer restored: no cargo at all.
        let site = Site::new(&fixture("flask"))?;
        site.restore(&shared.cold_layers);
        let out = site.build(&[&shared.buildpack], &BuildOptions::cargo());
        assert!(out.status.success(), "{}", log(&out));
        assert!(
            text(&out.stdout).contains("Using the binary built from source, cached"),
            "{}",
            log(&out)
        );
        assert_eq!(site.cargo_calls(), None, "the warm build ran cargo");
        let installed = site.buildpack_layers(ID).join("launcher/bin/launcher");
        let cached = fs::read_dir(site.buildpack_layers(ID).join("source-build/launcher"))
            .expect("cache layer")
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("launcher-"))
            })
            .expect("launcher-<source hash>");
        assert_eq!(
            fs::read(&installed).expect("installed"),
            fs::read(cached).expect("cached")
        );
        Ok(())
    });
}

#[test]
fn the_build_log_is_in_the_cnb_style_with_the_same_pinned_worker_warnings() {
    needs_machine(|| {
        let (_, out) = built("pinned-procfile")?;
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("\n## Launcher Buildpack\n\n- Installing launcher\n"),
            "{stdout}"
        );
        for line in [
            "\n  - launcher 0.1.0 installed in the launch layer",
            "\n- Sizing\n  - WEB_CONCURRENCY by Fir dyno size",
            "\n      dyno-1c-0.5gb              512 MB   1 CPUs     2\n",
            "\n  - WEB_CONCURRENCY by Cedar dyno size",
            "\n      Eco/Basic/Standard-1X      512 MB   8 CPUs     2\n",
            "\n! Procfile pins the worker count (-w 4), so WEB_CONCURRENCY cannot take effect.\n",
        ] {
            assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
        }
        let ours = &stdout[stdout.find("## Launcher Buildpack").expect("ours")..];
        assert!(
            ours.lines().any(|l| l.starts_with("- Done (finished in ")),
            "{stdout}"
        );
        Ok(())
    });
}

#[test]
fn the_build_runs_as_a_non_root_user_with_the_buildpack_read_only() {
    needs_machine(|| {
        // The harness itself: a buildpack that writes into its own directory fails, although the
        // directory's permission bits would let its owner write.
        let fake = open_temp_dir();
        fs::create_dir(fake.path().join("bin")).expect("mkdir");
        let descriptor =
            "api = \"0.10\"\n[buildpack]\nid = \"writes-its-dir\"\nversion = \"0.0.1\"\n";
        fs::write(fake.path().join("buildpack.toml"), descriptor).expect("write");
        fs::write(fake.path().join("bin/detect"), "#!/bin/sh\nexit 0\n").expect("write");
        let script =
            "#!/bin/sh\nid -u > \"$CNB_LAYERS_DIR/uid\"\ntouch \"$CNB_BUILDPACK_DIR/export\"\n";
        fs::write(fake.path().join("bin/build"), script).expect("write");
        make_executable(&fake.path().join("bin/build"));
        make_executable(&fake.path().join("bin/detect"));
        let site = Site::new(&fixture("flask"))?;
        site.user.chown(fake.path());
        let out = site.build(&[fake.path()], &BuildOptions::default());
        assert!(!out.status.success(), "{}", log(&out));
        assert!(
            text(&out.stdout).contains("Read-only file system"),
            "{}",
            log(&out)
        );
        let uid =
            fs::read_to_string(site.buildpack_layers("writes-its-dir").join("uid")).expect("uid");
        assert_eq!(uid.trim(), site.user.uid.to_string());
        assert_ne!(site.user.uid, 0);

        // Ours writes only into its layers, as that user.
        let (site, _) = built("flask")?;
        let binary = site.buildpack_layers(ID).join("launcher/bin/launcher");
        assert_eq!(fs::metadata(&binary).expect("binary").uid(), site.user.uid);
        assert!(!shared().buildpack.join("export").exists());
        Ok(())
    });
}

// ---- Launch ----------------------------------------------------------------------------------------

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
