//! Linux: disks from sysfs and procfs ([`sysfs`]), block-device ioctls,
//! `O_DIRECT` and `umount2`.

pub mod sysfs;

use crate::devices::Disk;
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Opens for writing are exclusive (`O_EXCL` on a block device: the kernel
/// refuses while a filesystem on it is mounted or another program holds it).
/// Whether a flashed card is ejected (see `devices::should_eject`).
pub const EJECTS: bool = false;

pub const EXCLUSIVE: bool = true;

// From <linux/fs.h>.
const BLKRRPART: libc::c_ulong = 0x125f;
const BLKFLSBUF: libc::c_ulong = 0x1261;
const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// sysfs and the mount tables. In debug builds only (what the integration
/// tests run), `NODEIMG_MOUNTINFO` and `NODEIMG_SWAPS` replace the tables so
/// the tests can inject a system disk; a release binary always reads the
/// kernel's, so no environment can hide a system disk from the safety rules.
fn roots() -> sysfs::Roots {
    #[allow(unused_mut)]
    let mut r = sysfs::Roots::default();
    #[cfg(debug_assertions)]
    {
        if let Some(p) = std::env::var_os("NODEIMG_MOUNTINFO") {
            r.mountinfo = p.into();
        }
        if let Some(p) = std::env::var_os("NODEIMG_SWAPS") {
            r.swaps = p.into();
        }
    }
    r
}

/// Every whole disk of this machine.
pub fn list_disks() -> Result<Vec<Disk>> {
    sysfs::list(&roots())
}

/// The whole disk at `path`; a partition or another kind of node is refused.
pub fn find_disk(path: &Path) -> Result<Disk> {
    sysfs::find(&roots(), path)
}

/// Unmounts every removable-media mount on `disk` (never a system mount: the
/// policy has refused such a disk before this is called); returns the
/// mountpoints it unmounted.
pub fn unmount(disk: &Disk) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for m in crate::policy::media_mounts(disk) {
        if m.mountpoint == "[swap]" {
            continue;
        }
        let c = std::ffi::CString::new(m.mountpoint.as_str()).map_err(|_| {
            Error::system(
                format!("unmounting {}", m.mountpoint),
                io::Error::from(io::ErrorKind::InvalidInput),
            )
        })?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            return Err(Error::system(
                format!("unmounting {} from {}", m.mountpoint, m.device),
                io::Error::last_os_error(),
            ));
        }
        done.push(m.mountpoint.clone());
    }
    Ok(done)
}

/// Linux has no eject step a card reader needs after a flush: `false`.
pub fn eject(_: &Disk) -> Result<bool> {
    Ok(false)
}

/// Opens `path` unbuffered (`O_DIRECT`), exclusively when asked. `EINVAL`
/// means the device or filesystem refuses direct I/O.
pub fn open_direct(path: &Path, write: bool, exclusive: bool) -> io::Result<File> {
    let excl = if exclusive { libc::O_EXCL } else { 0 };
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT | excl)
        .open(path)
}

/// The logical sector size direct I/O must align to.
pub fn logical_sector(f: &File) -> u64 {
    let mut sz: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKSSZGET as _, &mut sz) };
    if r == 0 && sz > 0 {
        sz as u64
    } else {
        512
    }
}

/// The size of the block device behind `f`; `None` when it is not one.
pub fn device_size(f: &File) -> io::Result<Option<u64>> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64 as _, &mut size) };
    Ok((r == 0).then_some(size))
}

/// Drops cached pages so buffered reads come from the medium.
pub fn drop_cache(f: &File, is_block: bool) {
    let fd = f.as_raw_fd();
    if is_block {
        // SAFETY: BLKFLSBUF takes no argument; fd is open.
        unsafe { libc::ioctl(fd, BLKFLSBUF as _, 0) };
    }
    // SAFETY: plain advisory call on an open descriptor.
    unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Asks the kernel to re-read the partition table of a block device.
pub fn reread_partitions(f: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument; fd is open.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKRRPART as _, 0) } != 0 {
        let e = io::Error::last_os_error();
        // Loop devices without partition scanning answer EINVAL: nothing to re-read.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    Ok(())
}
