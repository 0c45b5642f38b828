//! The dyno's CPU use: the CPU time its processes have used, from the cgroup that holds them
//! (v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`), or summed over /proc where there is none.
//! Its rise over a stretch of wall time, against the CPUs the dyno may use, is `cpu_busy`.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::host::{CgroupDir, Host, Snapshot, Version, PROC};
use crate::procs;
use crate::usage::Meter;

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
    /// The cgroup's counter where there is one; else what the memory meter counts: every
    /// process on Cedar (a limit file, no cgroup mounted), else the launcher's own tree (a
    /// memory cgroup with no CPU accounting mounted must not count the whole machine).
    pub fn for_host(host: &Host, memory: &Meter, pid: i32) -> CpuMeter {
        match (&host.cpu_cgroup, memory) {
            (Some(dir), _) => CpuMeter::Cgroup(dir.clone()),
            (None, Meter::Processes) => CpuMeter::Processes,
            (None, _) => CpuMeter::OwnTree { pid },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            CpuMeter::Cgroup(dir) => {
                let file = dir.path.join(dir.version.cpu_time_file());
                format!("{} {}", dir.version.label(), file.display())
            }
            CpuMeter::Processes => format!("the sum over {PROC}/*/stat (no cgroup mounted)"),
            CpuMeter::OwnTree { .. } => format!("{PROC}/*/stat of the launcher and its processes"),
        }
    }

    /// The CPU time used so far; None when it cannot be read.
    pub fn used(&self, snapshot: &Snapshot) -> Option<Duration> {
        match self {
            CpuMeter::Cgroup(dir) => {
                let text = snapshot
                    .read(&dir.path.join(dir.version.cpu_time_file()))
                    .ok()?;
                match dir.version {
                    Version::V1 => Some(Duration::from_nanos(text.trim().parse().ok()?)),
                    Version::V2 => Some(Duration::from_micros(usage_usec(&text)?)),
                }
            }
            CpuMeter::Processes => {
                let proc_dir = snapshot.proc_dir();
                Some(ticks_of(&proc_dir, &procs::pids(&proc_dir)))
            }
            CpuMeter::OwnTree { pid } => {
                let proc_dir = snapshot.proc_dir();
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

/// What some processes asked of the CPUs: the time their threads ran plus the time they waited
/// in a run queue for a CPU (/proc/PID/task/TID/schedstat), over wall time. Unlike the CPU
/// time used, it is not capped by what the machine gave them: CPU-bound workers on a host whose
/// other load takes half the CPUs ran half the time and waited the other half, while I/O-bound
/// ones slept. A process's time counts from the first reading that sees it.
#[derive(Debug, Default)]
pub struct Demand {
    /// Each process's ran-plus-waited nanoseconds at the last reading.
    last: HashMap<i32, u64>,
    /// The sum of what the processes added between readings, and when it was read.
    readings: VecDeque<(Instant, Duration)>,
    total: Duration,
}

impl Demand {
    pub fn read(&mut self, proc_dir: &Path, pids: &[i32], now: Instant, keep: Duration) {
        let mut seen = HashMap::with_capacity(pids.len());
        for &pid in pids {
            let Some(ns) = runnable_ns(proc_dir, pid) else {
                continue;
            };
            if let Some(before) = self.last.get(&pid) {
                self.total += Duration::from_nanos(ns.saturating_sub(*before));
            }
            seen.insert(pid, ns);
        }
        self.last = seen;
        self.readings.push_back((now, self.total));
        while self
            .readings
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > keep)
        {
            self.readings.pop_front();
        }
    }

    /// The demand over about the last `over` (from the newest reading back to the last one at
    /// least `over` before it, else the oldest), as a share of `capacity` CPUs.
    pub fn share(&self, over: Duration, capacity: f64) -> Option<f64> {
        let (used, wall) = rise(&self.readings, over)?;
        busy(used, wall, capacity)
    }
}

/// How much a running total of time rose over about the last `over`, and over how much wall
/// time: from the newest reading back to the last one at least `over` before it, else the
/// oldest.
pub fn rise(
    readings: &VecDeque<(Instant, Duration)>,
    over: Duration,
) -> Option<(Duration, Duration)> {
    let (newest_at, newest) = *readings.back()?;
    let start = readings
        .iter()
        .rev()
        .find(|(at, _)| newest_at.duration_since(*at) >= over)
        .or(readings.front())?;
    Some((
        newest.saturating_sub(start.1),
        newest_at.duration_since(start.0),
    ))
}

/// The nanoseconds a process's threads have run and waited to run.
fn runnable_ns(proc_dir: &Path, pid: i32) -> Option<u64> {
    let tasks = std::fs::read_dir(proc_dir.join(pid.to_string()).join("task")).ok()?;
    let per_thread = tasks.flatten().filter_map(|task| {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some(fields.next()??.saturating_add(fields.next()??))
    });
    Some(per_thread.sum())
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
    fn demand_is_run_and_wait_time_from_the_first_reading() {
        let host = FakeHost::new();
        let stat = |pid: i32, tid: i32, run_ms: u64, wait_ms: u64| {
            let path = format!("{PROC}/{pid}/task/{tid}/schedstat");
            host.write(
                &path,
                &format!("{} {} 7\n", run_ms * 1_000_000, wait_ms * 1_000_000),
            );
        };
        let proc_dir = host.root().join("proc");
        let keep = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut demand = Demand::default();
        stat(10, 10, 5_000, 1_000);
        demand.read(&proc_dir, &[10], t0, keep);
        assert_eq!(
            demand.share(Duration::from_secs(1), 2.0),
            None,
            "one reading"
        );
        // A second later: 10 ran 0.5 s and waited 0.5 s (two threads); 11 is new, not counted.
        stat(10, 10, 5_300, 1_400);
        stat(10, 12, 200, 100);
        stat(11, 11, 9_000, 9_000);
        demand.read(&proc_dir, &[10, 11], t0 + Duration::from_secs(1), keep);
        // The thread that appeared counts whole: (0.3 + 0.4 + 0.3) s over 1 s of 2 CPUs.
        let share = demand.share(Duration::from_secs(1), 2.0).expect("share");
        assert!((share - 0.5).abs() < 1e-9, "{share}");
        // 10 idle; 11 ran 1 s and waited 1 s more.
        stat(11, 11, 10_000, 10_000);
        demand.read(&proc_dir, &[10, 11], t0 + Duration::from_secs(2), keep);
        let share = demand.share(Duration::from_secs(1), 2.0).expect("share");
        assert!((share - 1.0).abs() < 1e-9, "{share}");
    }

    #[test]
    fn this_process_tree_has_used_some_cpu() {
        let meter = CpuMeter::OwnTree {
            pid: std::process::id() as i32,
        };
        // The kernel counts CPU time in clock ticks (10 ms): spin until one is counted, at most
        // a second, so that a test run that starts here is not read at 0.
        let start = std::time::Instant::now();
        let mut used = Duration::ZERO;
        while used == Duration::ZERO && start.elapsed() < Duration::from_secs(1) {
            std::hint::black_box((0..100_000u64).sum::<u64>());
            used = meter.used(&Snapshot::live()).expect("readable");
        }
        assert!(used > Duration::ZERO, "{used:?}");
    }
}
