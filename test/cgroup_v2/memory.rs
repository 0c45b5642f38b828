//! Memory on cgroup v2: OOM kills counted from memory.events and attributed, the memory guard
//! reading memory.stat, measured sizing under memory.max.

use super::*;

/// Calls /leak until the kernel's OOM killer has killed in `cgroup`. The apps are given a leak
/// larger than the cgroup (`OOM_LEAK`), so that the first call ends in a kill: a leak in small
/// steps would have the kernel evict the workers' code pages and read them back (over 9p) for
/// minutes before it gives up and kills.
/// The kernel takes its time there too (15 s seen): it reclaims what it can first.
fn leak_until_oom(port: u16, cgroup: &Cgroup2, run: &Run) {
    let deadline = Instant::now() + secs(120);
    while Instant::now() < deadline {
        let _ = get(port, "/leak", secs(60));
        if cgroup.oom_kills() > 0 {
            return;
        }
    }
    panic!("/leak for 120 s and no OOM kill\n{}", run.log());
}

/// More than the 128 MB cgroups of the OOM tests hold.
const OOM_LEAK: (&str, &str) = ("LEAK_MB", "160");

/// A launcher serving `app` with `server` in a `memory_mb` cgroup, the guard off: the cgroup,
/// the run and its port, once a worker is ready.
fn unguarded(
    name: &str,
    memory_mb: u64,
    app: &str,
    server: &str,
    extra: &[(&str, &str)],
) -> Result<(Cgroup2, Run, u16), String> {
    let venv = venv(&[server])?;
    let limit = (memory_mb * MB).to_string();
    let cgroup = Cgroup2::create(name, &[("memory.max", &limit)])?;
    let port = free_port();
    let port_text = port.to_string();
    let mut env = vec![
        ("LAUNCHER_MEMORY_GUARD", "off"),
        ("WEB_CONCURRENCY", "1"),
        ("PORT", port_text.as_str()),
    ];
    env.extend_from_slice(extra);
    let args = ["run", "--", server, "app:app"];
    let run = Run::spawn(cgroup.wrap(&launcher(&venv, app, &env, &args)));
    run.wait("the app to answer", GUEST_BOOT, || {
        get(port, "/", secs(30)).ok()
    });
    Ok((cgroup, run, port))
}

/// The `oom_kill` lines account for every kill memory.events counted, and `pid`'s as attributed.
fn assert_attributed(cgroup: &Cgroup2, run: &Run, pid: u32) {
    let kills = cgroup.oom_kills();
    let lines = run.wait_events("oom_kill", 1, secs(30), |_| true);
    let sum = |key: &str| lines.iter().map(|e| e.num::<u64>(key)).sum::<u64>();
    let log = run.log();
    assert!(
        kills >= 1,
        "memory.events: {}\n{log}",
        cgroup.read("memory.events")
    );
    assert_eq!(
        sum("kills"),
        kills,
        "every kill memory.events counted is reported\n{log}"
    );
    assert_eq!(sum("unattributed"), 0, "{log}");
    assert_eq!(
        lines[0].pid(),
        pid,
        "the worker that leaked is named\n{log}"
    );
}

#[test]
fn an_oom_kill_of_a_fan_out_worker_is_counted_from_memory_events_and_attributed() {
    vm::guest(|_| {
        let sample = ("LAUNCHER_SAMPLE_INTERVAL", "1");
        let (cgroup, run, port) =
            unguarded("oom-fanout", 128, "asgi", "uvicorn", &[OOM_LEAK, sample])?;
        let worker = run.wait_children(1, secs(5))[0];
        leak_until_oom(port, &cgroup, &run);
        assert_attributed(&cgroup, &run, worker);
        let exit = run.wait_event("worker_exit", secs(10), |e| e.pid() == worker);
        assert_eq!(exit.opt("cause"), Some("oom_kill"), "{}", exit.line);
        // Before it killed, the kernel reclaimed what it could while the worker waited: memory
        // pressure (PSI), which a sample line shows, each the share of the second since the one
        // before. The stall may be a tenth of a second, before the kill: in one of the lines
        // up to the first after the worker's exit.
        let after = run.wait_event("sample", secs(10), |e| e.index > exit.index);
        let samples = run.events("sample");
        let pressure = samples
            .iter()
            .filter(|e| e.index <= after.index)
            .map(|e| e.num::<f64>("sample#memory_pressure_some"))
            .fold(0.0, f64::max);
        assert!(
            pressure > 0.0,
            "{}\n{}",
            run.log(),
            cgroup.read("memory.pressure")
        );
        Ok(())
    });
}

/// gunicorn's master reaps its workers, not the launcher: a worker the kernel killed stays a
/// zombie until the master gets to it, which in a dyno short of memory (its pages evicted, read
/// back from disk) can take seconds. Stopping the master makes that wait certain.
#[test]
fn an_oom_kill_of_a_gunicorn_worker_is_attributed_while_its_master_is_slow_to_reap() {
    vm::guest(|_| {
        let (cgroup, run, port) =
            unguarded("oom-delegate", 128, "flask-memory", "gunicorn", &[OOM_LEAK])?;
        let master = run.wait_children(1, GUEST_BOOT)[0];
        let worker = run.wait_grandchildren(master, 1, GUEST_BOOT)[0];
        signal("STOP", &[master]);
        let resume = Resume(master);
        leak_until_oom(port, &cgroup, &run);
        // Three of the launcher's checks with the killed worker unreaped.
        std::thread::sleep(Duration::from_millis(1500));
        drop(resume);
        assert_attributed(&cgroup, &run, worker);
        Ok(())
    });
}

/// Sends SIGCONT to a stopped process when dropped, failing test or not.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

#[test]
fn the_memory_guard_recycles_a_leaking_worker_by_memory_stat_before_the_kernel_kills() {
    vm::guest(|_| {
        let limit = (256 * MB).to_string();
        let files = [("memory.max", limit.as_str())];
        let leak = [("LEAK_MB", "4"), ("WEB_CONCURRENCY", "2")];
        let (cgroup, run, port, master) = gunicorn("guard", &files, &leak, 2)?;
        let memory = run.wait_event("memory", secs(5), |_| true);
        let stat = format!("cgroup v2 {}/memory.stat", cgroup.dir().display());
        assert_eq!(memory.get("meter"), stat, "{}", memory.line);
        assert_eq!(memory.get("soft_limit"), "217.6MB", "{}", memory.line);
        // 4 MB a call, 4 calls a second at most, as a leak grows between two of the guard's
        // checks (every 0.5 s) on a dyno: over the soft limit (85%) after some 40 calls.
        let deadline = Instant::now() + secs(120);
        while run.events("memory_recycle").is_empty() && Instant::now() < deadline {
            let pace = Instant::now() + Duration::from_millis(250);
            let _ = get(port, "/leak", secs(30));
            std::thread::sleep(pace.saturating_duration_since(Instant::now()));
        }
        let recycle = run.wait_event("memory_recycle", secs(5), |_| true);
        assert_eq!(recycle.get("reason"), "dyno_soft_limit", "{}", recycle.line);
        assert!(
            recycle.megabytes("memory_total") > 217.6,
            "{}",
            recycle.line
        );
        assert!(
            recycle.megabytes("memory_total") < 256.0,
            "{}",
            recycle.line
        );
        // The worker that held the leak was the one stopped, and gunicorn replaced it.
        assert!(recycle.megabytes("worker_uss") > 80.0, "{}", recycle.line);
        let recycled = recycle.pid();
        run.wait("the recycled worker to be replaced", GUEST_BOOT, || {
            let workers = children(master);
            (workers.len() == 2 && !workers.contains(&recycled)).then_some(())
        });
        assert_eq!(
            cgroup.oom_kills(),
            0,
            "{}\n{}",
            cgroup.read("memory.events"),
            run.log()
        );
        assert!(run.events("oom_kill").is_empty(), "{}", run.log());
        // The sample's usage is memory.stat's anonymous memory (no swap in the guest): read
        // here just before and just after a sample, once the replacement has booted.
        run.wait("both workers to answer", GUEST_BOOT, || {
            let pids: std::collections::HashSet<u64> = (0..8)
                .filter_map(|_| support::http::get_json(port, "/")["pid"].as_u64())
                .collect();
            (pids.len() == 2).then_some(())
        });
        let anon = || cgroup.field("memory.stat", "anon") as f64 / MB as f64;
        let last = run.events("sample").last().map_or(0, |e| e.index);
        let before = anon();
        let sample = run.wait_event("sample", secs(5), |e| e.index > last);
        let after = anon();
        let sampled = sample.megabytes("sample#memory_total");
        let (low, high) = (before.min(after) - 8.0, before.max(after) + 8.0);
        assert!(
            (low..high).contains(&sampled),
            "memory.stat anon {before:.1} MB, then {after:.1} MB\n{}",
            sample.line
        );
        Ok(())
    });
}

#[test]
fn measured_sizing_fits_workers_under_memory_max_from_memory_stat() {
    vm::guest(|_| {
        let limit = (512 * MB).to_string();
        // 2 workers by the formula (512 MB / 256 MB); with 100 MB each, a third fits in the
        // soft limit's 435 MB and a fourth does not.
        let files = [("memory.max", limit.as_str())];
        let measured = [
            ("BALLAST_MB", "100"),
            ("LAUNCHER_SIZING", "measured"),
            // The workers import Flask for some 20 s in the guest before their ballast is in.
            ("LAUNCHER_SIZING_WARMUP", "40"),
        ];
        let (_cgroup, run, _port, master) = gunicorn("measured", &files, &measured, 2)?;
        let resize = run.wait_event("resize", GUEST_BOOT, |_| true);
        assert_eq!(
            (resize.get("from"), resize.get("to")),
            ("2", "3"),
            "{}",
            resize.line
        );
        assert_eq!(resize.get("sizing"), "measured", "{}", resize.line);
        let fit: f64 = resize.num("fit");
        let (cost, base) = (resize.megabytes("worker_cost"), resize.megabytes("base"));
        assert!(
            (3.25..4.25).contains(&fit),
            "{}\n{}",
            resize.line,
            run.log()
        );
        assert!((100.0..140.0).contains(&cost), "{}", resize.line);
        // The fit is the soft limit less the base, over one worker's cost.
        assert!(
            ((435.2 - base) / cost - fit).abs() < 0.05,
            "{}",
            resize.line
        );
        run.wait_grandchildren(master, 3, GUEST_BOOT);
        Ok(())
    });
}
