//! What follows a change of limits, as a table: limits before and after, the rules, the count
//! now -> the new soft limit, the count to move to, the line.

use super::*;
use crate::supervisor::memory::fit::Fit;

const MB: u64 = 1024 * 1024;

fn size(memory_mb: u64, cpus: u32, capacity: f64) -> Size {
    Size {
        memory_bytes: memory_mb * MB,
        memory_source: "cgroup v1 /sys/fs/cgroup/memory/dyno/memory.limit_in_bytes".to_owned(),
        cpus,
        cpus_source: "cgroup v1 /sys/fs/cgroup/cpu/dyno/cpu.cfs_quota_us".to_owned(),
        cpu_capacity: capacity,
    }
}

fn rules(count: Count, max_workers: Option<u32>) -> Rules {
    Rules {
        soft_limit_percent: 85,
        web_memory_mb: 256,
        max_workers,
        count,
    }
}

const STATIC: Count = Count::Sized(Sizing::Static);
const MEASURED: Count = Count::Sized(Sizing::Measured);
const ADAPTIVE: Count = Count::Sized(Sizing::Adaptive);

fn users() -> Count {
    Count::Kept("WEB_CONCURRENCY is the user's".to_owned())
}

#[test]
fn each_sizing_follows_the_new_limits_as_its_own_rules_say() {
    type Row = (
        &'static str,
        Count,
        Option<u32>,
        Size,
        Size,
        u32,
        Option<u32>,
    );
    let rows: Vec<Row> = vec![
        // Static sizing: the count a boot with the new limits would choose.
        (
            "static, memory halved",
            STATIC,
            None,
            size(512, 8, 8.0),
            size(256, 8, 8.0),
            2,
            Some(1),
        ),
        (
            "static, memory doubled",
            STATIC,
            None,
            size(256, 8, 8.0),
            size(512, 8, 8.0),
            1,
            Some(2),
        ),
        (
            "static, 1 GB halved",
            STATIC,
            None,
            size(1024, 8, 8.0),
            size(512, 8, 8.0),
            4,
            Some(2),
        ),
        (
            "static, a quota of 1 CPU",
            STATIC,
            None,
            size(1024, 2, 2.0),
            size(1024, 1, 1.0),
            4,
            Some(3),
        ),
        (
            "static, the quota lifted",
            STATIC,
            None,
            size(1024, 1, 1.0),
            size(1024, 2, 2.0),
            3,
            Some(4),
        ),
        (
            "static, after TTIN",
            STATIC,
            None,
            size(512, 8, 8.0),
            size(768, 8, 8.0),
            5,
            Some(3),
        ),
        (
            "static, the same count",
            STATIC,
            None,
            size(512, 8, 8.0),
            size(600, 8, 8.0),
            2,
            None,
        ),
        (
            "static, 0.9 to 0.5 CPU",
            STATIC,
            None,
            size(512, 1, 0.9),
            size(512, 1, 0.5),
            2,
            None,
        ),
        (
            "static, LAUNCHER_MAX_WORKERS",
            STATIC,
            Some(1),
            size(256, 8, 8.0),
            size(1024, 8, 8.0),
            1,
            None,
        ),
        // Measured sizing: never above the CPU term; memory is its own measurement's.
        (
            "measured, 8 CPUs to 1",
            MEASURED,
            None,
            size(512, 8, 8.0),
            size(512, 1, 1.0),
            5,
            Some(3),
        ),
        (
            "measured, under the new most",
            MEASURED,
            None,
            size(512, 8, 8.0),
            size(512, 1, 1.0),
            2,
            None,
        ),
        (
            "measured, memory halved",
            MEASURED,
            None,
            size(512, 8, 8.0),
            size(256, 8, 8.0),
            4,
            None,
        ),
        // Adaptive sizing: never under the new static count.
        (
            "adaptive, floor raised",
            ADAPTIVE,
            None,
            size(512, 8, 8.0),
            size(1024, 8, 8.0),
            3,
            Some(4),
        ),
        (
            "adaptive, above the floor",
            ADAPTIVE,
            None,
            size(512, 8, 8.0),
            size(1024, 8, 8.0),
            6,
            None,
        ),
        (
            "adaptive, floor lowered",
            ADAPTIVE,
            None,
            size(1024, 8, 8.0),
            size(512, 8, 8.0),
            4,
            None,
        ),
        // Not the launcher's count: kept whatever the limits.
        (
            "the user's",
            users(),
            None,
            size(512, 8, 8.0),
            size(256, 8, 8.0),
            3,
            None,
        ),
    ];
    for (name, count, max_workers, old, new, workers, resize) in rows {
        let rules = rules(count, max_workers);
        let change = follow(&old, &new, &rules, workers, None).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(change.resize, resize, "{name}");
        assert_eq!(change.limits.quota_bytes, new.memory_bytes, "{name}");
        assert_eq!(
            change.limits.soft_limit_bytes,
            new.memory_bytes / 100 * 85,
            "{name}: the soft limit follows whoever owns the count"
        );
        let line = change.event.to_line();
        let shown = resize.unwrap_or(workers);
        assert!(
            line.contains(&format!(" workers={shown}")),
            "{name}: {line}"
        );
        assert_eq!(
            line.contains(" workers_was="),
            resize.is_some(),
            "{name}: {line}"
        );
    }
}

#[test]
fn the_line_gives_old_and_new_figures_and_the_formula() {
    let (old, new) = (size(512, 8, 8.0), size(256, 8, 8.0));
    let change = follow(&old, &new, &rules(STATIC, None), 2, None).expect("a change");
    assert_eq!(
        change.event.to_line(),
        "launcher: at=info event=limits_changed memory_quota=256.0MB memory_quota_was=512.0MB \
         cpus=8 cpus_was=8 soft_limit=217.6MB sizing=static formula=\"memory 256 MB / 256 MB \
         per worker = 1, CPUs 2*8+1 = 17: memory decides\" workers=1 workers_was=2 \
         memory_source=\"cgroup v1 /sys/fs/cgroup/memory/dyno/memory.limit_in_bytes\"\n"
    );
    let (old, new) = (size(512, 1, 0.9), size(512, 1, 0.5));
    let line = follow(&old, &new, &rules(users(), None), 3, None)
        .expect("a change")
        .event
        .to_line();
    assert!(
        line.contains(" cpus=0.5 cpus_was=0.9 ")
            && line.contains(" kept=\"WEB_CONCURRENCY is the user's\" workers=3 ")
            && line.contains(" cpus_source=")
            && !line.contains("memory_source"),
        "{line}"
    );
    let measured = follow(
        &size(512, 8, 8.0),
        &size(512, 2, 2.0),
        &rules(MEASURED, None),
        4,
        None,
    );
    let line = measured.expect("a change").event.to_line();
    assert!(
        line.contains(" max_workers=5 max_workers_was=17 "),
        "{line}"
    );
    let adaptive = follow(
        &size(512, 8, 8.0),
        &size(1024, 8, 8.0),
        &rules(ADAPTIVE, None),
        2,
        None,
    );
    let line = adaptive.expect("a change").event.to_line();
    assert!(line.contains(" min_workers=4 min_workers_was=2 "), "{line}");
}

#[test]
fn measured_and_adaptive_shed_at_once_to_what_their_last_fit_says_fits_now() {
    // Measured at 4 workers of 100 MB over a 35 MB base: 8.35 fit under 870.4 MB (1 GB), 4.0
    // under 435.2 MB (512 MB), 1.83 under 217.6 MB (256 MB).
    let fit = Fit {
        worker_bytes: 100 * MB,
        base_bytes: 35 * MB,
        workers: 8.35,
    };
    let shed = |count: Count, from_mb: u64, to_mb: u64, workers: u32| {
        let (old, new) = (size(from_mb, 8, 8.0), size(to_mb, 8, 8.0));
        let change = follow(&old, &new, &rules(count, None), workers, Some(fit));
        let change = change.expect("a change");
        (change.resize, change.event.to_line())
    };
    let (resize, line) = shed(MEASURED, 1024, 256, 4);
    assert_eq!(resize, Some(1), "{line}");
    assert!(line.contains(" fit=1.83 "), "{line}");
    assert_eq!(shed(MEASURED, 1024, 512, 4).0, None, "4.0 still fit");
    assert_eq!(shed(MEASURED, 1024, 512, 5).0, Some(4));
    // Adaptive: memory first, under the floor if need be; else never under the new floor.
    assert_eq!(shed(ADAPTIVE, 1024, 256, 4).0, Some(1));
    assert_eq!(shed(ADAPTIVE, 512, 1024, 3).0, Some(4));
    // Static sizing goes by the formula alone, and says nothing of a fit.
    let (resize, line) = shed(STATIC, 1024, 256, 4);
    assert_eq!(resize, Some(1));
    assert!(!line.contains(" fit="), "{line}");
}

#[test]
fn the_same_figures_from_another_file_are_no_change() {
    let old = size(512, 2, 1.5);
    let mut new = old.clone();
    new.memory_source = "cgroup v1 /sys/fs/cgroup/memory/memory.limit_in_bytes".to_owned();
    new.cpus_source = "/sys/devices/system/cpu/online".to_owned();
    assert_eq!(follow(&old, &new, &rules(STATIC, None), 2, None), None);
    assert_eq!(follow(&old, &old, &rules(users(), None), 2, None), None);
}

#[test]
fn a_boot_with_the_new_limits_chooses_the_same_count() {
    // The static count after a change is the formula's, as `launcher size` computes it at boot:
    // the seven Heroku dynos, reached by resizing from each of the others.
    for from in crate::dynos::DYNOS {
        for to in crate::dynos::DYNOS {
            let old = size(from.memory_mb, from.cpus, f64::from(from.cpus));
            let new = size(to.memory_mb, to.cpus, f64::from(to.cpus));
            let workers = from.web_concurrency;
            let to_count = match follow(&old, &new, &rules(STATIC, None), workers, None) {
                Some(change) => change.resize.unwrap_or(workers),
                None => workers,
            };
            assert_eq!(to_count, to.web_concurrency, "{} -> {}", from.name, to.name);
        }
    }
}
