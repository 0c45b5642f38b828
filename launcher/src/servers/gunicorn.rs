//! gunicorn's worker class, from its command line, `GUNICORN_CMD_ARGS` and its config file. Only
//! its sync workers accept a connection when they are free to serve it; the others (gthread,
//! gevent, eventlet, uvicorn's) accept at once and hold the wait inside the worker, where the
//! accept queue cannot show it. gthread's wait can be seen all the same: a request waiting for
//! one of its threads is unread in its connection's receive queue (docs/architecture.md,
//! "Adaptive sizing").

/// How gunicorn's workers serve, as its settings say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workers {
    /// One request at a time; they accept when free.
    Sync,
    /// gthread (`-k gthread`, or sync with more than one thread): `threads` each, as written.
    Threads { threads: u32, written: String },
    /// gevent, eventlet, uvicorn's...: an event loop, as written.
    Other(String),
}

/// gunicorn's workers, from its arguments, `GUNICORN_CMD_ARGS` and its config file (the command
/// line wins over the variable, which wins over the file, as in gunicorn).
pub fn workers(args: &[&str], cmd_args: Option<&str>, config: Option<&str>) -> Workers {
    let env: Vec<&str> = cmd_args.map_or(Vec::new(), |a| a.split_whitespace().collect());
    let class = flag(args, &["-k", "--worker-class"])
        .or_else(|| flag(&env, &["-k", "--worker-class"]))
        .map(|(written, value)| (written, value.to_owned()))
        .or_else(|| config.and_then(|c| assigned(c, "worker_class")));
    let threads = flag(args, &["--threads"])
        .or_else(|| flag(&env, &["--threads"]))
        .map(|(written, value)| (written, value.to_owned()))
        .or_else(|| config.and_then(|c| assigned(c, "threads")));
    let count = threads
        .as_ref()
        .and_then(|(_, n)| n.parse::<u32>().ok())
        .unwrap_or(1);
    let gthread = |class: &str| {
        let class = class.to_ascii_lowercase();
        class == "gthread" || class.ends_with("threadworker")
    };
    match class {
        Some((written, value)) if gthread(&value) => Workers::Threads {
            threads: count,
            written,
        },
        Some((written, value)) if !is_sync(&value) => Workers::Other(written),
        // gunicorn runs sync workers with more than one thread as gthread.
        _ => match threads.filter(|_| count > 1) {
            Some((written, _)) => Workers::Threads {
                threads: count,
                written,
            },
            None => Workers::Sync,
        },
    }
}

/// Whether the command line (`option`) or the config file (`setting`) sets one of gunicorn's
/// settings: the user's, which the launcher leaves as it is.
pub fn sets(args: &[&str], config: Option<&str>, (option, setting): (&str, &str)) -> bool {
    flag(args, &[option]).is_some() || config.is_some_and(|c| assigned(c, setting).is_some())
}

fn is_sync(class: &str) -> bool {
    let class = class.to_ascii_lowercase();
    class == "sync" || class == "egg:gunicorn#sync" || class == "gunicorn.workers.sync.syncworker"
}

/// `-k X`, `-kX`, `--worker-class X`, `--worker-class=X`: as written, and the value.
fn flag<'a>(args: &[&'a str], names: &[&str]) -> Option<(String, &'a str)> {
    args.iter().enumerate().find_map(|(i, arg)| {
        names.iter().find_map(|name| {
            if arg == name {
                let value = args.get(i + 1).copied()?;
                Some((format!("{arg} {value}"), value))
            } else if let Some(value) = arg.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
                Some((arg.to_string(), value))
            } else if name.len() == 2 && arg.len() > 2 && !arg.starts_with("--") {
                Some((arg.to_string(), arg.strip_prefix(name)?))
            } else {
                None
            }
        })
    })
}

/// `name = "value"` or `name = 4` in a Python config file: the line and the literal. A value
/// that is not a literal (read from the environment, say) cannot be known and is not taken.
fn assigned(config: &str, name: &str) -> Option<(String, String)> {
    config.lines().map(str::trim).find_map(|line| {
        let rest = line.strip_prefix(name)?.trim_start().strip_prefix('=')?;
        let value = rest.split('#').next()?.trim();
        let literal = value
            .strip_prefix(['"', '\''])
            .and_then(|v| v.strip_suffix(['"', '\'']))
            .map(str::to_owned)
            .or_else(|| value.parse::<u32>().ok().map(|n| n.to_string()))?;
        Some((line.to_owned(), literal))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    /// What makes the workers accept at once, as written; None for sync workers.
    fn concurrent_workers(
        args: &[&str],
        cmd_args: Option<&str>,
        config: Option<&str>,
    ) -> Option<String> {
        match workers(args, cmd_args, config) {
            Workers::Sync => None,
            Workers::Threads { written, .. } | Workers::Other(written) => Some(written),
        }
    }

    #[test]
    fn sync_workers_accept_when_free() {
        for args in [
            "app:app",
            "-k sync app:app",
            "--worker-class=sync app:app",
            "--threads 1 app:app",
        ] {
            assert_eq!(concurrent_workers(&words(args), None, None), None, "{args}");
        }
        let config = "workers = 3\nworker_class = 'sync'\n";
        assert_eq!(concurrent_workers(&[], None, Some(config)), None);
    }

    #[test]
    fn other_classes_and_threads_accept_at_once() {
        let cases = [
            ("-k gevent app:app", "-k gevent"),
            (
                "-kuvicorn.workers.UvicornWorker app:app",
                "-kuvicorn.workers.UvicornWorker",
            ),
            ("--worker-class=gthread app:app", "--worker-class=gthread"),
            ("--threads 4 app:app", "--threads 4"),
        ];
        for (args, found) in cases {
            let got = concurrent_workers(&words(args), None, None);
            assert_eq!(got.as_deref(), Some(found), "{args}");
        }
        let env = concurrent_workers(&["app:app"], Some("--threads=8"), None);
        assert_eq!(env.as_deref(), Some("--threads=8"));
        let config = "worker_class = \"gevent\"  # for websockets\n";
        let file = concurrent_workers(&["app:app"], None, Some(config));
        assert_eq!(
            file.as_deref(),
            Some("worker_class = \"gevent\"  # for websockets")
        );
        assert_eq!(
            concurrent_workers(&["app:app"], None, Some("threads = int(os.environ['T'])\n")),
            None,
            "not a literal: not known"
        );
    }

    #[test]
    fn threaded_workers_are_told_from_event_loops() {
        let threads = |n: u32, written: &str| Workers::Threads {
            threads: n,
            written: written.to_owned(),
        };
        let cases = [
            ("app:app", None, Workers::Sync),
            ("--threads 16 app:app", None, threads(16, "--threads 16")),
            ("-k gthread app:app", None, threads(1, "-k gthread")),
            (
                "-k gthread --threads 8 app:app",
                None,
                threads(8, "-k gthread"),
            ),
            ("app:app", Some("--threads 32"), threads(32, "--threads 32")),
            (
                "-k gevent app:app",
                None,
                Workers::Other("-k gevent".to_owned()),
            ),
        ];
        for (args, env, want) in cases {
            assert_eq!(workers(&words(args), env, None), want, "{args} {env:?}");
        }
        let config = "worker_class = 'gthread'\nthreads = 4\n";
        let got = workers(&["app:app"], None, Some(config));
        assert_eq!(got, threads(4, "worker_class = 'gthread'"));
    }

    #[test]
    fn settings_are_seen_on_the_command_line_and_in_the_file() {
        let connections = ("--worker-connections", "worker_connections");
        assert!(sets(
            &words("--worker-connections 8 app:app"),
            None,
            connections
        ));
        assert!(sets(&words("--worker-connections=8"), None, connections));
        assert!(sets(&[], Some("worker_connections = 50\n"), connections));
        let threads = Some("threads = 8\n");
        assert!(!sets(&words("--threads 8 app:app"), threads, connections));
    }

    #[test]
    fn the_command_line_wins_over_the_environment_and_the_file() {
        let got = concurrent_workers(
            &words("-k sync"),
            Some("-k gevent"),
            Some("worker_class = 'gthread'"),
        );
        assert_eq!(got, None);
    }
}
