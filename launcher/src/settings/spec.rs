//! What a setting is: its kind with bounds and unit, when it is read, and how docs/settings.md
//! describes it. The settings themselves are the table (`table.rs`).

#[cfg(test)]
use super::table::ALL;
use crate::sizing::MAX_WEB_CONCURRENCY;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `on`/`off` (also `1`/`0`, `true`/`false`, `yes`/`no`); in `launcher.toml` also a boolean.
    Switch,
    /// A whole number from `min` to `max`, in `unit`. The default may be empty: none.
    Whole {
        min: u64,
        max: u64,
        unit: &'static str,
    },
    /// A number of seconds from `min` to `max`, decimals allowed.
    Seconds { min: f64, max: f64 },
    /// How often something is done: `0` (off) or whole seconds from 1 to `max` (an interval of a
    /// fraction of a second would flood the log).
    Interval { max: u64 },
    /// One of these words.
    Choice(&'static [&'static str]),
    /// One of these words, or a whole number from `min` to `max` in `unit`.
    ChoiceOrWhole {
        words: &'static [&'static str],
        min: u64,
        max: u64,
        unit: &'static str,
    },
    /// `WEB_CONCURRENCY`: read by the precedence rules (`sizing::decide`), not by the reader.
    WorkerCount,
    /// Read by `bin/compile` (bash) before the binary exists: documented here, read there.
    BuildText { values: &'static str },
}

/// When a setting is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// At every dyno boot (the `.profile.d` script) and by `launcher size`.
    Boot,
    /// In the build log's sizing step.
    BuildLog,
    /// By `bin/compile` while getting the binary.
    Build,
    /// By `launcher run`.
    Run,
}

#[cfg(test)]
impl When {
    pub fn label(self) -> &'static str {
        match self {
            When::Boot => "boot",
            When::BuildLog => "build log",
            When::Build => "build",
            When::Run => "`launcher run`",
        }
    }
}

/// One setting.
#[derive(Debug, PartialEq)]
pub struct Spec {
    /// The config var.
    pub var: &'static str,
    /// The `launcher.toml` key: the config var's name without `LAUNCHER_`, in lower case. None
    /// for Heroku's own names and the build-time settings, which are config vars only.
    pub key: Option<&'static str>,
    pub kind: Kind,
    /// The default, written as the config var would be (`25`, `on`, `static`); empty for none.
    /// For `WorkerCount` and `BuildText` a description.
    pub default: &'static str,
    pub when: &'static [When],
    /// What it does, for docs/settings.md (Markdown; links are relative to docs/).
    pub doc: &'static str,
}

impl Spec {
    /// Whether the launcher's own reader takes it (not the precedence rules, not bash).
    pub fn is_read(&self) -> bool {
        !matches!(self.kind, Kind::WorkerCount | Kind::BuildText { .. })
    }

    /// The values it takes, for docs/settings.md and error messages: `a number of seconds from 0 to 3600`.
    pub fn expected(&self) -> String {
        match self.kind {
            Kind::Switch => "on or off".to_owned(),
            Kind::Whole { min, max, .. } => format!("a whole number from {min} to {max}"),
            Kind::Seconds { min, max } => format!("a number of seconds from {min} to {max}"),
            Kind::Interval { max } => {
                format!("0 (off) or a whole number of seconds from 1 to {max}")
            }
            Kind::Choice(words) => format!("one of {}", words.join(", ")),
            Kind::ChoiceOrWhole {
                words, min, max, ..
            } => format!("{} or a whole number from {min} to {max}", words.join(", ")),
            Kind::WorkerCount => format!("a whole number from 1 to {MAX_WEB_CONCURRENCY}"),
            Kind::BuildText { values } => values.to_owned(),
        }
    }
}

/// docs/settings.md's settings table, rendered from this one.
#[cfg(test)]
pub fn markdown() -> String {
    let mut table = String::from(
        "| setting | `launcher.toml` | default | values | when | what it does |\n\
         |---|---|---|---|---|---|\n",
    );
    for spec in ALL {
        let key = spec.key.map_or("-".to_owned(), |k| format!("`{k}`"));
        let default = match (spec.kind, spec.default) {
            (_, "") => "none".to_owned(),
            (Kind::WorkerCount | Kind::BuildText { .. }, text) => text.to_owned(),
            (_, value) => format!("`{value}`"),
        };
        let values = match spec.kind {
            Kind::Switch => "`on`/`off` (or `1`/`0`, `true`/`false`, `yes`/`no`)".to_owned(),
            Kind::Whole { min, max, unit } => format!("{unit}, {min}-{max}"),
            Kind::Seconds { min, max } => format!("seconds, {min}-{max}"),
            Kind::Interval { max } => format!("`0` (off) or whole seconds, 1-{max}"),
            Kind::Choice(words) => {
                let words: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
                words.join(", ")
            }
            Kind::ChoiceOrWhole {
                words,
                min,
                max,
                unit,
            } => {
                let words: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
                format!("{}, or {unit}, {min}-{max}", words.join(", "))
            }
            Kind::WorkerCount => format!("whole number, 1-{MAX_WEB_CONCURRENCY}"),
            Kind::BuildText { values } => values.to_owned(),
        };
        let when: Vec<&str> = spec.when.iter().map(|w| w.label()).collect();
        table.push_str(&format!(
            "| `{}` | {key} | {default} | {values} | {} | {} |\n",
            spec.var,
            when.join(", "),
            spec.doc
        ));
    }
    table
}
