//! What a hostile trial found a worker could do to break a dyno while the launcher reported it
//! healthy (findings 1 to 6 of that trial), each with the real server or a worker of our own
//! (test/fixtures/hostile/worker.py) in a real cgroup v1 memory cgroup of 512 MB.

mod support;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use support::harness::{launcher, secs, Run, BOOT};
use support::http::{get, get_json, Load};
use support::procs::{children, descendants, signal};
use support::{free_port, needs_machine, venv, MemoryCgroup};

const MB: u64 = 1024 * 1024;
const LIMIT: u64 = 512 * MB;

/// The test that measures the launcher's CPU runs alone; the others may share the machine.
static MACHINE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

/// How many of `count` requests to `/` were answered with 200, one at a time.
fn answered(port: u16, count: usize) -> usize {
    let ok = (0..count).filter(|_| get(port, "/", secs(2)).is_ok_and(|r| r.status == 200));
    ok.count()
}

/// `launcher run -- python3 worker.py` with `env`, fanned out to `workers` copies in `cgroup`.
fn workers_of_our_own(
    cgroup: &MemoryCgroup,
    port: u16,
    workers: &str,
    env: &[(&str, &str)],
) -> Result<Run, String> {
    let venv = venv(&["python3"])?;
    let port = port.to_string();
    let mut all = vec![("PORT", port.as_str()), ("WEB_CONCURRENCY", workers)];
    all.extend_from_slice(env);
    let args = ["run", "--", "python3", "worker.py"];
    Ok(Run::spawn(
        cgroup.wrap(&launcher(&venv, "hostile", &all, &args)),
    ))
}

/// The CPU time (user and system, in seconds) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

#[test]
fn finding_1_a_worker_that_shuts_the_shared_socket_down_does_not_stop_the_dyno() {
    needs_machine(|| {
        let _machine = shared();
        let cgroup = MemoryCgroup::create(&["launcher-test-finding-1"], LIMIT)?;
        let port = free_port();
        let env = [("SHUTDOWN_ON_TERM", "1"), ("LAUNCHER_SAMPLE_INTERVAL", "1")];
        let run = workers_of_our_own(&cgroup, port, "3", &env)?;
        run.wait("three workers serving", BOOT, || {
            (run.fixture_lines("serving") == 3).then_some(())
        });
        assert_eq!(answered(port, 10), 10, "{}", run.log());
        // One fewer worker: it gets SIGTERM, and shuts the socket down for every process.
        signal("TTOU", &[run.pid()]);
        run.wait("the worker's shutdown()", secs(10), || {
            (run.fixture_lines("shutdown_fd3") == 1).then_some(())
        });
        let lost = run.wait_event("listener_lost", secs(5), |_| true);
        assert_eq!(lost.get("state"), "CLOSE", "{}", lost.line);
        assert_eq!(lost.get("result"), "listening", "{}", lost.line);
        assert_eq!(answered(port, 20), 20, "served again\n{}", run.log());
        // No sample line shows the figures of a socket that was not listening.
        let after = lost.index;
        let sample = run.wait_event("sample", secs(5), |e| e.index > after);
        assert_eq!(
            sample.get("sample#listen_backlog"),
            "2048",
            "{}",
            sample.line
        );
        Ok(())
    });
}

#[test]
fn finding_2_memory_in_tmpfs_counts_and_is_not_recycled_for_in_vain() {
    needs_machine(|| {
        let _machine = shared();
        let venv = venv(&["gunicorn"])?;
        let cgroup = MemoryCgroup::create(&["launcher-test-finding-2"], LIMIT)?;
        let shm = tempfile::Builder::new()
            .prefix("launcher-test-finding-2-")
            .tempfile_in("/dev/shm")
            .map_err(|e| format!("no /dev/shm to write to: {e}"))?;
        let (port, shm_file) = (free_port(), shm.path().display().to_string());
        let port_text = port.to_string();
        let env = [
            ("PORT", port_text.as_str()),
            ("SHM_FILE", shm_file.as_str()),
            ("LAUNCHER_SAMPLE_INTERVAL", "1"),
        ];
        let args = ["run", "--", "gunicorn", "app:app"];
        let run = Run::spawn(cgroup.wrap(&launcher(&venv, "flask-memory", &env, &args)));
        run.wait_event("worker_ready", BOOT, |_| true);
        // 440 MB in a tmpfs file: over the soft limit (435 MB), and no worker's.
        let written = get_json(port, "/shm?mb=440");
        assert_eq!(written["written_mb"], 440, "{written}");
        let full = run.wait_event("memory_full", secs(10), |_| true);
        assert_eq!(full.get("reason"), "outside_workers", "{}", full.line);
        assert!(full.megabytes("memory_shmem") >= 430.0, "{}", full.line);
        let sample = run.wait_event("sample", secs(5), |e| e.index > full.index);
        assert!(
            sample.megabytes("sample#memory_total") >= 440.0,
            "the tmpfs file counts: {}",
            sample.line
        );
        std::thread::sleep(secs(4));
        assert!(
            run.events("memory_recycle").is_empty(),
            "recycled in vain\n{}",
            run.log()
        );
        assert_eq!(cgroup.oom_kills(), 0, "{}", run.log());
        drop(shm);
        Ok(())
    });
}

#[test]
fn finding_3_a_replacement_booting_with_19000_fds_costs_the_launcher_little() {
    needs_machine(|| {
        let _machine = alone();
        let cgroup = MemoryCgroup::create(&["launcher-test-finding-3"], LIMIT)?;
        let port = free_port();
        let env = [
            ("FDS", "19000"),
            ("BOOT_S", "15"),
            ("LAUNCHER_READY_TIMEOUT", "60"),
        ];
        // The first worker boots slowly too; the measure is of its replacement's boot.
        let run = workers_of_our_own(&cgroup, port, "1", &env)?;
        run.wait("the worker serving", secs(40), || {
            (run.fixture_lines("serving") == 1).then_some(())
        });
        signal("HUP", &[run.pid()]);
        run.wait_event("worker_spawn", secs(5), |e| e.get("worker") == "2");
        std::thread::sleep(secs(2));
        let (before, start) = (cpu_seconds(run.pid()), Instant::now());
        std::thread::sleep(secs(8));
        let share = (cpu_seconds(run.pid()) - before) / start.elapsed().as_secs_f64();
        eprintln!(
            "launcher CPU while the replacement boots: {:.1}% of a core",
            share * 100.0
        );
        assert!(
            share < 0.2,
            "the launcher used {:.0}% of a core while the replacement booted\n{}",
            share * 100.0,
            run.log()
        );
        run.wait_event("restart_done", secs(30), |_| true);
        Ok(())
    });
}

#[test]
fn finding_4_a_thousand_ttin_stop_at_what_fits_in_memory() {
    needs_machine(|| {
        let _machine = shared();
        let venv = venv(&["gunicorn"])?;
        let cgroup = MemoryCgroup::create(&["launcher-test-finding-4"], LIMIT)?;
        let port = free_port();
        let port_text = port.to_string();
        let env = [("PORT", port_text.as_str()), ("BALLAST_MB", "20")];
        let args = ["run", "--", "gunicorn", "app:app"];
        let run = Run::spawn(cgroup.wrap(&launcher(&venv, "flask-memory", &env, &args)));
        run.wait_event("worker_ready", BOOT, |_| true);
        let master = run.wait_children(1, BOOT)[0];
        run.wait_grandchildren(master, 2, BOOT);
        // A worker's memory is taken from workers that have booted: not before it is known.
        std::thread::sleep(secs(6));
        for _ in 0..1000 {
            signal("TTIN", &[run.pid()]);
        }
        let until = Instant::now() + secs(25);
        let mut most = 0;
        while Instant::now() < until {
            most = most.max(children(master).len());
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = run.log();
        assert_eq!(cgroup.oom_kills(), 0, "{most} workers\n{log}");
        let capped = run.events("signal");
        let capped = capped.iter().filter(|e| e.get("action") == "capped");
        assert!(capped.count() > 0, "{log}");
        // Each worker holds ~35 MB: what fits under 435 MB, not the 1024 asked for.
        assert!((3..=14).contains(&most), "{most} workers\n{log}");
        assert_eq!(answered(port, 5), 5, "{log}");
        Ok(())
    });
}

#[test]
fn finding_5_a_recycled_workers_detached_helper_is_stopped_with_it() {
    needs_machine(|| {
        let _machine = shared();
        let cgroup = MemoryCgroup::create(&["launcher-test-finding-5"], LIMIT)?;
        let port = free_port();
        let env = [("HELPER_MB", "40"), ("LAUNCHER_WORKER_MEMORY_MAX", "45")];
        let run = workers_of_our_own(&cgroup, port, "2", &env)?;
        run.wait("two workers serving", BOOT, || {
            (run.fixture_lines("serving") >= 2).then_some(())
        });
        let load = Load::on(port, 2, "/", secs(40));
        let until = Instant::now() + secs(30);
        let mut most = 0;
        while Instant::now() < until {
            most = most.max(cgroup.pids().len());
            std::thread::sleep(Duration::from_millis(200));
        }
        let tally = load.finish();
        let log = run.log();
        let stops = run.events("detached_stop");
        assert!(!stops.is_empty(), "{log}");
        assert!(stops.iter().all(|e| e.get("processes") == "1"), "{log}");
        // The launcher, 2 workers and their 2 helpers, and a replacement and its helper while a
        // recycle is under way: never the helpers of every worker recycled.
        assert!(most <= 8, "{most} processes\n{log}");
        assert_eq!(cgroup.oom_kills(), 0, "{log}");
        assert!(tally.failures.is_empty(), "{tally:?}");
        let left = descendants(run.pid()).len();
        assert!(left <= 6, "{left} processes under the launcher\n{log}");
        Ok(())
    });
}

#[test]
fn finding_6_ttin_never_takes_adaptive_sizing_past_launcher_max_workers() {
    needs_machine(|| {
        let _machine = shared();
        let venv = venv(&["gunicorn"])?;
        let cgroup = MemoryCgroup::create(&["launcher-test-finding-6"], LIMIT)?;
        let port = free_port();
        let port_text = port.to_string();
        let env = [
            ("PORT", port_text.as_str()),
            ("LAUNCHER_SIZING", "adaptive"),
            ("LAUNCHER_MAX_WORKERS", "3"),
        ];
        let args = ["run", "--", "gunicorn", "app:app"];
        let run = Run::spawn(cgroup.wrap(&launcher(&venv, "flask-memory", &env, &args)));
        run.wait_event("worker_ready", BOOT, |_| true);
        let master = run.wait_children(1, BOOT)[0];
        run.wait_grandchildren(master, 2, BOOT);
        std::thread::sleep(secs(6));
        for _ in 0..5 {
            signal("TTIN", &[run.pid()]);
            std::thread::sleep(Duration::from_millis(300));
        }
        std::thread::sleep(secs(3));
        let log = run.log();
        assert_eq!(children(master).len(), 3, "{log}");
        let capped = run.events("signal");
        let capped: Vec<_> = capped
            .iter()
            .filter(|e| e.get("action") == "capped")
            .collect();
        assert!(capped.len() >= 3, "{log}");
        assert!(
            capped
                .iter()
                .all(|e| e.get("reason") == "LAUNCHER_MAX_WORKERS"),
            "{log}"
        );
        Ok(())
    });
}
