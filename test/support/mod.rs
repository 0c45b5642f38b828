//! Helpers shared by the black-box test files (each file is its own crate and uses a part).
//! `harness` runs `launcher run` and reads its event lines (`logfmt`), `procs` reads the process
//! tree from /proc, `http` sends requests and keep-alive load on loopback, `lifecycle` stands in
//! for the Cloud Native Buildpack lifecycle.
#![allow(dead_code)]

pub mod cgroup2;
pub mod harness;
pub mod http;
pub mod lifecycle;
pub mod logfmt;
pub mod procs;
pub mod slug;
pub mod vm;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A process's output as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A cgroup v1 memory cgroup made for one test, nested under this process's own memory cgroup.
/// On drop, the processes left in it are killed and its directories removed.
pub struct MemoryCgroup {
    dirs: Vec<PathBuf>,
    /// A cgroup of its own in the v1 cpuacct hierarchy too, when asked for (`with_cpu_accounting`).
    cpu: Option<PathBuf>,
}

impl MemoryCgroup {
    /// Makes `<own cgroup>/<first>-<pid>/<second>-<pid>...`, with `limit_bytes` on the first
    /// directory only (so the others inherit it, as a child of a limited parent does).
    pub fn create(names: &[&str], limit_bytes: u64) -> Result<Self, String> {
        let mut cgroup = MemoryCgroup {
            dirs: Vec::new(),
            cpu: None,
        };
        let mut dir = own_memory_cgroup()?;
        for name in names {
            dir = dir.join(format!("{name}-{}", std::process::id()));
            fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            cgroup.dirs.push(dir.clone());
        }
        let limit = cgroup.dirs[0].join("memory.limit_in_bytes");
        fs::write(&limit, limit_bytes.to_string())
            .map_err(|e| format!("cannot write {}: {e}", limit.display()))?;
        Ok(cgroup)
    }

    /// Puts what `wrap` runs in a new cgroup of the v1 cpuacct hierarchy too, so that its CPU
    /// time is its own: on a machine this small the load generator shares the cores.
    pub fn with_cpu_accounting(mut self, name: &str) -> Result<Self, String> {
        let mount = Path::new("/sys/fs/cgroup/cpuacct");
        if !mount.join("cpuacct.usage").exists() {
            return Err("no cgroup v1 cpuacct controller at /sys/fs/cgroup/cpuacct".to_owned());
        }
        let dir = own_cgroup(mount, "cpuacct")?.join(format!("{name}-{}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        self.cpu = Some(dir);
        Ok(self)
    }

    /// The directory processes are put in: the innermost one.
    pub fn dir(&self) -> &Path {
        self.dirs.last().expect("at least one directory")
    }

    /// The processes in the innermost directory.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(self.dir())
    }

    /// `command` run inside the innermost directory (and the cpuacct one, if any): see `wrap_in`.
    pub fn wrap(&self, command: &Command) -> Command {
        let mut procs = vec![self.dir().join("cgroup.procs")];
        procs.extend(self.cpu.as_ref().map(|d| d.join("cgroup.procs")));
        wrap_in(&procs, command)
    }

    /// The kernel's OOM kills in these directories so far (cgroup v1 counts a kill in the
    /// killed process's own directory only, so they are summed).
    pub fn oom_kills(&self) -> u64 {
        self.dirs
            .iter()
            .filter_map(|dir| fs::read_to_string(dir.join("memory.oom_control")).ok())
            .filter_map(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
            })
            .sum()
    }

    /// The figure `name` of the outermost directory's memory.stat.
    pub fn stat(&self, name: &str) -> u64 {
        let text = fs::read_to_string(self.dirs[0].join("memory.stat")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for dir in self.dirs.iter().rev().chain(&self.cpu) {
            while fs::remove_dir(dir).is_err() && Instant::now() < deadline {
                for pid in pids_in(dir) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if dir.exists() {
                eprintln!("could not remove {}", dir.display());
            }
        }
    }
}

/// `command` run inside cgroups: a shell that writes its pid into each `cgroup.procs` file given,
/// then execs it with the same arguments, environment (cleared first) and working directory.
pub fn wrap_in(procs: &[PathBuf], command: &Command) -> Command {
    let mut wrapped = Command::new("/bin/sh");
    wrapped
        .arg("-c")
        .arg("while [ \"$1\" != -- ]; do echo $$ > \"$1\" || exit 1; shift; done; shift; exec \"$@\"")
        .arg("wrap")
        .args(procs)
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args())
        .env_clear();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            wrapped.env(key, value);
        }
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

fn pids_in(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// This process's own cgroup v1 memory directory, so that test cgroups nest under it.
fn own_memory_cgroup() -> Result<PathBuf, String> {
    let mount = Path::new("/sys/fs/cgroup/memory");
    if !mount.join("memory.limit_in_bytes").exists() {
        return Err(NO_CGROUP_V1.to_owned());
    }
    own_cgroup(mount, "memory")
}

/// This process's directory in the v1 hierarchy of `controller` mounted at `mount`.
fn own_cgroup(mount: &Path, controller: &str) -> Result<PathBuf, String> {
    let text = fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let own = text
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.trim_start_matches('/').to_owned())
        })
        .unwrap_or_default();
    Ok(mount.join(own))
}

/// Why a real-cgroup test cannot run on a machine with cgroup v2 only (GitHub's runners).
pub const NO_CGROUP_V1: &str = "no cgroup v1 memory controller at /sys/fs/cgroup/memory";

/// Runs a test that needs the machine's help (root, a cgroup, the venv), or says plainly why it
/// cannot run here. Under CI (`CI=true`) not being able to run is a failure, never a skip, with
/// one exception: a machine without a cgroup v1 memory controller, when
/// `LAUNCHER_TEST_NO_CGROUP_V1` says why it has none (the release workflow's runners).
pub fn needs_machine(test: impl FnOnce() -> Result<(), String>) {
    if let Err(why) = test() {
        let ci = std::env::var("CI").as_deref() == Ok("true");
        let no_v1 = std::env::var("LAUNCHER_TEST_NO_CGROUP_V1").unwrap_or_default();
        match skip(&why, ci, &no_v1) {
            Ok(message) => eprintln!("SKIPPED: {message}"),
            Err(message) => panic!("{message}"),
        }
    }
}

/// What `needs_machine` does with a test that could not run for `why`: `Ok` to skip with the
/// message, `Err` to fail with it.
pub fn skip(why: &str, ci: bool, no_cgroup_v1: &str) -> Result<String, String> {
    let message = format!("this test could not run: {why}");
    if !ci {
        Ok(message)
    } else if why == NO_CGROUP_V1 && !no_cgroup_v1.trim().is_empty() {
        Ok(format!(
            "{message} (LAUNCHER_TEST_NO_CGROUP_V1: {no_cgroup_v1})"
        ))
    } else {
        Err(format!("{message}; CI must be able to run it"))
    }
}

/// `<base>/<name>/run-<pid>`, made fresh, for what a test file shares across its tests (statics
/// are never dropped): it is removed when the test process exits, and the dirs of earlier runs
/// whose process is gone (killed before it could) are removed first.
pub fn run_dir(base: &Path, name: &str) -> PathBuf {
    let base = base.join(name);
    if let Ok(entries) = fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.trim_start_matches("run-");
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let run_dir = base.join(format!("run-{}", std::process::id()));
    let _ = fs::remove_dir_all(&run_dir);
    fs::create_dir_all(&run_dir).expect("mkdir run dir");
    remove_at_exit(&run_dir);
    run_dir
}

static AT_EXIT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn remove_at_exit(dir: &Path) {
    extern "C" fn remove_all() {
        let dirs = AT_EXIT.lock().map(|d| d.clone()).unwrap_or_default();
        for dir in dirs {
            let _ = fs::remove_dir_all(dir);
        }
    }
    let mut dirs = AT_EXIT.lock().unwrap_or_else(|e| e.into_inner());
    if dirs.is_empty() {
        // SAFETY: registers a plain function; libc runs it once, at exit.
        unsafe { libc::atexit(remove_all) };
    }
    dirs.push(dir.to_path_buf());
}

/// The value `init` makes once for a whole test file (a cold build, say); when it failed, every
/// test that asks for it fails with `what` and the reason.
pub fn once<T: Send + Sync>(
    cell: &'static std::sync::OnceLock<Result<T, String>>,
    init: fn() -> Result<T, String>,
    what: &str,
) -> &'static T {
    match cell.get_or_init(init) {
        Ok(value) => value,
        Err(why) => panic!("{what} failed: {why}"),
    }
}

/// Every variable the boot reads (the profile, the exec.d program): the tests of hostile values
/// put shell code in each.
pub const READ_AT_BOOT: [&str; 7] = [
    "WEB_CONCURRENCY",
    "WEB_CONCURRENCY_SET_BY",
    "LAUNCHER_WEB_CONCURRENCY",
    "WEB_MEMORY",
    "LAUNCHER_MAX_WORKERS",
    "LAUNCHER_DISABLE",
    "DYNO",
];

pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The repository's root (the launcher crate is `<repo>/launcher`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A test app under test/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("test/fixtures").join(name)
}

/// The test venv with the pinned servers of test/requirements.txt, checked to hold `programs`.
/// test/run makes it and sets `LAUNCHER_TEST_VENV`; under CI that variable is required (a venv
/// found by chance is not the one CI made). Elsewhere it falls back to `<repo>/.venv`.
pub fn venv(programs: &[&str]) -> Result<PathBuf, String> {
    venv_of("LAUNCHER_TEST_VENV", ".venv", "requirements.txt", programs)
}

/// The venv of test/requirements-new-gunicorn.txt: the newest gunicorn release, whose gthread
/// worker differs from that of test/requirements.txt's (23.0.0). test/run makes it and sets
/// `LAUNCHER_TEST_NEW_GUNICORN_VENV`, as for `venv`.
pub fn new_gunicorn_venv() -> Result<PathBuf, String> {
    let requirements = "requirements-new-gunicorn.txt";
    venv_of(
        "LAUNCHER_TEST_NEW_GUNICORN_VENV",
        ".venv-new-gunicorn",
        requirements,
        &["gunicorn"],
    )
}

fn venv_of(
    var: &str,
    fallback: &str,
    requirements: &str,
    programs: &[&str],
) -> Result<PathBuf, String> {
    let venv = match std::env::var_os(var) {
        Some(dir) => PathBuf::from(dir),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            return Err(format!("{var} is not set: run the tests through test/run"))
        }
        None => repo().join(fallback),
    };
    for program in programs {
        let path = venv.join("bin").join(program);
        if !path.exists() {
            return Err(format!(
                "no {program} at {} (test/run makes the venv; or python3 -m venv {fallback} && {fallback}/bin/pip install -r test/{requirements}, or set {var})",
                path.display()
            ));
        }
    }
    Ok(venv)
}

/// Runs `command` to its end and returns its output, as `Command::output` does, with a deadline:
/// past `timeout` its whole process group (it gets one of its own) is killed and the test fails
/// with what it wrote so far, so a hung build cannot hang the suite.
pub fn output_within(command: &mut Command, timeout: Duration) -> std::process::Output {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            let (out, err) = (
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default(),
            );
            panic!(
                "{:?} ran past {timeout:?}; killed\n--- stdout\n{}--- stderr\n{}",
                command.get_program(),
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Waits for `condition` with a deadline, polling; never a fixed sleep.
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port that was free a moment ago, for a launcher to bind `[::]` on. It is taken below the
/// kernel's ephemeral range (32768-60999 by default): a port the kernel handed out as `:0` may be
/// the source port of one of the tests' own client connections a moment later, and the launcher's
/// bind then fails with EADDRINUSE.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = std::process::id() ^ nanos;
    for _ in 0..1000 {
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(call.wrapping_mul(7_919)) % 12_000) as u16;
        // `[::]` where the machine has IPv6 (it then takes IPv4 too), as the launcher binds.
        let in_use = |host: &str| {
            TcpListener::bind(format!("{host}:{port}"))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
        };
        if !in_use("[::]") && !in_use("0.0.0.0") {
            return port;
        }
    }
    panic!("no free TCP port between 20000 and 32000");
}
