//! Host reading over fake host trees: each test writes the files one kind of machine has.

use std::path::Path;

use super::fake::FakeHost;
use super::{read, Version, MIB};

const GIB: u64 = 1024 * MIB;

fn bytes(n: u64) -> String {
    format!("{n}\n")
}

#[test]
fn cgroup_v1_limit_in_own_cgroup() {
    let host = FakeHost::new();
    host.cgroup_v1("/app")
        .write(
            "/sys/fs/cgroup/memory/app/memory.limit_in_bytes",
            &bytes(512 * MIB),
        )
        .write(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
    let read = host.read();
    assert_eq!(read.memory_mb(), 512);
    assert_eq!(
        read.memory_source,
        "cgroup v1 /sys/fs/cgroup/memory/app/memory.limit_in_bytes"
    );
    assert_eq!(read.cpus, 8);
}

#[test]
fn cgroup_v2_takes_the_lower_of_max_and_high() {
    let host = FakeHost::new();
    host.cgroup_v2("/web.slice/app.scope")
        .write("/sys/fs/cgroup/web.slice/app.scope/memory.max", &bytes(GIB))
        .write(
            "/sys/fs/cgroup/web.slice/app.scope/memory.high",
            &bytes(768 * MIB),
        );
    let read = host.read();
    assert_eq!(read.memory_mb(), 768);
    assert_eq!(
        read.memory_source,
        "cgroup v2 /sys/fs/cgroup/web.slice/app.scope/memory.high"
    );
}

#[test]
fn cgroup_v2_max_means_no_limit() {
    let host = FakeHost::new();
    host.cgroup_v2("/")
        .write("/sys/fs/cgroup/memory.max", "max\n")
        .write("/sys/fs/cgroup/memory.high", "max\n");
    let read = host.read();
    assert_eq!(read.memory_bytes, 16 * GIB);
    assert_eq!(
        read.memory_source,
        "/proc/meminfo MemTotal (no cgroup memory limit)"
    );
    assert!(read.notes.is_empty(), "{:?}", read.notes);
}

#[test]
fn hybrid_host_reads_v1_memory_beside_a_v2_unified_mount() {
    let host = FakeHost::new();
    host.write("/proc/self/cgroup", "9:memory:/dyno\n1:cpu:/\n0::/dyno\n")
        .write(
            "/proc/self/mountinfo",
            "\
32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
",
        )
        .write(
            "/sys/fs/cgroup/memory/dyno/memory.limit_in_bytes",
            &bytes(GIB),
        )
        .write("/sys/fs/cgroup/unified/dyno/cgroup.procs", "1\n");
    let read = host.read();
    assert_eq!(read.memory_mb(), 1024);
    assert!(
        read.memory_source.starts_with("cgroup v1 "),
        "{}",
        read.memory_source
    );
}

#[test]
fn limit_on_a_parent_only_applies_to_the_child() {
    let host = FakeHost::new();
    host.cgroup_v1("/parent/child")
        .write(
            "/sys/fs/cgroup/memory/parent/memory.limit_in_bytes",
            &bytes(512 * MIB),
        )
        .write(
            "/sys/fs/cgroup/memory/parent/child/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
    let read = host.read();
    assert_eq!(read.memory_mb(), 512);
    assert_eq!(
        read.memory_source,
        "cgroup v1 /sys/fs/cgroup/memory/parent/memory.limit_in_bytes"
    );
    // Usage is read where the limit is: the parent counts the child's processes too.
    let dir = read.memory_cgroup.expect("a cgroup directory");
    assert_eq!(dir.path, Path::new("/sys/fs/cgroup/memory/parent"));
    assert_eq!(dir.version, super::Version::V1);
}

#[test]
fn the_smallest_limit_up_the_hierarchy_wins() {
    let host = FakeHost::new();
    host.cgroup_v2("/a/b")
        .write("/sys/fs/cgroup/a/memory.max", &bytes(2 * GIB))
        .write("/sys/fs/cgroup/a/b/memory.max", &bytes(3 * GIB));
    assert_eq!(host.read().memory_mb(), 2048);
}

#[test]
fn heroku_cedar_layout_plain_limit_file_and_no_cgroup_mount() {
    let host = FakeHost::new();
    host.write("/proc/self/cgroup", "0::/\n")
        .write(
            "/proc/self/mountinfo",
            "20 1 0:5 / /proc rw - proc proc rw\n",
        )
        .write("/sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n");
    let read = host.read();
    assert_eq!(read.memory_mb(), 512);
    assert_eq!(
        read.memory_source,
        "cgroup v1 /sys/fs/cgroup/memory/memory.limit_in_bytes"
    );
    assert_eq!(read.cpus, 8);
    assert_eq!(read.cpus_source, "/sys/devices/system/cpu/online");
}

#[test]
fn missing_cgroup_files_fall_back_to_memtotal() {
    let host = FakeHost::new();
    host.cgroup_v1("/app");
    let read = host.read();
    assert_eq!(read.memory_bytes, 16 * GIB);
    assert!(read.memory_source.contains("MemTotal"));
}

#[test]
fn garbage_files_are_noted_and_passed_over() {
    let host = FakeHost::new();
    host.cgroup_v2("/")
        .write("/sys/fs/cgroup/memory.max", "lots\n")
        .write("/sys/fs/cgroup/memory.high", "1\n")
        .write("/sys/fs/cgroup/cpu.max", "half 100000\n")
        .write("/sys/devices/system/cpu/online", "zero-seven\n");
    let read = host.read();
    assert!(read.memory_source.contains("MemTotal"));
    assert_eq!(read.cpus, 8, "affinity still counts");
    let notes = read.notes.join("\n");
    assert!(
        notes.contains("/sys/fs/cgroup/memory.max: not a number (\"lots\")"),
        "{notes}"
    );
    assert!(
        notes.contains("/sys/fs/cgroup/memory.high: 1 bytes is not a usable memory limit"),
        "{notes}"
    );
    assert!(
        notes.contains("/sys/fs/cgroup/cpu.max: not a CPU quota"),
        "{notes}"
    );
    assert!(
        notes.contains("/sys/devices/system/cpu/online: not a CPU list"),
        "{notes}"
    );
}

#[test]
fn unreadable_proc_and_sys_fall_back_to_512_mb_and_1_cpu() {
    let read = FakeHost::empty().read();
    assert_eq!(read.memory_mb(), 512);
    assert_eq!(
        read.memory_source,
        "default 512 MB (no memory information readable)"
    );
    assert_eq!(read.cpus, 1);
    assert_eq!(
        read.cpus_source,
        "default 1 CPU (no CPU information readable)"
    );
    assert!(read
        .notes
        .iter()
        .any(|n| n.starts_with("cannot read /proc/self/cgroup")));
}

#[test]
fn unreadable_proc_still_finds_the_well_known_limit_file() {
    let host = FakeHost::empty();
    host.write("/sys/fs/cgroup/memory.max", &bytes(GIB));
    let read = host.read();
    assert_eq!(read.memory_mb(), 1024);
    assert_eq!(read.memory_source, "cgroup v2 /sys/fs/cgroup/memory.max");
}

#[test]
fn huge_values_are_no_limit_and_more_than_the_host_is_rejected() {
    let host = FakeHost::new();
    host.cgroup_v1("/a/b")
        .write(
            "/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes",
            "9223372036854771712\n",
        )
        .write(
            "/sys/fs/cgroup/memory/a/memory.limit_in_bytes",
            &bytes(64 * GIB),
        )
        .write(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "99999999999999999999999\n",
        );
    let read = host.read();
    assert_eq!(read.memory_bytes, 16 * GIB);
    let notes = read.notes.join("\n");
    assert!(
        notes.contains("65536 MB is more than the host's 16384 MB"),
        "{notes}"
    );
    assert!(
        notes.contains("not a number"),
        "a value past u64 is garbage: {notes}"
    );
}

#[test]
fn a_mem_total_under_64_mb_is_not_believed_over_a_limit() {
    for (kib, believed) in [(1, false), (65535, false), (65536, true), (262_144, true)] {
        let host = FakeHost::new();
        host.cgroup_v2("/")
            .write("/proc/meminfo", &format!("MemTotal: {kib} kB\n"))
            .write("/sys/fs/cgroup/memory.max", &bytes(512 * MIB));
        let read = host.read();
        let notes = read.notes.join("\n");
        if believed {
            // The machine is smaller than the limit: the machine's size, as before.
            assert_eq!(read.memory_bytes, kib * 1024, "{kib} kB: {notes}");
            assert!(notes.contains("more than the host's"), "{kib} kB: {notes}");
        } else {
            assert_eq!(read.memory_mb(), 512, "{kib} kB: {notes}");
            assert!(notes.contains("ignored /proc/meminfo MemTotal"), "{notes}");
        }
    }
    let host = FakeHost::new();
    host.write("/proc/meminfo", "MemTotal: 1 kB\n");
    let read = host.read();
    assert_eq!(read.memory_mb(), 512);
    assert_eq!(
        read.memory_source,
        "default 512 MB (MemTotal not believed, no cgroup memory limit)"
    );
}

#[test]
fn notes_are_bounded_in_number_and_length() {
    let host = FakeHost::new();
    // 40 levels of a name near NAME_MAX, each level's limit file garbage: 40 notes' worth.
    let name = "n".repeat(100);
    let path: String = (0..40).map(|_| format!("/{name}")).collect();
    host.cgroup_v2(&path);
    let mut dir = String::from("/sys/fs/cgroup");
    for _ in 0..40 {
        dir = format!("{dir}/{name}");
        host.write(&format!("{dir}/memory.max"), "lots\n");
    }
    let read = host.read();
    assert_eq!(read.notes.len(), 33, "{:?}", read.notes);
    assert_eq!(
        read.notes.last().map(String::as_str),
        Some("8 more notes like these were left out")
    );
    assert!(read.notes.iter().all(|n| n.len() < 400), "{:?}", read.notes);
    assert!(read.notes[0].contains("...(4"), "{}", read.notes[0]);
}

#[test]
fn dot_dot_in_a_mount_point_is_not_followed_out_of_the_snapshot() {
    let host = FakeHost::new();
    // A directory beside the tree, named after it.
    let name = host.root().file_name().expect("name").to_string_lossy();
    let beside = format!("{name}-outside");
    host.write("/proc/self/cgroup", "0::/\n").write(
        "/proc/self/mountinfo",
        &format!("30 25 0:26 / /sys/../../{beside} rw - cgroup2 cgroup2 rw\n"),
    );
    let outside = host.root().with_file_name(&beside);
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("memory.max"), bytes(256 * MIB)).expect("write");
    let read = host.read();
    std::fs::remove_dir_all(&outside).expect("clean up");
    assert_eq!(read.memory_bytes, 16 * GIB, "{:?}", read.notes);
    assert!(
        read.notes.iter().any(|n| n.contains("not a plain")),
        "{:?}",
        read.notes
    );
}

#[test]
fn fractional_cpu_max_rounds_up() {
    let host = FakeHost::new();
    host.cgroup_v2("/")
        .write("/sys/fs/cgroup/cpu.max", "150000 100000\n");
    let read = host.read();
    assert_eq!(read.cpus, 2);
    assert_eq!(
        read.cpus_source,
        "cgroup v2 /sys/fs/cgroup/cpu.max (quota 150000/100000, rounded up)"
    );
    assert_eq!(
        read.cpu_capacity, 1.5,
        "CPU use is measured against the exact quota"
    );
}

#[test]
fn the_cpu_time_is_read_from_the_own_cgroup() {
    let host = FakeHost::new();
    host.cgroup_v1("/app/web")
        .write("/sys/fs/cgroup/cpu,cpuacct/app/web/cpuacct.usage", "42\n");
    let dir = host.read().cpu_cgroup.expect("the cpuacct cgroup");
    assert_eq!(dir.version, Version::V1);
    assert_eq!(dir.path, Path::new("/sys/fs/cgroup/cpu,cpuacct/app/web"));
    assert_eq!(host.read().cpu_capacity, 8.0, "no quota: the CPU count");
    let v2 = FakeHost::new();
    v2.cgroup_v2("/dyno")
        .write("/sys/fs/cgroup/dyno/cpu.stat", "usage_usec 7\n");
    let dir = v2.read().cpu_cgroup.expect("the v2 cgroup");
    assert_eq!(
        (dir.version, dir.path),
        (Version::V2, "/sys/fs/cgroup/dyno".into())
    );
    assert_eq!(FakeHost::new().read().cpu_cgroup, None, "none mounted");
}

#[test]
fn cpu_max_without_a_quota_is_no_limit() {
    let host = FakeHost::new();
    host.cgroup_v2("/")
        .write("/sys/fs/cgroup/cpu.max", "max 100000\n");
    assert_eq!(host.read().cpus, 8);
}

#[test]
fn cgroup_v1_cfs_quota_on_a_parent() {
    let host = FakeHost::new();
    host.cgroup_v1("/app/web")
        .write(
            "/sys/fs/cgroup/cpu,cpuacct/app/web/cpu.cfs_quota_us",
            "-1\n",
        )
        .write(
            "/sys/fs/cgroup/cpu,cpuacct/app/web/cpu.cfs_period_us",
            "100000\n",
        )
        .write(
            "/sys/fs/cgroup/cpu,cpuacct/app/cpu.cfs_quota_us",
            "250000\n",
        )
        .write(
            "/sys/fs/cgroup/cpu,cpuacct/app/cpu.cfs_period_us",
            "100000\n",
        );
    let read = host.read();
    assert_eq!(read.cpus, 3);
    assert!(read
        .cpus_source
        .starts_with("cgroup v1 /sys/fs/cgroup/cpu,cpuacct/app/cpu.cfs_quota_us"));
}

#[test]
fn restricted_affinity_narrows_the_cpus() {
    let host = FakeHost::new();
    host.write("/proc/self/status", "Cpus_allowed_list:\t2-3\n");
    let read = host.read();
    assert_eq!(read.cpus, 2);
    assert_eq!(read.cpus_source, "/proc/self/status Cpus_allowed_list");
}

#[test]
fn equal_limits_name_the_broadest_source() {
    // Affinity 0-7 on an 8-CPU host restricts nothing: the host count is the reason.
    let read = FakeHost::new().read();
    assert_eq!(read.cpus_source, "/sys/devices/system/cpu/online");
}

#[test]
fn the_live_machine_reads_without_panicking() {
    let read = read(Path::new("/"));
    assert!(read.memory_bytes > 0 && read.cpus > 0);
}

#[test]
fn devices_fifos_and_huge_paths_in_a_snapshot_are_noted_not_read() {
    let host = FakeHost::new();
    host.cgroup_v2("/");
    let root = host.root();
    std::fs::create_dir_all(root.join("sys/fs/cgroup")).expect("mkdir");
    // A link out of the snapshot resolves inside it: to the snapshot's own /dev/zero, a FIFO.
    std::os::unix::fs::symlink("/dev/zero", root.join("sys/fs/cgroup/memory.max")).expect("link");
    std::fs::create_dir(root.join("dev")).expect("mkdir");
    let meminfo = root.join("proc/meminfo");
    std::fs::remove_file(&meminfo).expect("remove");
    for fifo in [meminfo, root.join("dev/zero")] {
        let c_path = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("cstring");
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    }
    let read = host.read();
    assert_eq!(read.memory_bytes, 512 * MIB, "the last fallback");
    let notes = read.notes.join("\n");
    assert!(
        notes.contains("memory.max: not a regular file (a FIFO)"),
        "{notes}"
    );
    assert!(notes.contains("/proc/meminfo"), "{notes}");

    // 50,000 levels in 100 KB: passed over at once, not walked level by level.
    let deep = "/a".repeat(50_000);
    host.write("/proc/self/cgroup", &format!("0::{deep}\n"));
    let read = host.read();
    assert!(
        read.notes
            .iter()
            .any(|n| n.contains("longer than 4096 bytes")),
        "{:?}",
        read.notes
    );
}
