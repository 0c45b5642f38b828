//! Threads per worker (docs/sizing.md#threads): how many `LAUNCHER_THREADS` asks for, chosen
//! with the worker count, and how each server is told them.

use crate::env::Env;

/// Threads per worker as asked (`LAUNCHER_THREADS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadsSetting {
    /// The server's own (none exported).
    Off,
    /// Chosen with the worker count (`threads_per_worker`).
    Auto,
    Fixed(u32),
}

/// What one request in flight is taken to hold, in MB, for `auto` threads: the dyno's memory over
/// it is how many requests it serves at once (64 on a 512 MB dyno).
pub const REQUEST_MEMORY_MB: u64 = 8;
/// The fewest and most threads per worker `auto` chooses.
pub const AUTO_THREADS: (u32, u32) = (2, 32);

/// Under adaptive sizing `auto` gives a worker at most this many threads, since adaptive sizing
/// adds workers of as many while requests wait: fewer threads share each interpreter lock. In
/// side runs (test/bench/threads), 2 workers of 16 threads served a CPU-heavy endpoint 0.95x
/// what 2 sync workers did where 2 of 32 served 0.88x; with 8, a 50 ms sleep needed 9 workers,
/// which served 0.70x what 2 of 32 did on gunicorn 23 (a gthread worker takes connections its
/// threads cannot serve yet while another's threads idle); on gunicorn 27, capped, 8 served that
/// sleep with 9 workers in 205 MB where 16 took 5 in about 120 MB (docs/benchmarks.md, "Threads").
pub const ADAPTIVE_AUTO_THREADS: u32 = 16;

/// Threads per worker, chosen with the worker count (docs/sizing.md#threads): `auto` shares the
/// requests the dyno's memory serves at once (`memory_mb / REQUEST_MEMORY_MB`) among the
/// `workers`, rounded up, between 2 and 32; when adaptive sizing may add workers up to
/// `grows_to`, no more than `ADAPTIVE_AUTO_THREADS` unless `grows_to` of them would not serve
/// those requests. A number as given; off: none.
pub fn threads_per_worker(
    setting: ThreadsSetting,
    memory_mb: u64,
    workers: u32,
    grows_to: Option<u32>,
) -> Option<u32> {
    match setting {
        ThreadsSetting::Off => None,
        ThreadsSetting::Fixed(n) => Some(n),
        ThreadsSetting::Auto => {
            let requests = memory_mb / REQUEST_MEMORY_MB;
            let share = |n: u32| requests.div_ceil(u64::from(n.max(1)));
            let each = match grows_to {
                None => share(workers),
                Some(most) => share(workers)
                    .min(u64::from(ADAPTIVE_AUTO_THREADS))
                    .max(share(most)),
            };
            let (fewest, most) = AUTO_THREADS;
            Some(each.clamp(u64::from(fewest), u64::from(most)) as u32)
        }
    }
}

/// How each server is told the threads per worker (docs/sizing.md#threads): puma's
/// `RAILS_MAX_THREADS` unless it is the user's (one the launcher did not write:
/// `LAUNCHER_WEB_THREADS` differs), gunicorn's options in `GUNICORN_CMD_ARGS`
/// (`gunicorn_thread_args`); and `LAUNCHER_WEB_THREADS`, the count chosen.
pub fn threads_exports(threads: Option<u32>, env: &Env) -> Vec<(&'static str, String)> {
    let Some(threads) = threads else {
        return Vec::new();
    };
    let mut exports = vec![("LAUNCHER_WEB_THREADS", threads.to_string())];
    let rails = env.get("RAILS_MAX_THREADS");
    if rails.is_none() || rails == env.get("LAUNCHER_WEB_THREADS") {
        exports.push(("RAILS_MAX_THREADS", threads.to_string()));
    }
    let args = env.get("GUNICORN_CMD_ARGS").unwrap_or_default();
    if let Some(args) = gunicorn_thread_args(args, threads) {
        exports.push(("GUNICORN_CMD_ARGS", args));
    }
    exports
}

/// `GUNICORN_CMD_ARGS` with `threads` added, or None when it names threads already (the user's
/// tuning). With the threads, `--keep-alive 0` unless named: a gthread worker keeps a kept-alive
/// connection for itself, so under keep-alive the workers running hold every client and a worker
/// added later gets none; closed after each response, every request comes back through the
/// shared socket, where any worker may take it. `--worker-connections` stays gunicorn's 1000
/// here: capped at the threads, a gthread worker of gunicorn 23 or older that holds that many
/// connections none of which has sent its request stops polling them and spins for good
/// (gunicorn #3146, #3407), which two idle connections did to a worker of two threads (test
/// supervisor.rs); `launcher run`, which knows the gunicorn it runs, caps them where that is safe
/// (`gunicorn_capped_args`). The `.profile.d` script (`profile::SCRIPT`) does the same in bash.
pub fn gunicorn_thread_args(args: &str, threads: u32) -> Option<String> {
    if names(args, "--threads") {
        return None;
    }
    let mut out = args.trim().to_owned();
    add(&mut out, &format!("--threads {threads}"));
    if !names(args, "--keep-alive") {
        add(&mut out, "--keep-alive 0");
    }
    Some(out)
}

/// `GUNICORN_CMD_ARGS` as `gunicorn_thread_args` made it, with `--worker-connections T` (the
/// threads) unless named, for a gunicorn where that is safe (24 and newer,
/// `servers::GTHREAD_CAP_SAFE`): a worker that holds as many connections as it has threads
/// stops accepting, so a request waits in the shared socket's queue, where the next free thread
/// of any worker takes it and adaptive sizing sees it, not inside a worker whose threads are all
/// busy while another's idle. None when the user's text names it.
pub fn gunicorn_capped_args(args: &str, threads: u32) -> Option<String> {
    if names(args, "--worker-connections") {
        return None;
    }
    let mut out = args.to_owned();
    add(&mut out, &format!("--worker-connections {threads}"));
    Some(out)
}

/// Whether gunicorn options name `option` (`--threads 4` or `--threads=4`).
fn names(args: &str, option: &str) -> bool {
    args.split_whitespace()
        .any(|word| word == option || word.starts_with(&format!("{option}=")))
}

/// Appends an option after the user's text, which is kept as written: gunicorn splits it as a
/// shell does (quotes included).
fn add(args: &mut String, option: &str) {
    if !args.is_empty() {
        args.push(' ');
    }
    args.push_str(option);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_chosen_with_the_worker_count() {
        // (setting, memory MB, workers, adaptive sizing's most) -> threads per worker: the dynos
        // of the table and a few.
        let rows = [
            (ThreadsSetting::Auto, 512, 2, None, Some(32)),
            (ThreadsSetting::Auto, 512, 4, None, Some(16)),
            (ThreadsSetting::Auto, 1024, 4, None, Some(32)),
            (ThreadsSetting::Auto, 2560, 5, None, Some(32)),
            (ThreadsSetting::Auto, 512, 64, None, Some(2)),
            (ThreadsSetting::Auto, 64, 1, None, Some(8)),
            // Adaptive sizing adds workers: 16 each, unless its most would not serve the dyno's
            // requests (LAUNCHER_MAX_WORKERS=2 on 512 MB: 64 / 2).
            (ThreadsSetting::Auto, 512, 2, Some(1024), Some(16)),
            (ThreadsSetting::Auto, 14336, 8, Some(1024), Some(16)),
            (ThreadsSetting::Auto, 512, 4, Some(1024), Some(16)),
            (ThreadsSetting::Auto, 512, 8, Some(1024), Some(8)),
            (ThreadsSetting::Auto, 512, 2, Some(3), Some(22)),
            (ThreadsSetting::Auto, 512, 2, Some(2), Some(32)),
            (ThreadsSetting::Auto, 512, 64, Some(1024), Some(2)),
            (ThreadsSetting::Fixed(5), 512, 2, Some(1024), Some(5)),
            (ThreadsSetting::Fixed(5), 512, 2, None, Some(5)),
            (ThreadsSetting::Off, 512, 2, None, None),
        ];
        for (setting, memory_mb, workers, grows_to, threads) in rows {
            assert_eq!(
                threads_per_worker(setting, memory_mb, workers, grows_to),
                threads,
                "{setting:?} {memory_mb} MB {workers} workers, growing to {grows_to:?}"
            );
        }
    }
    #[test]
    fn gunicorn_gets_threads_and_no_keep_alive_around_the_users_text() {
        let cases = [
            ("", Some("--threads 4 --keep-alive 0")),
            (
                "--timeout 60 --access-logformat '%(h)s  %(r)s'",
                Some("--timeout 60 --access-logformat '%(h)s  %(r)s' --threads 4 --keep-alive 0"),
            ),
            ("--keep-alive=5", Some("--keep-alive=5 --threads 4")),
            (
                "--worker-connections 50",
                Some("--worker-connections 50 --threads 4 --keep-alive 0"),
            ),
            ("--threads 8", None),
            ("--threads=8 --timeout 5", None),
        ];
        for (args, want) in cases {
            assert_eq!(gunicorn_thread_args(args, 4).as_deref(), want, "{args}");
        }
    }

    #[test]
    fn worker_connections_are_capped_at_the_threads_unless_named() {
        let cases = [
            (
                "--threads 4 --keep-alive 0",
                Some("--threads 4 --keep-alive 0 --worker-connections 4"),
            ),
            ("--worker-connections=50 --threads 4", None),
            ("--worker-connections 50 --threads 4", None),
        ];
        for (args, want) in cases {
            assert_eq!(gunicorn_capped_args(args, 4).as_deref(), want, "{args}");
        }
    }

    #[test]
    fn rails_max_threads_is_written_unless_it_is_the_users() {
        let names = |env: &Env| -> Vec<&str> {
            threads_exports(Some(4), env)
                .iter()
                .map(|(n, _)| *n)
                .collect()
        };
        let ours = Env::from_pairs([("RAILS_MAX_THREADS", "4"), ("LAUNCHER_WEB_THREADS", "4")]);
        let users = Env::from_pairs([("RAILS_MAX_THREADS", "3")]);
        assert!(names(&Env::from_pairs(Vec::<(&str, &str)>::new())).contains(&"RAILS_MAX_THREADS"));
        assert!(names(&ours).contains(&"RAILS_MAX_THREADS"));
        assert!(!names(&users).contains(&"RAILS_MAX_THREADS"));
        assert!(threads_exports(None, &users).is_empty());
    }
}
