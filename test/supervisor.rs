//! Black-box tests of `launcher run`, the pre-fork supervisor: the real binary serving the fixtures
//! with real uvicorn (fan-out: N workers sharing the launcher's socket as fd 3) and real gunicorn
//! (delegate: one master that forks its own workers), on loopback, under keep-alive load, through
//! signals, crashes and bad input. They assert on the contract's log lines (stdout, `launcher: `
//! logfmt), exit codes, and the process tree in /proc.
//!
//! Every launcher runs in its own process group under a guard (`Run`) that kills the group and
//! every descendant on drop, so a failing test leaks no process. Every wait has a deadline, every
//! load a bounded number of requests and a bounded time.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod support;
use support::{free_port, needs_machine, repo, venv};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_launcher");
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long a launcher and its workers get to come up (uvicorn boots in about 0.5 s alone; the
/// tests of this file share 2 CPUs).
const BOOT: Duration = Duration::from_secs(20);
const SECOND: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn fixture(name: &str) -> PathBuf {
    repo().join("test/fixtures").join(name)
}

// ---- The launcher under test ------------------------------------------------------------------------

/// `program args` in the fixture `app`'s directory, with only PATH (the venv first when given),
/// Python's no-bytecode/unbuffered switches and `env` in its environment.
fn command(
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

/// `launcher ARGS` serving the fixture `app` with the venv's servers.
fn launcher(venv: &Path, app: &str, env: &[(&str, &str)], args: &[&str]) -> Command {
    command(Some(venv), app, env, LAUNCHER, args)
}

/// One parsed `launcher: at=... event=... k=v` line; `index` is its place in stdout.
#[derive(Debug, Clone)]
struct Event {
    index: usize,
    line: String,
    fields: HashMap<String, String>,
}

impl Event {
    fn opt(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    fn get(&self, key: &str) -> &str {
        self.opt(key)
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.line))
    }

    fn num<T: FromStr>(&self, key: &str) -> T
    where
        T::Err: fmt::Debug,
    {
        let value = self.get(key);
        value
            .parse()
            .unwrap_or_else(|e| panic!("{key}={value} in {:?}: {e:?}", self.line))
    }

    fn pid(&self) -> u32 {
        self.num("pid")
    }
}

/// logfmt: `key=value` pairs separated by spaces, values with spaces in double quotes.
fn logfmt(text: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return fields;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ' ' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        fields.insert(key, value);
    }
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
/// descendant.
struct Run {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    status: Option<ExitStatus>,
}

impl Run {
    fn spawn(mut command: Command) -> Run {
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
            out,
            err,
            readers: vec![out_reader, err_reader],
            started,
            status: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&self) -> Vec<String> {
        self.out.lock().expect("stdout").clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.err.lock().expect("stderr").clone()
    }

    /// Everything seen so far, for failure messages.
    fn log(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout().join("\n"),
            self.stderr().join("\n")
        )
    }

    /// The `event=name` lines so far, in order.
    fn events(&self, name: &str) -> Vec<Event> {
        self.stdout()
            .into_iter()
            .enumerate()
            .filter_map(|(index, line)| {
                let rest = line.strip_prefix("launcher: ")?;
                let fields = logfmt(rest);
                (fields.get("event").map(String::as_str) == Some(name)).then_some(Event {
                    index,
                    line,
                    fields,
                })
            })
            .collect()
    }

    /// Waits for `condition`, failing with the launcher's log on timeout.
    fn wait<T>(
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

    /// Waits for the first `event=name` line that `matches`.
    fn wait_event(&self, name: &str, timeout: Duration, matches: impl Fn(&Event) -> bool) -> Event {
        self.wait(&format!("an event={name} line"), timeout, || {
            self.events(name).into_iter().find(|e| matches(e))
        })
    }

    /// Waits for `count` `event=name` lines that `match`.
    fn wait_events(
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
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
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
    fn wait_children(&self, count: usize, timeout: Duration) -> Vec<u32> {
        self.wait(&format!("{count} child processes"), timeout, || {
            let children = children(self.pid());
            (children.len() == count).then_some(children)
        })
    }

    fn wait_ready(&self, count: usize) -> Vec<Event> {
        self.wait_events("worker_ready", count, BOOT, |_| true)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Run {
    /// Kills the launcher, its process group and every descendant, then collects every line they
    /// wrote (stdout, stderr).
    fn end(mut self) -> (Vec<String>, Vec<String>) {
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

/// Sends `signal` (a name: TERM, KILL...) to every pid at once, with one kill(1).
fn signal(signal: &str, pids: &[u32]) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pids:?} failed");
}

// ---- Processes -------------------------------------------------------------------------------------

/// (state, parent pid) from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// The living (not zombie) processes whose parent is `pid`, from /proc/*/stat.
fn children(pid: u32) -> Vec<u32> {
    let mut children: Vec<u32> = fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(
            |&child| matches!(stat(child), Some((state, parent)) if parent == pid && state != 'Z'),
        )
        .collect();
    children.sort_unstable();
    children
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut queue = vec![pid];
    while let Some(next) = queue.pop() {
        for child in children(next) {
            all.push(child);
            queue.push(child);
        }
    }
    all
}

/// Whether `pid` still runs (a zombie has ended; it only waits for its parent).
fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z')
}

/// The TCP connections `pid` holds in the established state: its socket fds' inodes looked up in
/// /proc/net/tcp and tcp6 (state 01).
fn established_connections(pid: u32) -> usize {
    let inodes: HashSet<u64> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| {
            let target = fs::read_link(fd.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|table| {
            fs::read_to_string(table)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            columns.get(3) == Some(&"01")
                && columns
                    .get(9)
                    .and_then(|inode| inode.parse().ok())
                    .is_some_and(|inode| inodes.contains(&inode))
        })
        .count()
}

// ---- HTTP/1.1 on loopback --------------------------------------------------------------------------

struct Response {
    status: u16,
    body: String,
    close: bool,
}

enum Failed {
    /// EOF, reset or a write error before any byte of a response: the request may be retried on
    /// a new connection when this one had been used before (RFC 9112 §9.3.1).
    BeforeAnyByte(String),
    Other(String),
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failed::BeforeAnyByte(why) => write!(f, "before any response byte: {why}"),
            Failed::Other(why) => f.write_str(why),
        }
    }
}

/// One keep-alive connection to 127.0.0.1.
struct Conn {
    reader: BufReader<TcpStream>,
    served: usize,
}

impl Conn {
    fn open(port: u16, timeout: Duration) -> Result<Conn, String> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&address, secs(2))
            .map_err(|e| format!("connect to {address}: {e}"))?;
        stream.set_read_timeout(Some(timeout)).expect("timeout");
        stream.set_write_timeout(Some(timeout)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Ok(Conn {
            reader: BufReader::new(stream),
            served: 0,
        })
    }

    /// A GET and its whole response (Content-Length bodies, which both fixtures send).
    fn get(&mut self, path: &str) -> Result<Response, Failed> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        if let Err(e) = self.reader.get_mut().write_all(request.as_bytes()) {
            return Err(Failed::BeforeAnyByte(format!("write: {e}")));
        }
        match self.reader.fill_buf().map(|bytes| bytes.is_empty()) {
            Ok(false) => {}
            Ok(true) => return Err(Failed::BeforeAnyByte("EOF".to_owned())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Failed::Other(format!("no response to {path}: {e}")))
            }
            Err(e) => return Err(Failed::BeforeAnyByte(e.to_string())),
        }
        let other = |e: std::io::Error| Failed::Other(format!("reading the response: {e}"));
        let mut head = String::new();
        self.reader.read_line(&mut head).map_err(other)?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Failed::Other(format!("bad status line {head:?}")))?;
        let (mut length, mut close) = (0, false);
        loop {
            let mut header = String::new();
            self.reader.read_line(&mut header).map_err(other)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .parse()
                    .map_err(|_| Failed::Other(header.to_owned()))?;
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).map_err(other)?;
        self.served += 1;
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            close,
        })
    }
}

/// One GET on a new connection.
fn get(port: u16, path: &str, timeout: Duration) -> Result<Response, String> {
    Conn::open(port, timeout)?
        .get(path)
        .map_err(|e| e.to_string())
}

/// GET that must answer 200 with JSON.
fn get_json(port: u16, path: &str) -> serde_json::Value {
    let response = get(port, path, secs(10)).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {}", response.body))
}

fn json_pid(value: &serde_json::Value) -> u32 {
    value["pid"].as_u64().expect("pid") as u32
}

/// What a load run saw. A failure is anything but a 200, after the one retry allowed.
#[derive(Default)]
struct Tally {
    ok: usize,
    retried: usize,
    failures: Vec<String>,
    /// (when the request began, how long it took to a 200), retry included.
    samples: Vec<(Instant, Duration)>,
}

impl fmt::Debug for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok={} retried={} failed={} {:?}",
            self.ok,
            self.retried,
            self.failures.len(),
            self.failures
        )
    }
}

/// Bounds of every load: requests per client, total time, and a pause between requests so that
/// the load leaves the 2 CPUs to the servers under test (8 clients: at most ~800 requests/s).
const MAX_REQUESTS_PER_CLIENT: usize = 4000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(40);
const PAUSE: Duration = Duration::from_millis(10);

/// K clients, each looping GET / on its own persistent connection.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<Tally>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|_| {
                let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
                std::thread::spawn(move || client(port, &stop, &ok))
            })
            .collect();
        Load { stop, ok, clients }
    }

    /// Waits until `more` further requests have succeeded.
    fn wait_more(&self, more: usize, run: &Run) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        run.wait(&format!("{more} more answered requests"), secs(20), || {
            (self.ok.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for client in std::mem::take(&mut self.clients) {
            let tally = client.join().expect("client thread");
            total.ok += tally.ok;
            total.retried += tally.retried;
            total.failures.extend(tally.failures);
            total.samples.extend(tally.samples);
        }
        total
    }
}

/// A test that fails midway stops its load too.
impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn client(port: u16, stop: &AtomicBool, ok: &AtomicUsize) -> Tally {
    let deadline = Instant::now() + MAX_LOAD_TIME;
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    for _ in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let begun = Instant::now();
        match request(port, &mut conn, &mut tally.retried) {
            Ok(()) => {
                tally.ok += 1;
                tally.samples.push((begun, begun.elapsed()));
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => tally.failures.push(why),
        }
        std::thread::sleep(PAUSE);
    }
    tally
}

/// One GET / on the client's connection (a new one when it has none), retried once on a new
/// connection when a reused one ends before any response byte.
fn request(port: u16, conn: &mut Option<Conn>, retried: &mut usize) -> Result<(), String> {
    let timeout = secs(5);
    let mut current = match conn.take() {
        Some(current) => current,
        None => Conn::open(port, timeout)?,
    };
    let reused = current.served > 0;
    let response = match current.get("/") {
        Ok(response) => response,
        Err(Failed::BeforeAnyByte(_)) if reused => {
            *retried += 1;
            current = Conn::open(port, timeout).map_err(|e| format!("retry: {e}"))?;
            current.get("/").map_err(|e| format!("retry: {e}"))?
        }
        Err(e) => return Err(e.to_string()),
    };
    if response.status != 200 {
        return Err(format!("status {}: {}", response.status, response.body));
    }
    if !response.close {
        *conn = Some(current);
    }
    Ok(())
}

fn percentile(mut durations: Vec<Duration>, percent: usize) -> Duration {
    assert!(!durations.is_empty(), "no samples");
    durations.sort_unstable();
    let rank = (durations.len() * percent).div_ceil(100).max(1);
    durations[rank - 1]
}

/// Sends GET `path` on `count` new connections at once, each in its own thread.
fn in_flight(port: u16, path: &str, count: usize) -> Vec<JoinHandle<Result<u16, String>>> {
    (0..count)
        .map(|_| {
            let path = path.to_owned();
            std::thread::spawn(move || get(port, &path, secs(20)).map(|r| r.status))
        })
        .collect()
}

/// How many `fixture: event=NAME` lines the app wrote to stdout so far.
fn fixture_lines(run: &Run, event: &str) -> usize {
    let marker = format!("fixture: event={event} ");
    run.stdout()
        .iter()
        .map(|l| l.matches(&marker).count())
        .sum()
}

// ---- 1. Fan-out with real uvicorn ------------------------------------------------------------------

#[test]
fn fanout_runs_web_concurrency_uvicorn_workers_sharing_the_socket_as_fd_3() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port().to_string();
        let run = Run::spawn(launcher(
            &venv,
            "asgi",
            &[("PORT", &port), ("WEB_CONCURRENCY", "3")],
            &["run", "--", "uvicorn", "app:app", "--no-access-log"],
        ));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("mode"), "fanout", "{}", start.line);
        assert_eq!(start.get("server"), "uvicorn", "{}", start.line);
        assert_eq!(start.get("workers"), "3", "{}", start.line);
        assert_eq!(start.get("port"), port, "{}", start.line);
        assert_eq!(start.pid(), run.pid(), "{}", start.line);

        run.wait_ready(3);
        let spawned: HashSet<u32> = run.events("worker_spawn").iter().map(Event::pid).collect();
        let workers = run.wait_children(3, BOOT);
        assert_eq!(
            workers.iter().copied().collect::<HashSet<_>>(),
            spawned,
            "the launcher's children are not the workers it logged\n{}",
            run.log()
        );

        let port: u16 = port.parse().expect("port");
        for _ in 0..6 {
            let fd = get_json(port, "/fd");
            let pid = json_pid(&fd);
            assert!(
                workers.contains(&pid),
                "answered by {pid}, not a worker {workers:?}"
            );
            assert_eq!(fd["fd3_listening"], true, "{fd}");
            assert_eq!(fd["listen_pid"], pid.to_string().as_str(), "{fd}");
            assert_eq!(fd["listen_fds"], "1", "{fd}");
            assert_eq!(fd["listen_fdnames"], "web", "{fd}");
        }
        let root = get_json(port, "/");
        assert_eq!(
            root["web_concurrency"], "1",
            "each fan-out worker is one process: {root}"
        );
        assert_eq!(children(run.pid()), workers, "\n{}", run.log());
        Ok(())
    });
}

#[test]
fn fanout_rewrites_the_procfile_host_and_port_of_uvicorn_to_fd_3() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port().to_string();
        // What a Procfile `web: launcher run -- uvicorn app:app --host 0.0.0.0 --port $PORT` runs.
        let run = Run::spawn(launcher(
            &venv,
            "asgi",
            &[("PORT", &port), ("WEB_CONCURRENCY", "1")],
            &[
                "run", "--", "uvicorn", "app:app", "--host", "0.0.0.0", "--port", &port,
            ],
        ));
        let rewritten = run.wait_event("args_rewritten", BOOT, |_| true);
        assert_eq!(
            rewritten.get("removed"),
            format!("--host 0.0.0.0 --port {port}"),
            "{}",
            rewritten.line
        );
        assert_eq!(rewritten.get("added"), "--fd 3", "{}", rewritten.line);
        run.wait_ready(1);
        let fd = get_json(port.parse().expect("port"), "/fd");
        assert_eq!(fd["fd3_listening"], true, "{fd}");
        Ok(())
    });
}

// ---- 2. Delegate with real gunicorn ----------------------------------------------------------------

#[test]
fn delegate_runs_one_gunicorn_master_that_forks_web_concurrency_workers() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        let port = free_port().to_string();
        let run = Run::spawn(launcher(
            &venv,
            "flask-slow",
            &[("PORT", &port), ("WEB_CONCURRENCY", "2")],
            &["run", "--", "gunicorn", "app:app"],
        ));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("mode"), "delegate", "{}", start.line);
        assert_eq!(start.get("server"), "gunicorn", "{}", start.line);
        assert_eq!(start.get("workers"), "2", "{}", start.line);

        let master = run.wait_children(1, BOOT)[0];
        let workers = run.wait("the gunicorn master's 2 workers", BOOT, || {
            let workers = children(master);
            (workers.len() >= 2).then_some(workers)
        });
        assert_eq!(
            workers.len(),
            2,
            "gunicorn workers {workers:?}\n{}",
            run.log()
        );

        let port: u16 = port.parse().expect("port");
        for _ in 0..4 {
            let root = get_json(port, "/");
            let pid = json_pid(&root);
            assert!(
                workers.contains(&pid),
                "answered by {pid}, not a worker {workers:?}"
            );
            assert_eq!(root["web_concurrency"], "2", "{root}");
        }
        assert_eq!(children(run.pid()), vec![master], "\n{}", run.log());
        assert_eq!(children(master), workers, "\n{}", run.log());
        Ok(())
    });
}

// ---- 3. Slow boot -----------------------------------------------------------------------------------

#[test]
fn the_port_accepts_at_once_and_answers_when_a_slow_booting_worker_is_up() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port();
        let run = Run::spawn(launcher(
            &venv,
            "asgi",
            &[
                ("PORT", &port.to_string()),
                ("WEB_CONCURRENCY", "1"),
                ("BOOT_SLEEP", "5"),
            ],
            &["run", "--", "uvicorn", "app:app", "--no-access-log"],
        ));
        let mut conn = run.wait("the port to accept a connection", SECOND, || {
            Conn::open(port, secs(20)).ok()
        });
        let connected = run.started.elapsed();
        assert!(connected < SECOND, "connected after {connected:?}");

        let response = conn
            .get("/")
            .unwrap_or_else(|e| panic!("GET / sent at {connected:?}: {e}\n{}", run.log()));
        let answered = run.started.elapsed();
        assert_eq!(response.status, 200, "{}", response.body);
        // BOOT_SLEEP=5 holds the import, so an answer before 5 s means it did not wait for it.
        assert!(answered >= secs(5), "answered after only {answered:?}");
        Ok(())
    });
}

// ---- 4. Under load ----------------------------------------------------------------------------------

/// A fan-out launcher with `workers` uvicorn workers, all ready.
fn fanout(venv: &Path, port: u16, workers: usize, env: &[(&str, &str)]) -> (Run, Vec<u32>) {
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

#[test]
fn a_killed_worker_is_respawned_and_costs_at_most_its_open_connections() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port();
        let (run, workers) = fanout(&venv, port, 3, &[]);
        let load = Load::start(port, 8);
        load.wait_more(200, &run);

        let (open, victim) = workers
            .iter()
            .map(|&pid| (established_connections(pid), pid))
            .max()
            .expect("a worker");
        assert!(
            open > 0,
            "8 keep-alive clients but no worker holds a connection"
        );
        let slot = run
            .events("worker_spawn")
            .into_iter()
            .find(|e| e.pid() == victim)
            .expect("the victim's worker_spawn")
            .get("worker")
            .to_owned();
        signal("KILL", &[victim]);

        let exit = run.wait_event("worker_exit", secs(10), |e| e.pid() == victim);
        assert_eq!(exit.get("status"), "signal:9", "{}", exit.line);
        assert!(
            exit.opt("restart_in_s").is_some(),
            "not respawned: {}",
            exit.line
        );
        let respawn = run.wait_event("worker_spawn", secs(10), |e| e.index > exit.index);
        assert_eq!(
            respawn.get("worker"),
            slot,
            "a respawn keeps its slot: {}",
            respawn.line
        );
        let now = run.wait_children(3, BOOT);
        assert!(!now.contains(&victim), "{now:?}");
        load.wait_more(200, &run);

        let tally = load.finish();
        // Each connection the worker held breaks once, on its next request: retried or failed.
        assert!(
            tally.retried + tally.failures.len() >= open,
            "the {open} connections of the killed worker did not all break: {tally:?}"
        );
        assert!(
            tally.failures.len() <= open,
            "{} failures, more than the {open} connections the killed worker held: {tally:?}",
            tally.failures.len()
        );
        eprintln!("kill -9 of a worker holding {open} connections: {tally:?}");
        Ok(())
    });
}

/// p99 latency of the requests begun during a rolling restart must stay under this. A worker
/// answers GET / in about a millisecond; 500 ms leaves room for a shared 2-CPU machine booting a
/// replacement Python process, and is far below a request waiting for a stopped worker.
const RESTART_P99: Duration = Duration::from_millis(500);

#[test]
fn hup_replaces_every_worker_one_at_a_time_without_a_failed_request() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port();
        let (run, originals) = fanout(&venv, port, 3, &[]);
        let original_slots: HashSet<String> = run
            .events("worker_spawn")
            .iter()
            .map(|e| e.get("worker").to_owned())
            .collect();
        let load = Load::start(port, 8);
        load.wait_more(200, &run);

        let hup = Instant::now();
        signal("HUP", &[run.pid()]);
        let signal_line = run.wait_event("signal", secs(5), |e| e.get("signal") == "HUP");
        assert_eq!(
            signal_line.get("action"),
            "rolling_restart",
            "{}",
            signal_line.line
        );
        let done = run.wait_event("restart_done", secs(30), |_| true);
        let restart = hup.elapsed();
        assert_eq!(done.get("workers"), "3", "{}", done.line);
        load.wait_more(100, &run);
        let tally = load.finish();

        let now = run.wait_children(3, secs(10));
        for pid in &originals {
            assert!(
                !now.contains(pid),
                "worker {pid} was not replaced: {now:?}\n{}",
                run.log()
            );
            let stop = run.wait_event("worker_stop", SECOND, |e| e.pid() == *pid);
            assert_eq!(stop.get("reason"), "rolling_restart", "{}", stop.line);
        }
        // Each old worker exits only after a replacement of its own is ready: matching the k-th
        // old exit with the k-th new ready, in log order, proves one distinct replacement each.
        let old_exits: Vec<Event> = run
            .events("worker_exit")
            .into_iter()
            .filter(|e| originals.contains(&e.pid()))
            .collect();
        let new_readies: Vec<Event> = run
            .events("worker_ready")
            .into_iter()
            .filter(|e| e.index > signal_line.index && !originals.contains(&e.pid()))
            .collect();
        assert_eq!(old_exits.len(), 3, "\n{}", run.log());
        assert_eq!(new_readies.len(), 3, "\n{}", run.log());
        for (ready, exit) in new_readies.iter().zip(&old_exits) {
            assert!(
                ready.index < exit.index,
                "{:?} before its replacement's {:?}\n{}",
                exit.line,
                ready.line,
                run.log()
            );
            assert!(
                !original_slots.contains(ready.get("worker")),
                "a replacement gets a new slot: {}",
                ready.line
            );
        }

        assert!(tally.failures.is_empty(), "failed requests: {tally:?}");
        let during: Vec<Duration> = tally
            .samples
            .iter()
            .filter(|(begun, _)| *begun >= hup && *begun <= hup + restart)
            .map(|(_, took)| *took)
            .collect();
        assert!(
            during.len() >= 50,
            "only {} requests during the restart",
            during.len()
        );
        let p99 = percentile(during, 99);
        assert!(
            p99 < RESTART_P99,
            "p99 {p99:?} during the restart ({tally:?})"
        );
        eprintln!("rolling restart in {restart:?}: p99 {p99:?}, {tally:?}");
        Ok(())
    });
}

#[test]
fn heroku_term_to_every_process_lets_in_flight_requests_finish_and_exits_0() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port();
        let (mut run, workers) = fanout(&venv, port, 2, &[("DYNO", "web.1")]);
        let requests = in_flight(port, "/slow?s=3", 4);
        run.wait("4 requests in flight", secs(10), || {
            (fixture_lines(&run, "slow_start") >= 4).then_some(())
        });

        // The platform signals every process of the dyno at once.
        let mut everyone = vec![run.pid()];
        everyone.extend(&workers);
        let term = Instant::now();
        signal("TERM", &everyone);
        let first = run.wait_event("signal", secs(5), |e| e.get("signal") == "TERM");
        assert_eq!(first.get("action"), "shutdown", "{}", first.line);
        // A process may end between the look and the kill: this kill(1) may fail for it.
        let alive_now = everyone.iter().filter(|&&p| alive(p)).map(u32::to_string);
        let _ = Command::new("kill").arg("-TERM").args(alive_now).status();
        let second = run.wait_event("signal", secs(5), |e| e.index > first.index);
        assert_eq!(second.get("action"), "ignored", "{}", second.line);

        for request in requests {
            let status = request.join().expect("request thread");
            assert_eq!(status, Ok(200), "an in-flight request\n{}", run.log());
        }
        let status = run.wait_exit(secs(15));
        let took = term.elapsed();
        assert_eq!(status.code(), Some(0), "\n{}", run.log());
        assert!(took < secs(15), "exit took {took:?}");
        let respawns = run
            .events("worker_spawn")
            .into_iter()
            .filter(|e| e.index > first.index);
        assert_eq!(
            respawns.count(),
            0,
            "respawned during shutdown\n{}",
            run.log()
        );
        let exit = run.wait_event("exit", SECOND, |_| true);
        assert_eq!(exit.get("status"), "0", "{}", exit.line);
        Ok(())
    });
}

#[test]
fn as_pid_1_term_to_the_launcher_alone_drains_in_flight_requests_and_exits_0() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let probe = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .output()
            .map_err(|e| format!("unshare: {e}"))?;
        if !probe.status.success() {
            return Err(format!(
                "unshare --pid cannot make a PID namespace here (needs root): {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            ));
        }
        let port = free_port().to_string();
        let mut run = Run::spawn(command(
            Some(&venv),
            "asgi",
            &[("PORT", &port), ("WEB_CONCURRENCY", "2")],
            "unshare",
            &[
                "--pid",
                "--fork",
                "--mount-proc",
                LAUNCHER,
                "run",
                "--",
                "uvicorn",
                "app:app",
                "--no-access-log",
            ],
        ));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("pid"), "1", "{}", start.line);
        let launcher = run.wait_children(1, BOOT)[0];
        run.wait_ready(2);
        let port: u16 = port.parse().expect("port");
        let requests = in_flight(port, "/slow?s=3", 3);
        run.wait("3 requests in flight", secs(10), || {
            (fixture_lines(&run, "slow_start") >= 3).then_some(())
        });

        signal("TERM", &[launcher]);
        let term = run.wait_event("signal", secs(5), |e| e.get("signal") == "TERM");
        assert_eq!(term.get("action"), "shutdown", "{}", term.line);
        for request in requests {
            let status = request.join().expect("request thread");
            assert_eq!(status, Ok(200), "an in-flight request\n{}", run.log());
        }
        // unshare --fork exits with the status of the namespace's PID 1: the launcher.
        let status = run.wait_exit(secs(15));
        assert_eq!(status.code(), Some(0), "\n{}", run.log());
        Ok(())
    });
}

/// Waits up to `timeout` for every one of `pids` to end, then names those still running.
fn assert_all_end(run: &Run, pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
    assert!(
        left.is_empty(),
        "{left:?} of {pids:?} still running {timeout:?} after the launcher's SIGKILL\n{}",
        run.log()
    );
}

#[test]
fn sigkill_of_the_launcher_leaves_no_fanout_worker() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let (run, workers) = fanout(&venv, free_port(), 2, &[]);
        signal("KILL", &[run.pid()]);
        assert_all_end(&run, &workers, secs(10));
        Ok(())
    });
}

#[test]
fn sigkill_of_the_launcher_leaves_no_gunicorn_master_or_worker() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        let port = free_port().to_string();
        let run = Run::spawn(launcher(
            &venv,
            "flask-slow",
            &[("PORT", &port), ("WEB_CONCURRENCY", "2")],
            &["run", "--", "gunicorn", "app:app"],
        ));
        let master = run.wait_children(1, BOOT)[0];
        let mut pids = run.wait("the gunicorn master's 2 workers", BOOT, || {
            let workers = children(master);
            (workers.len() == 2).then_some(workers)
        });
        // Idle workers, past their boot: a gunicorn worker notices a new parent only between
        // requests or when its wait for one times out.
        let mut answered = HashSet::new();
        for _ in 0..50 {
            answered.insert(json_pid(&get_json(port.parse().expect("port"), "/")));
            if answered.len() == 2 {
                break;
            }
        }
        pids.push(master);
        signal("KILL", &[run.pid()]);
        assert_all_end(&run, &pids, secs(10));
        Ok(())
    });
}

// ---- 5. Crash at boot -------------------------------------------------------------------------------

#[test]
fn a_worker_crashing_at_boot_is_respawned_with_growing_backoff_then_the_launcher_gives_up() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let port = free_port().to_string();
        let mut run = Run::spawn(launcher(
            &venv,
            "asgi",
            &[
                ("PORT", &port),
                ("WEB_CONCURRENCY", "1"),
                ("CRASH_AT_BOOT", "1"),
                ("LAUNCHER_GIVE_UP_AFTER", "3"),
                // A crashing uvicorn lives ~0.5 s; on a busy machine it could pass the default
                // 1 s grace, count as ready and reset the backoff.
                ("LAUNCHER_READY_GRACE", "5"),
            ],
            &["run", "--", "uvicorn", "app:app"],
        ));
        let status = run.wait_exit(secs(20));
        assert_eq!(status.code(), Some(1), "\n{}", run.log());

        let exits: Vec<Event> = run
            .events("worker_exit")
            .into_iter()
            .filter(|e| e.opt("restart_in_s").is_some())
            .collect();
        assert!(exits.len() >= 3, "{} respawns\n{}", exits.len(), run.log());
        for pair in exits.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            assert!(
                after.num::<f64>("restart_in_s") > before.num::<f64>("restart_in_s"),
                "the backoff did not grow: {:?} then {:?}",
                before.line,
                after.line
            );
            assert!(
                after.num::<u32>("failures") > before.num::<u32>("failures"),
                "{:?} then {:?}",
                before.line,
                after.line
            );
        }
        for exit in &exits {
            assert_eq!(
                exit.get("worker"),
                "1",
                "a respawn keeps its slot: {}",
                exit.line
            );
            assert_ne!(exit.get("status"), "exit:0", "{}", exit.line);
        }
        let give_up = run.wait_event("give_up", SECOND, |_| true);
        assert!(give_up.line.contains("at=error"), "{}", give_up.line);
        assert!(!give_up.get("reason").is_empty(), "{}", give_up.line);
        assert!(run.events("worker_ready").is_empty(), "\n{}", run.log());
        Ok(())
    });
}

// ---- 6. Bad input -----------------------------------------------------------------------------------

/// Runs the launcher to its end (killing it after `timeout`) in a temporary directory.
fn finish(env: &[(&str, &str)], args: &[&str], timeout: Duration) -> Output {
    let dir = TempDir::new().expect("temp dir");
    let mut command = Command::new(LAUNCHER);
    command
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .envs(env.iter().copied());
    let mut run = Run::spawn(command);
    let status = run.wait_exit(timeout);
    let (stdout, stderr) = run.end();
    Output {
        status,
        stdout: stdout.join("\n").into_bytes(),
        stderr: stderr.join("\n").into_bytes(),
    }
}

/// One line on stderr, `launcher: error: ...`, and exit code `code`.
fn assert_error(case: &str, output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        output.status.code(),
        Some(code),
        "{case}: exit status\n--- stderr\n{stderr}\n--- stdout\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        lines.len() == 1 && lines[0].starts_with("launcher: error: "),
        "{case}: want one `launcher: error: ` line on stderr, got:\n{stderr}"
    );
    lines[0].to_owned()
}

/// A case name, the environment, the arguments and the exit code wanted.
type BadInput<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str], i32);

#[test]
fn bad_input_is_one_error_line_and_its_exit_code() {
    let dir = TempDir::new().expect("temp dir");
    let script = dir.path().join("app.sh");
    fs::write(&script, "#!/bin/sh\nsleep 30\n").expect("write");
    let not_executable = script.to_str().expect("utf-8");
    fs::write(dir.path().join("launcher.toml"), "mode = [\n").expect("write");
    let bad_toml = dir.path().to_str().expect("utf-8");
    // A launcher that wrongly accepts the input runs `sleep 30` and is caught by the timeout.
    let cases: [BadInput; 8] = [
        ("no command", &[], &["run"], 2),
        ("no command after --", &[], &["run", "--"], 2),
        (
            "command not found",
            &[],
            &["run", "--", "no-such-command-for-launcher"],
            127,
        ),
        ("not executable", &[], &["run", "--", not_executable], 126),
        (
            "PORT=abc",
            &[("PORT", "abc")],
            &["run", "--", "sleep", "30"],
            2,
        ),
        ("PORT=0", &[("PORT", "0")], &["run", "--", "sleep", "30"], 2),
        (
            "PORT=65536",
            &[("PORT", "65536")],
            &["run", "--", "sleep", "30"],
            2,
        ),
        (
            "invalid launcher.toml",
            &[],
            &["run", "--app-dir", bad_toml, "--", "sleep", "30"],
            2,
        ),
    ];
    for (case, env, args, code) in cases {
        let output = finish(env, args, secs(10));
        let line = assert_error(case, &output, code);
        eprintln!("{case}: {line}");
    }
}

#[test]
fn a_port_in_use_is_an_error_exit_1() {
    for address in ["[::]", "0.0.0.0"] {
        let holder = TcpListener::bind(format!("{address}:0")).expect("bind");
        let port = holder.local_addr().expect("addr").port().to_string();
        let output = finish(&[("PORT", &port)], &["run", "--", "sleep", "30"], secs(10));
        let line = assert_error(&format!("PORT {port} held on {address}"), &output, 1);
        eprintln!("{address}:{port} in use: {line}");
        drop(holder);
    }
}

#[test]
fn an_invalid_web_concurrency_is_reported_and_the_computed_default_boots() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let sizing = [("WEB_CONCURRENCY", "abc"), ("LAUNCHER_MAX_WORKERS", "2")];
        let size = Command::new(LAUNCHER)
            .args(["size", "--json"])
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .envs(sizing)
            .output()
            .expect("launcher size");
        let size: serde_json::Value = serde_json::from_slice(&size.stdout).expect("size JSON");
        let expected = size["web_concurrency"].as_u64().expect("web_concurrency") as usize;

        let port = free_port().to_string();
        let mut env = sizing.to_vec();
        env.push(("PORT", port.as_str()));
        let run = Run::spawn(launcher(
            &venv,
            "asgi",
            &env,
            &["run", "--", "uvicorn", "app:app", "--no-access-log"],
        ));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.num::<usize>("workers"), expected, "{}", start.line);
        run.wait_ready(expected);
        let warned = run.stderr().iter().any(|l| l.contains("abc"))
            || run.events("config").iter().any(|e| e.line.contains("abc"));
        assert!(
            warned,
            "no warning about WEB_CONCURRENCY=abc\n{}",
            run.log()
        );
        run.wait_children(expected, BOOT);
        let root = get_json(port.parse().expect("port"), "/");
        assert_eq!(root["web_concurrency"], "1", "{root}");
        Ok(())
    });
}
