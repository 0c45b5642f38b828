//! The limits read again from the files found at boot, over fake host trees whose files are
//! rewritten as a platform resizing a running container rewrites them.

use super::super::fake::FakeHost;
use super::super::{Snapshot, MIB};

fn bytes(n: u64) -> String {
    format!("{n}\n")
}

const V1_LIMIT: &str = "/sys/fs/cgroup/memory/app/memory.limit_in_bytes";
const V1_QUOTA: &str = "/sys/fs/cgroup/cpu,cpuacct/app/cpu.cfs_quota_us";
const V1_PERIOD: &str = "/sys/fs/cgroup/cpu,cpuacct/app/cpu.cfs_period_us";

fn v1_dyno() -> FakeHost {
    let host = FakeHost::new();
    host.cgroup_v1("/app")
        .write(V1_LIMIT, &bytes(512 * MIB))
        .write(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        )
        .write(V1_QUOTA, "-1\n")
        .write(V1_PERIOD, "100000\n");
    host
}

#[test]
fn unchanged_files_give_the_boots_figures() {
    let host = v1_dyno();
    let boot = host.read();
    let again = boot.limit_files.read(&Snapshot::new(host.root()));
    assert_eq!(again, Some(boot.size()));
}

#[test]
fn a_rewritten_v1_limit_and_quota_are_read_again() {
    let host = v1_dyno();
    let files = host.read().limit_files;
    // Every level of each hierarchy, and nothing else: 2 memory files, 2 quota files.
    assert_eq!(files.count(), 4, "{files:?}");
    host.write(V1_LIMIT, &bytes(256 * MIB))
        .write(V1_QUOTA, "50000\n");
    let size = files.read(&Snapshot::new(host.root())).expect("readable");
    assert_eq!(size.memory_mb(), 256);
    assert_eq!(size.memory_source, format!("cgroup v1 {V1_LIMIT}"));
    assert_eq!((size.cpus, size.cpu_capacity), (1, 0.5));
    assert!(size
        .cpus_source
        .starts_with(&format!("cgroup v1 {V1_QUOTA} (quota 50000/100000")));
    // The quota lifted and the limit raised: back to the machine's 8 CPUs and the new limit.
    host.write(V1_LIMIT, &bytes(1024 * MIB))
        .write(V1_QUOTA, "-1\n");
    let size = files.read(&Snapshot::new(host.root())).expect("readable");
    assert_eq!(
        (size.memory_mb(), size.cpus, size.cpu_capacity),
        (1024, 8, 8.0)
    );
}

#[test]
fn v2_memory_max_memory_high_and_cpu_max_are_read_again_with_the_boots_rules() {
    let host = FakeHost::new();
    let dir = "/sys/fs/cgroup/kubepods/pod1/app";
    host.cgroup_v2("/kubepods/pod1/app")
        .write(&format!("{dir}/memory.max"), &bytes(1024 * MIB))
        .write(&format!("{dir}/memory.high"), "max\n")
        .write(&format!("{dir}/cpu.max"), "200000 100000\n");
    let files = host.read().limit_files;
    host.write(&format!("{dir}/memory.max"), &bytes(512 * MIB))
        .write(&format!("{dir}/cpu.max"), "90000 100000\n");
    let size = files.read(&Snapshot::new(host.root())).expect("readable");
    assert_eq!(size.memory_mb(), 512);
    assert_eq!((size.cpus, size.cpu_capacity), (1, 0.9));
    // memory.high under memory.max wins, as at boot; a value over the host's memory is no limit.
    host.write(&format!("{dir}/memory.high"), &bytes(384 * MIB));
    let size = files.read(&Snapshot::new(host.root())).expect("readable");
    assert_eq!(size.memory_mb(), 384);
    assert_eq!(size.memory_source, format!("cgroup v2 {dir}/memory.high"));
    host.write(&format!("{dir}/memory.max"), &bytes(64 * 1024 * MIB))
        .write(&format!("{dir}/memory.high"), "max\n");
    let size = files.read(&Snapshot::new(host.root())).expect("readable");
    assert_eq!(size.memory_mb(), 16 * 1024, "MemTotal, as a boot would say");
}

#[test]
fn a_limit_set_on_a_parent_while_running_is_seen() {
    let host = v1_dyno();
    let files = host.read().limit_files;
    host.write(
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        &bytes(300 * MIB),
    );
    let size = files.read(&Snapshot::new(host.root())).expect("readable");
    assert_eq!(size.memory_mb(), 300);
}

#[test]
fn herokus_cedar_limit_file_is_read_again() {
    let host = FakeHost::new();
    host.write("/proc/self/cgroup", "0::/\n")
        .write(
            "/proc/self/mountinfo",
            "20 1 0:5 / /proc rw - proc proc rw\n",
        )
        .write(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            &bytes(512 * MIB),
        );
    let files = host.read().limit_files;
    host.write(
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        &bytes(1024 * MIB),
    );
    let size = files.read(&Snapshot::new(host.root())).expect("readable");
    assert_eq!(size.memory_mb(), 1024);
}

#[test]
fn a_file_that_cannot_be_read_now_gives_no_figures() {
    let host = v1_dyno();
    let files = host.read().limit_files;
    std::fs::remove_file(host.root().join(V1_LIMIT.trim_start_matches('/'))).expect("rm");
    assert_eq!(files.read(&Snapshot::new(host.root())), None);
    let host = v1_dyno();
    let files = host.read().limit_files;
    std::fs::remove_file(host.root().join(V1_PERIOD.trim_start_matches('/'))).expect("rm");
    assert_eq!(files.read(&Snapshot::new(host.root())), None);
}

#[test]
fn without_any_limit_file_the_figures_stay_the_boots() {
    let host = FakeHost::new();
    let boot = host.read();
    assert_eq!(boot.limit_files.count(), 0);
    assert_eq!(
        boot.limit_files.read(&Snapshot::new(host.root())),
        Some(boot.size())
    );
}

/// What reading the limits again costs on this machine, against the whole boot's `read`: by
/// hand, in the cgroups to measure (docs/architecture.md, "Limits that change"):
/// `cargo test --release --bin launcher -- --ignored --nocapture reading_the_limits_again`.
#[test]
#[ignore = "a measurement, run by hand in a release build"]
fn reading_the_limits_again_costs_a_fraction_of_the_boots_read() {
    let root = std::path::Path::new("/");
    let files = super::super::read(root).limit_files;
    let snapshot = Snapshot::live();
    let rounds = 20_000;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        assert!(files.read(&snapshot).is_some(), "{files:?}");
    }
    let again = started.elapsed() / rounds;
    let started = std::time::Instant::now();
    for _ in 0..rounds / 100 {
        std::hint::black_box(super::super::read(root));
    }
    let boot = started.elapsed() / (rounds / 100);
    eprintln!(
        "{} files read again in {again:?}; a whole host::read in {boot:?}",
        files.count()
    );
    assert!(again < boot, "{again:?} against {boot:?}");
}
