//! Getting the binary, path (c): built from source where there is no toolchain (a rustup stub),
//! and a binary that does not run here.

use super::*;

/// A stand-in for rustup-init: checks the flags bin/compile passes, then installs a `cargo` into
/// $CARGO_HOME/bin that records its calls and runs the real toolchain's cargo.
fn rustup_init_stub() -> Vec<u8> {
    let real = toolchain();
    format!(
        r#"#!/bin/sh
set -eu
[ "$*" = "-y --profile minimal --no-modify-path" ] || {{ echo "unexpected arguments: $*" >&2; exit 1; }}
mkdir -p "$CARGO_HOME/bin" "$RUSTUP_HOME"
cat > "$CARGO_HOME/bin/cargo" <<EOF
#!/bin/sh
echo "\$*" >> "$CARGO_HOME/calls"
exec env RUSTUP_HOME='{rustup}' CARGO_HOME='{cargo}' '{cargo}/bin/cargo' "\$@"
EOF
chmod +x "$CARGO_HOME/bin/cargo"
echo "stub toolchain installed"
"#,
        rustup = real.rustup_home.display(),
        cargo = real.cargo_home.display()
    )
    .into_bytes()
}

#[test]
fn path_c_installs_a_toolchain_into_the_cache_when_there_is_no_cargo() {
    let shared = shared();
    let stub = rustup_init_stub();
    let stub_file = TempDir::new().expect("temp dir");
    fs::write(stub_file.path().join("rustup-init"), &stub).expect("write stub");
    let sha_line = format!(
        "{}  *rustup-init\n",
        sha256(&stub_file.path().join("rustup-init"))
    );
    let failing = b"#!/bin/sh\necho 'rustup-init: no network here' >&2\nexit 1\n".to_vec();
    fs::write(stub_file.path().join("failing"), &failing).expect("write stub");
    let failing_sha = format!(
        "{}  *rustup-init\n",
        sha256(&stub_file.path().join("failing"))
    );
    let server = Server::start(vec![
        ("/failing/rustup-init".to_owned(), failing),
        (
            "/failing/rustup-init.sha256".to_owned(),
            failing_sha.into_bytes(),
        ),
        ("/rustup-init".to_owned(), stub.clone()),
        (
            "/rustup-init.sha256".to_owned(),
            sha_line.clone().into_bytes(),
        ),
        ("/bad/rustup-init".to_owned(), stub),
        (
            "/bad/rustup-init.sha256".to_owned(),
            format!("{}  *rustup-init\n", "0".repeat(64)).into_bytes(),
        ),
    ]);

    // A CACHE_DIR with cargo's target dir but no binary and no toolchain, and no cargo on PATH.
    let build = Build::new("flask");
    fs::create_dir_all(build.cache().join("launcher")).expect("mkdir");
    cp(&[
        &shared.cache.join("launcher/target"),
        &build.cache().join("launcher/target"),
    ]);
    build.set_config_var("LAUNCHER_RUSTUP_INIT_URL", &server.url("/rustup-init"));
    let output = build.compile(&shared.buildpack, false);
    assert_success(&output);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("No cargo found; installing a Rust toolchain"),
        "{}",
        log(&output)
    );
    assert!(
        stdout.contains("Installed the Rust toolchain"),
        "{}",
        log(&output)
    );
    assert!(
        stdout.contains("Built from source with cargo"),
        "{}",
        log(&output)
    );
    let calls_file = build.cache().join("launcher/cargo-home/calls");
    let calls = fs::read_to_string(&calls_file).expect("the stub's cargo ran");
    assert!(calls.contains("build --release --locked"), "{calls}");

    // Next build: the cached binary, no cargo, no download.
    let output = build.compile(&shared.buildpack, false);
    assert_success(&output);
    assert!(text(&output.stdout).contains("cached"), "{}", log(&output));
    assert_eq!(fs::read_to_string(&calls_file).expect("calls"), calls);
    assert_eq!(
        server.requests(),
        ["/rustup-init", "/rustup-init.sha256"].map(str::to_owned)
    );

    // A rustup-init that does not match its published SHA-256 is never run.
    let build = Build::new("flask");
    build.set_config_var("LAUNCHER_RUSTUP_INIT_URL", &server.url("/bad/rustup-init"));
    let output = build.compile(&shared.buildpack, false);
    assert!(!output.status.success(), "{}", log(&output));
    assert!(
        text(&output.stderr).contains("does not match its SHA-256"),
        "{}",
        log(&output)
    );
    assert!(!build.cache().join("launcher/cargo-home/bin/cargo").exists());

    // A rustup-init that fails: the build stops saying so, and leaves no download behind.
    let build = Build::new("flask");
    let url = server.url("/failing/rustup-init");
    build.set_config_var("LAUNCHER_RUSTUP_INIT_URL", &url);
    let tmp = build.home().join("tmp");
    fs::create_dir(&tmp).expect("mkdir");
    let (app, cache, env) = (build.app(), build.cache(), build.env_dir());
    let mut compile = platform(
        &shared.buildpack,
        "compile",
        &[&app, &cache, &env],
        &build.home(),
    );
    let output = run(compile.env("TMPDIR", &tmp));
    assert!(!output.status.success(), "{}", log(&output));
    let headline = format!(" !     rustup-init from {url} could not install a Rust toolchain");
    assert!(text(&output.stderr).contains(&headline), "{}", log(&output));
    assert!(
        text(&output.stdout).contains("rustup-init: no network here"),
        "{}",
        log(&output)
    );
    let left: Vec<_> = fs::read_dir(&tmp).expect("tmp").flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A buildpack copy in `dir` whose prebuilt binary for this machine is `script`.
fn with_prebuilt(dir: &Path, script: &str) -> PathBuf {
    let buildpack = dir.join("buildpack");
    copy_buildpack(&buildpack);
    let prebuilt = buildpack.join("bin/prebuilt");
    fs::create_dir_all(&prebuilt).expect("mkdir");
    let name = format!("launcher-linux-{ARCH}");
    fs::write(prebuilt.join(&name), script).expect("write");
    let sum = format!("{}  {name}\n", sha256(&prebuilt.join(&name)));
    fs::write(prebuilt.join(format!("{name}.sha256")), sum).expect("write");
    buildpack
}

#[test]
fn a_binary_that_does_not_run_here_stops_the_build_saying_so() {
    let dir = TempDir::new().expect("temp dir");
    let script = "#!/bin/sh\necho 'cannot execute: Exec format error' >&2\nexit 126\n";
    let buildpack = with_prebuilt(dir.path(), script);
    let build = Build::new("flask");
    let output = build.compile(&buildpack, false);
    assert!(!output.status.success(), "{}", log(&output));
    let headline = " !     The launcher binary does not run here: `launcher --version` exited with status 126.";
    assert!(text(&output.stderr).contains(headline), "{}", log(&output));
    assert!(
        !text(&output.stdout).contains("installed"),
        "{}",
        log(&output)
    );
    assert!(!build.installed().exists());
}
