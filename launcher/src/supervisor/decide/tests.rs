//! A check's decisions as tables: readings in, decisions and lines out, on a fake clock.

use std::time::{Duration, Instant};

use super::*;
use crate::supervisor::reading::{Busy, Cpu, WorkerMemory};

const MB: u64 = 1024 * 1024;
const SECOND: Duration = Duration::from_secs(1);

/// A warm, ready worker of `uss_mb` unique memory (the follow tests' too).
pub(super) fn worker(pid: i32, uss_mb: u64) -> WorkerMemory {
    WorkerMemory {
        pid,
        slot: Some(pid as u32),
        uss_bytes: uss_mb * MB,
        pss_bytes: uss_mb * MB,
        shared_dirty_bytes: 0,
        ready: true,
        age: 60 * SECOND,
    }
}

/// `n` ready workers of `uss_mb` each, over a base of 35 MB, with the pool's count `target`.
fn reading(n: i32, uss_mb: u64, target: u32) -> Reading {
    let workers: Vec<WorkerMemory> = (1..=n).map(|pid| worker(pid, uss_mb)).collect();
    let usage_bytes = 35 * MB + u64::from(n as u32) * uss_mb * MB;
    Reading {
        usage_bytes,
        workers,
        target,
        cpu: Cpu {
            busy: Some(0.2),
            demand: Some(0.2),
        },
        ..Reading::default()
    }
}

fn limits() -> Limits {
    Limits {
        quota_bytes: 512 * MB,
        soft_limit_bytes: 435 * MB,
    }
}

fn guard() -> Option<GuardConfig> {
    Some(GuardConfig {
        soft_limit_bytes: 435 * MB,
        worker_max_bytes: None,
        cooldown: 3 * SECOND,
        kill_after: 25 * SECOND,
    })
}

fn measured() -> Option<SizerConfig> {
    Some(SizerConfig {
        soft_limit_bytes: 435 * MB,
        max_workers: 5,
        warmup: 30 * SECOND,
    })
}

fn adaptive() -> Option<AdaptiveConfig> {
    Some(AdaptiveConfig {
        floor: 2,
        max_workers: 1024,
        grow_window: 10 * SECOND,
        grow_share: 0.5,
        cpu_max: 0.8,
        lock_bound_cpu_max: crate::supervisor::adaptive::LOCK_BOUND_CPU_MAX,
        shrink_after: 60 * SECOND,
        step: 2 * SECOND,
        read_interval: SECOND / 10,
        threaded: false,
    })
}

fn control(
    guard: Option<GuardConfig>,
    sizer: Option<SizerConfig>,
    adaptive: Option<AdaptiveConfig>,
    now: Instant,
) -> Control {
    let config = Config {
        limits: limits(),
        guard,
        sizer,
        adaptive,
        workers: 2,
        threads: None,
    };
    Control::new(config, Some(0), now)
}

/// One whole check, as the loop runs it: wants, the completed reading, decide.
fn check(control: &mut Control, reading: &mut Reading, now: Instant) -> Vec<Decision> {
    let wants = control.wants(reading, now, false);
    if wants.busy && reading.busy.is_none() {
        reading.busy = Some(Busy::Count(reading.workers.len() as u32));
    }
    control.wants_memory(reading, now, false);
    control.decide(reading, now)
}

#[test]
fn a_check_decides_in_order_guard_then_sizing() {
    let t0 = Instant::now();
    type Row = (&'static str, Control, Reading, Vec<Decision>);
    let over = {
        let mut r = reading(2, 220, 2);
        r.workers[1].uss_bytes = 230 * MB;
        r
    };
    let stopping = {
        let mut r = reading(2, 100, 2);
        r.stopping = vec![9];
        r
    };
    let rows: Vec<Row> = vec![
        (
            "over the soft limit: the largest worker is recycled",
            control(guard(), measured(), None, t0),
            over.clone(),
            vec![Decision::Recycle { pid: 2 }],
        ),
        (
            "the guard goes first: no step of measured sizing with it",
            control(guard(), measured(), None, t0),
            over,
            vec![Decision::Recycle { pid: 2 }],
        ),
        (
            "measured: 2 x 100 MB + 35 fits 4.0: one more",
            control(guard(), measured(), None, t0),
            reading(2, 100, 2),
            vec![Decision::Resize { to: 3 }],
        ),
        (
            "measured: the pool's count (TTIN to 6) is over the cap of 5: back down",
            control(guard(), measured(), None, t0),
            reading(6, 20, 6),
            vec![Decision::Resize { to: 5 }],
        ),
        (
            "no step while a stopped worker still holds memory",
            control(guard(), measured(), None, t0),
            stopping,
            vec![],
        ),
        (
            "static: nothing to decide under the soft limit",
            control(guard(), None, None, t0),
            reading(2, 100, 2),
            vec![],
        ),
    ];
    for (name, mut control, mut reading, want) in rows {
        assert_eq!(check(&mut control, &mut reading, t0), want, "{name}");
    }
}

#[test]
fn adaptive_sizing_grows_only_once_the_last_worker_has_served() {
    let t0 = Instant::now();
    let mut control = control(guard(), None, adaptive(), t0);
    // Ten seconds of reads with connections waiting.
    for i in 1..=100 {
        control.queue_read(t0 + SECOND / 10 * i, true);
    }
    let now = t0 + 10 * SECOND;
    let mut waiting = reading(2, 20, 2);
    let wants = control.wants(&waiting, now, false);
    assert!(
        wants.serving,
        "a worker would be added: are they all serving?"
    );
    waiting.not_serving = Some(vec![2]);
    assert!(control.wants_memory(&waiting, now, false), "the fit, first");
    assert_eq!(
        control.decide(&waiting, now),
        vec![],
        "worker 2 has not served"
    );
    let later = now + SECOND;
    let mut served = reading(2, 20, 2);
    control.wants(&served, later, false);
    served.not_serving = Some(vec![]);
    control.wants_memory(&served, later, false);
    assert_eq!(
        control.decide(&served, later),
        vec![Decision::Resize { to: 3 }]
    );
    let line = control.take_events().pop().expect("a resize line");
    assert_eq!(line.name, "resize");
    assert_eq!(line.get("sizing"), Some("adaptive"));
    assert_eq!(line.get("reason"), Some("queue"));
    assert_eq!(line.get("memory_quota"), Some("512.0MB"));
}

#[test]
fn the_pools_count_is_taken_at_each_check() {
    let t0 = Instant::now();
    let mut control = control(guard(), None, adaptive(), t0);
    for i in 1..=100 {
        control.queue_read(t0 + SECOND / 10 * i, true);
    }
    // TTIN took the pool to 4 a moment ago: adaptive sizing starts from 4 and waits a step.
    let now = t0 + 10 * SECOND;
    let mut four = reading(4, 20, 4);
    assert_eq!(check(&mut control, &mut four, now), vec![]);
    for i in 1..=30 {
        control.queue_read(now + SECOND / 10 * i, true);
    }
    let mut later = reading(4, 20, 4);
    later.not_serving = Some(vec![]);
    assert_eq!(
        check(&mut control, &mut later, now + 3 * SECOND),
        vec![Decision::Resize { to: 5 }]
    );
}

#[test]
fn oom_kills_of_a_delegated_servers_workers_are_claimed_when_they_vanish() {
    let t0 = Instant::now();
    let mut control = control(guard(), None, None, t0);
    let mut first = reading(2, 100, 2);
    check(&mut control, &mut first, t0);
    control.take_events();
    // The counter rose by two; one worker is gone, the other kill is nobody's.
    let mut after = reading(1, 100, 2);
    after.oom_kills = Some(2);
    after.vanished = vec![2];
    check(&mut control, &mut after, t0 + SECOND / 2);
    let lines = control.take_events();
    let claimed = lines.iter().find(|e| e.name == "oom_kill").expect("a line");
    assert_eq!(claimed.get("pid"), Some("2"));
    assert_eq!(claimed.get("attributed"), Some("1"));
    assert_eq!(
        claimed.get("memory_total"),
        Some("235.0MB"),
        "as read before the kill"
    );
    let mut next = reading(1, 100, 2);
    next.oom_kills = Some(2);
    check(&mut control, &mut next, t0 + 2 * SECOND);
    let unclaimed = control.take_events();
    let line = unclaimed
        .iter()
        .find(|e| e.name == "oom_kill")
        .expect("a line");
    assert_eq!(line.get("unattributed"), Some("1"));
    assert_eq!(control.oom_total(), 2);
}

/// Two workers of 16 threads, `busy` of them busy, with `waiting` requests waiting inside the
/// workers at each check for up to ten seconds: the decision that came, and the control.
fn threaded_checks(waiting: u32, busy: u32) -> (Vec<Decision>, Control) {
    threaded_checks_of(waiting, busy, |_| ())
}

/// The same, each reading changed by `change` first.
fn threaded_checks_of(
    waiting: u32,
    busy: u32,
    change: impl Fn(&mut Reading),
) -> (Vec<Decision>, Control) {
    let t0 = Instant::now();
    let config = Config {
        limits: limits(),
        guard: guard(),
        sizer: None,
        adaptive: adaptive().map(|a| AdaptiveConfig {
            read_interval: SECOND / 2,
            threaded: true,
            ..a
        }),
        workers: 2,
        threads: Some(16),
    };
    let mut control = Control::new(config, Some(0), t0);
    // gthread accepts at once: the accept queue's reads say nothing, and are not counted.
    for i in 1..=100 {
        control.queue_read(t0 + SECOND / 10 * i, false);
    }
    let mut last = Vec::new();
    for i in 1..=20 {
        let now = t0 + SECOND / 2 * i;
        let mut reading = reading(2, 30, 2);
        reading.waiting = Some(waiting);
        reading.threads_busy = Some(busy);
        reading.not_serving = Some(vec![]);
        change(&mut reading);
        let wants = control.wants(&reading, now, false);
        assert!(wants.inside && !wants.busy, "{wants:?}");
        control.wants_memory(&reading, now, false);
        last = control.decide(&reading, now);
        if !last.is_empty() {
            break;
        }
    }
    (last, control)
}

#[test]
fn threaded_workers_grow_on_the_requests_waiting_inside_them() {
    let (last, mut control) = threaded_checks(12, 32);
    assert_eq!(last, vec![Decision::Resize { to: 3 }]);
    let line = control.take_events().pop().expect("a resize line");
    assert_eq!(line.get("reason"), Some("queue"), "{line:?}");
    assert_eq!(
        line.get("workers_busy_mean"),
        Some("2.00"),
        "32 busy threads of 16 each"
    );
    // 24 busy, 8 idle: more wait than the idle threads would take.
    assert_eq!(threaded_checks(12, 24).0, vec![Decision::Resize { to: 3 }]);
}

/// Lock-bound threaded workers on CPUs 85% busy (over `cpu_max`, 80%): the hand-offs of their
/// locks leave CPU that a worker more fills, so one comes, and the line says why; without a
/// lock-bound worker, none.
#[test]
fn lock_bound_threaded_workers_grow_until_the_cpus_are_saturated() {
    let busy_cpus = |gil_bound: u32, busy: f64| {
        move |reading: &mut Reading| {
            reading.gil_bound = Some(gil_bound);
            reading.cpu = Cpu {
                busy: Some(busy),
                demand: Some(busy),
            };
        }
    };
    let (last, mut control) = threaded_checks_of(0, 32, busy_cpus(2, 0.85));
    assert_eq!(last, vec![Decision::Resize { to: 3 }]);
    let line = control.take_events().pop().expect("a resize line");
    assert_eq!(line.get("workers_gil_bound"), Some("2"), "{line:?}");
    assert_eq!(line.get("cpu_busy"), Some("0.85"), "{line:?}");
    let none: Vec<Decision> = vec![];
    assert_eq!(threaded_checks_of(12, 32, busy_cpus(0, 0.85)).0, none);
    assert_eq!(threaded_checks_of(0, 32, busy_cpus(2, 0.96)).0, none);
}

/// The requests waiting inside gunicorn's workers cost a walk of the kernel's whole TCP table:
/// a check does not ask for them while a worker is lock-bound or more wait in the accept queue
/// than threads idle (either counts as waiting anyway), and the workers grow the same without
/// them; a sample asks.
#[test]
fn workers_grow_without_the_requests_waiting_inside_them_where_those_change_nothing() {
    let lock_bound = |reading: &mut Reading| {
        reading.gil_bound = Some(1);
        reading.cpu = Cpu {
            busy: Some(0.85),
            demand: Some(0.85),
        };
    };
    let (_, control) = threaded_checks_of(0, 32, lock_bound);
    let mut check = reading(2, 30, 2);
    assert!(control.wants_waiting(&check, false), "no lock-bound worker");
    lock_bound(&mut check);
    assert!(!control.wants_waiting(&check, false), "a lock-bound worker");
    assert!(control.wants_waiting(&check, true), "for the sample line");
    let unread = |reading: &mut Reading| {
        lock_bound(reading);
        reading.waiting = None;
    };
    assert_eq!(
        threaded_checks_of(0, 32, unread).0,
        vec![Decision::Resize { to: 3 }]
    );
    // 28 of 32 threads busy: 4 idle.
    let queued = |n: u32| {
        move |reading: &mut Reading| {
            reading.queued = Some(n);
            reading.threads_busy = Some(28);
        }
    };
    let mut busy = reading(2, 30, 2);
    queued(4)(&mut busy);
    assert!(
        control.wants_waiting(&busy, false),
        "as many queued as idle"
    );
    queued(5)(&mut busy);
    assert!(
        !control.wants_waiting(&busy, false),
        "more queued than idle"
    );
    let unread = |reading: &mut Reading| {
        queued(5)(reading);
        reading.waiting = None;
    };
    assert_eq!(
        threaded_checks_of(0, 28, unread).0,
        vec![Decision::Resize { to: 3 }]
    );
}

/// Requests waiting inside one gthread worker (it accepted while its threads were busy) while
/// as many threads idle elsewhere: a worker more would not serve them sooner.
#[test]
fn threaded_workers_with_threads_idle_for_what_waits_do_not_grow() {
    for (waiting, busy) in [(12, 20), (12, 0), (4, 10), (0, 32)] {
        let what = format!("{waiting} waiting, {busy} of 32 threads busy");
        assert_eq!(threaded_checks(waiting, busy).0, vec![], "{what}");
    }
}
