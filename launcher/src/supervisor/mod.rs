//! `launcher run -- CMD ARGS...`: the pre-fork supervisor. One loop: wait for a signal, a readiness
//! message or a timer -> handle signals -> reap -> converge towards the wanted workers (`pool`).

mod backoff;
mod log;
mod net;
mod plan;
mod pool;
mod procs;
pub mod settings;
mod spawn;

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::Env;
use crate::report::Report;
use crate::servers::Mode;
use log::Event;
use plan::{port, Plan};
use pool::{Action, Pool};

/// What `launcher run` was asked for on its command line.
pub struct Request {
    pub mode: Option<Mode>,
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
    // First, so that a signal during setup waits for the loop instead of killing the launcher.
    let signals = block_signals()?;
    let env = Env::from_process();
    let on_heroku = env.get("DYNO").is_some_and(|d| !d.is_empty());
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let app_dir = request.app_dir.clone().unwrap_or_else(|| cwd.clone());
    let settings = settings::load(&env, Some(&app_dir), on_heroku).map_err(fatal(2))?;
    let report = Report::gather(Path::new("/"), &env, Some(&app_dir));
    if let Some(problem) = report.settings.file_problems.first() {
        return Err(fatal(2)(problem.clone()));
    }
    let port = port(env.get("PORT")).map_err(fatal(2))?;
    let program = request.command.first().cloned().unwrap_or_default();
    let path =
        spawn::resolve(&program, std::env::var_os("PATH").as_deref(), &cwd).map_err(|e| Fatal {
            message: format!("cannot run {}", e.message),
            exit_code: e.exit_code,
        })?;
    let plan = Plan::new(&request, &settings, &report, port.is_some());
    for warning in report.warnings().chain(&settings.warnings) {
        Event::warn("config").with("message", warning).emit();
    }
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let listener = port.map(net::listen).transpose().map_err(fatal(1))?;
    let notify = net::Notify::bind()
        .inspect_err(|err| {
            let message =
                format!("no NOTIFY_SOCKET ({err}): workers are ready by grace period only");
            Event::warn("config").with("message", message).emit();
        })
        .ok();
    plan.log_start(port, listener.as_ref());
    let env = plan.child_env(notify.as_ref().map(|n| n.name.as_str()));
    let listener_fd = listener.as_ref().map(|l| l.fd.as_raw_fd());
    let mut command =
        spawn::Prepared::new(&path, &plan.argv, &env, listener_fd, plan.death_signal())
            .map_err(fatal(2))?;
    let config = pool::Config {
        mode: plan.mode,
        workers: plan.workers,
        ready_grace: settings.ready_grace,
        give_up_after: settings.give_up_after,
        graceful_timeout: settings.graceful_timeout,
        on_heroku,
        boot_failure_hint: plan.boot_failure_hint(port),
    };
    let now = Instant::now();
    let mut looped = Loop {
        pool: Pool::new(config, now, seed()),
        signals,
        notify,
        listener,
        command: &mut command,
        sample_interval: settings.sample_interval,
        next_sample: settings.sample_interval.map(|i| now + i),
        delegate: plan.mode == Mode::Delegate,
    };
    Ok(looped.run())
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

struct Loop<'a> {
    pool: Pool,
    signals: SignalFd,
    notify: Option<net::Notify>,
    listener: Option<net::Listener>,
    command: &'a mut spawn::Prepared,
    sample_interval: Option<Duration>,
    next_sample: Option<Instant>,
    /// The sample line counts the delegated server's own workers.
    delegate: bool,
}

impl Loop<'_> {
    fn run(&mut self) -> u8 {
        loop {
            let now = Instant::now();
            let actions = self.pool.converge(now);
            self.carry_out(actions);
            if let Some(code) = self.pool.exit_code() {
                if !has_children() {
                    Event::info("exit")
                        .with("status", code)
                        .with(
                            "reason",
                            if code == 0 {
                                "shutdown complete"
                            } else {
                                "gave up"
                            },
                        )
                        .emit();
                    return code;
                }
            }
            self.wait();
            let now = Instant::now();
            self.read_signals(now);
            self.reap(now);
            self.read_notify(now);
            self.sample(now);
        }
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        // What the pool decided is logged before it is done, so the app's reaction comes after.
        self.emit_events();
        for action in actions {
            match action {
                Action::Spawn { slot } => match self.command.spawn() {
                    Ok(pid) => self.pool.spawned(slot, pid.as_raw(), Instant::now()),
                    Err(err) => self.pool.spawn_failed(slot, err.desc(), Instant::now()),
                },
                Action::Signal { pid, signal } => {
                    let _ = signal::kill(Pid::from_raw(pid), signal);
                }
                Action::KillAll => {
                    let parents = procs::parents(Path::new("/proc"));
                    for pid in procs::descendants(&parents, std::process::id() as i32) {
                        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                Action::CloseListener => self.listener = None,
            }
        }
        self.emit_events();
    }

    fn emit_events(&mut self) {
        for event in self.pool.take_events() {
            event.emit();
        }
    }

    /// Sleeps until a signal, a readiness message or the next timer.
    fn wait(&self) {
        let now = Instant::now();
        let wakeups = [self.pool.next_wakeup(), self.next_sample];
        let timeout = wakeups
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now) + Duration::from_millis(1));
        let timeout = timeout.map_or(PollTimeout::NONE, |d| {
            PollTimeout::try_from(d.min(Duration::from_secs(60))).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        if let Some(notify) = &self.notify {
            fds.push(PollFd::new(notify.as_fd(), PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => {
                Event::error("poll_failed").with("error", err.desc()).emit();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn read_signals(&mut self, now: Instant) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if signal != Signal::SIGCHLD {
                let actions = self.pool.signal(signal, now);
                self.carry_out(actions);
            }
        }
    }

    /// Reaps every child that ended: workers, and orphans adopted as subreaper.
    fn reap(&mut self, now: Instant) {
        loop {
            let status = match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit:{code}")),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    (pid, format!("signal:{}", signal as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            self.pool.exited(status.0.as_raw(), &status.1, now);
        }
    }

    fn read_notify(&mut self, now: Instant) {
        let Some(notify) = &self.notify else { return };
        let senders = notify.ready_senders();
        if senders.is_empty() {
            return;
        }
        let parents = procs::parents(Path::new("/proc"));
        let workers = self.pool.worker_pids();
        for sender in senders {
            if let Some(worker) = procs::ancestor_in(&parents, sender, &workers) {
                self.pool.notified_ready(worker, now);
            }
        }
    }

    fn sample(&mut self, now: Instant) {
        let (Some(interval), Some(due)) = (self.sample_interval, self.next_sample) else {
            return;
        };
        if now < due {
            return;
        }
        self.next_sample = Some(now + interval);
        let proc_dir = Path::new("/proc");
        let me = std::process::id() as i32;
        let parents = procs::parents(proc_dir);
        let app: u64 = procs::descendants(&parents, me)
            .into_iter()
            .map(|pid| procs::rss_bytes(proc_dir, pid))
            .sum();
        let (mut workers, mut ready, restarts) = self.pool.counts();
        if self.delegate {
            // The server's own workers, not the one server process.
            let servers = self.pool.worker_pids();
            let forked = parents.values().filter(|p| servers.contains(p)).count();
            (workers, ready) = (forked, if ready > 0 { forked } else { 0 });
        }
        let mb = |bytes: u64| format!("{:.1}MB", bytes as f64 / (1024.0 * 1024.0));
        Event::info("sample")
            .with("sample#workers", workers)
            .with("sample#workers_ready", ready)
            .with("sample#restarts", restarts)
            .with("sample#memory_rss", mb(app))
            .with("sample#launcher_rss", mb(procs::rss_bytes(proc_dir, me)))
            .emit();
    }
}

/// Whether any child (worker or adopted orphan) is left to wait for.
fn has_children() -> bool {
    !matches!(
        nix::sys::wait::waitid(
            nix::sys::wait::Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
        ),
        Err(Errno::ECHILD)
    )
}
