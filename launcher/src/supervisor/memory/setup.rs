//! Setting the watch up: the soft limit from the dyno's quota, which controllers run, and the
//! `memory` line that says so.

use super::{mb, GuardConfig, SizerConfig, WatchConfig};
use crate::host::MIB;
use crate::report::Report;
use crate::servers::Mode;
use crate::sizing::{cpu_cap, Outcome, MAX_WEB_CONCURRENCY};
use crate::supervisor::adaptive::AdaptiveConfig;
use crate::supervisor::log::Event;
use crate::supervisor::plan::Plan;
use crate::supervisor::settings::{RunSettings, Sizing};
use crate::usage::cpu::CpuMeter;
use crate::usage::Meter;

/// The watch's settings: the soft limit from the dyno's quota; the guard unless turned off;
/// measured or adaptive sizing only when asked for, the worker count is the launcher's own and
/// the server can be resized; adaptive sizing only with a socket whose queue shows the wait.
pub fn configure(
    settings: &RunSettings,
    report: &Report,
    plan: &Plan,
    port: Option<u16>,
) -> WatchConfig {
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
    let follows_queue = port.is_some() && plan.queue_blind.is_none();
    let adaptive =
        (settings.sizing == Sizing::Adaptive && ours && scalable && follows_queue).then(|| {
            let a = settings.adaptive;
            AdaptiveConfig {
                floor: workers,
                // Past the CPU cap: the CPU rule decides how far an I/O-bound app may go.
                max_workers: report.formula.max_workers.unwrap_or(MAX_WEB_CONCURRENCY),
                grow_window: a.grow_window,
                grow_share: a.grow_share,
                cpu_max: a.cpu_max,
                shrink_after: a.shrink_after,
                step: a.step,
                read_interval: settings.queue_read_interval,
            }
        });
    WatchConfig {
        mode,
        quota_bytes,
        soft_limit_bytes,
        ready_grace: settings.ready_grace,
        guard,
        sizer,
        adaptive,
        port,
        busy_known: plan.queue_blind.is_none(),
        workers,
        cpu_capacity: report.host.cpu_capacity,
        signals: plan.signals,
    }
}

/// Why the sizing asked for does not run, for a `config` warning; None when it runs or none was
/// asked for.
fn not_running(
    config: &WatchConfig,
    settings: &RunSettings,
    report: &Report,
    plan: &Plan,
) -> Option<String> {
    let asked = settings.sizing.as_str();
    let runs = match settings.sizing {
        Sizing::Static => return None,
        Sizing::Measured => config.sizer.is_some(),
        Sizing::Adaptive => config.adaptive.is_some(),
    };
    if runs {
        return None;
    }
    let why = match report.decision.outcome.owner() {
        _ if matches!(report.decision.outcome, Outcome::Disabled { .. }) => {
            "sizing is off (LAUNCHER_DISABLE)".to_owned()
        }
        Some(who) if who != crate::sizing::SET_BY => format!(
            "WEB_CONCURRENCY is set by {who}, and a value that is not the launcher's own is \
             never changed"
        ),
        _ if plan.mode == crate::servers::Mode::Delegate && plan.signals.scale.is_none() => {
            "this server has no signals to add or remove a worker with".to_owned()
        }
        _ if config.port.is_none() => "there is no socket (PORT is not set): no accept queue to \
                                       follow"
            .to_owned(),
        _ => match &plan.queue_blind {
            Some(why) => format!("{}: {why}", plan.server),
            None => "it cannot run here".to_owned(),
        },
    };
    Some(format!(
        "LAUNCHER_SIZING={asked} has no effect: {why}; the worker count stays static"
    ))
}

/// The `memory` line at start: where usage is read, the limits, and what will act on them; with
/// adaptive sizing, an `adaptive` line with its thresholds.
pub fn log_start(
    config: &WatchConfig,
    (meter, cpu): (&Meter, &CpuMeter),
    settings: &RunSettings,
    report: &Report,
    plan: &Plan,
) {
    if let Some(message) = not_running(config, settings, report, plan) {
        Event::warn("config").with("message", message).emit();
    }
    let worker_max = config.guard.as_ref().and_then(|g| g.worker_max_bytes);
    let mut event = Event::info("memory")
        .with("quota", mb(config.quota_bytes))
        .with("soft_limit", mb(config.soft_limit_bytes))
        .with("guard", if config.guard.is_some() { "on" } else { "off" })
        .with("worker_max", worker_max.map_or("none".to_owned(), mb));
    event = match (&config.sizer, &config.adaptive) {
        (Some(sizer), _) => event
            .with("sizing", "measured")
            .with("max_workers", sizer.max_workers)
            .secs("warmup_s", sizer.warmup),
        (None, Some(adaptive)) => event
            .with("sizing", "adaptive")
            .with("min_workers", adaptive.floor)
            .with("max_workers", adaptive.max_workers)
            .secs("grow_window_s", adaptive.grow_window)
            .with("grow_share", format!("{:.2}", adaptive.grow_share))
            .with("cpu_max", format!("{:.2}", adaptive.cpu_max))
            .secs("shrink_after_s", adaptive.shrink_after)
            .secs("step_s", adaptive.step),
        (None, None) => event.with("sizing", "static"),
    };
    event
        .with("meter", meter.describe())
        .with("cpus", report.host.cpu_capacity)
        .with("cpu_meter", cpu.describe())
        .emit();
}
