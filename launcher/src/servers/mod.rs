//! What the launcher knows about web servers, in one behaviour table (`TABLE`): per server, the
//! program names that run it, whether it pre-forks by itself (delegate) or runs once per worker
//! (fan-out), how it is pointed at the shared socket on fd 3, its signals, whether it sends
//! `READY=1`, and how its workers are found. The plan, the pool and both sizers read it; adding a
//! server is one entry here plus its tests (docs/architecture.md, "Servers").

mod gunicorn;
mod ruby;
mod socket;
#[cfg(test)]
mod tests;
mod wrappers;

#[cfg(test)]
use std::ffi::OsString;
use std::fmt;

use nix::sys::signal::Signal;

use crate::settings::Settings;

pub use gunicorn::concurrent_workers;
#[cfg(test)]
pub use ruby::UnicornConfig;
pub use ruby::{config_text, puma_restart, puma_threads, unicorn_config};
pub use socket::{use_socket, Rewrite};
pub use wrappers::{identify, wrapper_hint, Identified};

/// The fd the shared socket is given as in every child (systemd's `SD_LISTEN_FDS_START`).
pub const LISTEN_FD: i32 = 3;

/// How a Node app listens on the launcher's socket when it has one, with the launcher's backlog:
/// Node takes the backlog only as `listen`'s second argument, and ignores a `backlog` key next to
/// `fd` (it would listen with 511). docs/servers.md gives this line; the boot-failure hint too.
pub const NODE_LISTEN: &str =
    "server.listen(process.env.LISTEN_FDS ? { fd: 3 } : process.env.PORT, 2048)";

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

/// A mode as asked for (`--mode`, `LAUNCHER_MODE`, `launcher.toml`): `auto` leaves it to the
/// behaviour table. `--mode auto` is asked for too: it wins over the setting like the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeChoice {
    Auto,
    Fixed(Mode),
}

impl ModeChoice {
    pub fn parse(text: &str) -> Option<ModeChoice> {
        match text {
            "auto" => Some(ModeChoice::Auto),
            "fanout" => Some(ModeChoice::Fixed(Mode::FanOut)),
            "delegate" => Some(ModeChoice::Fixed(Mode::Delegate)),
            _ => None,
        }
    }

    /// The `LAUNCHER_MODE` / `launcher.toml` setting as the reader took it.
    pub fn setting(settings: &Settings) -> ModeChoice {
        ModeChoice::parse(settings.choice(&crate::settings::MODE)).unwrap_or(ModeChoice::Auto)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Gunicorn,
    Uvicorn,
    Hypercorn,
    Puma,
    Unicorn,
    Node,
    Unknown,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(behaviour(*self).name)
    }
}

/// How a server is pointed at the socket on fd 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    /// Options naming an address or a port, removed with their values (`-p 5000`, `-p5000`,
    /// `--port=5000`): the server would bind them itself, next to the launcher's socket.
    pub remove: &'static [&'static str],
    /// Arguments added at the end; `{listen}` is the launcher's socket's address (`[::]:5000`).
    pub add: &'static [&'static str],
}

/// What a server does on each signal. In fan-out the signals go to each copy (its process group);
/// in delegate mode to the one server, which passes them on to its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signals {
    /// Stop after finishing what is in flight.
    pub graceful: Signal,
    /// Stop at once (what SIGINT and SIGQUIT become).
    pub fast: Signal,
    /// What SIGHUP becomes: the server's own rolling restart. None: the launcher replaces the
    /// copies one at a time (fan-out). puma's depends on its config (`puma_restart`).
    pub restart: Option<Signal>,
    /// One more and one fewer worker. None: the launcher scales (fan-out), or the server cannot
    /// be resized by signals (measured sizing then leaves it alone).
    pub scale: Option<(Signal, Signal)>,
    /// Stops one of the server's own workers gracefully, which the server replaces (the memory
    /// guard's recycle in delegate mode).
    pub stop_worker: Signal,
    /// Signals not passed on: the server would do something the launcher cannot follow.
    pub blocked: &'static [(Signal, &'static str)],
}

/// Whether a delegated server's rolling restart keeps a worker count its scaling signals
/// changed. gunicorn and unicorn read their config again on HUP, and puma's hot restart (USR2)
/// executes puma again: each goes back to the count it was started with. puma's phased restart
/// (USR1) replaces the workers it has.
pub fn restart_keeps_count(restart: Signal) -> bool {
    restart == Signal::SIGUSR1
}

/// How the workers the memory guard and the sizers look at are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// Each copy of the command is a worker (fan-out).
    Copies,
    /// The server's children are its workers (delegate).
    Children,
}

/// Whether requests that wait for a worker wait in the launcher's accept queue, which adaptive
/// sizing follows (docs/architecture.md, "Adaptive sizing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// Its workers accept a connection only when free to serve it: a request waits in the queue.
    WhenFree,
    /// It accepts every connection at once and the wait is inside the worker: the queue stays
    /// empty, and adaptive sizing is refused with this reason.
    AtOnce(&'static str),
}

const EVENT_LOOP: &str = "it accepts every connection at once on its event loop, and a \
                          keep-alive connection stays with the worker that took it: requests \
                          wait inside the workers, not in the accept queue";

/// Everything the launcher knows of one server.
#[derive(Debug, PartialEq, Eq)]
pub struct Behaviour {
    pub server: Server,
    pub name: &'static str,
    /// The program names that run it (the basename of argv[0], or the module of `python -m`).
    pub programs: &'static [&'static str],
    /// The mode `auto` picks, and why, for the `start` line.
    pub mode: Mode,
    pub why: &'static str,
    pub socket: Socket,
    pub signals: Signals,
    /// Whether it sends `READY=1` to `NOTIFY_SOCKET` by itself.
    pub notifies: bool,
    pub workers: Workers,
    pub accepts: Accepts,
}

const NO_SOCKET_CHANGE: Socket = Socket {
    remove: &[],
    add: &[],
};

/// A copy per worker: the launcher stops, restarts and scales the copies itself.
const FAN_OUT: Signals = Signals {
    graceful: Signal::SIGTERM,
    fast: Signal::SIGQUIT,
    restart: None,
    scale: None,
    stop_worker: Signal::SIGTERM,
    blocked: &[],
};

const MASTER_REEXECS: &str = "it would start a second master as its own child, which outlives it \
                              and the launcher would not know of";

/// The behaviour table.
pub const TABLE: [Behaviour; 7] = [
    Behaviour {
        server: Server::Gunicorn,
        name: "gunicorn",
        programs: &["gunicorn"],
        mode: Mode::Delegate,
        why: "gunicorn pre-forks its own workers from the shared socket",
        // It takes the socket from LISTEN_FDS and LISTEN_PID, and then ignores --bind.
        socket: NO_SOCKET_CHANGE,
        signals: Signals {
            graceful: Signal::SIGTERM,
            fast: Signal::SIGINT,
            restart: Some(Signal::SIGHUP),
            scale: Some((Signal::SIGTTIN, Signal::SIGTTOU)),
            stop_worker: Signal::SIGTERM,
            blocked: &[(Signal::SIGUSR2, MASTER_REEXECS)],
        },
        notifies: true,
        workers: Workers::Children,
        // Its sync workers; the plan refuses adaptive sizing for the others
        // (`concurrent_workers`).
        accepts: Accepts::WhenFree,
    },
    Behaviour {
        server: Server::Puma,
        name: "puma",
        programs: &["puma"],
        mode: Mode::Delegate,
        why: "puma pre-forks its own workers from the shared socket",
        // Only the activated socket: the `port` of a Rails config/puma.rb would bind $PORT again.
        // Its address on the command line besides, which wins over the config's: after a hot
        // restart (USR2) puma has no LISTEN_FDS any more and matches its inherited socket to its
        // binds by address.
        socket: Socket {
            remove: &["-b", "--bind", "-p", "--port"],
            add: &[
                "--bind-to-activated-sockets",
                "only",
                "--bind",
                "tcp://{listen}",
            ],
        },
        signals: Signals {
            graceful: Signal::SIGTERM,
            fast: Signal::SIGINT,
            // USR1 (phased) or USR2 (hot), never HUP: HUP stops puma (`puma_restart`).
            restart: Some(Signal::SIGUSR2),
            scale: Some((Signal::SIGTTIN, Signal::SIGTTOU)),
            stop_worker: Signal::SIGTERM,
            blocked: &[],
        },
        notifies: false,
        workers: Workers::Children,
        // A worker accepts only while one of its threads is free.
        accepts: Accepts::WhenFree,
    },
    Behaviour {
        server: Server::Unicorn,
        name: "unicorn",
        programs: &["unicorn", "unicorn_rails"],
        mode: Mode::Delegate,
        why: "unicorn pre-forks its own workers from the shared socket",
        // It takes LISTEN_FDS with no flag, and binds what these name besides. Told the socket's
        // address, it keeps the socket on SIGHUP: its reload closes every listener its command
        // line and config do not name.
        socket: Socket {
            remove: &["-p", "--port", "-l", "--listen", "-o", "--host"],
            add: &["--listen", "{listen}"],
        },
        signals: Signals {
            // TERM and INT stop unicorn's workers at once; QUIT lets them finish.
            graceful: Signal::SIGQUIT,
            fast: Signal::SIGINT,
            restart: Some(Signal::SIGHUP),
            scale: Some((Signal::SIGTTIN, Signal::SIGTTOU)),
            stop_worker: Signal::SIGQUIT,
            blocked: &[(Signal::SIGUSR2, MASTER_REEXECS)],
        },
        notifies: false,
        workers: Workers::Children,
        accepts: Accepts::WhenFree,
    },
    Behaviour {
        server: Server::Uvicorn,
        name: "uvicorn",
        programs: &["uvicorn"],
        mode: Mode::FanOut,
        why: "uvicorn runs one copy per worker",
        socket: Socket {
            remove: &["--host", "--port", "--uds", "--fd"],
            add: &["--fd", "3"],
        },
        signals: FAN_OUT,
        notifies: false,
        workers: Workers::Copies,
        accepts: Accepts::AtOnce(EVENT_LOOP),
    },
    Behaviour {
        server: Server::Hypercorn,
        name: "hypercorn",
        programs: &["hypercorn"],
        mode: Mode::FanOut,
        why: "hypercorn runs one copy per worker",
        socket: Socket {
            remove: &["--bind", "-b"],
            add: &["--bind", "fd://3"],
        },
        signals: FAN_OUT,
        notifies: false,
        workers: Workers::Copies,
        accepts: Accepts::AtOnce(EVENT_LOOP),
    },
    Behaviour {
        server: Server::Node,
        name: "node",
        programs: &["node", "nodejs"],
        mode: Mode::FanOut,
        why: "node runs one copy per worker; the app listens on fd 3 (server.listen({ fd: 3 }))",
        socket: NO_SOCKET_CHANGE,
        signals: FAN_OUT,
        notifies: false,
        workers: Workers::Copies,
        accepts: Accepts::AtOnce(EVENT_LOOP),
    },
    Behaviour {
        server: Server::Unknown,
        name: "unknown",
        programs: &[],
        mode: Mode::FanOut,
        why: "not a server known to pre-fork; one copy per worker",
        socket: NO_SOCKET_CHANGE,
        signals: FAN_OUT,
        notifies: false,
        workers: Workers::Copies,
        // Not known: adaptive sizing follows the queue as asked; it shows waiting requests only
        // if the app accepts when free.
        accepts: Accepts::WhenFree,
    },
];

pub fn behaviour(server: Server) -> &'static Behaviour {
    let found = TABLE.iter().find(|b| b.server == server);
    found.unwrap_or(&TABLE[TABLE.len() - 1])
}

/// The server a program name runs.
pub fn server_named(program: &str) -> Server {
    let found = TABLE.iter().find(|b| b.programs.contains(&program));
    found.map_or(Server::Unknown, |b| b.server)
}

/// The mode `auto` picks, with the reason for the log.
pub fn auto_mode(server: Server) -> (Mode, String) {
    let behaviour = behaviour(server);
    (behaviour.mode, behaviour.why.to_owned())
}

/// The mode `server` runs in under `launcher run`, and why: `--mode` (`asked`, `auto` included)
/// wins over `LAUNCHER_MODE` or `launcher.toml` (`setting`), which wins over `auto`'s pick. The
/// one rule, for `launcher run` and for what `launcher size` and the build log show.
pub fn choose_mode(
    asked: Option<ModeChoice>,
    setting: ModeChoice,
    server: Server,
) -> (Mode, String) {
    match (asked, setting) {
        (Some(ModeChoice::Fixed(mode)), _) => (mode, "--mode".to_owned()),
        (Some(ModeChoice::Auto), _) => {
            let (mode, why) = auto_mode(server);
            (mode, format!("--mode auto: {why}"))
        }
        (None, ModeChoice::Fixed(mode)) => (mode, "LAUNCHER_MODE or launcher.toml".to_owned()),
        (None, ModeChoice::Auto) => auto_mode(server),
    }
}

/// What a signal forwarded by the user does to a server run in `mode`: passed on, or blocked
/// (with why).
pub fn blocked(server: Server, mode: Mode, signal: Signal) -> Option<&'static str> {
    if mode == Mode::FanOut {
        return None;
    }
    let blocked = behaviour(server).signals.blocked.iter();
    let mut blocked = blocked;
    blocked.find(|(s, _)| *s == signal).map(|(_, why)| *why)
}

/// The signals of `server` run in `mode`: a server forced into fan-out is stopped, restarted and
/// scaled by the launcher like any copy.
pub fn signals(server: Server, mode: Mode) -> Signals {
    match mode {
        Mode::FanOut => FAN_OUT,
        Mode::Delegate => behaviour(server).signals,
    }
}

/// A command's words, for the tests.
#[cfg(test)]
pub fn words(line: &str) -> Vec<OsString> {
    line.split_whitespace().map(OsString::from).collect()
}
