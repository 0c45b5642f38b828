//! The .profile.d script under real bash.

use super::*;

/// What `launcher size` computes on this machine for an empty environment: the profile tests run
/// against the live host, so they compare with it rather than with a fixed number.
fn live_default() -> String {
    size_json(Path::new("/"), &[])["web_concurrency"].to_string()
}

#[test]
fn sourcing_under_set_u_and_set_e_exports_ours() {
    let slug = Slug::new();
    let n = live_default();
    for options in ["", "set -u", "set -e", "set -euo pipefail"] {
        let vars = slug.booted_vars(options, &[]);
        assert!(
            vars.contains(&format!("WEB_CONCURRENCY={n}")),
            "{options}: {vars:?}"
        );
        assert!(
            vars.contains(&"WEB_CONCURRENCY_SET_BY=launcher".to_owned()),
            "{vars:?}"
        );
        assert!(
            vars.contains(&format!("LAUNCHER_WEB_CONCURRENCY={n}")),
            "{vars:?}"
        );
        assert!(vars.iter().any(|v| v.starts_with("DYNO_RAM=")), "{vars:?}");
    }
    let path = slug.boot("set -u", &[], "command -v launcher");
    assert_eq!(
        String::from_utf8_lossy(&path.stdout).trim(),
        slug.path()
            .join(".launcher/bin/launcher")
            .to_str()
            .expect("utf-8")
    );
}

#[test]
fn sourcing_twice_recomputes_our_own_value() {
    let slug = Slug::new();
    let n = live_default();
    let output = slug.boot(
        "set -eu",
        &[],
        "source \"$HOME\"/.profile.d/zzz-launcher.sh; echo \"$WEB_CONCURRENCY $WEB_CONCURRENCY_SET_BY\"",
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("{n} launcher")
    );
}

#[test]
fn another_buildpacks_value_is_replaced() {
    let slug = Slug::new();
    fs::write(
        slug.path().join(".profile.d/WEB_CONCURRENCY.sh"),
        "if [[ -z \"${WEB_CONCURRENCY:-}\" ]]; then\n  export WEB_CONCURRENCY=99 WEB_CONCURRENCY_SET_BY=heroku/python\nfi\n",
    )
    .expect("write stand-in");
    let vars = slug.booted_vars("set -u", &[]);
    assert!(
        vars.contains(&format!("WEB_CONCURRENCY={}", live_default())),
        "{vars:?}"
    );
    assert!(
        vars.contains(&"WEB_CONCURRENCY_SET_BY=launcher".to_owned()),
        "{vars:?}"
    );
}

#[test]
fn a_users_config_var_wins() {
    let slug = Slug::new();
    let vars = slug.booted_vars("set -u", &[("WEB_CONCURRENCY", "3")]);
    assert!(vars.contains(&"WEB_CONCURRENCY=3".to_owned()), "{vars:?}");
    assert!(
        !vars
            .iter()
            .any(|v| v.starts_with("WEB_CONCURRENCY_SET_BY=")),
        "{vars:?}"
    );
    let report = slug.boot(
        "set -u",
        &[("WEB_CONCURRENCY", "3")],
        "launcher size --json",
    );
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).expect("json");
    assert_eq!(report["web_concurrency"], 3);
    assert_eq!(report["set_by"], serde_json::Value::Null);
}

/// `auto` threads on a 512 MB dyno with 8 CPUs (2 workers): the memory's 64 requests shared
/// among the workers, or 16 a worker under adaptive sizing, which adds workers of as many; more
/// when LAUNCHER_MAX_WORKERS would not serve the requests; a user's worker count is never grown.
#[test]
fn auto_threads_are_fewer_where_adaptive_sizing_adds_workers() {
    let root = cedar_root(512, 8);
    let auto = ("LAUNCHER_THREADS", "auto");
    let adaptive = ("LAUNCHER_SIZING", "adaptive");
    let cases: [(&[(&str, &str)], u64); 5] = [
        (&[auto], 32),
        (&[auto, adaptive], 16),
        (&[auto, adaptive, ("LAUNCHER_MAX_WORKERS", "3")], 22),
        (&[auto, adaptive, ("WEB_CONCURRENCY", "2")], 32),
        (&[auto, ("LAUNCHER_SIZING", "measured")], 32),
    ];
    for (env, want) in cases {
        let report = size_json(root.path(), env);
        assert_eq!(report["threads"], want, "{env:?}: {report}");
    }
}

/// The script adds gunicorn's thread options in bash; these are the cases of report.rs's
/// `gunicorn_thread_args` unit test, which `launcher run` and the CNB exec.d use: both agree.
#[test]
fn threads_reach_gunicorn_through_the_profile_as_launcher_run_gives_them() {
    let slug = Slug::new();
    let cases = [
        (None, "--threads 4 --keep-alive 0"),
        (
            Some("--timeout 60 --access-logformat '%(h)s  %(r)s'"),
            "--timeout 60 --access-logformat '%(h)s  %(r)s' --threads 4 --keep-alive 0",
        ),
        (Some("--keep-alive=5"), "--keep-alive=5 --threads 4"),
        (
            Some("--worker-connections 50"),
            "--worker-connections 50 --threads 4 --keep-alive 0",
        ),
        (Some("--threads 8"), "--threads 8"),
    ];
    for (args, want) in cases {
        let mut env = vec![("LAUNCHER_THREADS", "4")];
        env.extend(args.map(|a| ("GUNICORN_CMD_ARGS", a)));
        let output = slug.boot("set -eu", &env, "printf '%s' \"$GUNICORN_CMD_ARGS\"");
        assert_eq!(String::from_utf8_lossy(&output.stdout), want, "{args:?}");
    }
    let off = slug.boot("set -eu", &[], "printf '%s' \"${GUNICORN_CMD_ARGS-unset}\"");
    assert_eq!(String::from_utf8_lossy(&off.stdout), "unset");
}

#[test]
fn a_value_set_inline_after_the_profile_wins() {
    // `web: WEB_CONCURRENCY=3 launcher ...` in a Procfile: the profile ran first, so SET_BY still
    // says launcher, but the value differs from ours.
    let slug = Slug::new();
    let output = slug.boot("set -eu", &[], "WEB_CONCURRENCY=3 launcher size --json");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["web_concurrency"], 3);
    assert_eq!(report["set_by"], serde_json::Value::Null);
    let resourced = slug.boot(
        "set -eu",
        &[],
        "export WEB_CONCURRENCY=3; source \"$HOME\"/.profile.d/zzz-launcher.sh; echo $WEB_CONCURRENCY",
    );
    assert_eq!(String::from_utf8_lossy(&resourced.stdout).trim(), "3");
}

#[test]
fn config_vars_holding_shell_code_run_nothing() {
    let slug = Slug::new();
    let marker = slug.path().join("pwned");
    let code = format!("$(touch {0}); `touch {0}`; touch {0}", marker.display());
    let names = READ_AT_BOOT;
    for name in names {
        for options in ["set -u", "set -e"] {
            let output = slug.boot(options, &[(name, &code)], "echo booted");
            assert!(output.status.success(), "{name}: {}", stderr(&output));
            assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "booted");
            assert!(!marker.exists(), "{name} ran code under {options}");
        }
    }
    let all: Vec<(&str, &str)> = names.iter().map(|n| (*n, code.as_str())).collect();
    slug.boot("", &all, "true");
    assert!(!marker.exists());
}

#[test]
fn a_missing_or_failing_binary_leaves_the_environment_unchanged() {
    let slug = Slug::new();
    let before = [
        ("WEB_CONCURRENCY", "7"),
        ("WEB_CONCURRENCY_SET_BY", "heroku/python"),
    ];
    fs::remove_file(slug.path().join(".launcher/bin/launcher")).expect("remove");
    for options in ["set -u", "set -e"] {
        let vars = slug.booted_vars(options, &before);
        assert_eq!(
            vars,
            ["WEB_CONCURRENCY=7", "WEB_CONCURRENCY_SET_BY=heroku/python"],
            "{options}"
        );
    }
    fs::write(
        slug.path().join(".launcher/bin/launcher"),
        "#!/bin/sh\necho 'export WEB_CONCURRENCY=1'\nexit 3\n",
    )
    .expect("write failing binary");
    make_executable(&slug.path().join(".launcher/bin/launcher"));
    let vars = slug.booted_vars("set -e", &before);
    assert_eq!(
        vars,
        ["WEB_CONCURRENCY=7", "WEB_CONCURRENCY_SET_BY=heroku/python"]
    );
}

#[test]
fn lines_that_are_not_plain_exports_are_never_applied() {
    let slug = Slug::new();
    let marker = slug.path().join("pwned");
    fs::write(
        slug.path().join(".launcher/bin/launcher"),
        format!(
            "#!/bin/sh\necho 'export WEB_CONCURRENCY=$(touch {0})'\necho 'touch {0}'\necho 'export PATH=/evil'\necho 'export DYNO_RAM=1abc9'\necho 'export LAUNCHER_WEB_CONCURRENCY=04'\necho 'export WEB_CONCURRENCY=4'\n",
            marker.display()
        ),
    )
    .expect("write");
    make_executable(&slug.path().join(".launcher/bin/launcher"));
    let output = slug.boot(
        "set -eu",
        &[],
        "echo \"$WEB_CONCURRENCY ${DYNO_RAM:-unset} ${LAUNCHER_WEB_CONCURRENCY:-unset} $PATH\"",
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("4 unset unset "), "{text}");
    assert!(!text.contains("/evil"), "{text}");
    assert!(!marker.exists());
}

#[test]
fn launcher_disable_leaves_web_concurrency_alone() {
    let slug = Slug::new();
    let vars = slug.booted_vars("set -u", &[("LAUNCHER_DISABLE", "1")]);
    assert_eq!(vars, ["LAUNCHER_DISABLE=1"]);
    let output = launcher(
        &["size", "--json"],
        &[("LAUNCHER_DISABLE", "1"), ("WEB_CONCURRENCY", "6")],
    );
    assert_eq!(json(&output)["web_concurrency"], 6);
}

#[test]
fn launcher_toml_in_the_app_root_is_read_at_boot_and_config_vars_win() {
    let slug = Slug::new();
    fs::write(slug.path().join("launcher.toml"), "max_workers = 1\n").expect("write");
    let vars = slug.booted_vars("set -u", &[]);
    assert!(vars.contains(&"WEB_CONCURRENCY=1".to_owned()), "{vars:?}");
    let vars = slug.booted_vars("set -u", &[("LAUNCHER_MAX_WORKERS", "1024")]);
    assert!(
        vars.contains(&format!("WEB_CONCURRENCY={}", live_default())),
        "{vars:?}"
    );
    fs::write(slug.path().join("launcher.toml"), "disable = true\n").expect("write");
    assert!(slug.booted_vars("set -u", &[]).is_empty());
}

#[test]
fn script_name_sorts_after_language_buildpack_scripts() {
    // bash sorts globs by the locale's collation: check C and en_US.UTF-8 (where it is installed:
    // without it, sort would silently fall back to C and prove nothing).
    let installed = Command::new("locale")
        .arg("-a")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let has_en_us = String::from_utf8_lossy(&installed)
        .lines()
        .any(|l| l.eq_ignore_ascii_case("en_US.utf8"));
    if !has_en_us {
        let message = "en_US.UTF-8 locale not installed (Debian: locales-all)";
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{message}; CI must install it"
        );
        eprintln!("SKIPPED the en_US.UTF-8 half: {message}");
    }
    let locales: &[&str] = if has_en_us {
        &["C", "en_US.UTF-8"]
    } else {
        &["C"]
    };
    for locale in locales {
        let output = Command::new("bash")
            .args(["-c", "printf '%s\\n' zzz-launcher.sh WEB_CONCURRENCY.sh python.sh ruby.sh nodejs.sh | sort"])
            .env("LC_ALL", *locale)
            .output()
            .expect("sort");
        let sorted = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            sorted.lines().last(),
            Some("zzz-launcher.sh"),
            "{locale}: {sorted}"
        );
    }
}
