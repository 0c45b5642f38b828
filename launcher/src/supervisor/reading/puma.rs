//! puma's own figures, from its control app (`--control-url`, added by the plan for a delegated
//! puma whose workers run threads under adaptive sizing): per worker, the requests waiting for a
//! thread (`backlog`: those that came on a kept-alive connection wait there, not in the accept
//! queue) and the threads that are not free (`max_threads - pool_capacity`). puma 5 sends them
//! from each worker every 5 s (docs/architecture.md, "Adaptive sizing").

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

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
/// How long a read of the stats may take: never long enough to hold up a turn of the loop.
const TIMEOUT: Duration = Duration::from_millis(200);

impl Control {
    /// The stats, or None when puma does not answer in time (booting, restarting).
    pub fn stats(&self) -> Option<Stats> {
        let mut stream = UnixStream::connect(&self.socket).ok()?;
        stream.set_read_timeout(Some(TIMEOUT)).ok()?;
        stream.set_write_timeout(Some(TIMEOUT)).ok()?;
        let request = format!("GET /stats?token={} HTTP/1.0\r\n\r\n", self.token);
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.take(MAX_ANSWER).read_to_string(&mut answer).ok()?;
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
        backlog: sum.backlog + s.backlog,
        busy_threads: sum.busy_threads + s.busy_threads,
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
    }
}
