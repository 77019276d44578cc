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
//! anonymous spool file that the operating system deletes on drop.
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
    Mem(Vec<u8>),
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
    mem: usize,
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
    /// Stages `data` (a whole number of blocks) for block `first` onwards.
    /// Later stagings win where they overlap earlier ones.
    pub fn stage(&mut self, first: u64, data: &[u8]) -> Result<()> {
        // A run already starting here and at least as long is patched in
        // place, so a one-block patch never cuts a longer run short.
        if let Some(run) = self.runs.get_mut(&first) {
            if run.bytes >= data.len() as u64 {
                match &mut run.at {
                    Where::Mem(v) => v[..data.len()].copy_from_slice(data),
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
        let at = if self.mem + data.len() <= MEM_LIMIT {
            self.mem += data.len();
            Where::Mem(data.to_vec())
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
            mem: self.mem,
            spool_len: self.spool_len,
        }
    }

    /// Drops what was staged after `mark`.
    pub fn rollback(&mut self, mark: Mark) {
        self.runs.retain(|b, _| mark.keys.contains(b));
        self.mem = mark.mem;
        self.spool_len = mark.spool_len;
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.mem = 0;
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
                Where::Mem(v) => dst.copy_from_slice(&v[(from - rs) as usize..(to - rs) as usize]),
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

    /// Writes every run to `dev` in block order and empties the set.
    pub fn write_to(&mut self, dev: &dyn BlockDevice, bs: u64) -> Result<()> {
        let mut buf = Vec::new();
        for (&b, run) in &self.runs {
            match &run.at {
                Where::Mem(v) => dev.write_at(b * bs, v)?,
                Where::Spool(off) => {
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
