//! Which server a command runs, seen through the wrappers commands are started with, and the
//! wrappers that run a server as their child instead of becoming it.

use std::ffi::OsString;

use super::{server_named, Server};

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
