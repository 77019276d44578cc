//! macOS: disks from `diskutil` (parsed by [`crate::devices::diskutil`]),
//! the raw node `/dev/rdiskN` with `F_NOCACHE`, sizes from
//! `DKIOCGETBLOCKSIZE`/`DKIOCGETBLOCKCOUNT`, `diskutil unmountDisk` and
//! `diskutil eject`. Never `unmount force`: a volume in use is reported, and
//! the user closes what holds it.

use crate::devices::{diskutil, Disk};
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// macOS has no exclusive open for disks; `diskutil unmountDisk` keeps the
/// system's hands off it instead.
/// Whether a flashed card is ejected (see `devices::should_eject`).
pub const EJECTS: bool = true;

pub const EXCLUSIVE: bool = false;

// <sys/disk.h>: _IOR('d', 24, uint32_t) and _IOR('d', 25, uint64_t).
const DKIOCGETBLOCKSIZE: libc::c_ulong = 0x4004_6418;
const DKIOCGETBLOCKCOUNT: libc::c_ulong = 0x4008_6419;

fn diskutil(args: &[&str]) -> Result<Vec<u8>> {
    let out = std::process::Command::new("/usr/sbin/diskutil")
        .args(args)
        .output()
        .map_err(|e| Error::system("running diskutil", e))?;
    if !out.status.success() {
        return Err(Error::system(
            format!("diskutil {}", args.join(" ")),
            io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ));
    }
    Ok(out.stdout)
}

fn info(id: &str) -> Result<Vec<u8>> {
    diskutil(&["info", "-plist", id])
}

/// Every whole disk `diskutil list` shows (APFS containers are credited to
/// their physical disk, not listed).
pub fn list_disks() -> Result<Vec<Disk>> {
    let listing = diskutil::parse_list(&diskutil(&["list", "-plist"])?)?;
    listing
        .disks
        .iter()
        .map(|(id, mounts)| diskutil::parse_info(&info(id)?, mounts.clone()))
        .collect()
}

/// The whole disk `path` names (`/dev/disk4` or `/dev/rdisk4`), with the
/// device number of its raw node.
pub fn find_disk(path: &Path) -> Result<Disk> {
    let listing = diskutil::parse_list(&diskutil(&["list", "-plist"])?)?;
    let mut disk = diskutil::find_in(&listing, &info, &path.to_string_lossy())?;
    disk.device_number = std::fs::metadata(&disk.write_path)
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::rdev(&m));
    Ok(disk)
}

/// `diskutil unmountDisk`: every volume of the disk, or an error naming
/// what holds one.
pub fn unmount(disk: &Disk) -> Result<Vec<String>> {
    diskutil(&["unmountDisk", &disk.path])?;
    Ok(disk
        .mounts
        .iter()
        .filter(|m| !m.system)
        .map(|m| m.mountpoint.clone())
        .collect())
}

/// `diskutil eject`, so the card can be pulled.
pub fn eject(disk: &Disk) -> Result<bool> {
    diskutil(&["eject", &disk.path]).map(|_| true)
}

/// Opens `path` with `F_NOCACHE` (the raw node is unbuffered already; this
/// keeps the unified buffer cache out of reads for verification too).
pub fn open_direct(path: &Path, write: bool, _exclusive: bool) -> io::Result<File> {
    let f = OpenOptions::new().read(true).write(write).open(path)?;
    // SAFETY: F_NOCACHE takes an int flag; fd is open.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_NOCACHE, 1) } == -1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(f)
}

fn block_size(f: &File) -> Option<u64> {
    let mut sz: u32 = 0;
    // SAFETY: DKIOCGETBLOCKSIZE writes one u32 through the pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), DKIOCGETBLOCKSIZE, &mut sz) };
    (r == 0 && sz > 0).then_some(u64::from(sz))
}

/// The device's block size.
pub fn logical_sector(f: &File) -> u64 {
    block_size(f).unwrap_or(512)
}

/// Block count × block size; `None` for anything that is not a disk.
pub fn device_size(f: &File) -> io::Result<Option<u64>> {
    let Some(bs) = block_size(f) else {
        return Ok(None);
    };
    let mut count: u64 = 0;
    // SAFETY: DKIOCGETBLOCKCOUNT writes one u64 through the pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), DKIOCGETBLOCKCOUNT, &mut count) };
    Ok((r == 0).then(|| count.saturating_mul(bs)))
}

/// Reads through `F_NOCACHE` descriptors bypass the cache already.
pub fn drop_cache(_: &File, _: bool) {}

/// macOS re-probes the partition table when the disk is ejected or
/// re-attached; nothing to ask for here.
pub fn reread_partitions(_: &File) -> io::Result<()> {
    Ok(())
}
