//! Finding places where an app pins its worker count, so `WEB_CONCURRENCY` cannot take effect.
//! Text scanning only: nothing here runs or imports the app's code.

use std::path::Path;

use crate::env::Env;
use crate::servers::{self, CountSetting};

/// One place that pins the worker count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where: `Procfile`, `gunicorn.conf.py`, `config/puma.rb`, `GUNICORN_CMD_ARGS`.
    pub place: String,
    /// What was found, as written (clipped to one line).
    pub setting: String,
}

/// Scans the app at `app_dir` and the config vars in `env`, for every server the behaviour table
/// says how it is told its count (`servers::Count`): its flags in the Procfile's web command, its
/// config file (the one the command names, and its default), its config var of arguments.
pub fn scan(app_dir: &Path, env: &Env) -> Vec<Finding> {
    let mut findings = Vec::new();
    let read =
        |name: &str| crate::files::read_text(&app_dir.join(name), crate::files::MAX_BYTES).ok();
    let web = crate::web::procfile_command(app_dir);
    let tokens: Vec<&str> = web
        .as_deref()
        .map_or(Vec::new(), |c| c.split_whitespace().collect());
    let counted = servers::TABLE.iter().filter(|b| !b.count.flags.is_empty());
    let named = counted
        .clone()
        .find(|b| tokens.iter().any(|t| t.contains(b.name)));
    if let Some(server) = named {
        let flags = server.count.flags;
        findings.extend(count_flag(&tokens, flags).map(|setting| finding("Procfile", setting)));
    }
    for server in counted {
        let (Some(config), Some(setting)) = (server.config, server.count.setting) else {
            continue;
        };
        let mut files: Vec<String> = config.default.map(str::to_owned).into_iter().collect();
        if matches!(setting, CountSetting::Assignment(_)) {
            files.extend(
                config_flag(&tokens, config.flags)
                    .filter(|p| is_inside(p))
                    .map(str::to_owned),
            );
        }
        for name in &files {
            let found = read(name).and_then(|text| assignment(&text, setting));
            findings.extend(found.map(|found| finding(name, found)));
        }
        let args = server
            .count
            .args_var
            .and_then(|var| Some((var, env.get(var)?)));
        if let Some((var, args)) = args {
            let tokens: Vec<&str> = args.split_whitespace().collect();
            let flags = server.count.flags;
            findings.extend(count_flag(&tokens, flags).map(|setting| finding(var, setting)));
        }
    }
    findings
}

/// What pins `server`'s count in the command `launcher run` was given (its arguments from
/// `args_from` on), its config var of arguments, or its config file (`config`, read as the
/// server reads it): the first found, in gunicorn's order of precedence (the command line, then
/// `GUNICORN_CMD_ARGS`, then the file).
pub fn in_command(
    server: servers::Server,
    words: &[&str],
    env: &Env,
    config: Option<&str>,
) -> Option<Finding> {
    let count = servers::behaviour(server).count;
    if let Some(found) = count_flag(words, count.flags) {
        return Some(finding("the command", found));
    }
    let args = count.args_var.and_then(|var| Some((var, env.get(var)?)));
    if let Some((var, args)) = args {
        let tokens: Vec<&str> = args.split_whitespace().collect();
        if let Some(found) = count_flag(&tokens, count.flags) {
            return Some(finding(var, found));
        }
    }
    let setting = count.setting?;
    let found = assignment(config?, setting)?;
    Some(finding("its config file", found))
}

impl Finding {
    /// The worker count it pins, when it is written as a number (`-w 4`, `workers = 4`).
    pub fn workers(&self) -> Option<u32> {
        let text = self.setting.as_str();
        let value = match text.split_once(['=', ' ', '\t', '(']) {
            Some((_, value)) => value,
            // `-w4`
            None => text.get(2..)?,
        };
        let value = value
            .trim()
            .trim_start_matches('=')
            .trim()
            .trim_end_matches(')');
        crate::text::whole_number(value.trim(), u64::from(crate::sizing::MAX_WEB_CONCURRENCY))
            .map(|n| n as u32)
    }

    /// The build log's two lines: the pin, and what to do.
    pub fn at_build(&self) -> [String; 2] {
        [
            format!(
                "{} pins the worker count ({}), so WEB_CONCURRENCY cannot take effect.",
                self.place, self.setting
            ),
            "Remove it to let each dyno's size decide, or set the WEB_CONCURRENCY config var \
             instead."
                .to_owned(),
        ]
    }

    /// The line for where the count is explained (`launcher size`, the boot of a web dyno):
    /// `value` is what `WEB_CONCURRENCY` holds, the launcher's or the user's.
    pub fn at_boot(&self, value: u32) -> String {
        format!(
            "{} pins the worker count ({}), so WEB_CONCURRENCY={value} does not take effect; \
             remove it to let WEB_CONCURRENCY decide",
            self.place, self.setting
        )
    }
}

fn finding(place: &str, setting: String) -> Finding {
    let setting: String = setting
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect();
    Finding {
        place: place.to_owned(),
        setting,
    }
}

/// One of `flags` with its value: `-w 4`, `-w4`, `--workers 4`, `--workers=4`, as written,
/// unless the value reads `WEB_CONCURRENCY` (then the config var still decides).
fn count_flag(tokens: &[&str], flags: &[&str]) -> Option<String> {
    tokens.iter().enumerate().find_map(|(i, token)| {
        let next = tokens.get(i + 1).copied().unwrap_or("");
        let (written, value) = flags.iter().find_map(|flag| {
            let short = flag.len() == 2 && !token.starts_with("--");
            if token == flag {
                Some((format!("{token} {next}"), next))
            } else if let Some(value) = token.strip_prefix(flag).and_then(|v| v.strip_prefix('=')) {
                Some((token.to_string(), value))
            } else if short && token.len() > 2 {
                Some((token.to_string(), token.strip_prefix(flag)?))
            } else {
                None
            }
        })?;
        (!value.contains("WEB_CONCURRENCY")).then_some(written)
    })
}

/// The config file the command names with one of `flags` (`-c FILE`, `--config FILE`,
/// `--config=FILE`), when it is a plain Python file path (not `python:module`).
fn config_flag<'a>(tokens: &[&'a str], flags: &[&str]) -> Option<&'a str> {
    tokens
        .iter()
        .enumerate()
        .find_map(|(i, token)| {
            flags.iter().find_map(|flag| {
                if token == flag {
                    tokens.get(i + 1).copied()
                } else {
                    token.strip_prefix(flag)?.strip_prefix('=')
                }
            })
        })
        .filter(|path| !path.starts_with("python:") && path.ends_with(".py"))
}

/// A relative path that stays inside the app.
fn is_inside(path: &str) -> bool {
    !path.starts_with('/') && !path.split('/').any(|part| part == "..")
}

/// The first line that sets the worker count without reading `WEB_CONCURRENCY`.
fn assignment(text: &str, setting: CountSetting) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .find(|line| sets(line, setting) && !line.contains("WEB_CONCURRENCY"))
        .map(str::to_owned)
}

/// `workers = 4` in Python (not `workers == ...`, not `worker_class = ...`); `workers 4` or
/// `workers(4)` in Ruby.
fn sets(line: &str, setting: CountSetting) -> bool {
    match setting {
        CountSetting::Assignment(name) => line.strip_prefix(name).is_some_and(|rest| {
            let rest = rest.trim_start();
            rest.starts_with('=') && !rest.starts_with("==")
        }),
        CountSetting::Call(name) => line
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with([' ', '(', '\t'])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::TempDir::new().expect("temp dir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    fn places(dir: &tempfile::TempDir, env: &Env) -> Vec<(String, String)> {
        scan(dir.path(), env)
            .into_iter()
            .map(|f| (f.place, f.setting))
            .collect()
    }

    #[test]
    fn procfile_workers_flags() {
        for (command, setting) in [
            ("gunicorn -w 4 app:app", "-w 4"),
            ("gunicorn -w4 app:app", "-w4"),
            ("python -m gunicorn --workers 3 app:app", "--workers 3"),
            ("uvicorn main:app --workers=2", "--workers=2"),
            ("bundle exec puma -w 2 -C config/puma.rb", "-w 2"),
        ] {
            let dir = app(&[("Procfile", &format!("release: migrate\nweb: {command}\n"))]);
            assert_eq!(
                places(&dir, &Env::default()),
                vec![("Procfile".into(), setting.into())],
                "{command}"
            );
        }
    }

    #[test]
    fn flags_that_read_web_concurrency_or_other_programs_do_not_count() {
        for command in [
            "gunicorn -w $WEB_CONCURRENCY app:app",
            "gunicorn --workers=${WEB_CONCURRENCY:-2} app:app",
            "node server.js -w 4",
            "gunicorn app:app",
        ] {
            let dir = app(&[("Procfile", &format!("web: {command}\n"))]);
            assert!(places(&dir, &Env::default()).is_empty(), "{command}");
        }
        let worker_only = app(&[("Procfile", "worker: gunicorn -w 4 app:app\n")]);
        assert!(places(&worker_only, &Env::default()).is_empty());
    }

    #[test]
    fn gunicorn_config_files() {
        let dir = app(&[(
            "gunicorn.conf.py",
            "bind = ':5000'\nworker_class = 'sync'\nworkers = 4\n",
        )]);
        assert_eq!(
            places(&dir, &Env::default()),
            vec![("gunicorn.conf.py".into(), "workers = 4".into())]
        );
        let from_env = app(&[(
            "gunicorn.conf.py",
            "import os\nworkers = int(os.environ.get('WEB_CONCURRENCY', 2))\n",
        )]);
        assert!(places(&from_env, &Env::default()).is_empty());
        let named = app(&[
            ("Procfile", "web: gunicorn -c conf/prod.py app:app\n"),
            ("conf/prod.py", "# workers = 9\nworkers=5\n"),
        ]);
        assert_eq!(
            places(&named, &Env::default()),
            vec![("conf/prod.py".into(), "workers=5".into())]
        );
    }

    #[test]
    fn puma_config() {
        let dir = app(&[("config/puma.rb", "threads 5, 5\nworkers 4\n")]);
        assert_eq!(
            places(&dir, &Env::default()),
            vec![("config/puma.rb".into(), "workers 4".into())]
        );
        let default_rails = app(&[(
            "config/puma.rb",
            "workers ENV.fetch(\"WEB_CONCURRENCY\") { 2 }\n",
        )]);
        assert!(places(&default_rails, &Env::default()).is_empty());
    }

    #[test]
    fn the_count_a_command_pins() {
        let env = Env::from_pairs([("GUNICORN_CMD_ARGS", "--workers=6")]);
        let none = Env::default();
        let gunicorn = crate::servers::Server::Gunicorn;
        type Pin<'a> = Option<(&'a str, Option<u32>)>;
        let cases: [(&str, &Env, Option<&str>, Pin); 7] = [
            ("-w 4 app:app", &none, None, Some(("-w 4", Some(4)))),
            ("-w4 app:app", &none, None, Some(("-w4", Some(4)))),
            (
                "--workers=3 app:app",
                &env,
                None,
                Some(("--workers=3", Some(3))),
            ),
            ("app:app", &env, None, Some(("--workers=6", Some(6)))),
            (
                "app:app",
                &none,
                Some("workers = 5\n"),
                Some(("workers = 5", Some(5))),
            ),
            (
                "app:app",
                &none,
                Some("workers = cpus * 2\n"),
                Some(("workers = cpus * 2", None)),
            ),
            ("-w $WEB_CONCURRENCY app:app", &none, None, None),
        ];
        for (command, env, config, want) in cases {
            let words: Vec<&str> = command.split_whitespace().collect();
            let found = in_command(gunicorn, &words, env, config);
            let got = found.as_ref().map(|f| (f.setting.as_str(), f.workers()));
            assert_eq!(got, want, "{command}");
        }
    }

    #[test]
    fn gunicorn_cmd_args_config_var() {
        let dir = app(&[]);
        let env = Env::from_pairs([("GUNICORN_CMD_ARGS", "--timeout 60 --workers 3")]);
        assert_eq!(
            places(&dir, &env),
            vec![("GUNICORN_CMD_ARGS".into(), "--workers 3".into())]
        );
        let harmless = Env::from_pairs([("GUNICORN_CMD_ARGS", "--timeout 60")]);
        assert!(places(&dir, &harmless).is_empty());
    }
}
