//! The memory guard, OOM attribution and measured sizing, in real cgroup v1 memory cgroups (root),
//! with real gunicorn and uvicorn serving apps whose memory the tests control.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::harness::{command, launcher, secs, Run, BOOT, LAUNCHER};
use support::http::{get_json, paced, Load};
use support::procs::children;
use support::{free_port, needs_machine, skip, venv, wait_for, MemoryCgroup, NO_CGROUP_V1};

const MB: u64 = 1024 * 1024;
const LIMIT: u64 = 512 * MB;
/// The default soft limit: 85% of the quota.
const SOFT_LIMIT: u64 = LIMIT / 100 * 85;

/// 300 calls of /leak at 20 per second: 600 MB leaked in 15 s, more than the 512 MB cgroup holds.
fn leak_600_mb(port: u16) -> support::http::Tally {
    paced(port, "/leak", 300, Duration::from_millis(50))
}

/// WEB_CONCURRENCY as the buildpack's boot script computes it inside `cgroup`.
fn sized_in(cgroup: &MemoryCgroup) -> String {
    let mut size = Command::new(LAUNCHER);
    size.args(["size", "--json"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    let output = cgroup.wrap(&size).output().expect("launcher size");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    report["web_concurrency"].to_string()
}

#[test]
fn a_leak_oom_kills_gunicorn_alone_and_is_recycled_under_the_launcher() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        // gunicorn alone, with the worker count the buildpack gives it today.
        let alone = MemoryCgroup::create(&["launcher-test-leak-alone"], LIMIT)?;
        let (port, workers) = (free_port(), sized_in(&alone));
        assert_eq!(workers, "2", "512 MB / 256 MB per worker");
        let bind = format!("127.0.0.1:{port}");
        let gunicorn = command(
            Some(&venv),
            "flask-memory",
            &[("WEB_CONCURRENCY", &workers)],
            "gunicorn",
            &["--bind", &bind, "app:app"],
        );
        let run = Run::spawn(alone.wrap(&gunicorn));
        wait_for("gunicorn alone to answer", BOOT, || {
            support::http::get(port, "/", secs(2)).ok()
        });
        let tally = leak_600_mb(port);
        let killed = alone.oom_kills();
        let log = run.log();
        drop(run);
        assert!(
            killed >= 1,
            "gunicorn alone was never OOM-killed, so this test proves nothing: {tally:?}\n{log}"
        );

        // The same app, load and cgroup size under the launcher, all settings at their defaults.
        let guarded = MemoryCgroup::create(&["launcher-test-leak-guarded"], LIMIT)?;
        let port = free_port();
        let port_text = port.to_string();
        let command = launcher(
            &venv,
            "flask-memory",
            &[("PORT", &port_text)],
            &["run", "--", "gunicorn", "app:app"],
        );
        let run = Run::spawn(guarded.wrap(&command));
        run.wait_event("worker_ready", BOOT, |_| true);
        let tally = leak_600_mb(port);
        let recycles = run.events("memory_recycle");
        let log = run.log();
        assert_eq!(guarded.oom_kills(), 0, "{tally:?}\n{log}");
        assert!(tally.failures.is_empty(), "{tally:?}\n{log}");
        assert_eq!(tally.ok, 300);
        assert!(!recycles.is_empty(), "no worker was recycled:\n{log}");
        for recycle in &recycles {
            assert_eq!(recycle.get("reason"), "dyno_soft_limit", "{}", recycle.line);
            let total = recycle.megabytes("memory_total");
            assert!(total > mb(SOFT_LIMIT), "{}", recycle.line);
        }
        assert!(run.events("oom_kill").is_empty(), "{log}");
        // Recycled one at a time, each replaced by gunicorn: still 2 workers at the end.
        let master = run.wait_children(1, secs(5))[0];
        run.wait_grandchildren(master, 2, secs(10));
        Ok(())
    });
}

#[test]
fn a_mass_oom_kill_is_attributed_to_every_worker_it_ended_and_counted_whole() {
    needs_machine(|| {
        let venv = venv(&["python"])?;
        let cgroup = MemoryCgroup::create(&["launcher-test-oom-mass"], 128 * MB)?;
        // Twelve workers of 40 MB each in 128 MB, the guard off: the kernel kills several at
        // once, again at every respawn.
        let env = [
            ("LAUNCHER_MEMORY_GUARD", "off"),
            ("WEB_CONCURRENCY", "12"),
            ("LAUNCHER_SAMPLE_INTERVAL", "0"),
        ];
        let hog = "import time; b = b'x' * (30 << 20); time.sleep(600)";
        let args = ["run", "--", "python", "-c", hog];
        let mut run =
            Run::spawn(cgroup.wrap(&command(Some(&venv), "hostile", &env, LAUNCHER, &args)));
        run.wait("a dozen OOM kills", secs(30), || {
            (cgroup.oom_kills() >= 12).then_some(())
        });
        support::procs::signal("TERM", &[run.pid()]);
        run.wait_exit(secs(30));
        let total = cgroup.oom_kills();
        let lines = run.events("oom_kill");
        let sum = |key: &str| lines.iter().map(|e| e.num::<u64>(key)).sum::<u64>();
        assert_eq!(sum("kills"), total, "every kill is reported\n{}", run.log());
        assert_eq!(
            sum("attributed") + sum("unattributed"),
            total,
            "each is attributed or said not to be"
        );
        let exits = run
            .events("worker_exit")
            .into_iter()
            .filter(|e| e.opt("cause") == Some("oom_kill"))
            .count() as u64;
        assert_eq!(exits, sum("attributed"), "\n{}", run.log());
        // The workers are the launcher's children: nearly every kill is theirs and attributed.
        assert!(
            exits * 10 >= total * 9,
            "{exits} of {total} attributed\n{}",
            run.log()
        );
        let known: Vec<_> = lines
            .iter()
            .filter(|e| e.get("memory_total") != "unknown")
            .collect();
        assert!(!known.is_empty(), "\n{}", run.log());
        for line in known {
            assert!(line.megabytes("memory_total") > 0.0, "{}", line.line);
            assert!(line.num::<f64>("memory_total_age_s") < 2.0, "{}", line.line);
        }
        Ok(())
    });
}

#[test]
fn oom_kills_are_reported_in_both_modes_and_a_plain_sigkill_is_not_one() {
    needs_machine(|| {
        let venv = venv(&["gunicorn", "uvicorn"])?;
        let off = [("LAUNCHER_MEMORY_GUARD", "off"), ("WEB_CONCURRENCY", "1")];
        for (app, server) in [("asgi", "uvicorn"), ("flask-memory", "gunicorn")] {
            let cgroup = MemoryCgroup::create(&[&format!("launcher-test-oom-{server}")], 256 * MB)?;
            let port = free_port();
            let port_text = port.to_string();
            let mut env = off.to_vec();
            env.push(("PORT", &port_text));
            let args = ["run", "--", server, "app:app"];
            let run = Run::spawn(cgroup.wrap(&launcher(&venv, app, &env, &args)));
            let ready = run.wait_event("worker_ready", BOOT, |_| true);
            if server == "uvicorn" {
                // A SIGKILL that is not the OOM killer's is not called one.
                let worker = ready.pid();
                Command::new("kill")
                    .args(["-KILL", &worker.to_string()])
                    .status()
                    .expect("kill");
                let exit = run.wait_event("worker_exit", secs(10), |e| e.pid() == worker);
                assert_eq!(exit.get("status"), "signal:9", "{}", exit.line);
                assert_eq!(exit.opt("cause"), None, "{}", exit.line);
                run.wait_event("worker_ready", BOOT, |e| e.index > exit.index);
            }
            // 256 MB, 2 MB a call, the guard off: the kernel kills the worker.
            let tally = paced(port, "/leak", 200, Duration::from_millis(5));
            let event = run.wait_event("oom_kill", secs(10), |_| true);
            assert!(cgroup.oom_kills() >= 1, "{tally:?}\n{}", run.log());
            assert!(event.megabytes("memory_quota") == 256.0, "{}", event.line);
            if server == "uvicorn" {
                // The worker is the launcher's child: its exit line says why it ended.
                let exit = run.wait_event("worker_exit", secs(10), |e| e.opt("cause").is_some());
                assert_eq!(exit.get("cause"), "oom_kill", "{}", exit.line);
                assert_eq!(exit.get("pid"), event.get("pid"), "{}", run.log());
            } else {
                // gunicorn's worker is the launcher's grandchild: named by pid in the event.
                let pid: u32 = event
                    .get("pid")
                    .parse()
                    .unwrap_or_else(|_| panic!("{}", event.line));
                assert!(pid > 0);
                assert!(
                    run.events("worker_exit").is_empty(),
                    "the master lives on: {}",
                    run.log()
                );
            }
        }
        Ok(())
    });
}

#[test]
fn the_per_worker_cap_recycles_a_fan_out_worker_and_starts_its_replacement_at_once() {
    needs_machine(|| {
        let venv = venv(&["uvicorn"])?;
        let cap = [("LAUNCHER_WORKER_MEMORY_MAX", "60")];
        let (run, workers) = support::harness::fanout(&venv, free_port(), 2, &cap);
        let port = run
            .events("start")
            .first()
            .map(|e| e.get("port").parse::<u16>().expect("port"))
            .expect("start line");
        // About 30 calls per worker take one over 60 MB of unique memory.
        let tally = paced(port, "/leak", 120, Duration::from_millis(10));
        let recycle = run.wait_event("memory_recycle", secs(10), |_| true);
        assert_eq!(recycle.get("reason"), "worker_cap", "{}", recycle.line);
        assert!(recycle.megabytes("worker_uss") > 60.0, "{}", recycle.line);
        assert_eq!(recycle.get("worker_max"), "60.0MB", "{}", recycle.line);
        let pid = recycle.pid();
        assert!(
            workers.contains(&pid),
            "{} not in {workers:?}",
            recycle.line
        );
        let stop = run.wait_event("worker_stop", secs(5), |e| e.pid() == pid);
        assert_eq!(stop.get("reason"), "memory", "{}", stop.line);
        // The replacement is spawned with the stop, not after the old worker has gone.
        let spawn = run.wait_event("worker_spawn", secs(5), |e| e.index > recycle.index);
        let exit = run.wait_event("worker_exit", secs(30), |e| e.pid() == pid);
        assert!(spawn.index < exit.index, "\n{}", run.log());
        // uvicorn re-raises the TERM it handled once it has shut down gracefully.
        assert_ne!(
            exit.get("status"),
            "signal:9",
            "a graceful stop: {}",
            exit.line
        );
        assert!(run.events("worker_kill").is_empty(), "{}", run.log());
        assert!(tally.failures.is_empty(), "{tally:?}");
        Ok(())
    });
}

/// How many workers fit, from the test's own reading of the cgroup and of each worker's
/// smaps_rollup: (soft limit - base) / the largest unique memory, where base is the usage less
/// the workers' unique memory (so memory shared after fork counts once).
fn fit(cgroup: &MemoryCgroup, master: u32) -> f64 {
    let workers = children(master);
    let unique: Vec<u64> = workers.iter().map(|w| tree_sum(*w, UNIQUE)).collect();
    let shared_dirty = workers.iter().map(|w| tree_sum(*w, &["Shared_Dirty:"]));
    let usage = cgroup.stat("total_rss") + cgroup.stat("total_swap");
    let base = usage.saturating_sub(unique.iter().sum());
    // What one more worker costs: its unique memory and the shared pages it may copy.
    let costs = unique.iter().zip(shared_dirty).map(|(u, s)| u + s);
    let largest = costs.max().unwrap_or(1).max(1);
    SOFT_LIMIT.saturating_sub(base) as f64 / largest as f64
}

/// Where docs/supervisor.md says the sizer stays: n workers fit (n <= fit), and n + 1 do not
/// with a quarter of a worker to spare (fit < n + 1.25), unless n is the CPU cap.
fn settles_at(fit: f64, count: usize, cap: usize) -> bool {
    let n = count as f64;
    n <= fit && (fit < n + 1.25 || count == cap)
}

/// The `smaps_rollup` fields that make a process's unique memory.
const UNIQUE: &[&str] = &["Private_Clean:", "Private_Dirty:", "SwapPss:"];

/// The sum of `fields` of `smaps_rollup` over `pid` and the processes under it, in bytes.
fn tree_sum(pid: u32, fields: &[&str]) -> u64 {
    let mut tree = vec![pid];
    tree.extend(support::procs::descendants(pid));
    tree.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .map(|text| {
            fields
                .iter()
                .filter_map(|field| {
                    let line = text.lines().find(|l| l.starts_with(field))?;
                    line.split_whitespace().nth(1)?.parse::<u64>().ok()
                })
                .sum::<u64>()
                * 1024
        })
        .sum()
}

#[test]
fn measured_sizing_settles_where_the_workers_fit_and_holds_under_load() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        let cgroup = MemoryCgroup::create(&["launcher-test-measured"], LIMIT)?;
        let state_dir = tempfile::TempDir::new().map_err(|e| e.to_string())?;
        let port = free_port();
        let port_text = port.to_string();
        let tmpdir = state_dir.path().display().to_string();
        // Each worker holds 100 MB of its own: 2 by the static formula, more measured.
        let env = [
            ("PORT", port_text.as_str()),
            ("BALLAST_MB", "100"),
            ("LAUNCHER_SIZING", "measured"),
            ("LAUNCHER_SIZING_WARMUP", "3"),
            ("LAUNCHER_SAMPLE_INTERVAL", "1"),
            ("TMPDIR", tmpdir.as_str()),
        ];
        let args = ["run", "--", "gunicorn", "app:app"];
        let run = Run::spawn(cgroup.wrap(&launcher(&venv, "flask-memory", &env, &args)));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("workers"), "2", "{}", start.line);
        let master = run.wait_children(1, BOOT)[0];
        let load = Load::on(port, 2, "/", secs(150));
        let cap = 2 * std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;

        // Settled: the count is where the test's own measurement says it fits, and no resize
        // came for twice the warm-up.
        let (mut resizes_seen, mut changed_at) = (0, Instant::now());
        let count = wait_for("measured sizing to settle", secs(90), || {
            let resizes = run.events("resize").len();
            if resizes != resizes_seen {
                (resizes_seen, changed_at) = (resizes, Instant::now());
            }
            let quiet = changed_at.elapsed() > secs(6);
            let count = children(master).len();
            (quiet && count > 2 && settles_at(fit(&cgroup, master), count, cap)).then_some(count)
        });
        let last_resize = run.events("resize").last().map(|e| e.index);
        let measured = fit(&cgroup, master);
        eprintln!("measured sizing settled at {count} workers; the test's own fit: {measured:.2}");
        let resizes = run.events("resize");
        assert!(!resizes.is_empty(), "{}", run.log());
        for resize in &resizes {
            let (from, to) = (resize.get("from"), resize.get("to"));
            let step = to.parse::<i64>().expect("to") - from.parse::<i64>().expect("from");
            assert_eq!(step.abs(), 1, "one worker at a time: {}", resize.line);
        }

        // Held under load for 60 s: the same count, no resize.
        let hold = Instant::now();
        while hold.elapsed() < secs(60) {
            assert_eq!(children(master).len(), count, "\n{}", run.log());
            std::thread::sleep(Duration::from_millis(500));
        }
        let after = run.events("resize").last().map(|e| e.index);
        assert_eq!(after, last_resize, "a resize while held:\n{}", run.log());

        // `launcher size` in the same container (its cgroup) shows what the supervisor measured.
        let mut size = Command::new(LAUNCHER);
        size.args(["size", "--json"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("TMPDIR", &tmpdir);
        let size = cgroup.wrap(&size).output().expect("launcher size");
        let report: serde_json::Value = serde_json::from_slice(&size.stdout).expect("JSON");
        let running = &report["running"][0];
        assert_eq!(running["workers"], count, "{report}");
        assert_eq!(running["sizing"], "measured", "{report}");
        let reported = running["fit"].as_f64().expect("fit");
        assert!(
            (reported - measured).abs() < 0.5,
            "launcher {reported}, test {measured:.2}"
        );
        let held = run.events("sample").last().map(|e| e.index);
        let sample = run.wait_event("sample", secs(5), |e| Some(e.index) > held);
        let sampled_fit: f64 = sample.num("sample#workers_fit");
        assert!((sampled_fit - measured).abs() < 0.5, "{}", sample.line);
        assert_eq!(
            sample.num::<usize>("sample#workers"),
            count,
            "{}",
            sample.line
        );

        let tally = load.finish();
        assert!(tally.failures.is_empty(), "{tally:?}");
        assert!(tally.ok > 100, "{tally:?}");
        let answer = get_json(port, "/");
        assert!(answer["pid"].as_u64().is_some());
        Ok(())
    });
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / MB as f64
}

// ---- Where these tests cannot run ---------------------------------------------------------------

/// GitHub's runners have cgroup v2 only: the release workflow's test job names that reason, and
/// only the tests that need a cgroup v1 memory controller may then skip under CI.
#[test]
fn under_ci_only_the_cgroup_v1_tests_skip_and_only_when_told_why() {
    let why = "GitHub's ubuntu runners have cgroup v2 only";
    assert!(skip("useradd failed", false, "").is_ok(), "not CI: skip");
    assert!(skip(NO_CGROUP_V1, true, "").is_err(), "CI, no reason given");
    assert!(skip(NO_CGROUP_V1, true, " ").is_err(), "CI, a blank reason");
    assert!(
        skip("useradd failed", true, why).is_err(),
        "CI, another cause"
    );
    let message = skip(NO_CGROUP_V1, true, why).expect("CI, the reason given: skip");
    assert!(
        message.contains(NO_CGROUP_V1) && message.contains(why),
        "{message}"
    );
}
