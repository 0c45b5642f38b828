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

#[path = "buildpack/compile.rs"]
mod compile;
#[path = "buildpack/dyno.rs"]
mod dyno;
#[path = "buildpack/from_source.rs"]
mod from_source;
#[path = "buildpack/release_download.rs"]
mod release_download;
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
