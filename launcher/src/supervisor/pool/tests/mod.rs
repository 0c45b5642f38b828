//! The pool's decisions: inputs (spawns, exits, signals, time) -> actions and events.

use super::*;

mod by_signal;
mod lives;
mod rolling;

const SECOND: Duration = Duration::from_secs(1);

fn config(mode: Mode, workers: u32) -> Config {
    // gunicorn's signals when it is delegated to, a copy's in fan-out.
    let server = match mode {
        Mode::Delegate => Server::Gunicorn,
        Mode::FanOut => Server::Uvicorn,
    };
    Config {
        mode,
        server,
        signals: crate::servers::signals(server, mode),
        workers,
        ready_grace: SECOND,
        give_up_after: Duration::from_secs(60),
        graceful_timeout: Duration::from_secs(25),
        ready_timeout: Duration::from_secs(60),
        socket: true,
        on_cedar: false,
        boot_failure_hint: Some("check the app".to_owned()),
    }
}

/// A pool plus a fake clock and fake pids: actions are carried out as the loop would.
struct Harness {
    pool: Pool,
    start: Instant,
    now: Instant,
    next_pid: i32,
    events: Vec<Event>,
}

impl Harness {
    fn new(config: Config) -> Self {
        let now = Instant::now();
        Harness {
            pool: Pool::new(config, now, 7),
            start: now,
            now,
            next_pid: 100,
            events: Vec::new(),
        }
    }

    /// Converges at `seconds` after the start, spawning what the pool asks for.
    fn at(&mut self, seconds: f64) -> Vec<Action> {
        self.now = self.start + Duration::from_secs_f64(seconds);
        let actions = self.pool.converge(self.now);
        self.carry_out(actions)
    }

    fn carry_out(&mut self, actions: Vec<Action>) -> Vec<Action> {
        for action in &actions {
            if let Action::Spawn { slot } = action {
                self.pool.spawned(*slot, self.next_pid, self.now);
                self.next_pid += 1;
            }
        }
        self.events.extend(self.pool.take_events());
        actions
    }

    fn signal(&mut self, signal: Signal) -> Vec<Action> {
        let actions = self.pool.signal(signal, self.now);
        self.carry_out(actions)
    }

    fn exit(&mut self, pid: i32, status: &str) {
        let actions = self.pool.exited(pid, status, None, false, self.now);
        assert!(actions.is_empty(), "nothing left in its group: {actions:?}");
        self.events.extend(self.pool.take_events());
    }

    fn names(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| match (e.get("worker"), e.get("action")) {
                (Some(w), _) => format!("{}:{w}", e.name),
                (None, Some(a)) => format!("{}:{a}", e.name),
                _ => e.name.to_owned(),
            })
            .collect()
    }
}

/// The signals among `actions`, to a process or to its group alike.
fn signals(actions: &[Action]) -> Vec<(i32, Signal)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { pid, signal } | Action::Scale { pid, signal } => Some((*pid, *signal)),
            Action::SignalGroup { pgid, signal } | Action::Retire { pgid, signal } => {
                Some((*pgid, *signal))
            }
            Action::Kill {
                target: KillTarget::Group(pgid),
                ..
            } => Some((*pgid, Signal::SIGKILL)),
            _ => None,
        })
        .collect()
}

/// Whether `actions` kill everything under the launcher, and the event they report it with.
fn kills_all(actions: &[Action]) -> Option<Option<&'static str>> {
    actions.iter().find_map(|a| match a {
        Action::Kill {
            target: KillTarget::All,
            report,
        } => Some(report.as_ref().map(|r| r.name)),
        _ => None,
    })
}

#[test]
fn fan_out_starts_n_workers_and_delegate_one() {
    for (mode, workers, spawned) in [
        (Mode::FanOut, 3, 3),
        (Mode::Delegate, 3, 1),
        (Mode::FanOut, 1, 1),
    ] {
        let mut h = Harness::new(config(mode, workers));
        let actions = h.at(0.0);
        assert_eq!(actions.len(), spawned, "{mode} {workers}");
        assert!(h.at(0.1).is_empty(), "nothing more to do");
        assert_eq!(h.pool.counts(), (spawned, 0, 0));
        h.at(1.0);
        if mode == Mode::Delegate {
            // A delegated server is ready once one of its own workers is, not on its own.
            assert_eq!(h.pool.counts(), (1, 0, 0), "its workers not seen yet");
            h.pool.server_workers_seen(true, false, h.now);
        }
        assert_eq!(
            h.pool.counts(),
            (spawned, spawned, 0),
            "ready after the grace period"
        );
    }
}

#[test]
fn a_delegated_server_that_says_ready_before_its_workers_boot_is_not_ready_yet() {
    let mut h = Harness::new(config(Mode::Delegate, 3));
    h.at(0.0);
    // gunicorn's arbiter says READY=1 as it starts, before any worker has loaded the app.
    h.pool.notified_ready(100, h.now);
    h.at(1.5);
    h.pool.server_workers_seen(false, false, h.now);
    assert_eq!(h.pool.counts().1, 0, "no worker up yet: not ready");
    h.exit(100, "exit:3");
    let events = std::mem::take(&mut h.events);
    assert!(
        events.iter().all(|e| e.name != "worker_ready"),
        "{events:?}"
    );
    let hint = events.iter().find(|e| e.name == "hint");
    assert!(hint.is_some(), "it died before it was ready: {events:?}");
    // The next one's workers come up: ready, by its own word.
    h.at(3.0);
    let server = h.pool.worker_pids()[0];
    h.pool.notified_ready(server, h.now);
    h.pool.server_workers_seen(true, false, h.now);
    let ready = h
        .pool
        .take_events()
        .into_iter()
        .find(|e| e.name == "worker_ready");
    assert_eq!(
        ready
            .and_then(|e| e.get("by").map(str::to_owned))
            .as_deref(),
        Some("notify")
    );
    // A server with no worker process of its own is ready after a while on its own.
    let mut single = Harness::new(config(Mode::Delegate, 1));
    single.at(0.0);
    single.at(5.0);
    single.pool.server_workers_seen(false, true, single.now);
    assert_eq!(single.pool.counts().1, 1);
}

#[test]
fn readiness_by_notify_comes_before_the_grace_period() {
    let mut h = Harness::new(config(Mode::FanOut, 2));
    h.at(0.0);
    h.pool.notified_ready(100, h.now);
    assert_eq!(h.pool.counts().1, 1);
    h.events.extend(h.pool.take_events());
    assert_eq!(h.events.last().and_then(|e| e.get("by")), Some("notify"));
}

#[test]
fn fan_out_stops_whole_groups_and_delegate_the_server_alone() {
    for (mode, group) in [(Mode::FanOut, true), (Mode::Delegate, false)] {
        let mut h = Harness::new(config(mode, 1));
        h.at(0.0);
        let stop = h.signal(Signal::SIGTERM);
        let expected = if group {
            Action::SignalGroup {
                pgid: 100,
                signal: Signal::SIGTERM,
            }
        } else {
            Action::Signal {
                pid: 100,
                signal: Signal::SIGTERM,
            }
        };
        assert_eq!(stop[1..], [expected], "{mode}");
        // Forwarded as they are, to the first process only: a shell would die of them.
        let usr1 = h.signal(Signal::SIGUSR1);
        assert!(usr1.is_empty(), "not while stopping: {usr1:?}");
    }
    let mut h = Harness::new(config(Mode::FanOut, 1));
    h.at(0.0);
    assert_eq!(
        h.signal(Signal::SIGUSR1),
        vec![Action::Signal {
            pid: 100,
            signal: Signal::SIGUSR1
        }]
    );
}

#[test]
fn a_fan_out_worker_stopped_while_the_others_serve_is_retired() {
    let mut h = Harness::new(config(Mode::FanOut, 2));
    h.at(0.0);
    h.at(1.0);
    h.signal(Signal::SIGTTOU);
    let retire = Action::Retire {
        pgid: 101,
        signal: Signal::SIGTERM,
    };
    assert!(h.at(1.1).contains(&retire), "out of the accept set first");
    // A delegated server's workers are its own to stop. (At shutdown fan-out workers are
    // signalled at once: fan_out_stops_whole_groups_....)
    let mut delegate = Harness::new(config(Mode::Delegate, 2));
    delegate.at(0.0);
    let stop = delegate.pool.resize(1, delegate.now);
    assert!(
        stop.iter().all(|a| !matches!(a, Action::Retire { .. })),
        "a delegated server stops its own workers: {stop:?}"
    );
}

#[test]
fn what_a_stopped_worker_leaves_in_its_group_is_killed_after_the_graceful_timeout() {
    let mut h = Harness::new(config(Mode::FanOut, 2));
    h.at(0.0);
    h.at(1.0);
    h.signal(Signal::SIGTTOU);
    assert_eq!(signals(&h.at(1.1)), vec![(101, Signal::SIGTERM)]);
    // The shell exits on TERM; its server, in the same group, does not.
    let actions = h.pool.exited(101, "signal:15", None, true, h.now);
    assert!(actions.is_empty(), "the group had its TERM: {actions:?}");
    assert_eq!(h.pool.lingering_groups(), vec![101]);
    assert!(signals(&h.at(25.0)).is_empty());
    assert_eq!(signals(&h.at(26.1)), vec![(101, Signal::SIGKILL)]);
    assert!(signals(&h.at(27.0)).is_empty(), "killed once");
    h.pool.group_gone(101);
    assert!(h.pool.lingering_groups().is_empty());
}

#[test]
fn a_worker_that_dies_leaving_its_server_behind_has_the_server_stopped() {
    let mut h = Harness::new(config(Mode::FanOut, 1));
    h.at(0.0);
    h.at(1.0);
    let actions = h.pool.exited(100, "signal:9", None, true, h.now);
    assert_eq!(
        actions,
        vec![Action::SignalGroup {
            pgid: 100,
            signal: Signal::SIGTERM
        }]
    );
    h.events.extend(h.pool.take_events());
    let stop = h
        .events
        .iter()
        .find(|e| e.name == "worker_stop")
        .expect("stop");
    assert_eq!(stop.get("reason"), Some("left_behind"));
    assert_eq!(stop.get("group"), Some("100"));
    assert_eq!(h.at(1.2).len(), 1, "the slot is respawned meanwhile");
    assert_eq!(signals(&h.at(26.0)), vec![(100, Signal::SIGKILL)]);
}

#[test]
fn a_thousand_workers_start_a_batch_per_turn() {
    let mut h = Harness::new(config(Mode::FanOut, 20));
    let mut batches = Vec::new();
    for turn in 0..5 {
        batches.push(h.at(0.001 * f64::from(turn)).len());
        let due = h.pool.next_wakeup(h.now).expect("wakeup");
        if h.pool.counts().0 < 20 {
            assert_eq!(due, h.now, "more to start: the next turn is at once");
        }
    }
    assert_eq!(batches, [SPAWN_BATCH, SPAWN_BATCH, 4, 0, 0]);
    let mut h = Harness::new(config(Mode::FanOut, 1024));
    h.at(0.0);
    h.signal(Signal::SIGTERM);
    assert!(h.at(0.01).is_empty(), "no more starts once stopping");
    assert_eq!(h.pool.counts().0, 0, "the started ones are stopping");
}
