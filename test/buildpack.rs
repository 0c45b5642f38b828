//! Buildpack-level tests: bin/detect, bin/compile and bin/release run the way the platform runs
//! them (an empty environment plus what it provides), two ways of getting the binary (release
//! download over loopback HTTP, build from source, with a rustup stub; the prebuilt binary of a
//! release tarball is tested with bin/package in test/cnb/release.rs), a dyno boot, and the Flask
//! fixture served by real gunicorn in a real 512 MB memory cgroup.
//!
//! One cold cargo build serves the whole file (`shared()`); other tests copy its cached binary.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod support;
use support::lifecycle::toolchain::Toolchain;
use support::procs::children;
use support::text;
use support::{
    fixture, free_port, make_executable, needs_machine, once, repo, run_dir, venv, wait_for,
    MemoryCgroup,
};

const ARCH: &str = std::env::consts::ARCH;
const PLATFORM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const BUILDPACK_FILES: [&str; 8] = [
    "bin/detect",
    "bin/compile",
    "bin/release",
    "lib",
    "buildpack.toml",
    "Cargo.toml",
    "Cargo.lock",
    "launcher",
];
const FIXTURES: [&str; 5] = [
    "flask",
    "no-procfile",
    "pinned-procfile",
    "pinned-gunicorn-conf",
    "pinned-puma",
];

fn run(command: &mut Command) -> Output {
    command.output().expect("run command")
}

fn cp(args: &[&Path]) {
    let status = Command::new("cp")
        .arg("-a")
        .args(args)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -a {args:?} failed");
}

/// Copies what bin/compile needs of the buildpack (not test/, target/, bin/prebuilt) to `dest`.
fn copy_buildpack(dest: &Path) {
    fs::create_dir_all(dest.join("bin")).expect("mkdir");
    for file in BUILDPACK_FILES {
        cp(&[&repo().join(file), &dest.join(file)]);
    }
}

/// Copies a fixture app to `dest` (a fresh BUILD_DIR).
fn copy_app(name: &str, dest: &Path) {
    fs::create_dir_all(dest).expect("mkdir");
    cp(&[&fixture(name).join("."), dest]);
}

fn sha256(path: &Path) -> String {
    let output = run(Command::new("sha256sum").arg(path));
    text(&output.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_owned()
}

// ---- The platform ---------------------------------------------------------------------------------

/// The Rust toolchain as the platform would have it installed.
fn toolchain() -> Toolchain {
    Toolchain::current()
}

/// A `cargo` that records each call in `calls` and runs the real one: put first on PATH, it shows
/// whether a build ran cargo at all.
fn cargo_shim(dir: &Path) -> PathBuf {
    let calls = dir.join("cargo-calls");
    let shim = dir.join("cargo");
    let real = toolchain().cargo_home.join("bin/cargo");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
        calls.display(),
        real.display()
    );
    fs::write(&shim, script).expect("write shim");
    make_executable(&shim);
    calls
}

/// `bin/<name> args` from `buildpack` with only what the platform provides: PATH, HOME, STACK.
fn platform(buildpack: &Path, name: &str, args: &[&Path], home: &Path) -> Command {
    let mut command = Command::new(buildpack.join("bin").join(name));
    command
        .args(args)
        .env_clear()
        .env("PATH", PLATFORM_PATH)
        .env("HOME", home)
        .env("STACK", "heroku-24")
        .stdin(Stdio::null());
    command
}

/// Adds the Rust toolchain (its variables, its bin dir on PATH) and, before it, a recording cargo
/// shim in `shim_dir`.
fn with_toolchain<'a>(command: &'a mut Command, shim_dir: &Path) -> &'a mut Command {
    cargo_shim(shim_dir);
    let toolchain = toolchain();
    let path = format!(
        "{}:{}:{PLATFORM_PATH}",
        shim_dir.display(),
        toolchain.cargo_home.join("bin").display()
    );
    command
        .env("PATH", path)
        .env("CARGO_HOME", &toolchain.cargo_home)
        .env("RUSTUP_HOME", &toolchain.rustup_home)
}

/// One BUILD_DIR / CACHE_DIR / ENV_DIR set, in a temp dir.
struct Build {
    dir: TempDir,
}

impl Build {
    fn new(app: &str) -> Self {
        let build = Build {
            dir: TempDir::new().expect("temp dir"),
        };
        copy_app(app, &build.app());
        fs::create_dir_all(build.env_dir()).expect("mkdir env");
        fs::create_dir_all(build.cache()).expect("mkdir cache");
        build
    }

    fn app(&self) -> PathBuf {
        self.dir.path().join("build dir")
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn env_dir(&self) -> PathBuf {
        self.dir.path().join("env")
    }

    fn home(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn set_config_var(&self, name: &str, value: &str) {
        fs::write(self.env_dir().join(name), value).expect("write config var");
    }

    /// `bin/compile BUILD_DIR CACHE_DIR ENV_DIR` of `buildpack`; `cargo` puts the toolchain and the
    /// recording cargo shim (in this build's dir) on PATH.
    fn compile(&self, buildpack: &Path, cargo: bool) -> Output {
        let (app, cache, env) = (self.app(), self.cache(), self.env_dir());
        let mut command = platform(buildpack, "compile", &[&app, &cache, &env], &self.home());
        if cargo {
            with_toolchain(&mut command, self.dir.path());
        }
        run(&mut command)
    }

    fn cargo_calls(&self) -> Option<String> {
        fs::read_to_string(self.dir.path().join("cargo-calls")).ok()
    }

    fn installed(&self) -> PathBuf {
        self.app().join(".launcher/bin/launcher")
    }
}

fn log(output: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}",
        text(&output.stdout),
        text(&output.stderr)
    )
}

fn assert_success(output: &Output) {
    assert!(output.status.success(), "build failed\n{}", log(output));
}

// ---- The one cold build ---------------------------------------------------------------------------

/// The cold build every test shares: a copy of the buildpack, and a CACHE_DIR holding the binary
/// (and cargo's target dir) built from it by bin/compile.
struct Shared {
    buildpack: PathBuf,
    cache: PathBuf,
    cold_log: String,
    cold_cargo_calls: String,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    once(&SHARED, cold_build, "the shared cold build")
}

/// Runs in target/tmp (statics are never dropped); dirs of earlier runs whose process is gone are
/// removed first.
fn cold_build() -> Result<Shared, String> {
    let run_dir = run_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "buildpack-test");
    let buildpack = run_dir.join("buildpack");
    copy_buildpack(&buildpack);
    let build = Build::new("flask");
    let output = build.compile(&buildpack, true);
    let cold_log = log(&output);
    if !output.status.success() {
        return Err(cold_log);
    }
    let cache = run_dir.join("cache");
    cp(&[&build.cache(), &cache]);
    Ok(Shared {
        buildpack,
        cache,
        cold_log,
        cold_cargo_calls: build.cargo_calls().unwrap_or_default(),
    })
}

impl Shared {
    /// The binary bin/compile cached, `launcher-<source hash>`.
    fn cached_binary(&self) -> PathBuf {
        let dir = self.cache.join("launcher");
        fs::read_dir(&dir)
            .expect("read cache")
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.is_file() && path.to_string_lossy().contains("/launcher-"))
            .expect("a cached launcher-<hash> binary")
    }

    /// A build of `app` whose CACHE_DIR holds just the cached binary: a warm cache.
    fn warm_build(&self, app: &str) -> Build {
        let build = Build::new(app);
        let binary = self.cached_binary();
        let dest = build.cache().join("launcher");
        fs::create_dir_all(&dest).expect("mkdir");
        cp(&[&binary, &dest.join(binary.file_name().expect("name"))]);
        build
    }

    /// A buildpack copy of its own, for tests that change it or read its export file.
    fn own_buildpack(&self, dir: &Path) -> PathBuf {
        let buildpack = dir.join("buildpack");
        copy_buildpack(&buildpack);
        buildpack
    }
}

// ---- detect, compile, release ---------------------------------------------------------------------

#[test]
fn detect_applies_to_every_app_and_release_declares_no_process_types() {
    let home = TempDir::new().expect("temp dir");
    for app in FIXTURES {
        let dir = fixture(app);
        let detect = run(&mut platform(&repo(), "detect", &[&dir], home.path()));
        assert!(detect.status.success(), "{app}: {}", log(&detect));
        assert_eq!(text(&detect.stdout), "launcher\n", "{app}");
        let release = run(&mut platform(&repo(), "release", &[&dir], home.path()));
        assert!(release.status.success(), "{app}: {}", log(&release));
        // An empty YAML map: no default_process_types to override the language buildpack's.
        assert_eq!(text(&release.stdout), "--- {}\n", "{app}");
    }
}

#[test]
fn cold_cache_runs_cargo_once_and_warm_cache_runs_none() {
    let shared = shared();
    assert!(
        shared.cold_log.contains("Built from source with cargo"),
        "{}",
        shared.cold_log
    );
    let expected = format!("build --release --locked --target {ARCH}-unknown-linux-gnu");
    assert!(
        shared.cold_cargo_calls.contains(&expected),
        "cold build ran {:?}",
        shared.cold_cargo_calls
    );

    // Same CACHE_DIR as the cold build: no cargo at all, and the log says so.
    let build = Build::new("flask");
    fs::remove_dir(build.cache()).expect("rmdir");
    cp(&[&shared.cache, &build.cache()]);
    let output = build.compile(&shared.buildpack, true);
    assert_success(&output);
    assert!(text(&output.stdout).contains("cached"), "{}", log(&output));
    assert_eq!(build.cargo_calls(), None, "the warm build ran cargo");
    assert_eq!(
        fs::read(build.installed()).expect("installed binary"),
        fs::read(shared.cached_binary()).expect("cached binary")
    );
}

#[test]
fn every_fixture_compiles_and_pinned_worker_counts_are_warned_about() {
    let shared = shared();
    // (app, config var, what the warning names)
    type Case = (
        &'static str,
        Option<(&'static str, &'static str)>,
        Option<&'static str>,
    );
    let cases: [Case; 6] = [
        ("flask", None, None),
        ("no-procfile", None, None),
        ("pinned-procfile", None, Some("Procfile")),
        ("pinned-gunicorn-conf", None, Some("gunicorn.conf.py")),
        ("pinned-puma", None, Some("config/puma.rb")),
        (
            "flask",
            Some(("GUNICORN_CMD_ARGS", "--workers 3")),
            Some("GUNICORN_CMD_ARGS"),
        ),
    ];
    for (app, config_var, warning) in cases {
        let build = shared.warm_build(app);
        if let Some((name, value)) = config_var {
            build.set_config_var(name, value);
        }
        let output = build.compile(&shared.buildpack, true);
        assert_success(&output);
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(
            stdout.contains("-----> Installing launcher"),
            "{app}: {stdout}"
        );
        assert!(stdout.contains("-----> Sizing"), "{app}: {stdout}");
        assert!(
            stdout.contains("       ") && stdout.contains("cached"),
            "{app}: {stdout}"
        );
        assert_eq!(build.cargo_calls(), None, "{app}: the warm build ran cargo");
        match warning {
            Some(source) => {
                let warned = stderr
                    .lines()
                    .any(|line| line.starts_with(" !     ") && line.contains(source));
                assert!(
                    warned,
                    "{app}: no warning naming {source}\n{}",
                    log(&output)
                );
            }
            None => assert!(!stderr.contains(" !     "), "{app}: {}", log(&output)),
        }
        let script = build.app().join(".profile.d/zzz-launcher.sh");
        let expected = run(Command::new(build.installed()).args(["profile", "--script"]));
        assert_eq!(fs::read(script).expect("profile script"), expected.stdout);
    }
}

#[test]
fn env_dir_is_read_safely() {
    let shared = shared();
    let build = shared.warm_build("flask");
    let marker = build.dir.path().join("ran");
    let code = format!("$(touch '{0}')`touch '{0}'`", marker.display());
    build.set_config_var("WEB_MEMORY", &code);
    build.set_config_var("LAUNCHER_BINARY_URL", "");
    build.set_config_var("GUNICORN_CMD_ARGS", "--timeout '30\"\n--bind x");
    build.set_config_var("not an identifier", &code);
    build.set_config_var("WEB_CONCURRENCY", "3\nexport X=1");
    let output = build.compile(&shared.buildpack, true);
    assert_success(&output);
    assert!(
        !marker.exists(),
        "a config var's shell code ran\n{}",
        log(&output)
    );
    assert!(
        text(&output.stdout).contains("Standard-1X"),
        "{}",
        log(&output)
    );
}

#[test]
fn export_file_puts_the_binary_on_path_for_later_buildpacks() {
    let shared = shared();
    let dir = TempDir::new().expect("temp dir");
    let buildpack = shared.own_buildpack(dir.path());
    let build = shared.warm_build("flask");
    assert_success(&build.compile(&buildpack, false));
    let export = buildpack.join("export");
    let found = run(Command::new("bash")
        .args(["-c", "source \"$1\" && command -v launcher", "bash"])
        .arg(&export)
        .env_clear()
        .env("PATH", PLATFORM_PATH));
    assert!(found.status.success(), "{}", log(&found));
    // BUILD_DIR has a space in its name: the export file quotes it.
    assert_eq!(
        text(&found.stdout).trim_end(),
        build.installed().to_string_lossy()
    );
}

// ---- (b) release download, over loopback HTTP ---------------------------------------------------------

/// A tiny HTTP/1.0 server on 127.0.0.1 serving fixed bodies; it stops when dropped (or after five
/// minutes) and records the paths asked for.
struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(routes: Vec<(String, Vec<u8>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = Self::answer(stream, &routes, &seen);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Server {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn answer(
        mut stream: TcpStream,
        routes: &[(String, Vec<u8>)],
        seen: &Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..read]);
        }
        let request = text(&request);
        let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
        seen.lock().expect("lock").push(path.clone());
        match routes.iter().find(|(route, _)| *route == path) {
            Some((_, body)) => {
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                stream.write_all(head.as_bytes())?;
                stream.write_all(body)
            }
            None => stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn path_b_the_release_binary_is_downloaded_and_verified() {
    let shared = shared();
    let good = fs::read(shared.cached_binary()).expect("binary");
    let mut tampered = good.clone();
    tampered.extend_from_slice(b"\0");
    let server = Server::start(vec![
        ("/good".to_owned(), good.clone()),
        ("/tampered".to_owned(), tampered),
    ]);
    let dir = TempDir::new().expect("temp dir");
    let buildpack = shared.own_buildpack(dir.path());
    let toml_path = buildpack.join("buildpack.toml");
    let toml = fs::read_to_string(&toml_path).expect("buildpack.toml");
    let section = format!("[metadata.release.{ARCH}]\nurl = \"\"\nsha256 = \"\"");
    assert!(toml.contains(&section), "buildpack.toml lacks {section}");
    let listed = format!(
        "[metadata.release.{ARCH}]\nurl = \"{}\"\nsha256 = \"{}\"",
        server.url("/good"),
        sha256(&shared.cached_binary())
    );
    fs::write(&toml_path, toml.replace(&section, &listed)).expect("write buildpack.toml");

    // The listed release: downloaded, verified, no toolchain needed.
    let build = Build::new("flask");
    let output = build.compile(&buildpack, false);
    assert_success(&output);
    assert!(
        text(&output.stdout).contains("Downloaded the release binary"),
        "{}",
        log(&output)
    );
    assert_eq!(fs::read(build.installed()).expect("installed"), good);

    // LAUNCHER_BINARY_SHA256 as it may be pasted: in upper case, or the whole line of the
    // release's .sha256 file. Anything else is refused, before any download.
    let sum = sha256(&shared.cached_binary());
    for given in [
        sum.to_uppercase(),
        format!("{sum}  launcher-linux-{ARCH}\n"),
    ] {
        let build = Build::new("flask");
        build.set_config_var("LAUNCHER_BINARY_URL", &server.url("/good"));
        build.set_config_var("LAUNCHER_BINARY_SHA256", &given);
        let output = build.compile(&buildpack, false);
        assert_success(&output);
        assert_eq!(fs::read(build.installed()).expect("installed"), good);
    }
    let build = Build::new("flask");
    build.set_config_var("LAUNCHER_BINARY_URL", &server.url("/good"));
    build.set_config_var("LAUNCHER_BINARY_SHA256", &format!("sha256:{sum}"));
    let output = build.compile(&buildpack, false);
    assert!(!output.status.success(), "{}", log(&output));
    let refused = format!("LAUNCHER_BINARY_SHA256 is not a SHA-256: \"sha256:{sum}\"");
    assert!(text(&output.stderr).contains(&refused), "{}", log(&output));
    assert!(!build.installed().exists());

    // LAUNCHER_BINARY_URL pointing at a tampered binary: the build stops, nothing is installed.
    let build = Build::new("flask");
    build.set_config_var("LAUNCHER_BINARY_URL", &server.url("/tampered"));
    let output = build.compile(&buildpack, false);
    assert!(!output.status.success(), "{}", log(&output));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("does not match its SHA-256"),
        "{}",
        log(&output)
    );
    assert!(stderr.contains("tampered"), "{}", log(&output));
    assert!(!build.installed().exists());

    // A download that fails (404 here, a network error on a build dyno) falls back to the source build.
    let build = shared.warm_build("flask");
    build.set_config_var("LAUNCHER_BINARY_URL", &server.url("/missing"));
    let output = build.compile(&buildpack, true);
    assert_success(&output);
    assert!(
        text(&output.stderr).contains("Could not download"),
        "{}",
        log(&output)
    );
    assert!(text(&output.stdout).contains("cached"), "{}", log(&output));
    assert_eq!(
        server.requests(),
        ["/good", "/good", "/good", "/tampered", "/missing"].map(str::to_owned)
    );
}

// ---- (c) build from source with no toolchain: the rustup stub -------------------------------------------

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

// ---- A dyno boot ----------------------------------------------------------------------------------

/// Like heroku/python's WEB_CONCURRENCY.sh: its own default, only when nobody set one.
const LANGUAGE_SCRIPT: &str = r#"if [ -z "${WEB_CONCURRENCY:-}" ]; then
  export WEB_CONCURRENCY=99 WEB_CONCURRENCY_SET_BY=heroku/python
fi
"#;

/// A compiled slug with the stand-in language script next to ours.
fn compiled_slug(app: &str) -> Build {
    let shared = shared();
    let build = shared.warm_build(app);
    assert_success(&build.compile(&shared.buildpack, false));
    let script = build.app().join(".profile.d/WEB_CONCURRENCY.sh");
    fs::write(script, LANGUAGE_SCRIPT).expect("write language script");
    build
}

/// Boots the slug as a dyno does (env -i, HOME = the slug, .profile.d/*.sh sourced in glob order),
/// then runs `command` (argv, not shell) in place of the Procfile's.
fn boot(slug: &Path, env: &[(&str, &str)], command: &[&str]) -> Output {
    let script = r#"cd "$HOME" && for f in .profile.d/*.sh; do source "$f"; done; exec "$@""#;
    run(Command::new("bash")
        .args(["-c", script, "dyno"])
        .args(command)
        .env_clear()
        .env("HOME", slug)
        .env("PATH", PLATFORM_PATH)
        .env("PORT", "5000")
        .env("DYNO", "web.1")
        .envs(env.iter().copied()))
}

/// A whole-number field of `launcher size --json` (std only: no JSON parser in these tests).
fn json_number(json: &str, key: &str) -> u64 {
    json.split(&format!("\"{key}\":"))
        .nth(1)
        .map(|rest| rest.trim_start())
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no number {key} in {json}"))
}

fn var(output: &Output, name: &str) -> Option<String> {
    text(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

#[test]
fn dyno_boot_our_value_wins_over_the_language_buildpacks_and_the_users_over_both() {
    let build = compiled_slug("flask");
    let slug = build.app();
    let size = run(Command::new(build.installed())
        .args(["size", "--json"])
        .env_clear());
    let ours = json_number(&text(&size.stdout), "web_concurrency").to_string();
    assert_ne!(ours, "99");

    for locale in [("LC_ALL", "C"), ("LANG", "en_US.UTF-8")] {
        let output = boot(&slug, &[locale], &["env"]);
        assert!(output.status.success(), "{}", log(&output));
        assert_eq!(
            var(&output, "WEB_CONCURRENCY").as_deref(),
            Some(ours.as_str()),
            "{locale:?}"
        );
        assert_eq!(
            var(&output, "WEB_CONCURRENCY_SET_BY").as_deref(),
            Some("launcher")
        );
        assert!(
            text(&output.stderr).contains("launcher: WEB_CONCURRENCY="),
            "{}",
            log(&output)
        );
    }

    let output = boot(&slug, &[("WEB_CONCURRENCY", "3")], &["env"]);
    assert_eq!(
        var(&output, "WEB_CONCURRENCY").as_deref(),
        Some("3"),
        "{}",
        log(&output)
    );
    assert_ne!(
        var(&output, "WEB_CONCURRENCY_SET_BY").as_deref(),
        Some("launcher")
    );
}

#[test]
fn dyno_boot_config_vars_holding_shell_code_run_nothing() {
    let build = compiled_slug("flask");
    let marker = build.dir.path().join("ran");
    let code = format!("$(touch '{0}')`touch '{0}'`;touch '{0}'", marker.display());
    let env = [
        ("WEB_CONCURRENCY", code.as_str()),
        ("WEB_MEMORY", code.as_str()),
        ("LAUNCHER_MAX_WORKERS", code.as_str()),
        ("WEB_CONCURRENCY_SET_BY", code.as_str()),
    ];
    let output = boot(&build.app(), &env, &["env"]);
    assert!(output.status.success(), "{}", log(&output));
    assert!(
        !marker.exists(),
        "shell code from a config var ran\n{}",
        log(&output)
    );
    let value = var(&output, "WEB_CONCURRENCY").expect("WEB_CONCURRENCY");
    assert!(
        value.parse::<u32>().is_ok(),
        "the bad value was not replaced: {value:?}"
    );
}

#[test]
fn dyno_boot_without_the_binary_still_runs_the_command_with_the_environment_unchanged() {
    let build = compiled_slug("flask");
    let slug = build.app();
    let ours = slug.join(".profile.d/zzz-launcher.sh");
    let script = fs::read(&ours).expect("our script");

    // Reference: the language buildpack's script alone.
    fs::remove_file(&ours).expect("rm");
    let reference = boot(&slug, &[], &["env"]);
    fs::write(&ours, script).expect("restore");
    fs::remove_file(build.installed()).expect("rm binary");
    let output = boot(&slug, &[], &["env"]);
    assert!(output.status.success(), "the boot failed\n{}", log(&output));

    let without_path = |output: &Output| {
        let mut lines: Vec<String> = text(&output.stdout)
            .lines()
            .filter(|line| !line.starts_with("PATH=") && !line.starts_with('_'))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(without_path(&output), without_path(&reference));
    assert_eq!(var(&output, "WEB_CONCURRENCY").as_deref(), Some("99"));
    let path = var(&output, "PATH").expect("PATH");
    assert_eq!(
        path,
        format!("{}/.launcher/bin:{PLATFORM_PATH}", slug.display())
    );
}

// ---- End to end: gunicorn in a real 512 MB memory cgroup -------------------------------------------

const LIMIT_BYTES: u64 = 512 * 1024 * 1024;

/// A process group that is killed on drop.
struct Dyno {
    child: Child,
}

impl Drop for Dyno {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16) -> Option<String> {
    let output = Command::new("curl")
        .args(["--silent", "--fail", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .ok()?;
    output.status.success().then(|| text(&output.stdout))
}

#[test]
fn flask_fixture_served_by_gunicorn_in_a_512_mb_cgroup_runs_the_sized_worker_count() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        let cgroup = MemoryCgroup::create(&["launcher-buildpack-test"], LIMIT_BYTES)?;
        serve_in_cgroup(&cgroup, &venv);
        Ok(())
    });
}

fn serve_in_cgroup(cgroup: &MemoryCgroup, venv: &Path) {
    let build = compiled_slug("flask");
    let slug = build.app();
    let procfile = fs::read_to_string(slug.join("Procfile")).expect("Procfile");
    let web = procfile
        .lines()
        .find_map(|line| line.strip_prefix("web:"))
        .expect("a web process")
        .trim()
        .to_owned();
    let port = free_port();
    let boot = format!(
        "cd \"$HOME\" && for f in .profile.d/*.sh; do source \"$f\"; done; launcher size --json > \"$HOME/../size.json\"; exec {web}"
    );
    let path = format!("{}:{PLATFORM_PATH}", venv.join("bin").display());
    let mut dyno_boot = Command::new("bash");
    dyno_boot
        .args(["-c", &boot])
        .env_clear()
        .env("HOME", &slug)
        .env("PATH", path)
        .env("PORT", port.to_string())
        .env("DYNO", "web.1");
    let child = cgroup
        .wrap(&dyno_boot)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("boot the dyno");
    let dyno = Dyno { child };
    let master = dyno.child.id();

    let body = wait_for("gunicorn to answer", Duration::from_secs(60), || {
        http_get(port)
    });
    let size = fs::read_to_string(build.dir.path().join("size.json")).expect("size.json");
    assert_eq!(json_number(&size, "memory_mb"), 512, "{size}");
    let expected = json_number(&size, "web_concurrency") as usize;
    assert_eq!(expected, 2, "512 MB / 256 MB per worker: {size}");
    assert!(
        body.contains(&format!("\"web_concurrency\":\"{expected}\"")),
        "{body}"
    );

    // Exactly that many workers, all children of the master, all inside the cgroup.
    let workers = wait_for("the workers to boot", Duration::from_secs(30), || {
        let workers = children(master);
        (workers.len() >= expected).then_some(workers)
    });
    assert_eq!(workers.len(), expected, "workers {workers:?}");
    let in_cgroup = cgroup.pids();
    assert!(
        in_cgroup.contains(&master),
        "master {master} not in {in_cgroup:?}"
    );
    for worker in &workers {
        assert!(
            in_cgroup.contains(worker),
            "worker {worker} not in {in_cgroup:?}"
        );
    }
    for _ in 0..10 {
        let body = http_get(port).expect("a request");
        assert!(
            workers
                .iter()
                .any(|pid| body.contains(&format!("\"pid\":{pid},"))),
            "answered by a process that is not a worker: {body}"
        );
    }
    assert_eq!(children(master).len(), expected);
    drop(dyno);
}
