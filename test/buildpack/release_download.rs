//! Getting the binary, path (b): a release downloaded over loopback HTTP and verified.

use super::*;

#[test]
fn path_b_the_release_binary_is_downloaded_and_verified() {
    let shared = shared();
    let good = fs::read(shared.cached_binary()).expect("binary");
    let mut tampered = good.clone();
    tampered.extend_from_slice(b"\0");
    let server = Server::start(vec![
        ("/good".to_owned(), good.clone()),
        ("/tampered".to_owned(), tampered),
    ]);
    let dir = TempDir::new().expect("temp dir");
    let buildpack = shared.own_buildpack(dir.path());
    let toml_path = buildpack.join("buildpack.toml");
    let toml = fs::read_to_string(&toml_path).expect("buildpack.toml");
    let section = format!("[metadata.release.{ARCH}]\nurl = \"\"\nsha256 = \"\"");
    assert!(toml.contains(&section), "buildpack.toml lacks {section}");
    let listed = format!(
        "[metadata.release.{ARCH}]\nurl = \"{}\"\nsha256 = \"{}\"",
        server.url("/good"),
        sha256(&shared.cached_binary())
    );
    fs::write(&toml_path, toml.replace(&section, &listed)).expect("write buildpack.toml");

    // The listed release: downloaded, verified, no toolchain needed.
    let build = Build::new("flask");
    let output = build.compile(&buildpack, false);
    assert_success(&output);
    assert!(
        text(&output.stdout).contains("Downloaded the release binary"),
        "{}",
        log(&output)
    );
    assert_eq!(fs::read(build.installed()).expect("installed"), good);

    // LAUNCHER_BINARY_SHA256 as it may be pasted: in upper case, or the whole line of the
    // release's .sha256 file. Anything else is refused, before any download.
    let sum = sha256(&shared.cached_binary());
    for given in [
        sum.to_uppercase(),
        format!("{sum}  launcher-linux-{ARCH}\n"),
    ] {
        let build = Build::new("flask");
        build.set_config_var("LAUNCHER_BINARY_URL", &server.url("/good"));
        build.set_config_var("LAUNCHER_BINARY_SHA256", &given);
        let output = build.compile(&buildpack, false);
        assert_success(&output);
        assert_eq!(fs::read(build.installed()).expect("installed"), good);
    }
    let build = Build::new("flask");
    build.set_config_var("LAUNCHER_BINARY_URL", &server.url("/good"));
    build.set_config_var("LAUNCHER_BINARY_SHA256", &format!("sha256:{sum}"));
    let output = build.compile(&buildpack, false);
    assert!(!output.status.success(), "{}", log(&output));
    let refused = format!("LAUNCHER_BINARY_SHA256 is not a SHA-256: \"sha256:{sum}\"");
    assert!(text(&output.stderr).contains(&refused), "{}", log(&output));
    assert!(!build.installed().exists());

    // LAUNCHER_BINARY_URL pointing at a tampered binary: the build stops, nothing is installed.
    let build = Build::new("flask");
    build.set_config_var("LAUNCHER_BINARY_URL", &server.url("/tampered"));
    let output = build.compile(&buildpack, false);
    assert!(!output.status.success(), "{}", log(&output));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("does not match its SHA-256"),
        "{}",
        log(&output)
    );
    assert!(stderr.contains("tampered"), "{}", log(&output));
    assert!(!build.installed().exists());

    // A download that fails (404 here, a network error on a build dyno) falls back to the source build.
    let build = shared.warm_build("flask");
    build.set_config_var("LAUNCHER_BINARY_URL", &server.url("/missing"));
    let output = build.compile(&buildpack, true);
    assert_success(&output);
    assert!(
        text(&output.stderr).contains("Could not download"),
        "{}",
        log(&output)
    );
    assert!(text(&output.stdout).contains("cached"), "{}", log(&output));
    assert_eq!(
        server.requests(),
        ["/good", "/good", "/good", "/tampered", "/missing"].map(str::to_owned)
    );
}
