//! A stand-in for the Cloud Native Buildpack lifecycle, which cannot run here (it needs Go or
//! Docker): what the Buildpack API 0.10 and Platform specs, and the lifecycle's own launcher,
//! do with a buildpack, for the tests of bin/detect, bin/build and the exec.d program.
//!
//! - `Site::detect` and `Site::build` run bin/detect and bin/build as a non-root user, with the
//!   buildpack directory bind-mounted read-only (in a mount namespace of their own), the
//!   positional arguments and `CNB_*` variables, the platform's `env/` files as variables, and
//!   the app directory as the working directory.
//! - `Site::restore` makes the next build's layers from the last one's: cached layers with their
//!   metadata less `[types]`, launch-only layers' metadata without their directory.
//! - `Launch` starts a process as the lifecycle's launcher does: for every buildpack in build
//!   order, its launch layers in name order get `bin/` and `lib/` on the paths, then their
//!   `env/`, `env.launch/` and `env.launch/<process>/` files with their suffixes; then every
//!   exec.d program, in the same order, each run with the environment so far and its fd 3 output
//!   set over it; then the process itself, with that environment.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::MemoryCgroup;

pub const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long one exec.d program may take before the launch counts as failed.
const EXEC_D_TIMEOUT: Duration = Duration::from_secs(10);

// ---- The build user --------------------------------------------------------------------------------

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
        let user = User {
            uid: id("-u")?,
            gid: id("-g")?,
            name,
        };
        Ok(user)
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
        let deleted = Command::new("userdel").arg(&self.name).output();
        if !deleted.is_ok_and(|out| out.status.success()) {
            eprintln!("could not remove the test user {}", self.name);
        }
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

// ---- A platform: app, layers, platform dir ----------------------------------------------------

/// What the lifecycle escapes a buildpack id to for its layers directory.
pub fn escape_id(id: &str) -> String {
    id.replace('/', "_")
}

/// A build's directories in one temp dir that the build user can reach: the app
/// (`workspace`), `layers/<buildpack>`, `platform/env`, the user's home, and the user.
pub struct Site {
    dir: TempDir,
    pub user: User,
}

/// A Rust toolchain for the build user: the machine's, bind-mounted read-only.
pub struct Toolchain {
    pub cargo_home: PathBuf,
    pub rustup_home: PathBuf,
}

impl Toolchain {
    /// The toolchain the tests run with (`CARGO_HOME`, `RUSTUP_HOME`, or under `HOME`).
    pub fn current() -> Toolchain {
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
        let dir = |name: &str, default: &str| {
            std::env::var_os(name).map_or_else(|| home.join(default), PathBuf::from)
        };
        Toolchain {
            cargo_home: dir("CARGO_HOME", ".cargo"),
            rustup_home: dir("RUSTUP_HOME", ".rustup"),
        }
    }

    /// Where builds see it: one place for every build, outside any home directory (root's is
    /// closed to other users), so that cargo's fingerprints (which hold the registry's paths)
    /// match from one build to the next. Each mount lives in its own namespace.
    pub fn mounted() -> Toolchain {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cnb-toolchain");
        let toolchain = Toolchain {
            cargo_home: base.join("cargo"),
            rustup_home: base.join("rustup"),
        };
        for dir in [&toolchain.cargo_home, &toolchain.rustup_home] {
            fs::create_dir_all(dir).expect("mkdir mount point");
        }
        open_to_all(Path::new(env!("CARGO_TARGET_TMPDIR")));
        open_to_all(&base);
        toolchain
    }

    /// The read-only bind mounts that put the current toolchain at `mounted()`.
    fn mounts() -> [(PathBuf, PathBuf); 2] {
        let (current, mounted) = (Toolchain::current(), Toolchain::mounted());
        [
            (current.cargo_home, mounted.cargo_home),
            (current.rustup_home, mounted.rustup_home),
        ]
    }

    /// Its variables, and PATH with its bin directory after `first` (a shim) if given.
    fn env(first: Option<&Path>) -> [(&'static str, String); 3] {
        let mounted = Toolchain::mounted();
        let bin = mounted.cargo_home.join("bin");
        let path = match first {
            Some(dir) => format!("{}:{}:{SYSTEM_PATH}", dir.display(), bin.display()),
            None => format!("{}:{SYSTEM_PATH}", bin.display()),
        };
        [
            ("PATH", path),
            ("CARGO_HOME", mounted.cargo_home.display().to_string()),
            ("RUSTUP_HOME", mounted.rustup_home.display().to_string()),
        ]
    }
}

/// `program args`, as root, with the toolchain mounted where builds see it (bin/package, the
/// maintainer's step, reusing a build's cargo target dir).
pub fn with_toolchain(program: &Path, args: &[&Path]) -> Command {
    let mut command = in_namespace(&Toolchain::mounts(), false);
    command
        .arg(program)
        .args(args)
        .env_clear()
        .envs(Toolchain::env(None));
    command
}

/// `unshare --mount [--net] -- sh -c SCRIPT sh FROM TO... --`: the caller appends the program.
/// Each FROM is bind-mounted on TO and made read-only (root would ignore permission bits, not
/// EROFS); `unshare` makes the mounts private, and they end with the namespace.
fn in_namespace(mounts: &[(PathBuf, PathBuf)], offline: bool) -> Command {
    let script = r#"while [ "$1" != -- ]; do
  mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" "$2" || exit 90
  shift 2
done
shift
exec "$@""#;
    let mut command = Command::new("unshare");
    command.arg("--mount");
    if offline {
        command.arg("--net");
    }
    command.args(["--", "/bin/sh", "-c", script, "sh"]);
    for (from, to) in mounts {
        command.arg(from).arg(to);
    }
    command.arg("--");
    command
}

/// How a build runs beyond the platform's bare environment.
#[derive(Default)]
pub struct BuildOptions {
    /// Rust's toolchain on PATH, behind a `cargo` that records each call.
    pub cargo: bool,
    /// No network at all: a network namespace of its own, with nothing up.
    pub offline: bool,
}

impl BuildOptions {
    pub fn cargo() -> Self {
        BuildOptions {
            cargo: true,
            ..BuildOptions::default()
        }
    }

    pub fn offline() -> Self {
        BuildOptions {
            offline: true,
            ..BuildOptions::default()
        }
    }
}

impl Site {
    /// A site for the app in `app` (copied), with a new build user.
    pub fn new(app: &Path) -> Result<Site, String> {
        let user = User::create()?;
        let dir = TempDir::new().map_err(|e| e.to_string())?;
        open_to_all(dir.path());
        let site = Site { dir, user };
        for sub in ["workspace", "layers", "platform/env", "home", "shim"] {
            fs::create_dir_all(site.path(sub)).map_err(|e| e.to_string())?;
        }
        let status = Command::new("cp")
            .arg("-a")
            .arg(app.join("."))
            .arg(site.app())
            .status()
            .map_err(|e| e.to_string())?;
        assert!(status.success(), "copy {}", app.display());
        fs::write(site.path("plan.toml"), "").map_err(|e| e.to_string())?;
        for sub in ["workspace", "layers", "home", "shim", "plan.toml"] {
            site.user.chown(&site.path(sub));
        }
        Ok(site)
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    pub fn app(&self) -> PathBuf {
        self.path("workspace")
    }

    pub fn platform(&self) -> PathBuf {
        self.path("platform")
    }

    /// The layers root; a buildpack's own are in `layers/<escaped id>`.
    pub fn layers(&self) -> PathBuf {
        self.path("layers")
    }

    pub fn buildpack_layers(&self, id: &str) -> PathBuf {
        self.layers().join(escape_id(id))
    }

    /// A user-provided variable: `<platform>/env/NAME`.
    pub fn set_config_var(&self, name: &str, value: &str) {
        fs::write(self.platform().join("env").join(name), value).expect("write config var");
    }

    /// The arguments `cargo` was called with during builds with `BuildOptions::cargo`.
    pub fn cargo_calls(&self) -> Option<String> {
        fs::read_to_string(self.path("shim/cargo-calls")).ok()
    }

    /// `bin/detect PLATFORM PLAN` as the lifecycle runs it.
    pub fn detect(&self, buildpack: &Path) -> Output {
        let plan = self.path("build-plan.toml");
        fs::write(&plan, "").expect("write build plan");
        self.user.chown(&plan);
        let env = self.phase_env(buildpack, &[("CNB_BUILD_PLAN_PATH", &plan)], SYSTEM_PATH);
        let args = [self.platform(), plan];
        self.run_phase(buildpack, "detect", &args, env, &BuildOptions::default())
    }

    /// `bin/build LAYERS PLATFORM PLAN` for the buildpack `id` as the lifecycle runs it.
    pub fn build(&self, buildpack: &Path, id: &str, options: &BuildOptions) -> Output {
        let layers = self.buildpack_layers(id);
        fs::create_dir_all(&layers).expect("mkdir layers");
        self.user.chown(&layers);
        let plan = self.path("plan.toml");
        let mut env = self.phase_env(
            buildpack,
            &[("CNB_LAYERS_DIR", &layers), ("CNB_BP_PLAN_PATH", &plan)],
            SYSTEM_PATH,
        );
        if options.cargo {
            self.cargo_shim();
            let toolchain = Toolchain::env(Some(&self.path("shim")));
            env.extend(toolchain.map(|(k, v)| (k.to_owned(), v)));
        }
        let args = [layers, self.platform(), plan];
        self.run_phase(buildpack, "build", &args, env, options)
    }

    /// The environment of bin/detect and bin/build: the platform's env files over a bare one,
    /// then the lifecycle's variables.
    fn phase_env(
        &self,
        buildpack: &Path,
        paths: &[(&str, &Path)],
        path: &str,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            ("PATH".to_owned(), path.to_owned()),
            ("HOME".to_owned(), self.path("home").display().to_string()),
        ]);
        for entry in fs::read_dir(self.platform().join("env"))
            .expect("platform env")
            .flatten()
        {
            let value = fs::read_to_string(entry.path()).expect("read config var");
            env.insert(entry.file_name().to_string_lossy().into_owned(), value);
        }
        let arch = match std::env::consts::ARCH {
            "aarch64" => "arm64",
            _ => "amd64",
        };
        let platform = self.platform().display().to_string();
        let fixed = [
            ("CNB_BUILDPACK_DIR", buildpack.display().to_string()),
            ("CNB_PLATFORM_DIR", platform),
            ("CNB_TARGET_OS", "linux".to_owned()),
            ("CNB_TARGET_ARCH", arch.to_owned()),
            ("CNB_TARGET_DISTRO_NAME", "ubuntu".to_owned()),
            ("CNB_TARGET_DISTRO_VERSION", "24.04".to_owned()),
        ];
        env.extend(fixed.map(|(k, v)| (k.to_owned(), v)));
        env.extend(
            paths
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.display().to_string())),
        );
        env
    }

    /// Runs `bin/<phase>` as the build user in a mount namespace where the buildpack (and the
    /// toolchain, when asked for) are read-only bind mounts.
    fn run_phase(
        &self,
        buildpack: &Path,
        phase: &str,
        args: &[PathBuf],
        env: BTreeMap<String, String>,
        options: &BuildOptions,
    ) -> Output {
        let mut mounts = vec![(buildpack.to_path_buf(), buildpack.to_path_buf())];
        if options.cargo {
            mounts.extend(Toolchain::mounts());
        }
        let mut command = in_namespace(&mounts, options.offline);
        let program = buildpack.join("bin").join(phase);
        let user = self.user.command(&program, &[]);
        command
            .arg(user.get_program())
            .args(user.get_args())
            .args(args)
            .env_clear()
            .envs(env)
            .current_dir(self.app())
            .stdin(Stdio::null());
        command.output().expect("run the build phase")
    }

    /// A `cargo` first on the build's PATH that records each call, then runs the toolchain's.
    fn cargo_shim(&self) {
        let shim = self.path("shim/cargo");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            self.path("shim/cargo-calls").display(),
            Toolchain::mounted().cargo_home.join("bin/cargo").display()
        );
        fs::write(&shim, script).expect("write shim");
        fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// The layers the lifecycle hands the next build, from `previous` (a layers root of an earlier
    /// build): each cached layer with its metadata less `[types]`; for a launch layer that is not
    /// cached, the metadata alone.
    pub fn restore(&self, previous: &Path) {
        for buildpack in fs::read_dir(previous).expect("read layers").flatten() {
            let to = self.layers().join(buildpack.file_name());
            fs::create_dir_all(&to).expect("mkdir");
            for (name, types) in layer_types(&buildpack.path()) {
                if !types.cache && !types.launch {
                    continue;
                }
                let metadata = fs::read_to_string(buildpack.path().join(format!("{name}.toml")))
                    .expect("layer metadata");
                fs::write(to.join(format!("{name}.toml")), without_types(&metadata))
                    .expect("write metadata");
                if types.cache {
                    let status = Command::new("cp")
                        .arg("-a")
                        .arg(buildpack.path().join(&name))
                        .arg(to.join(&name))
                        .status()
                        .expect("cp");
                    assert!(status.success(), "restore {name}");
                }
            }
        }
        self.user.chown(&self.layers());
    }

    /// A launch of the image these layers make, for the buildpacks `order` (build order).
    pub fn launch<'a>(&'a self, order: &[&str], process_type: &str) -> Launch<'a> {
        Launch {
            site: self,
            order: order.iter().map(|id| (*id).to_owned()).collect(),
            process_type: process_type.to_owned(),
            env: BTreeMap::from([
                ("PATH".to_owned(), SYSTEM_PATH.to_owned()),
                ("HOME".to_owned(), self.path("home").display().to_string()),
            ]),
            cgroup: None,
            as_root: false,
        }
    }
}

/// Lets every user into `dir` (a TempDir is created 0700).
pub fn open_to_all(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A layer's `[types]`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Types {
    pub launch: bool,
    pub build: bool,
    pub cache: bool,
}

/// Each `<layer>.toml` of a buildpack's layers directory, by layer name (sorted), with its types.
pub fn layer_types(buildpack_layers: &Path) -> Vec<(String, Types)> {
    let mut layers: Vec<(String, Types)> = fs::read_dir(buildpack_layers)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let name = file.strip_suffix(".toml")?.to_owned();
            if ["launch", "build", "store"].contains(&name.as_str()) {
                return None;
            }
            let text = fs::read_to_string(entry.path()).ok()?;
            let table: toml::Table = text.parse().expect("layer metadata is TOML");
            let types = table.get("types").and_then(|t| t.as_table());
            let flag = |key: &str| {
                types
                    .and_then(|t| t.get(key))
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false)
            };
            let types = Types {
                launch: flag("launch"),
                build: flag("build"),
                cache: flag("cache"),
            };
            Some((name, types))
        })
        .collect();
    layers.sort_by(|a, b| a.0.cmp(&b.0));
    layers
}

/// Layer metadata without its `[types]` table, as the lifecycle restores it.
fn without_types(metadata: &str) -> String {
    let mut inside = false;
    let mut kept = String::new();
    for line in metadata.lines() {
        if line.trim_start().starts_with('[') {
            inside = line.trim() == "[types]";
        }
        if !inside {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

// ---- The launcher ------------------------------------------------------------------------------------

/// A process start in the image, as the lifecycle's launcher makes it.
pub struct Launch<'a> {
    site: &'a Site,
    order: Vec<String>,
    process_type: String,
    env: BTreeMap<String, String>,
    cgroup: Option<&'a MemoryCgroup>,
    as_root: bool,
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
