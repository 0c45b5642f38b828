//! The supervisor's event lines: one logfmt line per event on stdout, `launcher: at=LEVEL event=NAME
//! key=value ...`, written with one `write` so that lines never interleave with the app's output.
//!
//! Lines go through a bounded queue to a writer thread (`start`), so that a reader of stdout that
//! stalls (a log pipe nobody drains) can never stall the supervisor's loop: when the queue is full
//! a line is dropped and counted, and once the writer has caught up it says how many were lost
//! (`log_dropped`). The inherited stdout itself is left as it is: the children share that open
//! file, and O_NONBLOCK on it would break them.

use std::fmt::{Display, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How many lines may wait for a slow stdout before lines are dropped.
pub const QUEUE_LINES: usize = 4096;
/// The writer thread's stack.
const LOG_STACK_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// One event: a name and its fields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub level: Level,
    pub name: &'static str,
    pub fields: Vec<(&'static str, String)>,
}

impl Event {
    pub fn info(name: &'static str) -> Self {
        Self::new(Level::Info, name)
    }

    pub fn warn(name: &'static str) -> Self {
        Self::new(Level::Warn, name)
    }

    pub fn error(name: &'static str) -> Self {
        Self::new(Level::Error, name)
    }

    fn new(level: Level, name: &'static str) -> Self {
        Event {
            level,
            name,
            fields: Vec::new(),
        }
    }

    pub fn with(mut self, key: &'static str, value: impl Display) -> Self {
        self.fields.push((key, value.to_string()));
        self
    }

    /// `with` where there is a value; the event as it was where there is none.
    pub fn with_some(self, key: &'static str, value: Option<impl Display>) -> Self {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }

    /// A duration as seconds with one decimal, the unit in the key (`uptime_s=12.3`).
    pub fn secs(self, key: &'static str, duration: Duration) -> Self {
        self.with(key, format!("{:.1}", duration.as_secs_f64()))
    }

    /// The value of a field.
    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn to_line(&self) -> String {
        let level = match self.level {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let mut line = format!("launcher: at={level} event={}", self.name);
        for (key, value) in &self.fields {
            let _ = write!(line, " {key}={}", quoted(value));
        }
        line.push('\n');
        line
    }

    /// Queued for the writer thread once it runs, else written at once. Best effort: a closed
    /// stdout must not stop the supervisor.
    pub fn emit(&self) {
        let line = self.to_line();
        match WRITER.get() {
            Some(writer) => writer.send(Message::Line(line)),
            None => write_line(&line),
        }
    }
}

enum Message {
    Line(String),
    /// Answered once every line before it is written.
    Flush(SyncSender<()>),
}

struct Writer {
    sender: SyncSender<Message>,
    /// Lines in the queue or being written.
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    /// Queues a line; a line that does not fit is dropped and counted.
    fn send(&self, message: Message) {
        if self.try_send(message).is_err() {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Queues `message`, counted in `queued` until written; gives it back when the queue is full.
    fn try_send(&self, message: Message) -> Result<(), TrySendError<Message>> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.sender.try_send(message).inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

static WRITER: OnceLock<Writer> = OnceLock::new();

/// Starts the writer thread. Call with the handled signals already blocked: the thread inherits
/// the mask, so that every signal is left to the loop's signalfd. If the thread cannot start,
/// lines are written directly, as before.
pub fn start() {
    let (sender, receiver) = mpsc::sync_channel(QUEUE_LINES);
    let queued = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let counters = (Arc::clone(&queued), Arc::clone(&dropped));
    let spawned = std::thread::Builder::new()
        .name("log".to_owned())
        // It only moves lines from the queue to stdout: a small stack, not the default 2 MB.
        .stack_size(LOG_STACK_BYTES)
        .spawn(move || write_lines(&receiver, &counters.0, &counters.1));
    if spawned.is_ok() {
        let _ = WRITER.set(Writer {
            sender,
            queued,
            dropped,
        });
    }
}

/// Waits at most `timeout` for the queued lines to be written (at exit).
pub fn flush(timeout: Duration) {
    let Some(writer) = WRITER.get() else {
        return;
    };
    let deadline = Instant::now() + timeout;
    let (ack, done) = mpsc::sync_channel(1);
    let mut message = Message::Flush(ack);
    loop {
        match writer.try_send(message) {
            Ok(()) => break,
            Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                message = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

/// The writer thread: blocking writes, one line at a time; after catching up, the count of lines
/// dropped meanwhile.
fn write_lines(receiver: &Receiver<Message>, queued: &AtomicUsize, dropped: &AtomicU64) {
    while let Ok(message) = receiver.recv() {
        match message {
            Message::Line(line) => write_line(&line),
            Message::Flush(ack) => {
                let _ = ack.try_send(());
            }
        }
        let left = queued.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        let lost = if left == 0 {
            dropped.swap(0, Ordering::SeqCst)
        } else {
            0
        };
        if lost > 0 {
            let report = Event::warn("log_dropped")
                .with("lines", lost)
                .with("reason", "stdout was not read fast enough");
            write_line(&report.to_line());
        }
    }
}

fn write_line(line: &str) {
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// A logfmt value: bare when it is a plain token, otherwise in double quotes with `"` and `\`
/// escaped and control characters shown as escapes.
fn quoted(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "{}", c.escape_default());
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_logfmt() {
        let event = Event::warn("worker_exit")
            .with("worker", 2)
            .with("status", "signal:9")
            .secs("uptime_s", Duration::from_millis(12_345))
            .with("reason", "said \"no\"\nthen=left")
            .with("empty", "");
        assert_eq!(
            event.to_line(),
            "launcher: at=warn event=worker_exit worker=2 status=signal:9 uptime_s=12.3 \
             reason=\"said \\\"no\\\"\\nthen=left\" empty=\"\"\n"
        );
        assert_eq!(event.get("worker"), Some("2"));
    }
}
