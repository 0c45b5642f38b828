//! Adaptive sizing (docs/architecture.md, "Adaptive sizing") in real cgroups as root: a 512 MB
//! cgroup v1 memory cgroup with a cpuacct cgroup of its own (the load generator shares this
//! machine's cores, so the dyno's CPU use must be the app's alone), real gunicorn serving the
//! flask-memory fixture to 64 keep-alive clients, and uvicorn, which adaptive sizing refuses.
//! Time constants are small (a step a second, shrinking after 4 s of an empty queue).

#[path = "adaptive/cpu.rs"]
mod cpu;
mod support;
#[path = "adaptive/threads.rs"]
mod threads;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::harness::{launcher, secs, Run, BOOT};
use support::http::Load;
use support::logfmt::Event;
use support::procs::{children, signal};
use support::{free_port, needs_machine, new_gunicorn_venv, venv, wait_for, MemoryCgroup};

const MB: u64 = 1024 * 1024;
const LIMIT: u64 = 512 * MB;
const CLIENTS: usize = 64;
/// The static count in 512 MB on this machine: 512 MB / 256 MB per worker.
const STATIC: usize = 2;

/// Adaptive sizing with the small time constants of these tests.
const ADAPTIVE: [(&str, &str); 6] = [
    ("LAUNCHER_SIZING", "adaptive"),
    ("LAUNCHER_ADAPTIVE_GROW_WINDOW", "2"),
    ("LAUNCHER_ADAPTIVE_STEP", "1"),
    ("LAUNCHER_ADAPTIVE_SHRINK_AFTER", "4"),
    ("LAUNCHER_READY_GRACE", "0.3"),
    ("LAUNCHER_SAMPLE_INTERVAL", "1"),
];

/// One load at a time: 64 clients of one test would take the CPUs another test measures.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn cpu_cap() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get()) + 1
}

/// A `launcher run` with adaptive sizing, in a 512 MB memory cgroup and a cpuacct cgroup of its
/// own (both removed with it).
struct Served {
    /// First, so that it is dropped first: its processes end before the cgroups go.
    run: Run,
    port: u16,
    cgroup: MemoryCgroup,
}

/// `launcher run -- COMMAND` serving `app` with adaptive sizing and the `extra` settings.
fn serve(
    name: &str,
    app: &str,
    extra: &[(&str, &str)],
    command: &[&str],
) -> Result<Served, String> {
    serve_from(&venv(&[command[0]])?, name, app, extra, command)
}

/// `serve`, with the programs of `venv`.
fn serve_from(
    venv: &Path,
    name: &str,
    app: &str,
    extra: &[(&str, &str)],
    command: &[&str],
) -> Result<Served, String> {
    let cgroup = MemoryCgroup::create(&[name], LIMIT)?.with_cpu_accounting(name)?;
    let port = free_port();
    let port_text = port.to_string();
    let mut env = vec![("PORT", port_text.as_str())];
    env.extend(ADAPTIVE);
    env.extend(extra);
    let mut args = vec!["run", "--"];
    args.extend(command);
    let run = Run::spawn(cgroup.wrap(&launcher(venv, app, &env, &args)));
    Ok(Served { run, port, cgroup })
}

/// `launcher run -- gunicorn ARGS app:app` on the flask-memory fixture, once gunicorn runs
/// `workers` workers; with the gunicorn master's pid.
fn gunicorn(
    name: &str,
    extra: &[(&str, &str)],
    args: &[&str],
    workers: usize,
) -> Result<(Served, u32), String> {
    gunicorn_from(&venv(&["gunicorn"])?, name, extra, args, workers)
}

/// `gunicorn`, the one of `venv`.
fn gunicorn_from(
    venv: &Path,
    name: &str,
    extra: &[(&str, &str)],
    args: &[&str],
    workers: usize,
) -> Result<(Served, u32), String> {
    let mut command = vec!["gunicorn"];
    command.extend(args);
    command.push("app:app");
    let served = serve_from(venv, name, "flask-memory", extra, &command)?;
    let master = served.run.wait_children(1, BOOT)[0];
    served.run.wait_grandchildren(master, workers, BOOT);
    Ok((served, master))
}

/// Adaptive sizing refused at start: the `config` warning that says why (returned for its
/// message), and the count static.
fn refused(run: &Run) -> Event {
    let warning = run.wait_event("config", BOOT, |e| e.get("message").contains("adaptive"));
    let memory = run.wait_event("memory", BOOT, |_| true);
    assert_eq!(memory.get("sizing"), "static", "{}", memory.line);
    warning
}

/// 64 clients on `path` for 6 s change nothing: `workers()` stays `count`, no resize, no failure.
fn load_changes_nothing(
    served: &Served,
    path: &'static str,
    workers: impl Fn() -> usize,
    count: usize,
) {
    let load = Load::on(served.port, CLIENTS, path, secs(30));
    std::thread::sleep(secs(6));
    let tally = load.finish();
    let run = &served.run;
    assert_eq!(workers(), count, "{}", run.log());
    assert!(run.events("resize").is_empty(), "{}", run.log());
    assert!(tally.failures.is_empty(), "{tally:?}");
}

/// Each resize is one worker, by adaptive sizing, for `reason`.
fn one_step_each(resizes: &[Event], reason: &str, run: &Run) {
    for resize in resizes {
        let (from, to): (i64, i64) = (resize.num("from"), resize.num("to"));
        assert_eq!(
            (to - from).abs(),
            1,
            "one worker at a time: {}",
            resize.line
        );
        assert_eq!(resize.get("sizing"), "adaptive", "{}", resize.line);
        assert_eq!(
            resize.get("reason"),
            reason,
            "{}\n{}",
            resize.line,
            run.log()
        );
    }
}

#[test]
fn an_io_bound_app_grows_holds_and_comes_back_down() {
    needs_machine(|| {
        let _serial = serial();
        // 20 MB of ballast per worker: memory stops the climb near 8 workers (the fit), so that
        // the test sees a hold without 25 steps first.
        let extra = [("BALLAST_MB", "20")];
        let (served, master) = gunicorn("launcher-test-adaptive-io", &extra, &[], STATIC)?;
        let Served { run, port, cgroup } = &served;
        let memory = run.wait_event("memory", BOOT, |_| true);
        assert_eq!(memory.get("sizing"), "adaptive", "{}", memory.line);
        assert!(
            memory.get("cpu_meter").contains("cpuacct"),
            "{}",
            memory.line
        );
        let load = Load::on(*port, CLIENTS, "/sleep", secs(120));

        // Grows, one worker a step, and holds: no resize for 8 s.
        let (mut seen, mut changed_at) = (0, Instant::now());
        let count = wait_for("adaptive sizing to grow and hold", secs(60), || {
            let resizes = run.events("resize").len();
            if resizes != seen {
                (seen, changed_at) = (resizes, Instant::now());
            }
            let count = children(master).len();
            (changed_at.elapsed() > secs(8) && count > STATIC + 3).then_some(count)
        });
        let grown = run.events("resize");
        one_step_each(&grown, "queue", run);
        let last = grown.last().expect("a resize");
        assert_eq!(last.num::<usize>("to"), count, "{}", last.line);
        // It stopped at the memory fit, the CPUs having room to spare.
        let fit: f64 = last.num("fit");
        assert!(
            fit < count as f64 + 2.25,
            "stopped early: {}\n{}",
            last.line,
            run.log()
        );
        assert!(last.num::<f64>("cpu_busy") < 0.8, "{}", last.line);
        let sample = run.wait_event("sample", secs(3), |e| e.index > last.index);
        assert!(
            sample.num::<u32>("sample#listen_queue_max") > 0,
            "{}",
            sample.line
        );
        assert!(
            sample.megabytes("sample#memory_total") < 0.85 * 512.0,
            "over the soft limit: {}",
            sample.line
        );

        // The load stops: back to the static count, one idle worker at a time.
        let tally = load.finish();
        let stopped = Instant::now();
        wait_for("the static count again", secs(40), || {
            (children(master).len() == STATIC).then_some(())
        });
        eprintln!(
            "grew to {count}, back to {STATIC} {:.1} s after the load stopped",
            stopped.elapsed().as_secs_f64()
        );
        let shrunk: Vec<Event> = run
            .events("resize")
            .into_iter()
            .filter(|e| e.index > last.index)
            .collect();
        one_step_each(&shrunk, "idle", run);
        assert_eq!(shrunk.len(), count - STATIC, "{}", run.log());
        assert!(tally.failures.is_empty(), "{tally:?}");
        assert!(tally.ok > 500, "{tally:?}");
        assert_eq!(cgroup.oom_kills(), 0, "{}", run.log());
        assert!(run.events("memory_recycle").is_empty(), "{}", run.log());
        Ok(())
    });
}

#[test]
fn after_a_rolling_restart_it_grows_again_from_the_servers_count() {
    // gunicorn reads its config again on HUP and goes back to the count it was started with:
    // adaptive sizing must go on from there, not wait for ever for the workers it had added.
    needs_machine(|| {
        let _serial = serial();
        let extra = [("BALLAST_MB", "20")];
        let (served, master) = gunicorn("launcher-test-adaptive-hup", &extra, &[], STATIC)?;
        let Served { run, port, cgroup } = &served;
        let load = Load::on(*port, CLIENTS, "/sleep", secs(90));
        let before = wait_for("adaptive sizing to add two workers", secs(40), || {
            let grown = run.events("resize");
            (grown.len() >= 2).then(|| grown.last().map(|e| e.num::<usize>("to")))
        });
        let at = run.stdout().len();
        signal("HUP", &[run.pid()]);
        let again = wait_for("a resize after the restart", secs(40), || {
            let mut after = run.events("resize").into_iter().filter(|e| e.index >= at);
            after.find(|e| e.num::<usize>("from") == STATIC)
        });
        assert_eq!(again.get("reason"), "queue", "{}", again.line);
        wait_for("more workers than gunicorn's own count", secs(20), || {
            (children(master).len() > STATIC).then_some(())
        });
        let tally = load.finish();
        eprintln!(
            "grew to {before:?}, restarted at {STATIC}, then {}",
            again.line
        );
        assert!(tally.failures.is_empty(), "{tally:?}");
        assert_eq!(cgroup.oom_kills(), 0, "{}", run.log());
        Ok(())
    });
}

#[test]
fn it_waits_for_each_new_worker_to_boot_before_the_next() {
    // Each gunicorn worker takes 3 s to import the app: counted as ready after the grace
    // (0.3 s), every step (1 s) would add another while the last is still importing.
    needs_machine(|| {
        let _serial = serial();
        let extra = [("BOOT_S", "3")];
        let (served, _) = gunicorn("launcher-test-adaptive-boot", &extra, &[], STATIC)?;
        let Served { run, port, cgroup } = &served;
        let load = Load::on(*port, CLIENTS, "/sleep", secs(60));
        let grown = wait_for("three steps", secs(40), || {
            let grown = run.events("resize");
            (grown.len() >= 3).then_some(grown)
        });
        let tally = load.finish();
        let lines = run.stdout();
        one_step_each(&grown, "queue", run);
        for resize in &grown {
            let before = lines[..resize.index].iter();
            let booted: usize = before
                .map(|l| l.matches("fixture: event=booted ").count())
                .sum();
            let from: usize = resize.num("from");
            assert!(
                booted >= from,
                "{from} workers but {booted} booted: {}\n{}",
                resize.line,
                run.log()
            );
        }
        assert!(tally.failures.is_empty(), "{tally:?}\n{}", run.log());
        assert_eq!(cgroup.oom_kills(), 0, "{}", run.log());
        Ok(())
    });
}

#[test]
fn uvicorn_is_refused_with_the_reason_from_the_behaviour_table() {
    needs_machine(|| {
        let _serial = serial();
        let command = ["uvicorn", "app:app"];
        let served = serve("launcher-test-adaptive-uvicorn", "asgi", &[], &command)?;
        let warning = refused(&served.run);
        let message = warning.get("message");
        assert!(
            message.contains("uvicorn: it accepts every connection at once"),
            "{message}"
        );
        served.run.wait_ready(STATIC);
        // A sync call in an async endpoint: the wait is in the workers, and nothing resizes.
        // uvicorn accepts every connection at once, so one copy may hold all 64 and serve them
        // in turn: 20 ms each is a 1.3 s round, where 50 ms (3.2 s) once passed the clients' 5 s
        // timeout on a fresh CI machine.
        let copies = || children(served.run.pid()).len();
        load_changes_nothing(&served, "/block?ms=20", copies, STATIC);
        Ok(())
    });
}

#[test]
fn gunicorn_on_an_event_loop_is_refused_and_says_which_setting() {
    needs_machine(|| {
        let args = ["-k", "uvicorn.workers.UvicornWorker"];
        let (served, _) = gunicorn("launcher-test-adaptive-loop", &[], &args, STATIC)?;
        let warning = refused(&served.run);
        assert!(
            warning
                .get("message")
                .contains("(-k uvicorn.workers.UvicornWorker)"),
            "{}",
            warning.line
        );
        Ok(())
    });
}

#[test]
fn a_users_web_concurrency_is_never_changed() {
    needs_machine(|| {
        let _serial = serial();
        let extra = [("WEB_CONCURRENCY", "3")];
        let (served, master) = gunicorn("launcher-test-adaptive-user", &extra, &[], 3)?;
        let warning = refused(&served.run);
        assert!(
            warning.get("message").contains("set by the user"),
            "{}",
            warning.line
        );
        // Requests wait: adaptive sizing would grow, were the count the launcher's.
        load_changes_nothing(&served, "/sleep", || children(master).len(), 3);
        Ok(())
    });
}

#[test]
fn a_dyno_stopped_at_its_peak_stays_under_its_quota() {
    needs_machine(|| {
        let _serial = serial();
        // No ballast: 15 MB workers, as many as fit, then SIGTERM under load. Each gunicorn
        // worker copies the pages it shares with the master as it exits (7 MB here): counted in
        // the fit, the peak stays under the quota; counted by unique memory alone, 27 workers
        // ran, and the OOM killer ended three of them as they stopped.
        let (mut served, master) = gunicorn("launcher-test-adaptive-peak", &[], &[], STATIC)?;
        let load = Load::on(served.port, CLIENTS, "/sleep", secs(120));
        let (mut seen, mut changed_at) = (0, Instant::now());
        let count = wait_for("adaptive sizing to reach the fit", secs(90), || {
            let resizes = served.run.events("resize").len();
            if resizes != seen {
                (seen, changed_at) = (resizes, Instant::now());
            }
            let count = children(master).len();
            (changed_at.elapsed() > secs(5) && count > 10).then_some(count)
        });
        signal("TERM", &[served.run.pid()]);
        let status = served.run.wait_exit(secs(40));
        // Requests sent after the socket closed fail; those in flight were served.
        load.finish();
        let log = served.run.log();
        eprintln!("stopped at {count} workers");
        assert!(status.success(), "{status:?}\n{log}");
        assert_eq!(served.cgroup.oom_kills(), 0, "{count} workers\n{log}");
        assert!(served.run.events("oom_kill").is_empty(), "{log}");
        Ok(())
    });
}
