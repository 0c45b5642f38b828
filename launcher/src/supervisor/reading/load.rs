//! What the dyno is asked to do, measured in every sizing mode (docs/architecture.md, "Adaptive
//! sizing"): the accept queue of the socket the launcher owns, read every
//! `LAUNCHER_QUEUE_READ_INTERVAL` (one `getsockopt`, no lock); the dyno's CPU use against the CPUs
//! it may use. The `sample#` line, the state file and adaptive sizing read them from here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::host::Snapshot;
use crate::supervisor::log::Event;
use crate::supervisor::net;
use crate::usage::cpu::{self, CpuMeter};

/// A full queue is reported at most this often.
const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// CPU readings older than this are dropped.
const CPU_KEEP: Duration = Duration::from_secs(120);

/// One read of the accept queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRead {
    /// Connections the kernel has completed that no worker has accepted yet.
    pub queued: u32,
    /// How many it holds before it drops new connections' SYNs.
    pub backlog: u32,
}

/// The highest queue seen since a mark, and the reads since then.
#[derive(Debug, Clone, Copy, Default)]
struct Peak {
    max: u32,
    reads: u64,
    full: u64,
}

impl Peak {
    fn add(&mut self, read: QueueRead) {
        self.max = self.max.max(read.queued);
        self.reads += 1;
        // The kernel drops a SYN once the queue is over the backlog (`sk_acceptq_is_full`).
        self.full += u64::from(read.queued > read.backlog);
    }
}

/// The figures of one `sample#` line or state file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    pub queue: Option<QueueRead>,
    /// The highest queue since the last figures of the same kind.
    pub queue_max: Option<u32>,
    /// The dyno's CPU use as a share of its CPUs, since the last figures of the same kind.
    pub cpu_busy: Option<f64>,
}

pub struct Load {
    interval: Duration,
    next_read: Instant,
    pub last: Option<QueueRead>,
    since_sample: Peak,
    since_state: Peak,
    since_warning: Peak,
    last_warning: Option<Instant>,
    cpu: CpuMeter,
    /// The CPUs the dyno may use, exactly (a quota of 0.9 is 0.9).
    pub capacity: f64,
    cpu_readings: VecDeque<(Instant, Duration)>,
    events: Vec<Event>,
}

impl Load {
    pub fn new(interval: Duration, cpu: CpuMeter, capacity: f64, now: Instant) -> Load {
        Load {
            interval,
            next_read: now,
            last: None,
            since_sample: Peak::default(),
            since_state: Peak::default(),
            since_warning: Peak::default(),
            last_warning: None,
            cpu,
            capacity,
            cpu_readings: VecDeque::new(),
            events: Vec::new(),
        }
    }

    pub fn next_wakeup(&self) -> Instant {
        self.next_read
    }

    /// Where the dyno's CPU time is read.
    pub fn cpu_meter(&self) -> &CpuMeter {
        &self.cpu
    }

    /// The events logged since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Reads the accept queue when it is due: a backlog changed by the server (it called
    /// `listen()` again: unicorn 1024, Node 511) is logged once, a full queue at most every
    /// `FULL_WARNING_INTERVAL`. A socket that is not listening any more is `Err` (and its last
    /// figures are dropped: no line shows the queue of a socket that takes no connection).
    pub fn read_queue(
        &mut self,
        listener: &net::Listener,
        now: Instant,
    ) -> Option<Result<QueueRead, net::NotListening>> {
        if now < self.next_read {
            return None;
        }
        // From the time it was due, so that a late turn does not shift every read after it.
        self.next_read = (self.next_read + self.interval).max(now);
        let (queued, backlog) = match net::listening(&listener.fd) {
            Ok(Some(figures)) => figures,
            Ok(None) => return None,
            Err(state) => {
                self.last = None;
                return Some(Err(state));
            }
        };
        let read = QueueRead { queued, backlog };
        if let Some(before) = self.last.filter(|before| before.backlog != backlog) {
            let event = Event::info("backlog")
                .with("backlog", backlog)
                .with("was", before.backlog)
                .with(
                    "reason",
                    "the server called listen() again on the launcher's socket",
                );
            self.events.push(event);
        }
        self.last = Some(read);
        for peak in [
            &mut self.since_sample,
            &mut self.since_state,
            &mut self.since_warning,
        ] {
            peak.add(read);
        }
        let quiet = self
            .last_warning
            .is_some_and(|at| now.duration_since(at) < FULL_WARNING_INTERVAL);
        if self.since_warning.full > 0 && !quiet {
            let peak = std::mem::take(&mut self.since_warning);
            self.last_warning = Some(now);
            let event = Event::warn("listen_queue_full")
                .with("listen_queue", queued)
                .with("listen_backlog", backlog)
                .with("full_reads", peak.full)
                .with("reads", peak.reads)
                .with(
                    "message",
                    "the accept queue is full: the kernel drops new connections until a worker \
                     accepts one (clients retry after 1 s, then 3 s); more workers or a larger \
                     dyno are needed",
                );
            self.events.push(event);
        }
        Some(Ok(read))
    }

    /// Reads the dyno's CPU time.
    pub fn read_cpu(&mut self, snapshot: &Snapshot, now: Instant) {
        let Some(used) = self.cpu.used(snapshot) else {
            return;
        };
        self.cpu_readings.push_back((now, used));
        while self
            .cpu_readings
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > CPU_KEEP)
        {
            self.cpu_readings.pop_front();
        }
    }

    /// The dyno's CPU use over about the last `over`, as a share of its CPUs: from the newest
    /// reading back to the last one at least `over` before it (else the oldest).
    pub fn cpu_busy(&self, over: Duration) -> Option<f64> {
        let (used, wall) = cpu::rise(&self.cpu_readings, over)?;
        cpu::busy(used, wall, self.capacity)
    }

    /// The `sample#` line's figures: the queue since the last sample, the CPU over `interval`.
    pub fn sample(&mut self, snapshot: &Snapshot, now: Instant, interval: Duration) -> Figures {
        self.read_cpu(snapshot, now);
        let peak = std::mem::take(&mut self.since_sample);
        self.figures(peak, interval)
    }

    /// The state file's figures: the queue since the last write, the CPU over `interval`.
    pub fn state(&mut self, snapshot: &Snapshot, now: Instant, interval: Duration) -> Figures {
        self.read_cpu(snapshot, now);
        let peak = std::mem::take(&mut self.since_state);
        self.figures(peak, interval)
    }

    fn figures(&self, peak: Peak, interval: Duration) -> Figures {
        Figures {
            queue: self.last,
            queue_max: (peak.reads > 0).then_some(peak.max),
            cpu_busy: self.cpu_busy(interval),
        }
    }
}

#[cfg(test)]
mod tests;
