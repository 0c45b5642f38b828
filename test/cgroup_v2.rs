//! The cgroup v2 lane (docs/development.md): the launcher on a real cgroup v2 kernel, in the
//! guest that test/vm boots, with this machine's binaries, venv and fixtures. Each test is one
//! function whose body runs in the guest, as root, in cgroups it makes under /sys/fs/cgroup
//! (`Cgroup2`); `vm::guest` boots the guest once for all of them and reports each result here.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::cgroup2::Cgroup2;
use support::harness::{launcher, secs, Run, LAUNCHER};
use support::http::{get, Load};
use support::procs::{children, signal};
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

/// `launcher run -- gunicorn app:app` serving flask-memory in a cgroup with `files`, with the
/// `extra` settings: the cgroup, the run, its port and the master's pid, once `workers` workers
/// run and the app answers.
fn gunicorn(
    name: &str,
    files: &[(&str, &str)],
    extra: &[(&str, &str)],
    workers: usize,
) -> Result<(Cgroup2, Run, u16, u32), String> {
    let venv = venv(&["gunicorn"])?;
    let cgroup = Cgroup2::create(name, files)?;
    let port = free_port();
    let port_text = port.to_string();
    let mut env = vec![
        ("PORT", port_text.as_str()),
        ("LAUNCHER_SAMPLE_INTERVAL", "1"),
    ];
    env.extend_from_slice(extra);
    let args = ["run", "--", "gunicorn", "app:app"];
    let run = Run::spawn(cgroup.wrap(&launcher(&venv, "flask-memory", &env, &args)));
    let master = run.wait_children(1, GUEST_BOOT)[0];
    run.wait_grandchildren(master, workers, GUEST_BOOT);
    run.wait("the app to answer", GUEST_BOOT, || {
        get(port, "/", secs(30)).ok()
    });
    Ok((cgroup, run, port, master))
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

#[test]
fn the_cpu_meter_reads_cpu_stat_against_a_fractional_cpu_max() {
    vm::guest(|_| {
        // Half a CPU for the copies of a busy loop (3: 2 * 1 CPU + 1): the dyno's CPUs are all
        // used.
        let memory = (1024 * MB).to_string();
        let files = [("cpu.max", "50000 100000"), ("memory.max", memory.as_str())];
        let cgroup = Cgroup2::create("cpu", &files)?;
        let port = free_port().to_string();
        let env = [
            ("PORT", port.as_str()),
            ("LAUNCHER_SIZING", "adaptive"),
            ("LAUNCHER_SAMPLE_INTERVAL", "2"),
        ];
        let args = ["run", "--", "sh", "-c", "while :; do :; done"];
        let mut command = support::harness::command(None, "asgi", &env, LAUNCHER, &args);
        let state_dir = tempfile::TempDir::new().map_err(|e| e.to_string())?;
        command.env("TMPDIR", state_dir.path());
        let run = Run::spawn(cgroup.wrap(&command));
        let memory = run.wait_event("memory", secs(10), |_| true);
        let meter = format!("cgroup v2 {}/cpu.stat", cgroup.dir().display());
        assert_eq!(memory.get("cpu_meter"), meter, "{}", memory.line);
        assert_eq!(memory.get("cpus"), "0.5", "{}", memory.line);
        assert_eq!(memory.get("sizing"), "adaptive", "{}", memory.line);
        // The test's own reading of cpu.stat over the launcher's next two samples.
        let first = run.wait_event("sample", secs(20), |e| e.opt("sample#cpu_busy").is_some());
        let (usage, at) = (cgroup.field("cpu.stat", "usage_usec"), Instant::now());
        let later = run.wait_events("sample", 2, secs(20), |e| e.index > first.index);
        let used = (cgroup.field("cpu.stat", "usage_usec") - usage) as f64 / 1e6;
        let own = used / at.elapsed().as_secs_f64() / 0.5;
        // The two samples cover the same 4 s, each its 2 s.
        let sampled = later
            .iter()
            .map(|e| e.num::<f64>("sample#cpu_busy"))
            .sum::<f64>()
            / 2.0;
        assert!((0.8..1.15).contains(&own), "own reading {own:.2}");
        let lines = [&later[0].line, &later[1].line];
        assert!((sampled - own).abs() < 0.15, "own {own:.2}\n{lines:#?}");
        assert!(
            cgroup.field("cpu.stat", "nr_throttled") > 0,
            "{}",
            cgroup.read("cpu.stat")
        );
        // launcher size, in the same cgroup, shows the exact quota the figure is measured by.
        let mut size = Command::new(LAUNCHER);
        size.args(["size", "--json"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("TMPDIR", state_dir.path());
        let running = run.wait(
            "launcher size to show the running launcher",
            secs(20),
            || {
                let output = cgroup.wrap(&size).output().ok()?;
                let report: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
                let running = report["running"][0].clone();
                running["cpu_busy"].is_number().then_some(running)
            },
        );
        assert_eq!(running["cpu_capacity"], 0.5, "{running:#}");
        // Three busy loops take turns on half a CPU: CPU pressure (PSI), in the sample line and
        // in launcher size.
        let cpu_pressure: f64 = later[1].num("sample#cpu_pressure_some");
        assert!(cpu_pressure > 10.0, "{}", later[1].line);
        let mut text_size = Command::new(LAUNCHER);
        text_size
            .arg("size")
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        let text = support::text(
            &cgroup
                .wrap(&text_size)
                .output()
                .map_err(|e| e.to_string())?
                .stdout,
        );
        let files = format!(
            "cgroup v2 {}/{{memory,cpu}}.pressure",
            cgroup.dir().display()
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("pressure "))
            .unwrap_or_default();
        assert!(line.contains(&files) && line.contains("% some"), "{text}");
        Ok(())
    });
}

/// The README's first command on a cgroup v2 machine: the slug is built here (the guest has no
/// network for pip), then `test/local-dyno --memory 512M` boots it in the guest, in a cgroup of
/// its own with memory.max, as root where no systemd runs.
#[test]
fn local_dyno_memory_serves_the_app_in_a_cgroup_v2_memory_cgroup() {
    let local_dyno = support::repo().join("test/local-dyno");
    vm::test(
        |dir| {
            let slug = dir.join("slug");
            // The launcher under test, as a release download (lib/binary.sh's path (b)): no
            // release build from source in the lane's time.
            let sum = Command::new("sha256sum").arg(LAUNCHER).output();
            let sum = support::text(&sum.map_err(|e| e.to_string())?.stdout);
            let mut build = Command::new(&local_dyno);
            build
                .arg("--slug")
                .arg(&slug)
                .arg("--build-only")
                .env("LAUNCHER_BINARY_URL", format!("file://{LAUNCHER}"))
                .env(
                    "LAUNCHER_BINARY_SHA256",
                    sum.split_whitespace().next().unwrap_or(""),
                );
            let output = support::output_within(&mut build, secs(280));
            match output.status.success() {
                true => Ok(()),
                false => Err(format!(
                    "test/local-dyno --build-only failed\n{}{}",
                    support::text(&output.stdout),
                    support::text(&output.stderr)
                )),
            }
        },
        |dir| {
            let port = free_port();
            let mut dyno = Command::new(&local_dyno);
            dyno.arg("--slug").arg(dir.join("slug")).args([
                "--no-build",
                "--memory",
                "512M",
                "--port",
                &port.to_string(),
            ]);
            let mut run = Run::spawn(dyno);
            let answer = run.wait("the app to answer", GUEST_BOOT, || {
                let response = get(port, "/", secs(30)).ok()?;
                serde_json::from_str::<serde_json::Value>(&response.body).ok()
            });
            assert_eq!(answer["web_concurrency"], "2", "{answer}\n{}", run.log());
            let cgroup = format!("/sys/fs/cgroup/launcher-local-dyno-{}", run.pid());
            let limit = std::fs::read_to_string(format!("{cgroup}/memory.max"));
            assert_eq!(
                limit.map_err(|e| e.to_string())?.trim(),
                (512 * MB).to_string()
            );
            let source = format!("cgroup v2 {cgroup}/memory.max");
            let stderr = run.stderr().join("\n");
            let boot = stderr
                .lines()
                .find(|l| l.starts_with("launcher: WEB_CONCURRENCY=2"));
            assert!(
                boot.is_some_and(|l| l.contains(&format!("512 MB from {source}"))),
                "{stderr}"
            );
            assert!(
                stderr
                    .lines()
                    .any(|l| l.starts_with("memory ") && l.ends_with(&source)),
                "launcher size: {stderr}"
            );
            // Ctrl-C: the dyno stops and its cgroup goes with it.
            Command::new("kill")
                .args(["-INT", "--", &format!("-{}", run.pid())])
                .status()
                .map_err(|e| e.to_string())?;
            run.wait_exit(secs(60));
            run.wait("the cgroup to be removed", secs(10), || {
                (!std::path::Path::new(&cgroup).exists()).then_some(())
            });
            Ok(())
        },
    );
}

/// The bound: from the rewrite to the count a fresh boot would choose.
const FOLLOWED_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn memory_max_and_cpu_max_rewritten_under_a_running_gunicorn_move_it_to_a_fresh_boots_count() {
    vm::guest(|_| {
        // Kubernetes' in-place resize: the same files rewritten while the app serves. 1 GB and
        // the guest's 2 CPUs: 4 workers by memory (the CPU term is 5).
        let gb = (1024 * MB).to_string();
        let files = [("memory.max", gb.as_str()), ("cpu.max", "max 100000")];
        let (cgroup, run, port, master) = gunicorn("limits", &files, &[], 4)?;
        let workers = || children(master).len();
        let load = Load::on(port, 2, "/", secs(240));
        load.wait_more(10, &run);
        let dir = cgroup.dir().display();
        let memory_max = format!("cgroup v2 {dir}/memory.max");
        let cpu_max = format!("cgroup v2 {dir}/cpu.max (quota 100000/100000");
        let online = "/sys/devices/system/cpu/online".to_owned();
        // (file, its new text, the count, the field naming the source, what it starts with)
        let steps: [(&str, String, usize, &str, String); 4] = [
            (
                "memory.max",
                (512 * MB).to_string(),
                2,
                "memory_source",
                memory_max.clone(),
            ),
            ("memory.max", gb.clone(), 4, "memory_source", memory_max),
            // One CPU: 2*1+1 = 3; the quota lifted: the guest's 2 CPUs and 4 workers again.
            (
                "cpu.max",
                "100000 100000".to_owned(),
                3,
                "cpus_source",
                cpu_max,
            ),
            ("cpu.max", "max 100000".to_owned(), 4, "cpus_source", online),
        ];
        for (file, value, want, source, shown) in steps {
            let before = run.stdout().len();
            cgroup.write(file, &value)?;
            let written = Instant::now();
            let fresh = size_in(&cgroup)?["web_concurrency"].as_u64();
            assert_eq!(
                fresh,
                Some(want as u64),
                "a fresh boot after {file} {value}"
            );
            let took = run.settles_at(want, written, secs(60), workers);
            eprintln!(
                "{file} {value}: {want} workers {:.1} s after the rewrite",
                took.as_secs_f64()
            );
            assert!(took <= FOLLOWED_WITHIN, "{took:?}\n{}", run.log());
            let lines = run.events("limits_changed");
            let line = lines.iter().find(|e| e.index >= before).expect("a line");
            assert_eq!(line.get("workers"), want.to_string(), "{}", line.line);
            assert!(line.get(source).starts_with(&shown), "{}", line.line);
            load.wait_more(5, &run);
        }
        let tally = load.finish();
        assert!(tally.failures.is_empty(), "{tally:?}\n{}", run.log());
        assert_eq!(cgroup.oom_kills(), 0, "{}", cgroup.read("memory.events"));
        assert!(run.events("oom_kill").is_empty(), "{}", run.log());
        Ok(())
    });
}

/// Not a lane test: where the guest cannot be booted, the lane's tests skip outside CI, and
/// under CI only when LAUNCHER_TEST_NO_VM says why (GitHub's runners).
#[test]
fn under_ci_the_lane_skips_only_when_told_why() {
    let why = "test/vm: cannot boot the cgroup v2 guest: no qemu-system-x86_64";
    let reason = "GitHub's ubuntu runners have no Debian kernel package";
    assert!(vm::skip(why, false, "").is_ok(), "not CI: skip");
    assert!(vm::skip(why, true, "").is_err(), "CI, no reason given");
    assert!(vm::skip(why, true, "  ").is_err(), "CI, a blank reason");
    let message = vm::skip(why, true, reason).expect("CI, the reason given: skip");
    assert!(
        message.contains(why) && message.contains(reason),
        "{message}"
    );
}
