//! Which gunicorn a command runs, from the package metadata installed beside the program
//! (docs/sizing.md#threads): gunicorn 24 rewrote its gthread worker's loop, and only from there
//! on is a worker's connections capped at its threads safe.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// A release's major and minor numbers.
pub type Version = (u32, u32);

/// The first gunicorn whose gthread worker stops accepting at `worker_connections` instead of
/// spinning (gunicorn #3146, #3407: 23 and older).
pub const GTHREAD_CAP_SAFE: Version = (24, 0);

/// The version of the gunicorn that `argv` runs (past its wrappers, `args_from` as
/// `servers::identify` found it): the program is the `gunicorn` script, or the `python` of
/// `python -m gunicorn`, found on `path` as the shell would. Its package metadata
/// (`gunicorn-X.Y.Z.dist-info`, or `.egg-info`) is in the `site-packages` or `dist-packages` of
/// the prefix the program is installed in (`<prefix>/bin/<program>`: a venv, Heroku's
/// `/app/.heroku/python`, `~/.local`, `/usr/local`, `/usr`), tried as found and then with its
/// links resolved (pipx links its scripts). None when none is found, or when that prefix holds
/// more than one version (one per Python): unknown.
pub fn gunicorn_version(
    argv: &[OsString],
    args_from: usize,
    path: Option<&OsStr>,
    cwd: &Path,
) -> Option<Version> {
    let program = match args_from.checked_sub(3).map(|i| (i, &argv[i + 1])) {
        Some((python, m)) if m == "-m" => &argv[python],
        _ => argv.get(args_from.checked_sub(1)?)?,
    };
    let found = which::which_in(program, path, cwd).ok()?;
    let resolved = std::fs::canonicalize(&found).ok();
    [Some(found), resolved]
        .into_iter()
        .flatten()
        .find_map(|p| in_prefix(p.parent()?.parent()?))
}

/// The one gunicorn version in `<prefix>/lib*/*/{site,dist}-packages`.
fn in_prefix(prefix: &Path) -> Option<Version> {
    let dirs = |dir: &Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
    };
    let mut versions: Vec<Version> = ["lib", "lib64"]
        .iter()
        .flat_map(|lib| dirs(&prefix.join(lib)))
        .flat_map(|python| ["site-packages", "dist-packages"].map(|packages| python.join(packages)))
        .flat_map(|packages| dirs(&packages))
        .filter_map(|entry| parse(&entry.file_name()?.to_string_lossy()))
        .collect();
    versions.sort_unstable();
    versions.dedup();
    match versions[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// `gunicorn-24.1.0.dist-info` or `gunicorn-20.1.0.egg-info` (Debian's): (24, 1), (20, 1).
fn parse(name: &str) -> Option<Version> {
    let rest = name.strip_prefix("gunicorn-")?;
    let version = rest
        .strip_suffix(".dist-info")
        .or_else(|| rest.strip_suffix(".egg-info"))?;
    let number = |part: Option<&str>| -> Option<u32> {
        let digits: String = part?.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let mut parts = version.split('-').next()?.split('.');
    Some((number(parts.next())?, number(parts.next()).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// `<prefix>/bin/<program>` (executable) and `<prefix>/lib/<python>/<packages>/<metadata>`.
    fn install(prefix: &Path, program: &str, metadata: &[(&str, &str)]) {
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        let script = prefix.join("bin").join(program);
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (packages, name) in metadata {
            std::fs::create_dir_all(prefix.join("lib").join(packages).join(name)).unwrap();
        }
    }

    fn words(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn metadata_names_give_the_version() {
        let cases = [
            ("gunicorn-24.1.0.dist-info", Some((24, 1))),
            ("gunicorn-23.0.0.dist-info", Some((23, 0))),
            ("gunicorn-20.1.0.egg-info", Some((20, 1))),
            ("gunicorn-25.0.0rc1.dist-info", Some((25, 0))),
            ("gunicorn-19.9.0-py3.7.egg-info", Some((19, 9))),
            ("gunicorn", None),
            ("gunicorn_h1c-0.6.9.dist-info", None),
            ("gunicorn-cache-0.1.5.dist-info", None),
        ];
        for (name, want) in cases {
            assert_eq!(parse(name), want, "{name}");
        }
    }

    #[test]
    fn the_version_is_read_beside_the_program_found_on_path() {
        let root = tempfile::tempdir().unwrap();
        let venv = root.path().join("venv");
        let metadata = [
            ("python3.12/site-packages", "gunicorn-27.0.1.dist-info"),
            ("python3.12/site-packages", "flask-3.0.3.dist-info"),
        ];
        install(&venv, "gunicorn", &metadata);
        install(&venv, "python3", &[]);
        let debian = root.path().join("usr");
        install(
            &debian,
            "gunicorn",
            &[("python3/dist-packages", "gunicorn-20.1.0.egg-info")],
        );
        let path = std::env::join_paths([venv.join("bin"), debian.join("bin")]).unwrap();
        let version = |line: &str| {
            let argv = words(line);
            let found = crate::servers::identify(&argv);
            gunicorn_version(&argv, found.args_from, Some(&path), root.path())
        };
        assert_eq!(version("gunicorn app:app"), Some((27, 0)));
        assert_eq!(version("python3 -m gunicorn app:app"), Some((27, 0)));
        assert_eq!(
            version("newrelic-admin run-program gunicorn -w 2 app:app"),
            Some((27, 0))
        );
        let old = debian.join("bin/gunicorn");
        assert_eq!(
            version(&format!("{} app:app", old.display())),
            Some((20, 1))
        );
        assert_eq!(version("gunicorn-missing app:app"), None, "not on PATH");
    }

    #[test]
    fn links_are_followed_and_two_versions_are_unknown() {
        let root = tempfile::tempdir().unwrap();
        // pipx: ~/.local/bin/gunicorn links to the venv's script.
        let venv = root.path().join("pipx/venvs/gunicorn");
        install(
            &venv,
            "gunicorn",
            &[("python3.11/site-packages", "gunicorn-24.0.0.dist-info")],
        );
        let local = root.path().join("local/bin");
        std::fs::create_dir_all(&local).unwrap();
        std::os::unix::fs::symlink(venv.join("bin/gunicorn"), local.join("gunicorn")).unwrap();
        let argv = words("gunicorn app:app");
        let found = gunicorn_version(&argv, 1, Some(local.as_os_str()), root.path());
        assert_eq!(found, Some((24, 0)));

        // One prefix, two Pythons with their own gunicorn: which one runs is not known.
        let two = root.path().join("two");
        install(
            &two,
            "gunicorn",
            &[
                ("python3.11/site-packages", "gunicorn-23.0.0.dist-info"),
                ("python3.12/site-packages", "gunicorn-27.0.1.dist-info"),
            ],
        );
        let path = two.join("bin");
        assert_eq!(
            gunicorn_version(&argv, 1, Some(path.as_os_str()), root.path()),
            None
        );
    }
}
