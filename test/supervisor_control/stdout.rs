//! A stdout nobody reads: the loop never stalls on it, at work or at shutdown.

use super::*;

/// A pipe of one page (the least the kernel allows): the launcher's stdout, which the test reads
/// only when it wants to.
fn small_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array with two new descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are new and ours.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    (read, write)
}

/// `launcher run` of two `sleep 1000` workers (graceful timeout 1 s) with its stdout on `write`
/// and its state files in `tmp`.
fn two_sleepers_writing_to(write: OwnedFd, tmp: &Path) -> std::process::Child {
    Command::new(LAUNCHER)
        .args(["run", "--", "sleep", "1000"])
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("TMPDIR", tmp)
        .env("WEB_CONCURRENCY", "2")
        .env("LAUNCHER_GRACEFUL_TIMEOUT", "1")
        .env("LAUNCHER_SAMPLE_INTERVAL", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

#[test]
fn a_stdout_nobody_reads_never_stalls_the_loop_and_dropped_lines_are_counted() {
    let _serial = serial();
    let (read, write) = small_pipe();
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let mut child = two_sleepers_writing_to(write, tmp.path());
    let pid = child.id();
    let mut pipe = fs::File::from(read);
    let guard = scopeguard(pid);
    support::wait_for("2 workers", BOOT, || {
        (support::procs::children(pid).len() == 2).then_some(())
    });
    // A line per forwarded signal, far more than the pipe and the launcher's queue hold: its
    // writes would block, and lines are dropped.
    flood_with_winch(pid, 6_000);
    // The workers' stdout is the same pipe, untouched: not O_NONBLOCK.
    for worker in support::procs::children(pid) {
        let info = fs::read_to_string(format!("/proc/{worker}/fdinfo/1")).expect("fdinfo");
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .expect("flags");
        let flags = u32::from_str_radix(flags.trim(), 8).expect("octal");
        assert_eq!(
            flags & libc::O_NONBLOCK as u32,
            0,
            "a worker's stdout became O_NONBLOCK"
        );
    }
    // The loop still answers: TTIN starts a third worker while stdout is full.
    signal("TTIN", &[pid]);
    support::wait_for("a third worker", secs(5), || {
        (support::procs::children(pid).len() == 3).then_some(())
    });
    // Drained, the log says how many lines it lost.
    let (lines, reader) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 65536];
        while let Ok(n) = pipe.read(&mut buffer) {
            if n == 0 || lines.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let deadline = Instant::now() + secs(10);
    while !text.contains("event=log_dropped") && Instant::now() < deadline {
        if let Ok(bytes) = reader.recv_timeout(Duration::from_millis(100)) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    let dropped = text.lines().find(|l| l.contains("event=log_dropped"));
    let dropped = dropped.unwrap_or_else(|| panic!("no log_dropped line in:\n{text}"));
    let count: usize = dropped
        .split_whitespace()
        .find_map(|f| f.strip_prefix("lines=")?.parse().ok())
        .expect("lines=N");
    assert!(count > 0, "{dropped}");
    signal("TERM", &[pid]);
    let status = support::wait_for("the launcher's exit", secs(1 + 5), || {
        child.try_wait().ok()?
    });
    assert_eq!(status.code(), Some(0));
    drop(guard);
}

#[test]
fn the_launcher_exits_within_the_deadline_when_stdout_is_stalled_at_shutdown() {
    let _serial = serial();
    let (_read, write) = small_pipe();
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let mut child = two_sleepers_writing_to(write, tmp.path());
    let pid = child.id();
    let guard = scopeguard(pid);
    support::wait_for("2 workers", BOOT, || {
        (support::procs::children(pid).len() == 2).then_some(())
    });
    flood_with_winch(pid, 2_000);
    let term = Instant::now();
    signal("TERM", &[pid]);
    // The deadline (1 s) and at most 1 s for the queued lines.
    let status = support::wait_for("the launcher's exit", secs(1 + 5), || {
        child.try_wait().ok()?
    });
    assert_eq!(status.code(), Some(0));
    assert!(term.elapsed() < secs(5), "{:?}", term.elapsed());
    drop(guard);
}
