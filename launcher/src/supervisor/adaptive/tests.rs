//! Adaptive sizing as tables (readings -> action) on a fake clock, the CPU-bound case, the climb
//! and the way back, and a no-oscillation property over constant loads.

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn config() -> AdaptiveConfig {
    AdaptiveConfig {
        floor: 2,
        max_workers: 1024,
        grow_window: 10 * SECOND,
        grow_share: 0.5,
        cpu_max: 0.8,
        lock_bound_cpu_max: LOCK_BOUND_CPU_MAX,
        shrink_after: 60 * SECOND,
        step: 3 * SECOND,
        read_interval: SECOND / 10,
        threaded: false,
    }
}

/// `workers` workers, with `seconds` of queue reads (every 100 ms; a share `queued` of them
/// with connections waiting) and busy samples (every 0.5 s) behind them.
fn after(workers: u32, seconds: u64, queued: f64, busy: f64) -> (Adaptive, Instant) {
    let start = Instant::now();
    let mut adaptive = Adaptive::new(config(), workers, start);
    let reads = seconds * 10;
    for i in 0..reads {
        let at = start + Duration::from_millis(100 * (i + 1));
        let waiting = (i as f64) < queued * reads as f64;
        adaptive.queue_read(at, waiting);
        if i % 5 == 0 {
            adaptive.busy_sample(at, busy);
        }
    }
    (adaptive, start + Duration::from_millis(100 * reads))
}

/// Workers, seconds of history, the share of queue reads with connections waiting, busy workers,
/// ready, CPU use, memory fit -> the new count.
type Row = (
    u32,
    u64,
    f64,
    f64,
    bool,
    Option<f64>,
    Option<f64>,
    Option<u32>,
);

#[test]
fn readings_to_actions() {
    let table: [Row; 16] = [
        // Connections wait in every read, or in most: one more.
        (2, 10, 1.0, 2.0, true, Some(0.3), Some(10.0), Some(3)),
        (2, 10, 0.6, 2.0, true, Some(0.3), Some(10.0), Some(3)),
        // In fewer than half of the reads: no change.
        (2, 10, 0.4, 2.0, true, Some(0.3), Some(10.0), None),
        // The CPUs are busy.
        (2, 10, 1.0, 2.0, true, Some(0.85), Some(10.0), None),
        // 60% with 2 workers is 90% with 3: a CPU-bound app.
        (2, 10, 1.0, 2.0, true, Some(0.6), Some(10.0), None),
        // 60% with 10 workers is 66% with 11.
        (10, 10, 1.0, 10.0, true, Some(0.6), Some(20.0), Some(11)),
        // No CPU figure yet.
        (2, 10, 1.0, 2.0, true, None, Some(10.0), None),
        // A fourth worker does not fit with a quarter to spare, or the fit is not known.
        (3, 10, 1.0, 3.0, true, Some(0.3), Some(4.1), None),
        (3, 10, 1.0, 3.0, true, Some(0.3), None, None),
        // The last worker added is not ready yet.
        (2, 10, 1.0, 2.0, false, Some(0.3), Some(10.0), None),
        // Too few reads since the start.
        (2, 2, 1.0, 2.0, true, Some(0.3), Some(10.0), None),
        // A minute of an empty queue with 1 of 4 busy: one fewer; with 3 busy: no change.
        (4, 70, 0.0, 1.0, true, Some(0.1), Some(10.0), Some(3)),
        (4, 70, 0.0, 3.0, true, Some(0.1), Some(10.0), None),
        // Also while a worker is not up (one that crashes at boot must not hold the count up).
        (4, 70, 0.0, 1.0, false, Some(0.1), Some(10.0), Some(3)),
        // More workers than fit: one fewer, whatever the queue says.
        (4, 10, 1.0, 4.0, true, Some(0.3), Some(3.5), Some(3)),
        // Far more than fit (TTIN, a limit lowered): down to what fits at once.
        (10, 10, 1.0, 10.0, true, Some(0.3), Some(4.5), Some(4)),
    ];
    for (workers, seconds, queued, busy, ready, cpu, fit, expected) in table {
        let (mut adaptive, now) = after(workers, seconds, queued, busy);
        let step = adaptive.decide(now, ready, cpu, fit);
        assert_eq!(
            step.map(|s| s.to),
            expected,
            "{workers} workers, {seconds} s, queued {queued}, busy {busy}, ready {ready}, cpu {cpu:?}, fit {fit:?}: {step:?}"
        );
    }
}

#[test]
fn reads_far_apart_still_let_it_grow() {
    let start = Instant::now();
    let sparse = AdaptiveConfig {
        read_interval: 2 * SECOND,
        ..config()
    };
    assert_eq!(sparse.min_reads(), 1);
    assert_eq!(config().min_reads(), MIN_READS);
    let mut adaptive = Adaptive::new(sparse, 2, start);
    for i in 1..=5 {
        adaptive.queue_read(start + 2 * i * SECOND, true);
    }
    let now = start + 10 * SECOND;
    let step = adaptive.decide(now, true, Some(0.3), Some(10.0));
    assert_eq!(step.map(|s| s.to), Some(3), "{step:?}");
}

#[test]
fn never_below_the_floor_nor_above_the_cap() {
    let (mut idle, now) = after(2, 70, 0.0, 0.0);
    assert_eq!(
        idle.decide(now, true, Some(0.0), Some(10.0)),
        None,
        "at the floor"
    );
    let (mut full, now) = after(6, 10, 1.0, 6.0);
    full.config.max_workers = 6;
    assert_eq!(
        full.decide(now, true, Some(0.1), Some(50.0)),
        None,
        "at LAUNCHER_MAX_WORKERS"
    );
}

#[test]
fn a_cpu_bound_app_with_a_full_queue_never_grows() {
    let start = Instant::now();
    let mut adaptive = Adaptive::new(config(), 5, start);
    let mut now = start;
    for _ in 0..6000 {
        now += Duration::from_millis(100);
        adaptive.queue_read(now, true);
        adaptive.busy_sample(now, 5.0);
        assert_eq!(adaptive.decide(now, true, Some(0.97), Some(30.0)), None);
    }
    assert_eq!(adaptive.target(), 5);
}

/// The CPU rule goes by the larger of use and demand, but for threaded workers by use alone: the
/// demand of many threads woken together overstates what they ask of the CPUs.
#[test]
fn threaded_workers_are_held_by_the_cpu_use_not_by_their_threads_summed_waits() {
    use crate::supervisor::reading::Cpu;
    let cpu = |busy, demand| Cpu { busy, demand };
    // (busy, demand, threaded) -> what the rule compares with cpu_max.
    let rows = [
        (Some(0.36), Some(0.79), false, Some(0.79)),
        (Some(0.36), Some(0.79), true, Some(0.36)),
        (Some(0.50), None, false, Some(0.50)),
        (Some(0.90), Some(0.30), true, Some(0.90)),
        (None, Some(0.79), false, None),
        (None, Some(0.79), true, None),
    ];
    for (busy, demand, threaded, want) in rows {
        assert_eq!(
            step::cpu_rule(cpu(busy, demand), threaded),
            want,
            "{busy:?} {demand:?} {threaded}"
        );
    }
}

/// The CPU rule's bound: one worker more scaled in for sync workers, the CPU use for threaded
/// ones, and for lock-bound threaded ones the CPUs saturated (or the user's `cpu_max`).
#[test]
fn lock_bound_threaded_workers_may_grow_until_the_cpus_are_saturated() {
    // (threaded, lock-bound, cpu_max, lock_bound_cpu_max, cpu_busy with 2 workers) -> room.
    let rows = [
        (false, false, 0.8, 0.95, 0.60, false),
        (false, true, 0.8, 0.95, 0.60, false),
        (false, true, 0.8, 0.95, 0.30, true),
        (true, false, 0.8, 0.95, 0.79, true),
        (true, false, 0.8, 0.95, 0.85, false),
        (true, true, 0.8, 0.95, 0.85, true),
        (true, true, 0.8, 0.95, 0.94, true),
        (true, true, 0.8, 0.95, 0.95, false),
        // The user's bound, lower or higher, holds.
        (true, true, 0.5, 0.5, 0.60, false),
        (true, true, 0.99, 0.99, 0.97, true),
    ];
    for (threaded, lock_bound, cpu_max, lock_bound_cpu_max, busy, room) in rows {
        let config = AdaptiveConfig {
            threaded,
            cpu_max,
            lock_bound_cpu_max,
            ..config()
        };
        let mut adaptive = Adaptive::new(config, 2, Instant::now());
        adaptive.lock_bound_read(lock_bound);
        let row = format!("threaded {threaded}, lock-bound {lock_bound}, {cpu_max}, {busy}");
        assert_eq!(adaptive.cpu_room(Some(busy)), room, "{row}");
        assert!(
            !adaptive.cpu_room(None),
            "{row}: no CPU figure yet: no growth"
        );
    }
}

/// A constant load that needs `demand` workers: connections wait whenever there are fewer, and
/// `min(demand, workers)` of them are busy. Returns the counts over `minutes`, a decision every
/// 0.5 s.
fn run(demand: f64, start_with: u32, minutes: u64, fit: f64) -> Vec<u32> {
    let start = Instant::now();
    let mut adaptive = Adaptive::new(config(), start_with, start);
    let mut counts = vec![adaptive.target()];
    let mut now = start;
    for tick in 0..minutes * 600 {
        now += Duration::from_millis(100);
        let workers = f64::from(adaptive.target());
        adaptive.queue_read(now, workers < demand);
        if tick % 5 == 4 {
            adaptive.busy_sample(now, demand.min(workers));
            let cpu = 0.02 * demand.min(workers);
            if let Some(step) = adaptive.decide(now, true, Some(cpu), Some(fit)) {
                counts.push(step.to);
            }
        }
    }
    counts
}

#[test]
fn a_constant_load_climbs_one_way_then_holds() {
    for demand in [0.0, 1.0, 2.0, 2.5, 3.0, 7.3, 12.0, 12.9, 20.0] {
        for start_with in [2, 5, 16] {
            let counts = run(demand, start_with, 20, 100.0);
            let turns = counts
                .windows(3)
                .filter(|w| (w[1] > w[0]) != (w[2] > w[1]))
                .count();
            assert_eq!(turns, 0, "demand {demand}, from {start_with}: {counts:?}");
            let settled = *counts.last().expect("a count");
            let needed = (demand.ceil() as u32).max(2);
            assert!(
                settled == needed || (start_with > needed && settled <= start_with),
                "demand {demand}, from {start_with}: settled at {settled}: {counts:?}"
            );
        }
    }
}

#[test]
fn a_climb_of_twelve_takes_under_a_minute_and_the_way_back_under_two() {
    let counts = run(14.0, 2, 1, 100.0);
    assert_eq!(counts.last(), Some(&14), "{counts:?}");
    // Load gone: back to the floor within two minutes.
    let start = Instant::now();
    let mut adaptive = Adaptive::new(config(), 14, start);
    let mut now = start;
    let mut back_at = None;
    for tick in 0..1200u64 {
        now += Duration::from_millis(100);
        adaptive.queue_read(now, false);
        if tick % 5 == 4 {
            adaptive.busy_sample(now, 0.0);
            adaptive.decide(now, true, Some(0.0), Some(100.0));
        }
        if adaptive.target() == 2 && back_at.is_none() {
            back_at = Some(tick);
        }
    }
    let seconds = back_at.expect("back at the floor") as f64 / 10.0;
    assert!(seconds <= 120.0, "back after {seconds} s");
}

#[test]
fn a_shrink_the_queue_undoes_makes_the_next_one_wait_longer() {
    let start = Instant::now();
    let mut adaptive = Adaptive::new(config(), 3, start);
    let mut now = start;
    // Idle for a minute: one goes.
    for _ in 0..610 {
        now += Duration::from_millis(100);
        adaptive.queue_read(now, false);
        adaptive.busy_sample(now, 1.0);
        adaptive.decide(now, true, Some(0.1), Some(10.0));
    }
    let shrunk = adaptive.target();
    assert_eq!(shrunk, 2);
    adaptive.config.floor = 1;
    assert_eq!(adaptive.shrink_wait(), 60 * SECOND);
    // The queue comes back at once: it grows again, and the next shrink waits 120 s.
    for _ in 0..100 {
        now += Duration::from_millis(100);
        adaptive.queue_read(now, true);
        adaptive.busy_sample(now, 2.0);
        if adaptive.decide(now, true, Some(0.1), Some(10.0)).is_some() {
            break;
        }
    }
    assert_eq!(adaptive.target(), 3);
    assert_eq!(adaptive.shrink_wait(), 120 * SECOND);
}

/// A threaded app (docs/supervisor.md, "Threads") under a constant load of `clients` keep-alive clients, as the
/// controller is fed for threaded workers (decide.rs): a read counts as waiting when a request
/// waits for a thread (in the accept queue or inside a worker) or a worker is bound by its
/// interpreter lock, and busy is busy threads over threads per worker. Each request spends
/// `cpu_share` of its time on a CPU; a worker's threads share one lock, so a worker whose
/// requests ask for more than `GIL_BOUND` of a CPU is lock-bound and uses `gil_use` of one (less
/// than all of it: the lock changes hands at every I/O), and the dyno has `cpus`.
struct Threaded {
    clients: f64,
    threads: f64,
    cpu_share: f64,
    gil_use: f64,
    cpus: f64,
}

impl Threaded {
    /// The counts over `minutes` from `start_with` workers, a decision every 0.5 s.
    fn run(&self, start_with: u32, minutes: u64) -> Vec<u32> {
        let start = Instant::now();
        let threaded = AdaptiveConfig {
            threaded: true,
            ..config()
        };
        let mut adaptive = Adaptive::new(threaded, start_with, start);
        let mut counts = vec![adaptive.target()];
        let mut now = start;
        for tick in 0..minutes * 600 {
            now += Duration::from_millis(100);
            let workers = f64::from(adaptive.target());
            let in_flight = self.clients.min(workers * self.threads);
            let asked = in_flight / workers * self.cpu_share;
            let gil_bound = asked >= crate::supervisor::reading::threads::GIL_BOUND;
            let used = if gil_bound { self.gil_use } else { asked };
            let cpu = (used * workers).min(self.cpus) / self.cpus;
            adaptive.lock_bound_read(gil_bound);
            adaptive.queue_read(now, self.clients > workers * self.threads || gil_bound);
            if tick % 5 == 4 {
                adaptive.busy_sample(now, in_flight / self.threads);
                if let Some(step) = adaptive.decide(now, true, Some(cpu), Some(100.0)) {
                    counts.push(step.to);
                }
            }
        }
        counts
    }
}

fn turns(counts: &[u32]) -> usize {
    counts
        .windows(3)
        .filter(|w| (w[1] > w[0]) != (w[2] > w[1]))
        .count()
}

/// Threads per worker are held; the unit that relieves waiting is a worker of the same threads.
/// Clients, threads, CPU share of a request, a lock-bound worker's CPU, CPUs -> where the count
/// settles from 2.
#[test]
fn threaded_workers_grow_while_waiting_and_not_past_what_the_cpus_carry() {
    let table: [(f64, f64, f64, f64, f64, u32); 7] = [
        // I/O-bound: requests wait for a thread until 64 clients have 64 threads.
        (64.0, 4.0, 0.01, 0.75, 2.0, 16),
        (64.0, 16.0, 0.01, 0.75, 2.0, 4),
        // Lock-bound with CPUs to spare: a worker more (a lock of its own), not threads, until
        // the CPUs are saturated. 10 ms of CPU in 50 ms on 2 CPUs: 2 workers of 32 threads use
        // 75% of them, a third takes the rest; on 4 CPUs, 5 workers use 94%, a sixth the rest.
        (64.0, 32.0, 0.2, 0.75, 2.0, 3),
        (64.0, 16.0, 0.3, 0.75, 4.0, 6),
        // CPU-bound with lock hand-offs (20 ms of CPU, test/bench/threads' /cpu): two workers
        // use 85-93% of 2 CPUs, over `cpu_max`; a third fills the hand-offs, then nothing.
        (64.0, 16.0, 1.0, 0.85, 2.0, 3),
        // CPU-bound: two lock-bound workers fill 2 CPUs; nothing grows.
        (64.0, 16.0, 1.0, 0.98, 2.0, 2),
        // No load: the floor.
        (0.0, 16.0, 0.5, 0.75, 2.0, 2),
    ];
    for (clients, threads, cpu_share, gil_use, cpus, settles) in table {
        let app = Threaded {
            clients,
            threads,
            cpu_share,
            gil_use,
            cpus,
        };
        let counts = app.run(2, 10);
        let row = format!("{clients} clients, {threads} threads, cpu {cpu_share}, {cpus} CPUs");
        assert_eq!(counts.last(), Some(&settles), "{row}: {counts:?}");
        assert_eq!(turns(&counts), 0, "{row}: {counts:?}");
        let most = counts.iter().max().copied().unwrap_or(0);
        if cpu_share >= 0.2 {
            assert!(most <= 2 * cpus as u32 + 1, "{row}: {counts:?}");
        }
    }
}

/// Started above what a constant threaded load needs, the count comes down to it and holds.
#[test]
fn a_constant_threaded_load_comes_down_one_way_and_holds() {
    let app = Threaded {
        clients: 64.0,
        threads: 16.0,
        cpu_share: 0.01,
        gil_use: 0.75,
        cpus: 2.0,
    };
    for start_with in [4, 8, 12] {
        let counts = app.run(start_with, 20);
        assert_eq!(turns(&counts), 0, "from {start_with}: {counts:?}");
        assert!(
            counts.last().is_some_and(|last| (4..=5).contains(last)),
            "from {start_with}: {counts:?}"
        );
    }
}
