//! Floods: a thousand busy workers starting at once, a worker sending READY in a loop.

use super::*;

#[test]
fn sigterm_while_a_thousand_busy_workers_start_exits_within_the_deadline() {
    let _serial = serial();
    needs_machine(|| {
        let cgroup = MemoryCgroup::create(&["thousand"], 4 << 30)?;
        let mut run = Run::spawn(cgroup.wrap(&command(
            None,
            "hostile",
            &[
                ("WEB_CONCURRENCY", "1024"),
                ("LAUNCHER_GRACEFUL_TIMEOUT", "2"),
                ("LAUNCHER_SAMPLE_INTERVAL", "0"),
            ],
            LAUNCHER,
            &["run", "--", "sh", "-c", "while :; do :; done"],
        )));
        run.wait_events("worker_spawn", 16, BOOT, |_| true);
        let term = Instant::now();
        signal("TERM", &[run.pid()]);
        let status = run.wait_exit(secs(2 + 5));
        assert_eq!(status.code(), Some(0), "\n{}", run.log());
        let spawned = run.events("worker_spawn").len();
        assert!(
            spawned < 1024,
            "all {spawned} started before the TERM was read"
        );
        assert!(term.elapsed() < secs(7), "{:?}", term.elapsed());
        Ok(())
    });
}

#[test]
fn a_worker_flooding_ready_costs_the_launcher_less_than_half_a_core() {
    let _serial = serial();
    needs_machine(|| {
        let venv = venv(&["python"])?;
        let run = Run::spawn(command(
            Some(&venv),
            "hostile",
            &[("WEB_CONCURRENCY", "1"), ("LAUNCHER_SAMPLE_INTERVAL", "0")],
            LAUNCHER,
            &["run", "--", "python", "notify-flood.py"],
        ));
        run.wait_event("worker_ready", BOOT, |e| e.get("by") == "notify");
        let flooder = run.wait_children(1, BOOT)[0];
        let before = (cpu_time(run.pid()), cpu_time(flooder));
        let start = Instant::now();
        std::thread::sleep(secs(5));
        let used = cpu_time(run.pid()) - before.0;
        let flooding = cpu_time(flooder) - before.1;
        // On a machine busy with other work the launcher gets less than a core anyway: the
        // flooder, busy all the time, shows what a process wanting a whole core got meanwhile.
        let relative = used.as_secs_f64() / flooding.as_secs_f64().max(0.01);
        assert!(
            relative < 0.5,
            "the launcher used {used:?} of CPU while the flooder used {flooding:?}"
        );
        let share = used.as_secs_f64() / start.elapsed().as_secs_f64();
        assert!(
            share < 0.5,
            "the launcher used {:.0}% of a core",
            share * 100.0
        );
        // Still responsive: a TTIN is answered.
        signal("TTIN", &[run.pid()]);
        run.wait_event("signal", secs(5), |e| e.get("signal") == "TTIN");
        Ok(())
    });
}
