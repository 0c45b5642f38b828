//! gunicorn's worker class, from its command line, `GUNICORN_CMD_ARGS` and its config file. Only
//! its sync workers accept a connection when they are free to serve it; the others (gthread,
//! gevent, eventlet, uvicorn's) accept at once and hold the wait inside the worker, where the
//! accept queue cannot show it (docs/architecture.md, "Adaptive sizing").

/// What makes gunicorn's workers accept at once, as written (`-k gevent`, `--threads 4`,
/// `worker_class = "gthread"`), or None for sync workers. `args` are gunicorn's own arguments;
/// the command line wins over `GUNICORN_CMD_ARGS`, which wins over the config file, as in
/// gunicorn.
pub fn concurrent_workers(
    args: &[&str],
    cmd_args: Option<&str>,
    config: Option<&str>,
) -> Option<String> {
    let env: Vec<&str> = cmd_args.map_or(Vec::new(), |a| a.split_whitespace().collect());
    let class = flag(args, &["-k", "--worker-class"])
        .or_else(|| flag(&env, &["-k", "--worker-class"]))
        .map(|(written, value)| (written, value.to_owned()))
        .or_else(|| config.and_then(|c| assigned(c, "worker_class")));
    let threads = flag(args, &["--threads"])
        .or_else(|| flag(&env, &["--threads"]))
        .map(|(written, value)| (written, value.to_owned()))
        .or_else(|| config.and_then(|c| assigned(c, "threads")));
    match class {
        Some((written, value)) if !is_sync(&value) => Some(written),
        // gunicorn runs sync workers with more than one thread as gthread.
        _ => threads
            .filter(|(_, n)| n.parse::<u32>().is_ok_and(|n| n > 1))
            .map(|(written, _)| written),
    }
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
    fn the_command_line_wins_over_the_environment_and_the_file() {
        let got = concurrent_workers(
            &words("-k sync"),
            Some("-k gevent"),
            Some("worker_class = 'gthread'"),
        );
        assert_eq!(got, None);
    }
}
