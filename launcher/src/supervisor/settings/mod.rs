//! `launcher run`'s own settings: config vars (`LAUNCHER_*`) and the same keys in `launcher.toml`.
//! A bad config var is warned about and replaced by its default (the dyno boots); a bad
//! `launcher.toml` stops `launcher run` before anything starts, since it is the app's own code.

use std::path::Path;
use std::time::Duration;

use crate::config::{self, shown, Env};
use crate::servers::Mode;

/// Heroku sends SIGKILL 30 s after SIGTERM; the launcher must be done before that.
pub const HEROKU_MAX_GRACEFUL: Duration = Duration::from_secs(28);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// The worker count is the computed `WEB_CONCURRENCY`, fixed.
    Static,
    /// Measured after warm-up, then moved one worker at a time to what fits.
    Measured,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// None: chosen from the command.
    pub mode: Option<Mode>,
    pub graceful_timeout: Duration,
    pub ready_grace: Duration,
    pub give_up_after: Duration,
    /// None: no `sample#` lines.
    pub sample_interval: Option<Duration>,
    pub memory_guard: bool,
    /// The soft limit, in percent of the dyno's memory.
    pub soft_limit_percent: u64,
    /// The per-worker cap on unique memory, in MB; None: no cap.
    pub worker_memory_max_mb: Option<u64>,
    pub memory_cooldown: Duration,
    pub sizing: Sizing,
    pub sizing_warmup: Duration,
    pub warnings: Vec<String>,
}

/// A number of seconds: its config var, its `launcher.toml` key, its default and its bounds.
struct Seconds {
    var: &'static str,
    key: &'static str,
    default: f64,
    min: f64,
    max: f64,
}

const GRACEFUL_TIMEOUT: Seconds = Seconds {
    var: "LAUNCHER_GRACEFUL_TIMEOUT",
    key: "graceful_timeout",
    default: 25.0,
    min: 0.0,
    max: 3600.0,
};
const READY_GRACE: Seconds = Seconds {
    var: "LAUNCHER_READY_GRACE",
    key: "ready_grace",
    default: 1.0,
    min: 0.0,
    max: 600.0,
};
const GIVE_UP_AFTER: Seconds = Seconds {
    var: "LAUNCHER_GIVE_UP_AFTER",
    key: "give_up_after",
    default: 60.0,
    min: 1.0,
    max: 86400.0,
};
const SAMPLE_INTERVAL: Seconds = Seconds {
    var: "LAUNCHER_SAMPLE_INTERVAL",
    key: "sample_interval",
    default: 20.0,
    min: 0.0,
    max: 86400.0,
};
const MEMORY_COOLDOWN: Seconds = Seconds {
    var: "LAUNCHER_MEMORY_COOLDOWN",
    key: "memory_cooldown",
    default: 3.0,
    min: 0.0,
    max: 3600.0,
};
const SIZING_WARMUP: Seconds = Seconds {
    var: "LAUNCHER_SIZING_WARMUP",
    key: "sizing_warmup",
    default: 30.0,
    min: 1.0,
    max: 86400.0,
};

/// The soft limit's default and bounds, in percent of the dyno's memory.
pub const SOFT_LIMIT_PERCENT: (u64, u64, u64) = (85, 50, 100);

/// Reads the settings; `Err` is the one line explaining what is wrong with `launcher.toml`.
pub fn load(env: &Env, app_dir: Option<&Path>, on_heroku: bool) -> Result<RunSettings, String> {
    let table = match app_dir {
        Some(dir) => config::read_table(dir)?.unwrap_or_default(),
        None => toml::Table::new(),
    };
    let mut reader = Reader {
        env,
        table: &table,
        warnings: Vec::new(),
    };
    let mode = reader.choice(
        "LAUNCHER_MODE",
        "mode",
        "one of auto, fanout, delegate",
        ("auto", None),
        Mode::parse,
    )?;
    let mut graceful_timeout = reader.seconds(&GRACEFUL_TIMEOUT)?;
    if on_heroku && graceful_timeout > HEROKU_MAX_GRACEFUL {
        reader.warnings.push(format!(
            "a graceful timeout of {} s does not fit Heroku's 30 s before SIGKILL; using {} s",
            graceful_timeout.as_secs_f64(),
            HEROKU_MAX_GRACEFUL.as_secs()
        ));
        graceful_timeout = HEROKU_MAX_GRACEFUL;
    }
    let (percent, min, max) = SOFT_LIMIT_PERCENT;
    Ok(RunSettings {
        mode,
        graceful_timeout,
        ready_grace: reader.seconds(&READY_GRACE)?,
        give_up_after: reader.seconds(&GIVE_UP_AFTER)?,
        sample_interval: Some(reader.seconds(&SAMPLE_INTERVAL)?).filter(|d| !d.is_zero()),
        memory_guard: reader.choice(
            "LAUNCHER_MEMORY_GUARD",
            "memory_guard",
            "on or off",
            ("on", true),
            config::parse_switch,
        )?,
        soft_limit_percent: reader
            .whole(
                "LAUNCHER_MEMORY_SOFT_LIMIT",
                "memory_soft_limit",
                (min, max),
                Some(percent),
            )?
            .unwrap_or(percent),
        worker_memory_max_mb: reader.whole(
            "LAUNCHER_WORKER_MEMORY_MAX",
            "worker_memory_max",
            (1, config::MAX_WEB_MEMORY_MB),
            None,
        )?,
        memory_cooldown: reader.seconds(&MEMORY_COOLDOWN)?,
        sizing: reader.choice(
            "LAUNCHER_SIZING",
            "sizing",
            "static or measured",
            ("static", Sizing::Static),
            parse_sizing,
        )?,
        sizing_warmup: reader.seconds(&SIZING_WARMUP)?,
        warnings: reader.warnings,
    })
}

/// Every problem `launcher run` would stop on, for the build log.
pub fn file_problems(app_dir: &Path) -> Option<String> {
    load(&Env::default(), Some(app_dir), false).err()
}

fn parse_sizing(text: &str) -> Option<Sizing> {
    match text {
        "static" => Some(Sizing::Static),
        "measured" => Some(Sizing::Measured),
        _ => None,
    }
}

/// A value from the file as the error shows it.
fn described(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("a {}", other.type_str()),
    }
}

/// Reads settings from config vars first, then `launcher.toml`. A bad config var is a warning
/// and the default; a bad file entry is the error.
struct Reader<'a> {
    env: &'a Env,
    table: &'a toml::Table,
    warnings: Vec<String>,
}

impl<'a> Reader<'a> {
    /// The config var's text, when set and not empty.
    fn var(&self, var: &str) -> Option<&'a str> {
        self.env.get(var).filter(|v| !v.is_empty())
    }

    fn file_error(&self, key: &str, expected: &str) -> String {
        let value = self.table.get(key).map(described).unwrap_or_default();
        format!(
            "{}: {key} must be {expected}, not {value}",
            config::FILE_NAME
        )
    }

    /// A word from a list (or, in the file, a boolean for a switch).
    fn choice<T: Copy>(
        &mut self,
        var: &str,
        key: &str,
        expected: &str,
        default: (&str, T),
        parse: fn(&str) -> Option<T>,
    ) -> Result<T, String> {
        if let Some(text) = self.var(var) {
            return Ok(parse(text).unwrap_or_else(|| {
                self.warnings.push(format!(
                    "{var}={} is not {expected}; using {}",
                    shown(text),
                    default.0
                ));
                default.1
            }));
        }
        let parsed = match self.table.get(key) {
            None => return Ok(default.1),
            Some(toml::Value::String(text)) => parse(text),
            Some(toml::Value::Boolean(b)) => parse(if *b { "on" } else { "off" }),
            Some(_) => None,
        };
        parsed.ok_or_else(|| self.file_error(key, expected))
    }

    /// A whole number in `range`; None when unset (and `default` is None).
    fn whole(
        &mut self,
        var: &str,
        key: &str,
        (min, max): (u64, u64),
        default: Option<u64>,
    ) -> Result<Option<u64>, String> {
        let expected = format!("a whole number from {min} to {max}");
        if let Some(text) = self.var(var) {
            let parsed = config::whole_number(text, max).filter(|n| *n >= min);
            if parsed.is_none() {
                let fallback = default.map_or("none".to_owned(), |d| d.to_string());
                self.warnings.push(format!(
                    "{var}={} is not {expected}; using {fallback}",
                    shown(text)
                ));
            }
            return Ok(parsed.or(default));
        }
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::Integer(n)) if (min..=max).contains(&(*n as u64)) && *n > 0 => {
                Ok(Some(*n as u64))
            }
            Some(_) => Err(self.file_error(key, &expected)),
        }
    }

    fn seconds(&mut self, setting: &Seconds) -> Result<Duration, String> {
        let expected = format!(
            "a number of seconds from {} to {}",
            setting.min, setting.max
        );
        if let Some(text) = self.var(setting.var) {
            return Ok(match setting.parse(text) {
                Some(duration) => duration,
                None => {
                    self.warnings.push(format!(
                        "{}={} is not {expected}; using {}",
                        setting.var,
                        shown(text),
                        setting.default
                    ));
                    Duration::from_secs_f64(setting.default)
                }
            });
        }
        let seconds = match self.table.get(setting.key) {
            None => return Ok(Duration::from_secs_f64(setting.default)),
            Some(toml::Value::Integer(n)) => *n as f64,
            Some(toml::Value::Float(x)) => *x,
            // Not a number: NaN is in no range, so it is reported below.
            Some(_) => f64::NAN,
        };
        if (setting.min..=setting.max).contains(&seconds) {
            Ok(Duration::from_secs_f64(seconds))
        } else {
            Err(self.file_error(setting.key, &expected))
        }
    }
}

impl Seconds {
    /// Digits with at most one decimal point: `25`, `0.5`. No sign, exponent or unit.
    fn parse(&self, text: &str) -> Option<Duration> {
        let shape = text.len() <= 12
            && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && text.bytes().filter(|b| *b == b'.').count() <= 1
            && text.bytes().any(|b| b.is_ascii_digit());
        let seconds: f64 = text.parse().ok().filter(|_| shape)?;
        (self.min..=self.max)
            .contains(&seconds)
            .then(|| Duration::from_secs_f64(seconds))
    }
}

#[cfg(test)]
mod tests;
