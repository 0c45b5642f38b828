//! The table and the reader: defaults, precedence, bad values under both policies, and the
//! table of docs/settings.md against this one.

use std::time::Duration;

use super::*;
use crate::env::Env;

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn with_file(text: &str) -> tempfile::TempDir {
    let dir = tempfile::TempDir::new().expect("temp dir");
    std::fs::write(dir.path().join(FILE_NAME), text).expect("write");
    dir
}

fn load(pairs: &[(&str, &str)], file: Option<&str>) -> Settings {
    let dir = file.map(with_file);
    Settings::load(&env(pairs), dir.as_ref().map(|d| d.path()))
}

#[test]
fn every_default_is_a_value_of_its_own_kind() {
    for spec in ALL.iter().filter(|s| s.is_read()) {
        let settings = load(&[], None);
        let entry = settings.entry(spec).expect("read");
        assert_eq!(entry.source, Source::Default, "{}", spec.var);
        let text = entry.value.text();
        let shown = if spec.default.is_empty() {
            "none"
        } else {
            spec.default
        };
        assert_eq!(text, shown, "{}: the default must parse", spec.var);
    }
    assert!(load(&[], None).warnings().is_empty());
}

#[test]
fn the_defaults_by_type() {
    let s = load(&[], None);
    assert_eq!(s.whole(&WEB_MEMORY), Some(256));
    assert_eq!(s.whole(&MAX_WORKERS), None);
    assert!(!s.switch(&DISABLE));
    assert_eq!(s.choice(&MODE), "auto");
    assert_eq!(s.seconds(&GRACEFUL_TIMEOUT), Duration::from_secs(25));
    assert_eq!(s.seconds(&READY_GRACE), Duration::from_secs(1));
    assert_eq!(s.seconds(&GIVE_UP_AFTER), Duration::from_secs(60));
    assert_eq!(s.seconds(&SAMPLE_INTERVAL), Duration::from_secs(20));
    assert!(s.switch(&MEMORY_GUARD));
    assert_eq!(s.whole(&MEMORY_SOFT_LIMIT), Some(85));
    assert_eq!(s.whole(&WORKER_MEMORY_MAX), None);
    assert_eq!(s.seconds(&MEMORY_COOLDOWN), Duration::from_secs(3));
    assert_eq!(s.choice(&SIZING), "static");
    assert_eq!(s.seconds(&SIZING_WARMUP), Duration::from_secs(30));
}

#[test]
fn keys_are_the_config_var_without_launcher_in_lower_case() {
    for spec in ALL {
        let derived = spec
            .var
            .strip_prefix("LAUNCHER_")
            .filter(|_| spec.is_read())
            .map(str::to_ascii_lowercase);
        assert_eq!(spec.key.map(str::to_owned), derived, "{}", spec.var);
    }
}

#[test]
fn every_key_is_taken_from_the_file_by_every_command() {
    // A file holding every key at its default, written as TOML: no problem, whatever reads it.
    let mut file = String::new();
    let overridden = ["max_workers", "worker_memory_max", "sizing_warmup"];
    let keys = ALL
        .iter()
        .filter(|s| s.key.is_some_and(|k| !overridden.contains(&k)));
    for spec in keys {
        let value = match spec.kind {
            Kind::Choice(_) | Kind::ChoiceOrWhole { .. } => format!("{:?}", spec.default),
            Kind::Switch => (spec.default == "on").to_string(),
            _ => spec.default.to_owned(),
        };
        file.push_str(&format!("{} = {value}\n", spec.key.expect("key")));
    }
    file.push_str("max_workers = 4\nworker_memory_max = 300\nsizing_warmup = 5\n");
    let settings = load(&[], Some(&file));
    assert!(settings.warnings().is_empty(), "{:?}", settings.warnings());
    assert_eq!(settings.refusal(), None);
    assert_eq!(
        settings.entry(&SIZING_WARMUP).expect("read").source,
        Source::File
    );
    assert_eq!(settings.seconds(&SIZING_WARMUP), Duration::from_secs(5));
}

#[test]
fn config_vars_win_over_the_file_and_each_value_keeps_its_source() {
    let file = "disable = true\nmax_workers = 4\nmode = \"delegate\"\nready_grace = 0.5\n\
                memory_guard = false\nsizing = \"measured\"\n";
    let from_file = load(&[], Some(file));
    assert!(from_file.switch(&DISABLE));
    assert_eq!(from_file.whole(&MAX_WORKERS), Some(4));
    assert_eq!(from_file.choice(&MODE), "delegate");
    assert_eq!(from_file.seconds(&READY_GRACE), Duration::from_millis(500));
    assert!(!from_file.switch(&MEMORY_GUARD));
    assert_eq!(from_file.entry(&MODE).expect("mode").source, Source::File);
    let vars = [
        ("LAUNCHER_DISABLE", "0"),
        ("LAUNCHER_MAX_WORKERS", "8"),
        ("LAUNCHER_MODE", "fanout"),
        ("LAUNCHER_MEMORY_GUARD", "on"),
    ];
    let overridden = load(&vars, Some(file));
    assert!(!overridden.switch(&DISABLE));
    assert_eq!(overridden.whole(&MAX_WORKERS), Some(8));
    assert_eq!(overridden.choice(&MODE), "fanout");
    assert!(overridden.switch(&MEMORY_GUARD));
    assert_eq!(
        overridden.entry(&MODE).expect("mode").source,
        Source::ConfigVar
    );
    assert_eq!(
        overridden.entry(&SIZING).expect("sizing").source,
        Source::File
    );
    assert_eq!(
        overridden.entry(&GRACEFUL_TIMEOUT).expect("timeout").source,
        Source::Default
    );
}

#[test]
fn a_bad_config_var_is_warned_about_and_the_next_source_used() {
    let bad = [
        ("WEB_MEMORY", "512MB"),
        ("LAUNCHER_MODE", "turbo"),
        ("LAUNCHER_GRACEFUL_TIMEOUT", "-1"),
        ("LAUNCHER_READY_GRACE", "1e3"),
        ("LAUNCHER_GIVE_UP_AFTER", "0"),
        ("LAUNCHER_SAMPLE_INTERVAL", "20s"),
        ("LAUNCHER_MEMORY_GUARD", "maybe"),
        ("LAUNCHER_MEMORY_SOFT_LIMIT", "40"),
        ("LAUNCHER_MAX_WORKERS", "0"),
        ("LAUNCHER_SIZING", "Measured"),
    ];
    let settings = load(&bad, Some("graceful_timeout = 10\n"));
    assert_eq!(settings.whole(&WEB_MEMORY), Some(256));
    assert!(settings.was_replaced(&WEB_MEMORY));
    assert_eq!(settings.choice(&MODE), "auto");
    assert_eq!(settings.seconds(&GRACEFUL_TIMEOUT), Duration::from_secs(10));
    assert!(
        settings.switch(&MEMORY_GUARD),
        "a bad switch leaves the guard on"
    );
    assert_eq!(settings.whole(&MAX_WORKERS), None);
    let warnings = settings.warnings();
    assert_eq!(warnings.len(), bad.len(), "{warnings:?}");
    assert_eq!(settings.refusal(), None, "config vars never stop a dyno");
    assert!(warnings.contains(
        &"WEB_MEMORY=\"512MB\" is not a whole number from 1 to 1048576; using the default, 256"
            .to_owned()
    ));
    assert!(warnings.contains(
        &"LAUNCHER_GRACEFUL_TIMEOUT=\"-1\" is not a number of seconds from 1 to 3600; using 10 from launcher.toml"
            .to_owned()
    ));
    assert!(warnings.contains(
        &"LAUNCHER_MAX_WORKERS=\"0\" is not a whole number from 1 to 1024; using the default, none"
            .to_owned()
    ));
}

#[test]
fn a_bad_file_is_ignored_at_boot_and_refused_by_launcher_run() {
    for (text, named) in [
        ("mode = [", "is not valid TOML"),
        (
            "mode = \"turbo\"",
            "mode must be one of auto, fanout, delegate, not \"turbo\"",
        ),
        (
            "graceful_timeout = \"25s\"",
            "graceful_timeout must be a number of seconds",
        ),
        ("ready_grace = -1", "ready_grace must be"),
        ("sample_interval = 1e9", "sample_interval must be"),
        (
            "memory_soft_limit = 101",
            "memory_soft_limit must be a whole number from 50 to 100",
        ),
        ("disable = \"yes please\"", "disable must be on or off"),
        ("colour = 1", "unknown setting \"colour\""),
        ("web_memory = 512", "\"web_memory\" is a config var only"),
        ("binary_url = \"x\"", "set LAUNCHER_BINARY_URL instead"),
    ] {
        let settings = load(&[], Some(text));
        let warnings = settings.warnings();
        assert_eq!(warnings.len(), 1, "{text}: {warnings:?}");
        assert!(warnings[0].starts_with("launcher.toml"), "{}", warnings[0]);
        assert!(warnings[0].contains(named), "{text}: {}", warnings[0]);
        assert!(
            warnings[0].ends_with("ignored") || warnings[0].contains("; using the default"),
            "{}",
            warnings[0]
        );
        let refusal = settings.refusal().expect(text);
        assert!(refusal.contains(named), "{refusal}");
        assert!(refusal.ends_with("; refusing to start"), "{refusal}");
        assert!(!refusal.contains("ignored"), "{refusal}");
        let build = settings.build_log_warnings();
        assert!(
            build[0].contains("`launcher run` refuses to start"),
            "{build:?}"
        );
    }
    let two = load(&[], Some("colour = 1\nsizing = \"fast\"\n"));
    let refusal = two.refusal().expect("refused");
    assert!(
        refusal.contains("colour") && refusal.contains("sizing must be"),
        "one line names both: {refusal}"
    );
}

#[test]
fn intervals_are_off_or_whole_seconds_and_durations_have_sane_minimums() {
    let off = load(&[("LAUNCHER_SAMPLE_INTERVAL", "0")], None);
    assert_eq!(off.seconds(&SAMPLE_INTERVAL), Duration::ZERO);
    assert!(off.warnings().is_empty());
    for bad in ["0.0001", "0.5", "1.5", "86401", "00"] {
        let settings = load(&[("LAUNCHER_SAMPLE_INTERVAL", bad)], None);
        assert_eq!(
            settings.seconds(&SAMPLE_INTERVAL),
            Duration::from_secs(20),
            "{bad}"
        );
        assert_eq!(settings.warnings().len(), 1, "{bad}");
    }
    let file = load(&[], Some("sample_interval = 0.5\n"));
    assert!(file.refusal().expect("refused").contains("sample_interval"));
    for (var, tiny) in [
        ("LAUNCHER_GRACEFUL_TIMEOUT", "0"),
        ("LAUNCHER_READY_GRACE", "0.01"),
        ("LAUNCHER_MEMORY_COOLDOWN", "0.1"),
    ] {
        let settings = load(&[(var, tiny)], None);
        assert_eq!(
            settings.warnings().len(),
            1,
            "{var}={tiny} is below its minimum"
        );
    }
}

#[test]
fn an_empty_config_var_is_unset() {
    let settings = load(&[("LAUNCHER_MODE", ""), ("WEB_MEMORY", "")], None);
    assert!(settings.warnings().is_empty(), "{:?}", settings.warnings());
    assert_eq!(settings.entry(&MODE).expect("mode").source, Source::Default);
}

#[test]
fn the_settings_table_of_the_docs_is_this_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/settings.md");
    let docs = std::fs::read_to_string(path).expect("docs/settings.md");
    let table = super::spec::markdown();
    let header = table.lines().next().expect("header");
    let Some(start) = docs.find(header) else {
        panic!("docs/settings.md has no settings table; it should be:\n{table}");
    };
    let in_docs: Vec<&str> = docs[start..]
        .lines()
        .take_while(|l| l.starts_with('|'))
        .collect();
    let in_code: Vec<&str> = table.lines().collect();
    for (docs_row, code_row) in in_docs.iter().zip(&in_code) {
        assert_eq!(
            docs_row, code_row,
            "docs/settings.md's settings table differs from launcher/src/settings/table.rs:\n{table}"
        );
    }
    assert_eq!(
        in_docs.len(),
        in_code.len(),
        "docs/settings.md's settings table has {} rows, the code's {}:\n{table}",
        in_docs.len(),
        in_code.len()
    );
}

#[test]
fn the_mode_and_max_workers_texts_say_what_the_code_does() {
    use crate::servers::{Mode, TABLE};
    let delegated: Vec<&str> = TABLE
        .iter()
        .filter(|b| b.mode == Mode::Delegate)
        .map(|b| b.name)
        .collect();
    let named = match delegated.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => panic!("auto delegates to no server"),
    };
    let said = format!("`auto` delegates to {named}, fan-out otherwise");
    assert!(MODE.doc.contains(&said), "{said:?} not in {:?}", MODE.doc);
    assert!(
        MAX_WORKERS.doc.contains("measured and adaptive sizing"),
        "it caps adaptive sizing's growth too: {:?}",
        MAX_WORKERS.doc
    );
}

#[test]
fn a_config_var_name_in_the_file_is_told_the_key_to_write() {
    for (text, warning) in [
        (
            "launcher_max_workers = 8",
            "launcher.toml: unknown setting \"launcher_max_workers\" (write max_workers, the key \
             for LAUNCHER_MAX_WORKERS); ignored",
        ),
        (
            "MODE = \"fanout\"",
            "launcher.toml: unknown setting \"MODE\" (write mode, the key for LAUNCHER_MODE); \
             ignored",
        ),
        (
            "LAUNCHER_SIZING = \"measured\"",
            "launcher.toml: unknown setting \"LAUNCHER_SIZING\" (write sizing, the key for \
             LAUNCHER_SIZING); ignored",
        ),
        (
            "web_memory = 512",
            "launcher.toml: \"web_memory\" is a config var only, not a launcher.toml setting (set \
             WEB_MEMORY instead); ignored",
        ),
        (
            "LAUNCHER_BINARY_URL = \"x\"",
            "launcher.toml: \"LAUNCHER_BINARY_URL\" is a config var only, not a launcher.toml \
             setting (set LAUNCHER_BINARY_URL instead); ignored",
        ),
        (
            "colour = 1",
            "launcher.toml: unknown setting \"colour\"; ignored",
        ),
    ] {
        assert_eq!(load(&[], Some(text)).warnings(), [warning], "{text}");
    }
}

#[test]
fn every_build_log_warning_is_a_sentence() {
    let refuses = "`launcher run` refuses to start on this";
    let build_log = |vars: &[(&str, &str)], file: &str| load(vars, Some(file)).build_log_warnings();
    let bad_mode = "launcher.toml: mode must be one of auto, fanout, delegate, not \"turbo\"";
    assert_eq!(
        build_log(&[], "colour = 1\n"),
        [format!(
            "launcher.toml: unknown setting \"colour\": {refuses}; at boot it is ignored"
        )]
    );
    assert_eq!(
        build_log(&[], "mode = \"turbo\"\n"),
        [format!(
            "{bad_mode}: {refuses}; at boot the default, auto, is used"
        )]
    );
    assert_eq!(
        build_log(&[], "max_workers = 0\n"),
        [format!(
            "launcher.toml: max_workers must be a whole number from 1 to 1024, not 0: {refuses}; \
             at boot the default, none, is used"
        )]
    );
    assert_eq!(
        build_log(&[("LAUNCHER_MODE", "fanout")], "mode = \"turbo\"\n"),
        [format!(
            "{bad_mode}: {refuses}; at boot the LAUNCHER_MODE config var wins"
        )]
    );
    // A config var's problem reads as it does at boot.
    let bad_var = "LAUNCHER_MODE=\"turbo\" is not one of auto, fanout, delegate";
    assert_eq!(
        build_log(&[("LAUNCHER_MODE", "turbo")], "mode = \"fanout\"\n"),
        [format!("{bad_var}; using fanout from launcher.toml")]
    );
    assert_eq!(
        build_log(&[("LAUNCHER_MODE", "turbo")], "mode = \"turbo\"\n"),
        [
            format!("{bad_var}; using the default, auto"),
            format!("{bad_mode}: {refuses}; at boot the default, auto, is used"),
        ]
    );
    // The file as a whole: unreadable, or not TOML.
    let dir = tempfile::TempDir::new().expect("temp dir");
    std::fs::create_dir(dir.path().join(FILE_NAME)).expect("mkdir");
    let unreadable = Settings::load(&env(&[]), Some(dir.path()));
    assert_eq!(
        unreadable.build_log_warnings(),
        [format!(
            "cannot read launcher.toml: not a regular file (a directory): {refuses}; at boot the \
             file is ignored"
        )]
    );
    let not_toml = load(&[], Some("mode = [\n")).build_log_warnings();
    assert_eq!(not_toml.len(), 1, "{not_toml:?}");
    assert!(
        not_toml[0].starts_with("launcher.toml is not valid TOML (")
            && not_toml[0].ends_with(&format!("): {refuses}; at boot the file is ignored")),
        "{not_toml:?}"
    );
}

#[test]
fn file_values_are_shown_as_written() {
    for (text, written) in [
        ("max_workers = 4.0", "not 4.0;"),
        ("sample_interval = 1e9", "not 1e9;"),
        ("memory_soft_limit = 0x65", "not 0x65;"),
        ("max_workers = +0", "not +0;"),
        ("mode = \"turbo\"", "not \"turbo\";"),
    ] {
        let warnings = load(&[], Some(text)).warnings();
        assert_eq!(warnings.len(), 1, "{text}: {warnings:?}");
        assert!(warnings[0].contains(written), "{text}: {}", warnings[0]);
    }
}
