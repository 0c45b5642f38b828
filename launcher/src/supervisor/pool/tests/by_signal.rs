//! What each signal does to the pool: scaling, forwarding, shutdowns.

use super::*;

#[test]
fn ttin_and_ttou_scale_by_one_and_never_below_one() {
    let mut h = Harness::new(config(Mode::FanOut, 2));
    h.at(0.0);
    h.signal(Signal::SIGTTIN);
    assert_eq!(h.at(0.5), vec![Action::Spawn { slot: 3 }]);
    h.signal(Signal::SIGTTOU);
    assert_eq!(
        signals(&h.at(0.6)),
        vec![(102, Signal::SIGTERM)],
        "the newest goes"
    );
    h.signal(Signal::SIGTTOU);
    h.signal(Signal::SIGTTOU);
    assert_eq!(signals(&h.at(0.7)), vec![(101, Signal::SIGTERM)]);
    assert_eq!(h.pool.counts().0, 1);
}

#[test]
fn delegate_forwards_hup_ttin_ttou() {
    let mut h = Harness::new(config(Mode::Delegate, 4));
    h.at(0.0);
    for signal in [
        Signal::SIGHUP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGUSR1,
    ] {
        assert_eq!(signals(&h.signal(signal)), vec![(100, signal)], "{signal}");
        assert_eq!(
            h.events.last().and_then(|e| e.get("action")),
            Some("forwarded")
        );
    }
    assert!(h.at(1.0).is_empty());
}

#[test]
fn term_is_forwarded_once_elsewhere_and_not_at_all_on_cedar() {
    for (on_cedar, forwarded) in [(false, 2), (true, 0)] {
        let mut h = Harness::new(Config {
            on_cedar,
            ..config(Mode::FanOut, 2)
        });
        h.at(0.0);
        let first = h.signal(Signal::SIGTERM);
        assert_eq!(first[0], Action::CloseListener);
        assert_eq!(signals(&first).len(), forwarded, "cedar={on_cedar}");
        assert!(
            h.signal(Signal::SIGTERM).is_empty(),
            "a second TERM changes nothing"
        );
        assert!(h.at(5.0).is_empty(), "no respawn while stopping");
        h.exit(100, "exit:0");
        assert!(h.at(6.0).is_empty(), "not even for a worker that exits");
        let deadline = h.at(25.0);
        assert_eq!(
            kills_all(&deadline),
            Some(Some("shutdown_timeout")),
            "the deadline"
        );
        assert_eq!(kills_all(&h.at(25.05)), None, "not again at once");
        assert_eq!(
            kills_all(&h.at(25.1)),
            Some(Some("sweep")),
            "again after the sweep interval"
        );
        assert_eq!(
            h.pool.abandon_at(),
            Some(h.start + Duration::from_secs(27)),
            "given up waiting 2 s after the deadline"
        );
        assert_eq!(h.pool.exit_code(), Some(0));
        assert_eq!(
            h.names()[2..4],
            ["signal:shutdown".to_owned(), "shutdown".to_owned()]
        );
    }
}

#[test]
fn int_is_fast_and_a_second_one_kills() {
    for (mode, forwarded) in [
        (Mode::FanOut, Signal::SIGQUIT),
        (Mode::Delegate, Signal::SIGINT),
    ] {
        let mut h = Harness::new(config(mode, 2));
        h.at(0.0);
        let first = h.signal(Signal::SIGINT);
        assert!(
            signals(&first).iter().all(|(_, s)| *s == forwarded),
            "{mode}"
        );
        assert!(!signals(&first).is_empty());
        assert_eq!(kills_all(&h.signal(Signal::SIGINT)), Some(None));
        assert!(h.pool.abandon_at().is_some(), "the stuck wait starts");
    }
}

#[test]
fn term_during_a_rolling_restart_stops_the_new_workers_too() {
    let mut h = Harness::new(config(Mode::FanOut, 1));
    h.at(0.0);
    h.at(1.0);
    h.signal(Signal::SIGHUP);
    h.at(1.5);
    let stop = h.signal(Signal::SIGTERM);
    assert_eq!(
        signals(&stop),
        vec![(100, Signal::SIGTERM), (101, Signal::SIGTERM)]
    );
    assert!(h.at(3.0).is_empty(), "no further step");
}

#[test]
fn int_during_a_graceful_shutdown_keeps_its_deadline() {
    let mut h = Harness::new(config(Mode::FanOut, 1));
    h.at(0.0);
    h.signal(Signal::SIGTERM);
    h.at(20.0);
    assert_eq!(
        signals(&h.signal(Signal::SIGINT)),
        vec![(100, Signal::SIGQUIT)]
    );
    assert_eq!(
        kills_all(&h.at(25.0)),
        Some(Some("shutdown_timeout")),
        "the TERM's deadline, not 20 + 25 s"
    );
}

#[test]
fn a_delegated_servers_count_follows_scaling_reloads_and_restarts() {
    // (what happens, the count the pool holds after it)
    let mut h = Harness::new(config(Mode::Delegate, 3));
    h.at(0.0);
    let mut steps: Vec<(&str, u32)> = vec![("started", h.pool.wanted())];
    h.signal(Signal::SIGTTIN);
    steps.push(("TTIN", h.pool.wanted()));
    h.signal(Signal::SIGTTIN);
    steps.push(("TTIN again", h.pool.wanted()));
    for _ in 0..9 {
        h.signal(Signal::SIGTTOU);
    }
    steps.push(("TTOU nine times", h.pool.wanted()));
    h.signal(Signal::SIGTTIN);
    h.signal(Signal::SIGHUP);
    steps.push(("HUP: gunicorn reads its config again", h.pool.wanted()));
    let resized = h.pool.resize(5, h.now);
    steps.push(("resized to 5", h.pool.wanted()));
    assert_eq!(
        signals(&resized),
        vec![(100, Signal::SIGTTIN)],
        "one signal per worker of the change: the first at once"
    );
    assert!(signals(&h.at(0.5)).is_empty(), "not the second yet");
    assert_eq!(
        signals(&h.at(1.0)),
        vec![(100, Signal::SIGTTIN)],
        "the second once the first is handled, not merged into it"
    );
    assert!(signals(&h.at(2.5)).is_empty(), "two in all");
    h.exit(100, "signal:9");
    h.at(5.0);
    steps.push(("a new server", h.pool.wanted()));
    let want = [
        ("started", 3),
        ("TTIN", 4),
        ("TTIN again", 5),
        ("TTOU nine times", 1),
        ("HUP: gunicorn reads its config again", 3),
        ("resized to 5", 5),
        ("a new server", 3),
    ];
    assert_eq!(steps, want);
}

#[test]
fn ttin_stops_at_the_cap_in_both_modes() {
    for mode in [Mode::FanOut, Mode::Delegate] {
        let mut h = Harness::new(config(mode, 2));
        h.at(0.0);
        h.pool.set_cap(Cap {
            workers: 3,
            why: "one more worker does not fit in memory",
        });
        h.signal(Signal::SIGTTIN);
        assert_eq!(h.pool.wanted(), 3, "{mode:?}: under the cap");
        let capped = h.signal(Signal::SIGTTIN);
        assert!(signals(&capped).is_empty(), "{mode:?}: nothing sent");
        assert_eq!(h.pool.wanted(), 3, "{mode:?}: held at the cap");
        let line = h.events.last().expect("a signal line");
        assert_eq!(line.get("action"), Some("capped"), "{mode:?}");
        assert_eq!(line.get("workers"), Some("3"));
        assert_eq!(
            line.get("reason"),
            Some("one more worker does not fit in memory")
        );
        h.signal(Signal::SIGTTOU);
        assert_eq!(h.pool.wanted(), 2, "{mode:?}: TTOU is never capped");
    }
}

/// The net change the scaling signals among `actions` ask of gunicorn.
fn scaled_by(actions: &[Action]) -> i32 {
    let steps = signals(actions)
        .into_iter()
        .map(|(_, signal)| match signal {
            Signal::SIGTTIN => 1,
            Signal::SIGTTOU => -1,
            _ => 0,
        });
    steps.sum()
}

#[test]
fn a_count_changed_again_before_its_signals_are_all_sent_is_still_reached() {
    let mut h = Harness::new(config(Mode::Delegate, 2));
    h.at(0.0);
    let mut sent = scaled_by(&h.pool.resize(5, h.now));
    h.now += Duration::from_millis(500);
    sent += scaled_by(&h.pool.resize(4, h.now));
    for tenth in 6..60 {
        sent += scaled_by(&h.at(f64::from(tenth) / 10.0));
    }
    assert_eq!(
        (sent, h.pool.wanted()),
        (2, 4),
        "2 -> 5 -> 4: two TTINs in all"
    );
}

#[test]
fn a_scaling_signal_still_pending_at_the_server_holds_the_next_back_saying_so_once() {
    let mut h = Harness::new(config(Mode::Delegate, 2));
    h.at(0.0);
    assert_eq!(scaled_by(&h.pool.resize(4, h.now)), 1, "the first at once");
    let mut sent = 1;
    // The loop finds the first TTIN still pending at 1 s and at 2 s: the server has not run.
    for held_at in [1.0, 2.0] {
        assert_eq!(scaled_by(&h.at(held_at)), 1, "the second, tried");
        h.pool.scale_held(Signal::SIGTTIN, h.now);
        h.events.extend(h.pool.take_events());
        assert_eq!(scaled_by(&h.at(held_at + 0.5)), 0, "not again within 1 s");
    }
    for tenth in 30..60 {
        sent += scaled_by(&h.at(f64::from(tenth) / 10.0));
    }
    assert_eq!(
        (sent, h.pool.wanted()),
        (2, 4),
        "sent once the first was taken"
    );
    let held: Vec<_> = h.events.iter().filter(|e| e.name == "scale_held").collect();
    assert_eq!(held.len(), 1, "said once: {held:?}");
    assert_eq!(held[0].get("signal"), Some("TTIN"));
    assert_eq!(held[0].get("workers"), Some("4"));
}
