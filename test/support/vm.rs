//! The cgroup v2 lane: tests that need a real cgroup v2 kernel run inside the guest that test/vm
//! boots (Debian's kernel under qemu, this machine's / shared read-only), while `cargo test` on
//! this machine shows each of them pass or fail (docs/development.md, "The cgroup v2 lane").
//!
//! A test of the lane is one function: `#[test] fn name() { vm::guest(|dir| { ... }) }`, or
//! `vm::test(host_step, guest_step)` when something must be made on this machine first (the
//! guest has no network and runs Python about 30x slower). The same test binary runs in three
//! phases, told apart by `LAUNCHER_VM_PHASE`:
//!
//! - here (unset): the first lane test to run boots the guest once for all of them
//!   (`Lane::start`): it lists the tests this run selected (the binary's own `--list` with the
//!   same filters), runs each one's host step in a child process (`host`), then boots the guest
//!   with a script that runs each one's guest step (`guest`), one at a time, each in a child
//!   process with a deadline, its output and status written to the test's own directory in a
//!   directory shared with the guest. Each test then reports what its guest step did.
//! - `host`: the host step, in the test's directory; a test that is not a lane test (it never
//!   calls `vm::test`) leaves no mark there and is not run in the guest.
//! - `guest`: the guest step, in the guest, as root.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{repo, run_dir};

const PHASE: &str = "LAUNCHER_VM_PHASE";
/// Why this machine cannot boot the guest, where CI runs on one (GitHub's Ubuntu runners have no
/// Debian kernel package): the lane's tests may then skip under CI too.
pub const NO_VM: &str = "LAUNCHER_TEST_NO_VM";
const SHARE: &str = "LAUNCHER_VM_SHARE";
/// The whole lane, host steps and the guest's boot included, is to take under 5 minutes: the
/// guest is killed when this much has passed since the lane started.
const LANE_BUDGET: Duration = Duration::from_secs(285);
/// One guest step is killed after this long, so that one hung test leaves time for the others.
const TEST_TIMEOUT: Duration = Duration::from_secs(150);
/// One host step (building a slug: a venv, pip from PyPI) is killed after this long.
const HOST_TIMEOUT: Duration = Duration::from_secs(120);

type Step<'a> = Box<dyn FnOnce(&Path) -> Result<(), String> + 'a>;

/// A lane test whose whole body runs in the guest, in a directory of its own that this machine
/// sees too (at the same path).
pub fn guest(body: impl FnOnce(&Path) -> Result<(), String>) {
    test(|_| Ok(()), body);
}

/// A lane test with a step on this machine (`host`, run before the guest boots) and one in the
/// guest (`body`), both given the test's own shared directory.
pub fn test(
    host: impl FnOnce(&Path) -> Result<(), String>,
    body: impl FnOnce(&Path) -> Result<(), String>,
) {
    let name = std::thread::current()
        .name()
        .expect("libtest names each test's thread")
        .to_owned();
    match std::env::var(PHASE).as_deref() {
        Ok("host") => run_step(&name, "host", Box::new(host)),
        Ok("guest") => run_step(&name, "guest", Box::new(body)),
        _ => report(&name),
    }
}

/// The test's own directory in the share.
fn test_dir(share: &Path, name: &str) -> PathBuf {
    share.join(name.replace("::", "--"))
}

fn run_step(name: &str, phase: &str, step: Step) {
    let share = PathBuf::from(std::env::var_os(SHARE).expect("LAUNCHER_VM_SHARE in a lane step"));
    let dir = test_dir(&share, name);
    if phase == "host" {
        fs::create_dir_all(&dir).expect("the test's directory");
        fs::write(dir.join("lane"), "").expect("the lane mark");
    }
    if let Err(why) = step(&dir) {
        panic!("{phase} step: {why}");
    }
}

/// What a lane test says here: its guest step's result, or why there is none.
fn report(name: &str) {
    let lane = match LANE.get_or_init(Lane::start) {
        Ok(lane) => lane,
        Err(Cannot::Boot(why)) => {
            let ci = std::env::var("CI").as_deref() == Ok("true");
            let no_vm = std::env::var(NO_VM).unwrap_or_default();
            match skip(why, ci, &no_vm) {
                Ok(message) => return eprintln!("SKIPPED: {message}"),
                Err(message) => panic!("{message}"),
            }
        }
        Err(Cannot::Run(why)) => panic!("the cgroup v2 lane did not run: {why}"),
    };
    let dir = test_dir(&lane.share, name);
    let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
    if let Some(host) = lane.host_failures.iter().find(|(n, _)| n == name) {
        panic!(
            "the host step failed; the guest step was not run\n{}",
            host.1
        );
    }
    let output = read("output").unwrap_or_default();
    let seconds = read("seconds").unwrap_or_default();
    match read("status").map(|s| s.trim().to_owned()).as_deref() {
        Some("0") => eprintln!(
            "passed in the cgroup v2 guest in {} s:\n{output}",
            seconds.trim()
        ),
        Some("124") | Some("137") => panic!(
            "the guest step ran past {TEST_TIMEOUT:?} and was killed\n--- output\n{output}"
        ),
        Some(status) => panic!("failed in the cgroup v2 guest (exit {status})\n{output}"),
        None => panic!(
            "the guest did not finish this test ({})\n--- output so far\n{output}\n--- the guest's console, last lines\n{}",
            lane.outcome,
            lane.console_tail()
        ),
    }
}

/// What a lane test does when this machine cannot boot the guest for `why`: `Ok` to skip with
/// the message, `Err` to fail with it. Under CI only when `no_vm` says why.
pub fn skip(why: &str, ci: bool, no_vm: &str) -> Result<String, String> {
    let message = format!("the cgroup v2 lane could not run: {why}");
    match (ci, no_vm.trim()) {
        (false, _) => Ok(message),
        (true, "") => Err(format!(
            "{message}; CI must run it (or say why it cannot in {NO_VM})"
        )),
        (true, reason) => Ok(format!("{message} ({NO_VM}: {reason})")),
    }
}

static LANE: OnceLock<Result<Lane, Cannot>> = OnceLock::new();

#[derive(Debug)]
enum Cannot {
    /// This machine cannot boot the guest (no qemu, no kernel): a skip outside CI.
    Boot(String),
    /// It could, and the lane still did not run.
    Run(String),
}

/// One boot of the guest for every lane test of this run.
struct Lane {
    share: PathBuf,
    /// The tests whose host step failed, with its output.
    host_failures: Vec<(String, String)>,
    /// How the guest ended.
    outcome: String,
}

impl Lane {
    fn start() -> Result<Lane, Cannot> {
        let vm = repo().join("test/vm");
        let check = Command::new(&vm)
            .arg("--check")
            .output()
            .map_err(|e| Cannot::Run(format!("cannot run {}: {e}", vm.display())))?;
        if check.status.code() == Some(3) {
            return Err(Cannot::Boot(super::text(&check.stderr).trim().to_owned()));
        }
        let lane_started = Instant::now();
        let share = run_dir(&std::env::temp_dir(), "launcher-vm-lane");
        let exe = std::env::current_exe().map_err(|e| Cannot::Run(e.to_string()))?;
        let mut tests = Vec::new();
        let mut host_failures = Vec::new();
        for name in selected_tests(&exe)? {
            let mut step = Command::new(&exe);
            step.args(["--exact", &name, "--nocapture", "--test-threads=1"])
                .env(PHASE, "host")
                .env(SHARE, &share);
            let (status, output) = run_with_deadline(&mut step, HOST_TIMEOUT, None)?;
            if !test_dir(&share, &name).join("lane").exists() {
                continue;
            }
            match status {
                Some(0) => tests.push(name),
                _ => host_failures.push((name, output)),
            }
        }
        let script = share.join("run.sh");
        fs::write(&script, guest_script(&exe, &share, &tests))
            .map_err(|e| Cannot::Run(format!("cannot write {}: {e}", script.display())))?;
        let console = share.join("console.log");
        let started = Instant::now();
        let left = LANE_BUDGET
            .saturating_sub(lane_started.elapsed())
            .as_secs()
            .max(1);
        let mut boot = Command::new(&vm);
        boot.arg("--share")
            .arg(&share)
            .args(["--timeout", &left.to_string()])
            .args(["--", "/bin/sh"])
            .arg(&script)
            .current_dir(repo());
        let deadline = Duration::from_secs(left + 15);
        let (status, _) = run_with_deadline(&mut boot, deadline, Some(&console))?;
        let outcome = format!(
            "test/vm exited {} after {:.0?}",
            status.map_or("on a signal".to_owned(), |s| s.to_string()),
            started.elapsed()
        );
        eprintln!(
            "cgroup v2 lane: {} tests, {outcome}, {:.0?} in all",
            tests.len(),
            lane_started.elapsed()
        );
        Ok(Lane {
            share,
            host_failures,
            outcome,
        })
    }

    fn console_tail(&self) -> String {
        let text = fs::read_to_string(self.share.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The tests of this binary that this run selected: `--list` with the same arguments.
fn selected_tests(exe: &Path) -> Result<Vec<String>, Cannot> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listed = Command::new(exe)
        .args(&args)
        .args(["--list", "--format", "terse"])
        .env(PHASE, "list")
        .output()
        .map_err(|e| Cannot::Run(format!("cannot list the tests: {e}")))?;
    let text = super::text(&listed.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

/// The guest's command: each test's guest step in turn, with a deadline, its output and exit
/// status into its directory. What the guest steps need of this machine's environment is
/// passed on: the test venv, CI (no skips there), backtraces.
fn guest_script(exe: &Path, share: &Path, tests: &[String]) -> String {
    let venv = super::venv(&[]).unwrap_or_else(|_| repo().join(".venv"));
    let mut script = String::from("set -u\n");
    script += &format!(
        "export {PHASE}=guest {SHARE}={} LAUNCHER_TEST_VENV={} RUST_BACKTRACE=1 CI={}\n",
        quoted(share),
        quoted(&venv),
        std::env::var("CI").unwrap_or_default()
    );
    for name in tests {
        let dir = quoted(&test_dir(share, name));
        script += &format!(
            "echo \"lane: {name}\"\nstart=$(date +%s)\ntimeout -k 5 {} {} --exact {name} --nocapture --test-threads=1 >{dir}/output 2>&1\necho $? >{dir}/status\necho $(($(date +%s) - start)) >{dir}/seconds\n",
            TEST_TIMEOUT.as_secs(),
            quoted(exe),
        );
    }
    script
}

/// A path in single quotes for sh.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// Runs `command` in a process group of its own, its stdout and stderr into `log` (or collected),
/// killing the group past `timeout`: the exit code (None: a signal) and what it wrote. Never
/// panics: it runs inside the lane's one-time start, which other tests wait on.
fn run_with_deadline(
    command: &mut Command,
    timeout: Duration,
    log: Option<&Path>,
) -> Result<(Option<i32>, String), Cannot> {
    let (out, path) = match log {
        Some(path) => (path.to_path_buf(), None),
        None => {
            let file = tempfile::NamedTempFile::new().map_err(|e| Cannot::Run(e.to_string()))?;
            let path = file.into_temp_path();
            (path.to_path_buf(), Some(path))
        }
    };
    let file = fs::File::create(&out).map_err(|e| Cannot::Run(e.to_string()))?;
    let err = file.try_clone().map_err(|e| Cannot::Run(e.to_string()))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| Cannot::Run(format!("cannot run {:?}: {e}", command.get_program())))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    let _ = fs::File::open(&out).and_then(|mut f| f.read_to_string(&mut text));
    drop(path);
    Ok((status, text))
}
