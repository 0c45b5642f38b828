//! The launcher under test: a `Run` spawns it in its own process group, collects its stdout and
//! stderr line by line, parses its `launcher: ` logfmt event lines, waits on conditions with
//! deadlines, and kills the group and every descendant on drop, so a failing test leaks no process.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::fixture;
use super::logfmt::{events, Event};
use super::procs::{children, descendants};

pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_launcher");
pub const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long a launcher and its workers get to come up (uvicorn boots in about 0.5 s alone; the
/// tests share 2 CPUs).
pub const BOOT: Duration = Duration::from_secs(20);
pub const SECOND: Duration = Duration::from_secs(1);

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `program args` in the fixture `app`'s directory, with only PATH (the venv first when given),
/// Python's no-bytecode/unbuffered switches and `env` in its environment.
pub fn command(
    venv: Option<&Path>,
    app: &str,
    env: &[(&str, &str)],
    program: &str,
    args: &[&str],
) -> Command {
    let path = match venv {
        Some(venv) => format!("{}:{SYSTEM_PATH}", venv.join("bin").display()),
        None => SYSTEM_PATH.to_owned(),
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(fixture(app))
        .env_clear()
        .env("PATH", path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .envs(env.iter().copied());
    command
}

/// `launcher ARGS` run as nobody (uid and gid 65534, no supplementary groups), as a dyno runs it
/// without root, with only PATH in its environment.
pub fn launcher_as_nobody(args: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            LAUNCHER,
        ])
        .args(args)
        .env_clear()
        .env("PATH", SYSTEM_PATH);
    command
}

/// Makes `command` and everything it starts run under a seccomp filter that refuses
/// `pidfd_getfd(2)` with EPERM, the rule of Docker's default profile (and containerd's, which
/// Kubernetes' `RuntimeDefault` is) for a container without CAP_SYS_PTRACE that a worker's drain
/// meets. The filter stands in for a container runtime, which the tests do not have.
pub fn refuse_pidfd_getfd(command: &mut Command) {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
    let rules = [(libc::SYS_pidfd_getfd, vec![])].into_iter().collect();
    let arch = std::env::consts::ARCH
        .try_into()
        .expect("an architecture seccompiler knows");
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .expect("a seccomp filter");
    let program: BpfProgram = filter.try_into().expect("a BPF program");
    // SAFETY: between fork and exec the closure makes two system calls (prctl, seccomp) and
    // allocates nothing unless they fail.
    unsafe {
        command.pre_exec(move || {
            seccompiler::apply_filter(&program).map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
}

/// `launcher ARGS` serving the fixture `app` with the venv's servers.
pub fn launcher(venv: &Path, app: &str, env: &[(&str, &str)], args: &[&str]) -> Command {
    command(Some(venv), app, env, LAUNCHER, args)
}

/// A fan-out launcher with `workers` uvicorn workers serving test/fixtures/asgi on `port`, all
/// ready: the run and the workers' pids.
pub fn fanout(venv: &Path, port: u16, workers: usize, env: &[(&str, &str)]) -> (Run, Vec<u32>) {
    let port = port.to_string();
    let count = workers.to_string();
    let mut all = vec![("PORT", port.as_str()), ("WEB_CONCURRENCY", count.as_str())];
    all.extend_from_slice(env);
    let run = Run::spawn(launcher(
        venv,
        "asgi",
        &all,
        &["run", "--", "uvicorn", "app:app", "--no-access-log"],
    ));
    run.wait_ready(workers);
    let pids = run.wait_children(workers, BOOT);
    (run, pids)
}

/// A delegate launcher running one gunicorn master that serves test/fixtures/flask-slow on
/// `port` with `workers` workers, all started: the run, the master's pid and its workers' pids.
pub fn delegate(venv: &Path, port: u16, workers: usize) -> (Run, u32, Vec<u32>) {
    let port = port.to_string();
    let count = workers.to_string();
    let run = Run::spawn(launcher(
        venv,
        "flask-slow",
        &[("PORT", &port), ("WEB_CONCURRENCY", &count)],
        &["run", "--", "gunicorn", "app:app"],
    ));
    let master = run.wait_children(1, BOOT)[0];
    let pids = run.wait_grandchildren(master, workers, BOOT);
    (run, master, pids)
}

/// Collects a pipe's lines in a thread, for the test to look at while the process runs; the
/// thread ends at EOF, once every process holding the pipe has ended.
fn collect(pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            sink.lock().expect("lines").push(text);
            line.clear();
        }
    });
    (lines, reader)
}

/// A running launcher (or `unshare` running one) in its own process group, with its stdout and
/// stderr collected line by line (the workers inherit both). Dropping it kills the group and every
/// descendant. Unless the command sets `TMPDIR`, it gets one of its own, removed with the `Run`:
/// the launcher's state file goes there, not into the machine's /tmp.
pub struct Run {
    child: Child,
    _tmpdir: Option<tempfile::TempDir>,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    status: Option<ExitStatus>,
}

impl Run {
    pub fn spawn(mut command: Command) -> Run {
        let has_tmpdir = command.get_envs().any(|(key, _)| key == "TMPDIR");
        let tmpdir = (!has_tmpdir).then(|| tempfile::TempDir::new().expect("temp dir"));
        if let Some(dir) = &tmpdir {
            command.env("TMPDIR", dir.path());
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let started = Instant::now();
        let mut child = command.spawn().expect("spawn the launcher");
        let (out, out_reader) = collect(child.stdout.take().expect("stdout"));
        let (err, err_reader) = collect(child.stderr.take().expect("stderr"));
        Run {
            child,
            _tmpdir: tmpdir,
            out,
            err,
            readers: vec![out_reader, err_reader],
            started,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the launcher was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn stdout(&self) -> Vec<String> {
        self.out.lock().expect("stdout").clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.err.lock().expect("stderr").clone()
    }

    /// Everything seen so far, for failure messages.
    pub fn log(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout().join("\n"),
            self.stderr().join("\n")
        )
    }

    /// The `event=name` lines so far, in order.
    pub fn events(&self, name: &str) -> Vec<Event> {
        events(self.stdout(), name)
    }

    /// How many `fixture: event=NAME` lines the app wrote to stdout so far.
    pub fn fixture_lines(&self, event: &str) -> usize {
        let marker = format!("fixture: event={event} ");
        self.stdout()
            .iter()
            .map(|l| l.matches(&marker).count())
            .sum()
    }
}

impl Run {
    /// Waits for `condition`, failing with the launcher's log on timeout.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = condition() {
                return value;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `count()` is `want` and has stayed so for a second: how long that took from
    /// `since`.
    pub fn settles_at(
        &self,
        want: usize,
        since: Instant,
        timeout: Duration,
        count: impl Fn() -> usize,
    ) -> Duration {
        let mut reached: Option<Instant> = None;
        self.wait(&format!("{want} workers"), timeout, || {
            match (count() == want, reached) {
                (false, _) => reached = None,
                (true, None) => reached = Some(Instant::now()),
                (true, Some(at)) if at.elapsed() >= Duration::from_secs(1) => return Some(()),
                (true, Some(_)) => {}
            }
            None
        });
        reached.expect("reached").duration_since(since)
    }

    /// Waits for the first `event=name` line that `matches`.
    pub fn wait_event(
        &self,
        name: &str,
        timeout: Duration,
        matches: impl Fn(&Event) -> bool,
    ) -> Event {
        self.wait(&format!("an event={name} line"), timeout, || {
            self.events(name).into_iter().find(|e| matches(e))
        })
    }

    /// Waits for `count` `event=name` lines that `match`.
    pub fn wait_events(
        &self,
        name: &str,
        count: usize,
        timeout: Duration,
        matches: impl Fn(&Event) -> bool,
    ) -> Vec<Event> {
        self.wait(&format!("{count} event={name} lines"), timeout, || {
            let events: Vec<Event> = self
                .events(name)
                .into_iter()
                .filter(|e| matches(e))
                .collect();
            (events.len() >= count).then_some(events)
        })
    }

    /// Waits for the launcher's own exit (not its workers').
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.status = Some(status);
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the launcher did not exit within {timeout:?}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The launcher's worker processes as the kernel sees them, once there are `count` of them.
    pub fn wait_children(&self, count: usize, timeout: Duration) -> Vec<u32> {
        self.wait(&format!("{count} child processes"), timeout, || {
            let children = children(self.pid());
            (children.len() == count).then_some(children)
        })
    }

    /// The children of `parent` (a gunicorn master's workers), once there are at least `count`;
    /// fails if there are more.
    pub fn wait_grandchildren(&self, parent: u32, count: usize, timeout: Duration) -> Vec<u32> {
        let found = self.wait(&format!("{count} children of {parent}"), timeout, || {
            let children = children(parent);
            (children.len() >= count).then_some(children)
        });
        assert_eq!(
            found.len(),
            count,
            "children of {parent}: {found:?}\n{}",
            self.log()
        );
        found
    }

    pub fn wait_ready(&self, count: usize) -> Vec<Event> {
        self.wait_events("worker_ready", count, BOOT, |_| true)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Run {
    /// Runs `command` to its end (failing after `timeout`), then ends what it left and returns
    /// what it wrote, as `Command::output` would.
    pub fn output(command: Command, timeout: Duration) -> Output {
        let mut run = Run::spawn(command);
        let status = run.wait_exit(timeout);
        let (stdout, stderr) = run.end();
        Output {
            status,
            stdout: stdout.join("\n").into_bytes(),
            stderr: stderr.join("\n").into_bytes(),
        }
    }

    /// Kills the launcher, its process group and every descendant, then collects every line they
    /// wrote (stdout, stderr).
    pub fn end(mut self) -> (Vec<String>, Vec<String>) {
        self.kill();
        for reader in self.readers.drain(..) {
            reader.join().expect("reader thread");
        }
        (self.stdout(), self.stderr())
    }

    fn kill(&mut self) {
        let mut pids = Vec::new();
        if self.status.is_none() {
            pids = descendants(self.pid());
            pids.push(self.pid());
        }
        let mut args = vec![
            "-KILL".to_owned(),
            "--".to_owned(),
            format!("-{}", self.pid()),
        ];
        args.extend(pids.iter().map(u32::to_string));
        let _ = Command::new("kill")
            .args(&args)
            .stderr(Stdio::null())
            .status();
        if let Ok(status) = self.child.wait() {
            self.status = Some(status);
        }
    }
}
