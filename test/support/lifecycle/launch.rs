//! A start of the image a build made: the lifecycle's own launcher on the exported layers
//! directory (`Site::export`), started as an image's entrypoint starts it.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{tools, Site};
use crate::support::{output_within, text, MemoryCgroup};

/// A process start in the image.
pub struct Launch<'a> {
    pub(super) site: &'a Site,
    pub(super) process_type: String,
    pub(super) env: BTreeMap<String, String>,
    pub(super) cgroup: Option<&'a MemoryCgroup>,
    pub(super) as_root: bool,
}

/// The environment a process gets from the launcher, and what the launcher and the exec.d
/// programs wrote on stderr.
pub struct Prepared {
    pub env: BTreeMap<String, String>,
    pub exec_d_stderr: String,
}

impl<'a> Launch<'a> {
    /// A variable of the platform's runtime environment (a config var, `DYNO`, `PORT`).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The launcher and everything it starts run in this cgroup, as everything in a container
    /// runs in its cgroup.
    pub fn in_cgroup(mut self, cgroup: &'a MemoryCgroup) -> Self {
        self.cgroup = Some(cgroup);
        self
    }

    /// Runs the launch as root instead of the build user: for a process from the test venv, whose
    /// Python may live under /root (pyenv), where no other user can go.
    pub fn by_root(mut self) -> Self {
        self.as_root = true;
        self
    }

    /// The environment the launcher gives a command after every layer's env files and every
    /// exec.d program: it starts `env -0` as a user's command (`launcher -- env -0`).
    pub fn prepare(&self) -> Result<Prepared, String> {
        let launcher = tools::lifecycle()?.join("launcher");
        let mut command = self.command(&launcher, &["--", "/usr/bin/env", "-0"]);
        let out = output_within(&mut command, Duration::from_secs(60));
        let stderr = text(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "the launcher failed ({}): {stderr}{}",
                out.status,
                text(&out.stdout)
            ));
        }
        let env = text(&out.stdout)
            .split('\0')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(Prepared {
            env,
            exec_d_stderr: stderr,
        })
    }

    /// The process type, started by the launcher under its name: `<site>/cnb/process/<type>`,
    /// a link to the launcher, as an image's `/cnb/process/<type>` entrypoint.
    pub fn process(&self) -> Command {
        let process = self.site.path("cnb/process");
        std::fs::create_dir_all(&process).expect("mkdir cnb/process");
        let entrypoint = process.join(&self.process_type);
        if !entrypoint.exists() {
            let launcher = tools::lifecycle().expect("lifecycle").join("launcher");
            symlink(launcher, &entrypoint).expect("link the process type");
        }
        self.command(&entrypoint, &[])
    }

    /// `program args` as the image runs them: the exported layers, the app directory, the
    /// platform's variables; the build user (or root), the cgroup if any.
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let image = self.site.export();
        let mut command = if self.as_root {
            let mut command = Command::new(program);
            command.args(args).env_clear();
            command
        } else {
            self.site.user.command(program, args)
        };
        command
            .envs(&self.env)
            .env("CNB_LAYERS_DIR", image)
            .env("CNB_APP_DIR", self.site.app())
            .env("CNB_PLATFORM_API", tools::PLATFORM_API)
            .env("CNB_NO_COLOR", "true")
            .current_dir(self.site.app());
        match self.cgroup {
            Some(cgroup) => {
                let mut wrapped = cgroup.wrap(&command);
                wrapped.current_dir(self.site.app());
                wrapped
            }
            None => command,
        }
    }
}
