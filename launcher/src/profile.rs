//! `launcher profile`: the lines the `.profile.d` script applies at dyno boot.
//!
//! Only `export NAME=VALUE` lines, and every VALUE is an integer or a token written here: no text
//! from a config var is ever echoed into shell code.

use crate::report::Report;
use crate::sizing::{Outcome, SET_BY};

/// The variables to export, in order.
pub fn exports(report: &Report) -> Vec<(&'static str, String)> {
    let computed = report.formula.value.to_string();
    let dyno_ram = ("DYNO_RAM", report.host.memory_mb().to_string());
    match &report.decision.outcome {
        Outcome::Ours(value) => vec![
            ("WEB_CONCURRENCY", value.to_string()),
            ("WEB_CONCURRENCY_SET_BY", SET_BY.to_owned()),
            ("LAUNCHER_WEB_CONCURRENCY", computed),
            dyno_ram,
        ],
        Outcome::Users(_) => vec![("LAUNCHER_WEB_CONCURRENCY", computed), dyno_ram],
        Outcome::Disabled { .. } => Vec::new(),
    }
}

pub fn render(exports: &[(&'static str, String)]) -> String {
    exports
        .iter()
        .map(|(name, value)| format!("export {name}={value}\n"))
        .collect()
}

/// The one line a web dyno logs at boot.
pub fn boot_line(report: &Report) -> String {
    let outcome = &report.decision.outcome;
    match outcome.web_concurrency() {
        Some(value) => format!(
            "launcher: WEB_CONCURRENCY={value} ({}; {} MB from {}, {} CPUs from {})",
            report.decision.reason,
            report.host.memory_mb(),
            report.host.memory_source,
            report.host.cpus,
            report.host.cpus_source
        ),
        None => format!("launcher: {}", report.decision.reason),
    }
}

/// Whether this dyno logs the boot line: web dynos only, so one-off and worker dynos stay quiet.
pub fn is_web_dyno(dyno: Option<&str>) -> bool {
    dyno.is_some_and(|name| name == "web" || name.starts_with("web."))
}
