//! An app home laid out as bin/compile leaves it, booted the way a dyno boots: every
//! `.profile.d` script sourced by bash in glob order with only HOME and PATH set.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

use super::harness::LAUNCHER;

/// An app home laid out as bin/compile leaves it: the binary at .launcher/bin and the script in
/// .profile.d, plus optional extra .profile.d scripts.
pub struct Slug {
    home: TempDir,
}

impl Slug {
    pub fn new() -> Self {
        let home = TempDir::new().expect("temp dir");
        let bin = home.path().join(".launcher/bin");
        fs::create_dir_all(&bin).expect("mkdir");
        fs::copy(LAUNCHER, bin.join("launcher")).expect("copy launcher");
        let script = Command::new(LAUNCHER)
            .args(["profile", "--script"])
            .output()
            .expect("run launcher");
        assert!(script.status.success());
        let profile_d = home.path().join(".profile.d");
        fs::create_dir_all(&profile_d).expect("mkdir");
        fs::write(profile_d.join("zzz-launcher.sh"), script.stdout).expect("write script");
        Slug { home }
    }

    pub fn path(&self) -> &Path {
        self.home.path()
    }

    /// Sources every .profile.d script in glob order, as a dyno does, then runs `then` (shell
    /// code written by the test, never by a config var) and returns its output.
    pub fn boot(&self, shell_options: &str, env: &[(&str, &str)], then: &str) -> Output {
        let script = format!(
            "{shell_options}\nfor f in \"$HOME\"/.profile.d/*.sh; do source \"$f\"; done\n{then}"
        );
        Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &script])
            // Not the slug: the script must find its files through HOME, as on a dyno.
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.path())
            .envs(env.iter().copied())
            .output()
            .expect("run bash")
    }

    /// The variables after boot, as `NAME=value` lines for the launcher's names.
    pub fn booted_vars(&self, shell_options: &str, env: &[(&str, &str)]) -> Vec<String> {
        let output = self.boot(
            shell_options,
            env,
            "env | grep -E '^(WEB_CONCURRENCY|LAUNCHER_|DYNO_RAM)' | sort",
        );
        assert!(
            output.status.success(),
            "boot failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
