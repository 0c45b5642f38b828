//! Pointing a command at the shared socket on fd 3, as its behaviour says: `{fd}` anywhere
//! becomes `3`; else the address options the server would bind itself are removed (with their
//! values, in every spelling) and its socket option added.

use std::ffi::OsString;

use super::{behaviour, Identified, LISTEN_FD};

/// How the command was changed to use the socket on fd 3.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub argv: Vec<OsString>,
    pub removed: Vec<String>,
    pub added: Vec<String>,
}

/// `listen` is the launcher's socket's address (`[::]:5000`), for a server told it on the command
/// line (`{listen}` in the table's added arguments).
pub fn use_socket(argv: &[OsString], found: Identified, listen: &str) -> Rewrite {
    let placeholder = "{fd}";
    if argv
        .iter()
        .any(|a| a.to_str().is_some_and(|s| s.contains(placeholder)))
    {
        let fd = LISTEN_FD.to_string();
        let argv = argv
            .iter()
            .map(|a| match a.to_str() {
                Some(s) => OsString::from(s.replace(placeholder, &fd)),
                None => a.clone(),
            })
            .collect();
        return Rewrite {
            argv,
            removed: vec![placeholder.to_owned()],
            added: vec![fd],
        };
    }
    let socket = behaviour(found.server).socket;
    let (mut kept, removed) = without_options(argv, found.args_from, socket.remove);
    let added: Vec<String> = socket
        .add
        .iter()
        .map(|a| a.replace("{listen}", listen))
        .collect();
    kept.extend(added.iter().map(OsString::from));
    Rewrite {
        argv: kept,
        removed,
        added,
    }
}

/// argv without each of `options` and its value, looking only from `from` on: `OPT VALUE`,
/// `OPT=VALUE`, and for a one-letter option `-pVALUE`.
fn without_options(
    argv: &[OsString],
    from: usize,
    options: &[&str],
) -> (Vec<OsString>, Vec<String>) {
    let mut kept: Vec<OsString> = argv[..from.min(argv.len())].to_vec();
    let mut removed = Vec::new();
    let mut rest = argv.iter().skip(from);
    while let Some(arg) = rest.next() {
        let text = arg.to_str().unwrap_or_default();
        let attached = |o: &&&str| {
            let short = o.len() == 2 && !o.starts_with("--");
            text.starts_with(&format!("{o}=")) || (short && text.starts_with(**o) && text != **o)
        };
        if options.contains(&text) {
            removed.push(text.to_owned());
            if let Some(value) = rest.next() {
                removed.push(value.to_string_lossy().into_owned());
            }
        } else if options.iter().any(|o| attached(&o)) {
            removed.push(text.to_owned());
        } else {
            kept.push(arg.clone());
        }
    }
    (kept, removed)
}
