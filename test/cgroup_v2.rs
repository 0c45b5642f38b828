//! The cgroup v2 lane (docs/development.md): the launcher on a real cgroup v2 kernel, in the
//! guest that test/vm boots, with this machine's binaries, venv and fixtures. Each test is one
//! function whose body runs in the guest, as root, in cgroups it makes under /sys/fs/cgroup
//! (`Cgroup2`); `vm::guest` boots the guest once for all of them and reports each result here.

mod support;

use std::process::Command;

use support::cgroup2::Cgroup2;
use support::harness::LAUNCHER;
use support::vm;

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
        let fir_1c = Cgroup2::create("fir-1c", &[("memory.max", &mb512), ("cpu.max", "90000 100000")])?;
        let size = size_in(&fir_1c)?;
        let dir = fir_1c.dir().display();
        assert_eq!(size["memory_mb"], 512, "{size:#}");
        assert_eq!(size["memory_source"], format!("cgroup v2 {dir}/memory.max"), "{size:#}");
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
            &[("memory.max", &gb1), ("memory.high", &mb384), ("cpu.max", "150000 100000")],
        )?;
        let size = size_in(&high)?;
        let dir = high.dir().display();
        assert_eq!(size["memory_mb"], 384, "{size:#}");
        assert_eq!(size["memory_source"], format!("cgroup v2 {dir}/memory.high"), "{size:#}");
        assert_eq!(size["cpus"], 2, "{size:#}");
        assert_eq!(size["web_concurrency"], 1, "{size:#}");

        // Fir's dyno-2c-1gb, its limits on a parent: a child inherits them (4 workers).
        let mut parent = Cgroup2::create("fir-2c", &[("memory.max", &gb1), ("cpu.max", "180000 100000")])?;
        let child = parent.child("web", &[])?;
        let size = size_in(&child)?;
        let dir = parent.dir().display();
        assert_eq!(size["memory_mb"], 1024, "{size:#}");
        assert_eq!(size["memory_source"], format!("cgroup v2 {dir}/memory.max"), "{size:#}");
        assert_eq!(size["cpus"], 2, "{size:#}");
        assert_eq!(size["web_concurrency"], 4, "{size:#}");
        Ok(())
    });
}
