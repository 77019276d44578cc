//! Opening the filesystem a device holds, recognised by its content.

use super::{ext4, fat, probe, Filesystem, FsType, Timestamp};
use crate::block::BlockDevice;
use crate::{Error, Result};
use std::sync::Arc;

/// How a filesystem is opened. Time is an input, never read by the
/// filesystem itself, so one process can stamp many images reproducibly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Whether changes are allowed; `false` refuses every change.
    pub writable: bool,
    /// The time given to new and changed entries (`ctime`, default `mtime`).
    pub now: Timestamp,
    /// Zero data blocks a change frees or rewrites, so no earlier content
    /// (a secret) survives in free space or in an overlay's delta.
    pub scrub: bool,
}

impl OpenOptions {
    /// For reading only.
    pub fn read_only() -> OpenOptions {
        OpenOptions {
            writable: false,
            now: Timestamp::default(),
            scrub: false,
        }
    }

    /// For changes stamped with the time `now`.
    pub fn writable(now: Timestamp) -> OpenOptions {
        OpenOptions {
            writable: true,
            now,
            scrub: false,
        }
    }
}

/// Opens the filesystem that fills `dev` (a bare filesystem image or one
/// partition's window), recognised by [`probe`].
pub fn open(dev: Arc<dyn BlockDevice>, opts: OpenOptions) -> Result<Box<dyn Filesystem>> {
    match probe(&*dev)? {
        Some(FsType::Fat12 | FsType::Fat16 | FsType::Fat32) => {
            Ok(Box::new(fat::FatFs::open_with(dev, opts)?))
        }
        Some(FsType::Ext2 | FsType::Ext3 | FsType::Ext4) => {
            Ok(Box::new(ext4::Ext4Fs::open_with(dev, opts)?))
        }
        None => Err(Error::unsupported(
            "filesystem",
            format!("{}: no FAT or ext2/3/4 signature found", dev.describe()),
        )),
    }
}
