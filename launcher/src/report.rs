//! `launcher size`: every input with its source, and the result with its reason.

use std::path::Path;

use serde::Serialize;

use crate::config::{self, Env, Settings};
use crate::host::{self, Host};
use crate::sizing::{self, Decision, Formula, Incoming};
use crate::supervisor::state::State;

/// Everything the sizing looked at and decided, for one environment on one host.
pub struct Report {
    pub host: Host,
    pub settings: Settings,
    pub formula: Formula,
    pub decision: Decision,
    /// What the `launcher run` supervisors running here measured (`launcher size` only).
    pub running: Vec<State>,
}

impl Report {
    pub fn gather(root: &Path, env: &Env, app_dir: Option<&Path>) -> Self {
        let host = host::read(root);
        let settings = config::load(env, app_dir);
        let formula = Formula::new(
            host.memory_mb(),
            host.cpus,
            settings.web_memory_mb,
            settings.max_workers,
        );
        let incoming = Incoming {
            web_concurrency: env.get("WEB_CONCURRENCY"),
            set_by: env.get("WEB_CONCURRENCY_SET_BY"),
            launcher_value: env.get("LAUNCHER_WEB_CONCURRENCY"),
        };
        let decision = sizing::decide(incoming, &formula, settings.disable);
        Report {
            host,
            settings,
            formula,
            decision,
            running: Vec::new(),
        }
    }

    /// Warnings for stderr: config values that were replaced or ignored.
    pub fn warnings(&self) -> impl Iterator<Item = &String> {
        self.settings
            .warnings
            .iter()
            .chain(&self.settings.file_problems)
            .chain(&self.decision.warnings)
    }

    /// The reason, then warnings, then what the host reading passed over.
    fn notes(&self) -> Vec<String> {
        std::iter::once(&self.decision.reason)
            .chain(self.warnings())
            .chain(&self.host.notes)
            .cloned()
            .collect()
    }

    pub fn to_json(&self) -> String {
        let json = Json {
            memory_mb: self.host.memory_mb(),
            memory_source: &self.host.memory_source,
            cpus: self.host.cpus,
            cpus_source: &self.host.cpus_source,
            web_memory_mb: self.settings.web_memory_mb,
            web_concurrency: self.decision.outcome.web_concurrency(),
            set_by: self.decision.outcome.set_by(),
            notes: self.notes(),
            running: &self.running,
        };
        serde_json::to_string_pretty(&json).unwrap_or_default()
    }

    pub fn to_text(&self) -> String {
        let outcome = &self.decision.outcome;
        let value = outcome
            .web_concurrency()
            .map_or("unset".to_owned(), |n| n.to_string());
        let set_by = outcome
            .owner()
            .map(|who| format!("set by {who}: "))
            .unwrap_or_default();
        let mut text = format!(
            "memory           {:>7} MB  {}\n\
             cpus             {:>7}     {}\n\
             per worker       {:>7} MB  {}\n\
             WEB_CONCURRENCY  {:>7}     {set_by}{}\n",
            self.host.memory_mb(),
            self.host.memory_source,
            self.host.cpus,
            self.host.cpus_source,
            self.settings.web_memory_mb,
            self.settings.web_memory_source,
            value,
            self.decision.reason,
        );
        for state in &self.running {
            text.push_str(&running_line(state));
        }
        for note in self.warnings().chain(&self.host.notes) {
            text.push_str(&format!("note: {note}\n"));
        }
        text
    }
}

#[derive(Serialize)]
struct Json<'a> {
    memory_mb: u64,
    memory_source: &'a str,
    cpus: u32,
    cpus_source: &'a str,
    web_memory_mb: u64,
    web_concurrency: Option<u32>,
    set_by: Option<&'a str>,
    notes: Vec<String>,
    running: &'a [State],
}

/// One running supervisor's measured figures, for the text form of `launcher size`.
fn running_line(state: &State) -> String {
    let mut line = format!(
        "running          {:>7}     launcher run pid {}, {}, sizing {}, guard {}",
        state.workers,
        state.pid,
        state.mode,
        state.sizing,
        if state.memory_guard { "on" } else { "off" }
    );
    if let Some(total) = state.memory_total_mb {
        line += &format!(
            "; dyno {total} MB of {} MB (soft limit {} MB)",
            state.memory_quota_mb, state.soft_limit_mb
        );
    }
    if let Some(largest) = state.worker_uss_mb.first() {
        line += &format!("; largest worker {largest} MB unique");
    }
    if let (Some(fit), Some(cost), Some(base)) = (state.fit, state.worker_cost_mb, state.base_mb) {
        line += &format!("; {fit} workers fit ({cost} MB each over a base of {base} MB)");
    }
    line + &format!(
        "; {} recycled, {} OOM kills\n",
        state.memory_recycles, state.oom_kills
    )
}
