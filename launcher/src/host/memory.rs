//! The memory limit: cgroup files up the hierarchy, Heroku's well-known path, MemTotal, a default.

use std::path::Path;

use super::cgroup::{CgroupDir, Hierarchy, Version};
use super::limits::LimitFile;
use super::{smallest, Reading, Snapshot, MIB, PROC};

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

/// The memory limit, the cgroup directory of the file it was read from, and the limit files that
/// could be read (`LimitFiles` reads them again while the app runs).
pub(super) fn read(
    snapshot: &Snapshot,
    hierarchies: &[Hierarchy],
    host_total: Option<u64>,
    notes: &mut Vec<String>,
) -> (Reading<u64>, Option<CgroupDir>, Vec<LimitFile>) {
    let mut found = Vec::new();
    let mut limits = Vec::new();
    let mut read_already = Vec::new();
    for hierarchy in hierarchies {
        for dir in hierarchy.levels() {
            for file in limit_files(hierarchy.version) {
                let file = LimitFile {
                    path: dir.join(file),
                    version: hierarchy.version,
                    well_known: false,
                };
                if let Some(text) = snapshot.read_optional(&file.path, notes) {
                    limits.extend(parse_limit(&text, &file, host_total, notes));
                    found.push(file.clone());
                }
                read_already.push(file.path);
            }
        }
    }
    if limits.is_empty() {
        // On a v1 host the second well-known path is the mount's root, read already above.
        for (path, version) in WELL_KNOWN {
            let file = LimitFile {
                path: Path::new(path).to_path_buf(),
                version,
                well_known: true,
            };
            if read_already.contains(&file.path) {
                continue;
            }
            if let Some(text) = snapshot.read_optional(&file.path, notes) {
                limits.extend(parse_limit(&text, &file, host_total, notes));
                found.push(file);
            }
        }
    }
    let (limit, dir) = choose(limits, host_total, notes);
    (limit, dir, found)
}

/// The smallest of the limits found, else MemTotal, else the default.
pub(super) fn choose(
    limits: Vec<(Reading<u64>, CgroupDir)>,
    host_total: Option<u64>,
    notes: &mut Vec<String>,
) -> (Reading<u64>, Option<CgroupDir>) {
    if let Some((limit, dir)) = smallest(limits, |(reading, _)| reading.value) {
        return (limit, Some(dir));
    }
    let reading = match host_total {
        Some(bytes) => Reading {
            value: bytes,
            source: format!("{PROC}/meminfo MemTotal (no cgroup memory limit)"),
        },
        None => {
            notes.push(format!("cannot read MemTotal from {PROC}/meminfo"));
            Reading {
                value: DEFAULT_MEMORY_BYTES,
                source: "default 512 MB (no memory information readable)".to_owned(),
            }
        }
    };
    (reading, None)
}

/// One limit file's text. "No limit" values are silent; values that are present but unusable
/// are noted, so `launcher size` can say why they were passed over.
pub(super) fn parse_limit(
    text: &str,
    file: &LimitFile,
    host_total: Option<u64>,
    notes: &mut Vec<String>,
) -> Option<(Reading<u64>, CgroupDir)> {
    let (path, version) = (file.path.as_path(), file.version);
    let text = text.trim();
    let shown = path.display();
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
