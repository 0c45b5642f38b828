//! The Cloud Native Buildpack exec.d program (docs/architecture.md, "Cloud Native Buildpack").
//!
//! bin/build links `<layer>/exec.d/web-concurrency` to the binary. The CNB launcher runs it with
//! no arguments before every process, with fd 3 open for its output, and sets the variables it
//! writes there (TOML `NAME = "value"`) over the environment. It applies the profile's rules
//! (`Report`, `profile::exports`), so a user's value is never written back and stays. An exec.d
//! error aborts the process start, so this program never fails: it always exits 0, and on a
//! problem of its own it writes nothing to fd 3 and one warning line on stderr. Nor does it
//! hold the start up: fd 3 with no room that nobody drains (a full pipe) is given up on after
//! `WRITE_TIMEOUT`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, FromRawFd};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::env::Env;
use crate::files;
use crate::profile;
use crate::report::Report;

/// The exec.d program's file name: the binary started under it runs as the exec.d program.
pub const PROGRAM: &str = "web-concurrency";

/// Where the CNB launcher reads the output from (the spec's "third open file descriptor").
const OUTPUT_FD: i32 = 3;

/// How long the output may wait for room in fd 3. The lifecycle reads it as the program runs,
/// so a write waits only when nobody does.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether the binary was started as the exec.d program, from its `argv[0]`.
pub fn invoked_as(argv0: Option<&OsStr>) -> bool {
    argv0
        .and_then(|arg| Path::new(arg).file_name())
        .is_some_and(|name| name == PROGRAM)
}

/// Sizes this process's host and writes the exports to fd 3. Always exits 0.
pub fn run() -> ExitCode {
    // The release build aborts on panic, after the hook: the hook exits 0 first, with nothing
    // written to fd 3 (the output is written once, last).
    std::panic::set_hook(Box::new(|info| {
        let what = info.to_string().replace('\n', " ");
        warn(&format!("internal error ({what})"));
        std::process::exit(0);
    }));
    let Some(mut output) = output_fd() else {
        warn("fd 3 is not open for writing (the CNB launcher opens it for exec.d programs)");
        return ExitCode::SUCCESS;
    };
    let env = Env::from_process();
    let env = at_launch(env, &launcher_environ());
    // The CNB launcher starts exec.d programs in the app's directory, where launcher.toml is.
    let report = Report::for_app(Path::new("/"), &env, None);
    profile::log(&report, &env);
    let text = profile::render_toml(&profile::exports(&report));
    // Well under PIPE_BUF: one write to a pipe, whole or not at all.
    if let Err(err) = write_within(&mut output, text.as_bytes(), WRITE_TIMEOUT) {
        warn(&format!("cannot write to fd 3: {err}"));
    }
    ExitCode::SUCCESS
}

/// Writes `bytes` to `file` without blocking for more than `timeout` in all: the descriptor is
/// made non-blocking for the write and given back its flags after (another process may share
/// it).
fn write_within(file: &mut File, bytes: &[u8], timeout: Duration) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(file.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(file.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    let written = write_until(file, bytes, timeout);
    let restored = fcntl(file.as_fd(), FcntlArg::F_SETFL(flags));
    written.and(restored.map(drop).map_err(io::Error::from))
}

fn write_until(file: &mut File, mut bytes: &[u8], timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while !bytes.is_empty() {
        match file.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("it stayed full for {timeout:?}, nobody reading it"),
                    ));
                }
                // Rounded up: a poll that wakes a little early is followed by another.
                let millis = u16::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
                let mut ready = [PollFd::new(file.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut ready, PollTimeout::from(millis)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(errno) => return Err(errno.into()),
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// The environment the CNB launcher, this program's parent, was started with: the platform's,
/// before any buildpack's env files and exec.d programs (the kernel keeps it in
/// `/proc/<pid>/environ`). Empty if it cannot be read.
fn launcher_environ() -> Vec<u8> {
    let parent = std::os::unix::process::parent_id();
    let path = crate::host::Snapshot::live()
        .proc_dir()
        .join(parent.to_string())
        .join("environ");
    files::read_bytes(&path, ENVIRON_MAX_BYTES).unwrap_or_default()
}

/// A process's environment is at most a few hundred kB (ARG_MAX counts it with the arguments).
const ENVIRON_MAX_BYTES: u64 = 4 << 20;

/// `env` with what the platform gave the launch, where `environ` (the NUL-separated environment
/// the CNB launcher was started with) tells it (docs/architecture.md, "Whose value is it"): the
/// platform's `WEB_CONCURRENCY` (a config var, or none), and no `WEB_MEMORY` that a buildpack set
/// at launch (Heroku's Node.js CNB writes its own default there): only a user's is a setting.
pub fn at_launch(env: Env, environ: &[u8]) -> Env {
    let Some(platform) = platform_vars(&env, environ) else {
        return env;
    };
    let given = |name: &str| {
        platform
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let env = match given("WEB_MEMORY") {
        None => env.without("WEB_MEMORY"),
        Some(_) => env,
    };
    env.with_platform_value(given("WEB_CONCURRENCY"))
}

/// The variables of `environ`, when it is the CNB launcher's: it holds `CNB_LAYERS_DIR`, which
/// the launcher keeps from every process it starts (so `env`, ours, has none).
fn platform_vars(env: &Env, environ: &[u8]) -> Option<Vec<(String, String)>> {
    if env.get("CNB_LAYERS_DIR").is_some() {
        return None;
    }
    let vars: Vec<(String, String)> = environ
        .split(|&b| b == 0)
        .filter_map(|pair| {
            let at = pair.iter().position(|&b| b == b'=')?;
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            Some((text(&pair[..at]), text(&pair[at + 1..])))
        })
        .collect();
    vars.iter()
        .any(|(k, _)| k == "CNB_LAYERS_DIR")
        .then_some(vars)
}

fn warn(problem: &str) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "launcher: warning: exec.d: {problem}; WEB_CONCURRENCY is left as it was"
    );
}

/// fd 3, if it is open for writing.
fn output_fd() -> Option<File> {
    // SAFETY: F_GETFL only reads the descriptor's flags; -1 means it is not open.
    let flags = unsafe { libc::fcntl(OUTPUT_FD, libc::F_GETFL) };
    if flags < 0 || flags & libc::O_ACCMODE == libc::O_RDONLY {
        return None;
    }
    // SAFETY: fd 3 is open and owned by nothing else in this process: it was inherited, and
    // nothing before this opens a file.
    Some(unsafe { File::from_raw_fd(OUTPUT_FD) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use crate::settings::Settings;

    #[test]
    fn started_under_the_exec_d_name_only() {
        let invoked = |argv0: &str| invoked_as(Some(OsStr::new(argv0)));
        assert!(invoked("/layers/launcher/launcher/exec.d/web-concurrency"));
        assert!(invoked("web-concurrency"));
        assert!(!invoked("/layers/launcher/launcher/bin/launcher"));
        assert!(!invoked("launcher"));
        assert!(!invoked("/layers/x/exec.d/web-concurrency.sh"));
        assert!(!invoked_as(None));
    }

    /// The exec.d output for `pairs` on a 512 MB host, parsed as the CNB launcher parses it.
    fn output(pairs: &[(&str, &str)]) -> toml::Table {
        let host = FakeHost::new();
        host.cgroup_v2("/")
            .write("/sys/fs/cgroup/memory.max", &format!("{}\n", 512 << 20));
        let env = Env::from_pairs(pairs.iter().copied());
        let report = Report::gather(host.root(), &env, Settings::load(&env, None));
        let text = profile::render_toml(&profile::exports(&report));
        text.parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"))
    }

    fn get<'a>(table: &'a toml::Table, name: &str) -> Option<&'a str> {
        table.get(name).map(|v| v.as_str().expect("a string"))
    }

    #[test]
    fn ours_when_unset_or_another_buildpacks() {
        for pairs in [
            &[][..],
            &[
                ("WEB_CONCURRENCY", "99"),
                ("WEB_CONCURRENCY_SET_BY", "heroku/nodejs"),
            ],
        ] {
            let out = output(pairs);
            assert_eq!(get(&out, "WEB_CONCURRENCY"), Some("2"), "{pairs:?}");
            assert_eq!(get(&out, "WEB_CONCURRENCY_SET_BY"), Some("launcher"));
            assert_eq!(get(&out, "LAUNCHER_WEB_CONCURRENCY"), Some("2"));
            assert_eq!(get(&out, "DYNO_RAM"), Some("512"));
            assert_eq!(out.len(), 4);
        }
    }

    #[test]
    fn a_users_value_is_not_written_so_it_stays() {
        let out = output(&[("WEB_CONCURRENCY", "3")]);
        assert_eq!(get(&out, "WEB_CONCURRENCY"), None);
        assert_eq!(get(&out, "WEB_CONCURRENCY_SET_BY"), None);
        assert_eq!(get(&out, "LAUNCHER_WEB_CONCURRENCY"), Some("2"));
        assert_eq!(get(&out, "DYNO_RAM"), Some("512"));
    }

    #[test]
    fn hostile_values_never_reach_the_output() {
        let hostile = "3\"\n[x]\nPATH = \"/evil\" $(touch /tmp/x)";
        let out = output(&[
            ("WEB_CONCURRENCY", hostile),
            ("WEB_CONCURRENCY_SET_BY", hostile),
            ("WEB_MEMORY", hostile),
            ("LAUNCHER_MAX_WORKERS", hostile),
        ]);
        let names: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "DYNO_RAM",
                "LAUNCHER_WEB_CONCURRENCY",
                "WEB_CONCURRENCY",
                "WEB_CONCURRENCY_SET_BY"
            ]
        );
        assert_eq!(get(&out, "WEB_CONCURRENCY"), Some("2"));
    }

    #[test]
    fn the_platforms_values_are_read_from_the_cnb_launchers_environment() {
        let env = || Env::from_pairs([("WEB_CONCURRENCY", "63"), ("WEB_MEMORY", "512")]);
        let launcher = b"PATH=/bin\0CNB_LAYERS_DIR=/layers\0WEB_CONCURRENCY=3\0";
        let known = at_launch(env(), launcher);
        assert_eq!(known.platform_value(), Some(Some("3")));
        assert_eq!(
            known.get("WEB_MEMORY"),
            None,
            "a buildpack's, not a setting"
        );
        let with_memory = b"CNB_LAYERS_DIR=/layers\0WEB_MEMORY=512\0";
        let known = at_launch(env(), with_memory);
        assert_eq!(known.platform_value(), Some(None));
        assert_eq!(known.get("WEB_MEMORY"), Some("512"), "the user's");
        // Not the CNB launcher's (a shell's, say), or unreadable: not known, nothing changed.
        for environ in [&b"PATH=/bin\0WEB_CONCURRENCY=3\0"[..], b""] {
            let unknown = at_launch(env(), environ);
            assert_eq!(unknown.platform_value(), None);
            assert_eq!(unknown.get("WEB_MEMORY"), Some("512"));
        }
        let own = Env::from_pairs([("CNB_LAYERS_DIR", "/layers")]);
        assert_eq!(at_launch(own, launcher).platform_value(), None);
    }

    #[test]
    fn a_users_value_written_over_at_launch_is_written_back() {
        let host = FakeHost::new();
        host.cgroup_v2("/")
            .write("/sys/fs/cgroup/memory.max", &format!("{}\n", 512 << 20));
        let env = Env::from_pairs([("WEB_CONCURRENCY", "63"), ("WEB_MEMORY", "512")])
            .with_platform_value(Some("3".to_owned()));
        let report = Report::gather(host.root(), &env, Settings::load(&env, None));
        let out: toml::Table = profile::render_toml(&profile::exports(&report))
            .parse()
            .expect("TOML");
        assert_eq!(get(&out, "WEB_CONCURRENCY"), Some("3"));
        assert_eq!(get(&out, "WEB_CONCURRENCY_SET_BY"), Some(""));
    }

    #[test]
    fn the_users_gunicorn_arguments_come_through_whole() {
        let text = "--access-logformat '\"%(r)s\" \\ \u{7f}\t\u{e9}' --timeout\n5";
        let out = output(&[("GUNICORN_CMD_ARGS", text), ("LAUNCHER_THREADS", "4")]);
        let want = format!("{text} --threads 4 --keep-alive 0");
        assert_eq!(get(&out, "GUNICORN_CMD_ARGS"), Some(want.as_str()));
    }

    #[test]
    fn disabled_writes_nothing() {
        assert!(output(&[("LAUNCHER_DISABLE", "1")]).is_empty());
    }

    #[test]
    fn the_output_waits_for_room_in_fd_3_a_bounded_time_and_leaves_its_flags() {
        use std::io::Read;
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let (mut read_end, mut write_end) = (File::from(read_end), File::from(write_end));
        write_within(&mut write_end, b"A = \"1\"\n", Duration::from_secs(1)).expect("room");
        let mut got = [0u8; 8];
        read_end.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"A = \"1\"\n");
        // Filled to the brim: the write gives up after its time, writes nothing, and the
        // descriptor is blocking again.
        let page = [b'x'; 4096];
        let filled =
            std::iter::from_fn(|| write_within(&mut write_end, &page, Duration::ZERO).ok()).count();
        assert!(filled > 0);
        let started = Instant::now();
        let err = write_within(&mut write_end, b"B = \"2\"\n", Duration::from_millis(200))
            .expect_err("full");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(5));
        let flags = fcntl(write_end.as_fd(), FcntlArg::F_GETFL).expect("flags");
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        let mut rest = Vec::new();
        drop(write_end);
        read_end.read_to_end(&mut rest).expect("read");
        assert_eq!(rest.len(), filled * 4096, "no part of the second output");
    }
}
