//! A device for crash tests: an in-memory image that models a disk's write
//! cache, and fails or "loses power" at a chosen write.
//!
//! Writes land in a volatile cache until [`BlockDevice::flush`] makes them
//! durable, as on a real disk (or the page cache in front of an image file).
//! After a simulated power loss, [`FaultyDevice::after_crash`] gives the bytes
//! a later reader would find: what was flushed, plus all, none or a
//! seeded subset of the writes issued since the last flush — a disk may
//! persist unflushed writes in any order.

use super::{check_bounds, BlockDevice};
use crate::{Error, Result};
use std::sync::{Mutex, MutexGuard};

/// What happened to writes that were issued but not yet flushed when the
/// power went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unflushed {
    /// All of them reached the disk, in order (a process crash, or a disk
    /// that wrote its cache out just in time).
    Kept,
    /// None of them did.
    Lost,
    /// A pseudo-random subset chosen by this seed did (reordering).
    Some(u64),
}

/// One device request, as recorded by [`FaultyDevice::events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A write of `len` bytes at `offset`.
    Write { offset: u64, len: u64 },
    /// A flush.
    Flush,
}

/// An in-memory [`BlockDevice`] with a volatile write cache and injected faults.
#[derive(Debug)]
pub struct FaultyDevice {
    size: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    durable: Vec<u8>,
    /// Writes since the last flush, in issue order.
    cached: Vec<(u64, Vec<u8>)>,
    writes: u64,
    /// The write (counted from 0) at which the power goes.
    power_loss_at: Option<u64>,
    /// The one write (counted from 0) that fails with an I/O error.
    fail_at: Option<u64>,
    dead: bool,
    events: Vec<Event>,
}

impl FaultyDevice {
    /// A device holding `image`, with no fault armed.
    pub fn new(image: Vec<u8>) -> Self {
        FaultyDevice {
            size: image.len() as u64,
            state: Mutex::new(State {
                durable: image,
                cached: Vec::new(),
                writes: 0,
                power_loss_at: None,
                fail_at: None,
                dead: false,
                events: Vec::new(),
            }),
        }
    }

    /// Loses power at write `n` (0 = the next write since the device was
    /// made): that write and every later request fail and change nothing.
    pub fn power_loss_at(&self, n: u64) {
        self.lock().power_loss_at = Some(n);
    }

    /// Fails write `n` alone with an I/O error; the device keeps working.
    pub fn fail_write(&self, n: u64) {
        self.lock().fail_at = Some(n);
    }

    /// Writes issued so far (including the failed one).
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Whether the power went.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Every write and flush that succeeded, in order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// What a reader sees now, cache included.
    pub fn contents(&self) -> Vec<u8> {
        let s = self.lock();
        let mut out = s.durable.clone();
        for (off, data) in &s.cached {
            let o = *off as usize;
            out[o..o + data.len()].copy_from_slice(data);
        }
        out
    }

    /// What a reader finds after the power comes back.
    pub fn after_crash(&self, unflushed: Unflushed) -> Vec<u8> {
        let s = self.lock();
        let mut out = s.durable.clone();
        let mut rng = match unflushed {
            Unflushed::Some(seed) => seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            _ => 0,
        };
        for (off, data) in &s.cached {
            let keep = match unflushed {
                Unflushed::Kept => true,
                Unflushed::Lost => false,
                Unflushed::Some(_) => {
                    // xorshift64: small, seeded, good enough to pick subsets.
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng & 1 == 1
                }
            };
            if keep {
                let o = *off as usize;
                out[o..o + data.len()].copy_from_slice(data);
            }
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn injected(what: &str) -> Error {
    Error::io_context(
        "fault injection",
        std::io::Error::other(format!("simulated {what}")),
    )
}

impl BlockDevice for FaultyDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(offset, buf.len(), self.size)?;
        let s = self.lock();
        if s.dead {
            return Err(injected("power loss"));
        }
        let (start, end) = (offset, offset + buf.len() as u64);
        buf.copy_from_slice(&s.durable[start as usize..end as usize]);
        for (off, data) in &s.cached {
            let (ws, we) = (*off, *off + data.len() as u64);
            let (lo, hi) = (ws.max(start), we.min(end));
            if lo < hi {
                buf[(lo - start) as usize..(hi - start) as usize]
                    .copy_from_slice(&data[(lo - ws) as usize..(hi - ws) as usize]);
            }
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_bounds(offset, buf.len(), self.size)?;
        let mut s = self.lock();
        let n = s.writes;
        s.writes += 1;
        if s.dead || s.power_loss_at == Some(n) {
            s.dead = true;
            return Err(injected("power loss"));
        }
        if s.fail_at == Some(n) {
            return Err(injected("write error"));
        }
        s.cached.push((offset, buf.to_vec()));
        s.events.push(Event::Write {
            offset,
            len: buf.len() as u64,
        });
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut s = self.lock();
        if s.dead {
            return Err(injected("power loss"));
        }
        let cached = std::mem::take(&mut s.cached);
        for (off, data) in cached {
            let o = off as usize;
            s.durable[o..o + data.len()].copy_from_slice(&data);
        }
        s.events.push(Event::Flush);
        Ok(())
    }

    fn describe(&self) -> String {
        "fault-injection device".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_loss_keeps_what_was_flushed() {
        let dev = FaultyDevice::new(vec![0; 16]);
        dev.power_loss_at(2);
        dev.write_at(0, &[1; 4]).unwrap();
        dev.flush().unwrap();
        dev.write_at(4, &[2; 4]).unwrap();
        let mut buf = [0u8; 8];
        dev.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, [1, 1, 1, 1, 2, 2, 2, 2]);
        assert!(dev.write_at(8, &[3; 4]).is_err());
        assert!(dev.is_dead());
        assert!(dev.write_at(12, &[4; 4]).is_err());
        assert!(dev.flush().is_err());
        assert_eq!(
            &dev.after_crash(Unflushed::Lost)[..8],
            &[1, 1, 1, 1, 0, 0, 0, 0]
        );
        assert_eq!(
            &dev.after_crash(Unflushed::Kept)[..12],
            &[1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0]
        );
        assert_eq!(dev.writes(), 4);
    }

    #[test]
    fn a_failed_write_leaves_the_device_working() {
        let dev = FaultyDevice::new(vec![0; 8]);
        dev.fail_write(0);
        assert!(dev.write_at(0, &[1; 4]).is_err());
        dev.write_at(4, &[2; 4]).unwrap();
        assert_eq!(dev.contents(), [0, 0, 0, 0, 2, 2, 2, 2]);
        assert_eq!(dev.events(), vec![Event::Write { offset: 4, len: 4 }]);
    }
}
