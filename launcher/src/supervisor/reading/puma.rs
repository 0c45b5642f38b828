//! puma's own figures, from its control app (`--control-url`, added by the plan for a delegated
//! puma whose workers run threads under adaptive sizing): per worker, the requests waiting for a
//! thread (`backlog`: those that came on a kept-alive connection wait there, not in the accept
//! queue) and the threads that are not free (`max_threads - pool_capacity`). puma 5 sends them
//! from each worker every 5 s (docs/architecture.md, "Adaptive sizing").

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The control app's socket (in the launcher's own state directory, which no other user can
/// enter) and the token it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub socket: PathBuf,
    pub token: String,
}

/// What puma's workers reported last, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub backlog: u32,
    pub busy_threads: u32,
}

/// The largest answer read.
const MAX_ANSWER: u64 = 256 * 1024;
/// How long the whole exchange may take: never long enough to hold up a turn of the loop.
const TIMEOUT: Duration = Duration::from_millis(200);

impl Control {
    /// The stats, or None when puma does not answer in time (booting, restarting).
    pub fn stats(&self) -> Option<Stats> {
        let deadline = Instant::now() + TIMEOUT;
        let left =
            || Some(deadline.checked_duration_since(Instant::now())?).filter(|d| !d.is_zero());
        let mut stream = UnixStream::connect(&self.socket).ok()?;
        stream.set_write_timeout(Some(left()?)).ok()?;
        let request = format!("GET /stats?token={} HTTP/1.0\r\n\r\n", self.token);
        stream.write_all(request.as_bytes()).ok()?;
        // Each read gets what is left of the one deadline: a puma that trickles its answer
        // cannot hold the loop past it.
        let (mut answer, mut chunk) = (Vec::new(), [0u8; 8192]);
        loop {
            stream.set_read_timeout(Some(left()?)).ok()?;
            match stream.read(&mut chunk).ok()? {
                0 => break,
                n => answer.extend_from_slice(&chunk[..n]),
            }
            if answer.len() as u64 > MAX_ANSWER {
                return None;
            }
        }
        let answer = String::from_utf8_lossy(&answer);
        parse(answer.split_once("\r\n\r\n")?.1)
    }
}

/// A `/stats` body: a cluster's `worker_status[].last_status`, or a single process's own.
pub fn parse(body: &str) -> Option<Stats> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let one = |status: &serde_json::Value| {
        let field = |name: &str| status.get(name).and_then(serde_json::Value::as_u64);
        let backlog = field("backlog")?;
        let busy = field("max_threads")?.saturating_sub(field("pool_capacity")?);
        Some(Stats {
            backlog: u32::try_from(backlog).ok()?,
            busy_threads: u32::try_from(busy).ok()?,
        })
    };
    let Some(workers) = json.get("worker_status").and_then(|w| w.as_array()) else {
        return one(&json);
    };
    let each = workers.iter().filter_map(|w| one(w.get("last_status")?));
    Some(each.fold(Stats::default(), |sum, s| Stats {
        backlog: sum.backlog.saturating_add(s.backlog),
        busy_threads: sum.busy_threads.saturating_add(s.busy_threads),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clusters_workers_are_summed() {
        let body = r#"{"workers":2,"phase":0,"booted_workers":2,"worker_status":[
            {"pid":1,"last_status":{"backlog":3,"running":5,"pool_capacity":0,"max_threads":5}},
            {"pid":2,"last_status":{"backlog":0,"running":5,"pool_capacity":2,"max_threads":5}},
            {"pid":3,"last_status":{}}]}"#;
        let stats = parse(body).expect("stats");
        assert_eq!(
            stats,
            Stats {
                backlog: 3,
                busy_threads: 8
            }
        );
        let single = r#"{"backlog":1,"running":3,"pool_capacity":1,"max_threads":3}"#;
        assert_eq!(
            parse(single),
            Some(Stats {
                backlog: 1,
                busy_threads: 2
            })
        );
        assert_eq!(parse("not json"), None);
        let huge = format!(
            r#"{{"worker_status":[{{"last_status":{{"backlog":{m},"pool_capacity":0,"max_threads":{m}}}}},{{"last_status":{{"backlog":{m},"pool_capacity":0,"max_threads":{m}}}}}]}}"#,
            m = u32::MAX
        );
        assert_eq!(
            parse(&huge),
            Some(Stats {
                backlog: u32::MAX,
                busy_threads: u32::MAX
            }),
            "sums that saturate"
        );
    }

    #[test]
    fn a_puma_that_trickles_its_answer_is_given_up_on_at_the_deadline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        // One byte every 50 ms for 3 s: each read is quick, the whole answer is not.
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            for _ in 0..60 {
                if stream.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let control = Control {
            socket,
            token: "t".into(),
        };
        let start = Instant::now();
        assert_eq!(control.stats(), None);
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "{took:?}: past the deadline"
        );
        drop(control);
        server.join().expect("server");
    }
}
