//! Settings from config vars and `launcher.toml`: defaults, precedence, bad values.

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
    assert!(settings.memory_guard);
    assert_eq!(settings.soft_limit_percent, 85);
    assert_eq!(settings.worker_memory_max_mb, None);
    assert_eq!(settings.memory_cooldown, Duration::from_secs(3));
    assert_eq!(settings.sizing, Sizing::Static);
    assert_eq!(settings.sizing_warmup, Duration::from_secs(30));
    assert!(settings.warnings.is_empty());
}

#[test]
fn memory_settings_from_config_vars_and_the_file() {
    let dir = with_file(
        "memory_guard = false\nmemory_soft_limit = 70\nworker_memory_max = 300\n\
         memory_cooldown = 10\nsizing = \"measured\"\nsizing_warmup = 5\n",
    );
    let from_file = load(&Env::default(), Some(dir.path()), false).expect("settings");
    assert!(!from_file.memory_guard);
    assert_eq!(from_file.soft_limit_percent, 70);
    assert_eq!(from_file.worker_memory_max_mb, Some(300));
    assert_eq!(from_file.memory_cooldown, Duration::from_secs(10));
    assert_eq!(from_file.sizing, Sizing::Measured);
    assert_eq!(from_file.sizing_warmup, Duration::from_secs(5));
    assert!(from_file.warnings.is_empty(), "{:?}", from_file.warnings);
    let vars = env(&[
        ("LAUNCHER_MEMORY_GUARD", "on"),
        ("LAUNCHER_MEMORY_SOFT_LIMIT", "90"),
        ("LAUNCHER_WORKER_MEMORY_MAX", "200"),
        ("LAUNCHER_SIZING", "static"),
    ]);
    let overridden = load(&vars, Some(dir.path()), false).expect("settings");
    assert!(overridden.memory_guard);
    assert_eq!(overridden.soft_limit_percent, 90);
    assert_eq!(overridden.worker_memory_max_mb, Some(200));
    assert_eq!(overridden.sizing, Sizing::Static);
    assert_eq!(overridden.sizing_warmup, Duration::from_secs(5));
}

#[test]
fn bad_memory_config_vars_fall_back_with_a_warning() {
    let vars = env(&[
        ("LAUNCHER_MEMORY_GUARD", "maybe"),
        ("LAUNCHER_MEMORY_SOFT_LIMIT", "40"),
        ("LAUNCHER_WORKER_MEMORY_MAX", "300MB"),
        ("LAUNCHER_MEMORY_COOLDOWN", "-3"),
        ("LAUNCHER_SIZING", "Measured"),
        ("LAUNCHER_SIZING_WARMUP", "0"),
    ]);
    let settings = load(&vars, None, false).expect("settings");
    assert!(settings.memory_guard, "a bad switch leaves the guard on");
    assert_eq!(settings.soft_limit_percent, 85);
    assert_eq!(settings.worker_memory_max_mb, None);
    assert_eq!(settings.sizing, Sizing::Static);
    assert_eq!(settings.warnings.len(), 6, "{:?}", settings.warnings);
    assert_eq!(
        settings.warnings[1],
        "LAUNCHER_MEMORY_SOFT_LIMIT=\"40\" is not a whole number from 50 to 100; using 85"
    );
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
