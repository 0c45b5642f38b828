//! Reading files the launcher does not control: the app's `launcher.toml`, /proc, cgroup files
//! (under `--root` too), state files, Heroku's ENV_DIR. A read is bounded, never blocks, and
//! takes only regular files: procfs, sysfs and cgroupfs files are regular files too, while a
//! FIFO, a device (`/dev/zero`, `/dev/urandom`) or a socket behind the name, or a symlink to one,
//! is refused before a byte is read. A file of a snapshot of another host (`launcher size
//! --root`) is read inside that root: no `..` nor symlink leads out of it. A leaf module: it uses
//! nothing of the crate.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The bound for the files the launcher knows to be small: /proc and cgroup files, state files,
/// `launcher.toml`, an app's Procfile. /proc/self/mountinfo on a busy Kubernetes node is the
/// largest of them, some hundreds of KB.
pub const MAX_BYTES: u64 = 1 << 20;

/// `path` as text (lossily, for what is not UTF-8), if it is a regular file of at most
/// `max_bytes`.
pub fn read_text(path: &Path, max_bytes: u64) -> io::Result<String> {
    read_bytes(path, max_bytes).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// `path`'s bytes, if it is a regular file of at most `max_bytes`.
pub fn read_bytes(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    read_from(open(path, 0)?, max_bytes)
}

/// As `read_text`, for a file the launcher wrote itself: a symlink in its place is refused, not
/// followed.
pub fn read_own_text(path: &Path, max_bytes: u64) -> io::Result<String> {
    let bytes = read_from(open(path, libc::O_NOFOLLOW)?, max_bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `path` (relative, as the host names it without the leading `/`) read as `read_text` does, with
/// `root` as the root directory: `..` stops at `root`, and a symlink, absolute or relative,
/// resolves inside it as it would on the host the tree was taken from (`openat2` with
/// `RESOLVE_IN_ROOT`, Linux 5.6). Where the kernel lacks `openat2` (or a seccomp filter refuses
/// it), the path is resolved in user space and refused when it leads out of `root`, and the last
/// component must not be a symlink.
pub fn read_text_in(root: &Path, path: &Path, max_bytes: u64) -> io::Result<String> {
    let bytes = read_from(open_in(root, path)?, max_bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether `read_text_in` would find a regular file at `path` in `root`.
pub fn is_file_in(root: &Path, path: &Path) -> bool {
    open_in(root, path).is_ok()
}

/// `path` opened inside `root` as `read_text_in` says, if it is a regular file.
fn open_in(root: &Path, path: &Path) -> io::Result<File> {
    let file = match open_in_root(root, path) {
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            open_resolved_in_root(root, path)?
        }
        opened => opened?,
    };
    checked(file)
}

/// How many times an `openat2` that the kernel asks to retry (`EAGAIN`: a rename raced the
/// resolution) is tried.
const OPENAT2_TRIES: usize = 8;

fn open_in_root(root: &Path, path: &Path) -> io::Result<File> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let root_dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_PATH)
        .open(root)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut tries = 0;
    loop {
        tries += 1;
        match openat2(&root_dir, path, how) {
            Ok(fd) => return Ok(File::from(fd)),
            Err(nix::errno::Errno::EAGAIN) if tries < OPENAT2_TRIES => {}
            Err(errno) => return Err(io::Error::from(errno)),
        }
    }
}

/// The fallback of `read_text_in`: `root/path` with every symlink resolved must still be under
/// `root`, and is then opened without following a last symlink (a rename racing this can still
/// swap a directory on the way for a link: `openat2` has no such window).
fn open_resolved_in_root(root: &Path, path: &Path) -> io::Result<File> {
    let joined = root.join(path);
    let resolved = std::fs::canonicalize(&joined)?;
    if !resolved.starts_with(std::fs::canonicalize(root)?) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "leads out of the root directory",
        ));
    }
    open_unchecked(&resolved, libc::O_NOFOLLOW)
}

fn read_from(file: File, max_bytes: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max_bytes} bytes"),
        ));
    }
    Ok(bytes)
}

/// Opens without blocking (a FIFO would wait for a writer) and checks the type before reading.
fn open(path: &Path, flags: i32) -> io::Result<File> {
    checked(open_unchecked(path, flags)?)
}

fn open_unchecked(path: &Path, flags: i32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | flags)
        .open(path)
}

/// `file` if it is a regular file.
fn checked(file: File) -> io::Result<File> {
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a regular file ({what})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_bound_are_read() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("limit");
        std::fs::write(&path, "536870912\n").expect("write");
        assert_eq!(read_text(&path, 64).expect("read"), "536870912\n");
        let err = read_text(&path, 4).expect_err("too big");
        assert!(err.to_string().contains("larger than 4 bytes"), "{err}");
        assert_eq!(
            read_text(&dir.path().join("missing"), 64)
                .expect_err("missing")
                .kind(),
            io::ErrorKind::NotFound
        );
        // procfs files report a size of 0 and are read all the same.
        assert!(read_text(Path::new("/proc/self/status"), MAX_BYTES)
            .expect("procfs")
            .contains("Pid:"));
    }

    #[test]
    fn under_a_root_no_link_nor_dot_dot_leads_out_of_it() {
        let base = tempfile::TempDir::new().expect("temp dir");
        let root = base.path().join("root");
        std::fs::create_dir_all(root.join("sys")).expect("mkdir");
        std::fs::write(base.path().join("secret"), "outside\n").expect("write");
        std::fs::write(root.join("sys/inside"), "inside\n").expect("write");
        let secret = base.path().join("secret");
        let link = |name: &str, target: &Path| {
            std::os::unix::fs::symlink(target, root.join("sys").join(name)).expect("symlink");
        };
        link("absolute", &secret);
        link("relative", Path::new("../../secret"));
        link("sibling", Path::new("inside"));
        link("rooted", Path::new("/sys/inside"));
        let read = |open: fn(&Path, &Path) -> io::Result<File>, name: &str| {
            let file = open(&root, &Path::new("sys").join(name)).and_then(checked);
            file.and_then(|f| read_from(f, 64)).ok()
        };
        for open in [open_in_root, open_resolved_in_root] {
            assert_eq!(read(open, "absolute"), None);
            assert_eq!(read(open, "relative"), None);
            assert_eq!(read(open, "sibling").as_deref(), Some(&b"inside\n"[..]));
        }
        // The kernel resolves an absolute link inside the root, as on the host it names.
        assert_eq!(
            read(open_in_root, "rooted").as_deref(),
            Some(&b"inside\n"[..])
        );
        assert_eq!(
            read_text_in(&root, Path::new("sys/inside"), 64).expect("read"),
            "inside\n"
        );
        assert!(is_file_in(&root, Path::new("sys/inside")));
        assert!(!is_file_in(&root, Path::new("sys")));
    }

    #[test]
    fn devices_fifos_and_links_to_them_are_refused_without_blocking() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let fifo = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("cstring");
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        for (path, what) in [
            (fifo.as_path(), "FIFO"),
            (zero.as_path(), "device"),
            (Path::new("/dev/urandom"), "device"),
            (dir.path(), "directory"),
        ] {
            let err = read_text(path, MAX_BYTES).expect_err("refused");
            assert!(err.to_string().contains(what), "{}: {err}", path.display());
        }
    }
}
