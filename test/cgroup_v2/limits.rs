//! Limits on cgroup v2: the CPU meter against cpu.max, the local dyno in a v2 memory cgroup, and
//! memory.max and cpu.max rewritten under a running server.

use super::*;

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
