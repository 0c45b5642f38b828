//! The one table of settings: every config var the buildpack and the launcher take, its
//! `launcher.toml` key, its kind with bounds and unit, its default, when it applies and what it
//! does. The reader (`read.rs`), `launcher size` and the settings table of docs/settings.md all
//! come from here; a test fails when that table and this one disagree.

pub use super::spec::{Kind, Spec, When};
use crate::sizing::MAX_WEB_CONCURRENCY;

/// The largest `WEB_MEMORY` and `LAUNCHER_WORKER_MEMORY_MAX` taken, in MB (1 TiB).
pub const MAX_MEMORY_MB: u64 = 1024 * 1024;

/// The inputs of the formula: read at boot, in the build log, and by `launcher run`.
const SIZE: &[When] = &[When::Boot, When::BuildLog, When::Run];
const RUN: &[When] = &[When::Run];
const BUILD: &[When] = &[When::Build];

pub const WEB_CONCURRENCY: Spec = Spec {
    var: "WEB_CONCURRENCY",
    key: None,
    kind: Kind::WorkerCount,
    default: "computed",
    when: SIZE,
    doc: "your worker count; wins over the computed one (see [Whose value wins](sizing.md#whose-value-wins)); \
          spaces around the number are allowed, as gunicorn and puma allow them",
};

pub const WEB_MEMORY: Spec = Spec {
    var: "WEB_MEMORY",
    key: None,
    kind: Kind::Whole {
        min: 1,
        max: MAX_MEMORY_MB,
        unit: "MB per worker",
    },
    default: "256",
    when: SIZE,
    doc: "the memory budget of one worker in the formula",
};

pub const MAX_WORKERS: Spec = Spec {
    var: "LAUNCHER_MAX_WORKERS",
    key: Some("max_workers"),
    kind: Kind::Whole {
        min: 1,
        max: MAX_WEB_CONCURRENCY as u64,
        unit: "workers",
    },
    default: "",
    when: SIZE,
    doc: "caps the computed value (never yours), and what measured and adaptive sizing grow to",
};

pub const DISABLE: Spec = Spec {
    var: "LAUNCHER_DISABLE",
    key: Some("disable"),
    kind: Kind::Switch,
    default: "off",
    when: SIZE,
    doc: "sizing off: the environment is left as it is, the binary stays installed",
};

pub const MODE: Spec = Spec {
    var: "LAUNCHER_MODE",
    key: Some("mode"),
    kind: Kind::Choice(&crate::servers::ModeChoice::WORDS),
    default: "auto",
    when: RUN,
    doc: "how the app is run: N copies sharing the socket, or one server that forks its own \
          workers; `auto` delegates to gunicorn, puma and unicorn, fan-out otherwise. `launcher \
          run --mode` wins over it",
};

pub const GRACEFUL_TIMEOUT: Spec = Spec {
    var: "LAUNCHER_GRACEFUL_TIMEOUT",
    key: Some("graceful_timeout"),
    kind: Kind::Seconds {
        min: 1.0,
        max: 3600.0,
    },
    default: "25",
    when: RUN,
    doc: "how long workers get to finish after SIGTERM/SIGINT before SIGKILL; at most 27 when \
          `DYNO` is set",
};

pub const READY_GRACE: Spec = Spec {
    var: "LAUNCHER_READY_GRACE",
    key: Some("ready_grace"),
    kind: Kind::Seconds {
        min: 0.1,
        max: 600.0,
    },
    default: "1",
    when: RUN,
    doc: "a worker that does not send `READY=1` counts as ready once it has run this long",
};

pub const READY_TIMEOUT: Spec = Spec {
    var: "LAUNCHER_READY_TIMEOUT",
    key: Some("ready_timeout"),
    kind: Kind::Seconds {
        min: 1.0,
        max: 3600.0,
    },
    default: "60",
    when: RUN,
    doc: "how long a rolling restart waits for a new worker to serve (send `READY=1` or wait on \
          the socket) before it ends with `restart_failed`, keeping the old workers",
};

pub const GIVE_UP_AFTER: Spec = Spec {
    var: "LAUNCHER_GIVE_UP_AFTER",
    key: Some("give_up_after"),
    kind: Kind::Seconds {
        min: 1.0,
        max: 86400.0,
    },
    default: "60",
    when: RUN,
    doc: "exit 1 when no worker has been ready for this long (a crash loop), so the platform \
          restarts the dyno",
};

pub const SAMPLE_INTERVAL: Spec = Spec {
    var: "LAUNCHER_SAMPLE_INTERVAL",
    key: Some("sample_interval"),
    kind: Kind::Interval { max: 86400 },
    default: "20",
    when: RUN,
    doc: "how often the `sample#` line is logged",
};

pub const MEMORY_GUARD: Spec = Spec {
    var: "LAUNCHER_MEMORY_GUARD",
    key: Some("memory_guard"),
    kind: Kind::Switch,
    default: "on",
    when: RUN,
    doc: "recycle the worker with the most unique memory when the dyno is over the soft limit or \
          a worker over its cap",
};

pub const MEMORY_SOFT_LIMIT: Spec = Spec {
    var: "LAUNCHER_MEMORY_SOFT_LIMIT",
    key: Some("memory_soft_limit"),
    kind: Kind::Whole {
        min: 50,
        max: 100,
        unit: "percent of the dyno's memory",
    },
    default: "85",
    when: RUN,
    doc: "the soft limit, for the guard and for measured sizing",
};

pub const WORKER_MEMORY_MAX: Spec = Spec {
    var: "LAUNCHER_WORKER_MEMORY_MAX",
    key: Some("worker_memory_max"),
    kind: Kind::Whole {
        min: 1,
        max: MAX_MEMORY_MB,
        unit: "MB of unique memory per worker",
    },
    default: "",
    when: RUN,
    doc: "a per-worker cap for the guard",
};

pub const MEMORY_COOLDOWN: Spec = Spec {
    var: "LAUNCHER_MEMORY_COOLDOWN",
    key: Some("memory_cooldown"),
    kind: Kind::Seconds {
        min: 0.5,
        max: 3600.0,
    },
    default: "3",
    when: RUN,
    doc: "the pause after a recycled worker has exited, before the guard looks again",
};

pub const SIZING: Spec = Spec {
    var: "LAUNCHER_SIZING",
    key: Some("sizing"),
    kind: Kind::Choice(&crate::sizing::Sizing::WORDS),
    default: "static",
    when: RUN,
    doc: "`measured`: after warm-up, move the worker count one at a time to what fits under the \
          soft limit; `adaptive`: follow the accept queue, within the CPUs and the memory fit \
          (both only when `WEB_CONCURRENCY` is the launcher's own)",
};

/// The most threads per worker taken, from `LAUNCHER_THREADS` or chosen.
pub const MAX_THREADS: u64 = 128;

pub const THREADS: Spec = Spec {
    var: "LAUNCHER_THREADS",
    key: Some("threads"),
    kind: Kind::ChoiceOrWhole {
        words: &["off", "auto"],
        min: 1,
        max: MAX_THREADS,
        unit: "threads per worker",
    },
    default: "off",
    when: SIZE,
    doc: "threads per worker, for an app that is thread-safe: `auto` chooses them with the \
          worker count from the dyno's memory and CPUs (16 at most under adaptive sizing, which \
          adds workers), a number fixes them; exported as \
          gunicorn's `--threads` (its sync workers become gthread) and puma's \
          `RAILS_MAX_THREADS`. Off: each server's own (see [Threads](sizing.md#threads))",
};

pub const SIZING_WARMUP: Spec = Spec {
    var: "LAUNCHER_SIZING_WARMUP",
    key: Some("sizing_warmup"),
    kind: Kind::Seconds {
        min: 1.0,
        max: 86400.0,
    },
    default: "30",
    when: RUN,
    doc: "how long every worker must have run before measured sizing measures",
};

pub const QUEUE_READ_INTERVAL: Spec = Spec {
    var: "LAUNCHER_QUEUE_READ_INTERVAL",
    key: Some("queue_read_interval"),
    kind: Kind::Whole {
        min: 10,
        max: 10_000,
        unit: "milliseconds",
    },
    default: "100",
    when: RUN,
    doc: "how often the accept queue is read (`sample#listen_queue`, adaptive sizing)",
};

pub const ADAPTIVE_GROW_WINDOW: Spec = Spec {
    var: "LAUNCHER_ADAPTIVE_GROW_WINDOW",
    key: Some("adaptive_grow_window"),
    kind: Kind::Seconds {
        min: 1.0,
        max: 3600.0,
    },
    default: "10",
    when: RUN,
    doc: "adaptive: the queue reads a decision to add a worker looks at (the last this many \
          seconds, since the last step)",
};

pub const ADAPTIVE_GROW_SHARE: Spec = Spec {
    var: "LAUNCHER_ADAPTIVE_GROW_SHARE",
    key: Some("adaptive_grow_share"),
    kind: Kind::Whole {
        min: 1,
        max: 100,
        unit: "percent of the queue reads",
    },
    default: "50",
    when: RUN,
    doc: "adaptive: add a worker when connections were waiting in at least this share of those \
          reads",
};

pub const ADAPTIVE_CPU_MAX: Spec = Spec {
    var: "LAUNCHER_ADAPTIVE_CPU_MAX",
    key: Some("adaptive_cpu_max"),
    kind: Kind::Whole {
        min: 10,
        max: 100,
        unit: "percent of the dyno's CPUs (its exact quota)",
    },
    default: "80",
    when: RUN,
    doc: "adaptive: add a worker only while the dyno's CPU use, scaled up by one worker more, \
          stays under this (threaded workers: the CPU use itself; while one is lock-bound, 95% \
          unless this is set; [docs/supervisor.md](supervisor.md#threads))",
};

pub const ADAPTIVE_SHRINK_AFTER: Spec = Spec {
    var: "LAUNCHER_ADAPTIVE_SHRINK_AFTER",
    key: Some("adaptive_shrink_after"),
    kind: Kind::Seconds {
        min: 1.0,
        max: 86400.0,
    },
    default: "60",
    when: RUN,
    doc: "adaptive: remove a worker once the queue has been empty this long and the workers \
          were idle (doubled after each removal the queue undid)",
};

pub const ADAPTIVE_STEP: Spec = Spec {
    var: "LAUNCHER_ADAPTIVE_STEP",
    key: Some("adaptive_step"),
    kind: Kind::Seconds {
        min: 0.5,
        max: 3600.0,
    },
    default: "2",
    when: RUN,
    doc: "adaptive: the least time between two changes of one worker (a new worker must also be \
          ready first)",
};

pub const BINARY_URL: Spec = Spec {
    var: "LAUNCHER_BINARY_URL",
    key: None,
    kind: Kind::BuildText { values: "URL" },
    default: "from `buildpack.toml`",
    when: BUILD,
    doc: "where bin/compile downloads the release binary (a mirror)",
};

pub const BINARY_SHA256: Spec = Spec {
    var: "LAUNCHER_BINARY_SHA256",
    key: None,
    kind: Kind::BuildText {
        values: "SHA-256, 64 hex digits in either case, or the whole line of the release's \
                 `.sha256` file",
    },
    default: "from `buildpack.toml`",
    when: BUILD,
    doc: "the checksum that download must have; anything else stops the build",
};

pub const RUSTUP_INIT_URL: Spec = Spec {
    var: "LAUNCHER_RUSTUP_INIT_URL",
    key: None,
    kind: Kind::BuildText { values: "URL" },
    default: "static.rust-lang.org's rustup-init",
    when: BUILD,
    doc: "where a toolchain comes from when the build must compile the launcher and finds no \
          cargo",
};

/// Every setting, in the order of docs/settings.md.
pub const ALL: [&Spec; 26] = [
    &WEB_CONCURRENCY,
    &WEB_MEMORY,
    &MAX_WORKERS,
    &DISABLE,
    &MODE,
    &GRACEFUL_TIMEOUT,
    &READY_GRACE,
    &READY_TIMEOUT,
    &GIVE_UP_AFTER,
    &SAMPLE_INTERVAL,
    &MEMORY_GUARD,
    &MEMORY_SOFT_LIMIT,
    &WORKER_MEMORY_MAX,
    &MEMORY_COOLDOWN,
    &SIZING,
    &THREADS,
    &SIZING_WARMUP,
    &QUEUE_READ_INTERVAL,
    &ADAPTIVE_GROW_WINDOW,
    &ADAPTIVE_GROW_SHARE,
    &ADAPTIVE_CPU_MAX,
    &ADAPTIVE_SHRINK_AFTER,
    &ADAPTIVE_STEP,
    &BINARY_URL,
    &BINARY_SHA256,
    &RUSTUP_INIT_URL,
];
