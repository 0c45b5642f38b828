//! Black-box tests of `launcher size` and `launcher profile`: the real binary, real bash, fake host
//! trees for machines that cannot exist here (Heroku dynos), and real cgroups where they can.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

mod support;
use support::slug::Slug;
use support::{make_executable, needs_machine, MemoryCgroup, READ_AT_BOOT};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_launcher");

/// Heroku's dynos as measured: name, memory MB, CPUs, WEB_CONCURRENCY.
const DYNOS: [(&str, u64, u32, u32); 7] = [
    ("Standard-1X", 512, 8, 2),
    ("Standard-2X", 1024, 8, 4),
    ("Performance-M", 2560, 2, 5),
    ("Performance-L", 14336, 8, 17),
    ("Performance-L-RAM", 30720, 4, 9),
    ("Performance-XL", 63488, 8, 17),
    ("Performance-2XL", 129024, 16, 33),
];

/// A fake Cedar dyno: `0::/`, no cgroup mount, the limit in a plain file, N online CPUs.
fn cedar_root(memory_mb: u64, cpus: u32) -> TempDir {
    let root = TempDir::new().expect("temp dir");
    let files = [
        ("proc/self/cgroup", "0::/\n".to_owned()),
        (
            "proc/self/mountinfo",
            "20 1 0:5 / /proc rw - proc proc rw\n".to_owned(),
        ),
        ("proc/meminfo", "MemTotal:       264000000 kB\n".to_owned()),
        (
            "proc/self/status",
            format!("Cpus_allowed_list:\t0-{}\n", cpus - 1),
        ),
        ("sys/devices/system/cpu/online", format!("0-{}\n", cpus - 1)),
        (
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            format!("{}\n", memory_mb * 1024 * 1024),
        ),
    ];
    for (path, text) in files {
        let path = root.path().join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }
    root
}

/// Runs the launcher with only PATH and the given variables in its environment.
fn launcher(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(LAUNCHER)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .output()
        .expect("run launcher")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

fn size_json(root: &Path, env: &[(&str, &str)]) -> serde_json::Value {
    json(&launcher(
        &["size", "--json", "--root", root.to_str().expect("utf-8")],
        env,
    ))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_seven_dyno_sizes_through_the_whole_binary() {
    for (name, memory_mb, cpus, expected) in DYNOS {
        let root = cedar_root(memory_mb, cpus);
        let report = size_json(root.path(), &[]);
        assert_eq!(report["memory_mb"], memory_mb, "{name}");
        assert_eq!(report["cpus"], cpus, "{name}");
        assert_eq!(report["web_concurrency"], expected, "{name}");
        assert_eq!(report["set_by"], "launcher", "{name}");
        assert_eq!(
            report["memory_source"],
            "cgroup v1 /sys/fs/cgroup/memory/memory.limit_in_bytes"
        );
    }
}

#[test]
fn json_has_exactly_the_documented_keys() {
    let root = cedar_root(512, 8);
    let report = size_json(root.path(), &[("WEB_MEMORY", "128")]);
    let mut keys: Vec<&str> = report
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cpus",
            "cpus_source",
            "memory_mb",
            "memory_source",
            "notes",
            "pressure",
            "running",
            "set_by",
            "settings",
            "threads",
            "web",
            "web_concurrency",
            "web_memory_mb"
        ]
    );
    // docs/sizing.md lists each, and each key of `web`.
    let app = app_with(&[
        ("Procfile", "web: bundle exec puma -C config/puma.rb\n"),
        ("config/puma.rb", "threads 1, 5\n"),
    ]);
    let args = [in_app("size", &root, &app), vec!["--json"]].concat();
    let with_web = json(&launcher(&args, &[]));
    let web = with_web["web"].as_object().expect("web");
    let docs = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/sizing.md"))
        .expect("docs/sizing.md");
    let start = docs
        .find("`--json` prints one object with the keys")
        .expect("docs/sizing.md lists the keys of `launcher size --json`");
    let end = start + docs[start..].find("\n\n").expect("paragraph end");
    let listed = &docs[start..end];
    for key in keys.iter().copied().chain(web.keys().map(String::as_str)) {
        assert!(
            listed.contains(&format!("`{key}`")) || listed.contains(&format!("\"{key}\"")),
            "docs/sizing.md's `launcher size --json` keys lack `{key}`:\n{listed}"
        );
    }
    // Every setting the launcher reads, with its value and where it came from.
    let settings = report["settings"].as_object().expect("settings");
    assert_eq!(
        settings["WEB_MEMORY"],
        serde_json::json!({"value": 128, "source": "config var"})
    );
    assert_eq!(
        settings["LAUNCHER_GRACEFUL_TIMEOUT"],
        serde_json::json!({"value": 25.0, "source": "default"})
    );
    assert_eq!(
        settings["LAUNCHER_MAX_WORKERS"],
        serde_json::json!({"value": null, "source": "default"})
    );
    assert!(settings.len() >= 14, "{settings:?}");
    // A snapshot root is another host: no supervisor of this machine is shown for it.
    assert_eq!(report["running"], serde_json::json!([]));
    assert_eq!(report["web_memory_mb"], 128);
    assert_eq!(report["web_concurrency"], 4);
    assert_eq!(report["cpus_source"], "/sys/devices/system/cpu/online");
}

#[test]
fn human_form_names_each_source_and_the_reason() {
    let root = cedar_root(512, 8);
    let output = launcher(
        &["size", "--root", root.path().to_str().expect("utf-8")],
        &[],
    );
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("512 MB  cgroup v1 /sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "{text}"
    );
    assert!(
        text.contains("8     /sys/devices/system/cpu/online"),
        "{text}"
    );
    assert!(text.contains("256 MB  default, WEB_MEMORY unset"), "{text}");
    assert!(
        text.contains("set by launcher: memory 512 MB / 256 MB per worker = 2, CPUs 2*8+1 = 17: memory decides"),
        "{text}"
    );
}

#[test]
fn size_exits_zero_whatever_the_host_looks_like() {
    let empty = TempDir::new().expect("temp dir");
    let missing = empty.path().join("no-such-dir");
    for root in [empty.path(), missing.as_path()] {
        let report = size_json(root, &[]);
        assert_eq!(report["memory_mb"], 512);
        assert_eq!(report["cpus"], 1);
        assert_eq!(report["web_concurrency"], 2);
        assert_eq!(
            report["memory_source"],
            "default 512 MB (no memory information readable)"
        );
    }
    let garbage = cedar_root(512, 8);
    for file in [
        "proc/self/cgroup",
        "proc/self/mountinfo",
        "proc/meminfo",
        "sys/devices/system/cpu/online",
    ] {
        fs::write(garbage.path().join(file), "\u{0}\u{1}garbage\n:::\n").expect("write");
    }
    let report = size_json(garbage.path(), &[]);
    assert_eq!(
        report["memory_mb"], 512,
        "the plain limit file is still read"
    );
    assert_eq!(report["cpus"], 8, "affinity is still read");
}

#[test]
fn invalid_user_values_get_one_warning_and_the_default() {
    let root = cedar_root(512, 8);
    let long = "9".repeat(30);
    for bad in ["", "abc", "0", "-2", "1e3", "04", long.as_str()] {
        let output = launcher(
            &["profile", "--root", root.path().to_str().expect("utf-8")],
            &[("WEB_CONCURRENCY", bad)],
        );
        assert!(output.status.success());
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        assert!(
            err.contains(&format!("WEB_CONCURRENCY={bad:?}")) || bad.len() > 40,
            "{err}"
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("export WEB_CONCURRENCY=2\n"));
    }
    let output = launcher(
        &["profile", "--root", root.path().to_str().expect("utf-8")],
        &[("WEB_MEMORY", "lots")],
    );
    assert_eq!(stderr(&output).lines().count(), 1);
    assert!(stderr(&output).contains("WEB_MEMORY=\"lots\""));
}

#[test]
fn profile_output_is_only_export_lines_of_integers_and_tokens() {
    let root = cedar_root(1024, 8);
    let hostile = "$(touch /tmp/x); `id`\n export A=1";
    for env in [
        vec![],
        vec![("WEB_CONCURRENCY", hostile)],
        vec![("WEB_CONCURRENCY", "3")],
        vec![
            ("WEB_CONCURRENCY", "7"),
            ("WEB_CONCURRENCY_SET_BY", hostile),
        ],
        vec![
            ("WEB_MEMORY", hostile),
            ("LAUNCHER_MAX_WORKERS", hostile),
            ("DYNO", "web.1"),
        ],
    ] {
        let output = launcher(
            &["profile", "--root", root.path().to_str().expect("utf-8")],
            &env,
        );
        assert!(output.status.success());
        let stdout = String::from_utf8(output.stdout).expect("utf-8");
        for line in stdout.lines() {
            let (name, value) = line
                .strip_prefix("export ")
                .and_then(|l| l.split_once('='))
                .expect(line);
            assert!(
                [
                    "WEB_CONCURRENCY",
                    "WEB_CONCURRENCY_SET_BY",
                    "LAUNCHER_WEB_CONCURRENCY",
                    "DYNO_RAM"
                ]
                .contains(&name),
                "{line}"
            );
            assert!(
                value == "launcher" || value.bytes().all(|b| b.is_ascii_digit()),
                "{line}"
            );
        }
    }
}

#[test]
fn the_boot_line_is_logged_on_web_dynos_only() {
    let root = cedar_root(512, 8);
    let root = root.path().to_str().expect("utf-8");
    // Cedar's `web.1` and Fir's `web-<hash>-<id>` forms.
    for dyno in ["web.1", "web-12a34b56d-e78f9"] {
        let web = launcher(&["profile", "--root", root], &[("DYNO", dyno)]);
        let line = stderr(&web);
        assert_eq!(line.lines().count(), 1, "{dyno}: {line}");
        assert!(
            line.starts_with(
                "launcher: WEB_CONCURRENCY=2 set by launcher (memory 512 MB / 256 MB per worker = 2"
            ),
            "{dyno}: {line}"
        );
    }
    let quiet_dynos = [
        "worker.1",
        "run.1234",
        "release.1",
        "worker-23z34x56y-w78k9",
        "run-e78f9",
        "webhooks-23z34x56y-w78k9",
        "web-api.1",
    ];
    for quiet in quiet_dynos {
        assert_eq!(
            stderr(&launcher(&["profile", "--root", root], &[("DYNO", quiet)])),
            "",
            "{quiet}"
        );
    }
    assert_eq!(stderr(&launcher(&["profile", "--root", root], &[])), "");
}

// ---- The web process: `launcher size`, the build log, the boot ----------------------------------

/// An app directory holding `files` (path, text).
fn app_with(files: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new().expect("temp dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }
    dir
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8")
}

/// `command --root ROOT --app-dir APP`.
fn in_app<'a>(command: &'a str, root: &'a TempDir, app: &'a TempDir) -> Vec<&'a str> {
    let (root, app) = (utf8(root.path()), utf8(app.path()));
    vec![command, "--root", root, "--app-dir", app]
}

#[test]
fn the_mode_shown_for_the_web_process_is_the_one_launcher_run_picks() {
    let root = cedar_root(512, 8);
    let mode = |app: &TempDir, env: &[(&str, &str)]| {
        let args = [in_app("size", &root, app), vec!["--json"]].concat();
        let report = json(&launcher(&args, env));
        report["web"]["mode"].as_str().expect("mode").to_owned()
    };
    let gunicorn = app_with(&[("Procfile", "web: gunicorn app:app\n")]);
    assert_eq!(mode(&gunicorn, &[]), "delegate", "auto's pick");
    assert_eq!(mode(&gunicorn, &[("LAUNCHER_MODE", "fanout")]), "fanout");
    let with_file = app_with(&[
        ("Procfile", "web: gunicorn app:app\n"),
        ("launcher.toml", "mode = \"fanout\"\n"),
    ]);
    assert_eq!(mode(&with_file, &[]), "fanout", "launcher.toml");
    let size = launcher(&in_app("size", &root, &with_file), &[]);
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(
        text.contains("`launcher run` would run it in fanout mode"),
        "{text}"
    );
    // `--mode` in the Procfile wins over both, `auto` included.
    for (args, setting, expected) in [
        ("--mode delegate -- node server.js", "fanout", "delegate"),
        ("--mode auto -- gunicorn app:app", "fanout", "delegate"),
        ("--mode=auto -- node server.js", "delegate", "fanout"),
    ] {
        let app = app_with(&[("Procfile", &format!("web: launcher run {args}\n"))]);
        let env = [("LAUNCHER_MODE", setting)];
        let case = format!("launcher run {args}, LAUNCHER_MODE={setting}");
        assert_eq!(mode(&app, &env), expected, "{case}");
    }
}

#[test]
fn unicorn_warnings_are_for_the_build_log_and_launcher_size_not_the_boot() {
    let root = cedar_root(512, 8);
    let app = app_with(&[("Procfile", "web: unicorn -p $PORT\n")]);
    let warning = "unicorn runs without a config file";
    let profile = in_app("profile", &root, &app);
    for dyno in ["web.1", "worker.1", "run.1234"] {
        let err = stderr(&launcher(&profile, &[("DYNO", dyno)]));
        assert!(!err.contains("unicorn"), "{dyno}: {err}");
        let lines = usize::from(dyno == "web.1");
        assert_eq!(
            err.lines().count(),
            lines,
            "{dyno}, the boot line only: {err}"
        );
    }
    assert_eq!(stderr(&launcher(&profile, &[])), "");
    let size = launcher(&in_app("size", &root, &app), &[]);
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(text.contains(&format!("warning: {warning}")), "{text}");
    let build = launcher(&["build-report", "--app-dir", utf8(app.path())], &[]);
    assert!(stderr(&build).contains(warning), "{}", stderr(&build));
}

#[test]
fn workers_times_threads_does_not_overflow() {
    let root = cedar_root(512, 8);
    let app = app_with(&[
        ("Procfile", "web: bundle exec puma -C config/puma.rb\n"),
        ("config/puma.rb", "threads 1, 4294967295\n"),
    ]);
    let size = launcher(&in_app("size", &root, &app), &[("WEB_CONCURRENCY", "1024")]);
    assert!(size.status.success(), "{}", stderr(&size));
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(
        text.contains("1024 workers x 4294967295 threads = 4398046510080 requests at once"),
        "{text}"
    );
    let build = launcher(&["build-report", "--app-dir", utf8(app.path())], &[]);
    assert!(build.status.success(), "{}", stderr(&build));
    let log = String::from_utf8_lossy(&build.stdout);
    assert!(
        log.contains("2 workers x 4294967295 threads = 8589934590 requests at once"),
        "{log}"
    );
}

#[test]
fn the_help_says_which_servers_auto_delegates_to() {
    let help = launcher(&["run", "--help"], &[]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("auto: delegate for gunicorn, puma and unicorn, fanout otherwise"),
        "{text}"
    );
}

// ---- The .profile.d script under real bash ------------------------------------------------------

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

// ---- Real cgroups ---------------------------------------------------------------------------------

/// Runs the launcher inside the cgroup's innermost directory.
fn run_launcher_in(cgroup: &MemoryCgroup, args: &str) -> Output {
    let mut launcher = Command::new(LAUNCHER);
    launcher
        .args(args.split_whitespace())
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    cgroup.wrap(&launcher).output().expect("run in cgroup")
}

#[test]
fn real_cgroup_of_512_mb() {
    needs_machine(|| {
        let cgroup = MemoryCgroup::create(&["launcher-test-512"], 512 * 1024 * 1024)?;
        let report = json(&run_launcher_in(&cgroup, "size --json"));
        assert_eq!(report["memory_mb"], 512, "{report}");
        let source = report["memory_source"].as_str().expect("str");
        let own_dir = format!(
            "/launcher-test-512-{}/memory.limit_in_bytes",
            std::process::id()
        );
        assert!(
            source.starts_with("cgroup v1 /sys/fs/cgroup/memory/"),
            "{source}"
        );
        assert!(source.ends_with(&own_dir), "{source}");
        Ok(())
    });
}

#[test]
fn real_nested_cgroup_gets_the_parents_limit() {
    needs_machine(|| {
        let cgroup = MemoryCgroup::create(&["launcher-test-parent", "child"], 512 * 1024 * 1024)?;
        let report = json(&run_launcher_in(&cgroup, "size --json"));
        assert_eq!(report["memory_mb"], 512, "{report}");
        let source = report["memory_source"].as_str().expect("str");
        assert!(
            !source.contains("/child-"),
            "the limit is the parent's: {source}"
        );
        Ok(())
    });
}

// ---- Frictions a first deploy meets -------------------------------------------------------------

#[test]
fn a_pinned_worker_count_is_noted_by_launcher_size_and_at_boot() {
    let root = cedar_root(512, 8);
    let pinned = app_with(&[("Procfile", "web: gunicorn -w 4 app:app\n")]);
    let note = "Procfile pins the worker count (-w 4), so WEB_CONCURRENCY=2 does not take effect";
    let size = launcher(&in_app("size", &root, &pinned), &[]);
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("warning: ") && l.contains(note)),
        "{text}"
    );
    let args = [in_app("size", &root, &pinned), vec!["--json"]].concat();
    let notes = json(&launcher(&args, &[]))["notes"].to_string();
    assert!(notes.contains(note), "{notes}");
    // The boot: the line on web dynos says so; other dynos stay quiet.
    let boot = stderr(&launcher(
        &in_app("profile", &root, &pinned),
        &[("DYNO", "web.1")],
    ));
    let lines: Vec<&str> = boot.lines().collect();
    assert_eq!(lines.len(), 2, "{boot}");
    assert!(lines[0].starts_with("launcher: WEB_CONCURRENCY=2 set by launcher ("));
    assert!(
        lines[1].starts_with("launcher: warning: ") && lines[1].contains(note),
        "{boot}"
    );
    let worker = launcher(&in_app("profile", &root, &pinned), &[("DYNO", "worker.1")]);
    assert_eq!(stderr(&worker), "");
    // A user's value is pinned over just the same; an app that reads it is not warned about.
    let users = stderr(&launcher(
        &in_app("profile", &root, &pinned),
        &[("DYNO", "web.1"), ("WEB_CONCURRENCY", "3")],
    ));
    assert!(
        users.contains("so WEB_CONCURRENCY=3 does not take effect"),
        "{users}"
    );
    let reads = app_with(&[("Procfile", "web: gunicorn -w $WEB_CONCURRENCY app:app\n")]);
    let boot = stderr(&launcher(
        &in_app("profile", &root, &reads),
        &[("DYNO", "web.1")],
    ));
    assert_eq!(boot.lines().count(), 1, "{boot}");
    let size = launcher(&in_app("size", &root, &reads), &[]);
    assert!(!String::from_utf8_lossy(&size.stdout).contains("pins"));
}

#[test]
fn the_build_log_gives_the_launcher_run_mode_only_for_a_web_process_under_it() {
    let plain = app_with(&[("Procfile", "web: gunicorn app:app\n")]);
    let build = launcher(&["build-report", "--app-dir", utf8(plain.path())], &[]);
    let log = String::from_utf8_lossy(&build.stdout);
    assert!(build.status.success(), "{}", stderr(&build));
    assert!(!log.contains("launcher run"), "{log}");
    assert!(!log.contains("mode"), "{log}");
    let under = app_with(&[("Procfile", "web: launcher run -- gunicorn app:app\n")]);
    let build = launcher(&["build-report", "--app-dir", utf8(under.path())], &[]);
    let log = String::from_utf8_lossy(&build.stdout);
    assert!(
        log.contains("The web process runs gunicorn under `launcher run`, in delegate mode"),
        "{log}"
    );
    // `launcher size` is where the question is asked: it answers for both.
    let root = cedar_root(512, 8);
    let size = launcher(&in_app("size", &root, &plain), &[]);
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(
        text.contains("`launcher run` would run it in delegate mode"),
        "{text}"
    );
}

#[test]
fn launcher_run_without_the_dashes_says_where_they_go() {
    for (args, fixed) in [
        (
            &["run", "gunicorn", "app:app"][..],
            "launcher run -- gunicorn app:app",
        ),
        (
            &[
                "run", "--mode", "fanout", "uvicorn", "main:app", "--port", "5000",
            ][..],
            "launcher run --mode fanout -- uvicorn main:app --port 5000",
        ),
    ] {
        let output = launcher(args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let err = stderr(&output);
        assert!(err.contains(fixed), "{args:?}: {err}");
        assert!(err.contains("`--`"), "{args:?}: {err}");
    }
    // Other mistakes keep clap's own message alone.
    let other = stderr(&launcher(&["size", "--colour"], &[]));
    assert!(!other.contains("launcher run"), "{other}");
}

#[test]
fn web_concurrency_with_spaces_around_it_is_taken_as_gunicorn_and_puma_take_it() {
    // gunicorn reads it with Python's int(), puma's config with Ruby's Integer(): both take ASCII
    // whitespace around the digits (Python also takes Unicode spaces, which Ruby refuses).
    let root = cedar_root(512, 8);
    let root_dir = utf8(root.path());
    for spaced in [" 3", "3 ", "\t3\n", " 3\r\n", "\u{b}3\u{c}"] {
        let report = size_json(root.path(), &[("WEB_CONCURRENCY", spaced)]);
        assert_eq!(report["web_concurrency"], 3, "{spaced:?}: {report}");
        assert_eq!(report["set_by"], serde_json::Value::Null, "{spaced:?}");
        let profile = launcher(
            &["profile", "--root", root_dir],
            &[("WEB_CONCURRENCY", spaced)],
        );
        assert_eq!(stderr(&profile), "", "{spaced:?}: no warning");
        let exports = String::from_utf8_lossy(&profile.stdout);
        assert!(!exports.contains("export WEB_CONCURRENCY="), "{exports}");
    }
    for bad in ["\u{a0}3", "3 3", " ", " 04"] {
        let report = size_json(root.path(), &[("WEB_CONCURRENCY", bad)]);
        assert_eq!(report["web_concurrency"], 2, "{bad:?}: {report}");
        assert_eq!(report["set_by"], "launcher", "{bad:?}");
    }
}

#[test]
fn launcher_size_calls_a_warning_a_warning() {
    let root = cedar_root(512, 8);
    let size = launcher(
        &["size", "--root", utf8(root.path())],
        &[
            ("LAUNCHER_GRACEFUL_TIMEOUT", "25s"),
            ("WEB_CONCURRENCY", "abc"),
        ],
    );
    let text = String::from_utf8_lossy(&size.stdout);
    for named in [
        "LAUNCHER_GRACEFUL_TIMEOUT=\"25s\"",
        "WEB_CONCURRENCY=\"abc\"",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(named))
            .unwrap_or_else(|| panic!("no line names {named}:\n{text}"));
        assert!(line.starts_with("warning: "), "{line}");
    }
    // What the host reading passed over is a note, not a warning.
    fs::write(
        root.path()
            .join("sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "abc\n",
    )
    .expect("write");
    let size = launcher(&["size", "--root", utf8(root.path())], &[]);
    let text = String::from_utf8_lossy(&size.stdout);
    assert!(text.lines().any(|l| l.starts_with("note: ")), "{text}");
    assert!(!text.contains("warning:"), "{text}");
}
