//! The command as the server reads it (its words after any wrapper, its config file) and what
//! follows from it for the plan: the server's signals, the threads it serves with, the cap on
//! gunicorn's worker connections and puma's control app.

use std::ffi::OsString;
use std::path::Path;

use crate::env::Env;
use crate::report::Report;
use crate::servers::{self, Mode};

/// The server's command: what `servers::identify` found in it, its words, its config file.
pub(super) struct Command<'a> {
    pub found: servers::Identified,
    pub argv: &'a [OsString],
    pub words: Vec<&'a str>,
    config: Option<String>,
    app_dir: &'a Path,
}

impl<'a> Command<'a> {
    pub fn read(argv: &'a [OsString], app_dir: &'a Path) -> Command<'a> {
        let found = servers::identify(argv);
        let config = servers::config::read(found.server, argv, found.args_from, app_dir);
        let words = argv
            .iter()
            .skip(found.args_from)
            .filter_map(|a| a.to_str())
            .collect();
        Command {
            found,
            argv,
            words,
            config,
            app_dir,
        }
    }

    pub fn config(&self) -> Option<&str> {
        self.config.as_deref()
    }

    /// The server's signals in `mode`, with why SIGHUP does what it does where the config decides
    /// (puma), and what the config binds besides the launcher's socket (unicorn's `listen`).
    pub fn signals(
        &self,
        mode: Mode,
        workers: u32,
    ) -> (servers::Signals, Option<String>, Option<String>) {
        let mut signals = servers::signals(self.found.server, mode);
        match (self.found.server, mode) {
            (servers::Server::Puma, Mode::Delegate) => {
                let (restart, why) = servers::puma_restart(self.config(), self.argv, workers);
                signals.restart = Some(restart);
                (signals, Some(why), None)
            }
            (servers::Server::Unicorn, Mode::Delegate) => {
                let listen = self
                    .config()
                    .and_then(|c| servers::unicorn_config(c).listen);
                (signals, None, listen)
            }
            _ => (signals, None, None),
        }
    }

    /// gunicorn's worker connections capped at the launcher's threads (`capped_connections`), for
    /// gthread workers only (an event loop's worker connections are its concurrency); the user's
    /// worker connections, or keep-alive on the command line (it wins over the launcher's
    /// `--keep-alive 0`, and a capped worker keeps no connection alive), stay.
    pub fn capped(
        &self,
        threads: Option<u32>,
        report: &Report,
        env: &Env,
    ) -> Option<(u32, String)> {
        let users = |setting, config| servers::gunicorn_sets(&self.words, config, setting);
        let connections = ("--worker-connections", "worker_connections");
        if self.found.server != servers::Server::Gunicorn
            || threads.is_none()
            || users(connections, self.config())
            || users(("--keep-alive", "keepalive"), None)
        {
            return None;
        }
        capped_connections(&report.thread_exports, || {
            let path = env.get("PATH").map(std::ffi::OsStr::new);
            servers::gunicorn_version(self.argv, self.found.args_from, path, self.app_dir)
        })
    }

    /// How the server's workers serve: the threads each runs (gunicorn's gthread, puma), and why the
    /// requests waiting for them cannot be seen, if they cannot (an event loop holds them). gunicorn
    /// reads the `GUNICORN_CMD_ARGS` the children get (the launcher's threads in it, where
    /// `LAUNCHER_THREADS` asks), puma the `RAILS_MAX_THREADS` they get.
    pub fn served_how(&self, report: &Report, env: &Env) -> (Option<u32>, Option<String>) {
        let (server, config) = (self.found.server, self.config());
        let exported = |name: &str| {
            let ours = report.thread_exports.iter().find(|(n, _)| *n == name);
            ours.map(|(_, v)| v.as_str()).or_else(|| env.get(name))
        };
        match (server, servers::behaviour(server).accepts) {
            (servers::Server::Gunicorn, _) => {
                match servers::gunicorn_workers(&self.words, exported("GUNICORN_CMD_ARGS"), config) {
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

    /// Whether adaptive sizing reads a delegated puma's own figures through a control app the
    /// launcher adds: puma of more than one thread, whose app has no control app of its own.
    pub fn follows_puma(&self, mode: Mode, adaptive: bool, threads: Option<u32>) -> bool {
        self.found.server == servers::Server::Puma
            && mode == Mode::Delegate
            && adaptive
            && threads.is_some_and(|t| t > 1)
            && !puma_has_control(&self.words, self.config())
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
pub(super) fn puma_control(state_dir: &Path) -> crate::supervisor::reading::puma::Control {
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

/// The server's arguments with puma's control app, where the launcher adds one.
pub(super) fn with_control(
    mut argv: Vec<OsString>,
    control: Option<&crate::supervisor::reading::puma::Control>,
) -> Vec<OsString> {
    if let Some(control) = control {
        let url = format!("unix://{}", control.socket.display());
        argv.extend([
            "--control-url".into(),
            url.into(),
            "--control-token".into(),
            control.token.clone().into(),
        ]);
    }
    argv
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
