//! What `launcher run` will run: the mode, the worker count, the command line pointed at the
//! socket, and the environment each child gets.

use std::ffi::OsString;
use std::path::Path;

use nix::sys::signal::Signal;

use super::settings::RunSettings;
use super::Request;
use crate::env::Env;
use crate::pinning;
use crate::profile;
use crate::report::Report;
use crate::servers::{self, Mode};
use crate::sizing::SET_BY;

mod command;
mod lines;

use command::{puma_control, with_control, Command};

/// `PORT`: unset (no socket: a worker dyno), or a port number. Set but empty is an error like any
/// other value that is not a port: a web process that silently got no socket would serve nothing.
pub fn port(text: Option<&str>) -> Result<Option<u16>, String> {
    let Some(text) = text else {
        return Ok(None);
    };
    crate::text::whole_number(text, u64::from(u16::MAX))
        .map(|n| Some(n as u16))
        .ok_or_else(|| {
            format!(
                "PORT={} is not a port number from 1 to 65535",
                crate::text::shown(text)
            )
        })
}

/// The mode, worker count and command line the workers run with.
pub struct Plan {
    pub mode: Mode,
    pub mode_reason: String,
    pub server: servers::Server,
    pub workers: u32,
    /// A delegated puma's control app, added for adaptive sizing to read what waits in its
    /// workers (`reading::puma`); never logged, its socket in the launcher's own directory.
    pub puma_control: Option<crate::supervisor::reading::puma::Control>,
    /// Threads per worker, where the server runs threads (gunicorn's gthread, puma): the requests
    /// each worker serves at once.
    pub threads: Option<u32>,
    /// What pins a delegated server's count in its command, config var or config file: it runs
    /// that many, whatever `WEB_CONCURRENCY` says.
    pub pinned: Option<pinning::Finding>,
    /// `WEB_CONCURRENCY` as the launcher's rules give it.
    pub sized: u32,
    pub set_by: String,
    pub argv: Vec<OsString>,
    pub rewrite: servers::Rewrite,
    /// The server's signals in this mode (puma's restart signal decided from its config).
    pub signals: servers::Signals,
    /// Why SIGHUP becomes what it does, where the config decides (puma).
    pub restart_reason: Option<String>,
    /// What the server's own config binds besides the launcher's socket (unicorn's `listen`).
    pub binds_itself: Option<String>,
    /// Why the accept queue does not show the requests waiting for this server's workers, from
    /// the behaviour table and gunicorn's worker class; None: it does (adaptive sizing can run).
    pub queue_blind: Option<String>,
    /// gunicorn's worker connections capped at the launcher's threads (`capped_connections`):
    /// the cap, and the `GUNICORN_CMD_ARGS` the children get instead of the profile's.
    pub capped: Option<(u32, String)>,
}

impl Plan {
    pub fn new(
        request: &Request,
        settings: &RunSettings,
        report: &Report,
        env: &Env,
        listen: Option<&str>,
        (app_dir, state_dir): (&Path, Option<&Path>),
    ) -> Plan {
        let command = Command::read(&request.command, app_dir);
        let found = command.found;
        let (mode, mode_reason) = servers::choose_mode(request.mode, settings.mode, found.server);
        let rewrite = match listen {
            Some(listen) => servers::use_socket(&request.command, found, listen),
            None => servers::Rewrite {
                argv: request.command.clone(),
                ..Default::default()
            },
        };
        let sized = report.decision.outcome.web_concurrency().unwrap_or(1);
        // A count the command pins is what a delegated server runs, whatever WEB_CONCURRENCY says.
        let pinned = (mode == Mode::Delegate)
            .then(|| pinning::in_command(found.server, &command.words, env, command.config()))
            .flatten();
        let workers = pinned.as_ref().and_then(|p| p.workers()).unwrap_or(sized);
        let (signals, restart_reason, binds_itself) = command.signals(mode, workers);
        let (threads, queue_blind) = command.served_how(report, env);
        let capped = command.capped(threads, report, env);
        let adaptive = settings.sizing == crate::sizing::Sizing::Adaptive;
        let follows_puma = command.follows_puma(mode, adaptive, threads);
        let puma_control = state_dir.filter(|_| follows_puma).map(puma_control);
        let argv = with_control(rewrite.argv.clone(), puma_control.as_ref());
        Plan {
            mode,
            mode_reason,
            server: found.server,
            workers,
            threads,
            pinned,
            sized,
            // `none`: sizing is disabled and nothing set WEB_CONCURRENCY, so 1 worker.
            set_by: match report.decision.outcome.web_concurrency() {
                None => "none",
                Some(_) => report.decision.outcome.set_by().unwrap_or("user"),
            }
            .to_owned(),
            argv,
            puma_control,
            rewrite,
            signals,
            restart_reason,
            binds_itself,
            queue_blind,
            capped,
        }
    }

    /// Should the launcher die (SIGKILL, OOM kill), its children get a signal from the kernel:
    /// SIGKILL for fan-out workers; a delegated server's graceful stop signal, so that it stops
    /// its own workers (the launcher's grandchildren, out of the kernel's reach) instead of
    /// orphaning them.
    pub fn death_signal(&self) -> Signal {
        match self.mode {
            Mode::FanOut => Signal::SIGKILL,
            Mode::Delegate => self.signals.graceful,
        }
    }

    /// The launcher's environment as the profile leaves it (`profile::exports`, so a child sees
    /// what a dyno's boot would have given it, also where no profile ran), with the worker count
    /// a child must see. One rule (docs/architecture.md, "What children get"):
    /// - fan-out: `WEB_CONCURRENCY=1`, marked as the launcher's, with the launcher's computed value
    ///   in `LAUNCHER_WEB_CONCURRENCY`: the profile run again in the child keeps 1, as a value set
    ///   inline (servers would multiply a count of N by N copies otherwise); the threads' exports
    ///   as in delegate mode (each copy runs that many);
    /// - delegate: `WEB_CONCURRENCY=N`, its `WEB_CONCURRENCY_SET_BY` and `LAUNCHER_WEB_CONCURRENCY`
    ///   exactly as the profile set them: a user's value stays the user's.
    pub fn child_env(&self, report: &Report, notify: Option<&str>) -> Vec<(OsString, OsString)> {
        let exports = profile::exports(report);
        let mut replaced = vec![
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
        ];
        replaced.extend(exports.iter().map(|(name, _)| *name));
        let mut set: Vec<(&str, String)> = exports;
        match self.mode {
            Mode::FanOut => {
                // The count's exports are each copy's own; `DYNO_RAM` and the threads' stay.
                let count = [
                    "WEB_CONCURRENCY",
                    "WEB_CONCURRENCY_SET_BY",
                    "LAUNCHER_WEB_CONCURRENCY",
                ];
                replaced.extend(count);
                set.retain(|(name, _)| !count.contains(name));
                set.push(("WEB_CONCURRENCY", "1".to_owned()));
                set.push(("WEB_CONCURRENCY_SET_BY", SET_BY.to_owned()));
                let computed = report.formula.value.to_string();
                set.push(("LAUNCHER_WEB_CONCURRENCY", computed));
            }
            Mode::Delegate => {
                replaced.push("WEB_CONCURRENCY");
                set.retain(|(name, _)| *name != "WEB_CONCURRENCY");
                set.push(("WEB_CONCURRENCY", self.workers.to_string()));
            }
        }
        if let Some((_, args)) = &self.capped {
            set.retain(|(name, _)| *name != "GUNICORN_CMD_ARGS");
            set.push(("GUNICORN_CMD_ARGS", args.clone()));
        }
        if let Some(name) = notify {
            replaced.push("NOTIFY_SOCKET");
            set.push(("NOTIFY_SOCKET", name.to_owned()));
        }
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !replaced.iter().any(|r| k == r))
            .collect();
        env.extend(set.into_iter().map(|(k, v)| (k.into(), v.into())));
        env
    }
}
