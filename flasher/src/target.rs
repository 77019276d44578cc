//! A device opened for flashing: exclusive, unbuffered where the device allows
//! it, with a buffered descriptor for the pieces direct I/O cannot take.
//!
//! The OS-specific calls live in [`crate::platform`]: on Linux `O_EXCL` (the
//! kernel refuses while a filesystem on it is mounted or another program
//! holds it exclusively) and `O_DIRECT`, falling back to buffered I/O when
//! the device or filesystem refuses direct I/O; on macOS `F_NOCACHE` on the
//! raw device. Reads for verification bypass the page cache.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::platform;

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
        let exclusive = write && is_block && platform::EXCLUSIVE;
        let open = |excl: bool| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(if excl { libc::O_EXCL } else { 0 })
                .open(path)
        };
        let (direct, buffered) = match platform::open_direct(path, write, exclusive) {
            Ok(d) => (Some(d), open(false)?),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (None, open(exclusive)?),
            Err(e) => return Err(e),
        };
        let size = if is_block {
            match platform::device_size(&buffered)? {
                Some(n) if n > 0 => n,
                _ => {
                    let mut f = &buffered;
                    match io::Seek::seek(&mut f, io::SeekFrom::End(0)) {
                        Ok(n) if n > 0 => n,
                        _ => known_size.unwrap_or(0),
                    }
                }
            }
        } else {
            meta.len()
        };
        let align = if is_block {
            platform::logical_sector(&buffered).max(512)
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

    /// The device number of the opened node (`st_rdev`; 0 for a file).
    pub fn device_number(&self) -> io::Result<u64> {
        platform::device_number(&self.buffered)
    }

    /// Checks that the opened device is the one the user confirmed: the same
    /// device number (when it was known) and the same size. Between the
    /// listing and this open, a card may have been swapped or renamed.
    pub fn check_identity(&self, disk: &crate::devices::Disk) -> crate::Result<()> {
        let refuse = |reason: String| crate::Error::Refused {
            device: disk.path.clone(),
            reason,
        };
        if let Some(want) = disk.device_number {
            let got = self
                .device_number()
                .map_err(|e| crate::Error::system(format!("{}: fstat", disk.path), e))?;
            if got != want {
                return Err(refuse(format!(
                    "the device opened for writing (number {got:#x}) is not the one checked \
                     and confirmed ({want:#x}); was the card swapped?"
                )));
            }
        }
        if self.is_block && disk.size != 0 && self.size != disk.size {
            return Err(refuse(format!(
                "it now holds {} bytes, not the {} that were checked and confirmed; was the card swapped?",
                self.size, disk.size
            )));
        }
        Ok(())
    }

    /// Drops cached pages so buffered reads come from the medium.
    fn drop_cache(&self) {
        platform::drop_cache(&self.buffered, self.is_block);
    }
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
        if self.is_block {
            platform::reread_partitions(self.direct.as_ref().unwrap_or(&self.buffered))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_for(path: &Path, size: u64, device_number: Option<u64>) -> crate::devices::Disk {
        crate::devices::Disk {
            path: path.display().to_string(),
            write_path: path.display().to_string(),
            size,
            vendor: None,
            model: None,
            transport: crate::devices::Transport::Usb,
            removable: true,
            read_only: false,
            mounts: Vec::new(),
            device_number,
            unsuitable: Vec::new(),
        }
    }

    #[test]
    fn the_opened_device_must_be_the_confirmed_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("card");
        std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        let t = DeviceTarget::open(&p).unwrap();
        let same = t.device_number().unwrap();
        t.check_identity(&disk_for(&p, 1 << 20, Some(same)))
            .unwrap();
        t.check_identity(&disk_for(&p, 1 << 20, None)).unwrap();
        let err = t
            .check_identity(&disk_for(&p, 1 << 20, Some(same + 1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not the one checked and confirmed"), "{err}");
    }

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
