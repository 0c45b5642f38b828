//! Small text helpers shared by every module: strict parsers for config var values, and how a
//! value from outside is shown in a log line. A leaf module: it uses nothing of the crate.

/// A strict whole number from 1 to `max`: ASCII digits, no sign, no leading zero, no exponent.
pub fn whole_number(text: &str, max: u64) -> Option<u64> {
    let valid_shape = !text.is_empty()
        && text.len() <= 19
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    if !valid_shape {
        return None;
    }
    text.parse::<u64>().ok().filter(|n| (1..=max).contains(n))
}

/// A worker count as the servers read `WEB_CONCURRENCY`: `whole_number`, with ASCII whitespace
/// around it allowed. gunicorn and uvicorn read it with Python's `int()`, puma's config with
/// Ruby's `Integer()`; both strip space, tab, newline, carriage return, vertical tab and form
/// feed. Python also strips Unicode spaces, which Ruby refuses: those stay invalid.
pub fn worker_count(text: &str, max: u64) -> Option<u64> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c');
    whole_number(text.trim_matches(is_space), max)
}

/// A switch: `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`, in any case.
pub fn parse_switch(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A config var's text as shown in a log line: quoted, escaped, at most 40 characters, so that
/// control characters or a huge value cannot garble the log.
pub fn shown(text: &str) -> String {
    let clipped: String = text.chars().take(40).collect();
    let ellipsis = if text.chars().count() > 40 { "..." } else { "" };
    format!("{clipped:?}{ellipsis}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_strict() {
        assert_eq!(whole_number("3", 1024), Some(3));
        assert_eq!(whole_number("1024", 1024), Some(1024));
        for bad in [
            "",
            "abc",
            "0",
            "-2",
            "+2",
            "1e3",
            "04",
            " 4",
            "4 ",
            "1025",
            "2.5",
            &"9".repeat(30),
        ] {
            assert_eq!(whole_number(bad, 1024), None, "{bad:?}");
        }
    }

    #[test]
    fn worker_counts_may_have_the_spaces_python_and_ruby_strip() {
        for spaced in [" 3", "3 ", "\t3\n", "\r\n3\r\n", "\x0b3\x0c"] {
            assert_eq!(worker_count(spaced, 1024), Some(3), "{spaced:?}");
        }
        for bad in ["", " ", "\u{a0}3", "3 3", " 04", "+3", " 1025"] {
            assert_eq!(worker_count(bad, 1024), None, "{bad:?}");
        }
    }

    #[test]
    fn switches() {
        assert_eq!(parse_switch("TRUE"), Some(true));
        assert_eq!(parse_switch("off"), Some(false));
        assert_eq!(parse_switch("ture"), None);
    }

    #[test]
    fn shown_values_are_escaped_and_clipped() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown(&"x".repeat(50)), format!("{:?}...", "x".repeat(40)));
    }
}
