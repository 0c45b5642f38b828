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

#[cfg(test)]
mod tests {
    use super::*;

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
}
