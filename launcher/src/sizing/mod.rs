//! The policy: machine size -> default worker count, and whose `WEB_CONCURRENCY` the app gets.

use crate::text::{shown, worker_count};

/// The largest worker count taken from anyone (user, formula or cap).
pub const MAX_WEB_CONCURRENCY: u32 = 1024;
/// Our `WEB_CONCURRENCY_SET_BY` value, and the buildpack's id.
pub const SET_BY: &str = "launcher";

/// How `launcher run` sizes the worker count (`LAUNCHER_SIZING`): the one place its words are
/// written; the settings table, the CLI help, the log lines and the state file take them here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// The worker count is the computed `WEB_CONCURRENCY`, fixed.
    Static,
    /// Measured after warm-up, then moved one worker at a time to what fits.
    Measured,
    /// Follows the accept queue, within the CPUs and the memory fit.
    Adaptive,
}

impl Sizing {
    /// Each sizing and its word.
    pub const TABLE: [(Sizing, &'static str); 3] = [
        (Sizing::Static, "static"),
        (Sizing::Measured, "measured"),
        (Sizing::Adaptive, "adaptive"),
    ];
    pub const WORDS: [&'static str; 3] = words(&Sizing::TABLE);

    pub fn word(self) -> &'static str {
        let row = Sizing::TABLE.iter().find(|(s, _)| *s == self);
        row.map_or("static", |(_, word)| word)
    }

    pub fn parse(text: &str) -> Option<Sizing> {
        let row = Sizing::TABLE.iter().find(|(_, word)| *word == text);
        row.map(|(sizing, _)| *sizing)
    }
}

impl std::fmt::Display for Sizing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// The words of a table of (value, word), as a constant.
pub const fn words<T: Copy, const N: usize>(table: &[(T, &'static str); N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = table[i].1;
        i += 1;
    }
    out
}

/// The formula's CPU term, `2*cpus + 1`: the most workers the CPUs are taken to keep busy. Measured
/// sizing is capped by it too.
pub fn cpu_cap(cpus: u32) -> u32 {
    cpus.saturating_mul(2).saturating_add(1)
}

/// `max(1, min(2*cpus + 1, memory_mb / web_memory_mb))`, Heroku's classic Python buildpack formula,
/// then the optional `LAUNCHER_MAX_WORKERS` cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formula {
    pub memory_mb: u64,
    pub cpus: u32,
    pub web_memory_mb: u64,
    pub max_workers: Option<u32>,
    pub value: u32,
}

impl Formula {
    pub fn new(memory_mb: u64, cpus: u32, web_memory_mb: u64, max_workers: Option<u32>) -> Self {
        let uncapped = Self::by_memory_of(memory_mb, web_memory_mb)
            .min(Self::by_cpu_of(cpus))
            .max(1);
        let cap = max_workers
            .unwrap_or(MAX_WEB_CONCURRENCY)
            .min(MAX_WEB_CONCURRENCY);
        let value = uncapped.min(u64::from(cap)) as u32;
        Formula {
            memory_mb,
            cpus,
            web_memory_mb,
            max_workers,
            value,
        }
    }

    fn by_memory_of(memory_mb: u64, web_memory_mb: u64) -> u64 {
        memory_mb / web_memory_mb.max(1)
    }

    fn by_cpu_of(cpus: u32) -> u64 {
        u64::from(cpu_cap(cpus))
    }

    /// One sentence: which term decided, with both terms' arithmetic.
    pub fn explain(&self) -> String {
        let by_memory = Self::by_memory_of(self.memory_mb, self.web_memory_mb);
        let by_cpu = Self::by_cpu_of(self.cpus);
        let terms = format!(
            "memory {} MB / {} MB per worker = {by_memory}, CPUs 2*{}+1 = {by_cpu}",
            self.memory_mb, self.web_memory_mb, self.cpus
        );
        let uncapped = by_memory.min(by_cpu).max(1);
        let decided = if u64::from(self.value) < uncapped {
            match self.max_workers {
                Some(cap) if cap == self.value => format!("capped by LAUNCHER_MAX_WORKERS={cap}"),
                _ => format!("capped at the maximum of {MAX_WEB_CONCURRENCY}"),
            }
        } else if by_memory == 0 {
            "at least 1".to_owned()
        } else if by_memory <= by_cpu {
            "memory decides".to_owned()
        } else {
            "CPUs decide".to_owned()
        };
        format!("{terms}: {decided}")
    }
}

/// The `WEB_CONCURRENCY` family as found in the environment when the profile runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Incoming<'a> {
    pub web_concurrency: Option<&'a str>,
    pub set_by: Option<&'a str>,
    pub launcher_value: Option<&'a str>,
    /// Where it can be told (the CNB exec.d program): the `WEB_CONCURRENCY` of the environment the
    /// platform started the process with (a config var), before any buildpack's env files and
    /// exec.d programs ran; `Some(None)` when it had none. `None` where it cannot be told (the
    /// profile, `launcher run`).
    pub platform_value: Option<Option<&'a str>>,
}

/// Whose value the app gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The computed default.
    Ours(u32),
    /// The user's config var, or a value set inline in the Procfile after the profile ran.
    Users(u32),
    /// `LAUNCHER_DISABLE`: the environment is left as it is.
    Disabled {
        current: Option<u32>,
        set_by: Option<String>,
    },
}

impl Outcome {
    /// The value the app will see, if any.
    pub fn web_concurrency(&self) -> Option<u32> {
        match self {
            Outcome::Ours(n) | Outcome::Users(n) => Some(*n),
            Outcome::Disabled { current, .. } => *current,
        }
    }

    /// Who set the value, for log lines: `launcher`, `the user` or another buildpack's id (quoted,
    /// as it is a config var's text). None when there is no value.
    pub fn owner(&self) -> Option<String> {
        self.web_concurrency()?;
        Some(match self.set_by() {
            Some(SET_BY) => SET_BY.to_owned(),
            Some(other) => shown(other),
            None => "the user".to_owned(),
        })
    }

    /// `launcher`, another buildpack's id, or None for the user's.
    pub fn set_by(&self) -> Option<&str> {
        match self {
            Outcome::Ours(_) => Some(SET_BY),
            Outcome::Users(_) => None,
            Outcome::Disabled { set_by, .. } => set_by.as_deref(),
        }
    }
}

/// The decision, with a sentence on why and warnings for values that were replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: String,
    pub warnings: Vec<String>,
    /// The user's value was written over at launch by a buildpack: it must be written back.
    pub restore: bool,
}

/// Applies the precedence rules (docs/architecture.md, "Whose value is it"). `formula` is the computed default.
pub fn decide(incoming: Incoming<'_>, formula: &Formula, disabled: bool) -> Decision {
    let ours = |reason: String, warnings: Vec<String>| Decision {
        outcome: Outcome::Ours(formula.value),
        reason,
        warnings,
        restore: false,
    };
    let set_by = incoming.set_by.filter(|s| !s.is_empty());
    if disabled {
        let current = incoming
            .web_concurrency
            .and_then(|v| worker_count(v, u64::from(MAX_WEB_CONCURRENCY)));
        return Decision {
            outcome: Outcome::Disabled {
                current: current.map(|n| n as u32),
                set_by: current.and(set_by).map(str::to_owned),
            },
            reason: "sizing disabled by LAUNCHER_DISABLE; WEB_CONCURRENCY left as it is".to_owned(),
            warnings: Vec::new(),
            restore: false,
        };
    }
    let Some(value) = incoming.web_concurrency else {
        return ours(formula.explain(), Vec::new());
    };
    if let Some(given) = incoming.platform_value {
        return at_launch(value, given, set_by, incoming.launcher_value, formula);
    }
    match set_by {
        Some(SET_BY) if incoming.launcher_value == Some(value) => {
            return ours(formula.explain(), Vec::new());
        }
        Some(SET_BY) | None => {}
        Some(other) => {
            let reason = format!(
                "replaced WEB_CONCURRENCY={} set by {}; {}",
                shown(value),
                shown(other),
                formula.explain()
            );
            return ours(reason, Vec::new());
        }
    }
    users(value, formula, false)
}

/// The rules where the platform's own value is known (docs/architecture.md, "Whose value is it"):
/// a value the platform gave is the user's, whoever wrote over it since; any other was set at
/// launch by a buildpack, marked or not, and is replaced, but for our own.
fn at_launch(
    value: &str,
    given: Option<&str>,
    set_by: Option<&str>,
    launcher_value: Option<&str>,
    formula: &Formula,
) -> Decision {
    if let Some(given) = given {
        return users(given, formula, given != value || set_by.is_some());
    }
    let ours = |reason: String| Decision {
        outcome: Outcome::Ours(formula.value),
        reason,
        warnings: Vec::new(),
        restore: false,
    };
    match set_by {
        Some(SET_BY) if launcher_value == Some(value) => ours(formula.explain()),
        Some(other) if other != SET_BY => ours(format!(
            "replaced WEB_CONCURRENCY={} set by {}; {}",
            shown(value),
            shown(other),
            formula.explain()
        )),
        _ => ours(format!(
            "replaced WEB_CONCURRENCY={} set at launch by a buildpack (no config var, no \
             WEB_CONCURRENCY_SET_BY); {}",
            shown(value),
            formula.explain()
        )),
    }
}

/// The user's `value`: kept if it is a whole number from 1 to 1024 (written back if `restore`),
/// else replaced by the computed one with a warning.
fn users(value: &str, formula: &Formula, restore: bool) -> Decision {
    match worker_count(value, u64::from(MAX_WEB_CONCURRENCY)) {
        Some(n) => Decision {
            outcome: Outcome::Users(n as u32),
            reason: format!("the launcher's default here would be {}", formula.value),
            warnings: Vec::new(),
            restore,
        },
        None => {
            let warning = format!(
                "WEB_CONCURRENCY={} is not a whole number from 1 to {MAX_WEB_CONCURRENCY}; using {}",
                shown(value),
                formula.value
            );
            Decision {
                outcome: Outcome::Ours(formula.value),
                reason: formula.explain(),
                warnings: vec![warning],
                restore: false,
            }
        }
    }
}

#[cfg(test)]
mod tests;
