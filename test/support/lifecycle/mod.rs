//! The Cloud Native Buildpack lifecycle, driven as a platform drives it: the reference lifecycle's
//! own `detector`, `builder` and `launcher` (built by test/install-cnb-tools, `tools`), with the
//! Platform API's directory layout in one temp dir per build, every phase run as a non-root user
//! with each buildpack bind-mounted read-only at `<site>/cnb/buildpacks/<id>/<version>`.
//!
//! Two steps stand in for what the lifecycle cannot do offline, where it writes or reads an image
//! (a registry or a Docker daemon): `Site::export` makes the image's layers directory (the launch
//! layers and `config/metadata.toml`, as the exporter puts them in the image) for the launcher, and
//! `Site::restore` puts an earlier build's cache in place (what the exporter caches and the
//! restorer brings back).

pub mod launch;
pub mod toolchain;
pub mod tools;
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
/// The deadline of one lifecycle phase (and of bin/package in the tests).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// What the lifecycle escapes a buildpack id to for its directories.
pub fn escape_id(id: &str) -> String {
    id.replace('/', "_")
}

/// A buildpack directory's id and version, from its buildpack.toml.
pub fn descriptor_id(buildpack: &Path) -> (String, String) {
    let text = fs::read_to_string(buildpack.join("buildpack.toml")).expect("buildpack.toml");
    let toml: toml::Table = text.parse().expect("buildpack.toml is TOML");
    let field = |key: &str| toml["buildpack"][key].as_str().expect(key).to_owned();
    (field("id"), field("version"))
}

/// A build's directories in one temp dir that the build user can reach: the app (`workspace`),
/// `layers`, `platform/env`, `cnb/buildpacks`, the user's home, the exported image's `image/`,
/// and the user.
pub struct Site {
    /// First: fields drop in declaration order, and `User::drop` kills the build user's processes,
    /// which must be gone before the directory they may still be writing in is removed.
    pub user: User,
    dir: TempDir,
    /// The run image's target, as analyzed.toml gives it to the detector and the builder.
    pub distro: (String, String),
}

impl Site {
    /// A site for the app in `app` (copied), with a new build user.
    pub fn new(app: &Path) -> Result<Site, String> {
        tools::lifecycle()?;
        let user = User::create()?;
        let dir = TempDir::new().map_err(|e| e.to_string())?;
        open_to_all(dir.path());
        let distro = ("ubuntu".to_owned(), "24.04".to_owned());
        let site = Site { user, dir, distro };
        for sub in [
            "workspace",
            "layers",
            "platform/env",
            "home",
            "shim",
            "cnb/buildpacks",
        ] {
            fs::create_dir_all(site.path(sub)).map_err(|e| e.to_string())?;
        }
        open_to_all(&site.path("cnb"));
        let status = Command::new("cp")
            .arg("-a")
            .arg(app.join("."))
            .arg(site.app())
            .status()
            .map_err(|e| e.to_string())?;
        assert!(status.success(), "copy {}", app.display());
        for sub in ["workspace", "layers", "home", "shim"] {
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

    /// The detector on one group of `buildpacks` (in order): group.toml and plan.toml in the
    /// layers directory when it passes.
    pub fn detect(&self, buildpacks: &[&Path]) -> Output {
        self.write_platform_files(buildpacks);
        let args = self.phase_args(&[
            ("-order", self.path("order.toml")),
            ("-analyzed", self.layers().join("analyzed.toml")),
            ("-group", self.layers().join("group.toml")),
            ("-plan", self.layers().join("plan.toml")),
        ]);
        self.run_phase("detector", buildpacks, &args, &BuildOptions::default())
    }

    /// The detector, then (if it passed) the builder, on one group of `buildpacks`; their output
    /// together (the builder writes a buildpack's stdout and stderr both to its own stdout).
    pub fn build(&self, buildpacks: &[&Path], options: &BuildOptions) -> Output {
        let detected = self.detect(buildpacks);
        if !detected.status.success() {
            return detected;
        }
        if options.cargo {
            self.cargo_shim();
            // The builder passes its own PATH and HOME to buildpacks, no other variable: the
            // toolchain's homes are config vars, as `pack build --env` would give them.
            let mounted = Toolchain::mounted();
            let home = |dir: &Path| dir.display().to_string();
            self.set_config_var("CARGO_HOME", &home(&mounted.cargo_home));
            self.set_config_var("RUSTUP_HOME", &home(&mounted.rustup_home));
        }
        let args = self.phase_args(&[
            ("-analyzed", self.layers().join("analyzed.toml")),
            ("-group", self.layers().join("group.toml")),
            ("-plan", self.layers().join("plan.toml")),
        ]);
        let mut built = self.run_phase("builder", buildpacks, &args, options);
        let mut stdout = detected.stdout;
        stdout.append(&mut built.stdout);
        let mut stderr = detected.stderr;
        stderr.append(&mut built.stderr);
        Output {
            status: built.status,
            stdout,
            stderr,
        }
    }

    /// order.toml (one group: `buildpacks`) and analyzed.toml (the run image's target, as the
    /// analyzer writes it).
    fn write_platform_files(&self, buildpacks: &[&Path]) {
        let mut order = String::from("[[order]]\n");
        for buildpack in buildpacks {
            let (id, version) = descriptor_id(buildpack);
            order.push_str(&format!(
                "[[order.group]]\nid = \"{id}\"\nversion = \"{version}\"\n"
            ));
        }
        fs::write(self.path("order.toml"), order).expect("write order.toml");
        let arch = match std::env::consts::ARCH {
            "aarch64" => "arm64",
            _ => "amd64",
        };
        let analyzed = format!(
            "[run-image]\nreference = \"run-image\"\n[run-image.target]\nos = \"linux\"\n\
             arch = \"{arch}\"\n[run-image.target.distro]\nname = \"{}\"\nversion = \"{}\"\n",
            self.distro.0, self.distro.1
        );
        let path = self.layers().join("analyzed.toml");
        fs::write(&path, analyzed).expect("write analyzed.toml");
        self.user.chown(&path);
    }

    /// The flags every phase takes, then `more`.
    fn phase_args(&self, more: &[(&str, PathBuf)]) -> Vec<String> {
        let common = [
            ("-app", self.app()),
            ("-buildpacks", self.path("cnb/buildpacks")),
            ("-layers", self.layers()),
            ("-platform", self.platform()),
        ];
        let mut args = Vec::new();
        for (flag, path) in common.iter().chain(more) {
            args.push((*flag).to_owned());
            args.push(path.display().to_string());
        }
        args
    }

    /// Runs the lifecycle's `phase` as the build user in a mount namespace where each buildpack
    /// is a read-only bind mount in the buildpacks directory (and the toolchain, when asked for).
    fn run_phase(
        &self,
        phase: &str,
        buildpacks: &[&Path],
        args: &[String],
        options: &BuildOptions,
    ) -> Output {
        let mut mounts = Vec::new();
        for buildpack in buildpacks {
            let (id, version) = descriptor_id(buildpack);
            let at = self
                .path("cnb/buildpacks")
                .join(escape_id(&id))
                .join(version);
            fs::create_dir_all(&at).expect("mkdir buildpack mount point");
            open_to_all(at.parent().expect("id dir"));
            mounts.push((buildpack.to_path_buf(), at));
        }
        if options.cargo {
            mounts.extend(Toolchain::mounts());
        }
        let path = if options.cargo {
            Toolchain::path(Some(&self.path("shim")))
        } else {
            SYSTEM_PATH.to_owned()
        };
        let env = BTreeMap::from([
            ("PATH", path),
            ("HOME", self.path("home").display().to_string()),
            ("CNB_PLATFORM_API", tools::PLATFORM_API.to_owned()),
            ("CNB_NO_COLOR", "true".to_owned()),
        ]);
        let mut command = in_namespace(&mounts, options.offline);
        let program = tools::lifecycle().expect("lifecycle").join(phase);
        let user = self.user.command(&program, &[]);
        command
            .arg(user.get_program())
            .args(user.get_args())
            .args(args)
            .env_clear()
            .envs(env)
            .current_dir(self.app())
            .stdin(Stdio::null());
        // A cold build compiles the launcher: minutes on a loaded machine.
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

    /// Stands in for the restorer: puts the cache of an earlier build (`previous`, its layers
    /// root) in place, as the lifecycle hands it to the next build: each cached layer with its
    /// metadata less `[types]`; for a launch layer that is not cached, the metadata alone.
    pub fn restore(&self, previous: &Path) {
        for buildpack in fs::read_dir(previous).expect("read layers").flatten() {
            if !buildpack.path().is_dir() || buildpack.file_name() == "config" {
                continue;
            }
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
                    copy(&buildpack.path().join(&name), &to.join(&name));
                }
            }
        }
        self.user.chown(&self.layers());
    }

    /// Stands in for the exporter: `image/layers`, the layers directory of the image this build
    /// makes, as the launcher finds it there: `config/metadata.toml` and each buildpack's launch
    /// layers with their metadata (no cache-only or build-only layer, no `<buildpack>.toml`
    /// files). Made anew at each call.
    pub fn export(&self) -> PathBuf {
        let image = self.path("image/layers");
        let _ = fs::remove_dir_all(&image);
        fs::create_dir_all(image.join("config")).expect("mkdir image");
        fs::copy(
            self.layers().join("config/metadata.toml"),
            image.join("config/metadata.toml"),
        )
        .expect("the builder's config/metadata.toml");
        for buildpack in fs::read_dir(self.layers()).expect("read layers").flatten() {
            if !buildpack.path().is_dir() || buildpack.file_name() == "config" {
                continue;
            }
            let to = image.join(buildpack.file_name());
            fs::create_dir_all(&to).expect("mkdir");
            for (name, types) in layer_types(&buildpack.path()) {
                let layer = buildpack.path().join(&name);
                if types.launch && layer.is_dir() {
                    copy(&layer, &to.join(&name));
                    let metadata = format!("{name}.toml");
                    fs::copy(buildpack.path().join(&metadata), to.join(metadata))
                        .expect("copy metadata");
                }
            }
        }
        self.user.chown(&self.path("image"));
        image
    }

    /// A start of the image this build made, as its entrypoint for `process_type` does it.
    pub fn launch(&self, process_type: &str) -> Launch<'_> {
        Launch {
            site: self,
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

/// `cp -a`: a file or tree with its modes and links.
pub fn copy(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
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
