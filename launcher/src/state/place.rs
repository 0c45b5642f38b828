//! Where the state files live: `${TMPDIR:-/tmp}/launcher-<uid>/`, a directory of the user's own.
//! It depends only on the uid and `TMPDIR`, so that a shell in the same dyno or container
//! (`heroku ps:exec`, `docker exec`) finds it; it is created 0700, and its owner and mode are
//! checked before every use, since `/tmp` is shared with every user of the machine.

use std::ffi::OsStr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The state directory, and why it is not under `TMPDIR` when it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub dir: PathBuf,
    pub note: Option<String>,
}

/// `tmpdir` (the value of `TMPDIR`) if it is an absolute path to a directory, else `/tmp`.
pub fn place(tmpdir: Option<&OsStr>, uid: u32) -> Place {
    let name = format!("launcher-{uid}");
    let fallback = |why: String| Place {
        dir: Path::new("/tmp").join(&name),
        note: Some(format!("TMPDIR {why}; state files are kept in /tmp")),
    };
    let Some(tmpdir) = tmpdir.filter(|t| !t.is_empty()) else {
        return Place {
            dir: Path::new("/tmp").join(&name),
            note: None,
        };
    };
    let path = Path::new(tmpdir);
    let shown = crate::text::shown(&path.to_string_lossy());
    if !path.is_absolute() {
        return fallback(format!("={shown} is not an absolute path"));
    }
    if !path.is_dir() {
        return fallback(format!("={shown} is not a directory"));
    }
    Place {
        dir: path.join(name),
        note: None,
    }
}

/// Creates the directory (0700) if it is missing, then checks it as `check` does.
pub fn prepare(dir: &Path, uid: u32) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(format!("cannot create {}: {err}", dir.display())),
    }
    check(dir, uid)
}

/// A directory (not a symlink to one) owned by `uid`, with no permission for anyone else. One
/// owned by `uid` with more permissions is narrowed to 0700; one owned by anyone else is not
/// used (whoever made it could read, replace or plant files in it).
pub fn check(dir: &Path, uid: u32) -> Result<(), String> {
    let shown = dir.display();
    let metadata = std::fs::symlink_metadata(dir).map_err(|e| format!("{shown}: {e}"))?;
    if !metadata.file_type().is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    if metadata.uid() != uid {
        return Err(format!(
            "{shown} belongs to uid {}, not to this user ({uid})",
            metadata.uid()
        ));
    }
    if metadata.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {shown} private: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpdir_is_used_when_it_is_an_absolute_directory() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let here = place(Some(dir.path().as_os_str()), 1000);
        assert_eq!(
            here,
            Place {
                dir: dir.path().join("launcher-1000"),
                note: None
            }
        );
        assert_eq!(place(None, 0).dir, Path::new("/tmp/launcher-0"));
        for bad in ["relative/tmp", "/no/such/dir"] {
            let fallback = place(Some(OsStr::new(bad)), 7);
            assert_eq!(fallback.dir, Path::new("/tmp/launcher-7"), "{bad}");
            assert!(fallback.note.expect("note").contains(bad), "{bad}");
        }
    }

    #[test]
    fn the_directory_must_be_the_users_own() {
        let base = tempfile::TempDir::new().expect("temp dir");
        let me = nix::unistd::geteuid().as_raw();
        let dir = base.path().join("launcher-me");
        prepare(&dir, me).expect("created");
        let mode = std::fs::metadata(&dir).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        check(&dir, me).expect("narrowed");
        assert_eq!(std::fs::metadata(&dir).expect("stat").mode() & 0o777, 0o700);
        let err = check(&dir, me + 1).expect_err("someone else's");
        assert!(err.contains("belongs to uid"), "{err}");
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        assert!(check(&link, me)
            .expect_err("a symlink")
            .contains("not a directory"));
    }
}
