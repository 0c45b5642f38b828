//! Where the state files live: `${TMPDIR:-/tmp}/launcher-<uid>/`, a directory of the user's own.
//! It depends only on the uid and `TMPDIR`, so that a shell in the same dyno or container
//! (`heroku ps:exec`, `docker exec`) finds it; it is created 0700, and its owner and mode are
//! checked before every use, since `/tmp` is shared with every user of the machine. It is never
//! made in a kernel file system (cgroupfs, procfs, sysfs and their kin), where `mkdir` makes a
//! cgroup or is refused: a `TMPDIR` there is passed over for `/tmp`.

use std::ffi::OsStr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::statfs::{self, FsType};

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
    if let Some(kind) = kernel_file_system(path) {
        return fallback(format!(
            "={shown} is in a {kind} file system, where a directory made is not a plain one"
        ));
    }
    Place {
        dir: path.join(name),
        note: None,
    }
}

/// The kernel file systems where `mkdir` is no plain directory: cgroupfs makes a cgroup (which
/// nothing would remove), tracefs a tracing instance, configfs and resctrl kernel objects;
/// procfs, sysfs and the rest refuse it.
const KERNEL_FILE_SYSTEMS: [(FsType, &str); 10] = [
    (statfs::CGROUP_SUPER_MAGIC, "cgroup"),
    (statfs::CGROUP2_SUPER_MAGIC, "cgroup2"),
    (statfs::PROC_SUPER_MAGIC, "proc"),
    (statfs::SYSFS_MAGIC, "sysfs"),
    (statfs::TRACEFS_MAGIC, "tracefs"),
    (statfs::DEBUGFS_MAGIC, "debugfs"),
    (statfs::SECURITYFS_MAGIC, "securityfs"),
    (statfs::BPF_FS_MAGIC, "bpf"),
    (FsType(0x6265_6570), "configfs"),
    (FsType(0x0765_5821), "resctrl"),
];

/// The kernel file system `path` is in, if it is one of `KERNEL_FILE_SYSTEMS`.
fn kernel_file_system(path: &Path) -> Option<&'static str> {
    let found = statfs::statfs(path).ok()?.filesystem_type();
    KERNEL_FILE_SYSTEMS
        .iter()
        .find(|(magic, _)| *magic == found)
        .map(|(_, kind)| *kind)
}

/// Creates the directory (0700) if it is missing, then checks it as `check` does. Its parent in
/// a kernel file system is refused, whatever `place` chose.
pub fn prepare(dir: &Path, uid: u32) -> Result<(), String> {
    if let Some(kind) = dir.parent().and_then(kernel_file_system) {
        return Err(format!(
            "{} is in a {kind} file system, where a directory made is not a plain one",
            dir.display()
        ));
    }
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
    fn no_directory_is_made_in_a_kernel_file_system() {
        // procfs and sysfs are mounted wherever this runs; cgroupfs where the machine has it.
        for tmpdir in ["/proc", "/proc/self", "/sys", "/sys/fs/cgroup/memory"] {
            if !Path::new(tmpdir).is_dir() {
                continue;
            }
            let fallback = place(Some(OsStr::new(tmpdir)), 7);
            assert_eq!(fallback.dir, Path::new("/tmp/launcher-7"), "{tmpdir}");
            let note = fallback.note.expect("note");
            assert!(note.contains("file system"), "{tmpdir}: {note}");
            // Not tried in cgroupfs: were the check broken, the test would leave a cgroup.
            if tmpdir.starts_with("/sys/fs/cgroup") {
                continue;
            }
            let refused = prepare(&Path::new(tmpdir).join("launcher-7"), 7).expect_err(tmpdir);
            assert!(refused.contains("file system"), "{tmpdir}: {refused}");
        }
        assert_eq!(kernel_file_system(Path::new("/proc")), Some("proc"));
        assert_eq!(kernel_file_system(Path::new("/sys")), Some("sysfs"));
        let plain = tempfile::TempDir::new().expect("temp dir");
        assert_eq!(kernel_file_system(plain.path()), None);
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
