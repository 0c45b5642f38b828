//! A check with the limits read again, as the loop runs it: the decisions, the bounds each
//! policy is left with, and the line.

use std::time::{Duration, Instant};

use super::super::tests::worker;
use super::super::{Config, Control, Decision};
use crate::host::Size;
use crate::sizing::Sizing;
use crate::supervisor::limits::{Count, Rules};
use crate::supervisor::memory::{GuardConfig, Limits, SizerConfig};
use crate::supervisor::reading::{Reading, WorkerMemory};

const MB: u64 = 1024 * 1024;
const SECOND: Duration = Duration::from_secs(1);

fn size(memory_mb: u64, cpus: u32) -> Size {
    Size {
        memory_bytes: memory_mb * MB,
        memory_source: "cgroup v1 /sys/fs/cgroup/memory/dyno/memory.limit_in_bytes".to_owned(),
        cpus,
        cpus_source: "/sys/devices/system/cpu/online".to_owned(),
        cpu_capacity: f64::from(cpus),
    }
}

/// A control with the guard (and measured sizing, if `measured`) over 1024 MB and 8 CPUs, the
/// count the launcher's (`count`), following the limits.
fn control(count: Count, measured: bool, now: Instant) -> Control {
    let soft = 1024 * MB / 100 * 85;
    let config = Config {
        limits: Limits {
            quota_bytes: 1024 * MB,
            soft_limit_bytes: soft,
        },
        guard: Some(GuardConfig {
            soft_limit_bytes: soft,
            worker_max_bytes: None,
            cooldown: 3 * SECOND,
            kill_after: 25 * SECOND,
        }),
        sizer: measured.then_some(SizerConfig {
            soft_limit_bytes: soft,
            max_workers: 17,
            warmup: 30 * SECOND,
        }),
        adaptive: None,
        workers: 4,
        threads: None,
    };
    let mut control = Control::new(config, Some(0), now);
    let rules = Rules {
        soft_limit_percent: 85,
        web_memory_mb: 256,
        max_workers: None,
        count,
    };
    control.follow(rules, size(1024, 8));
    control
}

/// `n` warm workers of `uss_mb` each over a base of 35 MB, the pool's count `target`.
fn reading(n: i32, uss_mb: u64, target: u32, limits: Option<Size>) -> Reading {
    let workers: Vec<WorkerMemory> = (1..=n).map(|pid| worker(pid, uss_mb)).collect();
    Reading {
        usage_bytes: 35 * MB + u64::from(n as u32) * uss_mb * MB,
        workers,
        measured: true,
        target,
        limits,
        ..Reading::default()
    }
}

/// One check as the loop runs it.
fn check(control: &mut Control, reading: &Reading, now: Instant) -> Vec<Decision> {
    let mut decisions = control.follow_limits(reading, now);
    control.wants(reading, now, false);
    control.wants_memory(reading, now, false);
    decisions.extend(control.decide(reading, now));
    decisions
}

fn lines(control: &mut Control, name: &str) -> Vec<String> {
    let events = control.take_events().into_iter();
    events
        .filter(|e| e.name == name)
        .map(|e| e.to_line())
        .collect()
}

#[test]
fn static_sizing_moves_to_a_boots_count_and_the_guard_to_the_new_soft_limit() {
    let t0 = Instant::now();
    let mut control = control(Count::Sized(Sizing::Static), false, t0);
    let halved = reading(4, 20, 4, Some(size(512, 8)));
    assert_eq!(
        check(&mut control, &halved, t0),
        vec![Decision::Resize { to: 2 }]
    );
    assert_eq!(control.config.limits.soft_limit_bytes, 512 * MB / 100 * 85);
    let guard = control.config.guard.as_ref().expect("guard");
    assert_eq!(guard.soft_limit_bytes, 512 * MB / 100 * 85);
    let line = lines(&mut control, "limits_changed").pop().expect("a line");
    assert!(line.contains(" workers=2 workers_was=4 "), "{line}");
    // The same limits read again: nothing more.
    let same = reading(2, 20, 2, Some(size(512, 8)));
    assert_eq!(check(&mut control, &same, t0 + 2 * SECOND), vec![]);
    assert!(lines(&mut control, "limits_changed").is_empty());
    // Doubled back: the count grows back.
    let doubled = reading(2, 20, 2, Some(size(1024, 8)));
    assert_eq!(
        check(&mut control, &doubled, t0 + 4 * SECOND),
        vec![Decision::Resize { to: 4 }]
    );
}

#[test]
fn the_guard_waits_for_the_workers_shed_then_acts_on_the_new_soft_limit() {
    let t0 = Instant::now();
    let mut control = control(Count::Sized(Sizing::Static), false, t0);
    // 4 x 100 MB + 35 MB: under the old soft limit (870.4 MB), over the new one (435.2 MB).
    let halved = reading(4, 100, 4, Some(size(512, 8)));
    assert_eq!(
        check(&mut control, &halved, t0),
        vec![Decision::Resize { to: 2 }],
        "shedding, not recycling besides"
    );
    // Two workers are stopping: the guard waits for them.
    let mut stopping = reading(2, 100, 2, None);
    stopping.usage_bytes = 435 * MB + 200 * MB;
    stopping.stopping = vec![3, 4];
    assert_eq!(check(&mut control, &stopping, t0 + SECOND / 2), vec![]);
    // Gone, and the dyno still over the new soft limit: the guard recycles.
    let mut over = reading(2, 220, 2, None);
    over.workers[1].uss_bytes = 230 * MB;
    assert_eq!(
        check(&mut control, &over, t0 + SECOND),
        vec![Decision::Recycle { pid: 2 }]
    );
    let line = lines(&mut control, "memory_recycle")
        .pop()
        .expect("a recycle");
    assert!(
        line.contains(" soft_limit=435.2MB memory_quota=512.0MB"),
        "{line}"
    );
}

#[test]
fn a_delegated_servers_workers_are_waited_for_until_the_server_runs_the_new_count() {
    let t0 = Instant::now();
    let mut control = control(Count::Sized(Sizing::Static), false, t0);
    let halved = reading(4, 100, 4, Some(size(512, 8)));
    check(&mut control, &halved, t0);
    // Delegate mode: the server's workers are its children; none is the launcher's to stop.
    let still_four = reading(4, 110, 2, None);
    assert_eq!(check(&mut control, &still_four, t0 + SECOND), vec![]);
    // Past the graceful timeout the guard acts again, whatever the server did.
    let late = t0 + 26 * SECOND;
    assert_eq!(
        check(&mut control, &still_four, late),
        vec![Decision::Recycle { pid: 1 }]
    );
}

#[test]
fn a_users_count_is_kept_while_the_soft_limit_follows() {
    let t0 = Instant::now();
    let kept = Count::Kept("WEB_CONCURRENCY is the user's".to_owned());
    let mut control = control(kept, false, t0);
    let mut halved = reading(3, 140, 3, Some(size(512, 8)));
    halved.workers[2].uss_bytes = 150 * MB;
    assert_eq!(
        check(&mut control, &halved, t0),
        vec![Decision::Recycle { pid: 3 }],
        "over the new soft limit at once"
    );
    let line = lines(&mut control, "limits_changed").pop().expect("a line");
    assert!(
        line.contains(" kept=\"WEB_CONCURRENCY is the user's\" workers=3"),
        "{line}"
    );
}

#[test]
fn measured_sizing_takes_its_new_most_and_sheds_at_once_to_what_fits() {
    let t0 = Instant::now();
    let mut control = control(Count::Sized(Sizing::Measured), true, t0);
    // Warm and measured at 5 workers of 80 MB over 35 MB: 10.4 fit under 870.4 MB, one more.
    let first = reading(5, 80, 5, None);
    assert_eq!(
        check(&mut control, &first, t0),
        vec![Decision::Resize { to: 6 }]
    );
    control.take_events();
    let one_cpu = reading(6, 80, 6, Some(size(1024, 1)));
    assert_eq!(
        check(&mut control, &one_cpu, t0 + SECOND),
        vec![Decision::Resize { to: 3 }],
        "one CPU caps it at 3; the limits' resize alone: measured sizing waits a check"
    );
    let sizer = control.config.sizer.as_ref().expect("measured");
    assert_eq!(sizer.max_workers, 3);
    // Halved: (435.2 - 35) / 80 = 5.0 still fit 3. A quarter: (217.6 - 35) / 80 = 2.28: 2.
    let halved = reading(3, 80, 3, Some(size(512, 1)));
    assert_eq!(check(&mut control, &halved, t0 + 2 * SECOND), vec![]);
    let quarter = reading(3, 80, 3, Some(size(256, 1)));
    assert_eq!(
        check(&mut control, &quarter, t0 + 3 * SECOND),
        vec![Decision::Resize { to: 2 }]
    );
    let line = lines(&mut control, "limits_changed").pop().expect("a line");
    assert!(
        line.contains(" fit=2.28 workers=2 workers_was=3 "),
        "{line}"
    );
}
