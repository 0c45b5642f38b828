//! What puma's and unicorn's config files decide for the launcher: whether puma can do a phased
//! restart, how many threads a puma worker runs, and whether a unicorn config reads
//! `WEB_CONCURRENCY` or binds a port itself. Text scanning only: nothing runs the app's Ruby.

use std::ffi::OsString;

use nix::sys::signal::Signal;

/// What SIGHUP becomes for puma, and why: USR1, a phased restart (one worker at a time, the old
/// code serving until its replacement is up), where one is possible; else USR2, a hot restart
/// (the master re-execs itself and starts every worker anew, requests waiting in the socket's
/// queue meanwhile). Never HUP, which stops puma. puma 5 cannot phase-restart a preloaded app,
/// and it preloads when it starts with more than one worker unless its config says otherwise.
pub fn puma_restart(config: Option<&str>, argv: &[OsString], workers: u32) -> (Signal, String) {
    let said = |words: &[&str]| {
        let lines = config.unwrap_or_default().lines().map(str::trim);
        let mut code = lines.filter(|l| !l.starts_with('#'));
        code.any(|l| words.iter().any(|w| l.starts_with(w)))
    };
    let flag = |name: &str| argv.iter().any(|a| a.to_str() == Some(name));
    let preload = if said(&["preload_app!(false)", "preload_app! false"]) {
        (false, "the config turns preload_app! off")
    } else if said(&["prune_bundler"]) || flag("--prune-bundler") {
        (false, "prune_bundler leaves the app unloaded in the master")
    } else if said(&["preload_app!"]) || flag("--preload") {
        (true, "the app is preloaded (preload_app!)")
    } else if workers > 1 {
        (
            true,
            "puma preloads the app when it starts with more than one worker",
        )
    } else {
        (false, "one worker: nothing is preloaded")
    };
    match preload {
        (true, why) => (Signal::SIGUSR2, format!("hot restart (USR2): {why}")),
        (false, why) => (Signal::SIGUSR1, format!("phased restart (USR1): {why}")),
    }
}

/// The threads a puma worker runs, and where the figure comes from: `RAILS_MAX_THREADS`, else
/// the default its config gives it (`ENV.fetch("RAILS_MAX_THREADS") { 5 }`, `threads 1, 5`),
/// else puma's own default, 5.
pub fn puma_threads(config: Option<&str>, rails_max_threads: Option<&str>) -> (u32, String) {
    if let Some(n) = rails_max_threads.and_then(|t| crate::text::whole_number(t, 1024)) {
        return (n as u32, "RAILS_MAX_THREADS".to_owned());
    }
    let code = config.unwrap_or_default().lines().map(str::trim);
    let mut code = code.filter(|l| !l.starts_with('#'));
    let found = code.find_map(|line| {
        if let Some(rest) = line.split("ENV.fetch(\"RAILS_MAX_THREADS\"").nth(1) {
            return last_number(rest.split('}').next().unwrap_or_default());
        }
        let rest = line.strip_prefix("threads")?;
        rest.starts_with([' ', '('])
            .then(|| last_number(rest))
            .flatten()
    });
    match found {
        Some(n) => (n, "the config's default".to_owned()),
        None => (5, "puma's default".to_owned()),
    }
}

/// The last whole number in `text` (`{ 5 }`, `, 5)`, ` 1, 5`).
fn last_number(text: &str) -> Option<u32> {
    let mut numbers = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty());
    numbers.next_back()?.parse().ok().filter(|n| *n > 0)
}

/// What a unicorn config says that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnicornConfig {
    /// Its `worker_processes` line reads `WEB_CONCURRENCY` (unicorn does not by itself).
    pub reads_web_concurrency: bool,
    /// A `listen` line: unicorn binds that besides the launcher's socket.
    pub listen: Option<String>,
}

pub fn unicorn_config(text: &str) -> UnicornConfig {
    let code: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let starts = |line: &&str, word: &str| {
        line.strip_prefix(word)
            .is_some_and(|rest| rest.starts_with([' ', '(']))
    };
    UnicornConfig {
        reads_web_concurrency: code
            .iter()
            .any(|l| starts(l, "worker_processes") && l.contains("WEB_CONCURRENCY")),
        listen: code
            .iter()
            .find(|l| starts(l, "listen"))
            .map(|l| (*l).to_owned()),
    }
}
