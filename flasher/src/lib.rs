//! `flasher`: writes nodeimg images to cards, safely, sparsely and verified.
//!
//! The pieces, each with one job: [`devices`] finds candidate disks,
//! [`policy`] decides whether one may be written, [`bmap`] and [`plan`] decide
//! which byte ranges to write, [`source`] yields the image bytes, [`target`]
//! opens a device for unbuffered exclusive writes, [`writer`] streams one read
//! of the source to every target, [`verify`] reads the cards back, and
//! [`progress`] reports to a terminal or as JSON lines.

pub use imagegen::{bmap, ranges};

pub mod devices;
pub mod interrupt;
pub mod plan;
pub mod platform;
pub mod policy;
pub mod progress;
pub mod source;
pub mod target;
pub mod verify;
pub mod writer;

mod aligned;

/// Result alias for the flasher.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while flashing. Messages are one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A failure reading the image or its side files.
    #[error(transparent)]
    Image(#[from] imagegen::Error),
    /// A safety rule refused the device; nothing was written.
    #[error("refusing {device}: {reason}")]
    Refused { device: String, reason: String },
    /// The device failed while being written or read.
    #[error("{device}: {what} failed at offset {offset}: {source}")]
    Device {
        device: String,
        what: &'static str,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// Read-back found bytes that differ from the image.
    #[error("{device}: verification failed: first difference at offset {offset}{detail}")]
    Mismatch {
        device: String,
        offset: u64,
        detail: String,
    },
    /// The run was interrupted (Ctrl-C) before the partition table was written.
    #[error("{device}: interrupted after {written} bytes; the partition table was not written")]
    Interrupted { device: String, written: u64 },
    /// An operating-system error around a device that is not about its data.
    #[error("{context}: {source}")]
    System {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Shorthand for [`Error::System`].
    pub fn system(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::System {
            context: context.into(),
            source,
        }
    }
}
