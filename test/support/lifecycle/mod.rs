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

pub mod launch;
pub mod toolchain;
pub mod user;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::output_within;
use launch::Launch;
use toolchain::{in_namespace, BuildOptions, Toolchain};
use user::User;

pub const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The deadline of one bin/detect or bin/build (and of bin/package in the tests).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// What the lifecycle escapes a buildpack id to for its layers directory.
pub fn escape_id(id: &str) -> String {
    id.replace('/', "_")
}

/// A build's directories in one temp dir that the build user can reach: the app
/// (`workspace`), `layers/<buildpack>`, `platform/env`, the user's home, and the user.
pub struct Site {
    /// First: fields drop in declaration order, and `User::drop` kills the build user's processes,
    /// which must be gone before the directory they may still be writing in is removed.
    pub user: User,
    dir: TempDir,
}

impl Site {
    /// A site for the app in `app` (copied), with a new build user.
    pub fn new(app: &Path) -> Result<Site, String> {
        let user = User::create()?;
        let dir = TempDir::new().map_err(|e| e.to_string())?;
        open_to_all(dir.path());
        let site = Site { user, dir };
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
        // A cold build compiles the launcher: about 30 s here, far more on a loaded machine.
        output_within(&mut command, BUILD_TIMEOUT)
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
