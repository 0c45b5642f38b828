//! `launcher build-report`: the sizing step of the build log, in the style of the build that
//! runs it: Heroku's classic build log (details as 7-space-indented lines, warnings behind
//! ` !     `) or Heroku's Cloud Native Buildpacks (details as `  - ` sub-bullets, warnings behind
//! `! `). Details go to stdout, warnings to stderr.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::dynos::{Dyno, DYNOS, FIR_DYNOS};
use crate::env::Env;
use crate::pinning;
use crate::report::web_memory_source;
use crate::settings::{self, Settings};
use crate::sizing::{self, Formula, Incoming, Outcome};
use crate::text::shown;

/// Which build log the report is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// bin/compile: Cedar's dyno sizes.
    Classic,
    /// bin/build: Fir's dyno sizes, then Cedar's.
    Cnb,
}

impl Style {
    pub fn parse(name: &str) -> Option<Style> {
        match name {
            "classic" => Some(Style::Classic),
            "cnb" => Some(Style::Cnb),
            _ => None,
        }
    }

    /// The dyno tables the sizing preview shows, each with its heading's words.
    fn tables(self) -> Vec<(&'static str, &'static [Dyno])> {
        match self {
            Style::Classic => vec![("dyno size", &DYNOS)],
            Style::Cnb => vec![
                (
                    "Fir dyno size (memory taken as the GB of the name)",
                    &FIR_DYNOS,
                ),
                ("Cedar dyno size", &DYNOS),
            ],
        }
    }

    /// One detail line of `lines`: a table row (it starts with two spaces) sits under the line
    /// before it.
    fn detail(self, line: &str) -> String {
        match (self, line.strip_prefix("  ")) {
            (Style::Classic, _) => format!("       {line}"),
            (Style::Cnb, Some(row)) => format!("      {row}"),
            (Style::Cnb, None) => format!("  - {line}"),
        }
    }

    fn warning(self, line: &str) -> String {
        match self {
            Style::Classic => format!(" !     {line}"),
            Style::Cnb => format!("! {line}"),
        }
    }
}

/// The build log's detail lines and warnings for an app and its config vars. Table rows start
/// with two spaces.
pub fn lines(app_dir: &Path, env: &Env, style: Style) -> (Vec<String>, Vec<String>) {
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
    details.extend(size_tables(&settings, style, web_memory_mb, max_workers));
    let incoming = Incoming {
        web_concurrency: env.get("WEB_CONCURRENCY"),
        ..Incoming::default()
    };
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
    let workers = decision.outcome.web_concurrency().unwrap_or(fallback.value);
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
    if let Some(web) = crate::web::read(app_dir, env, &settings) {
        details.extend(web_lines(&web, workers, smallest.name));
        warnings.extend(web.warnings);
    }
    for found in pinning::scan(app_dir, env) {
        warnings.extend(found.at_build());
    }
    (details, warnings)
}

/// The worker count by dyno size, one table per family `style` shows.
fn size_tables(
    settings: &Settings,
    style: Style,
    web_memory_mb: u64,
    max_workers: Option<u32>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (sizes, dynos) in style.tables() {
        lines.push(format!(
            "WEB_CONCURRENCY by {sizes} at {web_memory_mb} MB per worker ({}):",
            web_memory_source(settings)
        ));
        for dyno in dynos {
            let formula = Formula::new(dyno.memory_mb, dyno.cpus, web_memory_mb, max_workers);
            lines.push(format!(
                "  {:<22} {:>7} MB {:>3} CPUs  {:>4}",
                dyno.name, dyno.memory_mb, dyno.cpus, formula.value
            ));
        }
    }
    lines
}

/// What the web process runs, and the concurrency it gets on the smallest dyno.
fn web_lines(web: &crate::web::WebProcess, workers: u32, smallest: &str) -> Vec<String> {
    let mut lines = Vec::new();
    // Only for an app that runs under `launcher run`: the others never meet its modes.
    if web.launcher_run {
        lines.push(format!(
            "The web process runs {} under `launcher run`, in {} mode: {}",
            web.server,
            web.mode,
            web.what()
        ));
    }
    let on_smallest = |line| format!("{line} on the smallest dyno ({smallest})");
    lines.extend(web.concurrency(workers).map(on_smallest));
    lines
}

/// Prints the report. A missing or unreadable ENV_DIR is reported and treated as empty.
pub fn print(app_dir: &Path, env_dir: Option<&Path>, style: Style) -> Result<()> {
    let (env, skipped) = match env_dir {
        Some(dir) => read_env_dir(dir),
        None => (Env::default(), Vec::new()),
    };
    let (details, warnings) = lines(app_dir, &env, style);
    let text: String = details
        .iter()
        .map(|line| style.detail(line) + "\n")
        .collect();
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")?;
    // After the details, so that a log that merges both streams reads in order.
    let block: Vec<String> = skipped
        .iter()
        .chain(&warnings)
        .map(|w| style.warning(w))
        .collect();
    if !block.is_empty() {
        // Heroku's CNBs set a warning block apart with an empty line before and after it.
        let gap = if style == Style::Cnb { "\n" } else { "" };
        let _ = write!(std::io::stderr().lock(), "{gap}{}\n{gap}", block.join("\n"));
    }
    Ok(())
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
        let (details, warnings) = lines(dir.path(), &Env::default(), Style::Classic);
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
    fn the_cnb_style_shows_firs_sizes_then_cedars() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let (details, warnings) = lines(dir.path(), &Env::default(), Style::Cnb);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            details[0],
            "WEB_CONCURRENCY by Fir dyno size (memory taken as the GB of the name) at 256 MB per worker (default, WEB_MEMORY unset):"
        );
        assert_eq!(
            details[1],
            "  dyno-1c-0.5gb              512 MB   1 CPUs     2"
        );
        assert_eq!(
            details[17],
            "  dyno-32c-64gb            65536 MB  29 CPUs    59"
        );
        assert!(details[18].starts_with("WEB_CONCURRENCY by Cedar dyno size at 256 MB"));
        assert_eq!(
            details[19],
            "  Eco/Basic/Standard-1X      512 MB   8 CPUs     2"
        );
        assert_eq!(details.len(), 27, "{details:?}");
        assert_eq!(
            Style::Cnb.detail(&details[0]),
            format!("  - {}", details[0])
        );
        assert_eq!(
            Style::Cnb.detail(&details[1]),
            "      dyno-1c-0.5gb              512 MB   1 CPUs     2"
        );
        assert_eq!(Style::Cnb.warning("pinned"), "! pinned");
        assert_eq!(Style::Classic.detail("x"), "       x");
        assert_eq!(Style::Classic.warning("pinned"), " !     pinned");
    }

    #[test]
    fn the_same_pinned_worker_warnings_in_both_styles() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        std::fs::write(dir.path().join("Procfile"), "web: gunicorn -w 4 app:app\n").expect("write");
        let (_, classic) = lines(dir.path(), &Env::default(), Style::Classic);
        let (_, cnb) = lines(dir.path(), &Env::default(), Style::Cnb);
        assert_eq!(classic.len(), 2, "{classic:?}");
        assert!(
            classic[0].starts_with("Procfile pins the worker count (-w 4)"),
            "{classic:?}"
        );
        assert_eq!(cnb, classic);
    }

    #[test]
    fn config_vars_change_the_table() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let env = Env::from_pairs([("WEB_MEMORY", "512"), ("WEB_CONCURRENCY", "3")]);
        let (details, _) = lines(dir.path(), &env, Style::Classic);
        assert!(details[1].ends_with("    1"), "{}", details[1]);
        assert_eq!(
            details[8],
            "The WEB_CONCURRENCY=3 config var wins on every dyno size"
        );
        let disabled = Env::from_pairs([("LAUNCHER_DISABLE", "1")]);
        assert_eq!(lines(dir.path(), &disabled, Style::Classic).0.len(), 1);
    }

    #[test]
    fn launcher_toml_problems_that_would_stop_launcher_run_are_warned_about_once() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let file = dir.path().join("launcher.toml");
        std::fs::write(&file, "mode = \"turbo\"\n").expect("write");
        let (_, warnings) = lines(dir.path(), &Env::default(), Style::Classic);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("mode must be"), "{warnings:?}");
        std::fs::write(&file, "mode = [\n").expect("write");
        let (_, warnings) = lines(dir.path(), &Env::default(), Style::Classic);
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
