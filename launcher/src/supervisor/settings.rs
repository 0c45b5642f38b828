//! `launcher run`'s settings, typed, from the one reader (`crate::settings`), with the one rule of
//! its own: on Heroku the graceful timeout must end before the platform's SIGKILL.

use std::time::Duration;

use crate::servers::ModeChoice;
use crate::settings::{self as table, Settings, Source};
use crate::sizing::Sizing;
use crate::supervisor::adaptive::LOCK_BOUND_CPU_MAX;

/// Heroku sends SIGKILL 30 s after SIGTERM; the launcher must be done before that: the graceful
/// timeout, then at most `pool::STUCK_WAIT` (2 s) for what the final SIGKILL cannot end at once.
pub const HEROKU_MAX_GRACEFUL: Duration = Duration::from_secs(27);

/// Adaptive sizing's thresholds (docs/architecture.md, "Adaptive sizing").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveSettings {
    pub grow_window: Duration,
    /// A share, 0.01 to 1.
    pub grow_share: f64,
    /// A share of the dyno's CPUs, 0.1 to 1.
    pub cpu_max: f64,
    /// The bound for threaded workers bound by their interpreter lock: the CPUs saturated, or
    /// `cpu_max` when the user set it.
    pub lock_bound_cpu_max: f64,
    pub shrink_after: Duration,
    pub step: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// `Auto`: chosen from the command.
    pub mode: ModeChoice,
    pub graceful_timeout: Duration,
    pub ready_grace: Duration,
    pub ready_timeout: Duration,
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
    /// How often the accept queue is read.
    pub queue_read_interval: Duration,
    pub adaptive: AdaptiveSettings,
    /// Changes made here (the Heroku cap), for the `config` lines.
    pub warnings: Vec<String>,
}

impl RunSettings {
    pub fn new(settings: &Settings, on_heroku: bool) -> RunSettings {
        let mut warnings = Vec::new();
        let mut graceful_timeout = settings.seconds(&table::GRACEFUL_TIMEOUT);
        if on_heroku && graceful_timeout > HEROKU_MAX_GRACEFUL {
            warnings.push(format!(
                "a graceful timeout of {} s does not fit Heroku's 30 s before SIGKILL; using {} s",
                graceful_timeout.as_secs_f64(),
                HEROKU_MAX_GRACEFUL.as_secs()
            ));
            graceful_timeout = HEROKU_MAX_GRACEFUL;
        }
        let sample_interval = settings.seconds(&table::SAMPLE_INTERVAL);
        let cpu_max = percent(settings.number(&table::ADAPTIVE_CPU_MAX));
        // A valid config var or launcher.toml entry; an invalid one falls back to the next.
        let cpu_max_set = settings
            .entry(&table::ADAPTIVE_CPU_MAX)
            .is_some_and(|e| e.source != Source::Default);
        RunSettings {
            mode: settings.mode(),
            graceful_timeout,
            ready_grace: settings.seconds(&table::READY_GRACE),
            ready_timeout: settings.seconds(&table::READY_TIMEOUT),
            give_up_after: settings.seconds(&table::GIVE_UP_AFTER),
            sample_interval: Some(sample_interval).filter(|d| !d.is_zero()),
            memory_guard: settings.switch(&table::MEMORY_GUARD),
            soft_limit_percent: settings.number(&table::MEMORY_SOFT_LIMIT),
            worker_memory_max_mb: settings.whole(&table::WORKER_MEMORY_MAX),
            memory_cooldown: settings.seconds(&table::MEMORY_COOLDOWN),
            sizing: settings.sizing(),
            sizing_warmup: settings.seconds(&table::SIZING_WARMUP),
            queue_read_interval: Duration::from_millis(
                settings.number(&table::QUEUE_READ_INTERVAL),
            ),
            adaptive: AdaptiveSettings {
                grow_window: settings.seconds(&table::ADAPTIVE_GROW_WINDOW),
                grow_share: percent(settings.number(&table::ADAPTIVE_GROW_SHARE)),
                cpu_max,
                lock_bound_cpu_max: match cpu_max_set {
                    true => cpu_max,
                    false => LOCK_BOUND_CPU_MAX,
                },
                shrink_after: settings.seconds(&table::ADAPTIVE_SHRINK_AFTER),
                step: settings.seconds(&table::ADAPTIVE_STEP),
            },
            warnings,
        }
    }
}

fn percent(value: u64) -> f64 {
    value as f64 / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Env;

    fn run_settings(pairs: &[(&str, &str)], on_heroku: bool) -> RunSettings {
        let env = Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        RunSettings::new(&Settings::load(&env, None), on_heroku)
    }

    #[test]
    fn heroku_caps_the_graceful_timeout_under_30_s() {
        let vars = [("LAUNCHER_GRACEFUL_TIMEOUT", "60")];
        let settings = run_settings(&vars, true);
        assert_eq!(settings.graceful_timeout, HEROKU_MAX_GRACEFUL);
        assert_eq!(settings.warnings.len(), 1);
        let elsewhere = run_settings(&vars, false);
        assert_eq!(elsewhere.graceful_timeout, Duration::from_secs(60));
        assert!(elsewhere.warnings.is_empty());
    }

    #[test]
    fn on_heroku_the_whole_shutdown_ends_before_the_platforms_sigkill() {
        let longest = HEROKU_MAX_GRACEFUL + crate::supervisor::pool::STUCK_WAIT;
        assert!(longest < Duration::from_secs(30), "{longest:?}");
    }

    #[test]
    fn typed_values() {
        let settings = run_settings(
            &[
                ("LAUNCHER_SAMPLE_INTERVAL", "0"),
                ("LAUNCHER_MODE", "delegate"),
                ("LAUNCHER_SIZING", "measured"),
            ],
            false,
        );
        assert_eq!(settings.sample_interval, None, "0 turns samples off");
        assert_eq!(
            settings.mode,
            ModeChoice::Fixed(crate::servers::Mode::Delegate)
        );
        assert_eq!(settings.sizing, Sizing::Measured);
        let defaults = run_settings(&[], false);
        assert_eq!(defaults.mode, ModeChoice::Auto, "chosen from the command");
        assert_eq!(defaults.sample_interval, Some(Duration::from_secs(20)));
        assert_eq!(defaults.soft_limit_percent, 85);
        assert_eq!(defaults.sizing, Sizing::Static);
        assert_eq!(defaults.queue_read_interval, Duration::from_millis(100));
        let adaptive = defaults.adaptive;
        assert_eq!(adaptive.grow_window, Duration::from_secs(10));
        assert_eq!((adaptive.grow_share, adaptive.cpu_max), (0.5, 0.8));
        assert_eq!(adaptive.lock_bound_cpu_max, 0.95, "the CPUs saturated");
        assert_eq!(adaptive.shrink_after, Duration::from_secs(60));
        assert_eq!(adaptive.step, Duration::from_secs(2));
        let chosen = run_settings(&[("LAUNCHER_SIZING", "adaptive")], false);
        assert_eq!(chosen.sizing, Sizing::Adaptive);
        // A CPU bound the user set holds for lock-bound threaded workers too.
        let lower = run_settings(&[("LAUNCHER_ADAPTIVE_CPU_MAX", "60")], false).adaptive;
        assert_eq!((lower.cpu_max, lower.lock_bound_cpu_max), (0.6, 0.6));
        let higher = run_settings(&[("LAUNCHER_ADAPTIVE_CPU_MAX", "99")], false).adaptive;
        assert_eq!((higher.cpu_max, higher.lock_bound_cpu_max), (0.99, 0.99));
        let invalid = run_settings(&[("LAUNCHER_ADAPTIVE_CPU_MAX", "lots")], false).adaptive;
        assert_eq!((invalid.cpu_max, invalid.lock_bound_cpu_max), (0.8, 0.95));
    }

    /// An invalid config var falls back to launcher.toml's value, which is the user's setting.
    #[test]
    fn a_cpu_bound_from_launcher_toml_under_an_invalid_config_var_is_the_users() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let file = dir.path().join(crate::settings::FILE_NAME);
        std::fs::write(file, "adaptive_cpu_max = 60\n").expect("write");
        let env = Env::from_pairs([("LAUNCHER_ADAPTIVE_CPU_MAX".to_owned(), "lots".to_owned())]);
        let settings = Settings::load(&env, Some(dir.path()));
        let adaptive = RunSettings::new(&settings, false).adaptive;
        assert_eq!((adaptive.cpu_max, adaptive.lock_bound_cpu_max), (0.6, 0.6));
    }
}
