//! The pipeline's one error type. Every stage (`base`, `stamp`, `build`,
//! templates, the customisation executor) returns it; messages are one line
//! that names what failed, where and why, and never carry a secret value.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout `pipeline`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by `pipeline`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or changing image bytes failed (partition tables,
    /// filesystems, block devices).
    #[error(transparent)]
    Image(#[from] imagegen::Error),
    /// Reading or changing a path of an OS image failed underneath (the
    /// filesystem or device); `path` is the OS's path, which the
    /// filesystem's own message (inside its partition) does not show.
    #[error("{path}: {source}")]
    ImageAt {
        path: String,
        #[source]
        source: imagegen::Error,
    },
    /// A configuration file (cluster file, board file, owner map) says
    /// something wrong: `file:line: key: why`. `line` is 0 when unknown.
    #[error("{}{}: {key}: {why}", .file.display(), line_suffix(*.line))]
    Config {
        file: PathBuf,
        line: usize,
        key: String,
        why: String,
    },
    /// A request we refuse on purpose (a unit that does not exist, a path
    /// whose parent is a file, an OS we do not know). Nothing was changed.
    #[error("{what}: {why}")]
    Refused { what: String, why: String },
    /// An operating-system I/O error on a named host file.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Something that is no fault of the input failed: the system's random
    /// source, encoding a value we built. Exit status 1, not a refusal.
    #[error("{what}: {why}")]
    Internal { what: String, why: String },
    /// A configuration file with problems, all of them listed, one
    /// `file:line: key: why` line each (the cluster file is checked whole
    /// before anything is written).
    #[error("{}", problem_lines(.file, .problems).join("\n"))]
    Invalid {
        file: PathBuf,
        problems: Vec<crate::cluster::Problem>,
    },
}

/// `file:line: key: why` for each problem of [`Error::Invalid`].
pub fn problem_lines(file: &std::path::Path, problems: &[crate::cluster::Problem]) -> Vec<String> {
    problems
        .iter()
        .map(|p| {
            format!(
                "{}{}: {}: {}",
                file.display(),
                line_suffix(p.line.unwrap_or(0)),
                p.key,
                p.why
            )
        })
        .collect()
}

fn line_suffix(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

impl Error {
    /// Shorthand for [`Error::Refused`].
    pub fn refused(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Refused {
            what: what.into(),
            why: why.into(),
        }
    }

    /// Shorthand for [`Error::Internal`].
    pub fn internal(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Internal {
            what: what.into(),
            why: why.into(),
        }
    }

    /// Shorthand for [`Error::Config`].
    pub fn config(
        file: impl Into<PathBuf>,
        line: usize,
        key: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Error::Config {
            file: file.into(),
            line,
            key: key.into(),
            why: why.into(),
        }
    }

    /// Wraps an image error with the OS path it happened on ("not found"
    /// simply names the OS path).
    pub fn at(path: impl Into<String>, source: imagegen::Error) -> Self {
        match source {
            imagegen::Error::NotFound(_) => Error::Image(imagegen::Error::NotFound(path.into())),
            source => Error::ImageAt {
                path: path.into(),
                source,
            },
        }
    }

    /// Wraps an I/O error with the host path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_naming_the_place() {
        let e = Error::config("cluster.toml", 12, "base.enable", "not a list");
        assert_eq!(e.to_string(), "cluster.toml:12: base.enable: not a list");
        let e = Error::config("board.toml", 0, "align", "must be a power of two");
        assert_eq!(e.to_string(), "board.toml: align: must be a power of two");
        let e = Error::refused("unit nope.service", "not found");
        assert_eq!(e.to_string(), "unit nope.service: not found");
        let e: Error = imagegen::Error::NotFound("/etc/x".into()).into();
        assert_eq!(e.to_string(), "/etc/x: no such file or directory");
    }
}
