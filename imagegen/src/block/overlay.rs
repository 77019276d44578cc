//! Copy-on-write overlay: writes land in memory (then, past a limit, in an
//! anonymous spill file), reads see them over an untouched base. What it
//! changed becomes a node's delta.

use super::{check_bounds, BlockDevice};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard};

/// Granularity of change tracking, in bytes.
pub const OVERLAY_BLOCK: u64 = 4096;

/// Changed blocks kept in memory before the rest spill to a file: 16 MiB,
/// far more than a stamped node changes (a few hundred KiB), so stamping
/// makes no file and no system call for its own changes.
const MEMORY_SLOTS: u64 = 4096;

/// A writable view of a read-only `base`. Changed 4 KiB blocks are copied up
/// into memory, and past 16 MiB (`MEMORY_SLOTS` blocks) into an anonymous temporary file
/// (deleted by the OS when dropped); so memory stays bounded however much
/// is written. The base is never written.
pub struct Overlay<B: BlockDevice> {
    base: B,
    state: Mutex<State>,
}

struct State {
    /// Block number → slot: in `memory` below [`MEMORY_SLOTS`], else in
    /// the spill file.
    index: BTreeMap<u64, u64>,
    /// The next unused slot (dropped blocks leave theirs unused).
    next_slot: u64,
    memory: Vec<Box<[u8]>>,
    spill: Option<File>,
}

impl State {
    fn spill_at(&mut self, slot: u64) -> Result<(&File, u64)> {
        if self.spill.is_none() {
            let f = tempfile::tempfile()
                .map_err(|e| Error::io_context("creating the overlay spill file", e))?;
            self.spill = Some(f);
        }
        let f = self.spill.as_ref().ok_or_else(|| spill_err(missing()))?;
        Ok((f, (slot - MEMORY_SLOTS) * OVERLAY_BLOCK))
    }

    fn read_slot(&mut self, slot: u64, within: usize, buf: &mut [u8]) -> Result<()> {
        if slot < MEMORY_SLOTS {
            let b = self
                .memory
                .get(slot as usize)
                .ok_or_else(|| spill_err(missing()))?;
            buf.copy_from_slice(&b[within..within + buf.len()]);
            return Ok(());
        }
        let (f, at) = self.spill_at(slot)?;
        f.read_exact_at(buf, at + within as u64).map_err(spill_err)
    }

    fn write_slot(&mut self, slot: u64, within: usize, data: &[u8]) -> Result<()> {
        if slot < MEMORY_SLOTS {
            let s = slot as usize;
            while self.memory.len() <= s {
                self.memory
                    .push(vec![0u8; OVERLAY_BLOCK as usize].into_boxed_slice());
            }
            self.memory[s][within..within + data.len()].copy_from_slice(data);
            return Ok(());
        }
        let (f, at) = self.spill_at(slot)?;
        f.write_all_at(data, at + within as u64).map_err(spill_err)
    }
}

fn missing() -> std::io::Error {
    std::io::Error::other("overlay slot missing")
}

impl<B: BlockDevice> std::fmt::Debug for Overlay<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Overlay({}, {} blocks changed)",
            self.base.describe(),
            self.lock().index.len()
        )
    }
}

impl<B: BlockDevice> Overlay<B> {
    /// An overlay with no changes yet.
    pub fn new(base: B) -> Result<Self> {
        Ok(Overlay {
            base,
            state: Mutex::new(State {
                index: BTreeMap::new(),
                next_slot: 0,
                memory: Vec::new(),
                spill: None,
            }),
        })
    }

    /// The device underneath.
    pub fn base(&self) -> &B {
        &self.base
    }

    /// Numbers of the blocks written so far, ascending. A block written
    /// back to its original bytes is still listed; [`changed_ranges`]
    /// compares with the base.
    ///
    /// [`changed_ranges`]: Overlay::changed_ranges
    pub fn written_blocks(&self) -> Vec<u64> {
        self.lock().index.keys().copied().collect()
    }

    /// Byte ranges `(offset, len)` whose content differs from the base,
    /// merged where adjacent, ascending.
    pub fn changed_ranges(&self) -> Result<Vec<(u64, u64)>> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut ours = vec![0u8; OVERLAY_BLOCK as usize];
        let mut theirs = vec![0u8; OVERLAY_BLOCK as usize];
        for block in self.written_blocks() {
            let (off, len) = self.block_span(block);
            let len_us = len as usize;
            self.read_at(off, &mut ours[..len_us])?;
            self.base.read_at(off, &mut theirs[..len_us])?;
            if ours[..len_us] == theirs[..len_us] {
                continue;
            }
            match out.last_mut() {
                Some((o, l)) if *o + *l == off => *l += len,
                _ => out.push((off, len)),
            }
        }
        Ok(out)
    }

    /// Forgets the changes to every overlay block that lies wholly inside
    /// one of the byte ranges `(offset, len)`: they read as the base again
    /// and leave the delta. For blocks that end free in a filesystem (its
    /// free-space map), so a scrubbed-then-freed block travels neither as
    /// zeros nor as its earlier bytes. Returns how many blocks were dropped.
    pub fn drop_ranges(&self, ranges: &[(u64, u64)]) -> usize {
        let mut state = self.lock();
        let mut dropped = 0;
        for &(off, len) in ranges {
            let end = off.saturating_add(len).min(self.base.size());
            let first = off.div_ceil(OVERLAY_BLOCK);
            let blocks: Vec<u64> = state
                .index
                .range(first..)
                .map(|(&b, _)| b)
                .take_while(|&b| {
                    let (boff, blen) = self.block_span(b);
                    boff + blen <= end
                })
                .collect();
            for b in blocks {
                // The spill slot is not reused; the spill file is temporary.
                state.index.remove(&b);
                dropped += 1;
            }
        }
        dropped
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a map and a file; a panic elsewhere cannot corrupt it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Byte offset and length of `block` (the last block may be short).
    fn block_span(&self, block: u64) -> (u64, u64) {
        let off = block * OVERLAY_BLOCK;
        (off, OVERLAY_BLOCK.min(self.base.size() - off))
    }
}

fn spill_err(e: std::io::Error) -> Error {
    Error::io_context("overlay spill file", e)
}

impl<B: BlockDevice> BlockDevice for Overlay<B> {
    fn size(&self) -> u64 {
        self.base.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(offset, buf.len(), self.size())?;
        let mut state = self.lock();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / OVERLAY_BLOCK;
            let within = pos % OVERLAY_BLOCK;
            let n = ((OVERLAY_BLOCK - within) as usize).min(buf.len() - done);
            match state.index.get(&block).copied() {
                Some(slot) => state.read_slot(slot, within as usize, &mut buf[done..done + n])?,
                None => {
                    // Extend the base read over following unchanged blocks.
                    let next_changed = state
                        .index
                        .range(block + 1..)
                        .next()
                        .map_or(u64::MAX, |(b, _)| b * OVERLAY_BLOCK);
                    let end = (offset + buf.len() as u64).min(next_changed);
                    let n = (end - pos) as usize;
                    self.base.read_at(pos, &mut buf[done..done + n])?;
                    done += n;
                    continue;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_bounds(offset, buf.len(), self.size())?;
        let mut state = self.lock();
        let mut block_buf = vec![0u8; OVERLAY_BLOCK as usize];
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / OVERLAY_BLOCK;
            let within = (pos % OVERLAY_BLOCK) as usize;
            let n = (OVERLAY_BLOCK as usize - within).min(buf.len() - done);
            let slot = match state.index.get(&block) {
                Some(&slot) => slot,
                None => {
                    let slot = state.next_slot;
                    state.next_slot += 1;
                    let (boff, blen) = self.block_span(block);
                    let blen = blen as usize;
                    if n < blen {
                        // Partial write: copy the rest of the block up first.
                        self.base.read_at(boff, &mut block_buf[..blen])?;
                    }
                    block_buf[blen..].fill(0);
                    block_buf[within..within + n].copy_from_slice(&buf[done..done + n]);
                    state.write_slot(slot, 0, &block_buf)?;
                    state.index.insert(block, slot);
                    done += n;
                    continue;
                }
            };
            state.write_slot(slot, within, &buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        // Changes live in memory or a temporary file by design; durability comes from
        // saving them as a delta or an image.
        Ok(())
    }

    fn describe(&self) -> String {
        format!("overlay on {}", self.base.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;

    #[test]
    fn dropped_blocks_read_as_the_base_and_leave_the_delta() {
        let base = MemDevice::from_vec(vec![1u8; 5 * OVERLAY_BLOCK as usize]);
        let ov = Overlay::new(base).unwrap();
        ov.write_at(0, &[9u8; 3 * OVERLAY_BLOCK as usize]).unwrap();
        // Only block 1 lies wholly inside the range.
        assert_eq!(ov.drop_ranges(&[(100, 2 * OVERLAY_BLOCK)]), 1);
        assert_eq!(ov.written_blocks(), vec![0, 2]);
        let mut b = vec![0u8; OVERLAY_BLOCK as usize];
        ov.read_at(OVERLAY_BLOCK, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 1));
        // A new block after the drop gets a fresh slot, not block 2's.
        ov.write_at(4 * OVERLAY_BLOCK, &[5u8; 10]).unwrap();
        ov.read_at(2 * OVERLAY_BLOCK, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 9));
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 256) as u8).collect()
    }

    #[test]
    fn reads_see_writes_and_base_is_untouched() {
        // A size that is not a multiple of the block size.
        let base_bytes = pattern(5 * 4096 + 1000);
        let base = MemDevice::from_vec(base_bytes.clone());
        let ov = Overlay::new(&base).unwrap();
        let mut model = base_bytes.clone();
        for (off, len, val) in [
            (10, 5, 1u8),
            (4090, 20, 2),
            (8192, 4096, 3),
            (20_480 + 900, 100, 4),
        ] {
            ov.write_at(off, &vec![val; len]).unwrap();
            model[off as usize..off as usize + len].fill(val);
        }
        let mut all = vec![0u8; model.len()];
        ov.read_at(0, &mut all).unwrap();
        assert_eq!(all, model);
        let mut mid = vec![0u8; 5000];
        ov.read_at(4000, &mut mid).unwrap();
        assert_eq!(mid, model[4000..9000]);
        assert_eq!(base.to_vec(), base_bytes);
        assert_eq!(ov.written_blocks(), vec![0, 1, 2, 5]);
        assert_eq!(
            ov.changed_ranges().unwrap(),
            vec![(0, 3 * 4096), (5 * 4096, 1000)]
        );
        assert!(ov.write_at(model.len() as u64 - 1, &[0, 0]).is_err());
    }

    #[test]
    fn changes_past_the_memory_limit_spill_and_read_back() {
        let blocks = MEMORY_SLOTS as usize + 8;
        let base = MemDevice::from_vec(pattern(blocks * 4096));
        let ov = Overlay::new(&base).unwrap();
        let mut model = pattern(blocks * 4096);
        // Every block changed (so some spill), then partial rewrites of
        // blocks on both sides of the limit.
        for b in 0..blocks {
            let v = vec![(b % 200) as u8 + 1; 4096];
            ov.write_at((b * 4096) as u64, &v).unwrap();
            model[b * 4096..(b + 1) * 4096].copy_from_slice(&v);
        }
        for off in [100usize, (MEMORY_SLOTS as usize - 1) * 4096 + 4000] {
            ov.write_at(off as u64, &[0xAB; 300]).unwrap();
            model[off..off + 300].fill(0xAB);
        }
        let mut all = vec![0u8; model.len()];
        ov.read_at(0, &mut all).unwrap();
        assert!(all == model);
        assert!(ov.lock().spill.is_some());
        assert_eq!(ov.written_blocks().len(), blocks);
    }

    #[test]
    fn rewriting_original_bytes_is_not_a_change() {
        let base = MemDevice::from_vec(pattern(3 * 4096));
        let ov = Overlay::new(&base).unwrap();
        let orig = pattern(3 * 4096);
        ov.write_at(4096, &orig[4096..4200]).unwrap();
        assert_eq!(ov.written_blocks(), vec![1]);
        assert!(ov.changed_ranges().unwrap().is_empty());
    }
}
