//! Filesystems inside images, behind one interface.
//!
//! [`Filesystem`] is what `nodeimg fs` and the later stages (base overlays,
//! stamping) drive; each filesystem module implements it. Paths are absolute,
//! `/`-separated and interpreted inside the filesystem. Operations a
//! filesystem cannot express (a symlink on FAT) return
//! [`Error::Unsupported`](crate::Error::Unsupported) without changing anything.

pub mod ext4;
pub mod fat;
mod open;
mod probe;
pub mod timestamp;
mod types;

pub use open::{open, OpenOptions};
pub use probe::{ext_kind, is_boot_sector, probe, recognise, FsType, PROBE_BYTES};
pub use types::*;
