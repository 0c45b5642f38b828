//! `launcher run -- CMD ARGS...`: the pre-fork supervisor. Set up once (`setup`), then one loop
//! (`event_loop`): wait -> read signals, exits and readiness -> read the dyno (`reading`) ->
//! decide (`decide`: the memory guard, measured and adaptive sizing, pure) -> apply, the pool
//! alone changing the workers (`pool`). See docs/architecture.md, "One turn of the loop".

mod adaptive;
mod backoff;
mod decide;
mod drain;
mod event_loop;
mod figures;
mod hint;
mod kill;
mod limits;
mod log;
mod memory;
mod net;
mod plan;
mod pool;
mod reading;
mod settings;
mod setup;
mod spawn;

use std::ffi::OsString;
use std::path::PathBuf;

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::servers::ModeChoice;
use event_loop::Loop;

/// What `launcher run` was asked for on its command line.
pub struct Request {
    /// `--mode`; None when not given.
    pub mode: Option<ModeChoice>,
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
    // First, so that a signal during setup waits for the loop instead of killing the launcher;
    // then the log's writer thread, which inherits the blocked mask.
    let signals = block_signals()?;
    log::start();
    let result = setup::Setup::new(&request).map(|setup| Loop::new(setup, signals).run());
    // At exit, the lines still queued for a slow stdout get at most a second.
    log::flush(std::time::Duration::from_secs(1));
    result
}

/// Blocks the handled signals and opens the signalfd the loop reads them from. Each gets its
/// default disposition first: a signal the launcher was started with ignored (SIGINT and SIGQUIT
/// are, for a background job of a shell script) would be discarded by the kernel, blocked or not.
fn block_signals() -> Result<SignalFd, Fatal> {
    for signal in HANDLED {
        // SAFETY: setting the default disposition installs no handler.
        unsafe { signal::signal(signal, signal::SigHandler::SigDfl) }
            .map_err(|e| fatal(1)(format!("cannot reset {signal}: {e}")))?;
    }
    let mut handled = SigSet::empty();
    HANDLED.iter().for_each(|s| handled.add(*s));
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled), None)
        .map_err(|e| fatal(1)(format!("cannot block signals: {e}")))?;
    SignalFd::with_flags(&handled, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| fatal(1)(format!("cannot read signals: {e}")))
}
