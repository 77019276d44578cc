//! The library's error type. Every failure on data read from a file, a device
//! or the network ends up here; nothing in `imagegen` panics on such data.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout `imagegen`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by `imagegen`. Messages are one line and name what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on a named file or device.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An I/O error where no path is known (a stream, an in-memory device).
    #[error("{context}: {source}")]
    IoContext {
        context: String,
        #[source]
        source: io::Error,
    },
    /// An access outside the device: `offset + len` exceeds `size`.
    #[error(
        "access of {len} bytes at offset {offset} is beyond the end of the device ({size} bytes)"
    )]
    OutOfBounds { offset: u64, len: u64, size: u64 },
    /// A write on a device opened read-only.
    #[error("{0} is read-only")]
    ReadOnly(String),
    /// On-disk data that does not parse or contradicts itself.
    #[error("corrupt {what}: {why}")]
    Corrupt { what: String, why: String },
    /// Valid data that uses something we deliberately do not handle.
    #[error("unsupported {what}: {why}")]
    Unsupported { what: String, why: String },
    /// A path inside a filesystem that does not exist.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// A path inside a filesystem that already exists where it must not.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// Not enough room for an operation; nothing was changed.
    #[error("no space: {0}")]
    NoSpace(String),
    /// A write that stopped partway (an I/O error or a crash mid-commit):
    /// the device may hold part of it, and the handle that wrote it refuses
    /// further changes.
    #[error("{what} stopped partway: {why}")]
    PartialWrite { what: String, why: String },
    /// The caller asked for something invalid (bad argument, wrong kind of file).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            why: why.into(),
        }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Unsupported {
            what: what.into(),
            why: why.into(),
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps an I/O error with a description of what was being done.
    pub fn io_context(context: impl Into<String>, source: io::Error) -> Self {
        Error::IoContext {
            context: context.into(),
            source,
        }
    }
}
