//! File backend: an image file or a device node, accessed with pread/pwrite.

use super::{check_bounds, BlockDevice};
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A [`BlockDevice`] over a file. Its size is fixed when it is opened.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    size: u64,
    writable: bool,
}

impl FileDevice {
    /// Opens an existing file read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, false)
    }

    /// Opens an existing file for reading and writing.
    pub fn open_rw(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, true)
    }

    fn open_with(path: impl AsRef<Path>, writable: bool) -> Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Self::from_file(file, path, writable)
    }

    /// Creates (or truncates) a file of `size` bytes; unwritten parts stay holes.
    pub fn create(path: impl AsRef<Path>, size: u64) -> Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.set_len(size).map_err(|e| Error::io(path, e))?;
        Self::from_file(file, path, true)
    }

    /// Wraps an already open file; `path` is used in messages only.
    pub fn from_file(file: File, path: impl Into<PathBuf>, writable: bool) -> Result<Self> {
        let path = path.into();
        let size = device_size(&file).map_err(|e| Error::io(&path, e))?;
        Ok(FileDevice {
            file,
            path,
            size,
            writable,
        })
    }

    /// The path this device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file, for callers that need `SEEK_DATA` or ioctls.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Size of a regular file or of a block device (whose metadata length is 0).
fn device_size(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    // Block devices report their size through the end position.
    let mut f = file;
    let end = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(end)
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(offset, buf.len(), self.size)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(&self.path, e))
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly(self.path.display().to_string()));
        }
        check_bounds(offset, buf.len(), self.size)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io(&self.path, e))
    }

    fn flush(&self) -> Result<()> {
        if self.writable {
            self.file
                .sync_data()
                .map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn is_read_only(&self) -> bool {
        !self.writable
    }
}
