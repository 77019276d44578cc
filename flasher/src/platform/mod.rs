//! Everything in flashing that differs between operating systems, and the
//! only place in nodeimg that makes OS-specific calls: finding whole disks
//! and what is mounted from them, opening a device for unbuffered writes,
//! its sector and total size, dropping cached pages, re-reading the
//! partition table, unmounting and ejecting.
//!
//! - Linux ([`linux`]): `/sys/block`, `/proc/self/mountinfo`, `/proc/swaps`;
//!   `O_EXCL|O_DIRECT`, `BLKSSZGET`, `BLKGETSIZE64`, `BLKFLSBUF`,
//!   `BLKRRPART`, `umount2`.
//! - macOS (`macos`): `diskutil list|info -plist`, `diskutil unmountDisk`
//!   and `eject`; the raw node `/dev/rdiskN` with `F_NOCACHE`,
//!   `DKIOCGETBLOCKSIZE` and `DKIOCGETBLOCKCOUNT`.
//!
//! The decisions (policy, plan, writer, verifier) and the parsing of the
//! platforms' outputs ([`crate::devices::diskutil`], the sysfs reader) are
//! platform-free and tested on any host. A lint (`clippy.toml`,
//! `disallowed-methods`) keeps OS-specific calls out of every other module.
#![allow(clippy::disallowed_methods)]

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
use linux as os;

#[cfg(target_os = "macos")]
pub mod macos;
#[cfg(target_os = "macos")]
use macos as os;

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod other;
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
use other as os;

pub use os::{
    device_size, drop_cache, eject, find_disk, list_disks, logical_sector, open_direct,
    reread_partitions, unmount, EJECTS, EXCLUSIVE,
};

/// The device number of an open device node (`st_rdev`), so a device can be
/// re-identified after the user confirmed it and two paths to one disk are
/// seen to be one.
pub fn device_number(f: &std::fs::File) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(f.metadata()?.rdev())
}
