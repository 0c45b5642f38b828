//! How a build phase runs: in a mount namespace of its own with read-only bind mounts (the
//! buildpack, and Rust's toolchain when asked for), offline when asked for.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{open_to_all, SYSTEM_PATH};

/// A Rust toolchain for the build user: the machine's, bind-mounted read-only.
pub struct Toolchain {
    pub cargo_home: PathBuf,
    pub rustup_home: PathBuf,
}

impl Toolchain {
    /// The toolchain the tests run with (`CARGO_HOME`, `RUSTUP_HOME`, or under `HOME`).
    pub fn current() -> Toolchain {
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
        let dir = |name: &str, default: &str| {
            std::env::var_os(name).map_or_else(|| home.join(default), PathBuf::from)
        };
        Toolchain {
            cargo_home: dir("CARGO_HOME", ".cargo"),
            rustup_home: dir("RUSTUP_HOME", ".rustup"),
        }
    }

    /// Where builds see it: one place for every build, in the temp dir (root's home, and a
    /// checkout in it, are closed to other users), so that cargo's fingerprints (which hold the
    /// registry's paths) match from one build to the next. Each mount lives in its own namespace;
    /// the empty mount points stay.
    pub fn mounted() -> Toolchain {
        let base = std::env::temp_dir().join("launcher-cnb-toolchain");
        let toolchain = Toolchain {
            cargo_home: base.join("cargo"),
            rustup_home: base.join("rustup"),
        };
        for dir in [&toolchain.cargo_home, &toolchain.rustup_home] {
            fs::create_dir_all(dir).expect("mkdir mount point");
        }
        open_to_all(&base);
        toolchain
    }

    /// The read-only bind mounts that put the current toolchain at `mounted()`.
    pub(super) fn mounts() -> [(PathBuf, PathBuf); 2] {
        let (current, mounted) = (Toolchain::current(), Toolchain::mounted());
        [
            (current.cargo_home, mounted.cargo_home),
            (current.rustup_home, mounted.rustup_home),
        ]
    }

    /// PATH with its bin directory, after `first` (a shim) if given.
    pub(super) fn path(first: Option<&Path>) -> String {
        let bin = Toolchain::mounted().cargo_home.join("bin");
        match first {
            Some(dir) => format!("{}:{}:{SYSTEM_PATH}", dir.display(), bin.display()),
            None => format!("{}:{SYSTEM_PATH}", bin.display()),
        }
    }

    /// Its variables, and PATH with its bin directory.
    fn env() -> [(&'static str, String); 3] {
        let mounted = Toolchain::mounted();
        [
            ("PATH", Toolchain::path(None)),
            ("CARGO_HOME", mounted.cargo_home.display().to_string()),
            ("RUSTUP_HOME", mounted.rustup_home.display().to_string()),
        ]
    }
}

/// `program args`, as root, with the toolchain mounted where builds see it (bin/package, the
/// maintainer's step, reusing a build's cargo target dir).
pub fn with_toolchain(program: &Path, args: &[&Path]) -> Command {
    let mut command = in_namespace(&Toolchain::mounts(), false);
    command
        .arg(program)
        .args(args)
        .env_clear()
        .envs(Toolchain::env());
    command
}

/// `unshare --mount [--net] -- sh -c SCRIPT sh FROM TO... --`: the caller appends the program.
/// Each FROM is bind-mounted on TO and made read-only (root would ignore permission bits, not
/// EROFS); `unshare` makes the mounts private, and they end with the namespace.
pub(super) fn in_namespace(mounts: &[(PathBuf, PathBuf)], offline: bool) -> Command {
    let script = r#"while [ "$1" != -- ]; do
  mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" "$2" || exit 90
  shift 2
done
shift
exec "$@""#;
    let mut command = Command::new("unshare");
    command.arg("--mount");
    if offline {
        command.arg("--net");
    }
    command.args(["--", "/bin/sh", "-c", script, "sh"]);
    for (from, to) in mounts {
        command.arg(from).arg(to);
    }
    command.arg("--");
    command
}

/// How a build runs beyond the platform's bare environment.
#[derive(Default)]
pub struct BuildOptions {
    /// Rust's toolchain on PATH, behind a `cargo` that records each call.
    pub cargo: bool,
    /// No network at all: a network namespace of its own, with nothing up.
    pub offline: bool,
}

impl BuildOptions {
    pub fn cargo() -> Self {
        BuildOptions {
            cargo: true,
            ..BuildOptions::default()
        }
    }

    pub fn offline() -> Self {
        BuildOptions {
            offline: true,
            ..BuildOptions::default()
        }
    }
}
