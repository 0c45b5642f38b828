//! A problem met reading the settings (a config var or `launcher.toml` entry that cannot be
//! used, a file that cannot be read), what the reader did instead, and the lines each policy
//! renders it as.

use super::FILE_NAME;

/// Where a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    ConfigVar,
    File,
}

/// Something wrong with a config var or `launcher.toml`, and what the reader did instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    /// The config var of the setting, when the problem is one setting's.
    pub spec: Option<&'static str>,
    pub what: String,
    pub instead: Instead,
}

impl Problem {
    /// The warn policy's line: what is wrong; what was done instead.
    pub fn warning(&self) -> String {
        format!("{}; {}", self.what, self.instead.clause())
    }

    /// The build log's line: a config var's as warned at boot; the file's with both
    /// consequences, as two sentences.
    pub fn build_log_line(&self) -> String {
        match self.origin {
            Origin::ConfigVar => self.warning(),
            Origin::File => format!(
                "{}: `launcher run` refuses to start on this; {}",
                self.what,
                self.instead.at_boot()
            ),
        }
    }
}

/// What the reader did instead of taking a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instead {
    /// The whole file is left out: it cannot be read, or is not TOML.
    FileIgnored,
    /// The file's entry is left out (an unknown key).
    Ignored,
    /// The setting's config var is used.
    ConfigVar(&'static str),
    /// The file's value is used, as the config var would write it.
    File(String),
    /// The default is used.
    Default(String),
}

impl Instead {
    /// After the problem, in a warning: `WEB_MEMORY="x" is not ...; using the default, 256`.
    fn clause(&self) -> String {
        match self {
            Instead::FileIgnored => "its settings are ignored".to_owned(),
            Instead::Ignored => "ignored".to_owned(),
            Instead::ConfigVar(var) => format!("the {var} config var wins"),
            Instead::File(value) => format!("using {value} from {FILE_NAME}"),
            Instead::Default(value) => format!("using the default, {value}"),
        }
    }

    /// What the boot script and `launcher size` do, as a sentence of its own for the build log.
    fn at_boot(&self) -> String {
        match self {
            Instead::FileIgnored => "at boot the file is ignored".to_owned(),
            Instead::Ignored => "at boot it is ignored".to_owned(),
            Instead::ConfigVar(var) => format!("at boot the {var} config var wins"),
            Instead::File(value) => format!("at boot {value} from {FILE_NAME} is used"),
            Instead::Default(value) => format!("at boot the default, {value}, is used"),
        }
    }
}
