//! `launcher build-report`: the sizing step of the build log, in Heroku's build-log style.
//! Details go to stdout as 7-space-indented lines, warnings to stderr behind ` !     `.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::dynos::DYNOS;
use crate::env::Env;
use crate::pinning;
use crate::report::web_memory_source;
use crate::settings::{self, Settings};
use crate::sizing::{self, Formula, Incoming, Outcome};
use crate::text::shown;

const DETAIL: &str = "       ";
const WARNING: &str = " !     ";

/// The build log's detail lines and warnings for an app and its config vars.
pub fn lines(app_dir: &Path, env: &Env) -> (Vec<String>, Vec<String>) {
    let settings = Settings::load(env, Some(app_dir));
    let mut details = Vec::new();
    // What would stop `launcher run` at boot is better seen at `git push`.
    let mut warnings = settings.build_log_warnings();
    let web_memory_mb = settings.number(&settings::WEB_MEMORY);
    let max_workers = settings.whole(&settings::MAX_WORKERS).map(|n| n as u32);
    if settings.switch(&settings::DISABLE) {
        details.push(
            "LAUNCHER_DISABLE is set: the launcher is installed, WEB_CONCURRENCY is left alone"
                .to_owned(),
        );
        return (details, warnings);
    }
    details.push(format!(
        "WEB_CONCURRENCY by dyno size at {web_memory_mb} MB per worker ({}):",
        web_memory_source(&settings)
    ));
    let incoming = Incoming {
        web_concurrency: env.get("WEB_CONCURRENCY"),
        ..Incoming::default()
    };
    for dyno in &DYNOS {
        let formula = Formula::new(dyno.memory_mb, dyno.cpus, web_memory_mb, max_workers);
        details.push(format!(
            "  {:<22} {:>7} MB {:>3} CPUs  {:>4}",
            dyno.name, dyno.memory_mb, dyno.cpus, formula.value
        ));
    }
    // A user's value is the same on every size; the smallest dyno's default names the fallback.
    let smallest = &DYNOS[0];
    let fallback = Formula::new(
        smallest.memory_mb,
        smallest.cpus,
        web_memory_mb,
        max_workers,
    );
    let decision = sizing::decide(incoming, &fallback, false);
    warnings.extend(decision.warnings);
    if let Outcome::Users(value) = decision.outcome {
        details.push(format!(
            "The WEB_CONCURRENCY={value} config var wins on every dyno size"
        ));
    } else {
        details.push(
            "Each dyno's real size decides at boot; run `launcher size` on a dyno to see why"
                .to_owned(),
        );
    }
    for found in pinning::scan(app_dir, env) {
        warnings.push(format!(
            "{} pins the worker count ({}), so WEB_CONCURRENCY cannot take effect.",
            found.place, found.setting
        ));
        warnings.push("Remove it to let each dyno's size decide, or set the WEB_CONCURRENCY config var instead.".to_owned());
    }
    (details, warnings)
}

/// Prints the report. A missing or unreadable ENV_DIR is reported and treated as empty.
pub fn print(app_dir: &Path, env_dir: Option<&Path>) -> Result<()> {
    let (env, skipped) = match env_dir {
        Some(dir) => read_env_dir(dir),
        None => (Env::default(), Vec::new()),
    };
    let (details, warnings) = lines(app_dir, &env);
    let mut stderr = std::io::stderr().lock();
    for warning in skipped.iter().chain(&warnings) {
        let _ = writeln!(stderr, "{WARNING}{warning}");
    }
    let text: String = details
        .iter()
        .map(|line| format!("{DETAIL}{line}\n"))
        .collect();
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .context("cannot write to standard output")
}

/// Reads Heroku's ENV_DIR: one file per config var, the file name is the name, the content is
/// the exact value. Nothing is sourced or evaluated; names that are not shell identifiers are
/// skipped with a warning.
pub fn read_env_dir(dir: &Path) -> (Env, Vec<String>) {
    let mut warnings = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            warnings.push(format!(
                "cannot read the config vars in {}: {err}",
                dir.display()
            ));
            return (Env::default(), warnings);
        }
    };
    let mut pairs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_identifier(&name) {
            warnings.push(format!(
                "config var {} is not a valid name; ignored",
                shown(&name)
            ));
            continue;
        }
        match crate::files::read_bytes(&entry.path(), crate::files::MAX_BYTES) {
            Ok(bytes) => pairs.push((name, String::from_utf8_lossy(&bytes).into_owned())),
            Err(err) => warnings.push(format!(
                "config var {} cannot be read ({err}); ignored",
                shown(&name)
            )),
        }
    }
    (Env::from_pairs(pairs), warnings)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_matches_the_dyno_sizes() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let (details, warnings) = lines(dir.path(), &Env::default());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            details[0],
            "WEB_CONCURRENCY by dyno size at 256 MB per worker (default, WEB_MEMORY unset):"
        );
        assert_eq!(
            details[1],
            "  Eco/Basic/Standard-1X      512 MB   8 CPUs     2"
        );
        assert_eq!(
            details[7],
            "  Performance-2XL         129024 MB  16 CPUs    33"
        );
    }

    #[test]
    fn config_vars_change_the_table() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let env = Env::from_pairs([("WEB_MEMORY", "512"), ("WEB_CONCURRENCY", "3")]);
        let (details, _) = lines(dir.path(), &env);
        assert!(details[1].ends_with("    1"), "{}", details[1]);
        assert_eq!(
            details[8],
            "The WEB_CONCURRENCY=3 config var wins on every dyno size"
        );
        let disabled = Env::from_pairs([("LAUNCHER_DISABLE", "1")]);
        assert_eq!(lines(dir.path(), &disabled).0.len(), 1);
    }

    #[test]
    fn launcher_toml_problems_that_would_stop_launcher_run_are_warned_about_once() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let file = dir.path().join("launcher.toml");
        std::fs::write(&file, "mode = \"turbo\"\n").expect("write");
        let (_, warnings) = lines(dir.path(), &Env::default());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("mode must be"), "{warnings:?}");
        std::fs::write(&file, "mode = [\n").expect("write");
        let (_, warnings) = lines(dir.path(), &Env::default());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("not valid TOML"), "{warnings:?}");
    }

    #[test]
    fn env_dir_is_read_verbatim_and_bad_names_are_skipped() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        std::fs::write(dir.path().join("WEB_MEMORY"), "512").expect("write");
        std::fs::write(dir.path().join("QUOTED"), "it's \"a\"\nvalue $(touch x)").expect("write");
        std::fs::write(dir.path().join("NOT-A-NAME"), "1").expect("write");
        let (env, warnings) = read_env_dir(dir.path());
        assert_eq!(env.get("WEB_MEMORY"), Some("512"));
        assert_eq!(env.get("QUOTED"), Some("it's \"a\"\nvalue $(touch x)"));
        assert_eq!(env.get("NOT-A-NAME"), None);
        assert_eq!(
            warnings,
            vec!["config var \"NOT-A-NAME\" is not a valid name; ignored"]
        );
    }
}
