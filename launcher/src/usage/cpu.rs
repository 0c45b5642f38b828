//! The dyno's CPU use: the CPU time its processes have used, from the cgroup that holds them
//! (v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`), or summed over /proc where there is none.
//! Its rise over a stretch of wall time, against the CPUs the dyno may use, is `cpu_busy`.

use std::path::Path;
use std::time::Duration;

use crate::host::{CgroupDir, Host, Snapshot, Version};
use crate::procs;

/// Where the dyno's CPU time is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuMeter {
    /// The launcher's own cgroup in the cpuacct (v1) or unified (v2) hierarchy: its processes
    /// and everything they started.
    Cgroup(CgroupDir),
    /// Heroku's Cedar layout, no cgroup mounted: every process in /proc (the dyno's own pid
    /// namespace).
    Processes,
    /// No cgroup of the dyno's own (a laptop): the launcher and everything under it.
    OwnTree { pid: i32 },
}

impl CpuMeter {
    pub fn for_host(host: &Host, pid: i32) -> CpuMeter {
        match (&host.cpu_cgroup, &host.memory_cgroup) {
            (Some(dir), _) => CpuMeter::Cgroup(dir.clone()),
            // A limit file but no cgroup mounted: Cedar.
            (None, Some(_)) => CpuMeter::Processes,
            (None, None) => CpuMeter::OwnTree { pid },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            CpuMeter::Cgroup(dir) => {
                let file = match dir.version {
                    Version::V1 => "cpuacct.usage",
                    Version::V2 => "cpu.stat",
                };
                format!("{} {}", dir.version.label(), dir.path.join(file).display())
            }
            CpuMeter::Processes => "the sum over /proc/*/stat (no cgroup mounted)".to_owned(),
            CpuMeter::OwnTree { .. } => "/proc/*/stat of the launcher and its processes".to_owned(),
        }
    }

    /// The CPU time used so far; None when it cannot be read.
    pub fn used(&self, snapshot: &Snapshot) -> Option<Duration> {
        match self {
            CpuMeter::Cgroup(dir) => match dir.version {
                Version::V1 => {
                    let text = snapshot.read(&dir.path.join("cpuacct.usage")).ok()?;
                    Some(Duration::from_nanos(text.trim().parse().ok()?))
                }
                Version::V2 => {
                    let text = snapshot.read(&dir.path.join("cpu.stat")).ok()?;
                    Some(Duration::from_micros(usage_usec(&text)?))
                }
            },
            CpuMeter::Processes => {
                let proc_dir = snapshot.path(Path::new("/proc"));
                Some(ticks_of(&proc_dir, &procs::pids(&proc_dir)))
            }
            CpuMeter::OwnTree { pid } => {
                let proc_dir = snapshot.path(Path::new("/proc"));
                Some(ticks_of(&proc_dir, &procs::tree(&proc_dir, *pid)))
            }
        }
    }
}

/// `usage_usec N` from a v2 `cpu.stat`.
pub fn usage_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|n| n.trim().parse().ok())
}

/// The CPU time of `pids`: each one's own and that of the children it has reaped (so that the
/// time of workers that have ended is still counted, in their parent's).
fn ticks_of(proc_dir: &Path, pids: &[i32]) -> Duration {
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| procs::cpu_ticks(proc_dir, *pid))
        .sum();
    Duration::from_secs_f64(ticks as f64 / procs::ticks_per_second())
}

/// The share of `capacity` CPUs that `used` CPU time over `wall` time is.
pub fn busy(used: Duration, wall: Duration, capacity: f64) -> Option<f64> {
    (wall > Duration::ZERO && capacity > 0.0)
        .then(|| used.as_secs_f64() / wall.as_secs_f64() / capacity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    #[test]
    fn cgroup_figures_are_read_in_their_units() {
        let host = FakeHost::new();
        host.write("/sys/fs/cgroup/cpuacct/dyno/cpuacct.usage", "2500000000\n");
        host.write(
            "/sys/fs/cgroup/dyno/cpu.stat",
            "usage_usec 1500000\nuser_usec 1000000\n",
        );
        let snapshot = Snapshot::new(host.root());
        let v1 = CpuMeter::Cgroup(CgroupDir {
            version: Version::V1,
            path: "/sys/fs/cgroup/cpuacct/dyno".into(),
        });
        assert_eq!(v1.used(&snapshot), Some(Duration::from_millis(2500)));
        let v2 = CpuMeter::Cgroup(CgroupDir {
            version: Version::V2,
            path: "/sys/fs/cgroup/dyno".into(),
        });
        assert_eq!(v2.used(&snapshot), Some(Duration::from_millis(1500)));
        assert!(v2.describe().ends_with("/sys/fs/cgroup/dyno/cpu.stat"));
    }

    #[test]
    fn busy_is_cpu_time_over_wall_time_and_capacity() {
        let busy = busy(Duration::from_millis(900), Duration::from_secs(1), 0.9);
        assert!((busy.expect("busy") - 1.0).abs() < 1e-9);
        assert_eq!(super::busy(Duration::ZERO, Duration::ZERO, 2.0), None);
    }

    #[test]
    fn this_process_tree_has_used_some_cpu() {
        let meter = CpuMeter::OwnTree {
            pid: std::process::id() as i32,
        };
        let used = meter
            .used(&Snapshot::new(Path::new("/")))
            .expect("readable");
        assert!(used > Duration::ZERO, "{used:?}");
    }
}
