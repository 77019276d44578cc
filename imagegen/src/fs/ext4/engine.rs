//! The `Ext4Fs` handle: block cache, transactions, inode I/O and block
//! mapping. Higher-level operations live in `ops`, allocation in `alloc`.
//!
//! Every change runs inside [`Ext4Fs::change`]: metadata blocks, group
//! descriptors and the superblock are changed only in memory, and are
//! written (data first, superblock last) when the whole operation has
//! succeeded. Any error discards them, so a failed operation leaves the
//! image exactly as it was. New file data is staged too (see `staging`) and
//! written as the commit's first phase, so not one byte reaches the device
//! before the whole operation has succeeded.
//!
//! [`Ext4Fs::batch`] runs several operations as one change: each one that
//! fails is undone by itself (the transaction state is snapshotted around
//! it), and everything commits once at the end.

use super::blockmap;
use super::extent::{self, ReadCtx, Tree};
use super::group::Groups;
use super::inode::{Inode, FL_EXTENTS, FL_INLINE_DATA};
use super::superblock::{ro_compat, Superblock, SB_OFFSET};
use crate::block::BlockDevice;
use crate::fs::{Extent, Timestamp};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// An ext4 (or ext2/ext3) filesystem on a block device, read and changed in place.
pub struct Ext4Fs<D: BlockDevice> {
    pub(super) dev: D,
    pub(super) sb: Superblock,
    pub(super) groups: Groups,
    /// Metadata blocks changed by the running operation.
    pub(super) dirty: BTreeMap<u64, Vec<u8>>,
    /// Blocks the running operation frees; released only at its end, so
    /// nothing allocated in the same operation overwrites them.
    pub(super) pending_free: Vec<(u64, u64)>,
    /// Why this filesystem must not be changed, if so.
    pub(super) refusal: Option<String>,
    /// The time every change is stamped with, given by the caller.
    pub(super) now: Timestamp,
    /// New file data of the running operation, written at commit.
    pub(super) staged: super::staging::Staged,
    /// How many batches are open: changes inside one do not commit.
    pub(super) batch_depth: u32,
    /// Zero blocks the change frees ([`crate::fs::OpenOptions::scrub`]).
    pub(super) scrub: bool,
    /// Blocks freed by the running change, zeroed after its metadata when
    /// scrubbing.
    pub(super) scrub_runs: Vec<(u64, u64)>,
    /// Fixed metadata: never allocated, never freed (computed when writable).
    pub(super) fixed: super::fixed::Fixed,
}

impl<D: BlockDevice> Ext4Fs<D> {
    /// Opens the filesystem on `dev`, checking the superblock and group
    /// descriptors. Refuses unknown incompatible features, `encrypt`,
    /// `casefold`, `bigalloc`, `meta_bg` and block sizes other than 1/2/4 KiB.
    pub fn open(dev: D) -> Result<Self> {
        Self::open_mode(dev, true)
    }

    /// Like [`open`](Self::open); with `writable` false every change is refused.
    /// Changes are stamped with `SOURCE_DATE_EPOCH` or the clock, read once here.
    pub fn open_mode(dev: D, writable: bool) -> Result<Self> {
        let now = if writable {
            Timestamp::now()?
        } else {
            Timestamp::default()
        };
        Self::open_with(
            dev,
            crate::fs::OpenOptions {
                writable,
                now,
                scrub: false,
            },
        )
    }

    /// Opens with explicit options: whether changes are allowed, and the time
    /// every change is stamped with (the engine never reads a clock).
    pub fn open_with(dev: D, opts: crate::fs::OpenOptions) -> Result<Self> {
        let writable = opts.writable;
        let mut raw = vec![0u8; 1024];
        if dev.size() < SB_OFFSET + 1024 {
            return Err(Error::corrupt(
                "ext4 superblock",
                format!("{} is too small to hold one", dev.describe()),
            ));
        }
        dev.read_at(SB_OFFSET, &mut raw)?;
        let sb = Superblock::parse(raw, dev.size())?;
        let fs_bytes = sb.blocks_count.checked_mul(sb.block_size);
        if fs_bytes.is_none_or(|b| b > dev.size()) {
            return Err(Error::corrupt(
                "ext4 superblock",
                format!(
                    "{} blocks of {} bytes do not fit in {} ({} bytes): truncated image?",
                    sb.blocks_count,
                    sb.block_size,
                    dev.describe(),
                    dev.size()
                ),
            ));
        }
        let gdt_len = sb.gdt_blocks() * sb.block_size;
        if gdt_len > 64 << 20 {
            return Err(Error::corrupt(
                "ext4 superblock",
                format!("{} groups", sb.group_count),
            ));
        }
        let mut gdt = vec![0u8; gdt_len as usize];
        dev.read_at((sb.first_data_block + 1) * sb.block_size, &mut gdt)?;
        let groups = Groups::parse(gdt, &sb)?;
        let mut refusal = sb.write_refusal();
        if refusal.is_none() && (dev.is_read_only() || !writable) {
            refusal = Some(format!("{} is opened read-only", dev.describe()));
        }
        let mut fs = Ext4Fs {
            dev,
            sb,
            groups,
            dirty: BTreeMap::new(),
            pending_free: Vec::new(),
            refusal,
            now: opts.now,
            staged: Default::default(),
            batch_depth: 0,
            scrub: opts.scrub,
            scrub_runs: Vec::new(),
            fixed: Default::default(),
        };
        if fs.refusal.is_none() {
            match fs.compute_fixed() {
                Ok(f) => fs.fixed = f,
                Err(e) => fs.refusal = Some(e.to_string()),
            }
        }
        Ok(fs)
    }

    /// The underlying device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    pub(super) fn block_size(&self) -> u64 {
        self.sb.block_size
    }

    /// Reads one block, seeing the running operation's changes.
    pub(super) fn read_block(&self, b: u64) -> Result<Vec<u8>> {
        if let Some(buf) = self.dirty.get(&b) {
            return Ok(buf.clone());
        }
        if b >= self.sb.blocks_count {
            return Err(Error::corrupt(
                "ext4 block pointer",
                format!(
                    "block {b} is beyond the filesystem's {} blocks",
                    self.sb.blocks_count
                ),
            ));
        }
        let mut buf = vec![0u8; self.sb.block_size as usize];
        self.dev.read_at(b * self.sb.block_size, &mut buf)?;
        Ok(buf)
    }

    /// Stages a metadata block for the running operation's commit.
    pub(super) fn write_block(&mut self, b: u64, buf: Vec<u8>) {
        debug_assert_eq!(buf.len() as u64, self.sb.block_size);
        self.dirty.insert(b, buf);
    }

    /// Stages file data for newly allocated blocks `b..`; it reaches the
    /// device in the commit's data phase.
    pub(super) fn write_data(&mut self, b: u64, buf: &[u8]) -> Result<()> {
        self.staged.stage(b, buf)
    }

    /// The commit's data phase: writes the staged file data (block order).
    /// Nothing references these blocks until the metadata that follows.
    pub(super) fn write_data_phase(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.staged.write_to(&self.dev, self.sb.block_size)
    }

    /// After the metadata of a scrubbing change: zeroes the blocks it freed,
    /// so no earlier content survives in free space.
    pub(super) fn write_scrub_phase(&mut self) -> Result<()> {
        let bs = self.sb.block_size;
        let zeros = vec![0u8; (1 << 20).max(bs as usize)];
        for (b, n) in std::mem::take(&mut self.scrub_runs) {
            let (mut at, end) = (b * bs, (b + n) * bs);
            while at < end {
                let k = (end - at).min(zeros.len() as u64) as usize;
                self.dev.write_at(at, &zeros[..k])?;
                at += k as u64;
            }
        }
        Ok(())
    }

    /// Runs `f` — any number of operations — as one all-or-nothing change
    /// that commits once. An operation inside that fails is undone by
    /// itself, so `f` may handle its error and go on.
    pub fn batch<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        self.change(|fs| {
            fs.batch_depth += 1;
            let r = f(fs);
            fs.batch_depth -= 1;
            r
        })
    }

    /// Runs `f` as one all-or-nothing change.
    pub(super) fn change<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        if let Some(why) = &self.refusal {
            return Err(Error::unsupported(
                "ext4 change",
                format!("refusing to change {}: {why}", self.dev.describe()),
            ));
        }
        if self.batch_depth > 0 {
            return self.nested_change(f);
        }
        let saved = (self.sb.clone(), self.groups.clone());
        self.dirty.clear();
        self.pending_free.clear();
        self.staged.clear();
        self.scrub_runs.clear();
        let result = f(self).and_then(|r| {
            self.release_pending()?;
            self.commit()?;
            Ok(r)
        });
        if result.is_err() {
            (self.sb, self.groups) = saved;
            self.groups.dirty.clear();
        }
        self.dirty.clear();
        self.pending_free.clear();
        self.staged.clear();
        self.scrub_runs.clear();
        result
    }

    /// One operation inside a batch: undone alone when it fails.
    fn nested_change<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let saved = (
            self.sb.clone(),
            self.groups.clone(),
            self.dirty.clone(),
            self.pending_free.len(),
            self.staged.mark(),
        );
        let result = f(self);
        if result.is_err() {
            let (sb, groups, dirty, freed, mark) = saved;
            (self.sb, self.groups, self.dirty) = (sb, groups, dirty);
            self.pending_free.truncate(freed);
            self.staged.rollback(mark);
        }
        result
    }

    fn commit(&mut self) -> Result<()> {
        self.write_data_phase()?;
        let bs = self.sb.block_size;
        for (&b, buf) in &self.dirty {
            self.dev.write_at(b * bs, buf)?;
        }
        self.groups.seal(&self.sb);
        let gdt_start = (self.sb.first_data_block + 1) * bs;
        let per_block = (bs as usize) / self.sb.desc_size;
        let blocks: std::collections::BTreeSet<usize> = self
            .groups
            .dirty
            .iter()
            .map(|&g| g as usize / per_block)
            .collect();
        for blk in blocks {
            let off = blk * bs as usize;
            self.dev.write_at(
                gdt_start + off as u64,
                &self.groups.raw()[off..off + bs as usize],
            )?;
        }
        self.groups.dirty.clear();
        self.sb.seal();
        self.dev.write_at(SB_OFFSET, &self.sb.raw)?;
        self.write_scrub_phase()?;
        Ok(())
    }

    pub(super) fn huge_file(&self) -> bool {
        self.sb.has_ro_compat(ro_compat::HUGE_FILE)
    }

    fn inode_location(&self, ino: u32) -> Result<(u64, usize)> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(Error::corrupt(
                "ext4 inode number",
                format!("{ino} is outside 1..={}", self.sb.inodes_count),
            ));
        }
        let g = (ino - 1) / self.sb.inodes_per_group;
        let index = u64::from((ino - 1) % self.sb.inodes_per_group);
        let byte = index * self.sb.inode_size as u64;
        let block = self.groups.inode_table(g) + byte / self.sb.block_size;
        Ok((block, (byte % self.sb.block_size) as usize))
    }

    /// Reads an inode, checking its checksum on `metadata_csum` filesystems.
    pub(super) fn read_inode(&self, ino: u32) -> Result<Inode> {
        let (block, off) = self.inode_location(ino)?;
        let buf = self.read_block(block)?;
        let inode = Inode {
            raw: buf[off..off + self.sb.inode_size].to_vec(),
        };
        if self.sb.metadata_csum() && !inode.checksum_ok(self.sb.csum_seed, ino) {
            let g = (ino - 1) / self.sb.inodes_per_group;
            return Err(Error::corrupt(
                format!("ext4 inode {ino} (group {g})"),
                "checksum mismatch",
            ));
        }
        Ok(inode)
    }

    /// Stages an inode (sealing its checksum).
    pub(super) fn write_inode(&mut self, ino: u32, inode: &mut Inode) -> Result<()> {
        if self.sb.metadata_csum() {
            inode.seal(self.sb.csum_seed, ino);
        }
        let (block, off) = self.inode_location(ino)?;
        let mut buf = self.read_block(block)?;
        buf[off..off + self.sb.inode_size].copy_from_slice(&inode.raw);
        self.write_block(block, buf);
        Ok(())
    }

    /// Checksum seed of structures owned by an inode (extent, directory blocks).
    pub(super) fn inode_seed(&self, ino: u32, inode: &Inode) -> Option<u32> {
        self.sb
            .metadata_csum()
            .then(|| mkext4::csum::inode_seed(self.sb.csum_seed, ino, inode.generation()))
    }

    /// Where an inode's data lives. Inline-data inodes have no blocks.
    pub(super) fn map(&self, ino: u32, inode: &Inode) -> Result<Tree> {
        if inode.has_flag(FL_INLINE_DATA) {
            return Ok(Tree::default());
        }
        let seed = self.inode_seed(ino, inode);
        let mut read_block = |b: u64| self.read_block(b);
        let mut ctx = ReadCtx {
            block_size: self.sb.block_size,
            blocks_count: self.sb.blocks_count,
            csum_seed: seed,
            ino,
            read_block: &mut read_block,
        };
        if inode.has_flag(FL_EXTENTS) {
            extent::read(inode.i_block(), &mut ctx)
        } else {
            let nblocks = inode.size().div_ceil(self.sb.block_size);
            blockmap::read(inode.i_block(), nblocks, &mut ctx)
        }
    }

    /// Every block an inode owns, for freeing it: like [`map`](Self::map),
    /// but a legacy block map is walked whole, not only up to the size, so
    /// blocks past a directory's recorded size are not leaked.
    pub(super) fn map_all(&self, ino: u32, inode: &Inode) -> Result<Tree> {
        if inode.has_flag(FL_INLINE_DATA) || inode.has_flag(FL_EXTENTS) {
            return self.map(ino, inode);
        }
        let seed = self.inode_seed(ino, inode);
        let mut read_block = |b: u64| self.read_block(b);
        let mut ctx = ReadCtx {
            block_size: self.sb.block_size,
            blocks_count: self.sb.blocks_count,
            csum_seed: seed,
            ino,
            read_block: &mut read_block,
        };
        blockmap::read(
            inode.i_block(),
            blockmap::max_blocks(self.sb.block_size),
            &mut ctx,
        )
    }

    /// Streams `size` bytes of mapped data into `out`.
    pub(super) fn stream(
        &self,
        extents: &[Extent],
        size: u64,
        out: &mut dyn std::io::Write,
    ) -> Result<u64> {
        let bs = self.sb.block_size;
        let mut pos = 0u64;
        let mut buf = Vec::new();
        let write = |out: &mut dyn std::io::Write, data: &[u8]| {
            out.write_all(data)
                .map_err(|e| Error::io_context("writing file contents", e))
        };
        let zeros = vec![0u8; 1 << 16];
        let emit_zeros = |out: &mut dyn std::io::Write, mut n: u64| -> Result<()> {
            while n > 0 {
                let k = n.min(zeros.len() as u64) as usize;
                write(out, &zeros[..k])?;
                n -= k as u64;
            }
            Ok(())
        };
        for e in extents {
            let start = e.logical * bs;
            if start >= size {
                break;
            }
            if start > pos {
                emit_zeros(out, start - pos)?;
                pos = start;
            }
            let end = ((e.logical + e.len) * bs).min(size);
            if e.uninit {
                emit_zeros(out, end - pos)?;
                pos = end;
                continue;
            }
            while pos < end {
                let n = (end - pos).min(1 << 20);
                buf.resize(n as usize, 0);
                let phys = e.physical * bs + (pos - start);
                self.dev.read_at(phys, &mut buf)?;
                self.staged.overlay(phys, &mut buf, bs)?;
                write(out, &buf)?;
                pos += n;
            }
        }
        if pos < size {
            emit_zeros(out, size - pos)?;
        }
        Ok(size)
    }

    /// The time changes are stamped with (given when opened).
    pub(super) fn clock(&self) -> Timestamp {
        self.now
    }

    /// The group an inode lives in (allocation goal for its blocks).
    pub(super) fn inode_group(&self, ino: u32) -> u32 {
        ino.saturating_sub(1) / self.sb.inodes_per_group
    }
}
