//! Loading a flow file: TOML, YAML or JSON in the shape of walkerOS's flow.json.
//!
//! A file is read into one JSON tree whatever its format, `$VAR` / `${VAR}` are expanded in
//! its strings, and the flow is picked out of walkerOS's `{"version": 4, "flows": {...}}`
//! wrapper when there is one. Each part is then checked by the code that owns it (sources,
//! destinations, mapping), all reporting into one [`ConfigErrors`] so that `weir validate`
//! lists every problem with its path instead of stopping at the first.

pub mod flow;
pub mod references;
pub mod typed;

use std::fmt;
use std::path::Path;

use serde_json::Value;

pub use flow::{Flow, load_flow, parse_flow};

/// One problem in a flow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `destinations.events.config.mapping.order.complete.fn`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a flow file, and the warnings: keys that load but do nothing, as
/// walkerOS silently ignores them (`weir validate` prints them, `serve` logs them).
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// A key that loads but has no effect.
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// No errors (warnings do not count).
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.errors.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Joins a parent path and a key.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The formats a flow file may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
    Yaml,
}

impl Format {
    /// From the file extension; `None` when it does not say.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// Parses text in `format` into a JSON tree.
pub fn parse_text(text: &str, format: Format) -> Result<Value, String> {
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}")),
        Format::Toml => toml::from_str(text).map_err(|e| format!("invalid TOML: {e}")),
        Format::Yaml => yaml_serde::from_str(text).map_err(|e| format!("invalid YAML: {e}")),
    }
}
