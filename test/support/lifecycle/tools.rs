//! The reference CNB tools the tests drive: the lifecycle (its phases and its launcher) and pack,
//! built once per machine by test/install-cnb-tools into `LAUNCHER_TEST_CNB_TOOLS` (test/run sets
//! it), and copied once per test process into a directory every user can read, since the build
//! user cannot reach root's cache.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::open_to_all;
use crate::support::run_dir;

pub const LIFECYCLE_VERSION: &str = "0.21.17";
pub const PACK_VERSION: &str = "0.40.6";
/// The Platform API the tests speak to the lifecycle: the newest it supports.
pub const PLATFORM_API: &str = "0.15";

/// The installed tools' directory, or why there is none.
fn installed() -> Result<PathBuf, String> {
    let dir = std::env::var_os("LAUNCHER_TEST_CNB_TOOLS").ok_or(
        "LAUNCHER_TEST_CNB_TOOLS is not set: run the tests through test/run, which builds the CNB \
         lifecycle and pack with test/install-cnb-tools",
    )?;
    Ok(PathBuf::from(dir))
}

fn installed_file(sub: &str) -> Result<PathBuf, String> {
    let file = installed()?.join(sub);
    if file.is_file() {
        Ok(file)
    } else {
        Err(format!(
            "no {} (test/install-cnb-tools builds it; it needs Go, and said why it did not)",
            file.display()
        ))
    }
}

/// `<dir>/lifecycle` (with `detector` and `builder` linked to it) and `<dir>/launcher`, readable
/// by every user.
pub fn lifecycle() -> Result<&'static Path, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(copy_lifecycle)
        .as_deref()
        .map_err(Clone::clone)
}

fn copy_lifecycle() -> Result<PathBuf, String> {
    let from = format!("lifecycle-{LIFECYCLE_VERSION}");
    let (lifecycle, launcher) = (
        installed_file(&format!("{from}/lifecycle"))?,
        installed_file(&format!("{from}/launcher"))?,
    );
    let run = run_dir(&std::env::temp_dir(), "launcher-cnb-lifecycle");
    open_to_all(run.parent().expect("base"));
    open_to_all(&run);
    let dir = run.join("lifecycle");
    fs::create_dir(&dir).map_err(|e| e.to_string())?;
    open_to_all(&dir);
    for (file, name) in [(&lifecycle, "lifecycle"), (&launcher, "launcher")] {
        fs::copy(file, dir.join(name)).map_err(|e| format!("copy {}: {e}", file.display()))?;
    }
    for phase in ["detector", "builder"] {
        symlink("lifecycle", dir.join(phase)).map_err(|e| e.to_string())?;
    }
    Ok(dir)
}

/// pack, as built by test/install-cnb-tools.
pub fn pack() -> Result<PathBuf, String> {
    installed_file(&format!("pack-{PACK_VERSION}/pack"))
}
