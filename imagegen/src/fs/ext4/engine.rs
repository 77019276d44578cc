//! The `Ext4Fs` handle: block cache, transactions, inode I/O and block
//! mapping. Higher-level operations live in `ops`, allocation in `alloc`.
//!
//! Every change runs inside [`Ext4Fs::change`]: metadata blocks, group
//! descriptors and the superblock are changed only in memory, and are
//! written (data first, superblock last) when the whole operation has
//! succeeded. Any error discards them, so a failed operation leaves the
//! image exactly as it was. New file data goes straight to blocks that were
//! free before the operation began, which nothing references until commit.

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
        Ok(Ext4Fs {
            dev,
            sb,
            groups,
            dirty: BTreeMap::new(),
            pending_free: Vec::new(),
            refusal,
            now: opts.now,
        })
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

    /// Writes file data directly (the blocks are newly allocated).
    pub(super) fn write_data(&self, b: u64, buf: &[u8]) -> Result<()> {
        self.dev.write_at(b * self.sb.block_size, buf)
    }

    /// Runs `f` as one all-or-nothing change.
    pub(super) fn change<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        if let Some(why) = &self.refusal {
            return Err(Error::unsupported(
                "ext4 change",
                format!("refusing to change {}: {why}", self.dev.describe()),
            ));
        }
        let saved = (self.sb.clone(), self.groups.clone());
        self.dirty.clear();
        self.pending_free.clear();
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
        result
    }

    fn commit(&mut self) -> Result<()> {
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
