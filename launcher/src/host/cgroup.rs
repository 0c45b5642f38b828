//! Finding this process's own cgroup directories from /proc/self/cgroup and /proc/self/mountinfo.

use std::path::{Component, Path, PathBuf};

use super::procfs::{Membership, Mount};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn label(self) -> &'static str {
        match self {
            Version::V1 => "cgroup v1",
            Version::V2 => "cgroup v2",
        }
    }

    /// The file that counts a cgroup's CPU time: v1 `cpuacct.usage` (nanoseconds, in the cpuacct
    /// hierarchy), v2 `cpu.stat` (its `usage_usec` line). The one place each is named.
    pub fn cpu_time_file(self) -> &'static str {
        match self {
            Version::V1 => "cpuacct.usage",
            Version::V2 => "cpu.stat",
        }
    }
}

/// A cgroup directory as the host sees it, with its hierarchy's version: where the memory limit
/// was found, and so where the dyno's usage and OOM kills are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    pub version: Version,
    pub path: PathBuf,
}

/// Where one hierarchy holding a controller is mounted, and this process's directory in it.
/// Paths are as the host sees them (absolute), not yet joined to a snapshot root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    pub mount_point: PathBuf,
    pub own_dir: PathBuf,
}

impl Hierarchy {
    /// The process's own directory, then each parent up to and including the mount point: a limit
    /// set on any ancestor applies to us too.
    pub fn levels(&self) -> impl Iterator<Item = &Path> {
        self.own_dir
            .ancestors()
            .take_while(|dir| dir.starts_with(&self.mount_point))
    }
}

/// The hierarchies that can hold `v1_controller` (`memory`, `cpu`): the v1 one that has it mounted
/// and the v2 unified one. On a hybrid host both exist; the caller reads whichever has the files.
pub fn hierarchies(
    membership: &[Membership],
    mounts: &[Mount],
    v1_controller: &str,
) -> Vec<Hierarchy> {
    let mut found = Vec::new();
    let has = |m: &Mount| m.super_options.iter().any(|o| o == v1_controller);
    if let Some(own) = membership
        .iter()
        .find(|m| m.controllers.iter().any(|c| c == v1_controller))
    {
        let candidates = mounts.iter().filter(|m| m.fstype == "cgroup" && has(m));
        if let Some(hierarchy) = locate(Version::V1, &own.path, candidates) {
            found.push(hierarchy);
        }
    }
    if let Some(own) = membership.iter().find(|m| m.is_v2()) {
        let candidates = mounts.iter().filter(|m| m.fstype == "cgroup2");
        if let Some(hierarchy) = locate(Version::V2, &own.path, candidates) {
            found.push(hierarchy);
        }
    }
    found
}

/// Maps the cgroup path from /proc/self/cgroup onto a mount of that hierarchy. A mount whose root
/// is a prefix of the path is preferred (the usual case); otherwise the process sits at the root of
/// what it can see (a container with its own cgroup namespace, or a bind-mounted sub-tree).
fn locate<'a>(
    version: Version,
    cgroup_path: &str,
    mut mounts: impl Iterator<Item = &'a Mount>,
) -> Option<Hierarchy> {
    let cgroup_path = Path::new(cgroup_path);
    let first = mounts.next()?;
    let chosen = std::iter::once(first)
        .chain(mounts)
        .find(|m| cgroup_path.starts_with(&m.root))
        .unwrap_or(first);
    let mount_point = PathBuf::from(&chosen.mount_point);
    let relative = cgroup_path
        .strip_prefix(&chosen.root)
        .unwrap_or(Path::new(""));
    let safe = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::RootDir));
    let own_dir = if safe {
        mount_point.join(relative.strip_prefix("/").unwrap_or(relative))
    } else {
        mount_point.clone()
    };
    Some(Hierarchy {
        version,
        mount_point,
        own_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::super::procfs::{parse_cgroup_membership, parse_mountinfo};
    use super::*;

    const HYBRID_MOUNTS: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_yields_v1_memory_and_v2_unified() {
        let membership = parse_cgroup_membership("4:memory:/app/web\n1:cpu:/\n0::/\n");
        let found = hierarchies(&membership, &parse_mountinfo(HYBRID_MOUNTS), "memory");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].version, Version::V1);
        assert_eq!(found[0].own_dir, Path::new("/sys/fs/cgroup/memory/app/web"));
        assert_eq!(
            found[0].levels().collect::<Vec<_>>(),
            [
                Path::new("/sys/fs/cgroup/memory/app/web"),
                Path::new("/sys/fs/cgroup/memory/app"),
                Path::new("/sys/fs/cgroup/memory"),
            ]
        );
        assert_eq!(found[1].own_dir, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn cpu_controller_is_not_confused_with_cpuacct_or_cpuset() {
        let membership = parse_cgroup_membership("2:cpuacct:/a\n1:cpu:/b\n");
        let found = hierarchies(&membership, &parse_mountinfo(HYBRID_MOUNTS), "cpu");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].own_dir, Path::new("/sys/fs/cgroup/cpu/b"));
    }

    #[test]
    fn container_mount_root_is_stripped() {
        let mounts = parse_mountinfo(
            "50 40 0:30 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
        );
        let membership = parse_cgroup_membership("4:memory:/docker/abc\n");
        let found = hierarchies(&membership, &mounts, "memory");
        assert_eq!(found[0].own_dir, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(found[0].levels().count(), 1);
    }

    #[test]
    fn path_outside_mount_root_falls_back_to_the_mount_point() {
        let mounts =
            parse_mountinfo("50 40 0:30 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let found = hierarchies(&parse_cgroup_membership("0::/\n"), &mounts, "memory");
        assert_eq!(found[0].own_dir, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn dot_dot_in_a_cgroup_path_cannot_escape_the_mount() {
        let mounts = parse_mountinfo("50 40 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let found = hierarchies(
            &parse_cgroup_membership("0::/../../etc\n"),
            &mounts,
            "memory",
        );
        assert_eq!(found[0].own_dir, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn no_cgroup_mounts_means_no_hierarchies() {
        // Heroku's Cedar dynos: `0::/` and no cgroup filesystem in mountinfo.
        let mounts = parse_mountinfo("20 1 0:5 / /proc rw - proc proc rw\n");
        assert!(hierarchies(&parse_cgroup_membership("0::/\n"), &mounts, "memory").is_empty());
    }
}
