//! Settings: config vars (the process environment) and `launcher.toml` at the app root.
//! Config vars win over the file. A bad value never stops a dyno: it is reported and replaced.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use crate::sizing::MAX_WEB_CONCURRENCY;

/// Per-worker memory budget when `WEB_MEMORY` is unset or invalid, in MB.
pub const DEFAULT_WEB_MEMORY_MB: u64 = 256;
/// The largest `WEB_MEMORY` taken, in MB (1 TiB).
pub const MAX_WEB_MEMORY_MB: u64 = 1024 * 1024;
/// The file name looked up at the app root.
pub const FILE_NAME: &str = "launcher.toml";

/// A captured environment. Values that are not UTF-8 are kept, lossily, so they are reported as
/// invalid rather than silently dropped.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars_os())
    }

    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| {
                let (k, v) = (k.into(), v.into());
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        Env { vars }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// What the sizing needs from configuration, with the warnings produced while reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub disable: bool,
    pub max_workers: Option<u32>,
    pub web_memory_mb: u64,
    /// Where `web_memory_mb` came from: `WEB_MEMORY` or the default.
    pub web_memory_source: String,
    pub warnings: Vec<String>,
    /// What is wrong with `launcher.toml`: warnings for `size` and the boot script, which must
    /// never stop a dyno; errors for `launcher run`, which reads the file before anything starts.
    pub file_problems: Vec<String>,
}

/// Reads the settings from `env` and, if present, `<app_dir>/launcher.toml`.
pub fn load(env: &Env, app_dir: Option<&Path>) -> Settings {
    let mut warnings = Vec::new();
    let mut file_problems = Vec::new();
    let file = app_dir
        .map(|dir| read_file(dir, &mut file_problems))
        .unwrap_or_default();
    let (web_memory_mb, web_memory_source) = web_memory(env, &mut warnings);
    let disable = match env.get("LAUNCHER_DISABLE").filter(|v| !v.is_empty()) {
        Some(text) => parse_switch(text).unwrap_or_else(|| {
            warnings.push(format!(
                "LAUNCHER_DISABLE={} is not one of 1, true, yes, on, 0, false, no, off; sizing stays on",
                shown(text)
            ));
            false
        }),
        None => file.disable.unwrap_or(false),
    };
    let max_workers = match env.get("LAUNCHER_MAX_WORKERS").filter(|v| !v.is_empty()) {
        Some(text) => whole_number(text, u64::from(MAX_WEB_CONCURRENCY))
            .map(|n| n as u32)
            .or_else(|| {
                warnings.push(format!(
                    "LAUNCHER_MAX_WORKERS={} is not a whole number from 1 to {MAX_WEB_CONCURRENCY}; no cap applied",
                    shown(text)
                ));
                None
            }),
        None => file.max_workers,
    };
    Settings {
        disable,
        max_workers,
        web_memory_mb,
        web_memory_source,
        warnings,
        file_problems,
    }
}

fn web_memory(env: &Env, warnings: &mut Vec<String>) -> (u64, String) {
    let Some(text) = env.get("WEB_MEMORY") else {
        return (
            DEFAULT_WEB_MEMORY_MB,
            "default, WEB_MEMORY unset".to_owned(),
        );
    };
    match whole_number(text, MAX_WEB_MEMORY_MB) {
        Some(mb) => (mb, "WEB_MEMORY".to_owned()),
        None => {
            warnings.push(format!(
                "WEB_MEMORY={} is not a whole number of MB from 1 to {MAX_WEB_MEMORY_MB}; using {DEFAULT_WEB_MEMORY_MB}",
                shown(text)
            ));
            (
                DEFAULT_WEB_MEMORY_MB,
                "default, WEB_MEMORY invalid".to_owned(),
            )
        }
    }
}

/// The keys `launcher run` reads from `launcher.toml` (see `supervisor::settings`).
pub const RUN_KEYS: [&str; 11] = [
    "mode",
    "graceful_timeout",
    "ready_grace",
    "give_up_after",
    "sample_interval",
    "memory_guard",
    "memory_soft_limit",
    "worker_memory_max",
    "memory_cooldown",
    "sizing",
    "sizing_warmup",
];

/// The settings `launcher.toml` can hold: a config var's name without `LAUNCHER_`, in lower case.
#[derive(Debug, Default)]
struct FileSettings {
    disable: Option<bool>,
    max_workers: Option<u32>,
}

/// `launcher.toml` in `app_dir` as a table: None when there is no such file.
pub fn read_table(app_dir: &Path) -> Result<Option<toml::Table>, String> {
    let text = match std::fs::read_to_string(app_dir.join(FILE_NAME)) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot read {FILE_NAME}: {err}")),
    };
    text.parse().map(Some).map_err(|err: toml::de::Error| {
        let first_line = err
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        format!("{FILE_NAME} is not valid TOML ({first_line})")
    })
}

fn read_file(app_dir: &Path, warnings: &mut Vec<String>) -> FileSettings {
    let mut settings = FileSettings::default();
    let table = match read_table(app_dir) {
        Ok(Some(table)) => table,
        Ok(None) => return settings,
        Err(problem) => {
            warnings.push(format!("{problem}; its settings are ignored"));
            return settings;
        }
    };
    for (key, value) in &table {
        match (key.as_str(), value) {
            ("disable", toml::Value::Boolean(b)) => settings.disable = Some(*b),
            ("max_workers", toml::Value::Integer(n))
                if (1..=i64::from(MAX_WEB_CONCURRENCY)).contains(n) =>
            {
                settings.max_workers = u32::try_from(*n).ok();
            }
            ("disable", _) => warnings.push(format!("{FILE_NAME}: disable must be true or false; ignored")),
            ("max_workers", _) => warnings.push(format!(
                "{FILE_NAME}: max_workers must be a whole number from 1 to {MAX_WEB_CONCURRENCY}; ignored"
            )),
            (run, _) if RUN_KEYS.contains(&run) => {}
            (other, _) => warnings.push(format!("{FILE_NAME}: unknown setting {}; ignored", shown(other))),
        }
    }
    settings
}

/// A strict whole number from 1 to `max`: ASCII digits, no sign, no leading zero, no exponent.
pub fn whole_number(text: &str, max: u64) -> Option<u64> {
    let valid_shape = !text.is_empty()
        && text.len() <= 19
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    if !valid_shape {
        return None;
    }
    text.parse::<u64>().ok().filter(|n| (1..=max).contains(n))
}

/// A switch: `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`, in any case.
pub fn parse_switch(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A config var's text as shown in a log line: quoted, escaped, at most 40 characters, so that
/// control characters or a huge value cannot garble the log.
pub fn shown(text: &str) -> String {
    let clipped: String = text.chars().take(40).collect();
    let ellipsis = if text.chars().count() > 40 { "..." } else { "" };
    format!("{clipped:?}{ellipsis}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn whole_numbers_are_strict() {
        assert_eq!(whole_number("3", 1024), Some(3));
        assert_eq!(whole_number("1024", 1024), Some(1024));
        for bad in [
            "",
            "abc",
            "0",
            "-2",
            "+2",
            "1e3",
            "04",
            " 4",
            "4 ",
            "1025",
            "2.5",
            &"9".repeat(30),
        ] {
            assert_eq!(whole_number(bad, 1024), None, "{bad:?}");
        }
    }

    #[test]
    fn defaults() {
        let settings = load(&Env::default(), None);
        assert_eq!(settings.web_memory_mb, 256);
        assert_eq!(settings.web_memory_source, "default, WEB_MEMORY unset");
        assert!(!settings.disable);
        assert_eq!(settings.max_workers, None);
        assert!(settings.warnings.is_empty());
    }

    #[test]
    fn web_memory_valid_and_invalid() {
        assert_eq!(
            load(&env(&[("WEB_MEMORY", "512")]), None).web_memory_mb,
            512
        );
        let bad = load(&env(&[("WEB_MEMORY", "512MB")]), None);
        assert_eq!(bad.web_memory_mb, 256);
        assert_eq!(
            bad.warnings,
            vec!["WEB_MEMORY=\"512MB\" is not a whole number of MB from 1 to 1048576; using 256"]
        );
    }

    #[test]
    fn shown_values_are_escaped_and_clipped() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown(&"x".repeat(50)), format!("{:?}...", "x".repeat(40)));
    }

    #[test]
    fn launcher_toml_is_read_and_config_vars_win() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        std::fs::write(
            dir.path().join(FILE_NAME),
            "disable = true\nmax_workers = 4\n",
        )
        .expect("write");
        let from_file = load(&Env::default(), Some(dir.path()));
        assert!(from_file.disable);
        assert_eq!(from_file.max_workers, Some(4));
        let overridden = load(
            &env(&[("LAUNCHER_DISABLE", "0"), ("LAUNCHER_MAX_WORKERS", "8")]),
            Some(dir.path()),
        );
        assert!(!overridden.disable);
        assert_eq!(overridden.max_workers, Some(8));
    }

    #[test]
    fn bad_launcher_toml_is_reported_and_ignored() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "disable = [\n").expect("write");
        let settings = load(&Env::default(), Some(dir.path()));
        assert!(!settings.disable);
        assert!(
            settings.file_problems[0].starts_with("launcher.toml is not valid TOML"),
            "{:?}",
            settings.file_problems
        );
        std::fs::write(
            &path,
            "disable = \"yes\"\nmax_workers = 0\ncolour = 1\nmode = \"fanout\"\n",
        )
        .expect("write");
        let problems = load(&Env::default(), Some(dir.path())).file_problems;
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn switches() {
        assert!(load(&env(&[("LAUNCHER_DISABLE", "TRUE")]), None).disable);
        let bad = load(&env(&[("LAUNCHER_DISABLE", "ture")]), None);
        assert!(!bad.disable);
        assert_eq!(bad.warnings.len(), 1);
        let cap = load(&env(&[("LAUNCHER_MAX_WORKERS", "0")]), None);
        assert_eq!(cap.max_workers, None);
        assert_eq!(cap.warnings.len(), 1);
    }
}
