//! A worker's life: a crash loop backing off and giving up, restarts after a ready worker,
//! recycles, measured sizing's target and an OOM kill named.

use super::*;

#[test]
fn a_crash_loop_backs_off_and_gives_up() {
    let mut h = Harness::new(config(Mode::FanOut, 1));
    h.at(0.0);
    let mut delays = Vec::new();
    let mut t = 0.0;
    while h.pool.exit_code().is_none() {
        let pid = *h.pool.worker_pids().first().expect("a worker");
        t += 0.05;
        h.now = h.start + Duration::from_secs_f64(t);
        h.exit(pid, "exit:1");
        let delay: f64 = h
            .events
            .last()
            .and_then(|e| e.get("restart_in_s"))
            .expect("delay")
            .parse()
            .expect("number");
        delays.push(delay);
        // Sleep until the respawn is due, as the loop does.
        let wakeup = h.pool.next_wakeup(h.now).expect("a wakeup");
        t = wakeup.duration_since(h.start).as_secs_f64();
        let actions = h.at(t);
        if h.pool.exit_code().is_some() {
            assert_eq!(actions[0], Action::CloseListener);
            assert_eq!(kills_all(&actions), Some(None), "{actions:?}");
        }
    }
    assert_eq!(h.pool.exit_code(), Some(1));
    let hints = h.events.iter().filter(|e| e.name == "hint").count();
    assert_eq!(hints, 1, "the hint is logged once");
    assert!(
        delays.windows(2).take(6).all(|w| w[1] > w[0]),
        "growing: {delays:?}"
    );
    assert!(delays.iter().all(|d| *d <= 12.5), "capped: {delays:?}");
    let give_up = h
        .events
        .iter()
        .find(|e| e.name == "give_up")
        .expect("give_up");
    assert!(
        give_up.get("last").is_some_and(|l| l.contains("exit:1")),
        "{give_up:?}"
    );
}

#[test]
fn a_worker_that_was_ready_restarts_at_once_and_resets_the_count() {
    let mut h = Harness::new(config(Mode::FanOut, 1));
    h.at(0.0);
    h.at(5.0);
    h.exit(100, "signal:9");
    let exit = h.events.last().expect("exit");
    assert_eq!(exit.get("failures"), Some("1"));
    assert!(exit
        .get("restart_in_s")
        .is_some_and(|d| d.parse::<f64>().is_ok_and(|d| d <= 0.125)));
    assert_eq!(h.at(5.2).len(), 1, "respawned in the same slot");
    assert_eq!(h.names().last().map(String::as_str), Some("worker_spawn:1"));
    assert_eq!(h.pool.counts().2, 1, "one restart");
}

#[test]
fn a_worker_that_dies_soon_after_its_grace_period_keeps_backing_off() {
    let mut h = Harness::new(config(Mode::FanOut, 1));
    h.at(0.0);
    let mut t = 0.0;
    let mut delays = Vec::new();
    for _ in 0..5 {
        t += 2.0;
        h.at(t - 0.5);
        let pid = *h.pool.worker_pids().first().expect("a worker");
        h.now = h.start + Duration::from_secs_f64(t);
        h.exit(pid, "exit:1");
        let exit = h.events.last().expect("exit");
        delays.push(exit.get("failures").unwrap_or_default().to_owned());
        t = h
            .pool
            .next_wakeup(h.now)
            .expect("respawn")
            .duration_since(h.start)
            .as_secs_f64();
        h.at(t);
    }
    assert_eq!(
        delays,
        ["1", "2", "3", "4", "5"],
        "ready by grace, but not stable"
    );
}

#[test]
fn a_recycle_stops_the_worker_and_starts_its_replacement_at_once() {
    let mut h = Harness::new(config(Mode::FanOut, 2));
    h.at(0.0);
    h.at(1.0);
    let actions = h.pool.recycle(100, h.now);
    let actions = h.carry_out(actions);
    assert_eq!(signals(&actions), vec![(100, Signal::SIGTERM)]);
    assert!(actions.contains(&Action::Spawn { slot: 3 }), "{actions:?}");
    assert_eq!(
        h.pool.counts(),
        (2, 1, 0),
        "the replacement counts, the old one not"
    );
    assert!(h.pool.recycle(100, h.now).is_empty(), "once");
    // A worker that ignores TERM gets SIGKILL after the graceful timeout (25 s).
    assert!(signals(&h.at(25.9)).is_empty());
    let kill = h.at(26.0);
    assert_eq!(signals(&kill), vec![(100, Signal::SIGKILL)]);
    let Some(Action::Kill {
        report: Some(report),
        ..
    }) = kill.first()
    else {
        panic!("{kill:?}");
    };
    assert_eq!(
        (report.name, report.get("worker")),
        ("worker_kill", Some("1"))
    );
    assert!(signals(&h.at(27.0)).is_empty(), "killed once");
    h.exit(100, "signal:9");
    let exit = h.events.last().expect("exit line");
    assert_eq!(exit.level, Level::Info, "asked for: not a crash");
    assert_eq!(h.pool.counts().2, 0, "not a restart");
}

#[test]
fn measured_sizing_moves_the_target_and_an_oom_kill_is_named() {
    let mut h = Harness::new(config(Mode::FanOut, 2));
    h.at(0.0);
    assert!(
        h.pool.resize(3, h.now).is_empty(),
        "fan-out: the pool converges to it"
    );
    assert_eq!(h.at(1.0).len(), 1, "one more worker");
    h.pool.resize(0, h.now);
    assert_eq!(h.pool.target(), 1, "never below one");
    h.pool
        .exited(101, "signal:9", Some("oom_kill"), false, h.now);
    let exit = h.pool.take_events().pop().expect("exit line");
    assert_eq!(exit.get("cause"), Some("oom_kill"));
    assert_eq!(exit.level, Level::Warn);
}
