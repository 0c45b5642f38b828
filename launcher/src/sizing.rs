//! The policy: machine size -> default worker count, and whose `WEB_CONCURRENCY` the app gets.

use crate::text::{shown, worker_count};

/// The largest worker count taken from anyone (user, formula or cap).
pub const MAX_WEB_CONCURRENCY: u32 = 1024;
/// Our `WEB_CONCURRENCY_SET_BY` value, and the buildpack's id.
pub const SET_BY: &str = "launcher";

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
}

/// Applies the precedence rules (docs/architecture.md, "Whose value is it"). `formula` is the computed default.
pub fn decide(incoming: Incoming<'_>, formula: &Formula, disabled: bool) -> Decision {
    let ours = |reason: String, warnings: Vec<String>| Decision {
        outcome: Outcome::Ours(formula.value),
        reason,
        warnings,
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
        };
    }
    let Some(value) = incoming.web_concurrency else {
        return ours(formula.explain(), Vec::new());
    };
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
    match worker_count(value, u64::from(MAX_WEB_CONCURRENCY)) {
        Some(n) => Decision {
            outcome: Outcome::Users(n as u32),
            reason: format!("the launcher's default here would be {}", formula.value),
            warnings: Vec::new(),
        },
        None => {
            let warning = format!(
                "WEB_CONCURRENCY={} is not a whole number from 1 to {MAX_WEB_CONCURRENCY}; using {}",
                shown(value),
                formula.value
            );
            ours(formula.explain(), vec![warning])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynos::DYNOS;

    fn formula() -> Formula {
        Formula::new(512, 8, 256, None)
    }

    #[test]
    fn the_seven_heroku_dynos() {
        for dyno in DYNOS {
            let f = Formula::new(dyno.memory_mb, dyno.cpus, 256, None);
            assert_eq!(f.value, dyno.web_concurrency, "{}", dyno.name);
        }
    }

    #[test]
    fn at_least_one_worker_and_at_most_the_cap() {
        assert_eq!(Formula::new(100, 8, 256, None).value, 1);
        assert!(Formula::new(100, 8, 256, None)
            .explain()
            .ends_with("at least 1"));
        assert_eq!(
            Formula::new(1 << 20, 1024, 1, None).value,
            MAX_WEB_CONCURRENCY
        );
        let capped = Formula::new(14336, 8, 256, Some(6));
        assert_eq!(capped.value, 6);
        assert!(
            capped
                .explain()
                .ends_with("capped by LAUNCHER_MAX_WORKERS=6"),
            "{}",
            capped.explain()
        );
        assert_eq!(
            Formula::new(512, 8, 256, Some(6)).value,
            2,
            "a cap above the default changes nothing"
        );
    }

    #[test]
    fn explain_names_the_deciding_term() {
        assert_eq!(
            formula().explain(),
            "memory 512 MB / 256 MB per worker = 2, CPUs 2*8+1 = 17: memory decides"
        );
        assert!(Formula::new(2560, 2, 256, None)
            .explain()
            .ends_with("CPUs decide"));
    }

    #[test]
    fn unset_means_ours() {
        let d = decide(Incoming::default(), &formula(), false);
        assert_eq!(d.outcome, Outcome::Ours(2));
        assert_eq!(d.outcome.set_by(), Some("launcher"));
    }

    #[test]
    fn our_own_earlier_value_is_recomputed() {
        let incoming = Incoming {
            web_concurrency: Some("4"),
            set_by: Some("launcher"),
            launcher_value: Some("4"),
        };
        assert_eq!(
            decide(incoming, &formula(), false).outcome,
            Outcome::Ours(2)
        );
    }

    #[test]
    fn another_buildpacks_value_is_recomputed() {
        let incoming = Incoming {
            web_concurrency: Some("99"),
            set_by: Some("heroku/python"),
            launcher_value: None,
        };
        let d = decide(incoming, &formula(), false);
        assert_eq!(d.outcome, Outcome::Ours(2));
        assert!(d
            .reason
            .starts_with("replaced WEB_CONCURRENCY=\"99\" set by \"heroku/python\""));
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn a_config_var_wins() {
        let incoming = Incoming {
            web_concurrency: Some("3"),
            ..Incoming::default()
        };
        let d = decide(incoming, &formula(), false);
        assert_eq!(d.outcome, Outcome::Users(3));
        assert_eq!(d.outcome.set_by(), None);
    }

    #[test]
    fn a_value_set_inline_after_the_profile_wins() {
        let incoming = Incoming {
            web_concurrency: Some("3"),
            set_by: Some("launcher"),
            launcher_value: Some("2"),
        };
        assert_eq!(
            decide(incoming, &formula(), false).outcome,
            Outcome::Users(3)
        );
    }

    #[test]
    fn invalid_user_values_are_replaced_with_one_warning() {
        for bad in ["", "abc", "0", "-2", "1e3", "04", "1025", &"9".repeat(30)] {
            let incoming = Incoming {
                web_concurrency: Some(bad),
                ..Incoming::default()
            };
            let d = decide(incoming, &formula(), false);
            assert_eq!(d.outcome, Outcome::Ours(2), "{bad:?}");
            assert_eq!(d.warnings.len(), 1, "{bad:?}");
            assert!(d.warnings[0].ends_with("is not a whole number from 1 to 1024; using 2"));
        }
    }

    #[test]
    fn disabled_leaves_everything_as_it_is() {
        let incoming = Incoming {
            web_concurrency: Some("99"),
            set_by: Some("heroku/python"),
            launcher_value: None,
        };
        let d = decide(incoming, &formula(), true);
        assert_eq!(
            d.outcome,
            Outcome::Disabled {
                current: Some(99),
                set_by: Some("heroku/python".to_owned())
            }
        );
        assert_eq!(
            decide(Incoming::default(), &formula(), true)
                .outcome
                .web_concurrency(),
            None
        );
    }
}
