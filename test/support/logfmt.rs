//! The launcher's event lines: `launcher: at=LEVEL event=NAME key=value ...` in logfmt, parsed.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// One parsed `launcher: at=... event=... k=v` line; `index` is its place in stdout.
#[derive(Debug, Clone)]
pub struct Event {
    pub index: usize,
    pub line: String,
    fields: HashMap<String, String>,
}

impl Event {
    pub fn opt(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    pub fn get(&self, key: &str) -> &str {
        self.opt(key)
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.line))
    }

    pub fn num<T: FromStr>(&self, key: &str) -> T
    where
        T::Err: fmt::Debug,
    {
        let value = self.get(key);
        value
            .parse()
            .unwrap_or_else(|e| panic!("{key}={value} in {:?}: {e:?}", self.line))
    }

    pub fn pid(&self) -> u32 {
        self.num("pid")
    }

    /// A figure in megabytes, `<digits>[.<digits>]MB` as the `sample#` lines write them.
    pub fn megabytes(&self, key: &str) -> f64 {
        let value = self.get(key);
        let number = value.strip_suffix("MB").filter(|n| {
            n.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && n.bytes().any(|b| b.is_ascii_digit())
        });
        number
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{key}={value} is not <number>MB: {}", self.line))
    }
}

/// logfmt: `key=value` pairs separated by spaces, values with spaces in double quotes.
pub fn logfmt(text: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return fields;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ' ' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        fields.insert(key, value);
    }
}

/// The `launcher: ... event=name ...` lines among `lines`, in order, with their place in it.
pub fn events(lines: Vec<String>, name: &str) -> Vec<Event> {
    lines
        .into_iter()
        .enumerate()
        .filter_map(|(index, line)| {
            let rest = line.strip_prefix("launcher: ")?;
            let fields = logfmt(rest);
            (fields.get("event").map(String::as_str) == Some(name)).then_some(Event {
                index,
                line,
                fields,
            })
        })
        .collect()
}
