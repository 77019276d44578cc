//! The internal jbd2 journal (inode 8), written the way the kernel writes
//! it, so a change survives a crash whole or not at all.
//!
//! A change's metadata goes to the log as one transaction: descriptor
//! blocks whose tags name the home block of each logged copy, the copies,
//! then a commit block. Once the commit block is durable, replay by the
//! kernel or `e2fsck` gives the new state; before, the log holds no complete
//! transaction and the old state stands. The engine then writes the blocks
//! home (checkpoint) and marks the log empty again, so every transaction
//! starts at the log's first block and no revoke records are ever needed.
//!
//! On-disk format (all big-endian): a 12-byte header (magic `C03B3998`,
//! block type, transaction sequence) on every log block but the copies;
//! tags of 8/12 bytes (16 with `csum_v3`) carrying the home block, flags
//! (escaped, same UUID as the previous tag, last tag) and the copy's
//! crc32c; a crc32c tail on descriptors and a crc32c in the commit block
//! when the journal has `csum_v2`/`csum_v3`. A copy whose first word is the
//! magic is logged with that word zeroed and the escape flag set.
//!
//! Journals this engine does not write (`fast_commit`, `async_commit`, the
//! old `checksum` v1, unknown features, an external journal) are left
//! alone: changes fall back to the ordered commit without a journal (see
//! `engine`), which marks the filesystem not clean while it runs.

use super::engine::Ext4Fs;
use super::superblock::compat;
use crate::block::BlockDevice;
use crate::fs::{Extent, Timestamp};
use mkext4::csum::crc32c_raw;

const MAGIC: u32 = 0xC03B_3998;
const DESCRIPTOR_BLOCK: u32 = 1;
const COMMIT_BLOCK: u32 = 2;
const SUPERBLOCK_V1: u32 = 3;
const SUPERBLOCK_V2: u32 = 4;

const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
/// Incompatible journal features whose journals we write.
const INCOMPAT_WRITE: u32 = INCOMPAT_REVOKE | INCOMPAT_64BIT | INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3;

const FLAG_ESCAPE: u32 = 1;
const FLAG_SAME_UUID: u32 = 2;
const FLAG_LAST_TAG: u32 = 8;

/// The journal's inode number field in the ext4 superblock.
const SB_JOURNAL_INUM: usize = 0xE0;

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn put_be32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn header(buf: &mut [u8], kind: u32, sequence: u32) {
    put_be32(buf, 0, MAGIC);
    put_be32(buf, 4, kind);
    put_be32(buf, 8, sequence);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Csum {
    None,
    V2,
    V3,
}

/// A journal this engine can commit through.
#[derive(Debug, Clone)]
pub(super) struct Journal {
    /// Where the journal's blocks are (logical = journal block number).
    runs: Vec<Extent>,
    block_size: usize,
    /// Log blocks are `first..maxlen`.
    first: u32,
    maxlen: u32,
    /// The sequence number of the next transaction.
    sequence: u32,
    csum: Csum,
    wide_tags: bool,
    uuid: [u8; 16],
    /// `crc32c(!0, uuid)`, the seed of every journal checksum.
    seed: u32,
    /// Journal block 0 as read, patched for each update.
    sb: Vec<u8>,
}

/// One transaction, ready to write.
pub(super) struct Transaction {
    /// Descriptor blocks and logged copies: `(device byte offset, bytes)`.
    pub log: Vec<(u64, Vec<u8>)>,
    /// The journal superblock pointing at the transaction.
    pub open: (u64, Vec<u8>),
    /// The commit block.
    pub commit: (u64, Vec<u8>),
    /// The journal superblock marking the log empty again, after checkpoint.
    pub close: (u64, Vec<u8>),
}

impl Journal {
    /// The journal of `fs`, if it has an internal one this engine writes.
    /// `Ok(None)`: no journal, or one we leave alone (changes take the
    /// ordered path). `Err`: why the filesystem must not be changed at all.
    pub(super) fn load<D: BlockDevice>(fs: &Ext4Fs<D>) -> Result<Option<Journal>, String> {
        let sb = &fs.sb;
        if !sb.has_compat(compat::HAS_JOURNAL) {
            return Ok(None);
        }
        let inum = super::bytes::u32_at(&sb.raw, SB_JOURNAL_INUM);
        if inum == 0 {
            // An external journal: nothing of it lives here.
            return Ok(None);
        }
        let bad = |why: String| format!("its journal (inode {inum}) {why}");
        let inode = fs
            .read_inode(inum)
            .map_err(|e| bad(format!("cannot be read: {e}")))?;
        let tree = fs
            .map(inum, &inode)
            .map_err(|e| bad(format!("cannot be mapped: {e}")))?;
        let runs = tree.extents;
        let bs = fs.sb.block_size;
        if let Some(e) = runs.iter().find(|e| {
            e.physical < fs.sb.first_data_block
                || e.physical
                    .checked_add(e.len)
                    .is_none_or(|end| end > fs.sb.blocks_count)
        }) {
            return Err(bad(format!(
                "maps blocks {}+{} outside the filesystem",
                e.physical, e.len
            )));
        }
        let first_phys = runs
            .iter()
            .find(|e| e.logical == 0 && !e.uninit)
            .map(|e| e.physical)
            .ok_or_else(|| bad("has no block 0".into()))?;
        let raw = fs
            .read_block(first_phys)
            .map_err(|e| bad(format!("superblock cannot be read: {e}")))?;
        if be32(&raw, 0) != MAGIC {
            return Err(bad("superblock has no jbd2 magic".into()));
        }
        let version = be32(&raw, 4);
        if version != SUPERBLOCK_V1 && version != SUPERBLOCK_V2 {
            return Err(bad(format!("superblock has block type {version}")));
        }
        if u64::from(be32(&raw, 0xC)) != bs {
            return Err(bad(format!(
                "block size {} differs from the filesystem's {bs}",
                be32(&raw, 0xC)
            )));
        }
        let (maxlen, first) = (be32(&raw, 0x10), be32(&raw, 0x14));
        let mapped: u64 = runs
            .iter()
            .filter(|e| !e.uninit)
            .map(|e| e.len)
            .sum::<u64>();
        let contiguous_from_zero = {
            let mut sorted: Vec<&Extent> = runs.iter().collect();
            sorted.sort_by_key(|e| e.logical);
            let mut next = 0u64;
            for e in sorted {
                if e.logical != next || e.uninit {
                    break;
                }
                next += e.len;
            }
            next
        };
        if first == 0 || first >= maxlen || u64::from(maxlen) > contiguous_from_zero {
            return Err(bad(format!(
                "superblock says {maxlen} blocks from {first}, the inode maps {mapped}"
            )));
        }
        if be32(&raw, 0x1C) != 0 {
            return Err(bad("holds transactions that were never replayed (mount the filesystem once or run e2fsck)".into()));
        }
        if be32(&raw, 0x20) != 0 {
            return Err(bad(format!(
                "recorded error {} (run e2fsck)",
                be32(&raw, 0x20) as i32
            )));
        }
        let (compat_f, incompat_f) = if version == SUPERBLOCK_V2 {
            (be32(&raw, 0x24), be32(&raw, 0x28))
        } else {
            (0, 0)
        };
        let uuid: [u8; 16] = raw[0x30..0x40].try_into().expect("16-byte slice");
        let csum = if incompat_f & INCOMPAT_CSUM_V3 != 0 {
            Csum::V3
        } else if incompat_f & INCOMPAT_CSUM_V2 != 0 {
            Csum::V2
        } else {
            Csum::None
        };
        if csum != Csum::None && journal_sb_csum(&raw) != be32(&raw, 0xFC) {
            return Err(bad("superblock checksum mismatch".into()));
        }
        if compat_f != 0 || incompat_f & !INCOMPAT_WRITE != 0 {
            // fast_commit, async_commit, checksum v1 or newer: leave it be.
            return Ok(None);
        }
        let wide_tags = incompat_f & INCOMPAT_64BIT != 0;
        if !wide_tags && fs.sb.blocks_count > u64::from(u32::MAX) {
            return Ok(None);
        }
        let mut sb = raw;
        sb.truncate(bs as usize);
        Ok(Some(Journal {
            runs,
            block_size: bs as usize,
            first,
            maxlen,
            sequence: be32(&sb, 0x18),
            csum,
            wide_tags,
            uuid,
            seed: crc32c_raw(!0, &uuid),
            sb,
        }))
    }

    /// Device byte offset of journal block `n`.
    fn offset(&self, n: u32) -> u64 {
        let n = u64::from(n);
        let phys = self
            .runs
            .iter()
            .find(|e| (e.logical..e.logical + e.len).contains(&n))
            .map(|e| e.physical + (n - e.logical))
            .expect("journal blocks below maxlen were checked to be mapped");
        phys * self.block_size as u64
    }

    /// How many blocks one transaction may use (descriptors, copies, commit).
    pub(super) fn capacity(&self) -> u64 {
        u64::from(self.maxlen.saturating_sub(self.first))
    }

    /// Whether fs block `b` belongs to the journal.
    pub(super) fn contains(&self, b: u64) -> bool {
        self.runs
            .iter()
            .any(|e| (e.physical..e.physical + e.len).contains(&b))
    }

    fn tag_bytes(&self) -> usize {
        match (self.csum, self.wide_tags) {
            (Csum::V3, _) => 16,
            (Csum::V2, true) => 14,
            (Csum::V2, false) => 10,
            (Csum::None, true) => 12,
            (Csum::None, false) => 8,
        }
    }

    fn tail_bytes(&self) -> usize {
        if self.csum == Csum::None {
            0
        } else {
            4
        }
    }

    /// Tags that fit in one descriptor block (the first carries the UUID).
    fn tags_per_descriptor(&self) -> usize {
        let room = self.block_size - 12 - self.tail_bytes() - 16;
        room / self.tag_bytes()
    }

    /// The transaction that logs `blocks` (home block, new contents), or
    /// `None` when it does not fit in the log.
    pub(super) fn transaction(
        &self,
        blocks: &[(u64, Vec<u8>)],
        now: Timestamp,
    ) -> Option<Transaction> {
        let per = self.tags_per_descriptor();
        let descriptors = blocks.len().div_ceil(per);
        let needed = descriptors + blocks.len() + 1;
        if needed as u64 > u64::from(self.maxlen - self.first) {
            return None;
        }
        let seq = self.sequence;
        let bs = self.block_size;
        let tag_bytes = self.tag_bytes();
        let mut log = Vec::with_capacity(descriptors + blocks.len());
        let mut next = self.first;
        for chunk in blocks.chunks(per) {
            let mut desc = vec![0u8; bs];
            header(&mut desc, DESCRIPTOR_BLOCK, seq);
            let desc_at = next;
            next += 1;
            let mut copies = Vec::with_capacity(chunk.len());
            let mut pos = 12;
            for (i, (home, data)) in chunk.iter().enumerate() {
                let mut copy = data.clone();
                let mut flags = 0;
                if be32(&copy, 0) == MAGIC {
                    copy[..4].fill(0);
                    flags |= FLAG_ESCAPE;
                }
                if i > 0 {
                    flags |= FLAG_SAME_UUID;
                }
                if i + 1 == chunk.len() {
                    flags |= FLAG_LAST_TAG;
                }
                let tag = &mut desc[pos..pos + tag_bytes];
                put_be32(tag, 0, *home as u32);
                let csum = crc32c_raw(crc32c_raw(self.seed, &seq.to_be_bytes()), &copy);
                match self.csum {
                    Csum::V3 => {
                        put_be32(tag, 4, flags);
                        put_be32(tag, 8, (*home >> 32) as u32);
                        put_be32(tag, 12, csum);
                    }
                    _ => {
                        // t_checksum (16 bits, v2 only), t_flags (16 bits),
                        // then the high half of the block number.
                        if self.csum == Csum::V2 {
                            tag[4..6].copy_from_slice(&(csum as u16).to_be_bytes());
                        }
                        tag[6..8].copy_from_slice(&(flags as u16).to_be_bytes());
                        if self.wide_tags {
                            put_be32(tag, 8, (*home >> 32) as u32);
                        }
                    }
                }
                pos += tag_bytes;
                if i == 0 {
                    desc[pos..pos + 16].copy_from_slice(&self.uuid);
                    pos += 16;
                }
                copies.push((self.offset(next), copy));
                next += 1;
            }
            if self.csum != Csum::None {
                let c = crc32c_raw(self.seed, &desc);
                put_be32(&mut desc, bs - 4, c);
            }
            log.push((self.offset(desc_at), desc));
            log.extend(copies);
        }
        let mut commit = vec![0u8; bs];
        header(&mut commit, COMMIT_BLOCK, seq);
        commit[0x30..0x38].copy_from_slice(&(now.secs.max(0) as u64).to_be_bytes());
        put_be32(&mut commit, 0x38, now.nanos);
        if self.csum != Csum::None {
            let c = crc32c_raw(self.seed, &commit);
            put_be32(&mut commit, 0x10, c);
        }
        Some(Transaction {
            log,
            open: self.superblock(self.first, seq),
            commit: (self.offset(next), commit),
            close: self.superblock(0, seq.wrapping_add(1)),
        })
    }

    /// The journal superblock with log start `start` and next sequence `seq`.
    fn superblock(&self, start: u32, seq: u32) -> (u64, Vec<u8>) {
        let mut sb = self.sb.clone();
        put_be32(&mut sb, 0x18, seq);
        put_be32(&mut sb, 0x1C, start);
        if self.csum != Csum::None {
            let c = journal_sb_csum(&sb);
            put_be32(&mut sb, 0xFC, c);
        }
        (self.offset(0), sb)
    }

    /// Records that the transaction was checkpointed and the log emptied.
    pub(super) fn advance(&mut self, close: &[u8]) {
        self.sb.copy_from_slice(close);
        self.sequence = self.sequence.wrapping_add(1);
    }
}

/// crc32c of the 1024-byte journal superblock with its checksum field zeroed.
fn journal_sb_csum(sb: &[u8]) -> u32 {
    let c = crc32c_raw(!0, &sb[..0xFC]);
    let c = crc32c_raw(c, &[0; 4]);
    crc32c_raw(c, &sb[0x100..0x400])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(csum: Csum, wide_tags: bool) -> Journal {
        let mut sb = vec![0u8; 1024];
        header(&mut sb, SUPERBLOCK_V2, 0);
        Journal {
            runs: vec![Extent {
                logical: 0,
                physical: 100,
                len: 64,
                uninit: false,
            }],
            block_size: 1024,
            first: 1,
            maxlen: 64,
            sequence: 7,
            csum,
            wide_tags,
            uuid: [9; 16],
            seed: crc32c_raw(!0, &[9; 16]),
            sb,
        }
    }

    #[test]
    fn a_copy_starting_with_the_magic_is_escaped() {
        let j = journal(Csum::V3, true);
        let mut block = vec![5u8; 1024];
        block[..4].copy_from_slice(&MAGIC.to_be_bytes());
        let t = j
            .transaction(&[(3, block.clone())], Timestamp::default())
            .unwrap();
        let (desc, copy) = (&t.log[0].1, &t.log[1].1);
        assert_eq!(&copy[..4], &[0; 4]);
        assert_eq!(&copy[4..], &block[4..]);
        let flags = be32(desc, 12 + 4);
        assert_eq!(flags, FLAG_ESCAPE | FLAG_LAST_TAG);
        // The tag checksum covers the copy as logged.
        let want = crc32c_raw(crc32c_raw(j.seed, &7u32.to_be_bytes()), copy);
        assert_eq!(be32(desc, 12 + 12), want);
        assert_eq!(t.commit.0, 103 * 1024);
    }

    #[test]
    fn tags_spill_into_further_descriptors() {
        for (csum, wide) in [
            (Csum::None, false),
            (Csum::None, true),
            (Csum::V2, false),
            (Csum::V3, true),
        ] {
            let mut j = journal(csum, wide);
            j.maxlen = 512;
            j.runs[0].len = 512;
            let per = j.tags_per_descriptor();
            let blocks: Vec<(u64, Vec<u8>)> =
                (0..per as u64 + 1).map(|b| (b, vec![0; 1024])).collect();
            let t = j.transaction(&blocks, Timestamp::default()).unwrap();
            assert_eq!(t.log.len(), blocks.len() + 2, "{csum:?}");
            let second = &t.log[per + 1].1;
            assert_eq!(be32(second, 4), DESCRIPTOR_BLOCK);
            assert_eq!(be32(second, 8), 7);
            // Everything fits before the checksum tail.
            let used = 12 + 16 + per * j.tag_bytes();
            assert!(used <= 1024 - j.tail_bytes());
            assert!(used + j.tag_bytes() > 1024 - j.tail_bytes());
        }
    }

    #[test]
    fn a_transaction_larger_than_the_log_is_refused() {
        let j = journal(Csum::None, false);
        let blocks: Vec<(u64, Vec<u8>)> = (0..62).map(|b| (b, vec![0; 1024])).collect();
        assert!(j.transaction(&blocks, Timestamp::default()).is_none());
        assert!(j.transaction(&blocks[..61], Timestamp::default()).is_some());
    }
}
