//! The launch: what the lifecycle's launcher does before it starts a process.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{layer_types, Site, SYSTEM_PATH};
use crate::support::MemoryCgroup;

/// How long one exec.d program may take before the launch counts as failed.
const EXEC_D_TIMEOUT: Duration = Duration::from_secs(10);

/// A process start in the image, as the lifecycle's launcher makes it.
pub struct Launch<'a> {
    pub(super) site: &'a Site,
    pub(super) order: Vec<String>,
    pub(super) process_type: String,
    pub(super) env: BTreeMap<String, String>,
    pub(super) cgroup: Option<&'a MemoryCgroup>,
    pub(super) as_root: bool,
}

/// The environment the process gets, and what the exec.d programs wrote on stderr.
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

    /// Every program of the launch (exec.d programs and the process) runs in this cgroup, as
    /// everything in a container runs in its cgroup.
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

    /// Each buildpack's launch layers, in build order then name order.
    fn layers(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for id in &self.order {
            let buildpack = self.site.buildpack_layers(id);
            for (name, types) in layer_types(&buildpack) {
                if types.launch && buildpack.join(&name).is_dir() {
                    dirs.push(buildpack.join(name));
                }
            }
        }
        dirs
    }

    /// The environment after the layers' paths and env files, then every exec.d program.
    pub fn prepare(&self) -> Result<Prepared, String> {
        let mut env = self.env.clone();
        for id in &self.order {
            let layers: Vec<PathBuf> = self
                .layers()
                .into_iter()
                .filter(|dir| dir.parent() == Some(&self.site.buildpack_layers(id)))
                .collect();
            for layer in &layers {
                add_root_dir(&mut env, layer);
            }
            for layer in &layers {
                apply_env_dir(&mut env, &layer.join("env"));
                apply_env_dir(&mut env, &layer.join("env.launch"));
                apply_env_dir(&mut env, &layer.join("env.launch").join(&self.process_type));
            }
        }
        let mut exec_d_stderr = String::new();
        for layer in self.layers() {
            for dir in [
                layer.join("exec.d"),
                layer.join("exec.d").join(&self.process_type),
            ] {
                for program in files(&dir) {
                    let (set, stderr) = self.exec_d(&program, &env)?;
                    exec_d_stderr.push_str(&stderr);
                    env.extend(set);
                }
            }
        }
        Ok(Prepared { env, exec_d_stderr })
    }

    /// `program` as the launch runs it: the build user, the cgroup if any, the app directory.
    fn command(&self, program: &Path, args: &[&str], env: &BTreeMap<String, String>) -> Command {
        let mut command = if self.as_root {
            let mut command = Command::new(program);
            command.args(args).env_clear();
            command
        } else {
            self.site.user.command(program, args)
        };
        command.envs(env).current_dir(self.site.app());
        match self.cgroup {
            Some(cgroup) => {
                let mut wrapped = cgroup.wrap(&command);
                wrapped.current_dir(self.site.app());
                wrapped
            }
            None => command,
        }
    }

    /// Runs one exec.d program with fd 3 open on a pipe: what it set, and its stderr.
    fn exec_d(
        &self,
        program: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<(BTreeMap<String, String>, String), String> {
        // Close-on-exec: no other child of this test process (tests run in parallel) may hold
        // the write end, or the read would wait for that child's end.
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let write_fd = write.as_raw_fd();
        let mut command = self.command(program, &[], env);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: dup2 and fcntl are async-signal-safe. dup2 leaves the new fd 3 without
        // close-on-exec; if the pipe already is fd 3, the flag is cleared instead.
        unsafe {
            command.pre_exec(move || {
                let result = if write_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(write_fd, 3)
                };
                if result < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", program.display()))?;
        drop(write);
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let stderr_reader = std::thread::spawn(move || {
            let mut stderr = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut stderr);
            stderr
        });
        let reader = std::thread::spawn(move || {
            let mut output = Vec::new();
            let _ = fs::File::from(read).read_to_end(&mut output);
            output
        });
        let deadline = Instant::now() + EXEC_D_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} ran past {EXEC_D_TIMEOUT:?}", program.display()));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let output = reader.join().expect("reader");
        let stderr = stderr_reader.join().expect("reader");
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        if !status.success() {
            return Err(format!(
                "exec.d {} failed ({status}): the launch is aborted\n{stderr}",
                program.display()
            ));
        }
        let text = String::from_utf8(output).map_err(|e| e.to_string())?;
        let table: toml::Table = text.parse().map_err(|e| {
            format!(
                "exec.d {} wrote no valid TOML ({e}):\n{text}",
                program.display()
            )
        })?;
        let mut set = BTreeMap::new();
        for (name, value) in table {
            let value = value
                .as_str()
                .ok_or_else(|| format!("exec.d {}: {name} is not a string", program.display()))?;
            set.insert(name, value.to_owned());
        }
        Ok((set, stderr))
    }

    /// The process `argv` with the prepared environment (found on its PATH, as the launcher's
    /// direct processes are), ready to spawn.
    pub fn process(&self, prepared: &Prepared, argv: &[&str]) -> Command {
        let path = prepared.env.get("PATH").map_or(SYSTEM_PATH, String::as_str);
        let program = which::which_in(argv[0], Some(path), self.site.app())
            .unwrap_or_else(|e| panic!("{} not on the launch PATH {path}: {e}", argv[0]));
        self.command(&program, &argv[1..], &prepared.env)
    }
}

/// The files of `dir` (not directories; a symlink counts as a file), sorted by name.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// A layer's `bin/` and `lib/` before `PATH` and `LD_LIBRARY_PATH`.
fn add_root_dir(env: &mut BTreeMap<String, String>, layer: &Path) {
    for (sub, var) in [("bin", "PATH"), ("lib", "LD_LIBRARY_PATH")] {
        let dir = layer.join(sub);
        if dir.is_dir() {
            let value = match env.get(var).filter(|v| !v.is_empty()) {
                Some(old) => format!("{}:{old}", dir.display()),
                None => dir.display().to_string(),
            };
            env.insert(var.to_owned(), value);
        }
    }
}

/// Applies one env directory's files, in name order, by their suffixes: none or `.override`
/// sets, `.default` sets only an empty variable, `.prepend` and `.append` join with the
/// `<NAME>.delim` file's contents (nothing without one); `.delim` and unknown suffixes do nothing.
/// Contents are taken as they are, never evaluated.
pub fn apply_env_dir(env: &mut BTreeMap<String, String>, dir: &Path) {
    for file in files(dir) {
        // A symlink to a directory is passed over too.
        if file.is_dir() {
            continue;
        }
        let file_name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let (name, suffix) = file_name
            .split_once('.')
            .unwrap_or((&file_name, "override"));
        let value = fs::read_to_string(&file).expect("env file");
        let delim = fs::read_to_string(dir.join(format!("{name}.delim"))).unwrap_or_default();
        let current = env.get(name).cloned().unwrap_or_default();
        // The delimiter goes between the old value and the new only when there is an old one.
        let new = match suffix {
            "override" => value,
            "default" if current.is_empty() => value,
            "prepend" if current.is_empty() => value,
            "prepend" => format!("{value}{delim}{current}"),
            "append" if current.is_empty() => value,
            "append" => format!("{current}{delim}{value}"),
            _ => continue,
        };
        env.insert(name.to_owned(), new);
    }
}
