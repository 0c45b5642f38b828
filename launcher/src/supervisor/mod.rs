//! `launcher run -- CMD ARGS...`: the pre-fork supervisor. One loop: wait for a signal, a readiness
//! message or a timer -> handle signals -> reap -> converge towards the wanted workers (`pool`).

mod adaptive;
mod backoff;
mod diag;
mod event_loop;
mod figures;
mod kill;
mod load;
mod log;
mod memory;
mod net;
mod plan;
mod pool;
mod serving;
mod settings;
mod spawn;

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::env::Env;
use crate::host::Snapshot;
use crate::report::Report;
use crate::servers::ModeChoice;
use crate::settings::Settings;
use crate::state;
use crate::usage::cpu::CpuMeter;
use crate::usage::Meter;
use event_loop::Loop;
use load::Load;
use log::Event;
use memory::Watch;
use plan::{port, Plan};
use pool::Pool;

/// What `launcher run` was asked for on its command line.
pub struct Request {
    /// `--mode`; None when not given.
    pub mode: Option<ModeChoice>,
    pub app_dir: Option<PathBuf>,
    pub command: Vec<OsString>,
}

/// A failure before the first worker starts: the message and the exit status.
#[derive(Debug)]
pub struct Fatal {
    pub message: String,
    pub exit_code: u8,
}

fn fatal(exit_code: u8) -> impl Fn(String) -> Fatal {
    move |message| Fatal { message, exit_code }
}

/// The signals the loop handles; all are blocked and read from a signalfd.
const HANDLED: [Signal; 10] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGCHLD,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Runs the app until it is asked to stop (exit 0) or gives up on a crash loop (exit 1).
pub fn run(request: Request) -> Result<u8, Fatal> {
    // First, so that a signal during setup waits for the loop instead of killing the launcher;
    // then the log's writer thread, which inherits the blocked mask.
    let signals = block_signals()?;
    log::start();
    let result = supervise(request, signals);
    // At exit, the lines still queued for a slow stdout get at most a second.
    log::flush(std::time::Duration::from_secs(1));
    result
}

fn supervise(request: Request, signals: SignalFd) -> Result<u8, Fatal> {
    let env = Env::from_process();
    // Heroku either way (the graceful timeout is capped under its SIGKILL); only Cedar signals
    // every process of the dyno itself (docs/architecture.md, "The supervisor").
    let on_heroku = env.get("DYNO").is_some_and(|d| !d.is_empty());
    let platform_signals_all = crate::dynos::is_cedar(env.get("DYNO"));
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let app_dir = request.app_dir.clone().unwrap_or_else(|| cwd.clone());
    // The file is read once; a problem in it stops `launcher run` (the build log has warned).
    let loaded = Settings::load(&env, Some(&app_dir));
    if let Some(refusal) = loaded.refusal() {
        return Err(fatal(2)(refusal));
    }
    let settings = settings::RunSettings::new(&loaded, on_heroku);
    let report = Report::gather(Path::new("/"), &env, loaded);
    let port = port(env.get("PORT")).map_err(fatal(2))?;
    let program = request.command.first().cloned().unwrap_or_default();
    let path =
        spawn::resolve(&program, std::env::var_os("PATH").as_deref(), &cwd).map_err(|e| Fatal {
            message: format!("cannot run {}", e.message),
            exit_code: e.exit_code,
        })?;
    for warning in report.warnings().iter().chain(&settings.warnings) {
        Event::warn("config").with("message", warning).emit();
    }
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // Bound before the plan: a server told its address on the command line (puma) is told this.
    let listener = port.map(net::listen).transpose().map_err(fatal(1))?;
    let address = listener.as_ref().map(|l| l.address.as_str());
    let plan = Plan::new(&request, &settings, &report, address, &app_dir);
    let notify = net::Notify::bind()
        .inspect_err(|err| {
            let message =
                format!("no NOTIFY_SOCKET ({err}): workers are ready by grace period only");
            Event::warn("config").with("message", message).emit();
        })
        .ok();
    plan.log_start(port, listener.as_ref());
    let env = plan.child_env(&report, notify.as_ref().map(|n| n.name.as_str()));
    let listener_fd = listener.as_ref().map(|l| l.fd.as_raw_fd());
    let mut command =
        spawn::Prepared::new(&path, &plan.argv, &env, listener_fd, plan.death_signal())
            .map_err(fatal(2))?;
    let config = pool::Config {
        mode: plan.mode,
        server: plan.server,
        signals: plan.signals,
        workers: plan.workers,
        ready_grace: settings.ready_grace,
        give_up_after: settings.give_up_after,
        graceful_timeout: settings.graceful_timeout,
        ready_timeout: settings.ready_timeout,
        socket: port.is_some(),
        on_heroku: platform_signals_all,
        boot_failure_hint: plan.boot_failure_hint(port),
    };
    let now = Instant::now();
    let snapshot = Snapshot::new(Path::new("/"));
    let meter = Meter::for_host(&snapshot, &report.host, std::process::id() as i32);
    let watch_config = memory::configure(&settings, &report, &plan, port);
    let cpu = CpuMeter::for_host(&report.host, &meter, std::process::id() as i32);
    memory::log_start(&watch_config, (&meter, &cpu), &settings, &report, &plan);
    let load = Load::new(
        settings.queue_read_interval,
        cpu,
        report.host.cpu_capacity,
        now,
    );
    let cpu_window = settings.adaptive.step.max(Duration::from_secs(1));
    let mut looped = Loop {
        pool: Pool::new(config, now, seed()),
        watch: Watch::new(snapshot, meter, watch_config, now),
        signals,
        notify,
        listener,
        command: &mut command,
        sample_interval: settings.sample_interval,
        next_sample: settings.sample_interval.map(|i| now + i),
        mode: plan.mode,
        state_dir: state_dir(),
        scope: state::Scope::own(),
        state_failed: false,
        next_state: now,
        notify_paused_until: None,
        wrapper_checked: false,
        load,
        snapshot: Snapshot::new(Path::new("/")),
        cpu_window,
    };
    Ok(looped.run())
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

/// Blocks the handled signals and opens the signalfd the loop reads them from.
fn block_signals() -> Result<SignalFd, Fatal> {
    let mut handled = SigSet::empty();
    HANDLED.iter().for_each(|s| handled.add(*s));
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled), None)
        .map_err(|e| fatal(1)(format!("cannot block signals: {e}")))?;
    SignalFd::with_flags(&handled, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| fatal(1)(format!("cannot read signals: {e}")))
}

/// A seed for the restart jitter, different per launcher.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}
