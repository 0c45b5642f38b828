//! Usable CPUs: the host's online CPUs, narrowed by affinity and by a cgroup CPU quota; and the
//! cgroup the dyno's CPU time is counted in.

use std::path::Path;

use super::cgroup::{CgroupDir, Hierarchy, Version};
use super::{procfs, smallest, Notes, Reading, Snapshot, PROC};

/// The usable CPUs as a whole count (a fractional quota rounds up), and as the exact share the
/// dyno may use (a quota of 0.9 CPU is 0.9), against which its CPU use is measured.
pub(super) fn read(
    snapshot: &Snapshot,
    hierarchies: &[Hierarchy],
    notes: &mut Notes,
) -> (Reading<u32>, f64) {
    let mut readings = Vec::new();
    let online = Path::new("/sys/devices/system/cpu/online");
    match snapshot
        .read(online)
        .map(|text| procfs::count_cpu_list(&text))
    {
        Ok(Some(count)) if count > 0 => readings.push(Reading {
            value: count,
            source: online.display().to_string(),
        }),
        Ok(_) => notes.push(format!("ignored {}: not a CPU list", online.display())),
        Err(err) => notes.push(format!("cannot read {}: {err}", online.display())),
    }
    readings.extend(affinity(snapshot));
    let mut exact: Option<f64> = None;
    for hierarchy in hierarchies {
        for dir in hierarchy.levels() {
            if let Some((reading, cpus)) = quota(snapshot, dir, hierarchy.version, notes) {
                readings.push(reading);
                exact = Some(exact.map_or(cpus, |e| e.min(cpus)));
            }
        }
    }
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

/// A CPU quota in one cgroup directory, as whole CPUs (a fractional quota rounds up) and exact.
fn quota(
    snapshot: &Snapshot,
    dir: &Path,
    version: Version,
    notes: &mut Notes,
) -> Option<(Reading<u32>, f64)> {
    let (shown, quota, period) = match version {
        Version::V2 => {
            let path = dir.join("cpu.max");
            let text = snapshot.read_optional(&path, notes)?;
            let mut fields = text.split_whitespace();
            let quota = fields.next()?.to_owned();
            let period = fields.next().unwrap_or("100000").to_owned();
            (super::shown(&path), quota, period)
        }
        Version::V1 => {
            let path = dir.join("cpu.cfs_quota_us");
            let quota = snapshot.read_optional(&path, notes)?.trim().to_owned();
            let period = snapshot.read_optional(&dir.join("cpu.cfs_period_us"), notes)?;
            (super::shown(&path), quota, period.trim().to_owned())
        }
    };
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
