//! A captured environment: the config vars a command was started with.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// Values that are not UTF-8 are kept, lossily, so they are reported as invalid rather than
/// silently dropped.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// `WEB_CONCURRENCY` as the platform gave it, where that can be told (`with_platform_value`).
    platform_value: Option<Option<String>>,
}

impl Env {
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars_os())
    }

    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| {
                let (k, v) = (k.into(), v.into());
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        Env {
            vars,
            platform_value: None,
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The same without the variable `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.vars.remove(name);
        self
    }

    /// The `WEB_CONCURRENCY` the platform started the process with (a config var; `None`: it had
    /// none), before buildpacks changed the environment: the CNB exec.d program knows it.
    pub fn with_platform_value(mut self, value: Option<String>) -> Self {
        self.platform_value = Some(value);
        self
    }

    /// See `with_platform_value`; `None` where it is not known.
    pub fn platform_value(&self) -> Option<Option<&str>> {
        self.platform_value.as_ref().map(Option::as_deref)
    }
}
