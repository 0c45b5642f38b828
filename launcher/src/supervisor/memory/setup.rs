//! Setting the watch up: the soft limit from the dyno's quota, which controllers run, and the
//! `memory` line that says so.

use super::{mb, GuardConfig, SizerConfig, WatchConfig};
use crate::host::MIB;
use crate::report::Report;
use crate::servers::Mode;
use crate::sizing::{cpu_cap, Outcome, MAX_WEB_CONCURRENCY};
use crate::supervisor::log::Event;
use crate::supervisor::plan::Plan;
use crate::supervisor::settings::{RunSettings, Sizing};
use crate::usage::Meter;

/// The watch's settings: the soft limit from the dyno's quota; the guard unless turned off;
/// measured sizing only when asked for and the worker count is the launcher's own.
pub fn configure(settings: &RunSettings, report: &Report, plan: &Plan) -> WatchConfig {
    let (mode, workers) = (plan.mode, plan.workers);
    let quota_bytes = report.host.memory_bytes;
    let soft_limit_bytes = quota_bytes / 100 * settings.soft_limit_percent;
    let guard = settings.memory_guard.then(|| GuardConfig {
        soft_limit_bytes,
        worker_max_bytes: settings.worker_memory_max_mb.map(|mb| mb * MIB),
        cooldown: settings.memory_cooldown,
        kill_after: settings.graceful_timeout,
    });
    let ours = matches!(report.decision.outcome, Outcome::Ours(_));
    let by_cpu = cpu_cap(report.host.cpus);
    let max_workers = report
        .formula
        .max_workers
        .map_or(by_cpu, |cap| cap.min(by_cpu))
        .min(MAX_WEB_CONCURRENCY);
    // A delegated server without scaling signals is never resized by signals.
    let scalable = mode == Mode::FanOut || plan.signals.scale.is_some();
    let sizer = (settings.sizing == Sizing::Measured && ours && scalable).then_some(SizerConfig {
        soft_limit_bytes,
        max_workers,
        warmup: settings.sizing_warmup,
    });
    WatchConfig {
        mode,
        quota_bytes,
        soft_limit_bytes,
        ready_grace: settings.ready_grace,
        guard,
        sizer,
        workers,
        signals: plan.signals,
    }
}

/// The `memory` line at start: where usage is read, the limits, and what will act on them.
pub fn log_start(config: &WatchConfig, meter: &Meter, settings: &RunSettings, report: &Report) {
    if settings.sizing == Sizing::Measured && config.sizer.is_none() {
        let message = match report.decision.outcome.owner() {
            Some(who) if who != crate::sizing::SET_BY => format!(
                "LAUNCHER_SIZING=measured has no effect: WEB_CONCURRENCY is set by {who}, and a \
                 value that is not the launcher's own is never changed"
            ),
            _ => "LAUNCHER_SIZING=measured has no effect: this server has no signals to add or \
                  remove a worker with"
                .to_owned(),
        };
        Event::warn("config").with("message", message).emit();
    }
    let worker_max = config.guard.as_ref().and_then(|g| g.worker_max_bytes);
    let mut event = Event::info("memory")
        .with("quota", mb(config.quota_bytes))
        .with("soft_limit", mb(config.soft_limit_bytes))
        .with("guard", if config.guard.is_some() { "on" } else { "off" })
        .with("worker_max", worker_max.map_or("none".to_owned(), mb));
    event = match &config.sizer {
        Some(sizer) => event
            .with("sizing", "measured")
            .with("max_workers", sizer.max_workers)
            .secs("warmup_s", sizer.warmup),
        None => event.with("sizing", "static"),
    };
    event.with("meter", meter.describe()).emit();
}
