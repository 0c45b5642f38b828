//! Delegate mode with real gunicorn: one master that forks the workers.

use super::*;

#[test]
fn delegate_runs_one_gunicorn_master_that_forks_web_concurrency_workers() {
    needs_machine(|| {
        let venv = venv(&["gunicorn"])?;
        let port = free_port();
        let (run, master, workers) = delegate(&venv, port, 2);
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("mode"), "delegate", "{}", start.line);
        assert_eq!(start.get("server"), "gunicorn", "{}", start.line);
        assert_eq!(start.get("workers"), "2", "{}", start.line);

        for _ in 0..4 {
            let root = get_json(port, "/");
            let pid = json_pid(&root);
            assert!(
                workers.contains(&pid),
                "answered by {pid}, not a worker {workers:?}"
            );
            assert_eq!(root["web_concurrency"], "2", "{root}");
        }
        assert_eq!(children(run.pid()), vec![master], "\n{}", run.log());
        assert_eq!(children(master), workers, "\n{}", run.log());
        Ok(())
    });
}

/// A gthread worker of gunicorn 23 or older that holds `--worker-connections` connections none of
/// which has sent its request stops polling them and spins at full CPU for good (gunicorn issues
/// #3146 and #3407): with the launcher's threads, two idle connections (a browser's preconnect, a
/// TCP health check) once froze a worker of two threads. The launcher leaves gunicorn's 1000 and
/// closes each connection after its response instead (docs/sizing.md, "Threads").
#[test]
fn idle_connections_do_not_freeze_a_gthread_worker_run_with_the_launchers_threads() {
    needs_machine(|| {
        let (run, port) = one_gthread_worker_of_2_threads(&venv(&["gunicorn"])?, &[]);
        let idle: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let answer = support::http::get(port, "/", secs(5));
        drop(idle);
        let response = answer
            .unwrap_or_else(|e| panic!("GET / with 2 idle connections open: {e}\n{}", run.log()));
        assert_eq!(response.status, 200, "{}", response.body);
        Ok(())
    });
}

/// `launcher run -- gunicorn app:app` serving test/fixtures/flask-memory with one worker and
/// `LAUNCHER_THREADS=2`, and the `extra` settings, once it is ready; with its port.
fn one_gthread_worker_of_2_threads(venv: &Path, extra: &[(&str, &str)]) -> (Run, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let mut env = vec![
        ("PORT", port_text.as_str()),
        ("WEB_CONCURRENCY", "1"),
        ("LAUNCHER_THREADS", "2"),
    ];
    env.extend_from_slice(extra);
    let args = ["run", "--", "gunicorn", "app:app"];
    let run = Run::spawn(launcher(venv, "flask-memory", &env, &args));
    let master = run.wait_children(1, BOOT)[0];
    run.wait_grandchildren(master, 1, BOOT);
    run.wait_ready(1);
    (run, port)
}

/// On gunicorn 24 and newer, `launcher run` caps a gthread worker's connections at the threads it
/// gives it: a request that no thread can take waits in the shared socket's accept queue, where
/// the next free thread of any worker takes it and adaptive sizing sees it. On gunicorn 23, where
/// that cap can freeze a worker (above), it does not, and the worker takes the request in.
#[test]
fn gthread_workers_take_no_more_connections_than_threads_on_a_gunicorn_that_allows_it() {
    needs_machine(|| {
        for (venv, capped) in [(new_gunicorn_venv()?, true), (venv(&["gunicorn"])?, false)] {
            let (run, port) = one_gthread_worker_of_2_threads(&venv, &[("SLEEP_MS", "3000")]);
            let start = &run.events("start")[0];
            let want = capped.then_some("2");
            assert_eq!(start.opt("worker_connections"), want, "{}", run.log());

            // 3 requests of 3 s for 2 threads: the third waits, in the queue if capped.
            let requests = support::http::in_flight(port, "/sleep", 3);
            std::thread::sleep(Duration::from_millis(1500));
            let queued = accept_queue(port);
            let statuses: Vec<_> = requests.into_iter().map(|r| r.join().unwrap()).collect();
            let venv = venv.display();
            assert_eq!(queued, Some(u32::from(capped)), "{venv}\n{}", run.log());
            assert_eq!(
                statuses,
                [Ok(200), Ok(200), Ok(200)],
                "{venv}\n{}",
                run.log()
            );
        }
        Ok(())
    });
}

/// An event loop's worker connections are its concurrency: with the launcher's threads asked for
/// all the same, gunicorn's uvicorn worker keeps its 1000 (it had the threads' cap once).
#[test]
fn event_loop_workers_keep_their_worker_connections() {
    needs_machine(|| {
        let venv = new_gunicorn_venv()?;
        let port = free_port();
        let port_text = port.to_string();
        let env = [
            ("PORT", port_text.as_str()),
            ("WEB_CONCURRENCY", "1"),
            ("LAUNCHER_THREADS", "2"),
        ];
        let worker = "uvicorn.workers.UvicornWorker";
        let args = ["run", "--", "gunicorn", "-k", worker, "app:app"];
        let run = Run::spawn(launcher(&venv, "asgi", &env, &args));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.opt("worker_connections"), None, "{}", start.line);
        let master = run.wait_children(1, BOOT)[0];
        let workers = run.wait_grandchildren(master, 1, BOOT);
        let environ =
            fs::read(format!("/proc/{}/environ", workers[0])).map_err(|e| e.to_string())?;
        let environ = String::from_utf8_lossy(&environ);
        let args = environ
            .split('\0')
            .find(|v| v.starts_with("GUNICORN_CMD_ARGS="));
        assert_eq!(
            args,
            Some("GUNICORN_CMD_ARGS=--threads 2 --keep-alive 0"),
            "{}",
            run.log()
        );
        Ok(())
    });
}

/// The connections waiting in the accept queue of the listening TCP socket on `port`: its
/// `rx_queue` in /proc/net/tcp or tcp6 (`st` 0A is LISTEN).
fn accept_queue(port: u16) -> Option<u32> {
    let hex = |text: &str| u32::from_str_radix(text, 16).ok();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields.get(1)?.rsplit(':').next()?;
                let listening = hex(local_port)? == u32::from(port) && fields.get(3)? == &"0A";
                listening.then(|| hex(fields.get(4)?.split(':').nth(1)?))?
            })
        })
}
