//! The cgroup v2 lane (docs/development.md): the launcher on a real cgroup v2 kernel, in the
//! guest that test/vm boots, with this machine's binaries, venv and fixtures. Each test is one
//! function whose body runs in the guest, as root, in cgroups it makes under /sys/fs/cgroup
//! (`Cgroup2`); `vm::guest` boots the guest once for all of them and reports each result here.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::cgroup2::Cgroup2;
use support::harness::{launcher, secs, Run, LAUNCHER};
use support::http::get;
use support::procs::signal;
use support::{free_port, venv, vm};

const MB: u64 = 1024 * 1024;

/// `launcher size --json` run inside `cgroup`.
fn size_in(cgroup: &Cgroup2) -> Result<serde_json::Value, String> {
    let mut size = Command::new(LAUNCHER);
    size.args(["size", "--json"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    let output = cgroup.wrap(&size).output().map_err(|e| e.to_string())?;
    serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "launcher size --json: {e}\n{}",
            support::text(&output.stderr)
        )
    })
}

#[test]
fn sizing_reads_memory_max_memory_high_and_fir_cpu_quotas() {
    vm::guest(|_| {
        // Fir's dyno-1c-0.5gb: 512 MB, 0.9 CPU (Fir gives 0.9 CPU per vCPU), 2 workers.
        let mb512 = (512 * MB).to_string();
        let fir_1c = Cgroup2::create(
            "fir-1c",
            &[("memory.max", &mb512), ("cpu.max", "90000 100000")],
        )?;
        let size = size_in(&fir_1c)?;
        let dir = fir_1c.dir().display();
        assert_eq!(size["memory_mb"], 512, "{size:#}");
        assert_eq!(
            size["memory_source"],
            format!("cgroup v2 {dir}/memory.max"),
            "{size:#}"
        );
        assert_eq!(size["cpus"], 1, "{size:#}");
        let cpus_source = size["cpus_source"].as_str().unwrap_or_default();
        assert!(
            cpus_source.starts_with(&format!("cgroup v2 {dir}/cpu.max (quota 90000/100000")),
            "{size:#}"
        );
        assert_eq!(size["web_concurrency"], 2, "{size:#}");

        // memory.high under memory.max: the lower wins; a fractional quota of 1.5 rounds up.
        let (gb1, mb384) = ((1024 * MB).to_string(), (384 * MB).to_string());
        let high = Cgroup2::create(
            "high",
            &[
                ("memory.max", &gb1),
                ("memory.high", &mb384),
                ("cpu.max", "150000 100000"),
            ],
        )?;
        let size = size_in(&high)?;
        let dir = high.dir().display();
        assert_eq!(size["memory_mb"], 384, "{size:#}");
        assert_eq!(
            size["memory_source"],
            format!("cgroup v2 {dir}/memory.high"),
            "{size:#}"
        );
        assert_eq!(size["cpus"], 2, "{size:#}");
        assert_eq!(size["web_concurrency"], 1, "{size:#}");

        // Fir's dyno-2c-1gb, its limits on a parent: a child inherits them (4 workers).
        let mut parent = Cgroup2::create(
            "fir-2c",
            &[("memory.max", &gb1), ("cpu.max", "180000 100000")],
        )?;
        let child = parent.child("web", &[])?;
        let size = size_in(&child)?;
        let dir = parent.dir().display();
        assert_eq!(size["memory_mb"], 1024, "{size:#}");
        assert_eq!(
            size["memory_source"],
            format!("cgroup v2 {dir}/memory.max"),
            "{size:#}"
        );
        assert_eq!(size["cpus"], 2, "{size:#}");
        assert_eq!(size["web_concurrency"], 4, "{size:#}");
        Ok(())
    });
}

/// How long a launcher and its Python workers get to come up in the guest (Python runs about
/// 30x slower there than here).
const GUEST_BOOT: Duration = Duration::from_secs(90);

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
    assert_eq!(lines[0].megabytes("memory_quota"), 128.0, "{log}");
}

#[test]
fn an_oom_kill_of_a_fan_out_worker_is_counted_from_memory_events_and_attributed() {
    vm::guest(|_| {
        let (cgroup, run, port) = unguarded("oom-fanout", 128, "asgi", "uvicorn", &[OOM_LEAK])?;
        let worker = run.wait_children(1, secs(5))[0];
        leak_until_oom(port, &cgroup, &run);
        assert_attributed(&cgroup, &run, worker);
        let exit = run.wait_event("worker_exit", secs(10), |e| e.pid() == worker);
        assert_eq!(exit.opt("cause"), Some("oom_kill"), "{}", exit.line);
        Ok(())
    });
}

/// gunicorn's master reaps its workers, not the launcher: a worker the kernel killed stays a
/// zombie until the master gets to it, which in a dyno short of memory (its pages evicted, read
/// back from disk) can take seconds. Stopping the master makes that wait certain.
#[test]
fn an_oom_kill_of_a_gunicorn_worker_is_attributed_while_its_master_is_slow_to_reap() {
    vm::guest(|_| {
        let leak = [("LEAK_MB", "16")];
        let (cgroup, run, port) =
            unguarded("oom-delegate", 128, "flask-memory", "gunicorn", &leak)?;
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
