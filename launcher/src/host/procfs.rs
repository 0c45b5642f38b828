//! Parsers for the text of /proc and /sys files. Pure functions over strings: no I/O here.

/// One line of /proc/self/cgroup: `hierarchy-id:controller-list:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub hierarchy_id: u32,
    /// Empty for the cgroup v2 unified hierarchy (`0::/path`).
    pub controllers: Vec<String>,
    pub path: String,
}

impl Membership {
    pub fn is_v2(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }
}

/// Parses /proc/self/cgroup, skipping lines that do not have the three fields.
pub fn parse_cgroup_membership(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy_id = parts.next()?.trim().parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            if !path.starts_with('/') {
                return None;
            }
            Some(Membership {
                hierarchy_id,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// The parts of a /proc/self/mountinfo line that locating a cgroup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The path inside the mounted filesystem that appears at `mount_point`.
    pub root: String,
    pub mount_point: String,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// Parses the cgroup mounts of /proc/self/mountinfo (proc(5)): fields 4 and 5 are root and mount
/// point, then optional fields up to a lone `-`, then filesystem type, source and super options.
/// Other filesystems are skipped before anything is allocated for them: this runs at every boot.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter(|line| line.contains(" - cgroup"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let separator = fields.iter().position(|f| *f == "-")?;
            if separator < 6 || fields.len() < separator + 4 {
                return None;
            }
            Some(Mount {
                root: unescape_octal(fields[3]),
                mount_point: unescape_octal(fields[4]),
                fstype: fields[separator + 1].to_owned(),
                super_options: fields[separator + 3]
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match escape {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Counts the CPUs in a kernel CPU list such as `0-3,8-11` or `5`. None if the text is malformed.
pub fn count_cpu_list(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut count: u32 = 0;
    for range in text.split(',') {
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let cpu = range.parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        if last < first {
            return None;
        }
        count = count.checked_add(last - first + 1)?;
    }
    Some(count)
}

/// The value of a `Name:\tvalue` line in /proc/self/status.
pub fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

/// MemTotal from /proc/meminfo, in bytes.
pub fn meminfo_total_bytes(meminfo: &str) -> Option<u64> {
    kib_field_bytes(meminfo, "MemTotal")
}

/// A `Name:   123 kB` line (/proc/meminfo, /proc/PID/status, smaps_rollup) in bytes.
pub fn kib_field_bytes(text: &str, name: &str) -> Option<u64> {
    let value = status_field(text, name)?;
    let kib: u64 = value.strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_v1_and_v2_lines() {
        let parsed = parse_cgroup_membership(
            "12:cpu,cpuacct:/user.slice\n4:memory:/process_api/5c8a\n0::/init.scope\ngarbage\n",
        );
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(parsed[1].path, "/process_api/5c8a");
        assert!(parsed[2].is_v2());
        assert_eq!(parsed[2].path, "/init.scope");
    }

    #[test]
    fn mountinfo_with_optional_fields_and_escapes() {
        let text = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory
41 31 0:38 /docker/ab /sys/fs/cgroup/with\\040space rw - cgroup2 cgroup2 rw,nsdelegate
bad line
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].fstype, "cgroup");
        assert!(mounts[0].super_options.contains(&"memory".to_owned()));
        assert_eq!(mounts[1].root, "/docker/ab");
        assert_eq!(mounts[1].mount_point, "/sys/fs/cgroup/with space");
        assert_eq!(mounts[1].fstype, "cgroup2");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-7\n"), Some(8));
        assert_eq!(count_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(count_cpu_list("5"), Some(1));
        assert_eq!(count_cpu_list("0,2,4"), Some(3));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("zero"), None);
    }

    #[test]
    fn meminfo_and_status() {
        assert_eq!(
            meminfo_total_bytes("MemTotal:       24683656 kB\nMemFree: 1 kB\n"),
            Some(24683656 * 1024)
        );
        assert_eq!(meminfo_total_bytes("MemTotal: lots\n"), None);
        let status = "Name:\tbash\nCpus_allowed_list:\t0-1\n";
        assert_eq!(status_field(status, "Cpus_allowed_list"), Some("0-1"));
        assert_eq!(status_field(status, "Missing"), None);
    }
}
