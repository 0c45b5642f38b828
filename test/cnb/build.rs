//! detect and build under the reference lifecycle.

use super::*;

#[test]
fn detect_passes_for_both_apis() {
    needs_machine(|| {
        let site = Site::new(&fixture("no-procfile"))?;
        // The shared copy: the checkout itself may be out of the build user's reach.
        let out = site.detect(&[&shared().buildpack]);
        assert!(out.status.success(), "{}", log(&out));
        let group = fs::read_to_string(site.layers().join("group.toml")).expect("group.toml");
        let group: toml::Table = group.parse().expect("TOML");
        let group = group["group"].as_array().expect("[[group]]");
        assert_eq!(group.len(), 1, "{group:?}");
        assert_eq!(group[0]["id"].as_str(), Some(ID));
        assert_eq!(group[0]["api"].as_str(), Some("0.10"));
        let plan = fs::read_to_string(site.layers().join("plan.toml")).expect("plan.toml");
        assert!(!plan.contains("[[entries]]"), "no plan entries: {plan}");

        let mut detect = Command::new(repo().join("bin/detect"));
        detect
            .arg(site.app())
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        let classic = output_within(&mut detect, SECOND * 10);
        assert_eq!(text(&classic.stdout), "launcher\n", "{}", log(&classic));
        Ok(())
    });
}

/// The detector matches each buildpack's `[[targets]]` against the run image's (analyzed.toml):
/// ours is a static binary, so every Linux run image of its architectures passes, whatever its
/// distribution.
#[test]
fn detect_passes_on_every_linux_run_image() {
    needs_machine(|| {
        for distro in [("ubuntu", "24.04"), ("ubuntu", "22.04"), ("debian", "12")] {
            let mut site = Site::new(&fixture("flask"))?;
            site.distro = (distro.0.to_owned(), distro.1.to_owned());
            let out = site.detect(&[&shared().language, &shared().buildpack]);
            assert!(out.status.success(), "{distro:?}: {}", log(&out));
        }
        Ok(())
    });
}

#[test]
fn the_repository_with_cargo_cold_then_warm() {
    needs_machine(|| {
        let shared = shared();
        assert!(
            shared.cold_log.contains("Built from source with cargo"),
            "{}",
            shared.cold_log
        );
        let expected = format!(
            "build --release --locked --target {}-unknown-linux-gnu",
            std::env::consts::ARCH
        );
        assert!(
            shared.cold_cargo_calls.contains(&expected),
            "{}",
            shared.cold_cargo_calls
        );
        let ours = shared.cold_layers.join(ID);
        let types = layer_types(&ours);
        let launch = Types {
            launch: true,
            build: true,
            cache: false,
        };
        let cache = Types {
            cache: true,
            ..Types::default()
        };
        assert_eq!(
            types,
            [
                ("launcher".to_owned(), launch),
                ("source-build".to_owned(), cache)
            ]
        );
        let exec_d = ours.join("launcher/exec.d/web-concurrency");
        assert_eq!(
            fs::read_link(&exec_d).expect("a symlink"),
            Path::new("../bin/launcher")
        );

        // The next build, with the cache layer restored: no cargo at all.
        let site = Site::new(&fixture("flask"))?;
        site.restore(&shared.cold_layers);
        let out = site.build(&[&shared.buildpack], &BuildOptions::cargo());
        assert!(out.status.success(), "{}", log(&out));
        assert!(
            text(&out.stdout).contains("Using the binary built from source, cached"),
            "{}",
            log(&out)
        );
        assert_eq!(site.cargo_calls(), None, "the warm build ran cargo");
        let installed = site.buildpack_layers(ID).join("launcher/bin/launcher");
        let cached = fs::read_dir(site.buildpack_layers(ID).join("source-build/launcher"))
            .expect("cache layer")
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("launcher-"))
            })
            .expect("launcher-<source hash>");
        assert_eq!(
            fs::read(&installed).expect("installed"),
            fs::read(cached).expect("cached")
        );
        Ok(())
    });
}

#[test]
fn the_build_log_is_in_the_cnb_style_with_the_same_pinned_worker_warnings() {
    needs_machine(|| {
        let (_, out) = built("pinned-procfile")?;
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("\n## Launcher Buildpack\n\n- Installing launcher\n"),
            "{stdout}"
        );
        for line in [
            "\n  - launcher 0.1.0 installed in the launch layer",
            "\n- Sizing\n  - WEB_CONCURRENCY by Fir dyno size",
            "\n      dyno-1c-0.5gb              512 MB   1 CPUs     2\n",
            "\n  - WEB_CONCURRENCY by Cedar dyno size",
            "\n      Eco/Basic/Standard-1X      512 MB   8 CPUs     2\n",
            "\n! Procfile pins the worker count (-w 4), so WEB_CONCURRENCY cannot take effect.\n",
        ] {
            assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
        }
        let ours = &stdout[stdout.find("## Launcher Buildpack").expect("ours")..];
        assert!(
            ours.lines().any(|l| l.starts_with("- Done (finished in ")),
            "{stdout}"
        );
        Ok(())
    });
}

#[test]
fn the_build_runs_as_a_non_root_user_with_the_buildpack_read_only() {
    needs_machine(|| {
        // The harness itself: a buildpack that writes into its own directory fails, although the
        // directory's permission bits would let its owner write.
        let fake = open_temp_dir();
        fs::create_dir(fake.path().join("bin")).expect("mkdir");
        let descriptor =
            "api = \"0.10\"\n[buildpack]\nid = \"writes-its-dir\"\nversion = \"0.0.1\"\n";
        fs::write(fake.path().join("buildpack.toml"), descriptor).expect("write");
        fs::write(fake.path().join("bin/detect"), "#!/bin/sh\nexit 0\n").expect("write");
        let script =
            "#!/bin/sh\nid -u > \"$CNB_LAYERS_DIR/uid\"\ntouch \"$CNB_BUILDPACK_DIR/export\"\n";
        fs::write(fake.path().join("bin/build"), script).expect("write");
        make_executable(&fake.path().join("bin/build"));
        make_executable(&fake.path().join("bin/detect"));
        let site = Site::new(&fixture("flask"))?;
        site.user.chown(fake.path());
        let out = site.build(&[fake.path()], &BuildOptions::default());
        assert!(!out.status.success(), "{}", log(&out));
        assert!(
            text(&out.stdout).contains("Read-only file system"),
            "{}",
            log(&out)
        );
        let uid =
            fs::read_to_string(site.buildpack_layers("writes-its-dir").join("uid")).expect("uid");
        assert_eq!(uid.trim(), site.user.uid.to_string());
        assert_ne!(site.user.uid, 0);

        // Ours writes only into its layers, as that user.
        let (site, _) = built("flask")?;
        let binary = site.buildpack_layers(ID).join("launcher/bin/launcher");
        assert_eq!(fs::metadata(&binary).expect("binary").uid(), site.user.uid);
        assert!(!shared().buildpack.join("export").exists());
        Ok(())
    });
}
