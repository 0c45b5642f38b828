//! Pressure stall information (PSI) of the dyno's cgroup: the share of the last 10 seconds in
//! which some of its tasks (`some`), or all of them at once (`full`), waited for memory or for a
//! CPU (cgroup v2 `memory.pressure`, `cpu.pressure`; docs/architecture.md, "Size at boot,
//! and the dyno's memory"). Memory pressure is what a dyno short of memory feels before the OOM
//! killer comes: its pages evicted and read back. Only where the kernel has it: cgroup v2, PSI
//! on.

use std::path::Path;

use crate::host::{CgroupDir, Host, Snapshot, Version};

/// One resource's stall over the last 10 s (`avg10`), in percent of the time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stall {
    pub some: f64,
    /// Not in every file: a cgroup's `cpu.pressure` has it from Linux 5.13.
    pub full: Option<f64>,
}

/// The memory and CPU pressure of one cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct Pressure {
    pub memory: Option<Stall>,
    pub cpu: Option<Stall>,
    /// The cgroup directory the files are in.
    pub dir: CgroupDir,
}

impl Pressure {
    /// Reads `memory.pressure` and `cpu.pressure` in `dir`, a cgroup v2 directory; None where
    /// neither can be read (cgroup v1, the root cgroup, PSI off: reading fails with EOPNOTSUPP).
    pub fn read(snapshot: &Snapshot, dir: &CgroupDir) -> Option<Pressure> {
        if dir.version != Version::V2 {
            return None;
        }
        let stall = |file: &str| {
            let text = snapshot.read(&dir.path.join(file)).ok()?;
            parse(&text)
        };
        let (memory, cpu) = (stall("memory.pressure"), stall("cpu.pressure"));
        (memory.is_some() || cpu.is_some()).then(|| Pressure {
            memory,
            cpu,
            dir: dir.clone(),
        })
    }

    /// The dyno's pressure, for `launcher size`: in the cgroup directory its memory limit came
    /// from, as the `sample#` line reads it (`Meter::pressure`).
    pub fn for_host(snapshot: &Snapshot, host: &Host) -> Option<Pressure> {
        Pressure::read(snapshot, host.memory_cgroup.as_ref()?)
    }

    /// `memory 1.2% some, 0.0% full; cpu 31.0% some`, for `launcher size`.
    pub fn describe(&self) -> String {
        let stall = |name: &str, stall: Option<Stall>| {
            let stall = stall?;
            let full = stall.full.map(|f| format!(", {f:.1}% full"));
            Some(format!(
                "{name} {:.1}% some{}",
                stall.some,
                full.unwrap_or_default()
            ))
        };
        let parts = [stall("memory", self.memory), stall("cpu", self.cpu)];
        let parts: Vec<String> = parts.into_iter().flatten().collect();
        let files = Path::new(&self.dir.path).join("{memory,cpu}.pressure");
        format!(
            "{} over the last 10 s ({} {})",
            parts.join("; "),
            self.dir.version.label(),
            files.display()
        )
    }

    /// `launcher size --json`'s `pressure`: each resource's `some` and `full` (null where the
    /// file has none), and the files' directory.
    pub fn to_json(&self) -> serde_json::Value {
        let stall = |stall: Option<Stall>| {
            stall.map(|s| serde_json::json!({ "some": s.some, "full": s.full }))
        };
        serde_json::json!({
            "memory": stall(self.memory),
            "cpu": stall(self.cpu),
            "source": format!("{} {}", self.dir.version.label(), self.dir.path.display()),
        })
    }
}

/// `some avg10=1.23 avg60=... total=N` and `full avg10=...`: the avg10 of each line.
pub fn parse(text: &str) -> Option<Stall> {
    let avg10 = |kind: &str| {
        let line = text.lines().find(|l| l.starts_with(kind))?;
        let value = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("avg10="))?;
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    Some(Stall {
        some: avg10("some ")?,
        full: avg10("full "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    const MEMORY: &str = "some avg10=12.50 avg60=3.00 avg300=0.61 total=9000\n\
                          full avg10=4.25 avg60=1.00 avg300=0.20 total=3000\n";

    #[test]
    fn the_avg10_of_each_line_is_read() {
        assert_eq!(
            parse(MEMORY),
            Some(Stall {
                some: 12.5,
                full: Some(4.25)
            })
        );
        let older_cpu = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(
            parse(older_cpu),
            Some(Stall {
                some: 0.0,
                full: None
            })
        );
        assert_eq!(parse(""), None);
        assert_eq!(parse("some avg10=lots\n"), None);
        assert_eq!(parse("some avg10=-1\n"), None);
    }

    #[test]
    fn a_v2_dyno_shows_the_pressure_of_the_cgroup_its_limit_is_in() {
        let host = FakeHost::new();
        host.cgroup_v2("/dyno")
            .write("/sys/fs/cgroup/dyno/memory.max", "536870912\n")
            .write("/sys/fs/cgroup/dyno/memory.pressure", MEMORY)
            .write(
                "/sys/fs/cgroup/dyno/cpu.pressure",
                "some avg10=31.00 avg60=0 avg300=0 total=1\n",
            );
        let snapshot = Snapshot::new(host.root());
        let pressure = Pressure::for_host(&snapshot, &host.read()).expect("pressure");
        assert_eq!(pressure.dir.path, Path::new("/sys/fs/cgroup/dyno"));
        assert_eq!(
            pressure.describe(),
            "memory 12.5% some, 4.2% full; cpu 31.0% some over the last 10 s \
             (cgroup v2 /sys/fs/cgroup/dyno/{memory,cpu}.pressure)"
        );
        assert_eq!(
            pressure.to_json(),
            serde_json::json!({
                "memory": { "some": 12.5, "full": 4.25 },
                "cpu": { "some": 31.0, "full": null },
                "source": "cgroup v2 /sys/fs/cgroup/dyno",
            })
        );
    }

    #[test]
    fn no_pressure_without_its_files_or_on_cgroup_v1() {
        let host = FakeHost::new();
        host.cgroup_v2("/dyno")
            .write("/sys/fs/cgroup/dyno/memory.max", "536870912\n");
        let snapshot = Snapshot::new(host.root());
        assert_eq!(Pressure::for_host(&snapshot, &host.read()), None);
        let v1 = FakeHost::new();
        v1.cgroup_v1("/dyno")
            .write(
                "/sys/fs/cgroup/memory/dyno/memory.limit_in_bytes",
                "536870912\n",
            )
            .write("/sys/fs/cgroup/memory/dyno/memory.pressure", MEMORY);
        let snapshot = Snapshot::new(v1.root());
        assert_eq!(Pressure::for_host(&snapshot, &v1.read()), None);
    }
}
