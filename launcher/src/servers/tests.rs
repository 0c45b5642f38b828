//! The behaviour table, as tables: command -> server, mode, socket, signals.

use nix::sys::signal::Signal;

use super::*;

fn text(argv: &[OsString]) -> String {
    let words: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
    words.join(" ")
}

#[test]
fn servers_are_seen_through_wrappers() {
    let table = [
        ("gunicorn app:app", Server::Gunicorn, 1),
        (
            "/app/.heroku/python/bin/gunicorn app:app",
            Server::Gunicorn,
            1,
        ),
        ("python -m gunicorn app:app", Server::Gunicorn, 3),
        ("python3.12 -m uvicorn app:app", Server::Uvicorn, 3),
        (
            "newrelic-admin run-program gunicorn app:app",
            Server::Gunicorn,
            3,
        ),
        ("ddtrace-run uvicorn app:app", Server::Uvicorn, 2),
        (
            "ddtrace-run newrelic-admin run-program hypercorn app:app",
            Server::Hypercorn,
            4,
        ),
        (
            "opentelemetry-instrument --traces_exporter console --metrics_exporter=none gunicorn x",
            Server::Gunicorn,
            5,
        ),
        ("bundle exec puma -C config/puma.rb", Server::Puma, 3),
        (
            "bundle exec unicorn -p 5000 -c config/unicorn.rb",
            Server::Unicorn,
            3,
        ),
        ("unicorn_rails -c config/unicorn.rb", Server::Unicorn, 1),
        ("node server.js", Server::Node, 1),
        ("/usr/bin/nodejs server.js", Server::Node, 1),
        ("env A=1 B=2 gunicorn app:app", Server::Gunicorn, 4),
        ("python app.py", Server::Unknown, 1),
        ("uwsgi --http :5000", Server::Unknown, 1),
        ("bundle exec", Server::Unknown, 2),
        ("ddtrace-run", Server::Unknown, 1),
    ];
    for (line, server, args_from) in table {
        assert_eq!(
            identify(&words(line)),
            Identified { server, args_from },
            "{line}"
        );
    }
}

#[test]
fn auto_mode_delegates_to_the_servers_that_pre_fork() {
    let table = [
        (Server::Gunicorn, Mode::Delegate),
        (Server::Puma, Mode::Delegate),
        (Server::Unicorn, Mode::Delegate),
        (Server::Uvicorn, Mode::FanOut),
        (Server::Hypercorn, Mode::FanOut),
        (Server::Node, Mode::FanOut),
        (Server::Unknown, Mode::FanOut),
    ];
    for (server, mode) in table {
        assert_eq!(auto_mode(server).0, mode, "{server}");
        let workers = behaviour(server).workers;
        let children = mode == Mode::Delegate;
        assert_eq!(workers == Workers::Children, children, "{server}");
    }
    assert_eq!(TABLE.len(), 7, "every server has one entry");
    assert!(TABLE.iter().all(|b| behaviour(b.server) == b));
}

#[test]
fn sockets_replace_the_address_options() {
    let table = [
        (
            "uvicorn app:app --host 0.0.0.0 --port 5000 --workers 1",
            "uvicorn app:app --workers 1 --fd 3",
            "--host 0.0.0.0 --port 5000",
        ),
        (
            "python -m uvicorn --port=5000 app:app",
            "python -m uvicorn app:app --fd 3",
            "--port=5000",
        ),
        ("uvicorn app:app", "uvicorn app:app --fd 3", ""),
        (
            "hypercorn -b 0.0.0.0:5000 --bind [::]:5000 app:app",
            "hypercorn app:app --bind fd://3",
            "-b 0.0.0.0:5000 --bind [::]:5000",
        ),
        (
            "bundle exec puma -C config/puma.rb -p 3000",
            "bundle exec puma -C config/puma.rb --bind-to-activated-sockets only --bind tcp://[::]:5000",
            "-p 3000",
        ),
        (
            "unicorn -p 5000 -c config/unicorn.rb",
            "unicorn -c config/unicorn.rb --listen [::]:5000",
            "-p 5000",
        ),
        (
            "unicorn -p5000 --listen=0.0.0.0:5000 -o 0.0.0.0 -c config/unicorn.rb",
            "unicorn -c config/unicorn.rb --listen [::]:5000",
            "-p5000 --listen=0.0.0.0:5000 -o 0.0.0.0",
        ),
        (
            "./server --listen-fd={fd} --port 5000",
            "./server --listen-fd=3 --port 5000",
            "{fd}",
        ),
        ("gunicorn -b :5000 app:app", "gunicorn -b :5000 app:app", ""),
        ("node server.js", "node server.js", ""),
    ];
    for (line, expected, removed) in table {
        let args = words(line);
        let rewrite = use_socket(&args, identify(&args), "[::]:5000");
        assert_eq!(text(&rewrite.argv), expected, "{line}");
        assert_eq!(rewrite.removed.join(" "), removed, "{line}");
    }
}

#[test]
fn a_wrapper_option_that_looks_like_a_server_option_is_kept() {
    let args = words("env --port=1 uvicorn app:app");
    // `env --port=1` is not an assignment, so env's argument is taken as the program.
    assert_eq!(identify(&args).server, Server::Unknown);
    assert_eq!(
        text(&use_socket(&args, identify(&args), "[::]:5000").argv),
        "env --port=1 uvicorn app:app"
    );
}

#[test]
fn each_servers_signals() {
    use Signal::*;
    // server: graceful, fast, restart, scale, stop one worker.
    let table = [
        (
            Server::Gunicorn,
            SIGTERM,
            SIGINT,
            Some(SIGHUP),
            true,
            SIGTERM,
        ),
        (Server::Puma, SIGTERM, SIGINT, Some(SIGUSR2), true, SIGTERM),
        (
            Server::Unicorn,
            SIGQUIT,
            SIGINT,
            Some(SIGHUP),
            true,
            SIGQUIT,
        ),
        (Server::Uvicorn, SIGTERM, SIGQUIT, None, false, SIGTERM),
        (Server::Node, SIGTERM, SIGQUIT, None, false, SIGTERM),
        (Server::Unknown, SIGTERM, SIGQUIT, None, false, SIGTERM),
    ];
    for (server, graceful, fast, restart, scales, stop_worker) in table {
        let signals = signals(server, behaviour(server).mode);
        assert_eq!(signals.graceful, graceful, "{server}");
        assert_eq!(signals.fast, fast, "{server}");
        assert_eq!(signals.restart, restart, "{server}");
        assert_eq!(signals.scale.is_some(), scales, "{server}");
        assert_eq!(signals.stop_worker, stop_worker, "{server}");
    }
    assert_eq!(
        signals(Server::Unicorn, Mode::FanOut),
        FAN_OUT,
        "forced into fan-out, a server is a copy like any other"
    );
    for server in [Server::Gunicorn, Server::Unicorn] {
        assert!(
            blocked(server, Mode::Delegate, SIGUSR2).is_some(),
            "{server}"
        );
        assert!(blocked(server, Mode::FanOut, SIGUSR2).is_none(), "{server}");
    }
    assert!(blocked(Server::Puma, Mode::Delegate, SIGUSR2).is_none());
    let notify: Vec<Server> = TABLE
        .iter()
        .filter(|b| b.notifies)
        .map(|b| b.server)
        .collect();
    assert_eq!(notify, [Server::Gunicorn]);
}

#[test]
fn puma_restarts_in_phases_only_where_nothing_is_preloaded() {
    let rails = "threads 5, 5\nport ENV.fetch(\"PORT\") { 3000 }\n# preload_app!\n";
    let cases = [
        (Some(rails), "", 2, Signal::SIGUSR2),
        (Some(rails), "", 1, Signal::SIGUSR1),
        (Some("preload_app!\n"), "", 1, Signal::SIGUSR2),
        (Some("preload_app! false\n"), "", 4, Signal::SIGUSR1),
        (Some("prune_bundler\n"), "", 4, Signal::SIGUSR1),
        (None, "--prune-bundler", 4, Signal::SIGUSR1),
        (None, "--preload", 1, Signal::SIGUSR2),
        (None, "", 3, Signal::SIGUSR2),
    ];
    for (config, flags, workers, expected) in cases {
        let argv = words(&format!("puma {flags}"));
        let (signal, why) = puma_restart(config, &argv, workers);
        assert_eq!(signal, expected, "{config:?} {flags} {workers}: {why}");
    }
}

#[test]
fn puma_threads_come_from_rails_max_threads_or_the_configs_default() {
    let rails = "max_threads_count = ENV.fetch(\"RAILS_MAX_THREADS\") { 5 }\n\
                 threads min_threads_count, max_threads_count\n";
    assert_eq!(puma_threads(Some(rails), Some("8")).0, 8);
    assert_eq!(
        puma_threads(Some(rails), None),
        (5, "the config's default".to_owned())
    );
    let rails_71 = "threads_count = ENV.fetch(\"RAILS_MAX_THREADS\", 3)\nthreads threads_count, threads_count\n";
    assert_eq!(
        puma_threads(Some(rails_71), Some("0")).0,
        3,
        "an invalid value is passed over"
    );
    assert_eq!(puma_threads(Some("threads 2, 16\n"), None).0, 16);
    assert_eq!(puma_threads(None, None), (5, "puma's default".to_owned()));
}

#[test]
fn unicorn_configs_are_read_for_web_concurrency_and_their_own_listen() {
    let heroku = "worker_processes Integer(ENV[\"WEB_CONCURRENCY\"] || 3)\ntimeout 15\n";
    assert_eq!(
        unicorn_config(heroku),
        UnicornConfig {
            reads_web_concurrency: true,
            listen: None
        }
    );
    let pinned = "worker_processes 4\nlisten ENV['PORT'], backlog: 64\n# listen 8080\n";
    let config = unicorn_config(pinned);
    assert!(!config.reads_web_concurrency);
    assert_eq!(
        config.listen.as_deref(),
        Some("listen ENV['PORT'], backlog: 64")
    );
}

#[test]
fn wrappers_that_do_not_exec_are_hinted_at() {
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for line in [
        "/bin/bash -c uvicorn app:app --fd 3; echo done",
        "sh ./bin/web",
        "npm start",
        "node /usr/lib/node_modules/npm/bin/npm-cli.js start",
        "/usr/bin/yarn start",
    ] {
        assert!(wrapper_hint(&words(line), 1).is_some(), "{line}");
        assert!(wrapper_hint(&words(line), 0).is_none(), "no child: {line}");
    }
    for line in ["uvicorn app:app", "node server.js", "gunicorn app:app", ""] {
        assert!(wrapper_hint(&words(line), 2).is_none(), "{line}");
    }
}

#[test]
fn modes_parse() {
    assert_eq!(ModeChoice::parse("auto"), Some(ModeChoice::Auto));
    let fixed = |mode| Some(ModeChoice::Fixed(mode));
    assert_eq!(ModeChoice::parse("fanout"), fixed(Mode::FanOut));
    assert_eq!(ModeChoice::parse("delegate"), fixed(Mode::Delegate));
    assert_eq!(ModeChoice::parse("Delegate"), None);
}

#[test]
fn mode_on_the_command_line_wins_auto_included_then_the_setting_then_auto() {
    use Mode::{Delegate, FanOut};
    use ModeChoice::{Auto, Fixed};
    use Server::{Gunicorn, Node, Unknown};
    let (fanout, delegate) = (Fixed(FanOut), Fixed(Delegate));
    let table = [
        (None, Auto, Gunicorn, Delegate, "gunicorn pre-forks"),
        (None, Auto, Unknown, FanOut, "not a server known"),
        (None, fanout, Gunicorn, FanOut, "LAUNCHER_MODE or"),
        (Some(delegate), fanout, Node, Delegate, "--mode"),
        (
            Some(Auto),
            fanout,
            Gunicorn,
            Delegate,
            "--mode auto: gunicorn",
        ),
        (Some(Auto), delegate, Unknown, FanOut, "--mode auto: not a"),
    ];
    for (asked, setting, server, mode, why) in table {
        let (chosen, reason) = choose_mode(asked, setting, server);
        assert_eq!(chosen, mode, "{asked:?} {setting:?} {server}");
        let case = format!("{asked:?} {setting:?} {server}");
        assert!(reason.starts_with(why), "{case}: {reason}");
    }
}

#[test]
fn the_docs_give_the_node_recipe_the_hint_gives() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/servers.md");
    let docs = std::fs::read_to_string(path).expect("docs/servers.md");
    assert!(docs.contains(&format!("{NODE_LISTEN};")), "{NODE_LISTEN}");
}
