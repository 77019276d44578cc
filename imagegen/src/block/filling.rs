//! A device that is still being filled in order, front to back (an image
//! decoded from a stream into its file), and that other stages may already
//! use: every access waits until the filler has passed its last byte.
//!
//! The filler writes only beyond its [`Watermark`] and the users only below
//! it, so the two never touch the same bytes and need no lock around the
//! data itself; the watermark's mutex orders the filler's writes before the
//! users' reads of them.

use super::BlockDevice;
use crate::ranges::RangeSet;
use crate::{Error, Result};
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// Bytes `[0, filled)` are final (as the filler leaves them).
    filled: u64,
    /// The filler stopped: why, in one line.
    failed: Option<String>,
}

/// How far a filler has got; shared by the filler and the stages waiting
/// for it.
#[derive(Debug, Default)]
pub struct Watermark {
    state: Mutex<State>,
    moved: Condvar,
}

impl Watermark {
    /// A watermark at byte 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking filler leaves a consistent state (two plain fields).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The filler has finished every byte before `to`.
    pub fn advance(&self, to: u64) {
        let mut s = self.lock();
        if to > s.filled {
            s.filled = to;
            self.moved.notify_all();
        }
    }

    /// The filler stopped for good (`why`): every waiter gets an error.
    pub fn fail(&self, why: impl Into<String>) {
        let mut s = self.lock();
        if s.failed.is_none() {
            s.failed = Some(why.into());
        }
        self.moved.notify_all();
    }

    /// The bytes final so far.
    pub fn filled(&self) -> u64 {
        self.lock().filled
    }

    /// Waits until `[0, end)` is final; an error when the filler failed
    /// before it got there.
    pub fn wait_for(&self, end: u64) -> Result<()> {
        let mut s = self.lock();
        loop {
            if s.filled >= end {
                return Ok(());
            }
            if let Some(why) = &s.failed {
                return Err(Error::Invalid(why.clone()));
            }
            s = self.moved.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits until the filler got past `at` or failed; returns how far it
    /// got (more than `at`), or the error.
    pub fn wait_past(&self, at: u64) -> Result<u64> {
        let mut s = self.lock();
        loop {
            if s.filled > at {
                return Ok(s.filled);
            }
            if let Some(why) = &s.failed {
                return Err(Error::Invalid(why.clone()));
            }
            s = self.moved.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A device over one being filled: reads and writes wait for the
/// [`Watermark`] to pass them, and the byte ranges written through it are
/// recorded (the stages after it must know what changed besides what the
/// filler wrote). `flush` does nothing while the device is in use: the file
/// is a temporary one, made durable once when it is complete.
pub struct FillingDevice<D> {
    inner: D,
    mark: std::sync::Arc<Watermark>,
    written: Mutex<RangeSet>,
}

impl<D: BlockDevice> FillingDevice<D> {
    /// `inner` (already of its final size) filled by whoever moves `mark`.
    pub fn new(inner: D, mark: std::sync::Arc<Watermark>) -> Self {
        FillingDevice {
            inner,
            mark,
            written: Mutex::new(RangeSet::new()),
        }
    }

    /// The ranges written through this device so far.
    pub fn written(&self) -> RangeSet {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn wait(&self, offset: u64, len: usize) -> Result<()> {
        super::check_bounds(offset, len, self.inner.size())?;
        let end = offset + len as u64;
        if self.mark.filled() < end {
            // Which access held a stage up (`-vvv`): what to move earlier.
            tracing::trace!("{}: waiting for byte {end}", self.inner.describe());
        }
        self.mark.wait_for(end)
    }
}

impl<D: BlockDevice> BlockDevice for FillingDevice<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.wait(offset, buf.len())?;
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.wait(offset, buf.len())?;
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(offset, offset + buf.len() as u64);
        self.inner.write_at(offset, buf)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn accesses_wait_for_the_filler_and_writes_are_recorded() {
        let mark = Arc::new(Watermark::new());
        let mem = Arc::new(MemDevice::zeroed(8192));
        let dev = Arc::new(FillingDevice::new(mem.clone(), mark.clone()));
        let reader = {
            let dev = dev.clone();
            std::thread::spawn(move || {
                let mut b = [0u8; 4];
                dev.read_at(5000, &mut b).map(|()| b)
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "a read past the watermark returned");
        mem.write_at(5000, b"data").unwrap();
        mark.advance(4096);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!reader.is_finished());
        mark.advance(8192);
        assert_eq!(&reader.join().unwrap().unwrap(), b"data");
        dev.write_at(10, b"xy").unwrap();
        assert_eq!(dev.written().extents().len(), 1);
        assert_eq!(dev.written().bytes(), 2);
    }

    #[test]
    fn a_failed_filler_wakes_every_waiter_with_its_reason() {
        let mark = Arc::new(Watermark::new());
        let dev = Arc::new(FillingDevice::new(MemDevice::zeroed(4096), mark.clone()));
        let t = {
            let dev = dev.clone();
            std::thread::spawn(move || dev.read_at(0, &mut [0u8; 16]))
        };
        mark.advance(8);
        mark.fail("x.img.xz: corrupt");
        let e = t.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("x.img.xz: corrupt"), "{e}");
        // What was final before the failure stays readable.
        dev.read_at(0, &mut [0u8; 8]).unwrap();
        // Out of bounds is refused, not waited for.
        assert!(dev.read_at(4090, &mut [0u8; 16]).is_err());
    }
}
