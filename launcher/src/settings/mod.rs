//! Settings: config vars (the process environment) and `launcher.toml` at the app root, read by
//! one reader from one table. Config vars win over the file; each value keeps its source.
//! See docs/architecture.md, "Settings".

mod problem;
mod read;
mod spec;
pub mod table;
#[cfg(test)]
mod tests;

pub use read::{Settings, Source};
pub use table::*;

/// The file looked up at the app root.
pub const FILE_NAME: &str = "launcher.toml";

impl Settings {
    /// `LAUNCHER_MODE` / `launcher.toml`'s `mode` as the reader took it.
    pub fn mode(&self) -> crate::servers::ModeChoice {
        let word = self.choice(&MODE);
        crate::servers::ModeChoice::parse(word).unwrap_or(crate::servers::ModeChoice::Auto)
    }
}

impl Settings {
    /// `LAUNCHER_SIZING` / `launcher.toml`'s `sizing` as the reader took it.
    pub fn sizing(&self) -> crate::sizing::Sizing {
        crate::sizing::Sizing::parse(self.choice(&SIZING)).unwrap_or(crate::sizing::Sizing::Static)
    }

    /// `LAUNCHER_THREADS` / `launcher.toml`'s `threads` as the reader took it.
    pub fn threads(&self) -> crate::threads::ThreadsSetting {
        use crate::threads::ThreadsSetting;
        match (self.choice(&THREADS), self.whole(&THREADS)) {
            ("auto", _) => ThreadsSetting::Auto,
            (_, Some(n)) => ThreadsSetting::Fixed(n as u32),
            _ => ThreadsSetting::Off,
        }
    }
}
