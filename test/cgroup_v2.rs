//! The cgroup v2 lane (docs/development.md): the launcher on a real cgroup v2 kernel, in the
//! guest that test/vm boots, with this machine's binaries, venv and fixtures. Each test is one
//! function whose body runs in the guest, as root, in cgroups it makes under /sys/fs/cgroup
//! (`Cgroup2`); `vm::guest` boots the guest once for all of them and reports each result here.

mod support;

#[path = "cgroup_v2/limits.rs"]
mod limits;
#[path = "cgroup_v2/memory.rs"]
mod memory;

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
