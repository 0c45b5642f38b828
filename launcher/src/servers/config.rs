//! A server's config file, as its behaviour names it (`ConfigFile`): the one its command names,
//! else the one it reads by default. The plan, the web process and the pinned-count scan read
//! config files through here.

use std::ffi::OsString;
use std::path::Path;

use super::{behaviour, Server};

/// The text of `server`'s config file for this command (its arguments from `args_from` on): the
/// file named with one of its flags, else its default; None when it has none or it cannot be read.
pub fn read(server: Server, argv: &[OsString], args_from: usize, app_dir: &Path) -> Option<String> {
    let config = behaviour(server).config?;
    config_text(argv, args_from, config.flags, config.default, app_dir)
}

/// The config file a command names with one of `flags` (`-c FILE`, `--config FILE`,
/// `--config=FILE`) from `from` on, else `default` when it exists: relative to `app_dir`, read
/// the `files` way. None when there is none.
fn config_text(
    argv: &[OsString],
    from: usize,
    flags: &[&str],
    default: Option<&str>,
    app_dir: &std::path::Path,
) -> Option<String> {
    let args: Vec<&str> = argv.iter().skip(from).filter_map(|a| a.to_str()).collect();
    let named = args.iter().enumerate().find_map(|(i, arg)| {
        flags.iter().find_map(|flag| {
            if arg == flag {
                args.get(i + 1).copied()
            } else {
                arg.strip_prefix(flag)?.strip_prefix('=')
            }
        })
    });
    let path = app_dir.join(named.or(default)?);
    crate::files::read_text(&path, crate::files::MAX_BYTES).ok()
}
