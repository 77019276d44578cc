//! Hosts other than Linux and macOS: images can be built and inspected, but
//! no disk is found or written.

use crate::devices::Disk;
use crate::{Error, Result};
use std::fs::File;
use std::io;
use std::path::Path;

/// Whether opens are exclusive.
/// Whether a flashed card is ejected (see `devices::should_eject`).
pub const EJECTS: bool = false;

pub const EXCLUSIVE: bool = false;

fn unsupported(what: &str) -> Error {
    Error::system(
        format!("{what} on this operating system"),
        io::Error::from(io::ErrorKind::Unsupported),
    )
}

pub fn list_disks() -> Result<Vec<Disk>> {
    Err(unsupported("listing disks"))
}

pub fn find_disk(_: &Path) -> Result<Disk> {
    Err(unsupported("finding a disk"))
}

pub fn unmount(_: &Disk) -> Result<Vec<String>> {
    Err(unsupported("unmounting"))
}

pub fn eject(_: &Disk) -> Result<bool> {
    Ok(false)
}

pub fn open_direct(_: &Path, _: bool, _: bool) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

pub fn logical_sector(_: &File) -> u64 {
    512
}

pub fn device_size(_: &File) -> io::Result<Option<u64>> {
    Ok(None)
}

pub fn drop_cache(_: &File, _: bool) {}

pub fn reread_partitions(_: &File) -> io::Result<()> {
    Ok(())
}
