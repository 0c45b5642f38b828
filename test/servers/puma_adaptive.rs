//! puma under adaptive sizing with keep-alive clients: one thread a worker, following the accept
//! queue, and threads, following its own backlog through the control app the launcher adds.

use super::*;

#[test]
fn puma_with_adaptive_sizing_grows_under_keep_alive_clients_and_comes_back_down() {
    // One thread per worker: a worker takes a connection only while its thread is free, so
    // the others wait in the launcher's accept queue (keep-alive connections included).
    needs_machine(|| {
        Ruby::Puma.installed()?;
        let name = "launcher-test-puma-adaptive";
        let cgroup = MemoryCgroup::create(&[name], 512 * MB)?.with_cpu_accounting(name)?;
        let tmp = tempfile::TempDir::new().map_err(|e| e.to_string())?;
        let port = free_port();
        let port_text = port.to_string();
        let env = [
            ("RAILS_MAX_THREADS", "1"),
            ("LAUNCHER_SIZING", "adaptive"),
            ("LAUNCHER_ADAPTIVE_GROW_WINDOW", "2"),
            ("LAUNCHER_ADAPTIVE_STEP", "1"),
            ("LAUNCHER_ADAPTIVE_SHRINK_AFTER", "4"),
        ];
        let pidfile = tmp.path().join("server.pid");
        let launcher = ruby_launcher(Ruby::Puma, &port_text, &pidfile, &env);
        let run = Run::spawn(cgroup.wrap(&launcher));
        let memory = run.wait_event("memory", BOOT, |_| true);
        assert_eq!(memory.get("sizing"), "adaptive", "{}", memory.line);
        let sized = sized_in(&cgroup);
        let master = run.wait_children(1, BOOT)[0];
        workers(&run, master, sized, &[], "at start");
        let load = Load::on(port, 64, "/slow?s=0.05", secs(60));
        run.wait("puma to grow by three workers", secs(40), || {
            (children(master).len() >= sized + 3).then_some(())
        });
        let tally = load.finish();
        let grown = run.events("resize");
        run.wait("puma back at the static count", secs(40), || {
            (children(master).len() == sized).then_some(())
        });
        let resizes = run.events("resize");
        let reason = |e: &support::logfmt::Event| e.get("reason").to_owned();
        assert!(grown.iter().all(|e| reason(e) == "queue"), "{}", run.log());
        assert!(
            resizes[grown.len()..].iter().all(|e| reason(e) == "idle"),
            "{}",
            run.log()
        );
        assert!(tally.failures.is_empty(), "{tally:?}\n{}", run.log());
        assert_eq!(cgroup.oom_kills(), 0, "{}", run.log());
        Ok(())
    });
}

/// puma's workers run threads and take kept-alive connections into their reactor: the requests
/// wait in puma's own backlog, which its control app tells (docs/supervisor.md, "Threads").
#[test]
fn puma_with_threads_grows_on_its_backlog_under_keep_alive_clients_and_comes_back_down() {
    needs_machine(|| {
        Ruby::Puma.installed()?;
        let name = "launcher-test-puma-threads";
        let cgroup = MemoryCgroup::create(&[name], 512 * MB)?.with_cpu_accounting(name)?;
        let tmp = tempfile::TempDir::new().map_err(|e| e.to_string())?;
        let tmpdir = tmp.path().to_str().expect("utf-8").to_owned();
        let port = free_port();
        let port_text = port.to_string();
        let env = [
            ("RAILS_MAX_THREADS", "4"),
            ("LAUNCHER_SIZING", "adaptive"),
            ("LAUNCHER_ADAPTIVE_GROW_WINDOW", "2"),
            ("LAUNCHER_ADAPTIVE_STEP", "1"),
            ("LAUNCHER_ADAPTIVE_SHRINK_AFTER", "4"),
            ("LAUNCHER_SAMPLE_INTERVAL", "1"),
            ("TMPDIR", tmpdir.as_str()),
        ];
        let pidfile = tmp.path().join("server.pid");
        let launcher = ruby_launcher(Ruby::Puma, &port_text, &pidfile, &env);
        let run = Run::spawn(cgroup.wrap(&launcher));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("threads"), "4", "{}", start.line);
        let sized = sized_in(&cgroup);
        let master = run.wait_children(1, BOOT)[0];
        workers(&run, master, sized, &[], "at start");
        let load = Load::on(port, 64, "/slow?s=0.05", secs(60));
        run.wait("puma to grow by two workers", secs(40), || {
            (children(master).len() >= sized + 2).then_some(())
        });
        // puma's workers publish their stats every 5 s, and growth may come from the accept
        // queue first: the sample lines are looked at until one shows the backlog, while the
        // load still runs.
        let shows_backlog = || {
            run.events("sample").iter().any(|e| {
                e.opt("sample#requests_waiting")
                    .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0))
            })
        };
        let deadline = std::time::Instant::now() + secs(20);
        let mut waiting = shows_backlog();
        while !waiting && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            waiting = shows_backlog();
        }
        let tally = load.finish();
        assert!(waiting, "puma's backlog never seen\n{}", run.log());
        run.wait("puma back at the static count", secs(40), || {
            (children(master).len() == sized).then_some(())
        });
        assert!(tally.failures.is_empty(), "{tally:?}\n{}", run.log());
        assert_eq!(cgroup.oom_kills(), 0, "{}", run.log());
        // The control app's token is never logged.
        assert!(!run.log().contains("--control-token"), "{}", run.log());
        Ok(())
    });
}
