//! A device opened for flashing: exclusive, unbuffered where the device allows
//! it, with a buffered descriptor for the pieces direct I/O cannot take.
//!
//! Linux: `O_EXCL` (the kernel refuses while a filesystem on it is mounted or
//! another program holds it exclusively) and `O_DIRECT`, falling back to
//! buffered I/O when the device or filesystem refuses direct I/O. macOS:
//! `F_NOCACHE` on the raw device. Reads for verification bypass the page cache.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Something a flash writes to and verifies from.
pub trait Target: Send + Sync {
    /// Name for messages (the device path).
    fn describe(&self) -> String;
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset`, bypassing any cache.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Makes every write durable on the medium.
    fn flush(&self) -> io::Result<()>;
    /// Asks the kernel to re-read the partition table; a no-op where there is none.
    fn reread_partitions(&self) -> io::Result<()>;
}

/// A block device (or, for tests, a regular file) opened for flashing.
#[derive(Debug)]
pub struct DeviceTarget {
    path: PathBuf,
    /// Unbuffered descriptor, when the device accepts direct I/O.
    direct: Option<File>,
    /// Buffered descriptor for unaligned pieces and as the fallback.
    buffered: File,
    size: u64,
    /// Alignment direct I/O needs (offset, length and address).
    align: u64,
    is_block: bool,
}

#[cfg(target_os = "linux")]
mod ioctls {
    // From <linux/fs.h>.
    pub const BLKRRPART: libc::c_ulong = 0x125f;
    pub const BLKFLSBUF: libc::c_ulong = 0x1261;
    pub const BLKSSZGET: libc::c_ulong = 0x1268;
}

impl DeviceTarget {
    /// Opens `path` for reading and writing, exclusively on Linux block devices.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_mode(path, true, None)
    }

    /// Like [`open`](Self::open), with the size the device listing found, for
    /// nodes that cannot tell their own size (macOS raw disks, `/dev/rdiskN`).
    pub fn open_sized(path: &Path, size: u64) -> io::Result<Self> {
        Self::open_mode(path, true, Some(size))
    }

    /// Opens `path` read-only (for `nodeimg verify`).
    pub fn open_read_only(path: &Path) -> io::Result<Self> {
        Self::open_mode(path, false, None)
    }

    fn open_mode(path: &Path, write: bool, known_size: Option<u64>) -> io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        // macOS raw disks are character devices.
        let is_block = meta.file_type().is_block_device() || meta.file_type().is_char_device();
        let mut excl = 0;
        if write && is_block && cfg!(target_os = "linux") {
            excl = libc::O_EXCL;
        }
        let open = |flags: i32| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(flags)
                .open(path)
        };
        let (direct, buffered) = match open_direct(path, write, excl) {
            Ok(d) => (Some(d), open(0)?),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (None, open(excl)?),
            Err(e) => return Err(e),
        };
        let size = if is_block {
            let mut f = &buffered;
            match io::Seek::seek(&mut f, io::SeekFrom::End(0)) {
                Ok(n) if n > 0 => n,
                _ => known_size.unwrap_or(0),
            }
        } else {
            meta.len()
        };
        let align = if is_block {
            logical_sector(&buffered).max(512)
        } else {
            4096
        };
        Ok(DeviceTarget {
            path: path.to_path_buf(),
            direct,
            buffered,
            size,
            align,
            is_block,
        })
    }

    /// Whether direct (uncached) I/O is in use.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    fn direct_for(&self, offset: u64, len: usize, ptr: *const u8) -> Option<&File> {
        let a = self.align;
        let ok = offset.is_multiple_of(a)
            && (len as u64).is_multiple_of(a)
            && (ptr as u64).is_multiple_of(a);
        if ok {
            self.direct.as_ref()
        } else {
            None
        }
    }

    /// Drops cached pages so buffered reads come from the medium.
    fn drop_cache(&self) {
        #[cfg(target_os = "linux")]
        {
            let fd = self.buffered.as_raw_fd();
            if self.is_block {
                // SAFETY: BLKFLSBUF takes no argument; fd is open.
                unsafe { libc::ioctl(fd, ioctls::BLKFLSBUF as _, 0) };
            }
            // SAFETY: plain advisory call on an open descriptor.
            unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path, write: bool, excl: i32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT | excl)
        .open(path)
}

#[cfg(target_os = "macos")]
fn open_direct(path: &Path, write: bool, excl: i32) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(excl)
        .open(path)?;
    // SAFETY: F_NOCACHE takes an int flag; fd is open.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_NOCACHE, 1) } == -1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(f)
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn open_direct(_: &Path, _: bool, _: i32) -> io::Result<File> {
    Err(io::Error::from_raw_os_error(libc::EINVAL))
}

#[cfg(target_os = "linux")]
fn logical_sector(f: &File) -> u64 {
    let mut sz: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), ioctls::BLKSSZGET as _, &mut sz) };
    if r == 0 && sz > 0 {
        sz as u64
    } else {
        512
    }
}

#[cfg(not(target_os = "linux"))]
fn logical_sector(_: &File) -> u64 {
    512
}

impl Target for DeviceTarget {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let f = self
            .direct_for(offset, buf.len(), buf.as_ptr())
            .unwrap_or(&self.buffered);
        f.write_all_at(buf, offset)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self.direct_for(offset, buf.len(), buf.as_ptr()) {
            Some(f) => f.read_exact_at(buf, offset),
            None => {
                self.drop_cache();
                self.buffered.read_exact_at(buf, offset)
            }
        }
    }

    fn flush(&self) -> io::Result<()> {
        if let Some(d) = &self.direct {
            d.sync_all()?;
        }
        self.buffered.sync_all()
    }

    fn reread_partitions(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if self.is_block {
            let fd = self.direct.as_ref().unwrap_or(&self.buffered).as_raw_fd();
            // SAFETY: BLKRRPART takes no argument; fd is open.
            if unsafe { libc::ioctl(fd, ioctls::BLKRRPART as _, 0) } != 0 {
                let e = io::Error::last_os_error();
                // Loop devices without partition scanning answer EINVAL: nothing to re-read.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_pieces_go_direct_and_the_rest_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("card");
        std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        let t = DeviceTarget::open(&p).unwrap();
        assert_eq!(t.size(), 1 << 20);
        let mut buf = crate::aligned::AlignedBuf::new(8192);
        buf.as_mut_slice().fill(7);
        let direct = t.direct.is_some();
        assert_eq!(
            t.direct_for(4096, 8192, buf.as_slice().as_ptr()).is_some(),
            direct
        );
        t.write_at(4096, buf.as_slice()).unwrap();
        // Unaligned offset and length: the buffered descriptor (also the
        // whole path when a device refuses O_DIRECT) takes them.
        assert!(t.direct_for(100, 300, buf.as_slice().as_ptr()).is_none());
        t.write_at(100, &[9u8; 300]).unwrap();
        t.flush().unwrap();
        let mut back = vec![0u8; 400];
        t.read_at(0, &mut back).unwrap();
        assert_eq!(&back[100..400], &[9u8; 300][..]);
        let mut aligned = crate::aligned::AlignedBuf::new(8192);
        t.read_at(4096, aligned.as_mut_slice()).unwrap();
        assert!(aligned.as_slice().iter().all(|&b| b == 7));
    }
}
