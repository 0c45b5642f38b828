//! Black-box tests of `launcher size` and `launcher profile`: the real binary, real bash, fake host
//! trees for machines that cannot exist here (Heroku dynos), and real cgroups where they can.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

#[path = "cli/first_deploy.rs"]
mod first_deploy;
#[path = "cli/profile_d.rs"]
mod profile_d;
mod support;
#[path = "cli/web.rs"]
mod web;
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
