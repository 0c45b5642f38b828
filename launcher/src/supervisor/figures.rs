//! What the supervisor reports of itself: the periodic `sample#` line, in the form of Heroku's
//! log-runtime-metrics, and the state file that `launcher size` reads. Both from the last check's
//! reading and what the policies keep.

use super::log::Event;
use super::memory::fit::Fit;
use super::memory::Limits;
use super::pool::Pool;
use super::reading::load::Figures as LoadFigures;
use super::reading::{Reader, Reading};
use crate::procs;
use crate::servers::Mode;
use crate::sizing::Sizing;
use crate::state;
use crate::units::{mb, tenths_mb};
use crate::usage::pressure::Pressure;

/// The figures a report takes from the loop.
pub struct Figures<'a> {
    pub mode: Mode,
    /// The last check's reading (its workers, their memory, the dyno's usage).
    pub reading: Option<&'a Reading>,
    /// Busy workers at the last count.
    pub busy: Option<u32>,
    pub fit: Option<Fit>,
    pub sizing: Sizing,
    pub limits: Limits,
    pub guard: bool,
    pub recycles: u64,
    pub oom_kills: u64,
    /// Threads per worker, where the server runs threads; what waits inside the workers and
    /// their busy threads, at the last look.
    pub threads: Option<u32>,
    pub waiting: Option<u32>,
    pub threads_busy: Option<u32>,
    pub gil_bound: Option<u32>,
    /// The threads hint, once said.
    pub hint: Option<&'a str>,
}

/// The `sample#` line: workers, restarts, the accept queue, the dyno's CPU, memory and pressure
/// since the last sample, and the launcher's own memory.
pub fn sample(
    pool: &Pool,
    figures: &Figures,
    load: &LoadFigures,
    pressure: Option<&Pressure>,
    reader: &Reader,
) -> Event {
    let (mut workers, mut ready, restarts) = pool.counts();
    if figures.mode == Mode::Delegate {
        // The server's own workers, not the one server process.
        let forked = figures.reading.map_or(0, |r| r.workers.len());
        (workers, ready) = (forked, if ready > 0 { forked } else { 0 });
    }
    let threads = figures.threads.map(|threads| threads as usize * workers);
    let event = Event::info("sample")
        .with("sample#workers", workers)
        .with("sample#workers_ready", ready)
        .with("sample#restarts", restarts)
        .with_some("sample#workers_busy", figures.busy)
        .with_some("sample#threads", threads)
        .with_some("sample#threads_busy", figures.threads_busy)
        .with_some("sample#workers_gil_bound", figures.gil_bound)
        .with_some("sample#requests_waiting", figures.waiting);
    let event = with_load(event, load);
    let event = with_memory(event, figures, pressure);
    let fit = figures.fit.map(|fit| format!("{:.2}", fit.workers));
    let me = std::process::id() as i32;
    event
        .with_some("sample#workers_fit", fit)
        .with("sample#memory_recycles", figures.recycles)
        .with("sample#oom_kills", figures.oom_kills)
        .with(
            "sample#launcher_rss",
            mb(procs::rss_bytes(&reader.proc_dir(), me)),
        )
}

/// The accept queue and the dyno's CPU, where they are read.
fn with_load(mut event: Event, load: &LoadFigures) -> Event {
    if let Some(queue) = load.queue {
        event = event
            .with("sample#listen_queue", queue.queued)
            .with(
                "sample#listen_queue_max",
                load.queue_max.unwrap_or(queue.queued),
            )
            .with("sample#listen_backlog", queue.backlog);
    }
    event.with_some("sample#cpu_busy", load.cpu_busy.map(|b| format!("{b:.2}")))
}

/// The dyno's memory, the workers' where they are measured, and the dyno's PSI where the kernel
/// has it (cgroup v2): the share of the time since the last sample, in percent.
fn with_memory(mut event: Event, figures: &Figures, pressure: Option<&Pressure>) -> Event {
    if let Some(reading) = figures.reading {
        event = event
            .with("sample#memory_total", mb(reading.usage_bytes))
            .with("sample#memory_rss", mb(reading.usage.rss_bytes))
            .with("sample#memory_swap", mb(reading.usage.swap_bytes))
            .with("sample#memory_shmem", mb(reading.usage.shmem_bytes))
            .with("sample#memory_kernel", mb(reading.usage.kernel_bytes));
    }
    event = event.with("sample#memory_quota", mb(figures.limits.quota_bytes));
    if let Some(reading) = figures.reading.filter(|r| r.measured) {
        let uss = reading.workers.iter().map(|w| w.uss_bytes).max();
        let pss: u64 = reading.workers.iter().map(|w| w.pss_bytes).sum();
        event = event
            .with("sample#worker_uss_max", mb(uss.unwrap_or(0)))
            .with("sample#worker_pss_total", mb(pss));
    }
    let percent = |share: f64| format!("{share:.2}");
    let memory = pressure.and_then(|p| p.memory);
    let cpu = pressure.and_then(|p| p.cpu);
    event
        .with_some(
            "sample#memory_pressure_some",
            memory.map(|m| percent(m.some)),
        )
        .with_some(
            "sample#memory_pressure_full",
            memory.and_then(|m| m.full).map(percent),
        )
        .with_some("sample#cpu_pressure_some", cpu.map(|c| percent(c.some)))
}

/// What `launcher size` shows of this supervisor.
pub fn state(
    figures: &Figures,
    load: &LoadFigures,
    cpu_capacity: f64,
    reader: &Reader,
    scope: &state::Scope,
) -> state::State {
    let workers = figures.reading.map(|r| &r.workers[..]);
    let mut uss: Vec<u64> = workers
        .unwrap_or_default()
        .iter()
        .map(|w| w.uss_bytes)
        .collect();
    uss.sort_unstable_by(|a, b| b.cmp(a));
    let fit = figures.fit;
    let limits = figures.limits;
    state::State {
        pid: std::process::id(),
        mode: figures.mode.to_string(),
        sizing: figures.sizing.to_string(),
        memory_guard: figures.guard,
        workers: workers.map_or(0, <[_]>::len),
        meter: reader.meter.describe(),
        memory_quota_mb: tenths_mb(limits.quota_bytes),
        soft_limit_mb: tenths_mb(limits.soft_limit_bytes),
        memory_total_mb: figures.reading.map(|r| tenths_mb(r.usage_bytes)),
        worker_uss_mb: uss.into_iter().map(tenths_mb).collect(),
        fit: fit.map(|f| (f.workers * 100.0).round() / 100.0),
        worker_cost_mb: fit.map(|f| tenths_mb(f.worker_bytes)),
        base_mb: fit.map(|f| tenths_mb(f.base_bytes)),
        oom_kills: figures.oom_kills,
        memory_recycles: figures.recycles,
        workers_busy: figures.busy,
        listen_queue: load.queue.map(|q| q.queued),
        listen_queue_max: load.queue_max,
        listen_backlog: load.queue.map(|q| q.backlog),
        cpu_busy: load.cpu_busy.map(|b| (b * 100.0).round() / 100.0),
        cpu_capacity: Some(cpu_capacity),
        threads: figures.threads,
        requests_waiting: figures.waiting,
        hint: figures.hint.map(str::to_owned),
        updated_at: state::unix_now(),
        scope: scope.clone(),
    }
}
