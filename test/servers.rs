//! Black-box tests of the servers of the behaviour table that pre-fork by themselves, delegated to
//! under `launcher run`: Debian's puma 5.6 and unicorn 6.0 serving test/fixtures/rack with Rails'
//! generated config/puma.rb and Heroku's documented config/unicorn.rb, each in a real 512 MB
//! memory cgroup; and Node (18 or later) in fan-out on one socket. The count is the sizing's,
//! SIGHUP replaces every worker under load with no failed request, TTIN/TTOU scale by one, the
//! server repairs a killed worker, the memory guard recycles a leaking one, and both shutdowns
//! (SIGTERM to every process as on Cedar, to the launcher alone as PID 1) end with nothing left.
//! puma grows and shrinks with adaptive sizing under keep-alive clients, with one thread a worker
//! and with threads (servers/puma_adaptive.rs).

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[path = "servers/puma_adaptive.rs"]
mod puma_adaptive;
mod support;
use support::harness::{command, secs, Run, BOOT, LAUNCHER, SYSTEM_PATH};
use support::http::{get_json, json_pid, Load};
use support::procs::{alive, children, signal};
use support::{free_port, needs_machine, MemoryCgroup};

const MB: u64 = 1024 * 1024;

/// A delegated Ruby server and the command that runs it under the launcher.
#[derive(Clone, Copy)]
enum Ruby {
    Puma,
    Unicorn,
}

impl Ruby {
    fn name(self) -> &'static str {
        match self {
            Ruby::Puma => "puma",
            Ruby::Unicorn => "unicorn",
        }
    }

    /// The Procfile's command, as Rails' and Heroku's guides write it.
    fn args(self, port: &str) -> Vec<String> {
        let words: &[&str] = match self {
            Ruby::Puma => &["puma", "-C", "config/puma.rb"],
            Ruby::Unicorn => &["unicorn", "-p", port, "-c", "config/unicorn.rb"],
        };
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    /// Whether Debian's package is installed (.ci/run installs `puma unicorn ruby-rack`).
    fn installed(self) -> Result<(), String> {
        let found = SYSTEM_PATH
            .split(':')
            .any(|dir| Path::new(dir).join(self.name()).exists());
        found.then_some(()).ok_or_else(|| {
            format!(
                "no {} on PATH (apt-get install puma unicorn ruby-rack)",
                self.name()
            )
        })
    }
}

/// `launcher run` of `server` in the rack fixture, with `env` and the pid file out of the tree.
fn ruby_launcher(server: Ruby, port: &str, pidfile: &Path, env: &[(&str, &str)]) -> Command {
    let pidfile = pidfile.to_str().expect("utf-8");
    let mut all = vec![
        ("PORT", port),
        ("PIDFILE", pidfile),
        ("RAILS_ENV", "production"),
        ("LAUNCHER_SAMPLE_INTERVAL", "0"),
    ];
    all.extend_from_slice(env);
    let mut args = vec!["run".to_owned(), "--".to_owned()];
    args.extend(server.args(port));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    command(None, "rack", &all, LAUNCHER, &args)
}

/// WEB_CONCURRENCY as the boot script computes it inside `cgroup`.
fn sized_in(cgroup: &MemoryCgroup) -> usize {
    let mut size = Command::new(LAUNCHER);
    size.args(["size", "--json"])
        .env_clear()
        .env("PATH", SYSTEM_PATH);
    let output = cgroup.wrap(&size).output().expect("launcher size");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    report["web_concurrency"].as_u64().expect("a count") as usize
}

/// The master's workers once there are `count` of them, none of `not`.
fn workers(run: &Run, master: u32, count: usize, not: &[u32], what: &str) -> Vec<u32> {
    run.wait(&format!("{count} workers {what}"), secs(30), || {
        let now = children(master);
        let fresh = now.iter().all(|pid| !not.contains(pid));
        (now.len() == count && fresh).then_some(now)
    })
}

fn exercise(server: Ruby) -> Result<(), String> {
    server.installed()?;
    let cgroup = MemoryCgroup::create(&[&format!("launcher-test-{}", server.name())], 512 * MB)?;
    let tmp = tempfile::TempDir::new().map_err(|e| e.to_string())?;
    let port = free_port();
    let port_text = port.to_string();
    let env = [
        ("DYNO", "web.1"),
        ("LAUNCHER_GRACEFUL_TIMEOUT", "10"),
        ("LAUNCHER_WORKER_MEMORY_MAX", "120"),
    ];
    let pidfile = tmp.path().join("server.pid");
    let mut run = Run::spawn(cgroup.wrap(&ruby_launcher(server, &port_text, &pidfile, &env)));
    let start = run.wait_event("start", BOOT, |_| true);
    let sized = sized_in(&cgroup);
    assert_eq!(start.get("mode"), "delegate", "{}", start.line);
    assert_eq!(start.get("server"), server.name(), "{}", start.line);
    assert_eq!(start.num::<usize>("workers"), sized, "{}", start.line);
    let master = run.wait_children(1, BOOT)[0];
    let first = workers(&run, master, sized, &[], "at start");
    for _ in 0..4 {
        let pid = json_pid(&get_json(port, "/"));
        assert!(
            first.contains(&pid),
            "answered by {pid}, not a worker of {first:?}"
        );
    }

    // A rolling restart under load: every worker replaced, no request failed.
    let load = Load::start(port, 8);
    load.wait_more(200, &run);
    signal("HUP", &[run.pid()]);
    let hup = run.wait_event("signal", secs(5), |e| e.get("signal") == "HUP");
    assert_eq!(hup.get("action"), "forwarded", "{}", hup.line);
    let replaced = workers(&run, master, sized, &first, "after SIGHUP");
    load.wait_more(200, &run);
    let tally = load.finish();
    assert!(
        tally.failures.is_empty(),
        "failed requests: {tally:?}\n{}",
        run.log()
    );
    assert_eq!(
        children(run.pid()),
        vec![master],
        "one master, the same\n{}",
        run.log()
    );

    // One more, one fewer.
    signal("TTIN", &[run.pid()]);
    let more = workers(&run, master, sized + 1, &[], "after TTIN");
    signal("TTOU", &[run.pid()]);
    let fewer = workers(&run, master, sized, &[], "after TTOU");
    assert!(fewer.iter().all(|pid| more.contains(pid)));

    // The server repairs a worker killed under it.
    let victim = fewer[0];
    signal("KILL", &[victim]);
    let repaired = workers(&run, master, sized, &[victim], "after kill -9");
    assert!(
        repaired.iter().any(|pid| !fewer.contains(pid)),
        "{repaired:?}"
    );

    // The memory guard recycles a leaking worker (2 MB a call, cap 120 MB). unicorn closes every
    // connection after one response: a new connection each time, whichever worker takes it.
    let recycle = run.wait("a memory recycle", secs(60), || {
        let _ = support::http::get(port, "/leak", secs(5));
        run.events("memory_recycle").into_iter().next()
    });
    let leaker = recycle.pid();
    assert_eq!(recycle.get("reason"), "worker_cap", "{}", recycle.line);
    run.wait("the recycled worker to end", secs(20), || {
        (!alive(leaker)).then_some(())
    });
    workers(&run, master, sized, &[leaker], "after the recycle");

    // Cedar's shutdown: SIGTERM to every process of the dyno at once.
    let mut everyone = vec![run.pid(), master];
    everyone.extend(children(master));
    signal("TERM", &everyone);
    let status = run.wait_exit(secs(10 + 5));
    assert_eq!(status.code(), Some(0), "\n{}", run.log());
    assert_eq!(
        cgroup.pids(),
        Vec::<u32>::new(),
        "left behind\n{}",
        run.log()
    );
    let _ = replaced;
    Ok(())
}

#[test]
fn puma_delegated_runs_the_sized_count_restarts_scales_repairs_recycles_and_stops() {
    needs_machine(|| exercise(Ruby::Puma));
}

#[test]
fn unicorn_delegated_runs_the_sized_count_restarts_scales_repairs_recycles_and_stops() {
    needs_machine(|| exercise(Ruby::Unicorn));
}

/// As PID 1 of a container (Kubernetes, Docker): SIGTERM to the launcher alone.
fn as_pid_1(server: Ruby) -> Result<(), String> {
    server.installed()?;
    let cgroup = MemoryCgroup::create(
        &[&format!("launcher-test-{}-pid1", server.name())],
        512 * MB,
    )?;
    let tmp = tempfile::TempDir::new().map_err(|e| e.to_string())?;
    let port = free_port().to_string();
    let pidfile = tmp.path().join("server.pid");
    let inner = ruby_launcher(
        server,
        &port,
        &pidfile,
        &[("LAUNCHER_GRACEFUL_TIMEOUT", "10")],
    );
    let mut unshared = Command::new("unshare");
    unshared
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .current_dir(inner.get_current_dir().expect("dir"));
    let mut run = Run::spawn(cgroup.wrap(&unshared));
    let start = run.wait_event("start", BOOT, |_| true);
    assert_eq!(start.get("pid"), "1", "{}", start.line);
    let launcher = run.wait_children(1, BOOT)[0];
    let port: u16 = port.parse().expect("port");
    run.wait("a worker answering", BOOT, || {
        support::http::get(port, "/", secs(2))
            .ok()
            .filter(|r| r.status == 200)
    });
    signal("TERM", &[launcher]);
    let shutdown = run.wait_event("shutdown", secs(5), |_| true);
    let graceful = match server {
        Ruby::Puma => "SIGTERM",
        Ruby::Unicorn => "SIGQUIT",
    };
    assert_eq!(shutdown.get("forwarded"), graceful, "{}", shutdown.line);
    let status = run.wait_exit(secs(10 + 5));
    assert_eq!(status.code(), Some(0), "\n{}", run.log());
    assert_eq!(
        cgroup.pids(),
        Vec::<u32>::new(),
        "left behind\n{}",
        run.log()
    );
    Ok(())
}

#[test]
fn puma_as_pid_1_stops_on_term_to_the_launcher_alone() {
    needs_machine(|| as_pid_1(Ruby::Puma));
}

#[test]
fn unicorn_as_pid_1_stops_gracefully_on_term_to_the_launcher_alone() {
    needs_machine(|| as_pid_1(Ruby::Unicorn));
}

/// The oldest Node the fixture is run on: Debian 12's (.ci/run installs it on a machine with no
/// Node). The fixture needs nothing newer: `http`, `URL`, `listen(handle, backlog)`.
const NODE_MAJOR: u32 = 18;

/// The major version in `node --version`'s "v18.20.4".
fn node_major(version: &str) -> Option<u32> {
    version.strip_prefix('v')?.split('.').next()?.parse().ok()
}

#[test]
fn node_versions_are_read_by_their_major_number() {
    assert_eq!(node_major("v18.20.4"), Some(18));
    assert_eq!(node_major("v20.20.2"), Some(20));
    assert_eq!(node_major("v2.1.0"), Some(2));
    assert_eq!(node_major(""), None);
}

#[test]
fn node_fans_out_copies_that_share_one_socket() {
    // The node the launcher will find: on the PATH its command gets.
    let node = Command::new("node")
        .arg("--version")
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .output();
    let version = node
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    needs_machine(|| {
        match node_major(&version) {
            Some(major) if major >= NODE_MAJOR => eprintln!("node {version}"),
            _ => {
                return Err(format!(
                    "needs Node {NODE_MAJOR} or later, found {version:?}"
                ))
            }
        }
        let port = free_port();
        let port_text = port.to_string();
        let run = Run::spawn(command(
            None,
            "node",
            &[
                ("PORT", &port_text),
                ("WEB_CONCURRENCY", "3"),
                ("LAUNCHER_SAMPLE_INTERVAL", "0"),
            ],
            LAUNCHER,
            &["run", "--", "node", "server.js"],
        ));
        let start = run.wait_event("start", BOOT, |_| true);
        assert_eq!(start.get("mode"), "fanout", "{}", start.line);
        assert_eq!(start.get("server"), "node", "{}", start.line);
        let copies = run.wait_children(3, BOOT);
        run.wait_ready(3);
        let mut answered = HashSet::new();
        for _ in 0..64 {
            let answer = get_json(port, "/");
            assert_eq!(answer["web_concurrency"], "1", "{answer}");
            answered.insert(json_pid(&answer));
        }
        assert!(
            answered.len() >= 2,
            "only {answered:?} answered 64 connections"
        );
        assert!(
            answered.iter().all(|pid| copies.contains(pid)),
            "{answered:?} vs {copies:?}"
        );
        // The recipe's backlog holds: Node listened again with 2048, not its 511.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(run.events("backlog").is_empty(), "\n{}", run.log());
        Ok(())
    });
}
