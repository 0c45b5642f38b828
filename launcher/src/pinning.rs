//! Finding places where an app pins its worker count, so `WEB_CONCURRENCY` cannot take effect.
//! Text scanning only: nothing here runs or imports the app's code.

use std::path::Path;

use crate::env::Env;

/// Servers whose worker-count flag we recognise in a Procfile command.
const SERVERS: [&str; 4] = ["gunicorn", "uvicorn", "hypercorn", "puma"];

/// One place that pins the worker count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where: `Procfile`, `gunicorn.conf.py`, `config/puma.rb`, `GUNICORN_CMD_ARGS`.
    pub place: String,
    /// What was found, as written (clipped to one line).
    pub setting: String,
}

/// Scans the app at `app_dir` and the config vars in `env`.
pub fn scan(app_dir: &Path, env: &Env) -> Vec<Finding> {
    let mut findings = Vec::new();
    let read =
        |name: &str| crate::files::read_text(&app_dir.join(name), crate::files::MAX_BYTES).ok();
    let web = crate::web::procfile_command(app_dir);
    let mut gunicorn_configs = vec!["gunicorn.conf.py".to_owned()];
    if let Some(command) = &web {
        let tokens: Vec<&str> = command.split_whitespace().collect();
        if tokens.iter().any(|t| SERVERS.iter().any(|s| t.contains(s))) {
            findings.extend(workers_flag(&tokens).map(|setting| finding("Procfile", setting)));
        }
        gunicorn_configs.extend(
            config_flag(&tokens)
                .filter(|p| is_inside(p))
                .map(str::to_owned),
        );
    }
    for name in &gunicorn_configs {
        let setting = read(name).and_then(|text| assignment(&text, is_python_assignment));
        findings.extend(setting.map(|setting| finding(name, setting)));
    }
    let puma = read("config/puma.rb").and_then(|text| assignment(&text, is_puma_workers));
    findings.extend(puma.map(|setting| finding("config/puma.rb", setting)));
    if let Some(args) = env.get("GUNICORN_CMD_ARGS") {
        let tokens: Vec<&str> = args.split_whitespace().collect();
        findings.extend(workers_flag(&tokens).map(|setting| finding("GUNICORN_CMD_ARGS", setting)));
    }
    findings
}

impl Finding {
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

/// `-w 4`, `-w4`, `--workers 4`, `--workers=4`: the flag and its value, unless the value reads
/// `WEB_CONCURRENCY` (then the config var still decides).
fn workers_flag(tokens: &[&str]) -> Option<String> {
    tokens.iter().enumerate().find_map(|(i, token)| {
        let next = || tokens.get(i + 1).copied().unwrap_or("");
        let (written, value) = match *token {
            "-w" | "--workers" => (format!("{token} {}", next()), next().to_owned()),
            t if t.starts_with("--workers=") => (t.to_owned(), t["--workers=".len()..].to_owned()),
            t if t.starts_with("-w") && t.len() > 2 && !t.starts_with("--") => {
                (t.to_owned(), t[2..].to_owned())
            }
            _ => return None,
        };
        (!value.contains("WEB_CONCURRENCY")).then_some(written)
    })
}

/// gunicorn's `-c FILE` / `--config FILE` / `--config=FILE`, when it names a plain file path.
fn config_flag<'a>(tokens: &[&'a str]) -> Option<&'a str> {
    tokens
        .iter()
        .enumerate()
        .find_map(|(i, token)| match *token {
            "-c" | "--config" => tokens.get(i + 1).copied(),
            t => t.strip_prefix("--config="),
        })
        .filter(|path| !path.starts_with("python:") && path.ends_with(".py"))
}

/// A relative path that stays inside the app.
fn is_inside(path: &str) -> bool {
    !path.starts_with('/') && !path.split('/').any(|part| part == "..")
}

/// The first line that sets the worker count without reading `WEB_CONCURRENCY`.
fn assignment(text: &str, sets_workers: fn(&str) -> bool) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .find(|line| sets_workers(line) && !line.contains("WEB_CONCURRENCY"))
        .map(str::to_owned)
}

/// `workers = 4` in a gunicorn config file (not `workers == ...`, not `worker_class = ...`).
fn is_python_assignment(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("workers") else {
        return false;
    };
    let rest = rest.trim_start();
    rest.starts_with('=') && !rest.starts_with("==")
}

/// `workers 4` or `workers(4)` in a puma config file.
fn is_puma_workers(line: &str) -> bool {
    line.strip_prefix("workers").is_some_and(|rest| {
        rest.starts_with(' ') || rest.starts_with('(') || rest.starts_with('\t')
    })
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
