//! `launcher size`: every input with its source, and the result with its reason.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::env::Env;
use crate::host::{self, Host};
use crate::pinning::{self, Finding};
use crate::settings::{self, Settings, Source};
use crate::sizing::{self, Decision, Formula, Incoming};
use crate::state::State;
use crate::threads;
use crate::usage::pressure::Pressure;
use crate::web::WebProcess;

/// Everything the sizing looked at and decided, for one environment on one host.
pub struct Report {
    pub host: Host,
    pub settings: Settings,
    pub formula: Formula,
    pub decision: Decision,
    /// What the `launcher run` supervisors running here measured (`launcher size` only).
    pub running: Vec<State>,
    /// Why the state files were looked for elsewhere, or not read.
    pub running_notes: Vec<String>,
    /// The app's web process (`launcher size` in an app's directory; never at boot).
    pub web: Option<WebProcess>,
    /// The app's root, where `launcher.toml`, the Procfile and the servers' configs are read.
    pub app_dir: Option<PathBuf>,
    /// Where the app pins its worker count (`launcher size`; the boot of a web dyno).
    pub pins: Vec<Finding>,
    /// Threads per worker, when `LAUNCHER_THREADS` asks for them (`threads::threads_per_worker`).
    pub threads: Option<u32>,
    /// How the servers are told `threads` (`threads::threads_exports`).
    pub thread_exports: Vec<(&'static str, String)>,
    /// The most workers adaptive sizing may add up to, when it may (`auto` threads are fewer).
    pub grows_to: Option<u32>,
    /// The dyno's PSI, where the kernel has it (`launcher size` only).
    pub pressure: Option<Pressure>,
}

impl Report {
    /// Sizes `root`'s host with `settings` (read once by the caller) and the `WEB_CONCURRENCY`
    /// family found in `env`.
    pub fn gather(root: &Path, env: &Env, settings: Settings) -> Self {
        let host = host::read(root);
        let max_workers = settings.whole(&settings::MAX_WORKERS);
        let formula = Formula::new(
            host.memory_mb(),
            host.cpus,
            settings.number(&settings::WEB_MEMORY),
            max_workers.map(|n| n as u32),
        );
        let incoming = Incoming {
            web_concurrency: env.get("WEB_CONCURRENCY"),
            set_by: env.get("WEB_CONCURRENCY_SET_BY"),
            launcher_value: env.get("LAUNCHER_WEB_CONCURRENCY"),
            platform_value: env.platform_value(),
        };
        let decision = sizing::decide(incoming, &formula, settings.switch(&settings::DISABLE));
        // Adaptive sizing adds workers to a count of ours, never to a user's.
        let adaptive = settings.sizing() == sizing::Sizing::Adaptive;
        let grows_to = match decision.outcome {
            sizing::Outcome::Ours(_) if adaptive => {
                Some(max_workers.map_or(sizing::MAX_WEB_CONCURRENCY, |n| n as u32))
            }
            _ => None,
        };
        let threads = match decision.outcome {
            sizing::Outcome::Disabled { .. } => None,
            _ => {
                let workers = decision.outcome.web_concurrency().unwrap_or(formula.value);
                let memory_mb = host.memory_mb();
                threads::threads_per_worker(settings.threads(), memory_mb, workers, grows_to)
            }
        };
        Report {
            thread_exports: threads::threads_exports(threads, env),
            threads,
            grows_to,
            host,
            settings,
            formula,
            decision,
            running: Vec::new(),
            running_notes: Vec::new(),
            web: None,
            app_dir: None,
            pins: Vec::new(),
            pressure: None,
        }
    }

    /// `gather` with the settings of the app in `app_dir` (`launcher.toml`), by default the current
    /// directory: the app's root where the boot script, `launcher run` and exec.d start.
    pub fn for_app(root: &Path, env: &Env, app_dir: Option<PathBuf>) -> Self {
        let app_dir = app_dir.or_else(|| std::env::current_dir().ok());
        let mut report = Report::gather(root, env, Settings::load(env, app_dir.as_deref()));
        report.app_dir = app_dir;
        report
    }

    /// `for_app` with the app's web process and its pins, for `launcher size`. The boot does not
    /// read the web process: what the Procfile runs is for `launcher size` and the build log to
    /// tell.
    pub fn for_size(root: &Path, env: &Env, app_dir: Option<PathBuf>) -> Self {
        let mut report = Report::for_app(root, env, app_dir);
        if let Some(dir) = report.app_dir.clone() {
            report.web = crate::web::read(&dir, env, &report.settings);
            report.pins = pinning::scan(&dir, env);
        }
        report.pressure = Pressure::for_host(&host::Snapshot::new(root), &report.host);
        report
    }

    /// One warning per place that pins the worker count: the value this report gives
    /// `WEB_CONCURRENCY` does not take effect there. `pins` from `pinning::scan`.
    pub fn pin_warnings(&self, pins: &[Finding]) -> Vec<String> {
        // Sizing disabled and no value: nothing is lost, as the build log says nothing then either.
        let Some(value) = self.decision.outcome.web_concurrency() else {
            return Vec::new();
        };
        pins.iter().map(|pin| pin.at_boot(value)).collect()
    }

    /// Warnings for stderr at boot and for `launcher run`'s `config` lines, each naming a config
    /// var or a `launcher.toml` entry: settings that were replaced or ignored, and an invalid
    /// `WEB_CONCURRENCY`.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.settings.warnings();
        warnings.extend(self.decision.warnings.iter().cloned());
        warnings
    }

    /// `warnings`, then what `launcher size` warns of besides: a pinned worker count, and the web
    /// process's warnings (a unicorn config that cannot take `WEB_CONCURRENCY`), as the build log
    /// does.
    fn size_warnings(&self) -> Vec<String> {
        let web = self.web.iter().flat_map(|w| w.warnings.iter().cloned());
        let warnings = self
            .warnings()
            .into_iter()
            .chain(self.pin_warnings(&self.pins));
        warnings.chain(web).collect()
    }

    /// The reason, then warnings, then what the host reading passed over.
    fn notes(&self) -> Vec<String> {
        std::iter::once(self.decision.reason.clone())
            .chain(self.size_warnings())
            .chain(self.host.notes.iter().cloned())
            .chain(self.running_notes.iter().cloned())
            .collect()
    }

    pub fn to_json(&self) -> String {
        let settings = self
            .settings
            .entries()
            .iter()
            .map(|entry| {
                let value = serde_json::json!({
                    "value": entry.value.json(),
                    "source": entry.source.label(),
                });
                (entry.spec.var.to_owned(), value)
            })
            .collect();
        let json = Json {
            memory_mb: self.host.memory_mb(),
            memory_source: &self.host.memory_source,
            cpus: self.host.cpus,
            cpus_source: &self.host.cpus_source,
            web_memory_mb: self.formula.web_memory_mb,
            web_concurrency: self.decision.outcome.web_concurrency(),
            threads: self.threads,
            pressure: self.pressure.as_ref().map(Pressure::to_json),
            set_by: self.decision.outcome.set_by(),
            notes: self.notes(),
            settings,
            running: &self.running,
            web: self.web.as_ref(),
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
            self.formula.web_memory_mb,
            web_memory_source(&self.settings),
            value,
            self.decision.reason,
        );
        if let Some(threads) = self.threads {
            text.push_str(&format!(
                "threads          {threads:>7}     per worker ({}): {}\n",
                self.threads_reason(),
                self.threads_exported()
            ));
        }
        text.push_str(&self.settings_line());
        if let Some(web) = &self.web {
            let workers = self.decision.outcome.web_concurrency().unwrap_or(1);
            let mut line = format!("server           {:>7}     {}", web.server, web.how());
            if let Some(concurrency) = web.concurrency(workers) {
                line += &format!("; {concurrency}");
            }
            text.push_str(&line);
            text.push('\n');
        }
        for state in &self.running {
            text.push_str(&running_line(state));
        }
        if let Some(pressure) = &self.pressure {
            text.push_str(&format!(
                "pressure                     {}\n",
                pressure.describe()
            ));
        }
        // One word for each, as at boot and in the build log: a setting or value that was not
        // used is a warning; what the host reading passed over is a note.
        for warning in self.size_warnings() {
            text.push_str(&format!("warning: {warning}\n"));
        }
        for note in self.host.notes.iter().chain(&self.running_notes) {
            text.push_str(&format!("note: {note}\n"));
        }
        text
    }

    /// Why `threads`: the setting, and `auto`'s formula.
    fn threads_reason(&self) -> String {
        match self.settings.threads() {
            threads::ThreadsSetting::Auto => {
                let adaptive = match self.grows_to {
                    Some(most) => format!(
                        "; at most {}, as adaptive sizing adds workers of as many (up to \
                         {most})",
                        threads::ADAPTIVE_AUTO_THREADS
                    ),
                    None => String::new(),
                };
                format!(
                    "LAUNCHER_THREADS=auto: {} MB / {} MB per request in flight, shared among \
                     the workers, between {} and {}{adaptive}",
                    self.host.memory_mb(),
                    threads::REQUEST_MEMORY_MB,
                    threads::AUTO_THREADS.0,
                    threads::AUTO_THREADS.1
                )
            }
            _ => "LAUNCHER_THREADS".to_owned(),
        }
    }

    /// How the servers are told the threads.
    fn threads_exported(&self) -> String {
        let told: Vec<String> = self
            .thread_exports
            .iter()
            .filter(|(name, _)| *name != "LAUNCHER_WEB_THREADS")
            .map(|(name, value)| match value.rfind("--threads ") {
                // The options added, after the user's text (`gunicorn_thread_args`).
                Some(at) if *name == "GUNICORN_CMD_ARGS" => format!("{name} += {}", &value[at..]),
                // Ours: digits.
                _ => format!("{name}={value}"),
            })
            .collect();
        match told.is_empty() {
            true => "the servers' own settings name theirs (kept)".to_owned(),
            false => told.join(", "),
        }
    }

    /// The settings that are not at their default, with where each came from.
    fn settings_line(&self) -> String {
        let set: Vec<String> = self
            .settings
            .entries()
            .iter()
            .filter(|e| e.source != Source::Default)
            .map(|e| {
                let (var, value) = (e.spec.var, e.value.text());
                format!("{var}={value} ({})", e.source.label())
            })
            .collect();
        let listed = if set.is_empty() {
            "all at their defaults".to_owned()
        } else {
            format!("{}; the rest at their defaults", set.join(", "))
        };
        format!("settings                     {listed} (launcher size --json lists each)\n")
    }
}

/// Where the per-worker budget came from, for `launcher size` and the build log.
pub fn web_memory_source(settings: &Settings) -> &'static str {
    match settings.entry(&settings::WEB_MEMORY).map(|e| e.source) {
        Some(Source::ConfigVar) => "WEB_MEMORY",
        _ if settings.was_replaced(&settings::WEB_MEMORY) => "default, WEB_MEMORY invalid",
        _ => "default, WEB_MEMORY unset",
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
    /// Threads per worker, when `LAUNCHER_THREADS` asks for them.
    threads: Option<u32>,
    /// The dyno's PSI (cgroup v2), as the text's `pressure` line.
    pressure: Option<serde_json::Value>,
    set_by: Option<&'a str>,
    notes: Vec<String>,
    /// Every setting the launcher reads: its value and where it came from.
    settings: serde_json::Map<String, serde_json::Value>,
    running: &'a [State],
    /// The Procfile's web process, when `launcher size` runs in an app's directory.
    web: Option<&'a WebProcess>,
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
    if let Some(busy) = state.workers_busy {
        line += &format!("; {busy} busy");
    }
    if let (Some(queue), Some(backlog)) = (state.listen_queue, state.listen_backlog) {
        let peak = state.listen_queue_max.unwrap_or(queue);
        line += &format!("; accept queue {queue} (peak {peak}) of {backlog}");
    }
    if let (Some(busy), Some(cpus)) = (state.cpu_busy, state.cpu_capacity) {
        line += &format!("; CPU {:.0}% of {cpus}", busy * 100.0);
    }
    if let Some(threads) = state.threads {
        let waiting = state.requests_waiting.unwrap_or(0);
        line += &format!("; {threads} threads each, {waiting} requests waiting inside");
    }
    line += &format!(
        "; {} recycled, {} OOM kills\n",
        state.memory_recycles, state.oom_kills
    );
    match &state.hint {
        Some(hint) => line + &format!("hint: {hint}\n"),
        None => line,
    }
}
