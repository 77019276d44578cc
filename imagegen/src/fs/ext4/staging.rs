//! New file data held back until the commit's data phase.
//!
//! An operation that writes file contents reads its whole source into a
//! [`Staged`] set before anything reaches the device: a short source, a read
//! error or any later refusal then leaves the image byte-identical. The
//! commit writes the set first ("data", in block order), then metadata —
//! the order of e2fsprogs' `ext2fs_flush2`, so a crash between the two leaves
//! new data in blocks nothing references yet.
//!
//! Memory is bounded: the first [`MEM_LIMIT`] bytes of a transaction stay
//! in memory, the rest goes, in chunks of at most one read buffer, to an
//! anonymous spool file that the operating system deletes on drop. The
//! memory is one arena kept from change to change, and sources are read
//! straight into it ([`Staged::stage_with`]), so staging costs no copy and,
//! once warm, no page faults.
//!
//! # Interface for the commit
//! - [`Ext4Fs::write_data_phase`](super::Ext4Fs) writes every staged run to
//!   the device (block order) and empties the set; the commit calls it before
//!   any metadata block, then flushes.
//! - Reads during the transaction see staged data through
//!   [`Staged::overlay`], so a batch can read back a file it wrote.

use crate::block::BlockDevice;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Bytes of staged data kept in memory per transaction; more spills to a file.
pub const MEM_LIMIT: usize = 64 << 20;

enum Where {
    /// Byte offset in the arena.
    Mem(usize),
    /// Byte offset in the spool file.
    Spool(u64),
}

struct Run {
    bytes: u64,
    at: Where,
}

/// Data runs keyed by first block; each run is a whole number of blocks.
#[derive(Default)]
pub struct Staged {
    runs: BTreeMap<u64, Run>,
    /// Staged bytes kept in memory, runs back to back.
    arena: Vec<u8>,
    spool: Option<File>,
    spool_len: u64,
}

/// A point to roll a [`Staged`] set back to (for one failed operation in a batch).
pub struct Mark {
    keys: std::collections::BTreeSet<u64>,
    mem: usize,
    spool_len: u64,
}

fn spool_err(e: std::io::Error) -> Error {
    Error::io_context("ext4 data spool file", e)
}

impl Staged {
    /// Stages `len` bytes (a whole number of blocks) for block `first`
    /// onwards, filled by `fill` directly in their staging place.
    pub fn stage_with(
        &mut self,
        first: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        if self.arena.len() + len <= MEM_LIMIT && !self.runs.contains_key(&first) {
            let at = self.arena.len();
            self.arena.resize(at + len, 0);
            if let Err(e) = fill(&mut self.arena[at..]) {
                self.arena.truncate(at);
                return Err(e);
            }
            self.runs.insert(
                first,
                Run {
                    bytes: len as u64,
                    at: Where::Mem(at),
                },
            );
            return Ok(());
        }
        let mut buf = vec![0u8; len];
        fill(&mut buf)?;
        self.stage(first, &buf)
    }

    /// Stages `data` (a whole number of blocks) for block `first` onwards.
    /// Later stagings win where they overlap earlier ones.
    pub fn stage(&mut self, first: u64, data: &[u8]) -> Result<()> {
        // A run already starting here and at least as long is patched in
        // place, so a one-block patch never cuts a longer run short.
        if let Some(run) = self.runs.get_mut(&first) {
            if run.bytes >= data.len() as u64 {
                match &mut run.at {
                    Where::Mem(at) => self.arena[*at..*at + data.len()].copy_from_slice(data),
                    Where::Spool(off) => {
                        let spool = self
                            .spool
                            .as_ref()
                            .ok_or_else(|| spool_err(std::io::Error::other("no spool")))?;
                        spool.write_all_at(data, *off).map_err(spool_err)?;
                    }
                }
                return Ok(());
            }
        }
        let at = if self.arena.len() + data.len() <= MEM_LIMIT {
            let at = self.arena.len();
            self.arena.extend_from_slice(data);
            Where::Mem(at)
        } else {
            if self.spool.is_none() {
                self.spool = Some(tempfile::tempfile().map_err(spool_err)?);
            }
            let spool = self
                .spool
                .as_ref()
                .ok_or_else(|| spool_err(std::io::Error::other("no spool")))?;
            let off = self.spool_len;
            spool.write_all_at(data, off).map_err(spool_err)?;
            self.spool_len += data.len() as u64;
            Where::Spool(off)
        };
        self.runs.insert(
            first,
            Run {
                bytes: data.len() as u64,
                at,
            },
        );
        Ok(())
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Where the set stands now.
    pub fn mark(&self) -> Mark {
        Mark {
            keys: self.runs.keys().copied().collect(),
            mem: self.arena.len(),
            spool_len: self.spool_len,
        }
    }

    /// Drops what was staged after `mark`.
    pub fn rollback(&mut self, mark: Mark) {
        self.runs.retain(|b, _| mark.keys.contains(b));
        self.arena.truncate(mark.mem);
        self.spool_len = mark.spool_len;
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.runs.clear();
        // Keeps the arena's capacity for the next change.
        self.arena.clear();
        self.spool_len = 0;
    }

    /// Copies staged bytes over `buf`, which holds the device's bytes from
    /// byte `offset` (block size `bs`).
    pub fn overlay(&self, offset: u64, buf: &mut [u8], bs: u64) -> Result<()> {
        if self.runs.is_empty() || buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let first_block = offset / bs;
        // The run that starts at or before the first block may reach into it.
        let start_key = self
            .runs
            .range(..=first_block)
            .next_back()
            .map_or(first_block, |(&b, _)| b);
        for (&b, run) in self.runs.range(start_key..) {
            let rs = b * bs;
            let re = rs + run.bytes;
            if rs >= end {
                break;
            }
            let (from, to) = (rs.max(offset), re.min(end));
            if from >= to {
                continue;
            }
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            match &run.at {
                Where::Mem(at) => dst.copy_from_slice(
                    &self.arena[at + (from - rs) as usize..at + (to - rs) as usize],
                ),
                Where::Spool(off) => {
                    let spool = self
                        .spool
                        .as_ref()
                        .ok_or_else(|| spool_err(std::io::Error::other("no spool")))?;
                    spool
                        .read_exact_at(dst, off + (from - rs))
                        .map_err(spool_err)?;
                }
            }
        }
        Ok(())
    }

    /// Writes every run to `dev` in block order and empties the set; runs
    /// adjacent on disk and in memory go out as one write (up to 8 MiB).
    pub fn write_to(&mut self, dev: &dyn BlockDevice, bs: u64) -> Result<()> {
        let mut buf = Vec::new();
        // (first block, arena offset, bytes) of the memory run being merged.
        let mut pending: Option<(u64, usize, usize)> = None;
        let flush = |p: &mut Option<(u64, usize, usize)>, arena: &[u8]| -> Result<()> {
            if let Some((b, at, n)) = p.take() {
                dev.write_at(b * bs, &arena[at..at + n])?;
            }
            Ok(())
        };
        for (&b, run) in &self.runs {
            match &run.at {
                Where::Mem(at) => {
                    let n = run.bytes as usize;
                    match &mut pending {
                        Some((pb, pat, pn))
                            if *pb + (*pn as u64) / bs == b
                                && *pat + *pn == *at
                                && *pn < 8 << 20 =>
                        {
                            *pn += n
                        }
                        _ => {
                            flush(&mut pending, &self.arena)?;
                            pending = Some((b, *at, n));
                        }
                    }
                }
                Where::Spool(off) => {
                    flush(&mut pending, &self.arena)?;
                    let spool = self
                        .spool
                        .as_ref()
                        .ok_or_else(|| spool_err(std::io::Error::other("no spool")))?;
                    buf.resize(run.bytes as usize, 0);
                    spool.read_exact_at(&mut buf, *off).map_err(spool_err)?;
                    dev.write_at(b * bs, &buf)?;
                }
            }
        }
        flush(&mut pending, &self.arena)?;
        self.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;

    #[test]
    fn overlay_and_write_see_the_same_bytes() {
        let mut s = Staged::default();
        s.stage(2, &[7u8; 2048]).unwrap();
        s.stage(5, &[9u8; 1024]).unwrap();
        let mut buf = vec![0u8; 6 * 1024];
        s.overlay(0, &mut buf, 1024).unwrap();
        assert!(buf[2048..4096].iter().all(|&b| b == 7));
        assert!(buf[5120..].iter().all(|&b| b == 9));
        assert!(buf[4096..5120].iter().all(|&b| b == 0));
        let mut part = vec![0u8; 100];
        s.overlay(3 * 1024 + 10, &mut part, 1024).unwrap();
        assert!(part.iter().all(|&b| b == 7));
        // A patch at a run's first block keeps the rest of the run.
        s.stage(2, &[8u8; 1024]).unwrap();
        buf[2048..3072].fill(8);
        let dev = MemDevice::zeroed(8 * 1024);
        s.write_to(&dev, 1024).unwrap();
        assert!(s.is_empty());
        let mut back = vec![0u8; 6 * 1024];
        dev.read_at(0, &mut back).unwrap();
        assert_eq!(back, buf);
    }
}
