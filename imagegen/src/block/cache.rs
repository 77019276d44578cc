//! Read-through block cache over a device that nobody writes while it is
//! open: the base image that `stamp` reads for every node.
//!
//! Stamping a node opens its filesystems afresh through a copy-on-write
//! overlay, so without a cache every node re-reads the same superblocks,
//! group descriptors, bitmaps, inode-table blocks, directories and FAT
//! sectors — thousands of small positioned reads a node, many of them a
//! byte or two long (the partition-table and FAT crates read through a
//! cursor). The cache keeps each 4 KiB block the first time any node reads
//! it; later reads, by this node or the next, are memory copies.

use super::{check_bounds, BlockDevice};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Granularity of the cache, in bytes.
pub const CACHE_BLOCK: u64 = 4096;

/// Reads at least this long bypass the cache: they stream data (hashing the
/// base, copying it into a full node image), not metadata that is read
/// again.
const BYPASS: usize = 256 * 1024;

/// A read-only view of `inner` that keeps the blocks it has read in memory,
/// up to `limit` bytes (past it, reads of blocks not yet cached go to
/// `inner` every time). Writes are refused: a cache of a device that
/// changes underneath would serve stale bytes.
pub struct CachedDevice<D: BlockDevice> {
    inner: D,
    limit: usize,
    state: Mutex<Blocks>,
}

#[derive(Default)]
struct Blocks {
    map: HashMap<u64, Box<[u8]>>,
    bytes: usize,
    hits: u64,
    misses: u64,
}

/// How a cache has been used (for profiles and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks held.
    pub blocks: usize,
    /// Block reads served from memory.
    pub hits: u64,
    /// Block reads that went to the device.
    pub misses: u64,
}

impl<D: BlockDevice> std::fmt::Debug for CachedDevice<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CachedDevice({}, {:?})",
            self.inner.describe(),
            self.stats()
        )
    }
}

impl<D: BlockDevice> CachedDevice<D> {
    /// A cache over `inner` holding at most `limit` bytes of blocks.
    pub fn new(inner: D, limit: usize) -> Self {
        CachedDevice {
            inner,
            limit,
            state: Mutex::new(Blocks::default()),
        }
    }

    /// The device underneath.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Blocks held, hits and misses so far.
    pub fn stats(&self) -> CacheStats {
        let s = self.lock();
        CacheStats {
            blocks: s.map.len(),
            hits: s.hits,
            misses: s.misses,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Blocks> {
        // A map of immutable blocks: a panic elsewhere cannot corrupt it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Byte offset and length of `block` (the last block may be short).
    fn block_span(&self, block: u64) -> (u64, usize) {
        let off = block * CACHE_BLOCK;
        (off, CACHE_BLOCK.min(self.inner.size() - off) as usize)
    }
}

impl<D: BlockDevice> BlockDevice for CachedDevice<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(offset, buf.len(), self.size())?;
        if buf.len() >= BYPASS {
            return self.inner.read_at(offset, buf);
        }
        let mut state = self.lock();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / CACHE_BLOCK;
            let within = (pos % CACHE_BLOCK) as usize;
            let n = (CACHE_BLOCK as usize - within).min(buf.len() - done);
            if let Some(b) = state.map.get(&block) {
                buf[done..done + n].copy_from_slice(&b[within..within + n]);
                state.hits += 1;
                done += n;
                continue;
            }
            state.misses += 1;
            let (boff, blen) = self.block_span(block);
            if state.bytes + blen > self.limit {
                // Full: read what was asked for this block, keep nothing.
                self.inner.read_at(pos, &mut buf[done..done + n])?;
            } else {
                let mut b = vec![0u8; blen].into_boxed_slice();
                self.inner.read_at(boff, &mut b)?;
                buf[done..done + n].copy_from_slice(&b[within..within + n]);
                state.bytes += blen;
                state.map.insert(block, b);
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, _offset: u64, _buf: &[u8]) -> Result<()> {
        Err(Error::ReadOnly(format!(
            "{} (read through a cache)",
            self.inner.describe()
        )))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn is_read_only(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 13 % 251) as u8).collect()
    }

    #[test]
    fn reads_match_the_device_at_any_offset_and_length() {
        // Not a multiple of the block size: the last block is short.
        let bytes = pattern(9 * 4096 + 123);
        let cache = CachedDevice::new(MemDevice::from_vec(bytes.clone()), 1 << 20);
        for (off, len) in [
            (0usize, 1usize),
            (1, 2),
            (4095, 2),
            (4000, 9000),
            (9 * 4096, 123),
            (9 * 4096 + 100, 23),
            (0, bytes.len()),
            (5, 4096 * 3),
        ] {
            for _ in 0..2 {
                let mut buf = vec![0u8; len];
                cache.read_at(off as u64, &mut buf).unwrap();
                assert_eq!(buf, bytes[off..off + len], "{off}+{len}");
            }
        }
        assert!(cache.stats().hits > 0);
        let mut one = [0u8; 2];
        assert!(cache.read_at(bytes.len() as u64 - 1, &mut one).is_err());
        assert!(cache.write_at(0, &[1]).is_err());
    }

    #[test]
    fn a_full_cache_still_reads_correctly() {
        let bytes = pattern(8 * 4096);
        let cache = CachedDevice::new(MemDevice::from_vec(bytes.clone()), 2 * 4096);
        let mut buf = vec![0u8; 6000];
        for off in [0u64, 10_000, 20_000, 10_000, 0] {
            cache.read_at(off, &mut buf).unwrap();
            assert_eq!(buf, bytes[off as usize..off as usize + 6000]);
        }
        assert_eq!(cache.stats().blocks, 2);
    }
}
