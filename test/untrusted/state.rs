//! The state directory, which lives in a /tmp shared with every user.

use super::*;

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
