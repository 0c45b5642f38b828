//! The one reader: config vars first, then `launcher.toml`, then the table's default; the file is
//! read once. Each value keeps where it came from, and each problem what was done instead, so the
//! two policies are two ways of rendering the same problems: warn and go on (boot script,
//! `launcher size`, build log) or refuse to start (`launcher run`, for the file).

use std::path::Path;
use std::time::Duration;

use super::problem::{Instead, Origin, Problem};
use super::table::{Kind, Spec, ALL};
use super::FILE_NAME;
use crate::env::Env;
use crate::text::{parse_switch, shown, whole_number};

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    ConfigVar,
    File,
    Default,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::ConfigVar => "config var",
            Source::File => FILE_NAME,
            Source::Default => "default",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Switch(bool),
    /// None: unset, for a setting whose default is none.
    Whole(Option<u64>),
    Seconds(Duration),
    Choice(&'static str),
}

impl Value {
    /// The value as a config var would be written (`none` for no value).
    pub fn text(&self) -> String {
        match self {
            Value::Switch(on) => if *on { "on" } else { "off" }.to_owned(),
            Value::Whole(n) => n.map_or("none".to_owned(), |n| n.to_string()),
            Value::Seconds(d) => d.as_secs_f64().to_string(),
            Value::Choice(word) => (*word).to_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        match self {
            Value::Switch(on) => (*on).into(),
            Value::Whole(n) => n.map_or(serde_json::Value::Null, Into::into),
            Value::Seconds(d) => d.as_secs_f64().into(),
            Value::Choice(word) => (*word).into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub spec: &'static Spec,
    pub value: Value,
    pub source: Source,
}

/// The settings of one command, each with its source, and the problems met reading them.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    entries: Vec<Entry>,
    problems: Vec<Problem>,
}

impl Settings {
    /// Reads every setting the launcher takes from `env` and `<app_dir>/launcher.toml`. Never
    /// fails: problems are kept, for the caller's policy.
    pub fn load(env: &Env, app_dir: Option<&Path>) -> Settings {
        let mut problems = Vec::new();
        let file = app_dir
            .and_then(|dir| read_file(dir, &mut problems))
            .unwrap_or_default();
        problems.extend(unknown_keys(&file.table));
        let entries = ALL
            .into_iter()
            .filter(|spec| spec.is_read())
            .map(|spec| read_one(spec, env, &file, &mut problems))
            .collect();
        Settings { entries, problems }
    }

    /// The warn policy: every problem, with what was used instead.
    pub fn warnings(&self) -> Vec<String> {
        self.problems.iter().map(Problem::warning).collect()
    }

    /// The refuse policy (`launcher run`): what is wrong with `launcher.toml`, as one line. The
    /// file is the app's own code, and the build log has warned about it. Config vars are never
    /// refused: one changed on a running app restarts its dynos with no build to catch it, so
    /// `launcher run` warns about them and goes on, as the boot script does.
    pub fn refusal(&self) -> Option<String> {
        let file: Vec<&str> = self
            .problems
            .iter()
            .filter(|p| p.origin == Origin::File)
            .map(|p| p.what.as_str())
            .collect();
        (!file.is_empty()).then(|| format!("{}; refusing to start", file.join("; ")))
    }

    /// The build log's view: config vars as warned at boot, and the file's problems with both
    /// consequences, so a typo shows up at `git push`.
    pub fn build_log_warnings(&self) -> Vec<String> {
        self.problems.iter().map(Problem::build_log_line).collect()
    }

    /// Whether `spec`'s config var or file entry was invalid.
    pub fn was_replaced(&self, spec: &Spec) -> bool {
        self.problems.iter().any(|p| p.spec == Some(spec.var))
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn entry(&self, spec: &Spec) -> Option<&Entry> {
        self.entries.iter().find(|e| e.spec.var == spec.var)
    }

    fn value(&self, spec: &Spec) -> Option<Value> {
        self.entry(spec).map(|e| e.value)
    }

    pub fn switch(&self, spec: &Spec) -> bool {
        matches!(self.value(spec), Some(Value::Switch(true)))
    }

    pub fn whole(&self, spec: &Spec) -> Option<u64> {
        match self.value(spec) {
            Some(Value::Whole(n)) => n,
            _ => None,
        }
    }

    /// A whole number whose default is not none.
    pub fn number(&self, spec: &Spec) -> u64 {
        let default = || spec.default.parse().ok();
        self.whole(spec).or_else(default).unwrap_or(0)
    }

    pub fn seconds(&self, spec: &Spec) -> Duration {
        match self.value(spec) {
            Some(Value::Seconds(d)) => d,
            _ => Duration::ZERO,
        }
    }

    pub fn choice(&self, spec: &Spec) -> &'static str {
        match self.value(spec) {
            Some(Value::Choice(word)) => word,
            _ => "",
        }
    }
}

/// `launcher.toml`: its values, and its text to show a value as it is written there.
#[derive(Default)]
struct File {
    table: toml::Table,
    text: String,
}

impl File {
    /// A value of the file as a message shows it: a number as written (`4.0`, `1e9`, `0x65`,
    /// which the parsed value would show as `4`, `1000000000` and `101`), a string quoted and
    /// escaped, anything else by its kind.
    fn described(&self, key: &str, value: &toml::Value) -> String {
        match value {
            toml::Value::String(s) => shown(s),
            toml::Value::Integer(_) | toml::Value::Float(_) => match (self.written(key), value) {
                (Some(text), _) => text.chars().take(40).collect(),
                (None, toml::Value::Integer(n)) => n.to_string(),
                (None, _) => format!("{:?}", value.as_float().unwrap_or_default()),
            },
            toml::Value::Boolean(b) => b.to_string(),
            other => format!("a {}", other.type_str()),
        }
    }

    /// The text of `key`'s value, as the file writes it.
    fn written(&self, key: &str) -> Option<&str> {
        type Spans = std::collections::BTreeMap<String, toml::Spanned<toml::Value>>;
        let spans: Spans = toml::from_str(&self.text).ok()?;
        self.text.get(spans.get(key)?.span())
    }
}

/// `launcher.toml`; None when there is none or it cannot be used (a problem then).
fn read_file(app_dir: &Path, problems: &mut Vec<Problem>) -> Option<File> {
    let mut problem = |what: String| {
        problems.push(Problem {
            origin: Origin::File,
            spec: None,
            what,
            instead: Instead::FileIgnored,
        })
    };
    let text = match crate::files::read_text(&app_dir.join(FILE_NAME), crate::files::MAX_BYTES) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => {
            problem(format!("cannot read {FILE_NAME}: {err}"));
            return None;
        }
    };
    match text.parse::<toml::Table>() {
        Ok(table) => Some(File { table, text }),
        Err(err) => {
            let shown = err.to_string();
            let place = shown.lines().next().unwrap_or_default();
            let place = place.trim_start_matches("TOML parse error at ");
            let why: Vec<&str> = err.message().lines().map(str::trim).collect();
            let why = why.join(", ");
            problem(format!("{FILE_NAME} is not valid TOML ({place}: {why})"));
            None
        }
    }
}

/// Keys of the file that are no setting of the file. A setting's config var name (any case, with
/// or without `LAUNCHER_`) is told the key to write, or that the setting is a config var only.
fn unknown_keys(table: &toml::Table) -> Vec<Problem> {
    let keyed = |key: &str| ALL.iter().any(|s| s.key == Some(key));
    let named = |key: &str| {
        let upper = key.to_ascii_uppercase();
        ALL.iter()
            .find(|s| s.var == upper || s.var.strip_prefix("LAUNCHER_") == Some(&upper))
    };
    table
        .keys()
        .filter(|key| !keyed(key))
        .map(|key| Problem {
            origin: Origin::File,
            spec: None,
            what: match named(key).map(|spec| (spec.var, spec.key)) {
                Some((var, Some(file_key))) => format!(
                    "{FILE_NAME}: unknown setting {} (write {file_key}, the key for {var})",
                    shown(key)
                ),
                Some((var, None)) => format!(
                    "{FILE_NAME}: {} is a config var only, not a {FILE_NAME} setting (set {var} instead)",
                    shown(key)
                ),
                None => format!("{FILE_NAME}: unknown setting {}", shown(key)),
            },
            instead: Instead::Ignored,
        })
        .collect()
}

/// One setting: the config var if set and valid, else the file's entry if valid, else the default.
fn read_one(spec: &'static Spec, env: &Env, file: &File, problems: &mut Vec<Problem>) -> Entry {
    let var = env.get(spec.var).filter(|v| !v.is_empty());
    let from_var = var.map(|text| (text, parse_text(spec, text)));
    let from_file = spec.key.and_then(|key| Some((key, file.table.get(key)?)));
    let from_file = from_file.map(|(key, value)| (key, value, parse_toml(spec, value)));
    let default = parse_text(spec, spec.default).unwrap_or(Value::Whole(None));
    let entry = |value, source| Entry {
        spec,
        value,
        source,
    };
    let chosen = match (&from_var, &from_file) {
        (Some((_, Some(value))), _) => entry(*value, Source::ConfigVar),
        (_, Some((_, _, Some(value)))) => entry(*value, Source::File),
        _ => entry(default, Source::Default),
    };
    let instead = |chosen: &Entry| match chosen.source {
        Source::ConfigVar => Instead::ConfigVar(spec.var),
        Source::File => Instead::File(chosen.value.text()),
        Source::Default => Instead::Default(chosen.value.text()),
    };
    if let Some((text, None)) = from_var {
        problems.push(Problem {
            origin: Origin::ConfigVar,
            spec: Some(spec.var),
            what: format!("{}={} is not {}", spec.var, shown(text), spec.expected()),
            instead: instead(&chosen),
        });
    }
    if let Some((key, value, None)) = from_file {
        problems.push(Problem {
            origin: Origin::File,
            spec: Some(spec.var),
            what: format!(
                "{FILE_NAME}: {key} must be {}, not {}",
                spec.expected(),
                file.described(key, value)
            ),
            instead: instead(&chosen),
        });
    }
    chosen
}

/// A config var's text (or a default) as `spec`'s kind.
fn parse_text(spec: &Spec, text: &str) -> Option<Value> {
    match spec.kind {
        Kind::Switch => parse_switch(text).map(Value::Switch),
        Kind::Whole { .. } if text.is_empty() => Some(Value::Whole(None)),
        Kind::Whole { min, max, .. } => whole_number(text, max)
            .filter(|n| *n >= min)
            .map(|n| Value::Whole(Some(n))),
        Kind::Seconds { .. } => seconds_in(spec, seconds(text)?),
        Kind::Interval { max } => match text {
            "0" => interval(0),
            _ => interval(whole_number(text, max)?),
        },
        Kind::Choice(words) => words.iter().find(|w| **w == text).map(|w| Value::Choice(w)),
        Kind::WorkerCount | Kind::BuildText { .. } => None,
    }
}

/// An interval of whole seconds; 0 is off.
fn interval(seconds: u64) -> Option<Value> {
    Some(Value::Seconds(Duration::from_secs(seconds)))
}

/// `seconds` as `spec`'s value, if within its bounds (NaN is in none).
fn seconds_in(spec: &Spec, seconds: f64) -> Option<Value> {
    let Kind::Seconds { min, max, .. } = spec.kind else {
        return None;
    };
    (min..=max)
        .contains(&seconds)
        .then(|| Value::Seconds(Duration::from_secs_f64(seconds)))
}

/// Digits with at most one decimal point: `25`, `0.5`. No sign, exponent or unit.
fn seconds(text: &str) -> Option<f64> {
    let shape = text.len() <= 12
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|b| *b == b'.').count() <= 1
        && text.bytes().any(|b| b.is_ascii_digit());
    text.parse().ok().filter(|_| shape)
}

/// A `launcher.toml` value as `spec`'s kind.
fn parse_toml(spec: &Spec, value: &toml::Value) -> Option<Value> {
    match (spec.kind, value) {
        (Kind::Switch, toml::Value::Boolean(on)) => Some(Value::Switch(*on)),
        (Kind::Whole { min, max, .. }, toml::Value::Integer(n)) => u64::try_from(*n)
            .ok()
            .filter(|n| (min..=max).contains(n))
            .map(|n| Value::Whole(Some(n))),
        (Kind::Seconds { .. }, toml::Value::Integer(n)) => seconds_in(spec, *n as f64),
        (Kind::Seconds { .. }, toml::Value::Float(x)) => seconds_in(spec, *x),
        (Kind::Interval { max }, toml::Value::Integer(n)) => u64::try_from(*n)
            .ok()
            .filter(|n| *n <= max)
            .and_then(interval),
        (Kind::Switch | Kind::Choice(_), toml::Value::String(text)) => parse_text(spec, text),
        _ => None,
    }
}
