//! `launcher run`'s own settings: config vars (`LAUNCHER_*`) and the same keys in `launcher.toml`.
//! A bad config var is warned about and replaced by its default (the dyno boots); a bad
//! `launcher.toml` stops `launcher run` before anything starts, since it is the app's own code.

use std::path::Path;
use std::time::Duration;

use crate::config::{self, shown, Env};
use crate::servers::Mode;

/// Heroku sends SIGKILL 30 s after SIGTERM; the launcher must be done before that.
pub const HEROKU_MAX_GRACEFUL: Duration = Duration::from_secs(28);

#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// None: chosen from the command.
    pub mode: Option<Mode>,
    pub graceful_timeout: Duration,
    pub ready_grace: Duration,
    pub give_up_after: Duration,
    /// None: no `sample#` lines.
    pub sample_interval: Option<Duration>,
    pub warnings: Vec<String>,
}

/// One setting: its config var, its `launcher.toml` key, its default and its bounds.
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

/// Reads the settings; `Err` is the one line explaining what is wrong with `launcher.toml`.
pub fn load(env: &Env, app_dir: Option<&Path>, on_heroku: bool) -> Result<RunSettings, String> {
    let table = match app_dir {
        Some(dir) => config::read_table(dir)?.unwrap_or_default(),
        None => toml::Table::new(),
    };
    let mut warnings = Vec::new();
    let mode = match env.get("LAUNCHER_MODE").filter(|v| !v.is_empty()) {
        Some(text) => Mode::parse(text).unwrap_or_else(|| {
            warnings.push(format!(
                "LAUNCHER_MODE={} is not one of auto, fanout, delegate; using auto",
                shown(text)
            ));
            None
        }),
        None => match table.get("mode") {
            None => None,
            Some(value) => value.as_str().and_then(Mode::parse).ok_or_else(|| {
                format!(
                    "{}: mode must be \"auto\", \"fanout\" or \"delegate\", not {}",
                    config::FILE_NAME,
                    described(value)
                )
            })?,
        },
    };
    let mut graceful_timeout = GRACEFUL_TIMEOUT.read(env, &table, &mut warnings)?;
    if on_heroku && graceful_timeout > HEROKU_MAX_GRACEFUL {
        warnings.push(format!(
            "a graceful timeout of {} s does not fit Heroku's 30 s before SIGKILL; using {} s",
            graceful_timeout.as_secs_f64(),
            HEROKU_MAX_GRACEFUL.as_secs()
        ));
        graceful_timeout = HEROKU_MAX_GRACEFUL;
    }
    let sample_interval = SAMPLE_INTERVAL.read(env, &table, &mut warnings)?;
    Ok(RunSettings {
        mode,
        graceful_timeout,
        ready_grace: READY_GRACE.read(env, &table, &mut warnings)?,
        give_up_after: GIVE_UP_AFTER.read(env, &table, &mut warnings)?,
        sample_interval: Some(sample_interval).filter(|d| !d.is_zero()),
        warnings,
    })
}

/// Every problem `launcher run` would stop on, for the build log.
pub fn file_problems(app_dir: &Path) -> Option<String> {
    load(&Env::default(), Some(app_dir), false).err()
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

impl Seconds {
    fn read(
        &self,
        env: &Env,
        table: &toml::Table,
        warnings: &mut Vec<String>,
    ) -> Result<Duration, String> {
        if let Some(text) = env.get(self.var).filter(|v| !v.is_empty()) {
            return Ok(match self.parse(text) {
                Some(duration) => duration,
                None => {
                    warnings.push(format!(
                        "{}={} is not a number of seconds from {} to {}; using {}",
                        self.var,
                        shown(text),
                        self.min,
                        self.max,
                        self.default
                    ));
                    Duration::from_secs_f64(self.default)
                }
            });
        }
        let seconds = match table.get(self.key) {
            None => return Ok(Duration::from_secs_f64(self.default)),
            Some(toml::Value::Integer(n)) => *n as f64,
            Some(toml::Value::Float(x)) => *x,
            // Not a number: NaN is in no range, so it is reported below.
            Some(_) => f64::NAN,
        };
        if (self.min..=self.max).contains(&seconds) {
            Ok(Duration::from_secs_f64(seconds))
        } else {
            Err(format!(
                "{}: {} must be a number of seconds from {} to {}, not {}",
                config::FILE_NAME,
                self.key,
                self.min,
                self.max,
                table.get(self.key).map(described).unwrap_or_default()
            ))
        }
    }

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
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn with_file(text: &str) -> tempfile::TempDir {
        let dir = tempfile::TempDir::new().expect("temp dir");
        std::fs::write(dir.path().join(config::FILE_NAME), text).expect("write");
        dir
    }

    #[test]
    fn defaults() {
        let settings = load(&Env::default(), None, false).expect("settings");
        assert_eq!(settings.mode, None);
        assert_eq!(settings.graceful_timeout, Duration::from_secs(25));
        assert_eq!(settings.ready_grace, Duration::from_secs(1));
        assert_eq!(settings.give_up_after, Duration::from_secs(60));
        assert_eq!(settings.sample_interval, Some(Duration::from_secs(20)));
        assert!(settings.warnings.is_empty());
    }

    #[test]
    fn config_vars_win_over_the_file() {
        let dir = with_file("mode = \"delegate\"\ngraceful_timeout = 10\nready_grace = 0.5\n");
        let from_file = load(&Env::default(), Some(dir.path()), false).expect("settings");
        assert_eq!(from_file.mode, Some(Mode::Delegate));
        assert_eq!(from_file.graceful_timeout, Duration::from_secs(10));
        assert_eq!(from_file.ready_grace, Duration::from_millis(500));
        let vars = env(&[
            ("LAUNCHER_MODE", "fanout"),
            ("LAUNCHER_GRACEFUL_TIMEOUT", "3"),
        ]);
        let overridden = load(&vars, Some(dir.path()), false).expect("settings");
        assert_eq!(overridden.mode, Some(Mode::FanOut));
        assert_eq!(overridden.graceful_timeout, Duration::from_secs(3));
    }

    #[test]
    fn bad_config_vars_are_warned_about_and_replaced() {
        let vars = env(&[
            ("LAUNCHER_MODE", "turbo"),
            ("LAUNCHER_GRACEFUL_TIMEOUT", "-1"),
            ("LAUNCHER_READY_GRACE", "1e3"),
            ("LAUNCHER_GIVE_UP_AFTER", "0"),
            ("LAUNCHER_SAMPLE_INTERVAL", "20s"),
        ]);
        let settings = load(&vars, None, false).expect("settings");
        assert_eq!(
            settings,
            load(&Env::default(), None, false)
                .map(|s| RunSettings {
                    warnings: settings.warnings.clone(),
                    ..s
                })
                .expect("defaults")
        );
        assert_eq!(settings.warnings.len(), 5, "{:?}", settings.warnings);
        assert!(settings.warnings[0].contains("\"turbo\""));
    }

    #[test]
    fn a_bad_file_is_an_error() {
        for text in [
            "mode = [",
            "mode = \"turbo\"",
            "graceful_timeout = \"25s\"",
            "ready_grace = -1",
            "sample_interval = 1e9",
        ] {
            let dir = with_file(text);
            let err = load(&Env::default(), Some(dir.path()), false).expect_err(text);
            assert!(err.starts_with("launcher.toml"), "{err}");
            assert_eq!(file_problems(dir.path()), Some(err));
        }
    }

    #[test]
    fn heroku_caps_the_graceful_timeout_under_30_s() {
        let vars = env(&[("LAUNCHER_GRACEFUL_TIMEOUT", "60")]);
        let settings = load(&vars, None, true).expect("settings");
        assert_eq!(settings.graceful_timeout, HEROKU_MAX_GRACEFUL);
        assert_eq!(settings.warnings.len(), 1);
        assert_eq!(
            load(&vars, None, false).expect("settings").graceful_timeout,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn zero_turns_samples_off() {
        let settings = load(&env(&[("LAUNCHER_SAMPLE_INTERVAL", "0")]), None, false);
        assert_eq!(settings.expect("settings").sample_interval, None);
    }
}
