//! Everything `launcher run` decides once, before the loop: the settings (refusing a bad
//! `launcher.toml`), the host's size, the command resolved, the socket bound before any worker
//! starts, the plan, the command prepared for fork/exec, and the configuration of the pool, the
//! reader and the policies, each built once from those facts. The start lines say what was
//! decided (docs/architecture.md, "The supervisor"). The policies' configuration is `policies.rs`.

mod policies;

use policies::{control_config, follow_rules, not_running, threads_would_help};

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::decide;
use super::limits::Rules;
use super::log::Event;
use super::net::{self, Listener, Notify};
use super::plan::{port, Plan};
use super::pool;
use super::reading::{self, diag, Load, Reader};
use super::settings::RunSettings;
use super::spawn;
use super::{fatal, Fatal, Request};
use crate::env::Env;
use crate::host::{Size, Snapshot};
use crate::report::Report;
use crate::servers::Mode;
use crate::settings::Settings;
use crate::sizing::{Sizing, MAX_WEB_CONCURRENCY};
use crate::state;
use crate::units::mb;
use crate::usage::cpu::CpuMeter;
use crate::usage::Meter;

/// What the loop starts from.
pub struct Setup {
    pub mode: Mode,
    pub pool: pool::Config,
    pub control: decide::Config,
    /// What follows a change of the dyno's limits, and the limits at start.
    pub follow: (Rules, Size),
    pub reader: Reader,
    /// `LAUNCHER_MAX_WORKERS`, else the largest count taken: what TTIN never goes past.
    pub max_workers: u32,
    pub listener: Option<Listener>,
    pub notify: Option<Notify>,
    pub command: spawn::Prepared,
    pub sample_interval: Option<Duration>,
    /// Where the state file is kept; None when it cannot be (said once at start).
    pub state_dir: Option<PathBuf>,
    /// Whether to look for workers that wait more than they compute (`hint`): one thread each,
    /// threads not asked for.
    pub threads_hint: bool,
}

/// The facts of this run: the settings, the host, what the environment says of the platform.
struct Facts {
    env: Env,
    cwd: PathBuf,
    app_dir: PathBuf,
    settings: RunSettings,
    report: Report,
    /// `DYNO` in Cedar's form: the platform signals every process itself.
    on_cedar: bool,
}

impl Facts {
    fn gather(request: &Request) -> Result<Facts, Fatal> {
        let env = Env::from_process();
        // Heroku either way (the graceful timeout is capped under its SIGKILL); only Cedar
        // signals every process of the dyno itself (docs/architecture.md, "The supervisor").
        let on_heroku = env.get("DYNO").is_some_and(|d| !d.is_empty());
        let on_cedar = crate::dynos::is_cedar(env.get("DYNO"));
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let app_dir = request.app_dir.clone().unwrap_or_else(|| cwd.clone());
        // The file is read once; a problem in it stops `launcher run` (the build log has warned).
        let loaded = Settings::load(&env, Some(&app_dir));
        if let Some(refusal) = loaded.refusal() {
            return Err(fatal(2)(refusal));
        }
        let settings = RunSettings::new(&loaded, on_heroku);
        let report = Report::gather(Path::new("/"), &env, loaded);
        Ok(Facts {
            env,
            cwd,
            app_dir,
            settings,
            report,
            on_cedar,
        })
    }
}

impl Setup {
    pub fn new(request: &Request) -> Result<Setup, Fatal> {
        let facts = Facts::gather(request)?;
        let (settings, report) = (&facts.settings, &facts.report);
        let port = port(facts.env.get("PORT")).map_err(fatal(2))?;
        let program = request.command.first().cloned().unwrap_or_default();
        // PATH and TMPDIR as the process has them, bytes and all (`Env` holds text).
        let path_var = std::env::var_os("PATH");
        let path =
            spawn::resolve(&program, path_var.as_deref(), &facts.cwd).map_err(|e| Fatal {
                message: format!("cannot run {}", e.message),
                exit_code: e.exit_code,
            })?;
        for warning in report.warnings().iter().chain(&settings.warnings) {
            Event::warn("config").with("message", warning).emit();
        }
        become_subreaper();
        let state_dir = state_dir();
        // Bound before the plan: a server told its address on the command line (puma) is told
        // this.
        let listener = port.map(net::listen).transpose().map_err(fatal(1))?;
        let address = listener.as_ref().map(|l| l.address.as_str());
        let dirs = (facts.app_dir.as_path(), state_dir.as_deref());
        let plan = Plan::new(request, settings, report, &facts.env, address, dirs);
        let notify = Notify::bind()
            .inspect_err(|err| {
                let message =
                    format!("no NOTIFY_SOCKET ({err}): workers are ready by grace period only");
                Event::warn("config").with("message", message).emit();
            })
            .ok();
        plan.log_start(port, listener.as_ref());
        let env = plan.child_env(report, notify.as_ref().map(|n| n.name.as_str()));
        let listener_fd = listener.as_ref().map(|l| l.fd.as_raw_fd());
        let command =
            spawn::Prepared::new(&path, &plan.argv, &env, listener_fd, plan.death_signal())
                .map_err(fatal(2))?;
        let control = control_config(settings, report, &plan, port);
        let threads_hint = threads_would_help(&plan, report, port);
        let socket = listener.as_ref().map(|l| diag::Socket::of(&l.fd));
        let socket = socket.transpose().map_err(|e| Fatal {
            message: format!("cannot read the address of the socket just bound: {e}"),
            exit_code: 1,
        })?;
        let reader = reader(&control, settings, report, &plan, (socket, threads_hint));
        log_start(&control, &reader, settings, report, &plan);
        let follow = (
            follow_rules(&control, settings, report, &plan),
            report.host.size(),
        );
        Ok(Setup {
            mode: plan.mode,
            pool: pool_config(settings, &plan, port, facts.on_cedar),
            control,
            follow,
            reader,
            max_workers: report
                .formula
                .max_workers
                .unwrap_or(MAX_WEB_CONCURRENCY)
                .min(MAX_WEB_CONCURRENCY),
            threads_hint,
            listener,
            notify,
            command,
            sample_interval: settings.sample_interval,
            state_dir,
        })
    }
}

/// As tini does, the launcher depends on being the subreaper of what its workers start: the
/// shutdown's sweep and the reaping of orphans rely on it. Where the kernel refuses, one line
/// says what is lost.
fn become_subreaper() {
    if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
        let message = "cannot become the child subreaper: processes that leave their worker \
                       (a double fork, setsid) are reparented past the launcher, which then \
                       neither reaps nor stops them";
        Event::warn("subreaper")
            .with("error", err.desc())
            .with("message", message)
            .emit();
    }
}

fn pool_config(
    settings: &RunSettings,
    plan: &Plan,
    port: Option<u16>,
    on_cedar: bool,
) -> pool::Config {
    pool::Config {
        mode: plan.mode,
        server: plan.server,
        signals: plan.signals,
        workers: plan.workers,
        ready_grace: settings.ready_grace,
        give_up_after: settings.give_up_after,
        graceful_timeout: settings.graceful_timeout,
        ready_timeout: settings.ready_timeout,
        socket: port.is_some(),
        on_cedar,
        boot_failure_hint: plan.boot_failure_hint(port),
    }
}

/// The reader: where the dyno's memory and CPU time are read, the accept queue, and what adaptive
/// sizing needs besides (its CPU window: a step, at least a second), or the threads hint.
fn reader(
    control: &decide::Config,
    settings: &RunSettings,
    report: &Report,
    plan: &Plan,
    (socket, threads_hint): (Option<diag::Socket>, bool),
) -> Reader {
    let snapshot = Snapshot::live();
    let me = std::process::id() as i32;
    let meter = Meter::for_host(&snapshot, &report.host, me);
    let cpu = CpuMeter::for_host(&report.host, &meter, me);
    let capacity = report.host.cpu_capacity;
    let load = Load::new(settings.queue_read_interval, cpu, capacity, Instant::now());
    // Adaptive sizing's CPU rule reads the CPU at each check; so does the threads hint.
    let cpu_window = match &control.adaptive {
        Some(a) => Some(a.step.max(Duration::from_secs(1))),
        None => threads_hint.then_some(Duration::from_secs(10)),
    };
    let config = reading::Config {
        mode: plan.mode,
        ready_grace: settings.ready_grace,
        socket,
        busy_known: plan.queue_blind.is_none(),
        cpu_capacity: capacity,
        cpu_window,
        limit_files: report.host.limit_files.clone(),
        threads: plan.threads,
        puma: plan.puma_control.clone(),
    };
    Reader::new(snapshot, meter, load, config)
}

/// The `memory` line at start: where usage is read, the limits, and what will act on them, with
/// the thresholds of the sizing that runs.
fn log_start(
    control: &decide::Config,
    reader: &Reader,
    settings: &RunSettings,
    report: &Report,
    plan: &Plan,
) {
    if let Some(message) = not_running(
        control,
        settings,
        report,
        plan,
        reader.config.socket.map(|s| s.port),
    ) {
        Event::warn("config").with("message", message).emit();
    }
    let worker_max = control.guard.as_ref().and_then(|g| g.worker_max_bytes);
    let mut event = Event::info("memory")
        .with("quota", mb(control.limits.quota_bytes))
        .with("soft_limit", mb(control.limits.soft_limit_bytes))
        .with("guard", if control.guard.is_some() { "on" } else { "off" })
        .with("worker_max", worker_max.map_or("none".to_owned(), mb));
    event = match (&control.sizer, &control.adaptive) {
        (Some(sizer), _) => event
            .with("sizing", Sizing::Measured)
            .with("max_workers", sizer.max_workers)
            .secs("warmup_s", sizer.warmup),
        (None, Some(adaptive)) => event
            .with("sizing", Sizing::Adaptive)
            .with("min_workers", adaptive.floor)
            .with("max_workers", adaptive.max_workers)
            .secs("grow_window_s", adaptive.grow_window)
            .with("grow_share", format!("{:.2}", adaptive.grow_share))
            .with("cpu_max", format!("{:.2}", adaptive.cpu_max))
            .secs("shrink_after_s", adaptive.shrink_after)
            .secs("step_s", adaptive.step),
        (None, None) => event.with("sizing", Sizing::Static),
    };
    event
        .with("meter", reader.meter.describe())
        .with("cpus", report.host.cpu_capacity)
        .with("cpu_meter", reader.load.cpu_meter().describe())
        .emit();
}

/// The state file's directory, made ready; when none can be used, one line says why.
fn state_dir() -> Option<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    let place = state::place(std::env::var_os("TMPDIR").as_deref(), uid);
    if let Some(note) = &place.note {
        Event::warn("state").with("message", note).emit();
    }
    match state::prepare(&place.dir, uid) {
        Ok(()) => {
            state::sweep(&place.dir, state::unix_now());
            Some(place.dir)
        }
        Err(why) => {
            let message = format!(
                "no state file is kept ({why}); launcher size will not show this supervisor"
            );
            Event::warn("state").with("message", message).emit();
            None
        }
    }
}
