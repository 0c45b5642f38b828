//! The supervisor's event lines: one logfmt line per event on stdout, `launcher: at=LEVEL event=NAME
//! key=value ...`, written with one `write` so that lines never interleave with the app's output.

use std::fmt::{Display, Write as _};
use std::io::Write as _;
use std::time::Duration;

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

    /// Best effort: a closed stdout must not stop the supervisor.
    pub fn emit(&self) {
        let _ = std::io::stdout()
            .lock()
            .write_all(self.to_line().as_bytes());
    }
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
