//! What the loop reports of itself: the `sample#` line, the state file for `launcher size`, and
//! the lines for adopted processes that ended and for what would not die.

use std::time::Instant;

use super::{Loop, ADOPTED_NAMED, STATE_INTERVAL};
use crate::state;
use crate::supervisor::log::Event;
use crate::supervisor::{figures, kill};

impl Loop {
    pub(super) fn sample(&mut self, now: Instant) {
        let (Some(interval), Some(due)) = (self.sample_interval, self.next_sample) else {
            return;
        };
        if now < due {
            return;
        }
        self.next_sample = Some(now + interval);
        let load = self
            .reader
            .load
            .sample(&self.reader.snapshot, now, interval);
        let pressure = self.reader.pressure_since(now);
        let figures = self.figures();
        figures::sample(&self.pool, &figures, &load, pressure.as_ref(), &self.reader).emit();
    }

    pub(super) fn figures(&self) -> figures::Figures<'_> {
        figures::Figures {
            mode: self.mode,
            reading: self.last.as_ref(),
            busy: self.reader.busy,
            fit: self.control.fit(),
            sizing: self.control.sizing(),
            limits: self.control.config.limits,
            guard: self.control.config.guard.is_some(),
            recycles: self.control.recycles,
            oom_kills: self.control.oom_total(),
            threads: self.reader.config.threads,
            waiting: self.reader.inside_last.waiting,
            threads_busy: self.reader.inside_last.threads_busy,
            gil_bound: self.reader.inside_last.gil_bound,
            hint: self.waiting_hint.as_ref().and_then(|h| h.said()),
        }
    }

    pub(super) fn write_state(&mut self) {
        let Some(dir) = self.state_dir.clone() else {
            return;
        };
        let (snapshot, load) = (&self.reader.snapshot, &mut self.reader.load);
        let figures = load.state(snapshot, Instant::now(), STATE_INTERVAL);
        let capacity = self.reader.load.capacity;
        let written = figures::state(
            &self.figures(),
            &figures,
            capacity,
            &self.reader,
            &self.scope,
        );
        // Best effort: a read-only /tmp costs `launcher size` its figures, not the dyno its app.
        if let Err(err) = state::write(&dir, &written) {
            if !std::mem::replace(&mut self.state_failed, true) {
                let message = format!(
                    "cannot write the state file in {}: {err}; launcher size will not show this supervisor's figures",
                    dir.display()
                );
                Event::warn("state").with("message", message).emit();
            }
        }
    }
}

/// One line for the adopted processes that ended in a turn: how many, the first few, and how
/// they ended.
pub(super) fn adopted_exits(adopted: &[(i32, String)]) -> Event {
    let mut named: Vec<String> = adopted
        .iter()
        .take(ADOPTED_NAMED)
        .map(|(pid, _)| pid.to_string())
        .collect();
    if adopted.len() > ADOPTED_NAMED {
        named.push("...".to_owned());
    }
    let mut statuses: Vec<(&str, usize)> = Vec::new();
    for (_, status) in adopted {
        match statuses.iter_mut().find(|(s, _)| s == status) {
            Some((_, n)) => *n += 1,
            None => statuses.push((status, 1)),
        }
    }
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{n}x{s}")).collect();
    Event::info("adopted_exit")
        .with("count", adopted.len())
        .with("pids", named.join(","))
        .with("status", statuses.join(","))
}

/// At the end of the wait after the final SIGKILL: what is still there, named.
pub(super) fn report_stuck() {
    let left = kill::left();
    let named: Vec<String> = left
        .iter()
        .take(ADOPTED_NAMED)
        .map(|s| format!("{}:{}:{}", s.pid, s.name, s.state))
        .collect();
    Event::error("stuck")
        .with("count", left.len())
        .with("processes", named.join(","))
        .with(
            "reason",
            "still there after SIGKILL (state D: in a system call that cannot be interrupted); not waited for",
        )
        .emit();
}
