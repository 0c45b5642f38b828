//! HTTP/1.1 on loopback: one GET, a keep-alive load generator (K clients looping GET on
//! persistent connections, bounded in requests and time) that tallies failures and latencies, and
//! requests paced at a fixed rate.

use std::fmt;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::harness::{secs, Run};

pub struct Response {
    pub status: u16,
    pub body: String,
    pub close: bool,
}

pub enum Failed {
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
pub struct Conn {
    reader: BufReader<TcpStream>,
    served: usize,
}

impl Conn {
    pub fn open(port: u16, timeout: Duration) -> Result<Conn, String> {
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
    pub fn get(&mut self, path: &str) -> Result<Response, Failed> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        if let Err(e) = self.reader.get_mut().write_all(request.as_bytes()) {
            return Err(Failed::BeforeAnyByte(format!("write: {e}")));
        }
        // A read interrupted by a signal is tried again, as std's read_line and read_exact below
        // do; BufReader::fill_buf does not. (signal(7): a socket with a receive timeout fails
        // with EINTR when its process is stopped and resumed, even with no handler; CI met one.)
        let first = loop {
            match self.reader.fill_buf() {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other.map(|bytes| bytes.is_empty()),
            }
        };
        match first {
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
pub fn get(port: u16, path: &str, timeout: Duration) -> Result<Response, String> {
    Conn::open(port, timeout)?
        .get(path)
        .map_err(|e| e.to_string())
}

/// GET that must answer 200 with JSON.
pub fn get_json(port: u16, path: &str) -> serde_json::Value {
    let response = get(port, path, secs(10)).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {}", response.body))
}

pub fn json_pid(value: &serde_json::Value) -> u32 {
    value["pid"].as_u64().expect("pid") as u32
}

/// What a load run saw. A failure is anything but a 200, after the one retry allowed.
#[derive(Default)]
pub struct Tally {
    pub ok: usize,
    pub retried: usize,
    pub failures: Vec<String>,
    /// (when the request began, how long it took to a 200), retry included.
    pub samples: Vec<(Instant, Duration)>,
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

/// K clients, each looping GET on its own persistent connection, or on a new connection per
/// request (`Load::fresh`).
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<Tally>>,
}

impl Load {
    /// GET / for at most `MAX_LOAD_TIME`.
    pub fn start(port: u16, clients: usize) -> Load {
        Self::on(port, clients, "/", MAX_LOAD_TIME)
    }

    /// GET `path` for at most `limit`.
    pub fn on(port: u16, clients: usize, path: &'static str, limit: Duration) -> Load {
        Self::spawn(port, clients, path, limit, Pace::KeepAlive)
    }

    /// GET / for at most `MAX_LOAD_TIME`, each request on a new connection and sent at once
    /// after the one before (no pause), as Heroku's legacy router sends requests to a dyno:
    /// nothing is retried, so a connection closed before its response is a failure.
    pub fn fresh(port: u16, clients: usize) -> Load {
        Self::spawn(port, clients, "/", MAX_LOAD_TIME, Pace::Fresh)
    }

    fn spawn(port: u16, clients: usize, path: &'static str, limit: Duration, pace: Pace) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|_| {
                let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
                std::thread::spawn(move || client(port, path, limit, pace, (&stop, &ok)))
            })
            .collect();
        Load { stop, ok, clients }
    }

    /// Waits until `more` further requests have succeeded.
    pub fn wait_more(&self, more: usize, run: &Run) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        run.wait(&format!("{more} more answered requests"), secs(20), || {
            (self.ok.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    pub fn finish(mut self) -> Tally {
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

/// How a client sends its requests.
#[derive(Clone, Copy, PartialEq)]
enum Pace {
    /// On one persistent connection, `PAUSE` apart.
    KeepAlive,
    /// Each on a new connection, at once after the one before.
    Fresh,
}

fn client(
    port: u16,
    path: &str,
    limit: Duration,
    pace: Pace,
    (stop, ok): (&AtomicBool, &AtomicUsize),
) -> Tally {
    let deadline = Instant::now() + limit;
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    let requests = match pace {
        Pace::KeepAlive => (limit.as_millis() / PAUSE.as_millis()) as usize,
        Pace::Fresh => MAX_REQUESTS_PER_CLIENT,
    };
    for _ in 0..requests.min(MAX_REQUESTS_PER_CLIENT * 10) {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let begun = Instant::now();
        match request(port, path, &mut conn, &mut tally.retried) {
            Ok(()) => {
                tally.ok += 1;
                tally.samples.push((begun, begun.elapsed()));
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => tally.failures.push(why),
        }
        match pace {
            Pace::KeepAlive => std::thread::sleep(PAUSE),
            Pace::Fresh => conn = None,
        }
    }
    tally
}

/// One GET on the client's connection (a new one when it has none), retried once on a new
/// connection when a reused one ends before any response byte.
fn request(
    port: u16,
    path: &str,
    conn: &mut Option<Conn>,
    retried: &mut usize,
) -> Result<(), String> {
    let timeout = secs(5);
    let mut current = match conn.take() {
        Some(current) => current,
        None => Conn::open(port, timeout)?,
    };
    let reused = current.served > 0;
    let response = match current.get(path) {
        Ok(response) => response,
        Err(Failed::BeforeAnyByte(_)) if reused => {
            *retried += 1;
            current = Conn::open(port, timeout).map_err(|e| format!("retry: {e}"))?;
            current.get(path).map_err(|e| format!("retry: {e}"))?
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

pub fn percentile(mut durations: Vec<Duration>, percent: usize) -> Duration {
    assert!(!durations.is_empty(), "no samples");
    durations.sort_unstable();
    let rank = (durations.len() * percent).div_ceil(100).max(1);
    durations[rank - 1]
}

/// Sends GET `path` on `count` new connections at once, each in its own thread.
pub fn in_flight(port: u16, path: &str, count: usize) -> Vec<JoinHandle<Result<u16, String>>> {
    (0..count)
        .map(|_| {
            let path = path.to_owned();
            std::thread::spawn(move || get(port, &path, secs(20)).map(|r| r.status))
        })
        .collect()
}

/// `count` GETs of `path`, one every `interval` on the clock (not after the previous answer), each
/// on a new connection with a 10 s timeout, from one thread: a fixed rate, as a steady stream of
/// users would send. Nothing is retried.
pub fn paced(port: u16, path: &str, count: usize, interval: Duration) -> Tally {
    let start = Instant::now();
    let mut tally = Tally::default();
    for n in 0..count {
        let due = start + interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let begun = Instant::now();
        match get(port, path, secs(10)) {
            Ok(response) if response.status == 200 => {
                tally.ok += 1;
                tally.samples.push((begun, begun.elapsed()));
            }
            Ok(response) => tally
                .failures
                .push(format!("#{n}: status {}", response.status)),
            Err(why) => tally.failures.push(format!("#{n}: {why}")),
        }
    }
    tally
}
