//! The one error type of the pipeline crate.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a stage, said so a user can act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Image mechanism (block devices, filesystems, tables, sources).
    #[error(transparent)]
    Image(#[from] imagegen::Error),
    /// A configuration file (board, cluster file) is wrong at a known place.
    #[error("{}{}: {key}: {why}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config {
        file: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        key: String,
        why: String,
    },
    /// An input the stage will not work with (wrong hash, missing boot files,
    /// a partition inside the firmware region, …); nothing was written.
    #[error("{0}")]
    Refused(String),
    /// File-system I/O outside an image, with the path it concerned.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A network transfer failed.
    #[error("{url}: {why}")]
    Download { url: String, why: String },
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
