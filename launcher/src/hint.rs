//! What to say when the command line is almost right: `launcher run gunicorn app:app`, without
//! the `--` that separates the launcher's options from the app's command.

use std::ffi::OsString;

/// The launcher's own options of `launcher run` that take a value.
const RUN_OPTIONS: [&str; 2] = ["--mode", "--app-dir"];

/// For `launcher run ...` with no `--`: the command line with it where it goes, as a line to
/// print after clap's error. None for anything else.
pub fn missing_dashes(args: &[OsString]) -> Option<String> {
    let words: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if words.first().map(String::as_str) != Some("run") || words.iter().any(|w| w == "--") {
        return None;
    }
    let mut options = Vec::new();
    let mut rest = words[1..].iter();
    let mut command = Vec::new();
    while let Some(word) = rest.next() {
        if RUN_OPTIONS.contains(&word.as_str()) {
            options.push(word.clone());
            options.extend(rest.next().cloned());
        } else if RUN_OPTIONS
            .iter()
            .any(|o| word.starts_with(&format!("{o}=")))
        {
            options.push(word.clone());
        } else {
            command.push(word.clone());
            command.extend(rest.by_ref().cloned());
        }
    }
    if command.is_empty() {
        return None;
    }
    let line: Vec<String> = ["launcher", "run"]
        .into_iter()
        .map(str::to_owned)
        .chain(options)
        .chain(["--".to_owned()])
        .chain(command)
        .map(|w| quoted(&w))
        .collect();
    Some(format!(
        "launcher: the app's command goes after `--`, which ends the launcher's own options: {}",
        line.join(" ")
    ))
}

/// A word as a shell would need it written.
fn quoted(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,$".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(line: &str) -> Option<String> {
        let args: Vec<OsString> = line.split(' ').map(OsString::from).collect();
        missing_dashes(&args).map(|h| h.rsplit(": ").next().unwrap_or_default().to_owned())
    }

    #[test]
    fn the_dashes_go_after_the_launchers_options() {
        let table = [
            (
                "launcher run gunicorn app:app",
                "launcher run -- gunicorn app:app",
            ),
            (
                "launcher run --mode fanout uvicorn main:app --port 5000",
                "launcher run --mode fanout -- uvicorn main:app --port 5000",
            ),
            (
                "launcher run --app-dir=/app --mode delegate gunicorn -w 4 app:app",
                "launcher run --app-dir=/app --mode delegate -- gunicorn -w 4 app:app",
            ),
            (
                "launcher run bash -c echo{x}'y",
                "launcher run -- bash -c 'echo{x}'\\''y'",
            ),
        ];
        for (line, fixed) in table {
            assert_eq!(hint(line).as_deref(), Some(fixed), "{line}");
        }
    }

    #[test]
    fn no_hint_where_the_dashes_are_not_missing() {
        for line in [
            "launcher run -- gunicorn app:app",
            "launcher run --mode fanout",
            "launcher size --colour",
            "launcher",
        ] {
            assert_eq!(hint(line), None, "{line}");
        }
    }
}
