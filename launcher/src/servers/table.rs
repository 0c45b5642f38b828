//! The behaviour table: one entry per server the launcher knows (docs/architecture.md,
//! "Servers"). Adding a server is one entry here, its rows in `tests.rs`, and a test against the
//! real server.

use nix::sys::signal::Signal;

use super::{
    Accepts, Behaviour, ConfigFile, Count, CountSetting, Mode, Server, Signals, Socket, Workers,
    EVENT_LOOP,
};

/// The options that set a worker count on the command line.
const WORKER_FLAGS: &[&str] = &["-w", "--workers"];

const NO_COUNT: Count = Count {
    flags: &[],
    args_var: None,
    setting: None,
};

const NO_SOCKET_CHANGE: Socket = Socket {
    remove: &[],
    add: &[],
};

/// A copy per worker: the launcher stops, restarts and scales the copies itself.
pub(super) const FAN_OUT: Signals = Signals {
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
        // Its sync and gthread workers (the plan follows gthread's threads, `served_how`);
        // adaptive sizing is refused for its event-loop workers (`gunicorn_workers`).
        accepts: Accepts::WhenFree,
        config: Some(ConfigFile {
            flags: &["-c", "--config"],
            default: Some("gunicorn.conf.py"),
        }),
        count: Count {
            flags: WORKER_FLAGS,
            args_var: Some("GUNICORN_CMD_ARGS"),
            setting: Some(CountSetting::Assignment("workers")),
        },
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
        config: Some(ConfigFile {
            flags: &["-C", "--config"],
            default: Some("config/puma.rb"),
        }),
        count: Count {
            flags: WORKER_FLAGS,
            args_var: None,
            setting: Some(CountSetting::Call("workers")),
        },
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
        config: Some(ConfigFile {
            flags: &["-c", "--config-file"],
            default: None,
        }),
        count: // Only its config sets the count (`worker_processes`), which must read WEB_CONCURRENCY
        // itself: `web.rs` says so.
        NO_COUNT,
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
        config: None,
        count: Count {
            flags: WORKER_FLAGS,
            ..NO_COUNT
        },
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
        config: None,
        count: Count {
            flags: WORKER_FLAGS,
            ..NO_COUNT
        },
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
        config: None,
        count: NO_COUNT,
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
        config: None,
        count: NO_COUNT,
    },
];
