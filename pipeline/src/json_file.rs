//! Reading the versioned JSON files nodeimg writes (the base and build
//! manifests): one error for a file that does not parse and one for a
//! format this version does not read, each naming the file.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Reads `path` as the JSON of a `what` (e.g. "base manifest") whose
/// `format` field must be `expected`.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    format: impl Fn(&T) -> u32,
    expected: u32,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value: T = serde_json::from_str(&text).map_err(|e| Error::Config {
        file: path.to_path_buf(),
        line: e.line(),
        key: what.into(),
        why: e.to_string(),
    })?;
    let found = format(&value);
    if found != expected {
        return Err(Error::Config {
            file: path.to_path_buf(),
            line: 0,
            key: "format".into(),
            why: format!("format {found} is not {expected}, the one this nodeimg reads"),
        });
    }
    Ok(value)
}
