//! Usable CPUs: the host's online CPUs, narrowed by affinity and by a cgroup CPU quota; and the
//! cgroup the dyno's CPU time is counted in.

use std::path::Path;

use super::cgroup::{CgroupDir, Hierarchy, Version};
use super::limits::QuotaDir;
use super::{procfs, smallest, Notes, Reading, Snapshot, PROC};

/// The usable CPUs as a whole count (a fractional quota rounds up), and as the exact share the
/// dyno may use (a quota of 0.9 CPU is 0.9), against which its CPU use is measured; with what
/// `LimitFiles` reads again while the app runs: the counts that do not change (online CPUs,
/// affinity) and the directories whose quota files could be read.
pub(super) fn read(
    snapshot: &Snapshot,
    hierarchies: &[Hierarchy],
    notes: &mut Notes,
) -> (Reading<u32>, f64, Vec<Reading<u32>>, Vec<QuotaDir>) {
    let mut fixed = Vec::new();
    let online = Path::new("/sys/devices/system/cpu/online");
    match snapshot
        .read(online)
        .map(|text| procfs::count_cpu_list(&text))
    {
        Ok(Some(count)) if count > 0 => fixed.push(Reading {
            value: count,
            source: online.display().to_string(),
        }),
        Ok(_) => notes.push(format!("ignored {}: not a CPU list", online.display())),
        Err(err) => notes.push(format!("cannot read {}: {err}", online.display())),
    }
    fixed.extend(affinity(snapshot));
    let mut quotas = Vec::new();
    let mut found = Vec::new();
    for hierarchy in hierarchies {
        for dir in hierarchy.levels() {
            let dir = QuotaDir {
                path: dir.to_path_buf(),
                version: hierarchy.version,
            };
            let Some(texts) = quota_texts(snapshot, &dir, notes) else {
                continue;
            };
            quotas.extend(parse_quota(&texts, dir.version, notes));
            found.push(dir);
        }
    }
    let (count, capacity) = choose(fixed.clone(), quotas);
    (count, capacity, fixed, found)
}

/// The smallest count of the fixed ones and the quotas (1 CPU when none is known), and the exact
/// share: the smallest quota, at most the count.
pub(super) fn choose(
    mut readings: Vec<Reading<u32>>,
    quotas: Vec<(Reading<u32>, f64)>,
) -> (Reading<u32>, f64) {
    let exact = quotas.iter().map(|(_, cpus)| *cpus).reduce(f64::min);
    readings.extend(quotas.into_iter().map(|(reading, _)| reading));
    let count = smallest(readings, |r| r.value).unwrap_or_else(|| Reading {
        value: 1,
        source: "default 1 CPU (no CPU information readable)".to_owned(),
    });
    let capacity = exact.map_or(f64::from(count.value), |q| q.min(f64::from(count.value)));
    (count, capacity)
}

/// The cgroup directory of this process that counts its CPU time: v1 `cpuacct.usage` in the
/// cpuacct hierarchy, else v2 `cpu.stat`. None where neither can be read (Heroku's Cedar dynos
/// mount no cgroup).
pub(super) fn accounting(snapshot: &Snapshot, hierarchies: &[Hierarchy]) -> Option<CgroupDir> {
    hierarchies.iter().find_map(|h| {
        let file = match h.version {
            Version::V1 => "cpuacct.usage",
            Version::V2 => "cpu.stat",
        };
        snapshot.is_file(&h.own_dir.join(file)).then(|| CgroupDir {
            version: h.version,
            path: h.own_dir.clone(),
        })
    })
}

fn affinity(snapshot: &Snapshot) -> Option<Reading<u32>> {
    let status = snapshot.read(&Snapshot::proc_file("self/status")).ok()?;
    let list = procfs::status_field(&status, "Cpus_allowed_list")?;
    let count = procfs::count_cpu_list(list).filter(|count| *count > 0)?;
    Some(Reading {
        value: count,
        source: format!("{PROC}/self/status Cpus_allowed_list"),
    })
}

/// A cgroup directory's CPU quota files, as read: the file shown, the quota, the period.
pub(super) struct QuotaTexts {
    shown: String,
    quota: String,
    period: String,
}

/// Reads a directory's quota files (v2 `cpu.max`; v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`);
/// None where there are none (a missing file is silent, an unreadable one noted).
pub(super) fn quota_texts(
    snapshot: &Snapshot,
    dir: &QuotaDir,
    notes: &mut Notes,
) -> Option<QuotaTexts> {
    match dir.version {
        Version::V2 => {
            let path = dir.path.join("cpu.max");
            let text = snapshot.read_optional(&path, notes)?;
            let mut fields = text.split_whitespace();
            let quota = fields.next()?.to_owned();
            let period = fields.next().unwrap_or("100000").to_owned();
            let shown = super::shown(&path);
            Some(QuotaTexts {
                shown,
                quota,
                period,
            })
        }
        Version::V1 => {
            let path = dir.path.join("cpu.cfs_quota_us");
            let quota = snapshot.read_optional(&path, notes)?.trim().to_owned();
            let period = snapshot.read_optional(&dir.path.join("cpu.cfs_period_us"), notes)?;
            Some(QuotaTexts {
                shown: super::shown(&path),
                quota,
                period: period.trim().to_owned(),
            })
        }
    }
}

/// A CPU quota, as whole CPUs (a fractional quota rounds up) and exact; None for no quota.
pub(super) fn parse_quota(
    texts: &QuotaTexts,
    version: Version,
    notes: &mut Notes,
) -> Option<(Reading<u32>, f64)> {
    let QuotaTexts {
        shown,
        quota,
        period,
    } = texts;
    if quota == "max" || quota == "-1" {
        return None;
    }
    let (Ok(quota), Ok(period)) = (quota.parse::<u64>(), period.parse::<u64>()) else {
        notes.push(format!("ignored {shown}: not a CPU quota"));
        return None;
    };
    if quota == 0 || period == 0 {
        notes.push(format!("ignored {shown}: a quota or period of 0"));
        return None;
    }
    let cpus = u32::try_from(quota.div_ceil(period)).unwrap_or(u32::MAX);
    let reading = Reading {
        value: cpus,
        source: format!(
            "{} {shown} (quota {quota}/{period}, rounded up)",
            version.label()
        ),
    };
    Some((reading, quota as f64 / period as f64))
}
