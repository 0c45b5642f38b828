//! Heroku's dyno sizes as measured on real dynos: memory limit, CPUs reported, and the
//! `WEB_CONCURRENCY` the formula must give them with the default 256 MB per worker.

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
