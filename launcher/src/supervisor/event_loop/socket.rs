//! The shared socket in each turn: its accept queue read on its interval (adaptive sizing counts
//! each read), the socket made to listen again if a process that shares it stopped it, and a
//! rolling restart's new worker looked at for waiting on it.

use std::time::Instant;

use super::{Loop, SERVING_FIRST, SERVING_MOST};
use crate::supervisor::log::Event;
use crate::supervisor::net;
use crate::supervisor::reading::serving;

impl Loop {
    /// The accept queue, on its interval; adaptive sizing counts each read. A socket that left
    /// LISTEN takes no connection for any worker: it is made to listen again at once.
    pub(super) fn read_queue(&mut self, now: Instant) {
        let Some(listener) = &self.listener else {
            return;
        };
        match self.reader.load.read_queue(listener, now) {
            Some(Ok(read)) => {
                self.control.queue_read(now, read.queued > 0);
                if let Some(hint) = &mut self.waiting_hint {
                    hint.queue_read(now, read.queued > 0);
                }
            }
            Some(Err(state)) => self.listener_lost(state, now),
            None => {}
        }
    }

    /// The shared socket left LISTEN: some process that shares it called `shutdown()` on it (a
    /// SIGTERM handler waking a thread blocked in `accept()` does), which stops it for every
    /// process. It is bound still, so it listens again; if it cannot, the dyno cannot serve and
    /// the launcher exits 1 for the platform to restart it.
    pub(super) fn listener_lost(&mut self, state: net::NotListening, now: Instant) {
        let Some(listener) = &self.listener else {
            return;
        };
        let again = net::listen_again(listener);
        let event = Event::error("listener_lost")
            .with("state", state.name())
            .with(
                "cause",
                "a process sharing the socket called shutdown() on it (a SIGTERM handler that \
                 wakes a thread blocked in accept() does): no worker got a connection since",
            );
        let event = match again {
            Ok(()) => event
                .with("action", "listen_again")
                .with("result", "listening"),
            Err(err) => event
                .with("action", "listen_again")
                .with("result", "failed")
                .with("error", err.desc()),
        };
        event.emit();
        if again.is_err() {
            let actions = self.pool.fail(
                "the shared socket stopped listening and cannot listen again",
                now,
            );
            self.carry_out(actions);
        }
    }

    /// A rolling restart's new worker that has not sent `READY=1`: is it waiting on the socket?
    /// Looked at at once, then 0.1 s later, then less and less often, down to once a second.
    pub(super) fn check_serving(&mut self, now: Instant) {
        let Some(pid) = self.pool.awaiting_serving() else {
            return;
        };
        let (next, interval) = match self.serving_check {
            Some((looked, next, interval)) if looked == pid => (next, interval),
            _ => (now, SERVING_FIRST),
        };
        if now < next {
            self.serving_check = Some((pid, next, interval));
            return;
        }
        let later = (interval * 2).min(SERVING_MOST);
        self.serving_check = Some((pid, now + interval, later));
        let inode = self.listener.as_ref().and_then(|l| l.inode);
        let proc_dir = self.reader.proc_dir();
        if inode.is_some_and(|inode| serving::waits_on(&proc_dir, pid, inode)) {
            self.pool.seen_serving(pid, now);
        }
    }
}
