//! Rolling restarts: one worker at a time, each replaced once its replacement serves.

use super::*;

#[test]
fn rolling_restart_replaces_each_worker_after_its_replacement_serves() {
    let mut h = Harness::new(config(Mode::FanOut, 2));
    h.at(0.0);
    h.at(1.0);
    h.events.clear();
    assert!(h.signal(Signal::SIGHUP).is_empty());
    assert_eq!(h.at(2.0), vec![Action::Spawn { slot: 3 }]);
    assert_eq!(h.pool.awaiting_serving(), Some(102));
    assert!(
        signals(&h.at(2.5)).is_empty(),
        "the new worker is not ready yet"
    );
    assert!(
        signals(&h.at(3.5)).is_empty(),
        "ready by grace, but not seen to serve: the old worker stays"
    );
    h.pool.seen_serving(102, h.now);
    let step = h.at(3.6);
    assert_eq!(signals(&step), vec![(100, Signal::SIGTERM)]);
    assert!(step.contains(&Action::Spawn { slot: 4 }));
    h.exit(100, "exit:0");
    h.pool.notified_ready(103, h.now);
    assert_eq!(signals(&h.at(4.0)), vec![(101, Signal::SIGTERM)]);
    h.exit(101, "exit:0");
    h.at(4.1);
    assert_eq!(
        h.names(),
        [
            "signal:rolling_restart",
            "worker_spawn:3",
            "worker_ready:3",
            "worker_stop:1",
            "worker_spawn:4",
            "worker_exit:1",
            "worker_ready:4",
            "worker_stop:2",
            "worker_exit:2",
            "restart_done",
        ]
    );
    let ready: Vec<&str> = h
        .events
        .iter()
        .filter(|e| e.name == "worker_ready")
        .filter_map(|e| e.get("by"))
        .collect();
    assert_eq!(
        ready,
        ["grace", "notify"],
        "worker 3 was ready by grace first"
    );
    assert_eq!(
        h.pool.counts(),
        (2, 2, 0),
        "no restart counted, two workers"
    );
    assert!(h.events.iter().all(|e| e.get("restart_in_s").is_none()));
}

#[test]
fn a_rolling_restart_whose_new_worker_never_serves_fails_and_keeps_the_old_workers() {
    let mut h = Harness::new(Config {
        ready_timeout: Duration::from_secs(5),
        ..config(Mode::FanOut, 2)
    });
    h.at(0.0);
    h.at(1.0);
    h.signal(Signal::SIGHUP);
    h.at(2.0);
    for t in [3.0, 4.0, 6.9] {
        assert!(
            signals(&h.at(t)).is_empty(),
            "no old worker stopped at {t} s"
        );
    }
    let due = h.pool.next_wakeup(h.now).expect("a wakeup");
    assert!(
        due <= h.start + Duration::from_secs(7),
        "the timeout is a wakeup"
    );
    let failed = h.at(7.0);
    assert_eq!(
        signals(&failed),
        vec![(102, Signal::SIGTERM)],
        "the new one goes"
    );
    assert!(
        h.names().contains(&"restart_failed:3".to_owned()),
        "{:?}",
        h.names()
    );
    h.exit(102, "signal:15");
    assert!(h.at(8.0).is_empty(), "nothing respawned, no further step");
    assert_eq!(h.pool.counts().0, 2, "the two old workers serve on");
    assert!(!h.names().contains(&"restart_done".to_owned()));
}

#[test]
fn without_a_socket_readiness_by_grace_moves_a_rolling_restart_on() {
    let mut h = Harness::new(Config {
        socket: false,
        ..config(Mode::FanOut, 1)
    });
    h.at(0.0);
    h.at(1.0);
    h.signal(Signal::SIGHUP);
    h.at(1.1);
    assert_eq!(h.pool.awaiting_serving(), None, "nothing to look for");
    assert_eq!(signals(&h.at(2.1)), vec![(100, Signal::SIGTERM)]);
}
