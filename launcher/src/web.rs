//! The app's web process as its Procfile names it: which server it runs, whether under
//! `launcher run`, how `launcher run` runs that server (`servers::choose_mode`), and for puma
//! the threads each worker runs. Shown by the build log and `launcher size`; warnings for a
//! unicorn config that cannot take `WEB_CONCURRENCY` or binds a port itself.

use std::ffi::OsString;
use std::path::Path;

use serde::Serialize;

use crate::env::Env;
use crate::servers::{self, Mode, ModeChoice, Server};
use crate::settings::Settings;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebProcess {
    /// The Procfile's `web:` command.
    pub command: String,
    #[serde(serialize_with = "as_name")]
    pub server: Server,
    /// Whether the command is `launcher run -- ...`.
    pub launcher_run: bool,
    /// How `launcher run` runs the server, by the rule `launcher run` follows: `--mode` in the
    /// command, else `LAUNCHER_MODE` or `launcher.toml`, else `auto`'s pick; and why.
    #[serde(serialize_with = "as_name")]
    pub mode: Mode,
    pub mode_reason: String,
    /// puma's threads per worker, and where the figure comes from.
    pub threads: Option<u32>,
    pub threads_source: Option<String>,
    #[serde(skip)]
    pub warnings: Vec<String>,
}

fn as_name<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&value.to_string())
}

/// The `web:` command of the Procfile in `app_dir`, if there is one.
pub fn procfile_command(app_dir: &Path) -> Option<String> {
    let procfile = crate::files::read_text(&app_dir.join("Procfile"), crate::files::MAX_BYTES);
    procfile.ok()?.lines().find_map(|line| {
        let (name, command) = line.split_once(':')?;
        (name.trim() == "web").then(|| command.trim().to_owned())
    })
}

/// The web process of the app in `app_dir`, with its `settings`; None without a Procfile `web:`
/// line.
pub fn read(app_dir: &Path, env: &Env, settings: &Settings) -> Option<WebProcess> {
    let command = procfile_command(app_dir)?;
    let words: Vec<&str> = command.split_whitespace().collect();
    // `VAR=value` before the program, as a Procfile line may set.
    let start = words.iter().take_while(|w| is_assignment(w)).count();
    let (launcher_run, asked, rest) = launcher_run(&words[start..]);
    let argv: Vec<OsString> = rest.iter().map(OsString::from).collect();
    let found = servers::identify(&argv);
    let setting = ModeChoice::setting(settings);
    let (mode, mode_reason) = servers::choose_mode(asked, setting, found.server);
    let mut web = WebProcess {
        command: command.clone(),
        server: found.server,
        launcher_run,
        mode,
        mode_reason,
        threads: None,
        threads_source: None,
        warnings: Vec::new(),
    };
    match found.server {
        Server::Puma => {
            let flags = ["-C", "--config"];
            let config = servers::config_text(
                &argv,
                found.args_from,
                &flags,
                Some("config/puma.rb"),
                app_dir,
            );
            let (threads, source) =
                servers::puma_threads(config.as_deref(), env.get("RAILS_MAX_THREADS"));
            web.threads = Some(threads);
            web.threads_source = Some(source);
        }
        Server::Unicorn => {
            let flags = ["-c", "--config-file"];
            let config = servers::config_text(&argv, found.args_from, &flags, None, app_dir);
            web.warnings = unicorn_warnings(config.as_deref());
        }
        _ => {}
    }
    Some(web)
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// `launcher run [--mode M] [--app-dir D] -- CMD...`: (whether it is, the mode asked for, CMD...).
fn launcher_run<'a>(words: &'a [&'a str]) -> (bool, Option<ModeChoice>, &'a [&'a str]) {
    let is_launcher = words
        .first()
        .is_some_and(|w| w.rsplit('/').next() == Some("launcher"));
    if !is_launcher || words.get(1) != Some(&"run") {
        return (false, None, words);
    }
    let mut asked = None;
    let mut i = 2;
    while let Some(word) = words.get(i) {
        match *word {
            "--" => return (true, asked, &words[i + 1..]),
            "--mode" => {
                asked = words.get(i + 1).and_then(|m| ModeChoice::parse(m));
                i += 2;
            }
            w if w.starts_with("--mode=") => {
                asked = ModeChoice::parse(&w["--mode=".len()..]);
                i += 1;
            }
            "--app-dir" => i += 2,
            _ => i += 1,
        }
    }
    (true, asked, &[])
}

/// What a unicorn config (or its absence) means for `WEB_CONCURRENCY` and for the socket.
fn unicorn_warnings(config: Option<&str>) -> Vec<String> {
    let Some(config) = config else {
        return vec![
            "unicorn runs without a config file: it runs 1 worker, whatever WEB_CONCURRENCY says. \
             Add a config/unicorn.rb with worker_processes Integer(ENV[\"WEB_CONCURRENCY\"] || 2) \
             and pass it with -c."
                .to_owned(),
        ];
    };
    let config = servers::unicorn_config(config);
    let mut warnings = Vec::new();
    if !config.reads_web_concurrency {
        warnings.push(
            "The unicorn config does not read WEB_CONCURRENCY (unicorn does not by itself): use \
             worker_processes Integer(ENV[\"WEB_CONCURRENCY\"] || 2) to let each dyno's size decide."
                .to_owned(),
        );
    }
    if let Some(listen) = config.listen {
        warnings.push(format!(
            "The unicorn config binds a port itself ({listen}): under `launcher run` remove it, \
             the launcher passes its socket in LISTEN_FDS."
        ));
    }
    warnings
}

impl WebProcess {
    /// What the mode means for this server.
    pub fn what(&self) -> String {
        match self.mode {
            Mode::Delegate => format!(
                "one {} forks WEB_CONCURRENCY workers from the launcher's socket",
                self.server
            ),
            Mode::FanOut => "WEB_CONCURRENCY copies share the launcher's socket".to_owned(),
        }
    }

    /// How `launcher run` runs the server (or would: the Procfile does not use it), for
    /// `launcher size`.
    pub fn how(&self) -> String {
        let what = self.what();
        match self.launcher_run {
            true => format!("{} mode under `launcher run`: {what}", self.mode),
            false => format!("`launcher run` would run it in {} mode: {what}", self.mode),
        }
    }

    /// puma: workers x threads, the requests served at once with `workers` workers. In u64: a
    /// config's threads are taken as written, up to u32::MAX.
    pub fn concurrency(&self, workers: u32) -> Option<String> {
        let threads = self.threads?;
        let source = self.threads_source.as_deref().unwrap_or_default();
        Some(format!(
            "{threads} threads per worker ({source}; RAILS_MAX_THREADS sets it): {workers} \
             workers x {threads} threads = {} requests at once",
            u64::from(workers) * u64::from(threads)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(procfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::TempDir::new().expect("temp dir");
        std::fs::write(dir.path().join("Procfile"), procfile).expect("write");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    /// The web process of the app in `dir`, with its settings read as `launcher size` reads them.
    fn read_app(dir: &Path, env: &Env) -> Option<WebProcess> {
        read(dir, env, &Settings::load(env, Some(dir)))
    }

    #[test]
    fn the_mode_is_chosen_as_launcher_run_chooses_it() {
        let fanout = Env::from_pairs([("LAUNCHER_MODE", "fanout")]);
        let gunicorn = app("web: gunicorn app:app\n", &[]);
        let web = read_app(gunicorn.path(), &fanout).expect("web");
        assert_eq!(web.mode, Mode::FanOut, "LAUNCHER_MODE");
        assert_eq!(web.mode_reason, "LAUNCHER_MODE or launcher.toml");
        assert!(web.how().contains("in fanout mode"), "{}", web.how());
        let file = app(
            "web: gunicorn app:app\n",
            &[("launcher.toml", "mode = \"fanout\"\n")],
        );
        let web = read_app(file.path(), &Env::default()).expect("web");
        assert_eq!(web.mode, Mode::FanOut, "launcher.toml");
        for procfile in [
            "web: launcher run --mode delegate -- gunicorn app:app\n",
            "web: launcher run --mode auto -- gunicorn app:app\n",
            "web: launcher run --mode=auto -- gunicorn app:app\n",
        ] {
            let asked = app(procfile, &[("launcher.toml", "mode = \"fanout\"\n")]);
            let web = read_app(asked.path(), &fanout).expect("web");
            assert_eq!(web.mode, Mode::Delegate, "--mode wins: {procfile}");
            assert!(web.mode_reason.starts_with("--mode"), "{}", web.mode_reason);
        }
    }

    #[test]
    fn the_web_command_is_read_through_launcher_run_and_assignments() {
        let table = [
            ("web: gunicorn app:app\n", Server::Gunicorn, false, Mode::Delegate),
            (
                "release: rake db:migrate\nweb: launcher run -- bundle exec puma -C config/puma.rb\n",
                Server::Puma,
                true,
                Mode::Delegate,
            ),
            (
                "web: RACK_ENV=production launcher run --mode fanout -- unicorn -c x.rb\n",
                Server::Unicorn,
                true,
                Mode::FanOut,
            ),
            ("web: node server.js\n", Server::Node, false, Mode::FanOut),
        ];
        for (procfile, server, under, mode) in table {
            let dir = app(procfile, &[]);
            let web = read_app(dir.path(), &Env::default()).expect("web");
            assert_eq!(
                (web.server, web.launcher_run, web.mode),
                (server, under, mode),
                "{procfile}"
            );
        }
        assert_eq!(
            read_app(app("worker: celery\n", &[]).path(), &Env::default()),
            None
        );
    }

    #[test]
    fn puma_threads_and_workers_times_threads() {
        let dir = app(
            "web: bundle exec puma -C config/puma.rb\n",
            &[(
                "config/puma.rb",
                "threads_count = ENV.fetch(\"RAILS_MAX_THREADS\") { 5 }\n",
            )],
        );
        let web = read_app(dir.path(), &Env::default()).expect("web");
        assert_eq!(web.threads, Some(5));
        let line = web.concurrency(2).expect("puma");
        let how = web.how();
        assert!(
            how.starts_with("`launcher run` would run it in delegate mode"),
            "{how}"
        );
        assert!(line.contains("2 workers x 5 threads = 10"), "{line}");
        let env = Env::from_pairs([("RAILS_MAX_THREADS", "3")]);
        assert_eq!(read_app(dir.path(), &env).expect("web").threads, Some(3));
        let most = app(
            "web: bundle exec puma -C config/puma.rb\n",
            &[("config/puma.rb", "threads 1, 4294967295\n")],
        );
        let web = read_app(most.path(), &Env::default()).expect("web");
        let line = web.concurrency(1024).expect("puma");
        assert!(
            line.contains("1024 workers x 4294967295 threads = 4398046510080 requests"),
            "{line}"
        );
    }

    #[test]
    fn unicorn_configs_that_cannot_take_web_concurrency_are_warned_about() {
        let heroku = "worker_processes Integer(ENV[\"WEB_CONCURRENCY\"] || 3)\n";
        let fine = app(
            "web: unicorn -p $PORT -c config/unicorn.rb\n",
            &[("config/unicorn.rb", heroku)],
        );
        assert!(read_app(fine.path(), &Env::default())
            .expect("web")
            .warnings
            .is_empty());
        let pinned = app(
            "web: unicorn -c config/unicorn.rb\n",
            &[("config/unicorn.rb", "worker_processes 4\nlisten 5000\n")],
        );
        let warnings = read_app(pinned.path(), &Env::default())
            .expect("web")
            .warnings;
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let none = app("web: unicorn -p $PORT\n", &[]);
        assert_eq!(
            read_app(none.path(), &Env::default())
                .expect("web")
                .warnings
                .len(),
            1
        );
    }
}
