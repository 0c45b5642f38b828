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

mod lines;

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
        let found = servers::identify(&request.command);
        let (mode, mode_reason) = servers::choose_mode(request.mode, settings.mode, found.server);
        let rewrite = if let Some(listen) = listen {
            servers::use_socket(&request.command, found, listen)
        } else {
            servers::Rewrite {
                argv: request.command.clone(),
                ..Default::default()
            }
        };
        let sized = report.decision.outcome.web_concurrency().unwrap_or(1);
        let argv = &request.command;
        let config = servers::config::read(found.server, argv, found.args_from, app_dir);
        // A count the command pins is what a delegated server runs, whatever WEB_CONCURRENCY says.
        let words: Vec<&str> = argv
            .iter()
            .skip(found.args_from)
            .filter_map(|a| a.to_str())
            .collect();
        let pinned = (mode == Mode::Delegate)
            .then(|| pinning::in_command(found.server, &words, env, config.as_deref()))
            .flatten();
        let workers = pinned.as_ref().and_then(|p| p.workers()).unwrap_or(sized);
        let mut signals = servers::signals(found.server, mode);
        let (mut restart_reason, mut binds_itself) = (None, None);
        match (found.server, mode) {
            (servers::Server::Puma, Mode::Delegate) => {
                let (restart, why) = servers::puma_restart(config.as_deref(), argv, workers);
                signals.restart = Some(restart);
                restart_reason = Some(why);
            }
            (servers::Server::Unicorn, Mode::Delegate) => {
                binds_itself = config
                    .as_deref()
                    .and_then(|c| servers::unicorn_config(c).listen);
            }
            _ => {}
        }
        let (threads, queue_blind) =
            served_how(found.server, &words, report, env, config.as_deref());
        // gthread workers only (an event loop's worker connections are its concurrency); the
        // user's worker connections, or keep-alive on the command line (it wins over the
        // launcher's `--keep-alive 0`, and a capped worker keeps no connection alive), stay.
        let users = |setting, config| servers::gunicorn_sets(&words, config, setting);
        let capped = (found.server == servers::Server::Gunicorn
            && threads.is_some()
            && !users(
                ("--worker-connections", "worker_connections"),
                config.as_deref(),
            )
            && !users(("--keep-alive", "keepalive"), None))
        .then(|| {
            capped_connections(&report.thread_exports, || {
                let path = env.get("PATH").map(std::ffi::OsStr::new);
                servers::gunicorn_version(argv, found.args_from, path, app_dir)
            })
        })
        .flatten();
        let follows_puma = found.server == servers::Server::Puma
            && mode == Mode::Delegate
            && settings.sizing == crate::sizing::Sizing::Adaptive
            && threads.is_some_and(|t| t > 1)
            && !puma_has_control(&words, config.as_deref());
        let puma_control = state_dir.filter(|_| follows_puma).map(puma_control);
        let mut argv = rewrite.argv.clone();
        if let Some(control) = &puma_control {
            let url = format!("unix://{}", control.socket.display());
            argv.extend([
                "--control-url".into(),
                url.into(),
                "--control-token".into(),
                control.token.clone().into(),
            ]);
        }
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

/// How the server's workers serve: the threads each runs (gunicorn's gthread, puma), and why the
/// requests waiting for them cannot be seen, if they cannot (an event loop holds them). gunicorn
/// reads the `GUNICORN_CMD_ARGS` the children get (the launcher's threads in it, where
/// `LAUNCHER_THREADS` asks), puma the `RAILS_MAX_THREADS` they get.
fn served_how(
    server: servers::Server,
    words: &[&str],
    report: &Report,
    env: &Env,
    config: Option<&str>,
) -> (Option<u32>, Option<String>) {
    let exported = |name: &str| {
        let ours = report.thread_exports.iter().find(|(n, _)| *n == name);
        ours.map(|(_, v)| v.as_str()).or_else(|| env.get(name))
    };
    match (server, servers::behaviour(server).accepts) {
        (servers::Server::Gunicorn, _) => {
            match servers::gunicorn_workers(words, exported("GUNICORN_CMD_ARGS"), config) {
                servers::GunicornWorkers::Sync => (None, None),
                servers::GunicornWorkers::Threads { threads, .. } => (Some(threads), None),
                servers::GunicornWorkers::Other(how) => (
                    None,
                    Some(format!(
                        "its workers ({how}) accept every connection at once on an event loop \
                         and hold the wait inside the worker, where it cannot be seen; gunicorn's \
                         sync and gthread workers can be followed"
                    )),
                ),
            }
        }
        (servers::Server::Puma, _) => {
            let (threads, _) = servers::puma_threads(config, exported("RAILS_MAX_THREADS"));
            (Some(threads), None)
        }
        (_, servers::Accepts::AtOnce(why)) => (None, Some(why.to_owned())),
        (_, servers::Accepts::WhenFree) => (None, None),
    }
}

/// gunicorn's worker connections capped at the threads the launcher gives it
/// (`threads::gunicorn_capped_args`): only where the launcher adds the threads and closes each
/// connection after its response (a user's `--threads` or `--keep-alive` is the user's tuning)
/// and the gunicorn the command runs is one where that is safe (`version`, read only then:
/// `servers::GTHREAD_CAP_SAFE`); an unknown version is not capped.
fn capped_connections(
    thread_exports: &[(&str, String)],
    version: impl FnOnce() -> Option<servers::GunicornVersion>,
) -> Option<(u32, String)> {
    let ours = |name: &str| {
        let found = thread_exports.iter().find(|(n, _)| *n == name);
        found.map(|(_, value)| value.as_str())
    };
    let args = ours("GUNICORN_CMD_ARGS")?;
    let threads: u32 = ours("LAUNCHER_WEB_THREADS")?.parse().ok()?;
    if !args.ends_with(&format!("--threads {threads} --keep-alive 0")) {
        return None;
    }
    if version()? < servers::GTHREAD_CAP_SAFE {
        return None;
    }
    let capped = crate::threads::gunicorn_capped_args(args, threads)?;
    Some((threads, capped))
}

/// The app's own puma control app, which the launcher's would replace (puma's command line wins
/// over its config): its figures are then not read, and adaptive sizing follows the accept queue
/// alone, as for a puma of one thread per worker.
fn puma_has_control(words: &[&str], config: Option<&str>) -> bool {
    let flag = |w: &&str| *w == "--control-url" || w.starts_with("--control-url=");
    words.iter().any(flag) || config.is_some_and(|c| c.contains("activate_control_app"))
}

/// puma's control app at `<state dir>/puma-<pid>.sock`, which only this user can reach, with a
/// token of 16 random bytes besides.
fn puma_control(state_dir: &Path) -> crate::supervisor::reading::puma::Control {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got < 0 {
        // Without randomness the directory's permissions still keep others out.
        bytes.copy_from_slice(&u128::from(std::process::id()).to_le_bytes());
    }
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::supervisor::reading::puma::Control {
        socket: state_dir.join(format!("puma-{}.sock", std::process::id())),
        token,
    }
}

#[cfg(test)]
mod tests {
    use super::{capped_connections, puma_has_control};

    #[test]
    fn worker_connections_are_capped_only_on_a_gunicorn_where_that_is_safe() {
        let exports = |args: &str| {
            vec![
                ("LAUNCHER_WEB_THREADS", "16".to_owned()),
                ("GUNICORN_CMD_ARGS", args.to_owned()),
            ]
        };
        let ours = exports("--timeout 60 --threads 16 --keep-alive 0");
        let capped = "--timeout 60 --threads 16 --keep-alive 0 --worker-connections 16";
        let cases = [
            (&ours, Some((27, 0)), Some((16, capped.to_owned()))),
            (&ours, Some((24, 0)), Some((16, capped.to_owned()))),
            (&ours, Some((23, 0)), None),
            (&ours, None, None),
            // The user's keep-alive, or worker connections, in GUNICORN_CMD_ARGS.
            (&exports("--keep-alive 5 --threads 16"), Some((27, 0)), None),
            (
                &exports("--worker-connections 50 --threads 16 --keep-alive 0"),
                Some((27, 0)),
                None,
            ),
        ];
        for (exports, version, want) in cases {
            assert_eq!(
                capped_connections(exports, || version),
                want,
                "{exports:?} {version:?}"
            );
        }
        // No threads of the launcher's (the user's --threads): the version is not even read.
        let users = vec![("RAILS_MAX_THREADS", "5".to_owned())];
        assert_eq!(capped_connections(&users, || panic!("read")), None);
    }

    #[test]
    fn the_apps_own_puma_control_app_is_kept() {
        let words = ["puma", "-C", "config/puma.rb"];
        assert!(!puma_has_control(&words, None));
        assert!(!puma_has_control(&words, Some("threads 5, 5\n")));
        assert!(puma_has_control(
            &words,
            Some("activate_control_app 'tcp://127.0.0.1:9293'\n")
        ));
        assert!(puma_has_control(
            &["puma", "--control-url", "unix:///tmp/c"],
            None
        ));
        assert!(puma_has_control(&["puma", "--control-url=auto"], None));
    }
}
