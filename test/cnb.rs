//! The Cloud Native Buildpack side: buildpack.toml as a CNB descriptor, bin/detect and bin/build
//! run as the lifecycle runs them, and processes launched as its launcher launches them, with the
//! exec.d program applying the profile's rules. The lifecycle cannot run here (it needs Go or
//! Docker): `support::lifecycle` stands in for it, as the spec describes it; every build runs as a
//! non-root user with the buildpack mounted read-only.
//!
//! One cold cargo build serves the whole file (`shared()`); other builds find its binary in their
//! restored cache layer, and the release workflow's steps (`release`, test/cnb/release.rs) its
//! cargo target dir. bin/package on binaries built elsewhere: `package`, test/cnb/package.rs.

use std::collections::BTreeMap;
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
use support::lifecycle::launch::{apply_env_dir, Launch};
use support::lifecycle::toolchain::BuildOptions;
use support::lifecycle::{layer_types, open_to_all, Site, Types};
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

fn cp(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

fn copy_buildpack(dest: &Path) {
    fs::create_dir_all(dest.join("bin")).expect("mkdir");
    for file in BUILDPACK_FILES {
        cp(&repo().join(file), &dest.join(file));
    }
}

// ---- The one cold build ----------------------------------------------------------------------------

/// The cold build every test shares: a copy of the buildpack, and the layers its first build
/// left (the cache layer holds cargo's target dir and the binary).
struct Shared {
    buildpack: PathBuf,
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

/// In the temp dir, not under target/: the build user must reach the copy, and the checkout may
/// be in a directory closed to other users (root's home).
fn cold_build() -> Result<Shared, String> {
    let run_dir = run_dir(&std::env::temp_dir(), "launcher-cnb-test");
    open_to_all(run_dir.parent().expect("base"));
    open_to_all(&run_dir);
    let buildpack = run_dir.join("buildpack");
    copy_buildpack(&buildpack);
    let site = Site::new(&fixture("flask"))?;
    let output = site.build(&buildpack, ID, &BuildOptions::cargo());
    let cold_log = log(&output);
    if !output.status.success() {
        return Err(cold_log);
    }
    let cold_layers = run_dir.join("cold-layers");
    cp(&site.layers(), &cold_layers);
    let warm_layers = run_dir.join("warm-layers");
    cp(&site.layers(), &warm_layers);
    fs::remove_dir_all(warm_layers.join("launcher/source-build/launcher/target"))
        .map_err(|e| format!("slim the cache layer: {e}"))?;
    Ok(Shared {
        buildpack,
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

/// A site for the fixture `app` built by the buildpack from the warm cache (no cargo), with the
/// build's output.
fn built(app: &str) -> Result<(Site, Output), String> {
    let shared = shared();
    let site = Site::new(&fixture(app))?;
    site.restore(&shared.warm_layers);
    let output = site.build(&shared.buildpack, ID, &BuildOptions::default());
    assert!(output.status.success(), "{}", log(&output));
    Ok((site, output))
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
    let targets = toml["targets"].as_array().expect("[[targets]]");
    let mut declared = Vec::new();
    for target in targets {
        assert_eq!(target["os"].as_str(), Some("linux"));
        for distro in target["distros"].as_array().expect("distros") {
            declared.push(format!(
                "{}/{} {}",
                target["arch"].as_str().expect("arch"),
                distro["name"].as_str().expect("name"),
                distro["version"].as_str().expect("version")
            ));
        }
    }
    assert_eq!(
        declared,
        [
            "amd64/ubuntu 22.04",
            "amd64/ubuntu 24.04",
            "arm64/ubuntu 22.04",
            "arm64/ubuntu 24.04"
        ]
    );
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
    cp(&repo().join("lib"), dir.path());
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
    cp(&repo().join("lib"), tree.path());
    cp(&repo().join("buildpack.toml"), tree.path());
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
        let out = site.build(&tree, ID, &BuildOptions::offline());
        assert!(!out.status.success(), "{}", log(&out));
        let headline =
            "! The launcher binary does not run here: `launcher --version` exited with status 126.";
        assert!(text(&out.stderr).contains(headline), "{}", log(&out));
        assert!(!text(&out.stdout).contains("installed"), "{}", log(&out));
        Ok(())
    });
}

// ---- The lifecycle stand-in's own rules ------------------------------------------------------------

#[test]
fn env_files_follow_the_specs_suffix_rules() {
    let dir = TempDir::new().expect("temp dir");
    let files = [
        ("PLAIN", "plain"),
        ("OVER.override", "over"),
        ("KEEP.default", "from the layer"),
        ("FILL.default", "filled"),
        ("PATH.prepend", "/layer/bin"),
        ("PATH.delim", ":"),
        ("FLAGS.append", "-b"),
        ("FLAGS.delim", " "),
        ("NODELIM.append", "x"),
        ("NEW.prepend", "first"),
        ("ODD.suffix", "ignored"),
        ("CODE", "$(touch /tmp/never)"),
    ];
    for (name, value) in files {
        fs::write(dir.path().join(name), value).expect("write");
    }
    fs::create_dir(dir.path().join("web")).expect("a process dir is not a file");
    let mut env: BTreeMap<String, String> = [
        ("OVER", "old"),
        ("KEEP", "the user's"),
        ("PATH", "/usr/bin:/bin"),
        ("FLAGS", "-a"),
        ("NODELIM", "w"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    apply_env_dir(&mut env, dir.path());
    let get = |name: &str| env.get(name).map(String::as_str);
    assert_eq!(get("PLAIN"), Some("plain"), "no suffix overrides");
    assert_eq!(get("OVER"), Some("over"));
    assert_eq!(
        get("KEEP"),
        Some("the user's"),
        ".default only fills an empty one"
    );
    assert_eq!(get("FILL"), Some("filled"));
    assert_eq!(get("PATH"), Some("/layer/bin:/usr/bin:/bin"));
    assert_eq!(get("FLAGS"), Some("-a -b"));
    assert_eq!(get("NODELIM"), Some("wx"), "no .delim: joined as they are");
    assert_eq!(get("NEW"), Some("first"), "no delimiter before nothing");
    assert_eq!(get("ODD"), None);
    assert_eq!(get("CODE"), Some("$(touch /tmp/never)"), "never evaluated");
    assert_eq!(get("web"), None);
}

// ---- detect and build ------------------------------------------------------------------------------

#[test]
fn detect_passes_for_both_apis() {
    needs_machine(|| {
        let site = Site::new(&fixture("no-procfile"))?;
        // The shared copy: the checkout itself may be out of the build user's reach.
        let out = site.detect(&shared().buildpack);
        assert!(out.status.success(), "{}", log(&out));
        assert_eq!(
            text(&out.stdout),
            "",
            "CNB: pass, no plan entries\n{}",
            log(&out)
        );
        assert_eq!(
            fs::read_to_string(site.path("build-plan.toml")).expect("plan"),
            ""
        );
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

        // The next build restores the cache layer as the lifecycle does: no cargo at all.
        let site = Site::new(&fixture("flask"))?;
        site.restore(&shared.cold_layers);
        let out = site.build(&shared.buildpack, ID, &BuildOptions::cargo());
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
            stdout.starts_with("\n## Launcher Buildpack\n\n- Installing launcher\n"),
            "{stdout}"
        );
        for line in [
            "\n  - launcher 0.1.0 installed in the launch layer",
            "\n- Sizing\n  - WEB_CONCURRENCY by Fir dyno size",
            "\n      dyno-1c-0.5gb              512 MB   1 CPUs     2\n",
            "\n  - WEB_CONCURRENCY by Cedar dyno size",
            "\n      Eco/Basic/Standard-1X      512 MB   8 CPUs     2\n",
        ] {
            assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
        }
        let last = stdout.lines().last().unwrap_or_default();
        assert!(last.starts_with("- Done (finished in "), "{stdout}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("\n! Procfile pins the worker count (-w 4), so WEB_CONCURRENCY cannot take effect.\n"),
            "{}",
            log(&out)
        );
        Ok(())
    });
}

#[test]
fn the_build_runs_as_a_non_root_user_with_the_buildpack_read_only() {
    needs_machine(|| {
        // The stand-in itself: a buildpack that writes into its own directory fails, as under
        // the lifecycle, although the directory's permission bits would let its owner write.
        let fake = open_temp_dir();
        fs::create_dir(fake.path().join("bin")).expect("mkdir");
        let script =
            "#!/bin/sh\nid -u > \"$CNB_LAYERS_DIR/uid\"\ntouch \"$CNB_BUILDPACK_DIR/export\"\n";
        fs::write(fake.path().join("bin/build"), script).expect("write");
        make_executable(&fake.path().join("bin/build"));
        let site = Site::new(&fixture("flask"))?;
        site.user.chown(fake.path());
        let out = site.build(fake.path(), "writes-its-dir", &BuildOptions::default());
        assert!(!out.status.success(), "{}", log(&out));
        assert!(
            text(&out.stderr).contains("Read-only file system"),
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

/// A language buildpack's launch layer, as Heroku's Python CNB makes one: the venv's bin on PATH
/// (a `.prepend` with its `.delim`), and the variables it sets.
fn python_layer(site: &Site, venv: &Path) {
    let layers = site.buildpack_layers("heroku/python");
    let env = layers.join("venv/env.launch");
    fs::create_dir_all(&env).expect("mkdir");
    fs::write(layers.join("venv.toml"), "[types]\nlaunch = true\n").expect("write");
    fs::write(
        env.join("PATH.prepend"),
        venv.join("bin").display().to_string(),
    )
    .expect("write");
    fs::write(env.join("PATH.delim"), ":").expect("write");
    fs::write(env.join("PYTHONUNBUFFERED.default"), "1").expect("write");
    site.user.chown(&site.layers());
}

/// Another buildpack's launch layer with an exec.d program that writes `output` to fd 3.
fn exec_d_layer(site: &Site, id: &str, output: &str) {
    let layers = site.buildpack_layers(id);
    let exec_d = layers.join("web_env/exec.d");
    fs::create_dir_all(&exec_d).expect("mkdir");
    fs::write(layers.join("web_env.toml"), "[types]\nlaunch = true\n").expect("write");
    let program = exec_d.join("web_env");
    fs::write(&program, format!("#!/bin/sh\nprintf '%s' '{output}' >&3\n")).expect("write");
    make_executable(&program);
    site.user.chown(&site.layers());
}

fn is_number(value: Option<&String>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn a_users_web_concurrency_wins() {
    needs_machine(|| {
        let (site, _) = built("flask")?;
        let launch = site
            .launch(&[ID], "web")
            .env("DYNO", FIR_WEB)
            .env("WEB_CONCURRENCY", "3");
        let prepared = launch.prepare()?;
        assert_eq!(
            prepared.env.get("WEB_CONCURRENCY").map(String::as_str),
            Some("3")
        );
        assert_eq!(prepared.env.get("WEB_CONCURRENCY_SET_BY"), None);
        assert!(is_number(prepared.env.get("LAUNCHER_WEB_CONCURRENCY")));
        assert!(is_number(prepared.env.get("DYNO_RAM")));
        assert!(
            prepared
                .exec_d_stderr
                .starts_with("launcher: WEB_CONCURRENCY=3 set by the user"),
            "{}",
            prepared.exec_d_stderr
        );
        let env = output_within(&mut launch.process(&prepared, &["env"]), SECOND * 10);
        assert!(
            text(&env.stdout).lines().any(|l| l == "WEB_CONCURRENCY=3"),
            "{}",
            log(&env)
        );
        Ok(())
    });
}

#[test]
fn another_buildpacks_marked_value_is_replaced_and_an_unmarked_one_looks_like_a_users() {
    needs_machine(|| {
        let (site, _) = built("flask")?;
        let ours = site.launch(&[ID], "web").prepare()?.env["LAUNCHER_WEB_CONCURRENCY"].clone();

        // An env file of a buildpack before ours, marked.
        let layers = site.buildpack_layers("heroku/python");
        fs::create_dir_all(layers.join("web/env.launch")).expect("mkdir");
        fs::write(layers.join("web.toml"), "[types]\nlaunch = true\n").expect("write");
        fs::write(layers.join("web/env.launch/WEB_CONCURRENCY.override"), "99").expect("write");
        let set_by = layers.join("web/env.launch/WEB_CONCURRENCY_SET_BY.override");
        fs::write(&set_by, "heroku/python").expect("write");
        site.user.chown(&site.layers());
        let order = ["heroku/python", ID];
        let prepared = site.launch(&order, "web").env("DYNO", FIR_WEB).prepare()?;
        assert_eq!(prepared.env["WEB_CONCURRENCY"], ours);
        assert_eq!(prepared.env["WEB_CONCURRENCY_SET_BY"], "launcher");
        assert!(
            prepared
                .exec_d_stderr
                .contains("replaced WEB_CONCURRENCY=\"99\" set by \"heroku/python\""),
            "{}",
            prepared.exec_d_stderr
        );
        fs::remove_dir_all(&layers).expect("rm");

        // An exec.d program before ours, marked: ours sees its output and replaces it.
        let marked = "WEB_CONCURRENCY = \"99\"\nWEB_CONCURRENCY_SET_BY = \"heroku/nodejs\"\n";
        exec_d_layer(&site, "heroku/nodejs", marked);
        let order = ["heroku/nodejs", ID];
        let prepared = site.launch(&order, "web").prepare()?;
        assert_eq!(prepared.env["WEB_CONCURRENCY"], ours);
        assert_eq!(prepared.env["WEB_CONCURRENCY_SET_BY"], "launcher");
        // Listed after ours, its exec.d runs last and its value stays: the order matters.
        let prepared = site.launch(&[ID, "heroku/nodejs"], "web").prepare()?;
        assert_eq!(prepared.env["WEB_CONCURRENCY"], "99");

        // Unmarked, as Heroku's Node.js CNB writes it: it cannot be told from a user's, and stays.
        fs::remove_dir_all(site.buildpack_layers("heroku/nodejs")).expect("rm");
        exec_d_layer(&site, "heroku/nodejs", "WEB_CONCURRENCY = \"99\"\n");
        let prepared = site.launch(&order, "web").env("DYNO", FIR_WEB).prepare()?;
        assert_eq!(prepared.env["WEB_CONCURRENCY"], "99");
        assert_eq!(prepared.env.get("WEB_CONCURRENCY_SET_BY"), None);
        assert!(
            prepared.exec_d_stderr.contains("set by the user"),
            "{}",
            prepared.exec_d_stderr
        );
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
        let out = site.build(&shared.buildpack, ID, &BuildOptions::default());
        assert!(out.status.success(), "{}", log(&out));
        let mut launch = site.launch(&[ID], "web");
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
        for (process_type, dyno) in [("worker", "worker-23z34x56y-w78k9"), ("web", "run-e78f9")] {
            let prepared = site
                .launch(&[ID], process_type)
                .env("DYNO", dyno)
                .prepare()?;
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
        // No PATH but the layer's own bin: the program is run by its path and starts no shell.
        let prepared = site
            .launch(&[ID], "web")
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

        let prepared = site
            .launch(&[ID], "web")
            .env("LAUNCHER_DISABLE", "1")
            .prepare()?;
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

/// The flask fixture built, the test venv as the Python buildpack's launch layer, and a port.
fn flask_with_python() -> Result<(Site, u16), String> {
    let venv = venv(&["gunicorn"])?;
    let (site, _) = built("flask")?;
    python_layer(&site, &venv);
    Ok((site, free_port()))
}

/// A Fir web dyno's start of the Python buildpack's layers then ours, serving on `port`; by root,
/// for the test venv's sake.
fn web_launch(site: &Site, port: u16) -> Launch<'_> {
    site.launch(&["heroku/python", ID], "web")
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
        let (site, port) = flask_with_python()?;
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
        let mut process = launch.process(&prepared, &["gunicorn", "app:app"]);
        process.stdin(Stdio::null()).process_group(0);
        let dyno = Group(process.spawn().expect("start gunicorn"));
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
fn launcher_run_serves_gunicorn_at_launch() {
    needs_machine(|| {
        let (site, port) = flask_with_python()?;
        let launch = web_launch(&site, port);
        let prepared = launch.prepare()?;
        let expected = prepared.env["WEB_CONCURRENCY"].clone();
        // `launcher` is the launch layer's: first on PATH.
        let run = Run::spawn(
            launch.process(&prepared, &["launcher", "run", "--", "gunicorn", "app:app"]),
        );
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
