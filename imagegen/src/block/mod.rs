//! Positioned block access: the one interface every layer above reads and
//! writes image bytes through.
//!
//! A [`BlockDevice`] is a fixed-size byte array with positioned, exact reads
//! and writes that return errors instead of panicking. Backends: [`FileDevice`]
//! (an image file or a block device node), [`MemDevice`] (tests, fuzzing).
//! Adapters: [`Window`] exposes one partition's byte range as a device of its
//! own, and [`DeviceCursor`] turns any device into `Read + Write + Seek` for
//! crates that want std streams (`fatfs`, `mbrman`, `gpt`). For crash tests
//! (feature `testing`), `FaultyDevice` models a write cache and loses power
//! at a chosen write.

mod cursor;
#[cfg(any(test, feature = "testing"))]
mod faulty;
mod file;
mod filling;
mod mem;
mod overlay;
mod window;

pub use cursor::DeviceCursor;
#[cfg(any(test, feature = "testing"))]
pub use faulty::{Event, FaultyDevice, Unflushed};
pub use file::FileDevice;
pub use filling::{FillingDevice, Watermark};
pub use mem::MemDevice;
pub use overlay::{Overlay, OVERLAY_BLOCK};
pub use window::Window;

use crate::{Error, Result};
use std::sync::Arc;

/// A fixed-size byte-addressed device with positioned I/O.
///
/// Methods take `&self` so one device can be shared between threads (the
/// flasher reads from one thread while others hash); implementations use
/// positioned system calls or interior locking.
pub trait BlockDevice: Send + Sync {
    /// Size of the device in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from `offset`; an access past the end is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Writes all of `buf` at `offset`; an access past the end is an error.
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()>;

    /// Makes every write issued before it durable (`fdatasync` for files)
    /// before it returns. It is also the only ordering barrier: writes issued
    /// between two flushes may reach the medium in any order, or not at all
    /// if the power goes, so writers that must survive a crash (the ext4
    /// commit) flush between the steps whose order matters. Devices with no
    /// durable medium of their own (memory, an overlay's spill file) forward
    /// it or do nothing.
    fn flush(&self) -> Result<()>;

    /// A short human-readable name for error messages (usually a path).
    fn describe(&self) -> String;

    /// Whether writes are refused.
    fn is_read_only(&self) -> bool {
        false
    }
}

/// Checks that `len` bytes at `offset` lie inside a device of `size` bytes.
pub fn check_bounds(offset: u64, len: usize, size: u64) -> Result<()> {
    let len = len as u64;
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfBounds { offset, len, size }),
    }
}

macro_rules! forward_block_device {
    ($($ty:ty),*) => {$(
        impl<D: BlockDevice + ?Sized> BlockDevice for $ty {
            fn size(&self) -> u64 { (**self).size() }
            fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> { (**self).read_at(offset, buf) }
            fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> { (**self).write_at(offset, buf) }
            fn flush(&self) -> Result<()> { (**self).flush() }
            fn describe(&self) -> String { (**self).describe() }
            fn is_read_only(&self) -> bool { (**self).is_read_only() }
        }
    )*};
}

forward_block_device!(&D, Box<D>, Arc<D>);
