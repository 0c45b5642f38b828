//! Heroku's dynos: the names `DYNO` takes in each generation, and the sizes as measured on real
//! dynos (memory limit, CPUs reported, and the `WEB_CONCURRENCY` the formula must give them with
//! the default 256 MB per worker).

/// Which generation's naming a `DYNO` value has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// `web.1`, `worker.2`, `run.9157`: the process type, a dot, a number.
    Cedar,
    /// `web-12a34b56d-e78f9`, `worker-23z34x56y-w78k9` (process type, hash, id), or `run-e78f9`
    /// for a one-off dyno: Kubernetes pod names.
    Fir,
}

/// A `DYNO` value taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynoName<'a> {
    pub process_type: &'a str,
    pub generation: Generation,
}

/// Parses `DYNO` in either generation's form; None for anything else (unset on a laptop, or a
/// value of someone's own).
pub fn parse(dyno: &str) -> Option<DynoName<'_>> {
    let is_word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    // Process types: words of letters, digits and `_`, joined by dashes.
    let is_type = |s: &str| {
        s.split('-')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    };
    if let Some((process_type, number)) = dyno.split_once('.') {
        let numbered = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
        return (is_type(process_type) && numbered).then_some(DynoName {
            process_type,
            generation: Generation::Cedar,
        });
    }
    // From the right: `<process type>-<hash>-<id>`, or `<process type>-<id>` for a one-off.
    let (rest, id) = dyno.rsplit_once('-')?;
    let process_type = match rest.rsplit_once('-') {
        Some((process_type, hash)) if is_word(hash) && is_type(process_type) => process_type,
        _ => rest,
    };
    (is_word(id) && is_type(process_type)).then_some(DynoName {
        process_type,
        generation: Generation::Fir,
    })
}

/// Whether `DYNO` has Cedar's form, where the platform sends SIGTERM to every process of the
/// dyno itself (Fir, like Kubernetes, signals the main process only).
pub fn is_cedar(dyno: Option<&str>) -> bool {
    dyno.and_then(parse)
        .is_some_and(|name| name.generation == Generation::Cedar)
}

pub struct Dyno {
    pub name: &'static str,
    pub memory_mb: u64,
    pub cpus: u32,
    /// What the formula must give with 256 MB per worker (asserted by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub web_concurrency: u32,
}

pub const DYNOS: [Dyno; 7] = [
    dyno("Eco/Basic/Standard-1X", 512, 8, 2),
    dyno("Standard-2X", 1024, 8, 4),
    dyno("Performance-M", 2560, 2, 5),
    dyno("Performance-L", 14336, 8, 17),
    dyno("Performance-L-RAM", 30720, 4, 9),
    dyno("Performance-XL", 63488, 8, 17),
    dyno("Performance-2XL", 129024, 16, 33),
];

const fn dyno(name: &'static str, memory_mb: u64, cpus: u32, web_concurrency: u32) -> Dyno {
    Dyno {
        name,
        memory_mb,
        cpus,
        web_concurrency,
    }
}

/// Fir's `cpu.max` as measured: 0.9 CPU per vCPU of the size's name (`90000 100000` on 1c).
pub const FIR_QUOTA_PER_VCPU: u64 = 90_000;
pub const FIR_PERIOD: u64 = 100_000;

/// Heroku's Fir sizes, `dyno-<vCPUs>c-<GB>gb`. Memory is an assumption: the GB of the name (1 GB
/// = 1024 MB), not a measured `memory.max`. CPUs are what the launcher counts from the measured
/// quota, 0.9 per vCPU rounded up (`host::cpu`): 15 on 16c, 29 on 32c. On a Fir dyno the
/// launcher reads the real `memory.max` and `cpu.max` at boot; this table is the build log's
/// preview.
pub const FIR_DYNOS: [Dyno; 17] = [
    fir("dyno-1c-0.5gb", 1, 512, 2),
    fir("dyno-1c-4gb", 1, 4096, 3),
    fir("dyno-1c-8gb", 1, 8192, 3),
    fir("dyno-2c-1gb", 2, 1024, 4),
    fir("dyno-2c-4gb", 2, 4096, 5),
    fir("dyno-2c-8gb", 2, 8192, 5),
    fir("dyno-2c-16gb", 2, 16384, 5),
    fir("dyno-4c-8gb", 4, 8192, 9),
    fir("dyno-4c-16gb", 4, 16384, 9),
    fir("dyno-4c-32gb", 4, 32768, 9),
    fir("dyno-8c-16gb", 8, 16384, 17),
    fir("dyno-8c-32gb", 8, 32768, 17),
    fir("dyno-8c-64gb", 8, 65536, 17),
    fir("dyno-16c-32gb", 16, 32768, 31),
    fir("dyno-16c-64gb", 16, 65536, 31),
    fir("dyno-16c-128gb", 16, 131072, 31),
    fir("dyno-32c-64gb", 32, 65536, 59),
];

const fn fir(name: &'static str, vcpus: u64, memory_mb: u64, web_concurrency: u32) -> Dyno {
    let cpus = (vcpus * FIR_QUOTA_PER_VCPU).div_ceil(FIR_PERIOD) as u32;
    dyno(name, memory_mb, cpus, web_concurrency)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use crate::host::MIB;
    use crate::sizing::Formula;

    fn name(process_type: &str, generation: Generation) -> Option<DynoName<'_>> {
        Some(DynoName {
            process_type,
            generation,
        })
    }

    #[test]
    fn cedar_names() {
        use Generation::Cedar;
        assert_eq!(parse("web.1"), name("web", Cedar));
        assert_eq!(parse("worker.12"), name("worker", Cedar));
        assert_eq!(parse("run.9157"), name("run", Cedar));
        assert_eq!(parse("release.1"), name("release", Cedar));
        assert_eq!(parse("web_api.3"), name("web_api", Cedar));
        assert_eq!(parse("web-api.1"), name("web-api", Cedar));
        assert!(is_cedar(Some("web.1")));
    }

    #[test]
    fn fir_names() {
        use Generation::Fir;
        assert_eq!(parse("web-12a34b56d-e78f9"), name("web", Fir));
        assert_eq!(parse("worker-23z34x56y-w78k9"), name("worker", Fir));
        assert_eq!(parse("run-e78f9"), name("run", Fir));
        assert_eq!(parse("web-api-12a34b56d-e78f9"), name("web-api", Fir));
        assert_eq!(parse("webhooks-23z34x56y-w78k9"), name("webhooks", Fir));
        assert!(!is_cedar(Some("web-12a34b56d-e78f9")));
    }

    #[test]
    fn other_values_are_neither() {
        for other in [
            "", "web", "web.", ".1", "web.x", "web.1.2", "web-", "-web", "web--x", "web-a-",
            "web-a.b", "web 1", "web.-1",
        ] {
            assert_eq!(parse(other), None, "{other:?}");
        }
        assert!(!is_cedar(None));
        assert!(!is_cedar(Some("web")));
    }

    /// The vCPUs and MB a Fir size's name says: `dyno-2c-8gb` -> (2, 8192).
    fn fir_name(name: &str) -> (u64, u64) {
        let rest = name.strip_prefix("dyno-").expect("dyno- prefix");
        let (vcpus, gb) = rest.split_once("c-").expect("<N>c-");
        let gb = gb.strip_suffix("gb").expect("gb suffix");
        let mb = match gb.split_once('.') {
            Some((whole, "5")) => whole.parse::<u64>().expect("GB") * 1024 + 512,
            Some(_) => panic!("{name}: only .5 GB fractions"),
            None => gb.parse::<u64>().expect("GB") * 1024,
        };
        (vcpus.parse().expect("vCPUs"), mb)
    }

    /// A Fir dyno as measured: cgroup v2, `memory.max` and `cpu.max` in the process's own
    /// cgroup, a 96-CPU host (nproc 96, affinity to all of them), no cgroup v1 file.
    fn fir_host(vcpus: u64, memory_mb: u64) -> FakeHost {
        let host = FakeHost::new();
        host.cgroup_v2("/")
            .write("/sys/devices/system/cpu/online", "0-95\n")
            .write(
                "/proc/self/status",
                "Name:\tlauncher\nCpus_allowed_list:\t0-95\n",
            )
            .write("/proc/meminfo", &format!("MemTotal: {} kB\n", 384 << 20))
            .write(
                "/sys/fs/cgroup/memory.max",
                &format!("{}\n", memory_mb * MIB),
            )
            .write(
                "/sys/fs/cgroup/cpu.max",
                &format!("{} {FIR_PERIOD}\n", vcpus * FIR_QUOTA_PER_VCPU),
            );
        host
    }

    #[test]
    fn every_fir_size_read_from_a_fir_host() {
        assert_eq!(FIR_DYNOS.len(), 17);
        for dyno in &FIR_DYNOS {
            let (vcpus, memory_mb) = fir_name(dyno.name);
            assert_eq!(
                dyno.memory_mb, memory_mb,
                "{}: the GB of the name",
                dyno.name
            );
            let host = fir_host(vcpus, memory_mb);
            assert!(!host.root().join("sys/fs/cgroup/memory").exists());
            let read = host.read();
            assert_eq!(read.memory_mb(), dyno.memory_mb, "{}", dyno.name);
            assert_eq!(read.memory_source, "cgroup v2 /sys/fs/cgroup/memory.max");
            assert_eq!(read.cpus, dyno.cpus, "{}: {}", dyno.name, read.cpus_source);
            assert!(read.cpus_source.contains("cpu.max"), "{}", read.cpus_source);
            let formula = Formula::new(read.memory_mb(), read.cpus, 256, None);
            assert_eq!(formula.value, dyno.web_concurrency, "{}", dyno.name);
        }
    }

    #[test]
    fn fir_cpus_are_the_quota_rounded_up() {
        let cpus = |name: &str| FIR_DYNOS.iter().find(|d| d.name == name).map(|d| d.cpus);
        assert_eq!(cpus("dyno-1c-0.5gb"), Some(1), "0.9");
        assert_eq!(cpus("dyno-2c-1gb"), Some(2), "1.8");
        assert_eq!(cpus("dyno-4c-8gb"), Some(4), "3.6");
        assert_eq!(cpus("dyno-8c-16gb"), Some(8), "7.2");
        assert_eq!(cpus("dyno-16c-32gb"), Some(15), "14.4");
        assert_eq!(cpus("dyno-32c-64gb"), Some(29), "28.8");
    }
}
