//! The release tarball, used: extracted into a fresh directory, it builds the Flask fixture as a
//! classic buildpack and as a CNB with no cargo on PATH and no network, pack packages it offline
//! for both platforms, and a tampered binary in it stops both kinds of build. The tarball is the
//! one the release workflow's steps made (`release::release`, test/cnb/release.rs).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::release::{release, tamper, version, Release, ARCH};
use super::support::lifecycle::toolchain::BuildOptions;
use super::support::lifecycle::{open_to_all, tools, Site, BUILD_TIMEOUT, SYSTEM_PATH};
use super::support::{fixture, needs_machine, output_within};
use super::{copy, log, open_temp_dir, text, FIR_WEB, ID};

/// The release tarball extracted into `dir/buildpack`, a directory the build user can read.
fn extracted(release: &Release, dir: &Path) -> PathBuf {
    let tree = dir.join("buildpack");
    fs::create_dir(&tree).expect("mkdir");
    let tarball = release
        .dist
        .join(format!("launcher-buildpack-{}.tgz", version()));
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(&tree)
        .output()
        .expect("tar");
    assert!(out.status.success(), "{}", log(&out));
    open_to_all(&tree);
    tree
}

/// `bin/compile` of `buildpack` for the Flask fixture in `dir`, as the platform runs it, with no
/// network (a network namespace of its own) and no cargo on PATH. Returns the app dir.
fn compile_offline(buildpack: &Path, dir: &Path) -> (PathBuf, Output) {
    let (app, cache, env) = (dir.join("app"), dir.join("cache"), dir.join("env"));
    for sub in [&cache, &env] {
        fs::create_dir_all(sub).expect("mkdir");
    }
    copy(&fixture("flask"), &app);
    assert!(
        SYSTEM_PATH
            .split(':')
            .all(|bin| !Path::new(bin).join("cargo").exists()),
        "cargo on {SYSTEM_PATH}"
    );
    let mut compile = Command::new("unshare");
    compile
        .args(["--net", "--"])
        .arg(buildpack.join("bin/compile"))
        .args([&app, &cache, &env])
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("HOME", dir)
        .env("STACK", "heroku-24");
    (app, output_within(&mut compile, BUILD_TIMEOUT))
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_release_tarball_builds_the_flask_app_as_both_kinds_with_no_cargo_and_no_network() {
    needs_machine(|| {
        let release = release()?;
        let dir = open_temp_dir();
        let tree = extracted(release, dir.path());
        let prebuilt = tree.join(format!("bin/prebuilt/launcher-linux-{ARCH}"));
        let sha = sha256_of(&prebuilt);
        let used = format!(
            "Using the prebuilt binary in the buildpack (launcher-linux-{ARCH}, SHA-256 verified"
        );

        // A Cloud Native Buildpack, under the real lifecycle: non-root, read-only, offline.
        let site = Site::new(&fixture("flask"))?;
        let out = site.build(&[&tree], &BuildOptions::offline());
        assert!(out.status.success(), "{}", log(&out));
        assert!(text(&out.stdout).contains(&used), "{}", log(&out));
        let layer = site.buildpack_layers(ID);
        assert_eq!(sha256_of(&layer.join("launcher/bin/launcher")), sha);
        assert!(
            !layer.join("source-build").exists(),
            "an unused cache layer"
        );
        let prepared = site.launch("web").env("DYNO", FIR_WEB).prepare()?;
        assert_eq!(prepared.env["WEB_CONCURRENCY_SET_BY"], "launcher");

        // A classic buildpack: bin/compile, then a dyno's boot of the slug.
        let (app, out) = compile_offline(&tree, &dir.path().join("classic"));
        assert!(out.status.success(), "{}", log(&out));
        assert!(text(&out.stdout).contains(&used), "{}", log(&out));
        assert_eq!(sha256_of(&app.join(".launcher/bin/launcher")), sha);
        let boot = Command::new("bash")
            .args([
                "-c",
                "source .profile.d/zzz-launcher.sh && echo \"$WEB_CONCURRENCY_SET_BY\"",
            ])
            .current_dir(&app)
            .env_clear()
            .env("HOME", &app)
            .env("PATH", SYSTEM_PATH)
            .env("DYNO", "web.1")
            .output()
            .expect("boot");
        assert_eq!(text(&boot.stdout), "launcher\n", "{}", log(&boot));
        Ok(())
    });
}

/// The real pack (test/install-cnb-tools) makes the release image's content from the tarball's
/// tree with no network: one OCI layout per platform of `[[targets]]`, each holding the whole
/// tree at `/cnb/buildpacks/launcher/<version>`, both binaries included. Publishing it (the
/// release workflow's `--publish`) needs a registry and is not run here.
#[test]
fn pack_packages_the_release_tree_offline_for_both_platforms() {
    needs_machine(|| {
        let pack = tools::pack()?;
        let release = release()?;
        let dir = open_temp_dir();
        let tree = extracted(release, dir.path());
        let out = dir.path().join("out");
        for sub in [&out, &dir.path().join("home")] {
            fs::create_dir_all(sub).expect("mkdir");
        }
        let mut command = Command::new("unshare");
        command
            .args(["--net", "--"])
            .arg(&pack)
            .args(["buildpack", "package"])
            .arg(out.join("launcher.cnb"))
            .arg("--config")
            .arg(tree.join("package.toml"))
            .args(["--format", "file"])
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("HOME", dir.path().join("home"))
            .current_dir(&tree);
        let packaged = output_within(&mut command, BUILD_TIMEOUT);
        assert!(packaged.status.success(), "{}", log(&packaged));
        let root = format!("cnb/buildpacks/{ID}/{}", version());
        for platform in ["amd64", "arm64"] {
            let file = out.join(format!("launcher-linux-{platform}.cnb"));
            let listing = layers_of(&file, &dir.path().join(platform));
            for path in [
                "bin/build",
                "bin/detect",
                "buildpack.toml",
                "bin/prebuilt/launcher-linux-x86_64",
                "bin/prebuilt/launcher-linux-aarch64",
            ] {
                let wanted = format!("{root}/{path}");
                assert!(
                    listing.lines().any(|l| l.trim_start_matches('/') == wanted),
                    "{platform}: no {wanted} in\n{listing}"
                );
            }
        }
        Ok(())
    });
}

/// The files of every layer of the OCI layout archive `file` (a `.cnb`), unpacked in `dir`.
fn layers_of(file: &Path, dir: &Path) -> String {
    fs::create_dir_all(dir).expect("mkdir");
    let unpacked = Command::new("tar")
        .arg("-xf")
        .arg(file)
        .arg("-C")
        .arg(dir)
        .output()
        .expect("tar");
    assert!(
        unpacked.status.success(),
        "{}: {}",
        file.display(),
        text(&unpacked.stderr)
    );
    let mut listing = String::new();
    for blob in fs::read_dir(dir.join("blobs/sha256"))
        .expect("an OCI layout")
        .flatten()
    {
        let list = Command::new("tar")
            .arg("-tzf")
            .arg(blob.path())
            .output()
            .expect("tar");
        if list.status.success() {
            listing.push_str(&text(&list.stdout));
        }
    }
    listing
}

/// A build that stopped on the prebuilt binary's checksum, saying so in its warning style.
fn assert_refused(out: &Output, warning: &str) {
    assert!(!out.status.success(), "{}", log(out));
    // The lifecycle's builder writes a buildpack's stderr to its stdout.
    let stderr = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let headline = format!("{warning}The buildpack's prebuilt binary does not match its SHA-256");
    assert!(stderr.contains(&headline), "{}", log(out));
    assert!(stderr.contains("tampered with"), "{}", log(out));
}

#[test]
fn a_tampered_binary_in_the_release_tarball_stops_both_kinds_of_build() {
    needs_machine(|| {
        let release = release()?;
        let dir = open_temp_dir();
        let tree = extracted(release, dir.path());
        tamper(&tree.join(format!("bin/prebuilt/launcher-linux-{ARCH}")));

        let site = Site::new(&fixture("flask"))?;
        let out = site.build(&[&tree], &BuildOptions::offline());
        assert_refused(&out, "! ");
        assert!(!site
            .buildpack_layers(ID)
            .join("launcher/bin/launcher")
            .exists());

        let (app, out) = compile_offline(&tree, &dir.path().join("classic"));
        assert_refused(&out, " !     ");
        assert!(!app.join(".launcher/bin/launcher").exists());
        Ok(())
    });
}
