//! Pressure stall information (PSI) of the dyno's cgroup: the share of the time in which some of
//! its tasks (`some`), or all of them at once (`full`), waited for memory or for a CPU (cgroup v2
//! `memory.pressure`, `cpu.pressure`; docs/architecture.md, "Size at boot, and the dyno's
//! memory"). Memory pressure is what a dyno short of memory feels before the OOM killer comes:
//! its pages evicted and read back. Only where the kernel has it: cgroup v2, PSI on.
//!
//! Each file has the share of the last 10 s (`avg10`), which `launcher size` shows, and the time
//! stalled in all (`total`), from which the `sample#` line takes the share of the time since the
//! last sample (`Pressure::since`): `avg10` is an average the kernel folds in every 2 s and that
//! decays, so a stall of a tenth of a second before an OOM kill may never show in it.

use std::path::Path;
use std::time::Duration;

use crate::host::{CgroupDir, Host, Snapshot, Version};

/// One resource's stall: the share of a window, in percent of the time (as read: the last 10 s,
/// `avg10`; or since an earlier reading, `Stall::since`), and the time stalled in all (`total`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stall {
    pub some: f64,
    /// Not in every file: a cgroup's `cpu.pressure` has it from Linux 5.13.
    pub full: Option<f64>,
    pub some_total: Duration,
    pub full_total: Option<Duration>,
}

impl Stall {
    /// The share of `wall` in which tasks stalled between `before` and this reading, from the
    /// totals: exact, whatever the kernel's averages have folded in yet.
    fn since(&self, before: &Stall, wall: Duration) -> Stall {
        // The rise of a running total over the wall time, as the CPU meter takes it: of one.
        let share = |now: Duration, then: Duration| {
            let stalled = now.saturating_sub(then);
            crate::usage::cpu::busy(stalled, wall, 1.0).map_or(0.0, |s| (s * 100.0).min(100.0))
        };
        Stall {
            some: share(self.some_total, before.some_total),
            full: self
                .full_total
                .zip(before.full_total)
                .map(|(now, then)| share(now, then)),
            ..*self
        }
    }
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

    /// The share of `wall` in which the dyno's tasks stalled between `before` and this reading
    /// (each resource where both readings have it), for the `sample#` line.
    pub fn since(&self, before: &Pressure, wall: Duration) -> Pressure {
        let since = |now: Option<Stall>, then: Option<Stall>| {
            now.zip(then).map(|(now, then)| now.since(&then, wall))
        };
        Pressure {
            memory: since(self.memory, before.memory),
            cpu: since(self.cpu, before.cpu),
            dir: self.dir.clone(),
        }
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

/// `some avg10=1.23 avg60=... total=N` and `full avg10=... total=N`: the avg10 and the total
/// (microseconds) of each line.
pub fn parse(text: &str) -> Option<Stall> {
    let line = |kind: &str| -> Option<(f64, Duration)> {
        let line = text.lines().find(|l| l.starts_with(kind))?;
        let field = |name: &str| line.split_whitespace().find_map(|f| f.strip_prefix(name));
        let avg10 = field("avg10=")?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)?;
        let total = field("total=")?.parse::<u64>().ok()?;
        Some((avg10, Duration::from_micros(total)))
    };
    let (some, some_total) = line("some ")?;
    let full = line("full ");
    Some(Stall {
        some,
        full: full.map(|(avg10, _)| avg10),
        some_total,
        full_total: full.map(|(_, total)| total),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    const MEMORY: &str = "some avg10=12.50 avg60=3.00 avg300=0.61 total=9000\n\
                          full avg10=4.25 avg60=1.00 avg300=0.20 total=3000\n";

    #[test]
    fn the_avg10_and_the_total_of_each_line_are_read() {
        assert_eq!(
            parse(MEMORY),
            Some(Stall {
                some: 12.5,
                full: Some(4.25),
                some_total: Duration::from_micros(9000),
                full_total: Some(Duration::from_micros(3000)),
            })
        );
        let older_cpu = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(
            parse(older_cpu),
            Some(Stall {
                some: 0.0,
                full: None,
                some_total: Duration::ZERO,
                full_total: None,
            })
        );
        assert_eq!(parse(""), None);
        assert_eq!(parse("some avg10=lots total=1\n"), None);
        assert_eq!(parse("some avg10=-1 total=1\n"), None);
        assert_eq!(parse("some avg10=1.00\n"), None);
        assert_eq!(parse("some avg10=1.00 total=-5\n"), None);
    }

    /// The kernel's `avg10` had not folded in a stall of 95 ms (read in the cgroup v2 lane right
    /// after an OOM kill: `some avg10=0.00 ... total=95317`); the totals have it.
    #[test]
    fn the_share_since_an_earlier_reading_is_taken_from_the_totals() {
        let host = FakeHost::new();
        host.cgroup_v2("/dyno");
        let dir = CgroupDir {
            version: Version::V2,
            path: "/sys/fs/cgroup/dyno".into(),
        };
        let reading = |memory: &str, cpu: &str| {
            host.write("/sys/fs/cgroup/dyno/memory.pressure", memory)
                .write("/sys/fs/cgroup/dyno/cpu.pressure", cpu);
            Pressure::read(&Snapshot::new(host.root()), &dir).expect("pressure")
        };
        let before = reading(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n",
        );
        let after = reading(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=95317\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=95317\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=3001000\n",
        );
        let since = after.since(&before, Duration::from_secs(1));
        let memory = since.memory.expect("memory");
        assert!((memory.some - 9.5317).abs() < 1e-9, "{memory:?}");
        assert_eq!(memory.full, Some(memory.some));
        // More stalled than the wall time between the readings (a late turn of the loop, the
        // clocks' rounding) is all of it, not more.
        assert_eq!(since.cpu.expect("cpu").some, 100.0);
        assert_eq!(since.cpu.expect("cpu").full, None);
        // A total that went down (the cgroup made again) is no stall, and no wall time none.
        let back = before.since(&after, Duration::from_secs(1));
        assert_eq!(back.memory.expect("memory").some, 0.0);
        assert_eq!(
            after.since(&before, Duration::ZERO).cpu.expect("cpu").some,
            0.0
        );
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
