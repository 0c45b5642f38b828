//! Accounting over fake host trees: cgroup v1, cgroup v2, Heroku's Cedar layout, no limit.

use std::path::Path;

use super::smaps::{self, Footprint};
use super::{Meter, Usage};
use crate::host::fake::FakeHost;
use crate::host::{self, Snapshot, MIB};

/// The shared fake host (8 CPUs, 16 GiB, 12 GiB of it available, no cgroup) and its meter.
struct Fake(FakeHost);

impl Fake {
    fn new() -> Self {
        let fake = Fake(FakeHost::new());
        fake.write(
            "/proc/meminfo",
            "MemTotal: 16777216 kB\nMemAvailable: 12582912 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
        );
        fake
    }

    fn write(&self, host_path: &str, text: &str) -> &Self {
        self.0.write(host_path, text);
        self
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.0.root())
    }

    fn meter(&self) -> Meter {
        Meter::for_host(&self.snapshot(), &self.0.read(), 100)
    }

    fn usage(&self) -> Option<Usage> {
        self.meter().usage(&self.snapshot())
    }

    fn oom_kills(&self) -> Option<u64> {
        self.meter().oom_kills(&self.snapshot())
    }
}

fn rollup(rss_kb: u64, pss_kb: u64, private_kb: u64, swap_pss_kb: u64) -> String {
    format!(
        "00400000-7ffd0000 ---p 00000000 00:00 0    [rollup]\nRss: {rss_kb} kB\nPss: {pss_kb} kB\n\
         Pss_Anon: {pss_kb} kB\nShared_Clean: 0 kB\nPrivate_Clean: 0 kB\nPrivate_Dirty: {private_kb} kB\n\
         Swap: {swap_pss_kb} kB\nSwapPss: {swap_pss_kb} kB\n"
    )
}

const V1_MOUNTS: &str = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";

#[test]
fn cgroup_v1_counts_rss_and_swap_of_the_limited_cgroup_not_page_cache() {
    let fake = Fake::new();
    fake.write("/proc/self/cgroup", "4:memory:/dyno/web\n")
        .write("/proc/self/mountinfo", V1_MOUNTS)
        .write("/sys/fs/cgroup/memory/dyno/memory.limit_in_bytes", "536870912\n")
        .write(
            "/sys/fs/cgroup/memory/dyno/memory.stat",
            "cache 1\nrss 2\nswap 3\ntotal_cache 900000000\ntotal_rss 314572800\ntotal_swap 10485760\n",
        )
        .write("/sys/fs/cgroup/memory/dyno/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
        .write("/sys/fs/cgroup/memory/dyno/web/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
        .write("/sys/fs/cgroup/memory/dyno/web/worker/memory.oom_control", "oom_kill 4\n");
    assert_eq!(
        fake.meter().describe(),
        "cgroup v1 /sys/fs/cgroup/memory/dyno/memory.stat"
    );
    let usage = fake.usage().expect("usage");
    assert_eq!(usage.rss_bytes, 300 * MIB);
    assert_eq!(usage.total_bytes(), 310 * MIB);
    // v1 counts a kill in the killed process's own cgroup only: the subtree is summed.
    assert_eq!(fake.oom_kills(), Some(7));
}

#[test]
fn memory_the_kernel_cannot_reclaim_counts_shared_and_kernel_memory_too() {
    // v1: 300 MB of anonymous memory, 150 MB in a tmpfs file (shmem, in `cache`), 20 MB of
    // kernel memory; page cache apart.
    let v1 = Fake::new();
    v1.write("/proc/self/cgroup", "4:memory:/dyno\n")
        .write("/proc/self/mountinfo", V1_MOUNTS)
        .write("/sys/fs/cgroup/memory/dyno/memory.limit_in_bytes", "536870912\n")
        .write(
            "/sys/fs/cgroup/memory/dyno/memory.stat",
            "cache 900\nrss 1\nshmem 1\ntotal_cache 472907776\ntotal_rss 314572800\ntotal_shmem 157286400\n",
        )
        .write("/sys/fs/cgroup/memory/dyno/memory.kmem.usage_in_bytes", "20971520\n");
    let usage = v1.usage().expect("usage");
    assert_eq!(
        (usage.rss_bytes, usage.shmem_bytes, usage.kernel_bytes),
        (300 * MIB, 150 * MIB, 20 * MIB)
    );
    assert_eq!(
        usage.total_bytes(),
        470 * MIB,
        "the cache beyond shmem is not counted"
    );
    // v2: `kernel` where the kernel has it, else its parts; `sock` besides.
    for (stat, kernel) in [
        ("anon 104857600\nfile 99999\nshmem 52428800\nkernel 10485760\nsock 1048576\n", 11),
        (
            "anon 104857600\nshmem 52428800\nkernel_stack 1048576\npagetables 2097152\npercpu 0\nslab_unreclaimable 3145728\nslab_reclaimable 999999\n",
            6,
        ),
    ] {
        let v2 = Fake::new();
        v2.write("/proc/self/cgroup", "0::/dyno\n")
            .write(
                "/proc/self/mountinfo",
                "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            )
            .write("/sys/fs/cgroup/dyno/memory.max", "536870912\n")
            .write("/sys/fs/cgroup/dyno/memory.stat", stat);
        let usage = v2.usage().expect("usage");
        assert_eq!(usage.shmem_bytes, 50 * MIB, "{stat}");
        assert_eq!(usage.kernel_bytes, kernel * MIB, "{stat}");
        assert_eq!(usage.total_bytes(), (150 + kernel) * MIB, "{stat}");
    }
}

#[test]
fn cgroup_v1_without_hierarchy_totals_reads_the_local_figures() {
    let fake = Fake::new();
    fake.write("/proc/self/cgroup", "4:memory:/dyno\n")
        .write("/proc/self/mountinfo", V1_MOUNTS)
        .write(
            "/sys/fs/cgroup/memory/dyno/memory.limit_in_bytes",
            "536870912\n",
        )
        .write(
            "/sys/fs/cgroup/memory/dyno/memory.stat",
            "cache 5\nrss 4096\n",
        );
    assert_eq!(
        fake.usage(),
        Some(Usage {
            rss_bytes: 4096,
            ..Usage::default()
        })
    );
    assert_eq!(
        fake.oom_kills(),
        None,
        "no oom_control file: nothing to claim"
    );
}

#[test]
fn cgroup_v2_counts_anon_and_swap_and_hierarchical_oom_kills() {
    let fake = Fake::new();
    fake.write("/proc/self/cgroup", "0::/dyno/web\n")
        .write(
            "/proc/self/mountinfo",
            "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        )
        .write("/sys/fs/cgroup/dyno/memory.max", "1073741824\n")
        .write("/sys/fs/cgroup/dyno/web/memory.max", "max\n")
        .write(
            "/sys/fs/cgroup/dyno/memory.stat",
            "anon 209715200\nfile 734003200\nshmem 0\n",
        )
        .write("/sys/fs/cgroup/dyno/memory.swap.current", "20971520\n")
        .write(
            "/sys/fs/cgroup/dyno/memory.events",
            "low 0\nhigh 0\nmax 9\noom 3\noom_kill 2\n",
        )
        .write("/sys/fs/cgroup/dyno/web/memory.events", "oom_kill 2\n");
    assert_eq!(
        fake.meter().describe(),
        "cgroup v2 /sys/fs/cgroup/dyno/memory.stat"
    );
    let usage = fake.usage().expect("usage");
    assert_eq!(usage.rss_bytes, 200 * MIB);
    assert_eq!(usage.swap_bytes, 20 * MIB);
    assert_eq!(
        fake.oom_kills(),
        Some(2),
        "v2 events are hierarchical already"
    );
}

#[test]
fn cedar_layout_sums_proportional_memory_over_the_dynos_processes() {
    let fake = Fake::new();
    fake.write("/proc/self/cgroup", "0::/\n")
        .write(
            "/proc/self/mountinfo",
            "20 1 0:5 / /proc rw - proc proc rw\n",
        )
        .write("/sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n")
        // A master and two workers sharing 20 MB after fork: RSS sums would count it three times.
        .write("/proc/1/smaps_rollup", &rollup(30_720, 17_067, 10_240, 0))
        .write(
            "/proc/7/smaps_rollup",
            &rollup(40_960, 27_307, 20_480, 1_024),
        )
        .write("/proc/8/smaps_rollup", &rollup(40_960, 27_306, 20_480, 0))
        .write(
            "/proc/9/status",
            "Name:\tsh\nVmRSS:\t1024 kB\nVmSwap:\t0 kB\n",
        );
    let meter = fake.meter();
    assert_eq!(meter, Meter::Processes);
    let usage = fake.usage().expect("usage");
    assert_eq!(usage.rss_bytes, (17_067 + 27_307 + 27_306 + 1_024) * 1024);
    assert_eq!(usage.swap_bytes, 1_024 * 1024);
    assert_eq!(
        fake.oom_kills(),
        None,
        "no cgroup: an OOM kill is not claimed"
    );
}

#[test]
fn no_limit_meters_the_launchers_own_processes_not_the_machine() {
    let fake = Fake::new();
    fake.write("/proc/100/smaps_rollup", &rollup(3_000, 2_048, 2_000, 0))
        .write("/proc/100/task/100/children", "101 102")
        .write("/proc/101/smaps_rollup", &rollup(40_960, 30_720, 20_480, 0))
        .write("/proc/101/task/101/children", "")
        .write(
            "/proc/102/smaps_rollup",
            &rollup(40_960, 30_720, 20_480, 1_024),
        )
        .write("/proc/102/task/102/children", "")
        // Another process on the machine: not the app's.
        .write(
            "/proc/7/smaps_rollup",
            &rollup(9_000_000, 9_000_000, 9_000_000, 0),
        );
    assert_eq!(fake.meter(), Meter::OwnTree { pid: 100 });
    let usage = fake.usage().expect("usage");
    assert_eq!(
        usage.total_bytes(),
        (2_048 + 30_720 + 30_720 + 1_024) * 1024
    );
    assert_eq!(usage.swap_bytes, 1_024 * 1024);
    assert_eq!(fake.oom_kills(), None);
}

#[test]
fn rollup_parses_unique_and_proportional_memory() {
    let text = "55a0-7ffd ---p 00000000 00:00 0 [rollup]\nRss: 29092 kB\nPss: 19320 kB\n\
                Shared_Clean: 7568 kB\nShared_Dirty: 6940 kB\nPrivate_Clean: 8 kB\n\
                Private_Dirty: 14584 kB\nSwap: 100 kB\nSwapPss: 50 kB\n";
    assert_eq!(
        smaps::parse_rollup(text),
        Some(Footprint {
            rss_bytes: 29_092 * 1024,
            pss_bytes: 19_370 * 1024,
            uss_bytes: 14_642 * 1024,
            swap_bytes: 50 * 1024,
            shared_dirty_bytes: 6_940 * 1024,
        })
    );
    assert_eq!(
        smaps::parse_rollup(""),
        None,
        "a kernel thread has no Rss line"
    );
}

#[test]
fn a_worker_tree_is_summed_and_exited_processes_are_skipped() {
    let fake = Fake::new();
    fake.write("/proc/10/smaps_rollup", &rollup(100, 60, 50, 0))
        .write("/proc/11/smaps_rollup", &rollup(20, 15, 10, 0));
    let proc_dir = fake.0.root().join("proc");
    let sum = smaps::total(&proc_dir, &[10, 11, 12]);
    assert_eq!(sum.uss_bytes, 60 * 1024);
    assert_eq!(sum.pss_bytes, 75 * 1024);
    let mut pids = crate::procs::pids(&proc_dir);
    pids.sort_unstable();
    assert_eq!(pids, vec![10, 11]);
}

#[test]
fn the_live_machine_is_metered() {
    let snapshot = Snapshot::new(Path::new("/"));
    let me = std::process::id() as i32;
    let meter = Meter::for_host(&snapshot, &host::read(Path::new("/")), me);
    assert!(meter.usage(&snapshot).is_some(), "{}", meter.describe());
    let own = smaps::footprint(Path::new("/proc"), me).expect("own footprint");
    assert!(
        own.uss_bytes > 0 && own.pss_bytes >= own.uss_bytes,
        "{own:?}"
    );
}

#[test]
fn cpu_time_is_read_where_the_memory_is_counted() {
    use super::cpu::CpuMeter;
    let cpu = |fake: &Fake| {
        let host = fake.0.read();
        let meter = Meter::for_host(&fake.snapshot(), &host, 100);
        CpuMeter::for_host(&host, &meter, 100)
    };
    // A v1 memory cgroup and no cpuacct hierarchy mounted: the launcher's tree, not the
    // machine's every process.
    let v1 = Fake::new();
    v1.write("/proc/self/cgroup", "4:memory:/dyno\n")
        .write("/proc/self/mountinfo", V1_MOUNTS)
        .write(
            "/sys/fs/cgroup/memory/dyno/memory.limit_in_bytes",
            "536870912\n",
        )
        .write("/sys/fs/cgroup/memory/dyno/memory.stat", "total_rss 1\n");
    assert_eq!(cpu(&v1), CpuMeter::OwnTree { pid: 100 });
    // Cedar: a limit file, no cgroup mounted: every process of the dyno.
    let cedar = Fake::new();
    cedar
        .write("/proc/self/cgroup", "0::/\n")
        .write(
            "/proc/self/mountinfo",
            "20 1 0:5 / /proc rw - proc proc rw\n",
        )
        .write("/sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n");
    assert_eq!(cpu(&cedar), CpuMeter::Processes);
    // No limit at all.
    assert_eq!(cpu(&Fake::new()), CpuMeter::OwnTree { pid: 100 });
}
