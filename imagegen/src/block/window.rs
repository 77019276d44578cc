//! A partition window: one byte range of a device exposed as a device.

use super::{check_bounds, BlockDevice};
use crate::Result;

/// The bytes `[start, start + len)` of `inner`, addressed from 0.
#[derive(Debug, Clone)]
pub struct Window<D> {
    inner: D,
    start: u64,
    len: u64,
}

impl<D: BlockDevice> Window<D> {
    /// A window over `inner`; fails if the range does not fit inside it.
    pub fn new(inner: D, start: u64, len: u64) -> Result<Self> {
        let size = inner.size();
        match start.checked_add(len) {
            Some(end) if end <= size => Ok(Window { inner, start, len }),
            _ => Err(crate::Error::corrupt(
                format!("partition window on {}", inner.describe()),
                format!("range {start}+{len} extends past the end of the device ({size} bytes)"),
            )),
        }
    }

    /// Offset of the window inside the underlying device.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The underlying device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Gives back the underlying device.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: BlockDevice> BlockDevice for Window<D> {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(offset, buf.len(), self.len)?;
        self.inner.read_at(self.start + offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_bounds(offset, buf.len(), self.len)?;
        self.inner.write_at(self.start + offset, buf)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn describe(&self) -> String {
        format!(
            "{} (bytes {}..{})",
            self.inner.describe(),
            self.start,
            self.start + self.len
        )
    }

    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }
}
