//! The Cloud Native Buildpack exec.d program (docs/architecture.md, "Cloud Native Buildpack").
//!
//! bin/build links `<layer>/exec.d/web-concurrency` to the binary. The CNB launcher runs it with
//! no arguments before every process, with fd 3 open for its output, and sets the variables it
//! writes there (TOML `NAME = "value"`) over the environment. It applies the profile's rules
//! (`Report`, `profile::exports`), so a user's value is never written back and stays. An exec.d
//! error aborts the process start, so this program never fails: it always exits 0, and on a
//! problem of its own it writes nothing to fd 3 and one warning line on stderr.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::process::ExitCode;

use crate::env::Env;
use crate::files;
use crate::profile;
use crate::report::Report;

/// The exec.d program's file name: the binary started under it runs as the exec.d program.
pub const PROGRAM: &str = "web-concurrency";

/// Where the CNB launcher reads the output from (the spec's "third open file descriptor").
const OUTPUT_FD: i32 = 3;

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
    // Well under PIPE_BUF: one write, whole or not at all.
    if let Err(err) = output.write_all(text.as_bytes()) {
        warn(&format!("cannot write to fd 3: {err}"));
    }
    ExitCode::SUCCESS
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
    fn disabled_writes_nothing() {
        assert!(output(&[("LAUNCHER_DISABLE", "1")]).is_empty());
    }
}
