//! Black-box tests that nothing the launcher reads is trusted: a `launcher.toml` or a snapshot's
//! files that are devices, FIFOs or absurdly large, run under `prlimit --as` so that a read
//! without a bound fails the same way every run; the state directory, which lives in a /tmp
//! shared with every user; and files a non-root user cannot read. A dyno always boots.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

mod support;
use support::harness::{command, launcher_as_nobody, secs, Run, BOOT, LAUNCHER, SYSTEM_PATH};
use support::text;
use support::{needs_machine, MemoryCgroup};

/// The address space a command gets: a read of /dev/zero or a quadratic walk runs out of it at
/// once, where it would take the machine's memory without the limit.
const ADDRESS_SPACE: &str = "--as=268435456";

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.to_str().expect("utf-8")).expect("cstring");
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
}

/// `launcher ARGS` under prlimit, with only PATH and `env`, run to its end within 5 s.
fn bounded(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("prlimit");
    command
        .arg(ADDRESS_SPACE)
        .arg("--")
        .arg(LAUNCHER)
        .args(args)
        .current_dir("/")
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .envs(env.iter().copied());
    Run::output(command, secs(5))
}

#[test]
fn a_launcher_toml_that_is_a_device_or_a_fifo_is_refused_without_blocking() {
    for kind in ["/dev/zero", "/dev/urandom", "fifo"] {
        let app = TempDir::new().expect("temp dir");
        let file = app.path().join("launcher.toml");
        match kind {
            "fifo" => mkfifo(&file),
            device => std::os::unix::fs::symlink(device, &file).expect("symlink"),
        }
        let dir = app.path().to_str().expect("utf-8");
        for command in ["profile", "size"] {
            let output = bounded(&[command, "--app-dir", dir], &[]);
            let all = text(&output.stdout) + &text(&output.stderr);
            assert_eq!(output.status.code(), Some(0), "{kind}, {command}: {all}");
            assert!(
                all.contains("not a regular file"),
                "{kind}, {command}: {all}"
            );
        }
        let profile = bounded(&["profile", "--app-dir", dir], &[]);
        assert!(
            text(&profile.stdout).contains("export WEB_CONCURRENCY="),
            "the dyno still boots with its sizing: {}",
            text(&profile.stdout)
        );
        let run = bounded(&["run", "--app-dir", dir, "--", "sleep", "30"], &[]);
        assert_eq!(run.status.code(), Some(2), "{kind}: {}", text(&run.stderr));
        assert!(
            text(&run.stderr).contains("refusing to start"),
            "{}",
            text(&run.stderr)
        );
    }
}

#[test]
fn a_snapshot_with_devices_fifos_and_a_50000_level_cgroup_is_sized_at_once() {
    let root = TempDir::new().expect("temp dir");
    let write = |path: &str, content: &str| {
        let path = root.path().join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    };
    write("proc/self/cgroup", "0::/\n");
    write(
        "proc/self/mountinfo",
        "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
    );
    write("sys/devices/system/cpu/online", "0-3\n");
    fs::create_dir_all(root.path().join("sys/fs/cgroup")).expect("mkdir");
    // The link resolves inside the snapshot, as on the host it was taken from: to its /dev/zero.
    std::os::unix::fs::symlink("/dev/zero", root.path().join("sys/fs/cgroup/memory.max"))
        .expect("symlink");
    fs::create_dir(root.path().join("dev")).expect("mkdir");
    let zero = nix::sys::stat::mknod(
        &root.path().join("dev/zero"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    );
    // Without CAP_MKNOD, a FIFO stands for it: read, it would block as /dev/zero never ends.
    let device = if zero.is_ok() { "a device" } else { "a FIFO" };
    if zero.is_err() {
        mkfifo(&root.path().join("dev/zero"));
    }
    mkfifo(&root.path().join("proc/meminfo"));
    let dir = root.path().to_str().expect("utf-8");
    for command in ["size", "profile"] {
        let output = bounded(&[command, "--root", dir], &[]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{command}: {}",
            text(&output.stderr)
        );
    }
    let size = bounded(&["size", "--json", "--root", dir], &[]);
    let report: serde_json::Value = serde_json::from_slice(&size.stdout).expect("json");
    assert_eq!(report["memory_mb"], 512, "the last fallback: {report}");
    let notes = report["notes"].to_string();
    assert!(
        notes.contains(&format!("memory.max: not a regular file ({device})")),
        "{notes}"
    );
    assert!(notes.contains("/proc/meminfo"), "{notes}");

    // 100 KB of /proc/self/cgroup holding one path of 50,000 levels.
    write("proc/self/cgroup", &format!("0::{}\n", "/a".repeat(50_000)));
    let deep = bounded(&["size", "--json", "--root", dir], &[]);
    assert_eq!(deep.status.code(), Some(0), "{}", text(&deep.stderr));
    let report: serde_json::Value = serde_json::from_slice(&deep.stdout).expect("json");
    assert!(
        report["notes"]
            .to_string()
            .contains("longer than 4096 bytes"),
        "{report}"
    );
}

/// A snapshot tree in a temp dir: 4 CPUs, 16 GB of MemTotal, `cgroup` as /proc/self/cgroup and
/// `mountinfo` as its mountinfo; `write` adds files.
struct Tree {
    dir: TempDir,
}

impl Tree {
    fn new(cgroup: &str, mountinfo: &str) -> Tree {
        let tree = Tree {
            dir: TempDir::new().expect("temp dir"),
        };
        tree.write("proc/self/cgroup", cgroup);
        tree.write("proc/self/mountinfo", mountinfo);
        tree.write("proc/meminfo", "MemTotal: 16777216 kB\n");
        tree.write("sys/devices/system/cpu/online", "0-3\n");
        tree
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.root().join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }

    /// `launcher size --json --root` over the tree, bounded in memory and time.
    fn size(&self) -> (serde_json::Value, usize) {
        let root = self.root().to_str().expect("utf-8");
        let output = bounded(&["size", "--json", "--root", root], &[]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        let report = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)));
        (report, output.stdout.len())
    }
}

#[test]
fn finding_7_a_2048_level_cgroup_under_a_100_kb_mount_point_is_sized_in_bounded_memory() {
    // The cgroup path is within PATH_MAX (4096 bytes), the mount point is not; every level's
    // limit files were read and noted with the whole path, 200 MB a file.
    let mount_point = format!("/{}", "m".repeat(100_000));
    let tree = Tree::new(
        &format!("0::{}\n", "/a".repeat(2048)),
        &format!(
            "30 25 0:26 / {mount_point} rw - cgroup2 cgroup2 rw\n\
             35 31 0:32 / {mount_point} rw - cgroup cgroup rw,memory,cpu\n"
        ),
    );
    tree.write(
        "proc/self/cgroup",
        &format!("4:memory,cpu:{0}\n0::{0}\n", "/a".repeat(2048)),
    );
    let (report, bytes) = tree.size();
    assert_eq!(report["memory_mb"], 16384, "MemTotal: {report}");
    let notes = report["notes"].as_array().expect("notes");
    // At most 32 of the reading's own and a count of the rest, beside the formula's.
    assert!(notes.len() <= 40, "{} notes", notes.len());
    assert!(bytes < 64 * 1024, "{bytes} bytes of output");

    // The same depth under an ordinary mount point: the deepest levels' paths are longer than
    // PATH_MAX and cannot be opened, each worth a note.
    let tree = Tree::new(
        &format!("0::{}\n", "/a".repeat(2048)),
        "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
    );
    let (report, bytes) = tree.size();
    assert_eq!(report["memory_mb"], 16384, "MemTotal: {report}");
    let notes = report["notes"].as_array().expect("notes");
    // At most 32 of the reading's own and a count of the rest, beside the formula's.
    assert!(notes.len() <= 40, "{} notes", notes.len());
    assert!(bytes < 64 * 1024, "{bytes} bytes of output");
}

#[test]
fn finding_7_dot_dot_in_a_mount_point_and_links_out_of_the_tree_read_nothing_outside_root() {
    // Beside the tree, a limit of 256 MB the tree must not reach, in both versions' names.
    let outside = TempDir::new().expect("temp dir");
    fs::write(outside.path().join("memory.max"), "268435456\n").expect("write");
    fs::write(outside.path().join("memory.limit_in_bytes"), "268435456\n").expect("write");
    fs::write(outside.path().join("meminfo"), "MemTotal: 1048576 kB\n").expect("write");
    let up = "/..".repeat(Path::new("/").join(outside.path()).components().count() + 4);
    let escape = format!("{up}{}", outside.path().display());
    let cases = [
        // `..` in the mount point of either version.
        (
            "0::/\n".to_owned(),
            format!("30 25 0:26 / {escape} rw - cgroup2 cgroup2 rw\n"),
            vec![],
        ),
        (
            "4:memory:/\n".to_owned(),
            format!("35 31 0:32 / {escape} rw - cgroup cgroup rw,memory\n"),
            vec![],
        ),
        // `..` in the mount point's root, and a mount point that is a link out of the tree.
        (
            "0::/x\n".to_owned(),
            "30 25 0:26 /.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n".to_owned(),
            vec![("sys/fs/cgroup", outside.path().to_path_buf())],
        ),
        // Heroku's well-known v1 path as a relative link that climbs out.
        (
            "0::/\n".to_owned(),
            String::new(),
            vec![(
                "sys/fs/cgroup/memory",
                Path::new(&escape[1..]).to_path_buf(),
            )],
        ),
    ];
    for (cgroup, mountinfo, links) in cases {
        let tree = Tree::new(&cgroup, &mountinfo);
        for (link, target) in &links {
            let link = tree.root().join(link);
            fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
            std::os::unix::fs::symlink(target, link).expect("symlink");
        }
        let (report, _) = tree.size();
        assert_eq!(
            report["memory_mb"], 16384,
            "{mountinfo} {links:?}: the tree's MemTotal, not the limit outside it: {report}"
        );
    }
    // /proc/meminfo itself as a link out of the tree.
    let tree = Tree::new("0::/\n", "");
    fs::remove_file(tree.root().join("proc/meminfo")).expect("rm");
    std::os::unix::fs::symlink(
        outside.path().join("meminfo"),
        tree.root().join("proc/meminfo"),
    )
    .expect("symlink");
    let (report, _) = tree.size();
    assert_eq!(report["memory_mb"], 512, "the last fallback: {report}");
}

#[test]
fn finding_7_an_implausible_mem_total_does_not_drop_real_limits() {
    for (meminfo, mountinfo, limit_file) in [
        (
            "MemTotal: 1 kB\n",
            "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "sys/fs/cgroup/memory.max",
        ),
        (
            "MemTotal: 40000 kB\n",
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
        ),
        // Heroku's Cedar layout: no cgroup mount, the limit file at the well-known path.
        (
            "MemTotal: 0 kB\n",
            "",
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
        ),
    ] {
        let tree = Tree::new("4:memory:/\n0::/\n", mountinfo);
        tree.write("proc/meminfo", meminfo);
        tree.write(limit_file, "536870912\n");
        let (report, _) = tree.size();
        assert_eq!(report["memory_mb"], 512, "{meminfo}: {report}");
        assert_eq!(report["web_concurrency"], 2, "{meminfo}: {report}");
        let notes = report["notes"].to_string();
        assert!(notes.contains("MemTotal"), "{meminfo}: {notes}");
        assert!(!notes.contains("more than the host"), "{meminfo}: {notes}");
    }
    // Without any limit, an implausible MemTotal is not the dyno's size either.
    let tree = Tree::new("0::/\n", "");
    tree.write("proc/meminfo", "MemTotal: 1 kB\n");
    let (report, _) = tree.size();
    assert_eq!(report["memory_mb"], 512, "{report}");
    assert!(
        report["memory_source"].to_string().contains("default"),
        "{report}"
    );
}

#[test]
fn an_unreadable_limit_file_is_named_in_the_notes_for_a_non_root_user() {
    needs_machine(|| {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root, to run launcher size as nobody".to_owned());
        }
        let root = TempDir::new().map_err(|e| e.to_string())?;
        let write = |path: &str, content: &str| {
            let path = root.path().join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, content).expect("write");
        };
        write("proc/self/cgroup", "0::/\n");
        write(
            "proc/self/mountinfo",
            "20 1 0:5 / /proc rw - proc proc rw\n",
        );
        write("proc/meminfo", "MemTotal: 16777216 kB\n");
        write("sys/devices/system/cpu/online", "0-7\n");
        write("sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n");
        let limit = root
            .path()
            .join("sys/fs/cgroup/memory/memory.limit_in_bytes");
        fs::set_permissions(&limit, fs::Permissions::from_mode(0o000)).expect("chmod");
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut size = launcher_as_nobody(&["size", "--json", "--root"]);
        size.arg(root.path());
        let output = Run::output(size, secs(5));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        assert_eq!(
            report["memory_mb"], 16384,
            "MemTotal, the limit unreadable: {report}"
        );
        let notes = report["notes"].to_string();
        assert!(
            notes.contains("cannot read /sys/fs/cgroup/memory/memory.limit_in_bytes")
                && notes.contains("ermission denied"),
            "{notes}"
        );
        Ok(())
    });
}

#[test]
fn finding_9_the_exec_d_program_does_not_wait_on_a_full_fd_3_nobody_reads() {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;

    let layer = TempDir::new().expect("temp dir");
    let program = layer.path().join("web-concurrency");
    std::os::unix::fs::symlink(LAUNCHER, &program).expect("symlink");
    // A pipe filled to the brim; this test holds its read end and reads nothing until the end.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let (mut read_end, mut write_end) = (fs::File::from(read_end), fs::File::from(write_end));
    let nonblocking = |file: &fs::File, on: bool| {
        let flags = if on { libc::O_NONBLOCK } else { 0 };
        // SAFETY: F_SETFL on a descriptor this test owns.
        assert_eq!(
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags) },
            0
        );
    };
    nonblocking(&write_end, true);
    let mut filled = 0;
    while let Ok(n) = write_end.write(&[b'x'; 4096]) {
        filled += n;
    }
    // As the lifecycle hands it over: blocking.
    nonblocking(&write_end, false);
    let fd = OwnedFd::from(write_end);
    let raw = fd.as_raw_fd();
    let mut exec_d = Command::new(&program);
    exec_d
        .current_dir(layer.path())
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("DYNO", "web-12a34b56d-e78f9");
    // SAFETY: dup2 is async-signal-safe; it leaves fd 3 open across exec (no FD_CLOEXEC).
    unsafe {
        exec_d.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = std::time::Instant::now();
    let output = Run::output(exec_d, secs(10));
    let took = started.elapsed();
    drop(fd);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(took < secs(5), "{took:?}");
    let stderr = text(&output.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("fd 3"), "{stderr}");
    assert!(
        stderr
            .lines()
            .next()
            .unwrap_or_default()
            .starts_with("launcher: WEB_CONCURRENCY="),
        "the boot line is still written: {stderr}"
    );
    // Nothing was written into the pipe: no half of the output for the lifecycle to parse.
    nonblocking(&read_end, true);
    let mut held = Vec::new();
    let _ = read_end.read_to_end(&mut held);
    assert_eq!(held.len(), filled);
    assert!(held.iter().all(|b| *b == b'x'));
}

/// A /tmp of the test's own: world-writable and sticky, as the machine's /tmp is.
fn shared_tmp() -> TempDir {
    let tmp = TempDir::new().expect("temp dir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o1777)).expect("chmod");
    tmp
}

fn supervisor(tmp: &Path, env: &[(&str, &str)]) -> Command {
    let tmp = tmp.to_str().expect("utf-8");
    let mut all = vec![
        ("TMPDIR", tmp),
        ("WEB_CONCURRENCY", "1"),
        ("LAUNCHER_SAMPLE_INTERVAL", "0"),
    ];
    all.extend_from_slice(env);
    command(
        None,
        "hostile",
        &all,
        LAUNCHER,
        &["run", "--", "sleep", "60"],
    )
}

/// `launcher size --json` with only PATH and `TMPDIR=tmp`.
fn size_command(tmp: &Path) -> Command {
    let mut size = Command::new(LAUNCHER);
    size.args(["size", "--json"])
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("TMPDIR", tmp);
    size
}

fn size(tmp: &Path) -> serde_json::Value {
    report(size_command(tmp))
}

/// What a `launcher size --json` command prints.
fn report(mut size: Command) -> serde_json::Value {
    let output = size.output().expect("launcher size");
    serde_json::from_slice(&output.stdout).expect("json")
}

/// Where a supervisor of this user with `TMPDIR=tmp` keeps its state files.
fn state_dir(tmp: &Path) -> PathBuf {
    let uid = nix::unistd::geteuid().as_raw();
    tmp.join(format!("launcher-{uid}"))
}

/// The state file of the supervisor that is `pid` in the pid namespace of the process `host_pid`
/// (the same process seen from here, unless it runs in a pid namespace of its own).
fn state_file(tmp: &Path, pid: u32, host_pid: u32) -> PathBuf {
    let namespace = fs::read_link(format!("/proc/{host_pid}/ns/pid")).expect("pid namespace");
    let namespace = namespace.to_string_lossy();
    let inode = namespace.trim_start_matches("pid:[").trim_end_matches(']');
    state_dir(tmp).join(format!("{pid}.{inode}.json"))
}

fn running_pids(report: &serde_json::Value) -> Vec<u64> {
    let running = report["running"].as_array().expect("running");
    running.iter().filter_map(|s| s["pid"].as_u64()).collect()
}

#[test]
fn the_state_file_is_kept_in_a_directory_of_the_users_own_and_read_back() {
    let tmp = shared_tmp();
    let run = Run::spawn(supervisor(tmp.path(), &[]));
    run.wait_event("worker_spawn", BOOT, |_| true);
    let dir = state_dir(tmp.path());
    let state = state_file(tmp.path(), run.pid(), run.pid());
    run.wait("the state file", secs(10), || state.exists().then_some(()));
    let mode = fs::metadata(&dir).expect("stat").mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
    assert_eq!(running_pids(&size(tmp.path())), vec![u64::from(run.pid())]);
    // Nothing else in the directory: the temporary file was renamed into place.
    let names: Vec<String> = fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let name = state.file_name().expect("name").to_string_lossy();
    assert_eq!(names, vec![name.into_owned()]);
    drop(run);

    // A FIFO in its place would have hung launcher size.
    mkfifo(&dir.join("99.json"));
    let output = Run::output(size_command(tmp.path()), secs(5));
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn a_state_directory_planted_by_another_user_is_not_used() {
    let tmp = shared_tmp();
    let uid = nix::unistd::geteuid().as_raw();
    if uid != 0 {
        eprintln!("SKIPPED: needs root, to plant a directory as another user");
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs as root"
        );
        return;
    }
    let target = tmp.path().join("precious");
    fs::write(&target, "precious").expect("write");
    // What another user can plant in a shared /tmp, where root's launcher keeps (and kept: the
    // `launcher` directory of earlier versions) its state: links, for the pids about to be
    // handed out, from the names a state file is written through to a file root would overwrite.
    let last: u32 = fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .expect("ns_last_pid")
        .trim()
        .parse()
        .expect("pid");
    for name in ["launcher-0", "launcher"] {
        let dir = tmp.path().join(name);
        fs::create_dir(&dir).expect("mkdir");
        let ours = state_file(tmp.path(), 0, std::process::id());
        let namespace = ours
            .to_string_lossy()
            .rsplit('.')
            .nth(1)
            .expect("inode")
            .to_owned();
        for pid in last..last + 3000 {
            let files = [
                format!("{pid}.{namespace}.json"),
                format!("{pid}.json"),
                format!(".{pid}.json.tmp"),
            ];
            for file in files {
                std::os::unix::fs::symlink(&target, dir.join(file)).expect("symlink");
            }
        }
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(&dir, nobody, None).expect("chown");
    }
    let run = Run::spawn(supervisor(tmp.path(), &[]));
    let warning = run.wait_event("state", BOOT, |_| true);
    assert!(
        warning.get("message").contains("belongs to uid 65534"),
        "{}",
        warning.line
    );
    run.wait_event("worker_spawn", BOOT, |_| true);
    std::thread::sleep(secs(1));
    assert_eq!(fs::read_to_string(&target).expect("read"), "precious");
    let report = size(tmp.path());
    assert!(running_pids(&report).is_empty(), "{report}");
    assert!(
        report["notes"].to_string().contains("belongs to uid 65534"),
        "{report}"
    );
}

#[test]
fn a_non_root_supervisor_keeps_its_state_beside_roots() {
    needs_machine(|| {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root, to run a supervisor as nobody".to_owned());
        }
        let tmp = shared_tmp();
        // root's directory exists already: nobody's is another one.
        fs::create_dir(tmp.path().join("launcher-0")).expect("mkdir");
        let as_nobody = |args: &[&str]| {
            let mut command = launcher_as_nobody(args);
            command
                .current_dir("/")
                .env("TMPDIR", tmp.path())
                .env("WEB_CONCURRENCY", "1")
                .env("LAUNCHER_SAMPLE_INTERVAL", "0");
            command
        };
        let run = Run::spawn(as_nobody(&["run", "--", "sleep", "60"]));
        run.wait_event("worker_spawn", BOOT, |_| true);
        let state = state_file(tmp.path(), run.pid(), run.pid());
        let state = tmp
            .path()
            .join("launcher-65534")
            .join(state.file_name().expect("name"));
        run.wait("nobody's state file", secs(10), || {
            state.exists().then_some(())
        });
        assert!(run.events("state").is_empty(), "\n{}", run.log());
        let report = report(as_nobody(&["size", "--json"]));
        assert_eq!(
            running_pids(&report),
            vec![u64::from(run.pid())],
            "{report}"
        );
        assert!(
            running_pids(&size(tmp.path())).is_empty(),
            "root sees its own only"
        );
        Ok(())
    });
}

#[test]
fn launcher_size_shows_only_supervisors_of_its_own_cgroup_and_pid_namespace() {
    needs_machine(|| {
        let tmp = shared_tmp();
        let cgroup = MemoryCgroup::create(&["launcher-test-scope"], 1 << 30)?;
        let run = Run::spawn(cgroup.wrap(&supervisor(tmp.path(), &[])));
        run.wait_event("worker_spawn", BOOT, |_| true);
        let state = state_file(tmp.path(), run.pid(), run.pid());
        run.wait("the state file", secs(10), || state.exists().then_some(()));
        assert!(
            running_pids(&size(tmp.path())).is_empty(),
            "another cgroup's"
        );
        let report = report(cgroup.wrap(&size_command(tmp.path())));
        assert_eq!(
            running_pids(&report),
            vec![u64::from(run.pid())],
            "{report}"
        );
        drop(run);

        // A supervisor in a pid namespace of its own: its pid means nothing out here.
        let mut unshared = Command::new("unshare");
        unshared
            .args(["--pid", "--fork", "--mount-proc", "--"])
            .arg(LAUNCHER)
            .args(["run", "--", "sleep", "60"])
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("TMPDIR", tmp.path())
            .env("WEB_CONCURRENCY", "1");
        let contained = Run::spawn(unshared);
        contained.wait_event("worker_spawn", BOOT, |_| true);
        let launcher = contained.wait_children(1, BOOT)[0];
        let as_pid_1 = state_file(tmp.path(), 1, launcher);
        contained.wait("its state file", secs(10), || {
            as_pid_1.exists().then_some(())
        });
        assert!(
            running_pids(&size(tmp.path())).is_empty(),
            "another pid namespace's"
        );
        Ok(())
    });
}

#[test]
fn finding_8_two_pid_1_launchers_sharing_a_tmpdir_each_show_in_their_own_namespace() {
    needs_machine(|| {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root, for pid namespaces".to_owned());
        }
        let tmp = shared_tmp();
        // Two containers' PID 1, told apart by their worker counts, with one TMPDIR.
        let contained = |workers: &str| {
            let mut unshared = Command::new("unshare");
            unshared
                .args(["--pid", "--fork", "--mount-proc", "--"])
                .arg(LAUNCHER)
                .args(["run", "--", "sleep", "60"])
                .env_clear()
                .env("PATH", SYSTEM_PATH)
                .env("TMPDIR", tmp.path())
                .env("WEB_CONCURRENCY", workers)
                .env("LAUNCHER_SAMPLE_INTERVAL", "0");
            let run = Run::spawn(unshared);
            run.wait_events(
                "worker_spawn",
                workers.parse().expect("count"),
                BOOT,
                |_| true,
            );
            // unshare's one child is the launcher, PID 1 inside.
            let launcher = run.wait_children(1, BOOT)[0];
            (run, launcher)
        };
        let (one, one_pid) = contained("1");
        let (two, two_pid) = contained("2");
        // `launcher size` in the pid namespace (and its /proc) of `pid`: the workers of each
        // supervisor it shows.
        let seen_from = |pid: u32| {
            let mut size = Command::new("nsenter");
            size.args(["--target", &pid.to_string(), "--pid", "--mount", "--"])
                .arg(LAUNCHER)
                .args(["size", "--json"])
                .env_clear()
                .env("PATH", SYSTEM_PATH)
                .env("TMPDIR", tmp.path());
            let report = report(size);
            let running = report["running"].as_array().expect("running").clone();
            let seen: Vec<(u64, u64)> = running
                .iter()
                .map(|s| {
                    (
                        s["pid"].as_u64().unwrap_or(0),
                        s["workers"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            seen
        };
        // Each sees its own, and only its own, in every read (they rewrite their files every
        // 10 s: a file shared by name is the last writer's).
        one.wait("each namespace to show its own", secs(15), || {
            (seen_from(one_pid) == [(1, 1)] && seen_from(two_pid) == [(1, 2)]).then_some(())
        });
        for _ in 0..10 {
            assert_eq!(seen_from(one_pid), [(1, 1)], "\n{}", one.log());
            assert_eq!(seen_from(two_pid), [(1, 2)], "\n{}", two.log());
        }
        // Neither is seen from the machine's namespace, and each removes its own file at exit.
        assert!(running_pids(&size(tmp.path())).is_empty());
        for (run, pid) in [(one, one_pid), (two, two_pid)] {
            support::procs::signal("TERM", &[pid]);
            let mut run = run;
            run.wait_exit(secs(30));
        }
        let left: Vec<_> = fs::read_dir(state_dir(tmp.path()))
            .expect("state dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        Ok(())
    });
}

#[test]
fn finding_10_a_tmpdir_in_a_cgroup_filesystem_gets_no_cgroup_made_in_it() {
    needs_machine(|| {
        let cgroup = MemoryCgroup::create(&["launcher-test-tmpdir"], 1 << 30)?;
        let tmpdir = cgroup.dir().to_str().expect("utf-8").to_owned();
        let made = state_dir(cgroup.dir());
        let run = Run::spawn(supervisor(cgroup.dir(), &[]));
        run.wait_event("worker_spawn", BOOT, |_| true);
        // The state directory was chosen (and, before, made) before the first worker.
        let made_there = made.exists();
        if made_there {
            let _ = fs::remove_dir(&made);
        }
        assert!(!made_there, "a cgroup was made: {}", made.display());
        let line = run.wait_event("state", BOOT, |_| true);
        let message = line.get("message");
        assert!(message.contains(&tmpdir[..30]), "{}", line.line);
        assert!(message.contains("cgroup"), "{}", line.line);
        assert!(message.contains("/tmp"), "{}", line.line);
        assert_eq!(run.events("state").len(), 1, "\n{}", run.log());
        // launcher size, with the same TMPDIR, looks where the supervisor keeps its file.
        let state = state_file(Path::new("/tmp"), run.pid(), run.pid());
        run.wait("the state file in /tmp", secs(10), || {
            state.exists().then_some(())
        });
        let report = size(cgroup.dir());
        assert_eq!(
            running_pids(&report),
            vec![u64::from(run.pid())],
            "{report}"
        );
        assert!(report["notes"].to_string().contains("cgroup"), "{report}");
        support::procs::signal("TERM", &[run.pid()]);
        let mut run = run;
        run.wait_exit(secs(30));
        assert!(!state.exists(), "{} left behind", state.display());
        // Nothing under the cgroup but what the kernel made: no directory at all.
        let dirs: Vec<_> = fs::read_dir(cgroup.dir())
            .expect("cgroup")
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name())
            .collect();
        assert!(dirs.is_empty(), "{dirs:?}");
        Ok(())
    });
}

#[test]
fn a_relative_tmpdir_falls_back_to_tmp_with_one_line() {
    let run = Run::spawn(command(
        None,
        "hostile",
        &[
            ("TMPDIR", "relative/tmp"),
            ("WEB_CONCURRENCY", "1"),
            ("LAUNCHER_SAMPLE_INTERVAL", "0"),
        ],
        LAUNCHER,
        &["run", "--", "sleep", "60"],
    ));
    let line = run.wait_event("state", BOOT, |_| true);
    assert!(
        line.get("message").contains("not an absolute path"),
        "{}",
        line.line
    );
    assert!(line.get("message").contains("/tmp"), "{}", line.line);
    assert_eq!(run.events("state").len(), 1, "\n{}", run.log());
    // Ended with SIGTERM, it removes its state file from /tmp.
    support::procs::signal("TERM", &[run.pid()]);
    let mut run = run;
    run.wait_exit(secs(30));
    let dir = state_dir(Path::new("/tmp"));
    let left = state_file(Path::new("/tmp"), run.pid(), std::process::id());
    assert!(!left.exists(), "{} left behind", left.display());
    // The directory too, if this test made it (removing a directory fails while it has files).
    let _ = fs::remove_dir(&dir);
}
