//! Threads: gunicorn gthread growing on what waits inside its workers, consent, and the threads
//! hint.

use super::*;

/// With the launcher's threads gunicorn closes each connection after its response, so every
/// request comes back through the shared socket and an added worker takes its share; what waits
/// inside a worker for a thread is read from its connections' unread bytes (docs/sizing.md,
/// "Threads"). gunicorn 23.0.0, whose worker connections the launcher leaves uncapped.
#[test]
fn gunicorn_gthread_grows_on_what_waits_inside_its_workers_and_comes_back_down() {
    needs_machine(|| gthread_grows_and_comes_back_down(&venv(&["gunicorn"])?, false));
}

/// The same on the newest gunicorn, whose workers the launcher caps at their threads: what
/// waits for a thread waits in the accept queue.
#[test]
fn gunicorn_gthread_capped_at_its_threads_grows_on_its_queue_and_comes_back_down() {
    needs_machine(|| gthread_grows_and_comes_back_down(&new_gunicorn_venv()?, true));
}

fn gthread_grows_and_comes_back_down(venv: &Path, capped: bool) -> Result<(), String> {
    let _serial = serial();
    let extra = [("LAUNCHER_THREADS", "4"), ("BALLAST_MB", "20")];
    let name = "launcher-test-adaptive-gthread";
    let (served, master) = gunicorn_from(venv, name, &extra, &[], STATIC)?;
    let Served { run, port, cgroup } = &served;
    let start = run.wait_event("start", BOOT, |_| true);
    assert_eq!(start.get("threads"), "4", "{}", start.line);
    let connections = start.opt("worker_connections");
    assert_eq!(connections, capped.then_some("4"), "{}", start.line);
    let memory = run.wait_event("memory", BOOT, |_| true);
    assert_eq!(memory.get("sizing"), "adaptive", "{}", memory.line);
    assert!(
        run.stderr()
            .iter()
            .any(|l| l.contains("Using worker: gthread")),
        "{}",
        run.log()
    );
    assert!(
        !run.stderr().iter().any(|l| l.contains("No keepalived")),
        "{}",
        run.log()
    );
    // 64 clients, 8 threads.
    let load = Load::on(*port, CLIENTS, "/sleep", secs(120));
    let (mut seen, mut changed_at) = (0, Instant::now());
    let count = run.wait("gthread to grow and hold", secs(60), || {
        let resizes = run.events("resize").len();
        if resizes != seen {
            (seen, changed_at) = (resizes, Instant::now());
        }
        let count = children(master).len();
        (changed_at.elapsed() > secs(8) && count > STATIC + 2).then_some(count)
    });
    let grown = run.events("resize");
    one_step_each(&grown, "queue", run);
    let sample = run.wait_event("sample", secs(3), |e| {
        e.index > grown[grown.len() - 1].index
    });
    assert_eq!(
        sample.num::<usize>("sample#threads"),
        4 * sample.num::<usize>("sample#workers"),
        "{}",
        sample.line
    );
    let tally = load.finish();
    wait_for("the static count again", secs(40), || {
        (children(master).len() == STATIC).then_some(())
    });
    eprintln!("gthread grew to {count} workers of 4 threads, then back to {STATIC}");
    assert!(tally.failures.is_empty(), "{tally:?}\n{}", run.log());
    assert_eq!(cgroup.oom_kills(), 0, "{}", run.log());
    Ok(())
}

/// Threads change how an app runs: without LAUNCHER_THREADS a sync app keeps sync workers.
#[test]
fn a_sync_app_without_consent_keeps_sync_workers() {
    needs_machine(|| {
        let (served, _) = gunicorn("launcher-test-adaptive-sync", &[], &[], STATIC)?;
        let start = served.run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.opt("threads"), None, "{}", start.line);
        let run = &served.run;
        assert!(
            run.stderr()
                .iter()
                .any(|l| l.contains("Using worker: sync")),
            "{}",
            run.log()
        );
        Ok(())
    });
}

/// Sync workers that mostly wait while requests queue get one `hint`: threads would serve more
/// at once (docs/supervisor.md, "Threads").
#[test]
fn sync_workers_that_mostly_wait_get_the_threads_hint_once() {
    needs_machine(|| {
        let _serial = serial();
        let extra = [("LAUNCHER_SIZING", "static")];
        let (served, _) = gunicorn("launcher-test-adaptive-hint", &extra, &[], STATIC)?;
        let Served { run, port, .. } = &served;
        let load = Load::on(*port, CLIENTS, "/sleep", secs(60));
        let hint = run.wait_event("hint", secs(50), |e| e.opt("setting").is_some());
        let tally = load.finish();
        assert_eq!(
            hint.get("setting"),
            "LAUNCHER_THREADS=auto",
            "{}",
            hint.line
        );
        assert!(hint.num::<f64>("cpu_busy") < 0.3, "{}", hint.line);
        assert!(hint.num::<f64>("queued_share") >= 0.5, "{}", hint.line);
        let hints = run.events("hint");
        assert_eq!(
            hints.iter().filter(|e| e.opt("setting").is_some()).count(),
            1
        );
        assert!(tally.failures.is_empty(), "{tally:?}");
        Ok(())
    });
}
