//! The policies' configuration, built once from the run's facts: the guard, measured or adaptive
//! sizing and whether it can run here (and why not), threads followed, and the rules for limits
//! that change.

use crate::report::Report;
use crate::servers::Mode;
use crate::sizing::{Outcome, Sizing, MAX_WEB_CONCURRENCY};
use crate::supervisor::adaptive::AdaptiveConfig;
use crate::supervisor::decide;
use crate::supervisor::limits::{measured_max, Count, Rules};
use crate::supervisor::memory::{GuardConfig, Limits, SizerConfig};
use crate::supervisor::plan::Plan;
use crate::supervisor::settings::RunSettings;
use crate::units::MIB;

/// The policies: the soft limit from the dyno's quota; the guard unless turned off; measured or
/// adaptive sizing only when asked for, the worker count is the launcher's own and the server
/// can be resized; adaptive sizing only with a socket whose queue shows the wait.
pub(super) fn control_config(
    settings: &RunSettings,
    report: &Report,
    plan: &Plan,
    port: Option<u16>,
) -> decide::Config {
    let quota_bytes = report.host.memory_bytes;
    let limits = Limits::of(quota_bytes, settings.soft_limit_percent);
    let guard = settings.memory_guard.then(|| GuardConfig {
        soft_limit_bytes: limits.soft_limit_bytes,
        worker_max_bytes: settings.worker_memory_max_mb.map(|mb| mb * MIB),
        cooldown: settings.memory_cooldown,
        kill_after: settings.graceful_timeout,
    });
    // A count the command pins is the user's as much as a WEB_CONCURRENCY they set.
    let ours = matches!(report.decision.outcome, Outcome::Ours(_)) && plan.pinned.is_none();
    // A delegated server without scaling signals is never resized by signals.
    let scalable = plan.mode == Mode::FanOut || plan.signals.scale.is_some();
    let sizes = |sizing: Sizing| settings.sizing == sizing && ours && scalable;
    let max_workers = report.formula.max_workers;
    let sizer = sizes(Sizing::Measured).then_some(SizerConfig {
        soft_limit_bytes: limits.soft_limit_bytes,
        max_workers: measured_max(report.host.cpus, max_workers),
        warmup: settings.sizing_warmup,
    });
    let follows_queue = port.is_some() && plan.queue_blind.is_none();
    let inside = followed_threads(plan).is_some();
    let adaptive = (sizes(Sizing::Adaptive) && follows_queue).then(|| {
        let a = settings.adaptive;
        AdaptiveConfig {
            floor: plan.workers,
            // Past the CPU cap: the CPU rule decides how far an I/O-bound app may go.
            max_workers: max_workers.unwrap_or(MAX_WEB_CONCURRENCY),
            grow_window: a.grow_window,
            grow_share: a.grow_share,
            cpu_max: a.cpu_max,
            lock_bound_cpu_max: a.lock_bound_cpu_max,
            shrink_after: a.shrink_after,
            step: a.step,
            // Threaded workers are followed at each check, not at each read of the queue.
            read_interval: match inside {
                true => crate::supervisor::memory::CHECK_INTERVAL,
                false => settings.queue_read_interval,
            },
            threaded: inside,
        }
    });
    decide::Config {
        limits,
        guard,
        sizer,
        adaptive,
        workers: plan.workers,
        threads: followed_threads(plan),
    }
}

/// Whether threads could serve more at once than the workers do: gunicorn's sync workers, or a
/// puma of one thread per worker, with `LAUNCHER_THREADS` off and a socket to see the queue of.
pub(super) fn threads_would_help(plan: &Plan, report: &Report, port: Option<u16>) -> bool {
    let one_thread = match plan.server {
        crate::servers::Server::Gunicorn => plan.threads.is_none() && plan.queue_blind.is_none(),
        crate::servers::Server::Puma => plan.threads == Some(1),
        _ => false,
    };
    one_thread && report.threads.is_none() && port.is_some()
}

/// Threads per worker where adaptive sizing follows what waits inside the workers, at each
/// check: gunicorn's gthread workers (their connections' unread requests) and a puma with its
/// control app (its backlog); other servers are followed by the accept queue.
fn followed_threads(plan: &Plan) -> Option<u32> {
    let gthread = plan.server == crate::servers::Server::Gunicorn;
    plan.threads
        .filter(|_| gthread || plan.puma_control.is_some())
}

/// What follows a change of the dyno's limits: the soft limit always; the worker count where it is
/// the launcher's, in the sizing that runs (docs/architecture.md, "Limits that change").
pub(super) fn follow_rules(
    control: &decide::Config,
    settings: &RunSettings,
    report: &Report,
    plan: &Plan,
) -> Rules {
    let count = match &report.decision.outcome {
        _ if plan.pinned.is_some() => {
            let pin = plan.pinned.as_ref().map_or("", |p| p.setting.as_str());
            Count::Kept(format!("the command pins the worker count ({pin})"))
        }
        Outcome::Disabled { .. } => Count::Kept("sizing is off (LAUNCHER_DISABLE)".to_owned()),
        Outcome::Users(_) => Count::Kept("WEB_CONCURRENCY is the user's".to_owned()),
        Outcome::Ours(_) if plan.mode == Mode::Delegate && plan.signals.scale.is_none() => {
            Count::Kept(format!(
                "{} has no signals to add or remove a worker with",
                plan.server
            ))
        }
        Outcome::Ours(_) => Count::Sized(control.sizing()),
    };
    Rules {
        soft_limit_percent: settings.soft_limit_percent,
        web_memory_mb: report.formula.web_memory_mb,
        max_workers: report.formula.max_workers,
        count,
    }
}

/// Why the sizing asked for does not run, for a `config` warning; None when it runs or none was
/// asked for.
pub(super) fn not_running(
    control: &decide::Config,
    settings: &RunSettings,
    report: &Report,
    plan: &Plan,
    port: Option<u16>,
) -> Option<String> {
    if settings.sizing == Sizing::Static || control.sizing() == settings.sizing {
        return None;
    }
    let why = match report.decision.outcome.owner() {
        _ if plan.pinned.is_some() => {
            let pin = plan.pinned.as_ref().map_or("", |p| p.setting.as_str());
            format!("the command pins the worker count ({pin}), and a count that is not the launcher's own is never changed")
        }
        _ if matches!(report.decision.outcome, Outcome::Disabled { .. }) => {
            "sizing is off (LAUNCHER_DISABLE)".to_owned()
        }
        Some(who) if who != crate::sizing::SET_BY => format!(
            "WEB_CONCURRENCY is set by {who}, and a value that is not the launcher's own is \
             never changed"
        ),
        _ if plan.mode == Mode::Delegate && plan.signals.scale.is_none() => {
            "this server has no signals to add or remove a worker with".to_owned()
        }
        _ if port.is_none() => {
            "there is no socket (PORT is not set): no accept queue to follow".to_owned()
        }
        _ => match &plan.queue_blind {
            Some(why) => format!("{}: {why}", plan.server),
            None => "it cannot run here".to_owned(),
        },
    };
    Some(format!(
        "LAUNCHER_SIZING={} has no effect: {why}; the worker count stays static",
        settings.sizing
    ))
}
