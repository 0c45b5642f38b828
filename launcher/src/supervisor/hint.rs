//! A hint, once: sync workers that spend most of their time waiting (little CPU used) while
//! requests queue for them would serve more at once with threads. Free of I/O: fed the accept
//! queue's reads and the dyno's CPU use, it says when and with which figures, once
//! (docs/supervisor.md, "Threads").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::log::Event;

/// How far back the queue's reads count.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Connections waited in at least this share of those reads...
pub const QUEUED_SHARE: f64 = 0.5;
/// ...while the dyno used less than this share of its CPUs.
pub const CPU_BUSY: f64 = 0.3;

/// The setting that would help, as the hint names it.
pub const SETTING: &str = "LAUNCHER_THREADS=auto";

#[derive(Debug, Default)]
pub struct WaitingWorkers {
    reads: VecDeque<(Instant, bool)>,
    first: Option<Instant>,
    /// The hint's message, once said (`launcher size` shows it).
    said: Option<String>,
}

impl WaitingWorkers {
    pub fn queue_read(&mut self, now: Instant, queued: bool) {
        self.first.get_or_insert(now);
        self.reads.push_back((now, queued));
        while self
            .reads
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            self.reads.pop_front();
        }
    }

    /// The hint, once: a whole window of reads behind it, connections waiting in most of them,
    /// and the CPUs mostly idle (`cpu_busy`, a share of the dyno's CPUs over the recent past).
    pub fn check(&mut self, now: Instant, cpu_busy: Option<f64>, workers: u32) -> Option<Event> {
        let full = self
            .first
            .is_some_and(|first| now.duration_since(first) >= WINDOW);
        let cpu = cpu_busy?;
        if self.said.is_some() || !full || self.reads.is_empty() || cpu >= CPU_BUSY {
            return None;
        }
        let queued = self.reads.iter().filter(|(_, q)| *q).count();
        let share = queued as f64 / self.reads.len() as f64;
        if share < QUEUED_SHARE {
            return None;
        }
        let message = format!(
            "requests waited for a worker in {:.0}% of the last {} s while the workers used {:.0}% \
             of the CPUs: they spend their time waiting (on a database, an API), and threads would \
             serve more at once. If the app is thread-safe, set {SETTING} (gunicorn then runs \
             gthread workers, puma more threads), or more workers with LAUNCHER_SIZING=adaptive",
            share * 100.0,
            WINDOW.as_secs(),
            cpu * 100.0
        );
        self.said = Some(message.clone());
        Some(
            Event::warn("hint")
                .with("queued_share", format!("{share:.2}"))
                .with("cpu_busy", format!("{cpu:.2}"))
                .with("workers", workers)
                .with("setting", SETTING)
                .with("message", message),
        )
    }

    /// The hint's message, once it has been said.
    pub fn said(&self) -> Option<&str> {
        self.said.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (share of reads with connections waiting, CPU use, seconds of reads) -> hint or not.
    #[test]
    fn waiting_workers_are_told_once_with_the_figures() {
        let rows = [
            (1.0, Some(0.1), 40, true),
            (0.6, Some(0.2), 40, true),
            (0.4, Some(0.1), 40, false),
            (1.0, Some(0.5), 40, false),
            (1.0, None, 40, false),
            (1.0, Some(0.1), 20, false),
        ];
        for (share, cpu, seconds, hint) in rows {
            let start = Instant::now();
            let mut waiting = WaitingWorkers::default();
            let reads = seconds * 10;
            for i in 0..reads {
                let queued = ((i % 10) as f64) < share * 10.0;
                waiting.queue_read(start + Duration::from_millis(100 * i), queued);
            }
            let now = start + Duration::from_millis(100 * reads);
            let got = waiting.check(now, cpu, 2);
            assert_eq!(got.is_some(), hint, "{share} {cpu:?} {seconds}");
            if let Some(event) = got {
                assert_eq!(event.get("setting"), Some(SETTING));
                assert_eq!(waiting.said(), event.get("message"));
                assert_eq!(waiting.check(now, cpu, 2), None, "once");
            }
        }
    }
}
