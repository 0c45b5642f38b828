//! What the launcher knows about web servers, in one behaviour table (`TABLE`): per server, the
//! program names that run it, whether it pre-forks by itself (delegate) or runs once per worker
//! (fan-out), how it is pointed at the shared socket on fd 3, its signals, whether it sends
//! `READY=1`, and how its workers are found. The plan, the pool and both sizers read it; adding a
//! server is one entry here plus its tests (docs/architecture.md, "Servers").

pub mod config;
mod gunicorn;
mod installed;
mod ruby;
mod socket;
mod table;
#[cfg(test)]
mod tests;
mod wrappers;

#[cfg(test)]
use std::ffi::OsString;
use std::fmt;

use nix::sys::signal::Signal;

pub use gunicorn::{
    sets as gunicorn_sets, workers as gunicorn_workers, Workers as GunicornWorkers,
};
pub use installed::{gunicorn_version, Version as GunicornVersion, GTHREAD_CAP_SAFE};
#[cfg(test)]
pub use ruby::UnicornConfig;
pub use ruby::{puma_restart, puma_threads, unicorn_config};
pub use socket::{use_socket, Rewrite};
use table::FAN_OUT;
pub use table::TABLE;
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
        f.write_str(ModeChoice::Fixed(*self).word())
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
    /// Each choice and its word: the one place the words are written.
    pub const TABLE: [(ModeChoice, &'static str); 3] = [
        (ModeChoice::Auto, "auto"),
        (ModeChoice::Fixed(Mode::FanOut), "fanout"),
        (ModeChoice::Fixed(Mode::Delegate), "delegate"),
    ];
    pub const WORDS: [&'static str; 3] = crate::sizing::words(&ModeChoice::TABLE);

    pub fn word(self) -> &'static str {
        let row = ModeChoice::TABLE.iter().find(|(c, _)| *c == self);
        row.map_or("auto", |(_, word)| word)
    }

    pub fn parse(text: &str) -> Option<ModeChoice> {
        let row = ModeChoice::TABLE.iter().find(|(_, word)| *word == text);
        row.map(|(choice, _)| *choice)
    }

    /// `--mode`'s help: each word and what it does, `auto` with the servers it delegates to.
    pub fn help() -> String {
        let delegated: Vec<&str> = TABLE
            .iter()
            .filter(|b| b.mode == Mode::Delegate)
            .map(|b| b.name)
            .collect();
        let servers = match delegated.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => "none".to_owned(),
        };
        let each = ModeChoice::TABLE.iter().map(|(choice, word)| {
            let about = match choice {
                ModeChoice::Auto => format!("delegate for {servers}, fanout otherwise"),
                ModeChoice::Fixed(Mode::FanOut) => {
                    "N copies of the command share the socket".into()
                }
                ModeChoice::Fixed(Mode::Delegate) => {
                    "one server that forks its own N workers".into()
                }
            };
            format!("{word}: {about}")
        });
        each.collect::<Vec<_>>().join("; ")
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
    /// Its config file, where it reads one: how its command names it, and the file it reads when
    /// none is named.
    pub config: Option<ConfigFile>,
    /// How it is told its worker count.
    pub count: Count,
}

/// A server's config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigFile {
    /// The options that name it (`-c FILE`, `--config FILE`, `--config=FILE`).
    pub flags: &'static [&'static str],
    /// What it reads when none is named, relative to the app.
    pub default: Option<&'static str>,
}

/// How a server takes its worker count, besides `WEB_CONCURRENCY`: what pins it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// The options that set it on the command line (`-w 4`, `--workers=4`).
    pub flags: &'static [&'static str],
    /// A config var that holds more command-line options (`GUNICORN_CMD_ARGS`).
    pub args_var: Option<&'static str>,
    /// How its config file sets it.
    pub setting: Option<CountSetting>,
}

/// A worker count set in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountSetting {
    /// `name = 4`, in Python (gunicorn.conf.py).
    Assignment(&'static str),
    /// `name 4` or `name(4)`, in Ruby (config/puma.rb).
    Call(&'static str),
}

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
