//! The guard's and the sizer's decisions: tables of readings -> action.

use std::time::{Duration, Instant};

use super::fit::Fit;
use super::guard::Why;
use super::*;
use crate::supervisor::reading::Reading;

const MB: u64 = 1024 * 1024;

fn worker(pid: i32, uss_mb: u64, ready: bool, age_s: u64) -> WorkerMemory {
    WorkerMemory {
        pid,
        slot: Some(pid as u32),
        uss_bytes: uss_mb * MB,
        pss_bytes: (uss_mb + 5) * MB,
        shared_dirty_bytes: 0,
        ready,
        age: Duration::from_secs(age_s),
    }
}

fn reading(usage_mb: u64, workers: &[WorkerMemory]) -> Reading {
    Reading {
        usage_bytes: usage_mb * MB,
        workers: workers.to_vec(),
        ..Reading::default()
    }
}

fn guard(worker_max_mb: Option<u64>) -> Guard {
    Guard::new(GuardConfig {
        soft_limit_bytes: 435 * MB,
        worker_max_bytes: worker_max_mb.map(|mb| mb * MB),
        cooldown: Duration::from_secs(3),
        kill_after: Duration::from_secs(25),
    })
}

/// The pid a decision recycles, and why; or what else it did.
fn recycled(action: Option<GuardAction>) -> Option<(i32, Why)> {
    match action? {
        GuardAction::Recycle { worker, why } => Some((worker.pid, why)),
        GuardAction::Kill { pid, .. } => panic!("unexpected kill of {pid}"),
        GuardAction::Full(full) => panic!("unexpected {full:?}"),
    }
}

#[test]
fn the_guard_picks_the_worker_to_recycle() {
    let (a, b, c) = (
        worker(1, 100, true, 60),
        worker(2, 250, true, 60),
        worker(3, 90, true, 60),
    );
    let booting = worker(4, 400, false, 0);
    type Case = (&'static str, Option<u64>, Reading, Option<(i32, Why)>);
    let cases: Vec<Case> = vec![
        (
            "under the soft limit",
            None,
            reading(400, &[a.clone(), b.clone()]),
            None,
        ),
        (
            "at the soft limit exactly",
            None,
            reading(435, &[a.clone(), b.clone()]),
            None,
        ),
        (
            "over: the most unique memory goes",
            None,
            reading(436, &[a.clone(), b.clone(), c.clone()]),
            Some((2, Why::DynoSoftLimit)),
        ),
        (
            "a booting worker is never chosen",
            None,
            reading(500, &[a.clone(), booting.clone()]),
            Some((1, Why::DynoSoftLimit)),
        ),
        (
            "nothing ready, nothing to do",
            None,
            reading(500, std::slice::from_ref(&booting)),
            None,
        ),
        (
            "a worker over the cap, dyno fine",
            Some(200),
            reading(300, &[a.clone(), b.clone()]),
            Some((2, Why::WorkerCap)),
        ),
        (
            "the cap is on unique memory only",
            Some(200),
            reading(300, &[a.clone(), c.clone()]),
            None,
        ),
        (
            "the cap wins the reason when both hold",
            Some(200),
            reading(450, &[a.clone(), b.clone()]),
            Some((2, Why::WorkerCap)),
        ),
        (
            "the lone worker is recycled too",
            None,
            reading(450, std::slice::from_ref(&b)),
            Some((2, Why::DynoSoftLimit)),
        ),
        (
            "equal workers: the lower pid",
            None,
            reading(450, &[worker(8, 100, true, 9), worker(7, 100, true, 9)]),
            Some((7, Why::DynoSoftLimit)),
        ),
    ];
    for (name, cap, reading, want) in cases {
        let mut guard = guard(cap);
        assert_eq!(
            recycled(guard.check(&reading, Instant::now())),
            want,
            "{name}"
        );
    }
}

#[test]
fn one_recycle_at_a_time_then_a_cool_down() {
    let mut guard = guard(None);
    let t0 = Instant::now();
    let at = |s: f64| t0 + Duration::from_secs_f64(s);
    let (a, b) = (worker(1, 200, true, 60), worker(2, 150, true, 60));
    let over = reading(450, &[a.clone(), b.clone()]);
    assert_eq!(
        recycled(guard.check(&over, at(0.0))),
        Some((1, Why::DynoSoftLimit))
    );
    // Still over while worker 1 finishes its requests: nothing more.
    assert_eq!(guard.check(&over, at(0.5)), None);
    assert_eq!(guard.recycling(), Some(1));
    // Worker 1 is gone (its replacement, pid 3, is booting): the cool-down starts now.
    let after = reading(450, &[b.clone(), worker(3, 20, false, 0)]);
    assert_eq!(guard.check(&after, at(2.0)), None);
    assert_eq!(guard.check(&after, at(4.9)), None);
    assert_eq!(
        recycled(guard.check(&after, at(5.0))),
        Some((2, Why::DynoSoftLimit))
    );
}

#[test]
fn a_copy_the_launcher_is_stopping_has_not_exited_yet() {
    // Fan-out: the recycled copy leaves the live workers at once, but it drains for a while
    // and the usage still counts it: no cool-down, no second recycle, and no kill of the
    // guard's own (the pool kills it after the graceful timeout).
    let mut guard = guard(None);
    let t0 = Instant::now();
    let at = |s: f64| t0 + Duration::from_secs_f64(s);
    let (a, b) = (worker(1, 200, true, 60), worker(2, 150, true, 60));
    let over = reading(450, &[a, b.clone()]);
    assert!(recycled(guard.check(&over, at(0.0))).is_some());
    let mut draining = reading(450, &[b.clone(), worker(3, 20, false, 0)]);
    draining.stopping = vec![1];
    for s in [0.5, 4.0, 10.0, 30.0] {
        assert_eq!(guard.check(&draining, at(s)), None, "at {s} s");
    }
    assert_eq!(guard.recycling(), Some(1));
    // Gone: the cool-down starts only now.
    let after = reading(450, &[b, worker(3, 20, true, 30)]);
    assert_eq!(guard.check(&after, at(31.0)), None);
    assert_eq!(guard.check(&after, at(33.9)), None);
    assert_eq!(
        recycled(guard.check(&after, at(34.0))),
        Some((2, Why::DynoSoftLimit))
    );
}

#[test]
fn a_recycled_worker_that_does_not_stop_is_killed_once() {
    let mut guard = guard(None);
    let t0 = Instant::now();
    let stuck = reading(450, &[worker(1, 300, true, 60)]);
    assert!(recycled(guard.check(&stuck, t0)).is_some());
    assert_eq!(guard.check(&stuck, t0 + Duration::from_secs(24)), None);
    let late = t0 + Duration::from_secs(25);
    assert_eq!(
        guard.check(&stuck, late),
        Some(GuardAction::Kill {
            pid: 1,
            waited: Duration::from_secs(25)
        })
    );
    assert_eq!(guard.check(&stuck, late + Duration::from_secs(1)), None);
}

fn sizer(workers: u32, max_workers: u32) -> Sizer {
    Sizer::new(
        SizerConfig {
            soft_limit_bytes: 435 * MB,
            max_workers,
            warmup: Duration::from_secs(30),
        },
        workers,
    )
}

fn warm(n: i32, uss_mb: u64) -> Vec<WorkerMemory> {
    (1..=n).map(|pid| worker(pid, uss_mb, true, 60)).collect()
}

#[test]
fn the_sizer_steps_towards_what_fits() {
    // fit = (435 - base) / largest unique; base = usage - the workers' unique memory.
    let cases: Vec<(&str, u32, u32, Reading, Option<u32>)> = vec![
        (
            "2 x 100 MB + 35 base: 4.00 fit, 3 fits with room",
            2,
            5,
            reading(235, &warm(2, 100)),
            Some(3),
        ),
        (
            "3 x 100 MB + 35 base: 4.00 fit, not 4.25: stays",
            3,
            5,
            reading(335, &warm(3, 100)),
            None,
        ),
        (
            "3 x 80 MB + 35 base: 5.0 fit: one more",
            3,
            5,
            reading(275, &warm(3, 80)),
            Some(4),
        ),
        (
            "the CPU cap bounds it",
            5,
            5,
            reading(135, &warm(5, 20)),
            None,
        ),
        (
            "4 x 110 + 35: 3.64 fit: one fewer",
            4,
            5,
            reading(475, &warm(4, 110)),
            Some(3),
        ),
        ("never below one", 1, 5, reading(500, &warm(1, 460)), None),
        (
            "8 x 100 + 35: a 4.00 fit: down to 4 at once",
            8,
            9,
            reading(835, &warm(8, 100)),
            Some(4),
        ),
        (
            "above the cap (TTIN): back down",
            6,
            5,
            reading(155, &warm(6, 20)),
            Some(5),
        ),
    ];
    for (name, from, max, reading, want) in cases {
        let mut sizer = sizer(from, max);
        let resize = sizer.check(&reading);
        assert_eq!(resize.map(|r| r.to), want, "{name}: {resize:?}");
        assert!(sizer.last_fit.is_some(), "{name}");
    }
}

#[test]
fn the_sizer_waits_for_every_worker_to_be_up_and_warm() {
    let mut sizer = sizer(2, 5);
    let cold = vec![worker(1, 100, true, 60), worker(2, 100, true, 10)];
    let booting = vec![worker(1, 100, true, 60), worker(2, 100, false, 31)];
    let missing = warm(1, 100);
    for workers in [cold, booting, missing] {
        assert_eq!(sizer.check(&reading(235, &workers)), None, "{workers:?}");
    }
    assert!(sizer.last_fit.is_none());
}

#[test]
fn a_steady_load_at_a_boundary_does_not_oscillate() {
    // 100 MB workers over a base of 25-45 MB: a fit that wobbles between 3.9 and 4.1.
    for start in 1..=7 {
        let mut sizer = sizer(start, 9);
        let mut counts = vec![start];
        for step in 0..40 {
            let wobble = [0, 10, 0, 20][step % 4];
            let n = sizer.target();
            let usage = 25 + wobble + 100 * u64::from(n);
            sizer.check(&reading(usage, &warm(n as i32, 100)));
            counts.push(sizer.target());
        }
        // It moves one way only, then stays: never up and down again.
        let ups = counts.windows(2).filter(|w| w[1] > w[0]).count();
        let downs = counts.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(ups == 0 || downs == 0, "from {start}: {counts:?}");
        let settled = counts[counts.len() - 20..]
            .iter()
            .all(|n| *n == counts[counts.len() - 1]);
        assert!(settled, "from {start}: {counts:?}");
        assert!(
            (3..=4).contains(&sizer.target()),
            "from {start}: {counts:?}"
        );
    }
}

#[test]
fn the_fit_counts_shared_memory_once() {
    let fit = Fit::measure(&reading(300, &warm(2, 100)), 435 * MB).expect("fit");
    assert_eq!(fit.worker_bytes, 100 * MB);
    assert_eq!(fit.base_bytes, 100 * MB);
    assert!((fit.workers - 3.35).abs() < 1e-9, "{fit:?}");
    assert_eq!(Fit::measure(&reading(300, &[]), 435 * MB), None);
}

#[test]
fn a_worker_costs_its_own_memory_and_the_shared_pages_it_may_copy() {
    // 27 gunicorn workers of 15 MB each that still share 7 MB written before the fork: they fit
    // by their unique memory alone (27.9), not once they copy those pages, as they do on exit.
    let mut workers = warm(27, 15);
    for worker in &mut workers {
        worker.shared_dirty_bytes = 7 * MB;
    }
    let fit = Fit::measure(&reading(420, &workers), 435 * MB).expect("fit");
    assert_eq!(fit.worker_bytes, 22 * MB);
    assert_eq!(
        fit.base_bytes,
        15 * MB,
        "the shared pages are in the base once"
    );
    assert!((fit.workers - 420.0 / 22.0).abs() < 1e-9, "{fit:?}");
    let exit_peak = fit.base_bytes + 19 * fit.worker_bytes;
    assert!(
        exit_peak <= 435 * MB,
        "19 workers that copy everything still fit"
    );
}

#[test]
fn memory_that_no_worker_holds_is_said_once_and_not_recycled_for() {
    // 460 MB used, 2 x 20 MB of it the workers': 420 MB would be left with every worker gone,
    // over the soft limit of 435 MB once the rest is counted.
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut guard = guard(None);
    let workers = [worker(1, 20, true, 60), worker(2, 20, true, 60)];
    let held = reading(480, &workers);
    let full = GuardAction::Full(guard::Full::OutsideWorkers {
        workers_uss_bytes: 40 * MB,
    });
    assert_eq!(guard.check(&held, at(0)), Some(full.clone()));
    assert_eq!(guard.check(&held, at(1)), None, "said once");
    assert_eq!(guard.check(&reading(400, &workers), at(2)), None);
    assert_eq!(
        guard.check(&held, at(3)),
        Some(full),
        "over again: said again"
    );
    // Where a worker holds enough, it is recycled as before.
    let big = [worker(1, 20, true, 60), worker(2, 100, true, 60)];
    assert_eq!(
        recycled(guard.check(&reading(480, &big), at(4))),
        Some((2, Why::DynoSoftLimit))
    );
}

#[test]
fn recycles_that_free_nothing_stop_until_the_dyno_is_under_its_soft_limit() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut guard = guard(None);
    let old = [worker(1, 100, true, 60), worker(2, 90, true, 60)];
    // Each recycled worker's replacement (pid 10+) is young and holds 5 MB; the dyno's usage does
    // not fall: something outside the workers grows as fast as they are recycled.
    let replaced = |pid: i32| {
        let mut young = worker(pid, 5, true, 0);
        young.age = Duration::from_millis(500);
        [worker(2, 90, true, 60), young]
    };
    assert!(recycled(guard.check(&reading(450, &old), at(0))).is_some());
    assert_eq!(
        guard.check(&reading(450, &replaced(10)), at(1)),
        None,
        "cool-down"
    );
    let second = [worker(2, 90, true, 60), worker(10, 100, true, 60)];
    assert_eq!(
        recycled(guard.check(&reading(450, &second), at(5))),
        Some((10, Why::DynoSoftLimit)),
        "one futile recycle: it tries again"
    );
    assert_eq!(guard.check(&reading(450, &replaced(11)), at(6)), None);
    let third = [worker(2, 90, true, 60), worker(11, 100, true, 60)];
    assert_eq!(
        guard.check(&reading(450, &third), at(10)),
        Some(GuardAction::Full(guard::Full::RecyclesFreeNothing {
            recycles: 2
        }))
    );
    assert_eq!(guard.check(&reading(450, &third), at(15)), None, "stopped");
    assert_eq!(guard.check(&reading(300, &third), at(16)), None, "under");
    assert!(
        recycled(guard.check(&reading(450, &third), at(17))).is_some(),
        "once under the soft limit, it recycles again"
    );
}
