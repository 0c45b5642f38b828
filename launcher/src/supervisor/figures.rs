//! What the supervisor reports of itself: the periodic `sample#` line, in the form of Heroku's
//! log-runtime-metrics, and the state file that `launcher size` reads.

use std::path::Path;

use super::load::Figures;
use super::log::Event;
use super::memory::{mb, Watch};
use super::pool::Pool;
use crate::host::Snapshot;
use crate::procs;
use crate::servers::Mode;
use crate::state;

/// The `sample#` line: workers, restarts, the accept queue, the dyno's CPU and memory, and the
/// launcher's own.
pub fn sample(pool: &Pool, watch: &Watch, load: &Figures, mode: Mode) -> Event {
    let proc_dir = Path::new("/proc");
    let me = std::process::id() as i32;
    let (mut workers, mut ready, restarts) = pool.counts();
    if mode == Mode::Delegate {
        // The server's own workers, not the one server process.
        let servers = pool.worker_pids().into_iter();
        let forked = servers.map(|s| procs::children(proc_dir, s).len()).sum();
        (workers, ready) = (forked, if ready > 0 { forked } else { 0 });
    }
    let mut event = Event::info("sample")
        .with("sample#workers", workers)
        .with("sample#workers_ready", ready)
        .with("sample#restarts", restarts);
    if let Some(busy) = watch.busy {
        event = event.with("sample#workers_busy", busy);
    }
    if let Some(queue) = load.queue {
        event = event
            .with("sample#listen_queue", queue.queued)
            .with(
                "sample#listen_queue_max",
                load.queue_max.unwrap_or(queue.queued),
            )
            .with("sample#listen_backlog", queue.backlog);
    }
    if let Some(busy) = load.cpu_busy {
        event = event.with("sample#cpu_busy", format!("{busy:.2}"));
    }
    if let Some(usage) = watch.usage {
        event = event
            .with("sample#memory_total", mb(usage.total_bytes()))
            .with("sample#memory_rss", mb(usage.rss_bytes))
            .with("sample#memory_swap", mb(usage.swap_bytes));
    }
    event = event.with("sample#memory_quota", mb(watch.config().quota_bytes));
    if let Some(reading) = &watch.reading {
        let uss = reading.workers.iter().map(|w| w.uss_bytes).max();
        let pss: u64 = reading.workers.iter().map(|w| w.pss_bytes).sum();
        event = event
            .with("sample#worker_uss_max", mb(uss.unwrap_or(0)))
            .with("sample#worker_pss_total", mb(pss));
    }
    // The dyno's PSI where the kernel has it (cgroup v2): avg10, in percent.
    let pressure = watch.meter().pressure(&Snapshot::new(Path::new("/")));
    if let Some(memory) = pressure.as_ref().and_then(|p| p.memory) {
        event = event.with("sample#memory_pressure_some", format!("{:.2}", memory.some));
        if let Some(full) = memory.full {
            event = event.with("sample#memory_pressure_full", format!("{full:.2}"));
        }
    }
    if let Some(cpu) = pressure.and_then(|p| p.cpu) {
        event = event.with("sample#cpu_pressure_some", format!("{:.2}", cpu.some));
    }
    if let Some(fit) = watch.fit() {
        event = event.with("sample#workers_fit", format!("{:.2}", fit.workers));
    }
    event
        .with("sample#memory_recycles", watch.recycles)
        .with("sample#oom_kills", watch.oom_total())
        .with("sample#launcher_rss", mb(procs::rss_bytes(proc_dir, me)))
}

/// What `launcher size` shows of this supervisor.
pub fn state(
    watch: &Watch,
    load: &Figures,
    cpu_capacity: f64,
    mode: Mode,
    scope: &state::Scope,
) -> state::State {
    let megabytes = |bytes: u64| (bytes as f64 / 104_857.6).round() / 10.0;
    let config = watch.config();
    let workers = watch.reading.as_ref().map(|r| &r.workers[..]);
    let mut uss: Vec<u64> = workers
        .unwrap_or_default()
        .iter()
        .map(|w| w.uss_bytes)
        .collect();
    uss.sort_unstable_by(|a, b| b.cmp(a));
    let fit = watch.fit();
    state::State {
        pid: std::process::id(),
        mode: mode.to_string(),
        sizing: watch.sizing().to_owned(),
        memory_guard: config.guard.is_some(),
        workers: workers.map_or(0, <[_]>::len),
        meter: watch.meter().describe(),
        memory_quota_mb: megabytes(config.quota_bytes),
        soft_limit_mb: megabytes(config.soft_limit_bytes),
        memory_total_mb: watch.usage.map(|u| megabytes(u.total_bytes())),
        worker_uss_mb: uss.into_iter().map(megabytes).collect(),
        fit: fit.map(|f| (f.workers * 100.0).round() / 100.0),
        worker_cost_mb: fit.map(|f| megabytes(f.worker_bytes)),
        base_mb: fit.map(|f| megabytes(f.base_bytes)),
        oom_kills: watch.oom_total(),
        memory_recycles: watch.recycles,
        workers_busy: watch.busy,
        listen_queue: load.queue.map(|q| q.queued),
        listen_queue_max: load.queue_max,
        listen_backlog: load.queue.map(|q| q.backlog),
        cpu_busy: load.cpu_busy.map(|b| (b * 100.0).round() / 100.0),
        cpu_capacity: Some(cpu_capacity),
        updated_at: state::unix_now(),
        scope: scope.clone(),
    }
}
