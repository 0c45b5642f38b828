//! The memory limit: cgroup files up the hierarchy, Heroku's well-known path, MemTotal, a default.

use std::path::Path;

use super::cgroup::{CgroupDir, Hierarchy, Version};
use super::limits::LimitFile;
use super::{procfs, smallest, Notes, Reading, Snapshot, MIB, PROC};

/// The fallback when nothing at all is readable.
pub const DEFAULT_MEMORY_BYTES: u64 = 512 * MIB;

/// cgroup v1 reports "no limit" as LONG_MAX rounded down to a page (9223372036854771712 with 4 KiB
/// pages); anything this large is no limit, whatever the page size.
const NO_LIMIT_THRESHOLD: u64 = 1 << 62;

/// Read directly when the hierarchy yields nothing: on Heroku's Cedar dynos no cgroup filesystem is
/// mounted, yet the dyno's limit is a plain file at the v1 path.
const WELL_KNOWN: [(&str, Version); 2] = [
    ("/sys/fs/cgroup/memory.max", Version::V2),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", Version::V1),
];

fn limit_files(version: Version) -> &'static [&'static str] {
    match version {
        Version::V1 => &["memory.limit_in_bytes"],
        Version::V2 => &["memory.max", "memory.high"],
    }
}

/// The smallest MemTotal believed. Less is no machine a web app runs on (a Linux kernel and a
/// Python or Ruby server alone need more): a MemTotal under it is taken as unreadable, so it
/// neither passes over a real cgroup limit as "more than the host has" nor sizes the dyno.
pub const MIN_HOST_MEMORY_BYTES: u64 = 64 * MIB;

/// MemTotal as `read` took it: the bytes, or why there are none (the fallback's source).
pub type HostTotal = Result<u64, &'static str>;

/// The memory limit, the cgroup directory of the file it was read from, and what `LimitFiles`
/// reads again while the app runs: the limit files that could be read, and MemTotal.
pub(super) fn read(
    snapshot: &Snapshot,
    hierarchies: &[Hierarchy],
    notes: &mut Notes,
) -> (Reading<u64>, Option<CgroupDir>, Vec<LimitFile>, HostTotal) {
    let host_total = host_total(snapshot, notes);
    let mut found = Vec::new();
    let mut limits = Vec::new();
    for hierarchy in hierarchies {
        for dir in hierarchy.levels() {
            for file in limit_files(hierarchy.version) {
                let file = LimitFile {
                    path: dir.join(file),
                    version: hierarchy.version,
                    well_known: false,
                };
                if let Some(text) = snapshot.read_optional(&file.path, notes) {
                    limits.extend(parse_limit(&text, &file, host_total.ok(), notes));
                    found.push(file);
                }
            }
        }
    }
    if limits.is_empty() {
        for (path, version) in WELL_KNOWN {
            let path = Path::new(path);
            // On a v1 host the second well-known path is the mount's root, read already above.
            let read_already = hierarchies.iter().any(|h| {
                h.version == version
                    && path
                        .parent()
                        .is_some_and(|parent| h.levels().any(|dir| dir == parent))
            });
            if read_already {
                continue;
            }
            let file = LimitFile {
                path: path.to_path_buf(),
                version,
                well_known: true,
            };
            if let Some(text) = snapshot.read_optional(&file.path, notes) {
                limits.extend(parse_limit(&text, &file, host_total.ok(), notes));
                found.push(file);
            }
        }
    }
    let (limit, dir) = choose(limits, host_total, notes);
    (limit, dir, found, host_total)
}

/// The smallest of the limits found, else MemTotal, else the default.
pub(super) fn choose(
    limits: Vec<(Reading<u64>, CgroupDir)>,
    host_total: HostTotal,
    notes: &mut Notes,
) -> (Reading<u64>, Option<CgroupDir>) {
    if let Some((limit, dir)) = smallest(limits, |(reading, _)| reading.value) {
        return (limit, Some(dir));
    }
    let reading = match host_total {
        Ok(bytes) => Reading {
            value: bytes,
            source: format!("{PROC}/meminfo MemTotal (no cgroup memory limit)"),
        },
        Err(why) => {
            if why == UNREADABLE {
                notes.push(format!("cannot read MemTotal from {PROC}/meminfo"));
            }
            Reading {
                value: DEFAULT_MEMORY_BYTES,
                source: format!("default 512 MB ({why})"),
            }
        }
    };
    (reading, None)
}

const UNREADABLE: &str = "no memory information readable";

/// MemTotal, if it can be read and is at least `MIN_HOST_MEMORY_BYTES`; else why not, for the
/// fallback's source.
fn host_total(snapshot: &Snapshot, notes: &mut Notes) -> Result<u64, &'static str> {
    let total = snapshot
        .read(&Snapshot::proc_file("meminfo"))
        .ok()
        .and_then(|text| procfs::meminfo_total_bytes(&text))
        .ok_or(UNREADABLE)?;
    if total < MIN_HOST_MEMORY_BYTES {
        notes.push(format!(
            "ignored {PROC}/meminfo MemTotal: {} kB is less than any machine that runs a web app \
             ({} MB)",
            total / 1024,
            MIN_HOST_MEMORY_BYTES / MIB
        ));
        return Err("MemTotal not believed, no cgroup memory limit");
    }
    Ok(total)
}

/// One limit file's text. "No limit" values are silent; values that are present but unusable
/// are noted, so `launcher size` can say why they were passed over.
pub(super) fn parse_limit(
    text: &str,
    file: &LimitFile,
    host_total: Option<u64>,
    notes: &mut Notes,
) -> Option<(Reading<u64>, CgroupDir)> {
    let (path, version) = (file.path.as_path(), file.version);
    let text = text.trim();
    let shown = super::shown(path);
    if text == "max" {
        return None;
    }
    let Ok(bytes) = text.parse::<u64>() else {
        notes.push(format!(
            "ignored {shown}: not a number ({})",
            crate::text::shown(text)
        ));
        return None;
    };
    if bytes >= NO_LIMIT_THRESHOLD {
        return None;
    }
    if bytes < MIB {
        notes.push(format!(
            "ignored {shown}: {bytes} bytes is not a usable memory limit (under 1 MB)"
        ));
        return None;
    }
    if let Some(total) = host_total.filter(|total| bytes > *total) {
        notes.push(format!(
            "ignored {shown}: {} MB is more than the host's {} MB",
            bytes / MIB,
            total / MIB
        ));
        return None;
    }
    let reading = Reading {
        value: bytes,
        source: format!("{} {shown}", version.label()),
    };
    let dir = CgroupDir {
        version,
        path: path.parent()?.to_path_buf(),
    };
    Some((reading, dir))
}
