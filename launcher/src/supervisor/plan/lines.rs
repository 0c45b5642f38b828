//! What a plan says in the log before the first worker (the `start` and `signals` lines, the
//! warnings about a pinned count or a port the server binds itself, the rewritten arguments), and
//! what it says when a worker dies before it is ready.

use nix::sys::signal::Signal;

use super::Plan;
use crate::servers::{self, Mode};
use crate::supervisor::log::Event;
use crate::supervisor::net;

impl Plan {
    pub fn log_start(&self, port: Option<u16>, listener: Option<&net::Listener>) {
        let mut start = Event::info("start")
            .with("mode", self.mode)
            .with("server", self.server)
            .with("workers", self.workers)
            .with("set_by", &self.set_by);
        if let Some(pin) = &self.pinned {
            start = start.with("pinned", &pin.setting);
        }
        if let Some(threads) = self.threads {
            start = start.with("threads", threads);
        }
        if let Some((connections, _)) = &self.capped {
            start = start.with("worker_connections", connections);
        }
        start = start
            .with("mode_reason", &self.mode_reason)
            .with("pid", std::process::id());
        start = match (port, listener) {
            (Some(port), Some(listener)) => {
                let backlog = net::accept_queue(&listener.fd).map(|(_, backlog)| backlog);
                start
                    .with("port", port)
                    .with("listen", &listener.address)
                    .with("backlog", backlog.unwrap_or(net::BACKLOG as u32))
            }
            _ => start.with("port", "none"),
        };
        start.emit();
        if let Some(pin) = &self.pinned {
            let runs = match pin.workers() {
                Some(n) => format!("the server runs {n} workers"),
                None => "the server decides its worker count".to_owned(),
            };
            let message = format!(
                "{} pins the worker count ({}): {runs}, not WEB_CONCURRENCY's {}; remove it to let \
                 each dyno's size decide",
                pin.place, pin.setting, self.sized
            );
            Event::warn("config").with("message", message).emit();
        }
        if self.mode == Mode::Delegate {
            self.log_signals();
        }
        if let Some(listen) = &self.binds_itself {
            let message = format!(
                "the server's config binds a port itself ({listen}) besides the launcher's \
                 socket on $PORT: remove that line, the launcher passes the socket in LISTEN_FDS"
            );
            Event::warn("hint").with("message", message).emit();
        }
        if !self.rewrite.added.is_empty() {
            let mut event = Event::info("args_rewritten");
            if !self.rewrite.removed.is_empty() {
                event = event.with("removed", self.rewrite.removed.join(" "));
            }
            event.with("added", self.rewrite.added.join(" ")).emit();
        }
    }

    /// What each signal becomes for a delegated server, from the behaviour table.
    fn log_signals(&self) {
        let name = |s: Signal| s.as_str().trim_start_matches("SIG");
        let signals = &self.signals;
        let mut event = Event::info("signals")
            .with("graceful", name(signals.graceful))
            .with("fast", name(signals.fast))
            .with("restart", signals.restart.map_or("HUP", name));
        if let Some(why) = &self.restart_reason {
            event = event.with("restart_reason", why);
        }
        event = match signals.scale {
            Some((more, fewer)) => event.with("scale", format!("{}/{}", name(more), name(fewer))),
            None => event.with("scale", "none"),
        };
        let blocked: Vec<&str> = signals.blocked.iter().map(|(s, _)| name(*s)).collect();
        event
            .with("stop_worker", name(signals.stop_worker))
            .with(
                "blocked",
                if blocked.is_empty() {
                    "none".to_owned()
                } else {
                    blocked.join(",")
                },
            )
            .emit();
    }

    /// What to check when a worker dies before it is ready: in fan-out, an app that binds $PORT
    /// itself fails because the launcher holds the port.
    pub fn boot_failure_hint(&self, port: Option<u16>) -> Option<String> {
        let told = !self.rewrite.added.is_empty();
        let node = self.server == servers::Server::Node || self.runs_node_tools();
        Some(match (port, self.mode, told) {
            (Some(port), Mode::FanOut, _) if node => format!(
                "a worker exited before it was ready. A Node app that binds port {port} itself \
                 cannot share the launcher's socket: listen on the inherited one instead, \
                 {}, and run it as `launcher run -- node server.js` (npm or yarn \
                 start it as a child the launcher cannot stop whole). Otherwise see the app's \
                 own error above.",
                servers::NODE_LISTEN
            ),
            (Some(port), Mode::FanOut, false) => format!(
                "a worker exited before it was ready. If the app binds port {port} itself it \
                 cannot share the launcher's socket: make it use the inherited socket (fd 3, \
                 LISTEN_FDS as in systemd), pass {{fd}} in the command where it takes a file \
                 descriptor, or run it without `launcher run`. Otherwise see the app's own error above."
            ),
            _ => "a worker exited before it was ready; the app's own error is above".to_owned(),
        })
    }

    /// Whether the command is npm, npx, yarn or pnpm (which start Node apps).
    fn runs_node_tools(&self) -> bool {
        let program = self.argv.first().map(|a| a.to_string_lossy().into_owned());
        let base = program.as_deref().and_then(|p| p.rsplit('/').next());
        base.is_some_and(|b| ["npm", "npx", "yarn", "pnpm"].contains(&b))
    }
}
