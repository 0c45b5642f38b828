//! What the launcher knows about web servers: which one a command runs (seeing through wrappers),
//! whether it pre-forks by itself (delegate) or runs once per worker (fan-out), and how to point it
//! at the shared socket on fd 3.

use std::ffi::OsString;
use std::fmt;

/// The fd the shared socket is given as in every child (systemd's `SD_LISTEN_FDS_START`).
pub const LISTEN_FD: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// N copies of the command, each given the socket.
    FanOut,
    /// One child that forks its own N workers from the socket.
    Delegate,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::FanOut => "fanout",
            Mode::Delegate => "delegate",
        })
    }
}

impl Mode {
    pub fn parse(text: &str) -> Option<Option<Mode>> {
        match text {
            "auto" => Some(None),
            "fanout" => Some(Some(Mode::FanOut)),
            "delegate" => Some(Some(Mode::Delegate)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Gunicorn,
    Uvicorn,
    Hypercorn,
    /// A server that pre-forks by itself but has no signal table and real-server test here yet.
    Unsupported(&'static str),
    Unknown,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Server::Gunicorn => "gunicorn",
            Server::Uvicorn => "uvicorn",
            Server::Hypercorn => "hypercorn",
            Server::Unsupported(name) => name,
            Server::Unknown => "unknown",
        })
    }
}

/// The server a command runs and where its own arguments start, past any wrappers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identified {
    pub server: Server,
    /// Index in argv of the first argument that belongs to the server.
    pub args_from: usize,
}

/// Sees through `python -m`, `newrelic-admin run-program`, `ddtrace-run`, `opentelemetry-instrument`,
/// `bundle exec` and `env VAR=value`.
pub fn identify(argv: &[OsString]) -> Identified {
    let mut i = 0;
    while let Some(word) = argv.get(i).map(basename) {
        let next = argv.get(i + 1).and_then(|a| a.to_str());
        i += match (word.as_str(), next) {
            ("newrelic-admin", Some("run-program")) | ("bundle", Some("exec")) => 2,
            ("ddtrace-run", _) => 1,
            ("opentelemetry-instrument", _) => 1 + options_len(&argv[i + 1..]),
            ("env", _) => 1 + assignments_len(&argv[i + 1..]),
            (python, Some("-m")) if is_python(python) => {
                let module = argv.get(i + 2).map(basename).unwrap_or_default();
                return Identified {
                    server: server_named(&module),
                    args_from: i + 3,
                };
            }
            (name, _) => {
                return Identified {
                    server: server_named(name),
                    args_from: i + 1,
                }
            }
        };
    }
    Identified {
        server: Server::Unknown,
        args_from: argv.len(),
    }
}

fn basename(arg: &OsString) -> String {
    let text = arg.to_string_lossy();
    text.rsplit('/').next().unwrap_or_default().to_owned()
}

fn is_python(name: &str) -> bool {
    let version = name.strip_prefix("python").unwrap_or("x");
    version.chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn server_named(name: &str) -> Server {
    match name {
        "gunicorn" => Server::Gunicorn,
        "uvicorn" => Server::Uvicorn,
        "hypercorn" => Server::Hypercorn,
        "puma" => Server::Unsupported("puma"),
        "unicorn" => Server::Unsupported("unicorn"),
        "uwsgi" => Server::Unsupported("uwsgi"),
        _ => Server::Unknown,
    }
}

/// Leading `--option value` / `--option=value` pairs (opentelemetry-instrument's own options).
fn options_len(args: &[OsString]) -> usize {
    let mut n = 0;
    while let Some(arg) = args.get(n).and_then(|a| a.to_str()) {
        if !arg.starts_with("--") {
            break;
        }
        n += if arg.contains('=') { 1 } else { 2 };
    }
    n.min(args.len())
}

fn assignments_len(args: &[OsString]) -> usize {
    args.iter()
        .take_while(|a| {
            a.to_str()
                .is_some_and(|s| s.contains('=') && !s.starts_with('-'))
        })
        .count()
}

/// Programs that run the server as their child instead of becoming it: shells (unless the
/// command `exec`s) and Node's package runners.
const SHELLS: [&str; 7] = ["sh", "bash", "dash", "ash", "zsh", "ksh", "mksh"];
const PACKAGE_RUNNERS: [&str; 4] = ["npm", "npx", "yarn", "pnpm"];

/// What to tell the user when a worker's first process (`argv`, from /proc) is a shell or a
/// package runner with `children` processes of its own: the server is a grandchild of the
/// launcher, and the kernel's signal on the launcher's death (`PR_SET_PDEATHSIG`) reaches only
/// the launcher's children, so a SIGKILLed launcher would leave the server holding the port.
pub fn wrapper_hint(argv: &[String], children: usize) -> Option<String> {
    let name = |arg: Option<&String>| {
        let base = arg?.rsplit('/').next()?;
        Some(
            base.split('.')
                .next()
                .unwrap_or(base)
                .trim_end_matches("-cli")
                .to_owned(),
        )
    };
    let mut program = name(argv.first())?;
    if program == "node" {
        program = name(argv.get(1)).unwrap_or(program);
    }
    if children == 0 {
        return None;
    }
    let consequence = "if the launcher is SIGKILLed (an OOM kill, a platform's SIGKILL) the \
                       server survives it and holds the port";
    if SHELLS.contains(&program.as_str()) {
        return Some(format!(
            "this worker is a shell ({program}) that runs the server as its child: {consequence}. \
             Start the server with exec (e.g. bash -c 'exec uvicorn app:app --fd 3'), or name it \
             right after `launcher run --`"
        ));
    }
    PACKAGE_RUNNERS.contains(&program.as_str()).then(|| {
        format!(
            "this worker is {program}, which runs the app as its child: {consequence}. Run the \
             app itself, e.g. `launcher run -- node server.js`"
        )
    })
}

/// The mode `auto` picks, with the reason for the log.
pub fn auto_mode(server: Server) -> (Mode, String) {
    match server {
        Server::Gunicorn => (
            Mode::Delegate,
            "gunicorn pre-forks its own workers from the shared socket".to_owned(),
        ),
        Server::Unsupported(name) => (
            Mode::FanOut,
            format!("{name} is not supported in delegate mode yet; one copy per worker"),
        ),
        Server::Uvicorn | Server::Hypercorn => {
            (Mode::FanOut, format!("{server} runs one copy per worker"))
        }
        Server::Unknown => (
            Mode::FanOut,
            "not a server known to pre-fork; one copy per worker".to_owned(),
        ),
    }
}

/// How the command was changed to use the socket on fd 3.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub argv: Vec<OsString>,
    pub removed: Vec<String>,
    pub added: Vec<String>,
}

/// Points the command at fd 3: `{fd}` anywhere is replaced by `3`; otherwise uvicorn gets
/// `--fd 3` and hypercorn `--bind fd://3` in place of the address options the user gave.
/// gunicorn needs nothing: it takes the socket from `LISTEN_FDS`/`LISTEN_PID` and ignores `--bind`.
pub fn use_socket(argv: &[OsString], found: Identified) -> Rewrite {
    let placeholder = "{fd}";
    if argv
        .iter()
        .any(|a| a.to_str().is_some_and(|s| s.contains(placeholder)))
    {
        let fd = LISTEN_FD.to_string();
        let argv = argv
            .iter()
            .map(|a| match a.to_str() {
                Some(s) => OsString::from(s.replace(placeholder, &fd)),
                None => a.clone(),
            })
            .collect();
        return Rewrite {
            argv,
            removed: vec![placeholder.to_owned()],
            added: vec![fd],
        };
    }
    let (options, added): (&[&str], Vec<String>) = match found.server {
        Server::Uvicorn => (
            &["--host", "--port", "--uds", "--fd"],
            vec!["--fd".to_owned(), LISTEN_FD.to_string()],
        ),
        Server::Hypercorn => (
            &["--bind", "-b"],
            vec!["--bind".to_owned(), format!("fd://{LISTEN_FD}")],
        ),
        _ => {
            return Rewrite {
                argv: argv.to_vec(),
                ..Rewrite::default()
            }
        }
    };
    let (mut kept, removed) = without_options(argv, found.args_from, options);
    kept.extend(added.iter().map(OsString::from));
    Rewrite {
        argv: kept,
        removed,
        added,
    }
}

/// argv without `OPT VALUE` and `OPT=VALUE` for each of `options`, looking only from `from` on.
fn without_options(
    argv: &[OsString],
    from: usize,
    options: &[&str],
) -> (Vec<OsString>, Vec<String>) {
    let mut kept: Vec<OsString> = argv[..from.min(argv.len())].to_vec();
    let mut removed = Vec::new();
    let mut rest = argv.iter().skip(from);
    while let Some(arg) = rest.next() {
        let text = arg.to_str().unwrap_or_default();
        let option = options
            .iter()
            .find(|o| text == **o || text.starts_with(&format!("{o}=")));
        match option {
            Some(o) if text == *o => {
                removed.push(text.to_owned());
                if let Some(value) = rest.next() {
                    removed.push(value.to_string_lossy().into_owned());
                }
            }
            Some(_) => removed.push(text.to_owned()),
            None => kept.push(arg.clone()),
        }
    }
    (kept, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    fn text(argv: &[OsString]) -> String {
        let words: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
        words.join(" ")
    }

    #[test]
    fn servers_are_seen_through_wrappers() {
        let table = [
            ("gunicorn app:app", Server::Gunicorn, 1),
            ("/app/.heroku/python/bin/gunicorn app:app", Server::Gunicorn, 1),
            ("python -m gunicorn app:app", Server::Gunicorn, 3),
            ("python3.12 -m uvicorn app:app", Server::Uvicorn, 3),
            ("newrelic-admin run-program gunicorn app:app", Server::Gunicorn, 3),
            ("ddtrace-run uvicorn app:app", Server::Uvicorn, 2),
            ("ddtrace-run newrelic-admin run-program hypercorn app:app", Server::Hypercorn, 4),
            (
                "opentelemetry-instrument --traces_exporter console --metrics_exporter=none gunicorn x",
                Server::Gunicorn,
                5,
            ),
            ("bundle exec puma -C config/puma.rb", Server::Unsupported("puma"), 3),
            ("env A=1 B=2 gunicorn app:app", Server::Gunicorn, 4),
            ("python app.py", Server::Unknown, 1),
            ("node server.js", Server::Unknown, 1),
            ("bundle exec", Server::Unknown, 2),
            ("ddtrace-run", Server::Unknown, 1),
        ];
        for (line, server, args_from) in table {
            assert_eq!(
                identify(&argv(line)),
                Identified { server, args_from },
                "{line}"
            );
        }
    }

    #[test]
    fn auto_mode_delegates_to_gunicorn_only() {
        assert_eq!(auto_mode(Server::Gunicorn).0, Mode::Delegate);
        for server in [
            Server::Uvicorn,
            Server::Hypercorn,
            Server::Unsupported("puma"),
            Server::Unknown,
        ] {
            assert_eq!(auto_mode(server).0, Mode::FanOut, "{server}");
        }
    }

    #[test]
    fn sockets_replace_the_address_options() {
        let table = [
            (
                "uvicorn app:app --host 0.0.0.0 --port 5000 --workers 1",
                "uvicorn app:app --workers 1 --fd 3",
                "--host 0.0.0.0 --port 5000",
            ),
            (
                "python -m uvicorn --port=5000 app:app",
                "python -m uvicorn app:app --fd 3",
                "--port=5000",
            ),
            ("uvicorn app:app", "uvicorn app:app --fd 3", ""),
            (
                "hypercorn -b 0.0.0.0:5000 --bind [::]:5000 app:app",
                "hypercorn app:app --bind fd://3",
                "-b 0.0.0.0:5000 --bind [::]:5000",
            ),
            (
                "./server --listen-fd={fd} --port 5000",
                "./server --listen-fd=3 --port 5000",
                "{fd}",
            ),
            ("gunicorn -b :5000 app:app", "gunicorn -b :5000 app:app", ""),
            ("node server.js", "node server.js", ""),
        ];
        for (line, expected, removed) in table {
            let args = argv(line);
            let rewrite = use_socket(&args, identify(&args));
            assert_eq!(text(&rewrite.argv), expected, "{line}");
            assert_eq!(rewrite.removed.join(" "), removed, "{line}");
        }
    }

    #[test]
    fn a_wrapper_option_that_looks_like_a_server_option_is_kept() {
        let args = argv("env --port=1 uvicorn app:app");
        // `env --port=1` is not an assignment, so env's argument is taken as the program.
        assert_eq!(identify(&args).server, Server::Unknown);
        assert_eq!(
            text(&use_socket(&args, identify(&args)).argv),
            "env --port=1 uvicorn app:app"
        );
    }

    #[test]
    fn wrappers_that_do_not_exec_are_hinted_at() {
        let words = |line: &str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        for line in [
            "/bin/bash -c uvicorn app:app --fd 3; echo done",
            "sh ./bin/web",
            "npm start",
            "node /usr/lib/node_modules/npm/bin/npm-cli.js start",
            "/usr/bin/yarn start",
        ] {
            assert!(wrapper_hint(&words(line), 1).is_some(), "{line}");
            assert!(wrapper_hint(&words(line), 0).is_none(), "no child: {line}");
        }
        for line in ["uvicorn app:app", "node server.js", "gunicorn app:app", ""] {
            assert!(wrapper_hint(&words(line), 2).is_none(), "{line}");
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse("auto"), Some(None));
        assert_eq!(Mode::parse("fanout"), Some(Some(Mode::FanOut)));
        assert_eq!(Mode::parse("delegate"), Some(Some(Mode::Delegate)));
        assert_eq!(Mode::parse("Delegate"), None);
    }
}
