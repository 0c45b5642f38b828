//! The build user: the lifecycle builds as a non-root user; each test makes its own.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// A system user made for one test (`useradd`), removed on drop; the lifecycle builds as one.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// useradd and userdel lock /etc/passwd: one at a time.
static ACCOUNTS: Mutex<()> = Mutex::new(());

impl User {
    pub fn create() -> Result<User, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale_users();
        let name = format!(
            "cnbt-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let added = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", &name])
            .output()
            .map_err(|e| format!("useradd: {e}"))?;
        if !added.status.success() {
            return Err(format!(
                "useradd {name} failed (it needs root): {}",
                String::from_utf8_lossy(&added.stderr).trim()
            ));
        }
        let id = |flag: &str| -> Result<u32, String> {
            let out = Command::new("id").args([flag, &name]).output();
            let out = out.map_err(|e| format!("id: {e}"))?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|_| format!("id {flag} {name}: no number"))
        };
        match (id("-u"), id("-g")) {
            (Ok(uid), Ok(gid)) => Ok(User { name, uid, gid }),
            // No User to drop yet (and its drop would wait for the lock held here): the account
            // useradd made is removed now, or every later run would find it left behind.
            (Err(e), _) | (_, Err(e)) => {
                userdel(&name);
                Err(e)
            }
        }
    }

    /// Gives `path` and everything under it to this user.
    pub fn chown(&self, path: &Path) {
        let owner = format!("{}:{}", self.uid, self.gid);
        let status = Command::new("chown")
            .args(["-R", &owner])
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success(), "chown -R {owner} {}", path.display());
    }

    /// `program args` run as this user, through setpriv (util-linux), environment as set on the
    /// returned command.
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        // By its path: the environment given to the command may have no PATH that finds it.
        let setpriv = which::which("setpriv").expect("setpriv (util-linux) on PATH");
        let mut command = Command::new(setpriv);
        command
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--clear-groups", "--"])
            .arg(program)
            .args(args)
            .env_clear();
        command
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("pkill")
            .args(["-KILL", "-U", &self.uid.to_string()])
            .status();
        userdel(&self.name);
    }
}

/// Removes the account `name`; the caller holds `ACCOUNTS`.
fn userdel(name: &str) {
    let deleted = Command::new("userdel").arg(name).output();
    if !deleted.is_ok_and(|out| out.status.success()) {
        eprintln!("could not remove the test user {name}");
    }
}

/// Users of earlier runs whose test process is gone (a run that was killed).
fn remove_stale_users() {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for name in passwd.lines().filter_map(|line| line.split(':').next()) {
        let Some(pid) = name.strip_prefix("cnbt-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("userdel").arg(name).status();
        }
    }
}
