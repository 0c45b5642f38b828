//! `launcher run -- CMD ARGS...`: the pre-fork supervisor. One loop: wait for a signal, a readiness
//! message or a timer -> handle signals -> reap -> converge towards the wanted workers (`pool`).

mod backoff;
mod log;
mod net;
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
use crate::servers::{self, Mode};
use log::Event;
use pool::{Action, Pool};
use settings::RunSettings;

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
    let mut handled = SigSet::empty();
    HANDLED.iter().for_each(|s| handled.add(*s));
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled), None)
        .map_err(|e| fatal(1)(format!("cannot block signals: {e}")))?;
    let signals = SignalFd::with_flags(&handled, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| fatal(1)(format!("cannot read signals: {e}")))?;

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
    let notify = net::Notify::bind().ok();
    plan.log_start(port, listener.as_ref());
    let env = plan.child_env(notify.as_ref().map(|n| n.name.as_str()));
    let mut command = spawn::Prepared::new(
        &path,
        &plan.argv,
        &env,
        listener.as_ref().map(|l| l.fd.as_raw_fd()),
        plan.death_signal(),
    )
    .map_err(fatal(2))?;

    let now = Instant::now();
    let seed = u64::from(std::process::id()) ^ now.elapsed().as_nanos() as u64 ^ 0x9e37_79b9;
    let config = pool::Config {
        mode: plan.mode,
        workers: plan.workers,
        ready_grace: settings.ready_grace,
        give_up_after: settings.give_up_after,
        graceful_timeout: settings.graceful_timeout,
        on_heroku,
        boot_failure_hint: plan.boot_failure_hint(port),
    };
    let mut looped = Loop {
        pool: Pool::new(config, now, seed),
        signals,
        notify,
        listener,
        command: &mut command,
        sample_interval: settings.sample_interval,
        next_sample: settings.sample_interval.map(|i| now + i),
    };
    Ok(looped.run())
}

/// `PORT`: none (no socket), or a port number.
fn port(text: Option<&str>) -> Result<Option<u16>, String> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    crate::config::whole_number(text, u64::from(u16::MAX))
        .map(|n| Some(n as u16))
        .ok_or_else(|| {
            format!(
                "PORT={} is not a port number from 1 to 65535",
                crate::config::shown(text)
            )
        })
}

/// The mode, worker count and command line the workers run with.
struct Plan {
    mode: Mode,
    mode_reason: String,
    server: servers::Server,
    workers: u32,
    set_by: String,
    argv: Vec<OsString>,
    rewrite: servers::Rewrite,
}

impl Plan {
    fn new(request: &Request, settings: &RunSettings, report: &Report, socket: bool) -> Plan {
        let found = servers::identify(&request.command);
        let (mode, mode_reason) = match (request.mode, settings.mode) {
            (Some(mode), _) => (mode, "--mode".to_owned()),
            (None, Some(mode)) => (mode, "LAUNCHER_MODE or launcher.toml".to_owned()),
            (None, None) => servers::auto_mode(found.server),
        };
        let rewrite = if socket {
            servers::use_socket(&request.command, found)
        } else {
            servers::Rewrite {
                argv: request.command.clone(),
                ..Default::default()
            }
        };
        let workers = report.decision.outcome.web_concurrency().unwrap_or(1);
        Plan {
            mode,
            mode_reason,
            server: found.server,
            workers,
            set_by: report
                .decision
                .outcome
                .set_by()
                .unwrap_or("user")
                .to_owned(),
            argv: rewrite.argv.clone(),
            rewrite,
        }
    }

    fn log_start(&self, port: Option<u16>, listener: Option<&net::Listener>) {
        let mut start = Event::info("start")
            .with("mode", self.mode)
            .with("server", self.server)
            .with("workers", self.workers)
            .with("set_by", &self.set_by)
            .with("mode_reason", &self.mode_reason)
            .with("pid", std::process::id());
        start = match (port, listener) {
            (Some(port), Some(listener)) => start
                .with("port", port)
                .with("listen", &listener.address)
                .with("backlog", net::BACKLOG),
            _ => start.with("port", "none"),
        };
        start.emit();
        if !self.rewrite.added.is_empty() {
            let mut event = Event::info("args_rewritten");
            if !self.rewrite.removed.is_empty() {
                event = event.with("removed", self.rewrite.removed.join(" "));
            }
            event.with("added", self.rewrite.added.join(" ")).emit();
        }
    }

    /// Should the launcher die (SIGKILL, OOM kill), its children get a signal from the kernel:
    /// SIGKILL for fan-out workers; SIGTERM for a delegated server, which then stops its own workers
    /// (the launcher's grandchildren, out of the kernel's reach) instead of orphaning them.
    fn death_signal(&self) -> Signal {
        match self.mode {
            Mode::FanOut => Signal::SIGKILL,
            Mode::Delegate => Signal::SIGTERM,
        }
    }

    /// What to check when a worker dies before it is ready: in fan-out, an app that binds $PORT
    /// itself fails because the launcher holds the port.
    fn boot_failure_hint(&self, port: Option<u16>) -> Option<String> {
        let port = port?;
        let told = !self.rewrite.added.is_empty();
        Some(match (self.mode, told) {
            (Mode::FanOut, false) => format!(
                "a worker exited before it was ready. If the app binds port {port} itself it \
                 cannot share the launcher's socket: make it use the inherited socket (fd 3, \
                 LISTEN_FDS as in systemd), pass {{fd}} in the command where it takes a file \
                 descriptor, or run it without `launcher run`. Otherwise see the app's own error above."
            ),
            _ => "a worker exited before it was ready; the app's own error is above".to_owned(),
        })
    }

    /// The launcher's environment with the worker count a child must see: 1 per copy in
    /// fan-out (servers would multiply it otherwise), N for a delegated server.
    fn child_env(&self, notify: Option<&str>) -> Vec<(OsString, OsString)> {
        let per_child = match self.mode {
            Mode::FanOut => 1,
            Mode::Delegate => self.workers,
        };
        let replaced = [
            "WEB_CONCURRENCY",
            "WEB_CONCURRENCY_SET_BY",
            "LAUNCHER_WEB_CONCURRENCY",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
        ];
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !replaced.iter().any(|r| k == r))
            .collect();
        let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
        set("WEB_CONCURRENCY", per_child.to_string());
        set("WEB_CONCURRENCY_SET_BY", crate::sizing::SET_BY.to_owned());
        set("LAUNCHER_WEB_CONCURRENCY", per_child.to_string());
        if let Some(name) = notify {
            set("NOTIFY_SOCKET", name.to_owned());
        }
        env
    }
}

struct Loop<'a> {
    pool: Pool,
    signals: SignalFd,
    notify: Option<net::Notify>,
    listener: Option<net::Listener>,
    command: &'a mut spawn::Prepared,
    sample_interval: Option<Duration>,
    next_sample: Option<Instant>,
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
        let (workers, ready, restarts) = self.pool.counts();
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
