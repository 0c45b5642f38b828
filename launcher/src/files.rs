//! Reading files the launcher does not control: the app's `launcher.toml`, /proc, cgroup files
//! (under `--root` too), state files, Heroku's ENV_DIR. A read is bounded, never blocks, and
//! takes only regular files: procfs, sysfs and cgroupfs files are regular files too, while a
//! FIFO, a device (`/dev/zero`, `/dev/urandom`) or a socket behind the name, or a symlink to one,
//! is refused before a byte is read. A leaf module: it uses nothing of the crate.

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
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | flags)
        .open(path)?;
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
