//! `launcher profile`: the lines the `.profile.d` script applies at dyno boot.
//!
//! Only `export NAME=VALUE` lines, and every VALUE is an integer or a token written here: no text
//! from a config var is ever echoed into shell code.

use std::io::Write;

use crate::dynos;
use crate::env::Env;
use crate::report::Report;
use crate::sizing::{Outcome, SET_BY};

/// The `.profile.d` script `bin/compile` installs as `zzz-launcher.sh` (sorting after language
/// buildpacks' `WEB_CONCURRENCY.sh` in C and en_US collation). Sourced by bash at every dyno boot, so:
/// no `exit`, no `set -e`, no `eval`; a line of the binary's output is applied only if it exports one
/// of our names with an integer or `launcher`; if the binary is missing or fails, only PATH has changed.
pub const SCRIPT: &str = r#"# Written by the launcher buildpack: sets WEB_CONCURRENCY from this dyno's real size.
# Sourced at every dyno boot. Run `launcher size` on the dyno to see every number and its source.
case ":${PATH:-}:" in
  *":${HOME:-}/.launcher/bin:"*) ;;
  *) export PATH="${HOME:-}/.launcher/bin${PATH:+:$PATH}" ;;
esac
if [ -x "${HOME:-}/.launcher/bin/launcher" ] &&
  __launcher_exports="$("${HOME:-}/.launcher/bin/launcher" profile --app-dir "${HOME:-.}")"; then
  # Apply only our names, each with a whole number or `launcher`: no eval, nothing else.
  __launcher_exports="${__launcher_exports}"$'\n'
  while [ -n "$__launcher_exports" ]; do
    __launcher_line="${__launcher_exports%%$'\n'*}"
    __launcher_exports="${__launcher_exports#*$'\n'}"
    __launcher_value="${__launcher_line#*=}"
    case "$__launcher_value" in
      launcher) ;;
      "" | 0* | *[!0-9]*) continue ;;
    esac
    case "$__launcher_line" in
      "export WEB_CONCURRENCY=$__launcher_value") export WEB_CONCURRENCY="$__launcher_value" ;;
      "export WEB_CONCURRENCY_SET_BY=$__launcher_value") export WEB_CONCURRENCY_SET_BY="$__launcher_value" ;;
      "export LAUNCHER_WEB_CONCURRENCY=$__launcher_value") export LAUNCHER_WEB_CONCURRENCY="$__launcher_value" ;;
      "export DYNO_RAM=$__launcher_value") export DYNO_RAM="$__launcher_value" ;;
      "export RAILS_MAX_THREADS=$__launcher_value") export RAILS_MAX_THREADS="$__launcher_value" ;;
      "export LAUNCHER_WEB_THREADS=$__launcher_value")
        export LAUNCHER_WEB_THREADS="$__launcher_value"
        # gunicorn's threads, unless GUNICORN_CMD_ARGS names them already; each connection
        # closed after its response unless told (threads.rs, gunicorn_thread_args, says why).
        case " ${GUNICORN_CMD_ARGS:-} " in
          *" --threads "* | *" --threads="*) ;;
          *)
            __launcher_line="--threads ${__launcher_value}"
            case " ${GUNICORN_CMD_ARGS:-} " in
              *" --keep-alive "* | *" --keep-alive="*) ;;
              *) __launcher_line="${__launcher_line} --keep-alive 0" ;;
            esac
            export GUNICORN_CMD_ARGS="${GUNICORN_CMD_ARGS:+${GUNICORN_CMD_ARGS} }${__launcher_line}" ;;
        esac ;;
    esac
  done
fi
unset __launcher_exports __launcher_line __launcher_value
"#;

/// The variables to export, in order: the worker count's, then the threads' (`thread_exports`).
pub fn exports(report: &Report) -> Vec<(&'static str, String)> {
    let mut exports = worker_exports(report);
    exports.extend(report.thread_exports.iter().cloned());
    exports
}

fn worker_exports(report: &Report) -> Vec<(&'static str, String)> {
    let computed = report.formula.value.to_string();
    let dyno_ram = ("DYNO_RAM", report.host.memory_mb().to_string());
    match &report.decision.outcome {
        Outcome::Ours(value) => vec![
            ("WEB_CONCURRENCY", value.to_string()),
            ("WEB_CONCURRENCY_SET_BY", SET_BY.to_owned()),
            ("LAUNCHER_WEB_CONCURRENCY", computed),
            dyno_ram,
        ],
        // Written over at launch by a buildpack (the exec.d program knows): written back, and
        // an exec.d program cannot unset the mark, so it is emptied.
        Outcome::Users(value) if report.decision.restore => vec![
            ("WEB_CONCURRENCY", value.to_string()),
            ("WEB_CONCURRENCY_SET_BY", String::new()),
            ("LAUNCHER_WEB_CONCURRENCY", computed),
            dyno_ram,
        ],
        Outcome::Users(_) => vec![("LAUNCHER_WEB_CONCURRENCY", computed), dyno_ram],
        Outcome::Disabled { .. } => Vec::new(),
    }
}

/// The `export` lines the `.profile.d` script applies: integers and tokens only, so the script can
/// check each; `GUNICORN_CMD_ARGS` is not one, the script derives it from
/// `LAUNCHER_WEB_THREADS` itself.
pub fn render(exports: &[(&'static str, String)]) -> String {
    exports
        .iter()
        .filter(|(name, _)| *name != "GUNICORN_CMD_ARGS")
        .map(|(name, value)| format!("export {name}={value}\n"))
        .collect()
}

/// The same exports as a CNB exec.d program's output: a TOML table of strings (`NAME = "value"`),
/// written by the toml crate, which quotes and escapes `GUNICORN_CMD_ARGS`, the user's text.
pub fn render_toml(exports: &[(&'static str, String)]) -> String {
    let table: toml::Table = exports
        .iter()
        .map(|(name, value)| ((*name).to_owned(), toml::Value::String(value.clone())))
        .collect();
    table.to_string()
}

/// Logs what the boot does on stderr: a warning line per setting or value that was replaced (a
/// config var or a `launcher.toml` entry, on every dyno); on web dynos the boot line, then a
/// warning per place that pins the worker count (the count the line gives does not take effect
/// there). Best effort: a closed stderr must not cost the dyno its sizing.
pub fn log(report: &Report, env: &Env) {
    let mut stderr = std::io::stderr().lock();
    for warning in report.warnings() {
        let _ = writeln!(stderr, "launcher: warning: {warning}");
    }
    if is_web_dyno(env.get("DYNO")) {
        let _ = writeln!(stderr, "{}", boot_line(report));
        // A few small files of the app (Procfile, a server's config), read on web dynos only.
        let pins = match &report.app_dir {
            Some(dir) => crate::pinning::scan(dir, env),
            None => Vec::new(),
        };
        for warning in report.pin_warnings(&pins) {
            let _ = writeln!(stderr, "launcher: warning: {warning}");
        }
    }
}

/// The one line a web dyno logs at boot.
pub fn boot_line(report: &Report) -> String {
    let outcome = &report.decision.outcome;
    match (outcome.web_concurrency(), outcome.owner()) {
        (Some(value), Some(who)) => format!(
            "launcher: WEB_CONCURRENCY={value} set by {who} ({}; {} MB from {}, {} CPUs from {})",
            report.decision.reason,
            report.host.memory_mb(),
            report.host.memory_source,
            report.host.cpus,
            report.host.cpus_source
        ),
        _ => format!("launcher: {}", report.decision.reason),
    }
}

/// Whether this dyno logs the boot line: web dynos only (Cedar's `web.1`, Fir's
/// `web-<hash>-<id>`), so one-off and worker dynos stay quiet.
pub fn is_web_dyno(dyno: Option<&str>) -> bool {
    dyno.is_some_and(|name| {
        name == "web" || dynos::parse(name).is_some_and(|parsed| parsed.process_type == "web")
    })
}
