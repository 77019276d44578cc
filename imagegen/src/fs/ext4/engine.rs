//! The `Ext4Fs` handle: block cache, transactions, inode I/O and block
//! mapping. Higher-level operations live in `ops`, allocation in `alloc`.
//!
//! Every change runs inside [`Ext4Fs::change`]: file data (see `staging`:
//! memory-bounded, spilled to a file past a limit), metadata blocks,
//! group descriptors and the superblock are changed only in memory while
//! the operation runs, so an operation that fails leaves the image exactly
//! as it was. When it has succeeded, [`commit`](Ext4Fs::commit) writes it in
//! an order that survives a crash at any write:
//!
//! - **With the internal journal** (the usual ext4): mark the superblock
//!   `needs_recovery`; write the new file data and log the metadata as one
//!   jbd2 transaction (see `journal`); flush; write the journal superblock
//!   pointing at it and the commit block; flush — from here replay gives the
//!   new state, before it the old one; write the blocks home and update the
//!   backup superblocks and descriptors; flush; mark the log empty (and
//!   wipe freed blocks when scrubbing); flush; clear `needs_recovery` (made
//!   durable by the next flush or change).
//! - **Without one** (or when the transaction does not fit in the log, or
//!   the journal has features we do not write), the order of e2fsprogs'
//!   `ext2fs_flush2`: mark the superblock not clean and write the data;
//!   flush; write metadata, primary and backup descriptors and backup
//!   superblocks; flush; wipe freed blocks when scrubbing; write the
//!   superblock marked clean. A crash in
//!   between leaves a filesystem marked not clean: the engine refuses it and
//!   `e2fsck` repairs it.
//!
//! An error after the first write poisons the handle: the disk may hold part
//! of the change, so it refuses every further change instead of pretending
//! nothing happened.
//!
//! [`Ext4Fs::batch`] runs several operations as one change: each one that
//! fails is undone by itself (an undo log of the metadata blocks it touched
//! and a snapshot of the counters), and everything commits once at the end.
//!
//! [`Ext4Fs::defer_commits`] turns on group commit, as the kernel's journal
//! does it: the metadata of many changes gathers in one running transaction
//! that commits on [`Ext4Fs::sync`] or once it fills a quarter of the
//! journal; the new data of each change that succeeded is written at once,
//! into blocks still free on disk (ordered mode), so nothing waits in
//! memory. Each change is still all-or-nothing and a failed one still
//! leaves the device untouched; a crash loses what came after the last
//! commit (its data lies in free blocks). It saves a commit's four flushes
//! per change.

use super::blockmap;
use super::extent::{self, ReadCtx, Tree};
use super::group::Groups;
use super::inode::{Inode, FL_EXTENTS, FL_INLINE_DATA};
use super::journal::{Journal, Transaction};
use super::superblock::{incompat, ro_compat, Superblock, SB_OFFSET};
use crate::block::BlockDevice;
use crate::fs::{Extent, Timestamp};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// Metadata blocks a deferred transaction gathers before it commits (when
/// the journal does not bound it lower).
const GROUP_BLOCKS: u64 = 4096;

/// Saved state of the running transaction, to go back to if it fails.
type Saved = (Superblock, Groups);

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
    /// Set when a commit failed after its first write: the disk may hold
    /// part of it, so no further change is allowed through this handle.
    pub(super) poisoned: Option<String>,
    /// The internal journal commits go through (`None`: ordered commits).
    pub(super) journal: Option<Journal>,
    /// The time every change is stamped with, given by the caller.
    pub(super) now: Timestamp,
    /// New file data of the running operation, written at commit.
    pub(super) staged: super::staging::Staged,
    /// How many batches are open: changes inside one do not commit.
    pub(super) batch_depth: u32,
    /// Zero blocks the change frees ([`crate::fs::OpenOptions::scrub`]).
    pub(super) scrub: bool,
    /// Blocks freed by the running change, overwritten with zeros once the
    /// change is durable when scrubbing: never earlier, since until then the
    /// old metadata may still point at them.
    pub(super) scrub_runs: Vec<(u64, u64)>,
    /// Fixed metadata: never allocated, never freed (computed when writable).
    pub(super) fixed: super::fixed::Fixed,
    /// Group commit ([`Ext4Fs::defer_commits`]).
    pub(super) deferred: bool,
    /// The state before the running deferred transaction, if one is open.
    pub(super) running: Option<Saved>,
    /// One undo log per open nested change: each metadata block's contents
    /// in `dirty` before the change first touched it (`None`: not dirty).
    pub(super) undo: Vec<BTreeMap<u64, Option<Vec<u8>>>>,
}

impl<D: BlockDevice> Ext4Fs<D> {
    /// Opens the filesystem on `dev`, checking the superblock and group
    /// descriptors. Refuses unknown incompatible features, `encrypt`,
    /// `casefold`, `bigalloc`, `meta_bg` and block sizes other than 1/2/4 KiB.
    /// Changes are stamped with `now` (the caller's one time source).
    pub fn open(dev: D, now: Timestamp) -> Result<Self> {
        Self::open_mode(dev, true, now)
    }

    /// Like [`open`](Self::open); with `writable` false every change is refused.
    pub fn open_mode(dev: D, writable: bool, now: Timestamp) -> Result<Self> {
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
            poisoned: None,
            journal: None,
            now: opts.now,
            staged: Default::default(),
            batch_depth: 0,
            scrub: opts.scrub,
            scrub_runs: Vec::new(),
            fixed: Default::default(),
            deferred: false,
            running: None,
            undo: Vec::new(),
        };
        if fs.refusal.is_none() {
            match fs.compute_fixed() {
                Ok(f) => fs.fixed = f,
                Err(e) => fs.refusal = Some(e.to_string()),
            }
        }
        if fs.refusal.is_none() {
            match Journal::load(&fs) {
                Ok(j) => fs.journal = j,
                Err(why) => fs.refusal = Some(why),
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
        let old = self.dirty.insert(b, buf);
        if let Some(undo) = self.undo.last_mut() {
            undo.entry(b).or_insert(old);
        }
    }

    /// Stages file data for newly allocated blocks `b..`; it reaches the
    /// device in the commit's data phase.
    pub(super) fn write_data(&mut self, b: u64, buf: &[u8]) -> Result<()> {
        self.staged.stage(b, buf)
    }

    /// Stages `len` bytes of file data for newly allocated blocks `b..`,
    /// filled by `fill` in place (no copy).
    pub(super) fn write_data_with(
        &mut self,
        b: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        self.staged.stage_with(b, len, fill)
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

    /// Turns on group commit (see the module comment): changes commit
    /// together on [`sync`](Self::sync) or when the running transaction
    /// grows large, instead of one by one. Changes not yet committed are
    /// dropped with the handle: call `sync` before dropping it.
    pub fn defer_commits(&mut self) {
        self.deferred = true;
    }

    /// Commits the running deferred transaction, if any.
    pub fn commit_deferred(&mut self) -> Result<()> {
        match self.running.take() {
            Some(saved) => self.finish(saved),
            None => Ok(()),
        }
    }

    /// Runs `f` as one all-or-nothing change, then commits it (or, with
    /// group commit, adds it to the running transaction).
    pub(super) fn change<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        if let Some(why) = &self.poisoned {
            return Err(Error::PartialWrite {
                what: format!("changing {}", self.dev.describe()),
                why: format!("refused: an earlier commit stopped partway ({why})"),
            });
        }
        if let Some(why) = &self.refusal {
            return Err(Error::unsupported(
                "ext4 change",
                format!("refusing to change {}: {why}", self.dev.describe()),
            ));
        }
        if self.batch_depth > 0 {
            return self.nested_change(f);
        }
        if self.deferred {
            if self.running.is_none() {
                self.begin();
                self.running = Some((self.sb.clone(), self.groups.clone()));
            }
            let r = self.nested_change(f)?;
            self.write_out_data()?;
            if self.running_is_large() {
                self.commit_deferred()?;
            }
            return Ok(r);
        }
        let saved = (self.sb.clone(), self.groups.clone());
        self.begin();
        match f(self) {
            Ok(r) => self.finish(saved).map(|()| r),
            Err(e) => {
                self.abandon(saved);
                Err(e)
            }
        }
    }

    /// Empties the transaction state for a new transaction.
    fn begin(&mut self) {
        self.dirty.clear();
        self.pending_free.clear();
        self.staged.clear();
        self.scrub_runs.clear();
    }

    /// Nothing was written: the handle goes back to the disk's state.
    fn abandon(&mut self, saved: Saved) {
        self.begin();
        (self.sb, self.groups) = saved;
        self.groups.dirty.clear();
    }

    /// Plans and commits the transaction that started at `saved`.
    fn finish(&mut self, saved: Saved) -> Result<()> {
        let plan = self
            .release_pending()
            .and_then(|()| self.plan_commit(&saved.0));
        let mut plan = match plan {
            Ok(p) => p,
            Err(e) => {
                self.abandon(saved);
                return Err(e);
            }
        };
        self.begin();
        self.groups.dirty.clear();
        let outcome = self.commit(&mut plan);
        // Keep the staging set (and its spool file) for the next change.
        self.staged = plan.staged;
        self.staged.clear();
        if let Err(e) = outcome {
            // Part of the change may be on disk: never act as if it were not.
            let how = if self.journal.is_some() {
                "the journal holds it whole or not at all: mount the filesystem or run e2fsck to replay it"
            } else {
                "the filesystem is marked not clean: run e2fsck -f"
            };
            self.poisoned = Some(e.to_string());
            return Err(Error::PartialWrite {
                what: format!("committing a change to {}", self.dev.describe()),
                why: format!("{e}; the image may hold part of it ({how})"),
            });
        }
        Ok(())
    }

    /// Whether the running deferred transaction should commit now, before
    /// its metadata outgrows the journal (or memory).
    fn running_is_large(&self) -> bool {
        let blocks = self.dirty.len() as u64 + self.groups.dirty.len() as u64 + 2;
        let limit = match &self.journal {
            Some(j) => (j.capacity() / 4).min(GROUP_BLOCKS),
            None => GROUP_BLOCKS,
        };
        blocks >= limit
    }

    /// Writes the data of a change that succeeded inside a deferred
    /// transaction to its blocks, which are free on disk until the commit.
    fn write_out_data(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let mut staged = std::mem::take(&mut self.staged);
        let written = staged.write_to(&self.dev, self.sb.block_size);
        self.staged = staged;
        if let Err(e) = written {
            self.poisoned = Some(e.to_string());
            return Err(Error::PartialWrite {
                what: format!("writing file data to {}", self.dev.describe()),
                why: format!("{e}; only free blocks were written, but the change is not committed"),
            });
        }
        Ok(())
    }

    /// One operation inside a batch or a deferred transaction: undone alone
    /// when it fails.
    fn nested_change<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let saved = (
            self.sb.clone(),
            self.groups.clone(),
            self.pending_free.len(),
            self.staged.mark(),
        );
        self.undo.push(BTreeMap::new());
        let result = f(self);
        let undo = self.undo.pop().unwrap_or_default();
        match &result {
            Ok(_) => {
                // The enclosing change inherits what this one touched.
                if let Some(outer) = self.undo.last_mut() {
                    for (b, old) in undo {
                        outer.entry(b).or_insert(old);
                    }
                }
            }
            Err(_) => {
                let (sb, groups, freed, mark) = saved;
                (self.sb, self.groups) = (sb, groups);
                for (b, old) in undo {
                    match old {
                        Some(buf) => self.dirty.insert(b, buf),
                        None => self.dirty.remove(&b),
                    };
                }
                self.pending_free.truncate(freed);
                self.staged.rollback(mark);
            }
        }
        result
    }

    /// Everything the commit will write, computed before its first write so
    /// that any error here still leaves the disk untouched.
    fn plan_commit(&mut self, old: &Superblock) -> Result<Plan> {
        let bs = self.sb.block_size;
        self.groups.seal(&self.sb);
        self.sb.seal();
        let staged = std::mem::take(&mut self.staged);
        let zero = std::mem::take(&mut self.scrub_runs);
        let sb_changed = self.sb.raw != old.raw;
        if staged.is_empty()
            && zero.is_empty()
            && self.dirty.is_empty()
            && self.groups.dirty.is_empty()
            && !sb_changed
        {
            return Ok(Plan {
                staged,
                ..Plan::default()
            });
        }
        // Metadata blocks in their final form: staged blocks, then the
        // primary descriptor blocks of the groups that changed.
        let mut home: BTreeMap<u64, Vec<u8>> = std::mem::take(&mut self.dirty);
        let gdt_first = self.sb.first_data_block + 1;
        let per_block = (bs as usize) / self.sb.desc_size;
        let gdt_blocks: std::collections::BTreeSet<u64> = self
            .groups
            .dirty
            .iter()
            .map(|&g| (g as usize / per_block) as u64)
            .collect();
        for &i in &gdt_blocks {
            let off = (i * bs) as usize;
            home.insert(
                gdt_first + i,
                self.groups.raw()[off..off + bs as usize].to_vec(),
            );
        }
        if let Some(j) = &self.journal {
            if let Some(b) = home.keys().find(|&&b| j.contains(b)) {
                return Err(Error::corrupt(
                    "ext4 change",
                    format!("metadata block {b} lies inside the journal"),
                ));
            }
        }
        // Backup superblocks and descriptors are rewritten only when a field
        // that a backup must agree on changed, as the kernel does: it never
        // touches them in normal use, only when resizing (fs/ext4/resize.c,
        // update_backups: "they are only needed in case of corruption") and
        // for a new label or UUID (fs/ext4/ioctl.c, ext4_update_backup_sb).
        // Free counts and flags in a backup go stale, which is harmless:
        // e2fsck compares a backup only by features, sizes and UUID
        // (e2fsck/super.c, check_backup_super_block), and a filesystem
        // opened from a backup has its counts recomputed and its UNINIT
        // flags cleared (lib/ext2fs/openfs.c). So a change of a few files
        // writes no block beyond the groups it touches, not one in every
        // backup group. Backups are not marked clean (whoever falls back on
        // one checks everything).
        let mut backups = Vec::new();
        let refresh = backups_stale(old, &self.sb);
        for g in 1..self.sb.group_count {
            if !refresh || !self.sb.group_has_super(g) {
                continue;
            }
            let first = self.sb.group_first_block(g);
            {
                let mut copy = sb_variant(&self.sb, false, false);
                super::bytes::put_u16(&mut copy.raw, 0x5A, g.min(0xFFFF) as u16);
                copy.seal();
                backups.push((first * bs, copy.raw));
            }
            for &i in &gdt_blocks {
                let off = (i * bs) as usize;
                backups.push((
                    (first + 1 + i) * bs,
                    self.groups.raw()[off..off + bs as usize].to_vec(),
                ));
            }
        }
        let done = sb_variant(&self.sb, true, false).raw;
        // The transaction logs the block holding the superblock too, so the
        // free counts change with everything else.
        let transaction = match &self.journal {
            Some(j) => {
                let sb_block = SB_OFFSET / bs;
                let mut block = match home.get(&sb_block) {
                    Some(b) => b.clone(),
                    None => self.read_block(sb_block)?,
                };
                let within = (SB_OFFSET - sb_block * bs) as usize;
                block[within..within + 1024].copy_from_slice(&sb_variant(&self.sb, true, true).raw);
                let mut logged = home.clone();
                logged.insert(sb_block, block);
                let logged: Vec<(u64, Vec<u8>)> = logged.into_iter().collect();
                j.transaction(&logged, self.now).map(|t| (t, logged))
            }
            None => None,
        };
        let (mark, home, transaction) = match transaction {
            Some((t, logged)) => (sb_variant(old, true, true).raw, logged, Some(t)),
            None => (
                sb_variant(old, false, false).raw,
                home.into_iter().collect(),
                None,
            ),
        };
        Ok(Plan {
            mark,
            staged,
            zero,
            home,
            backups,
            transaction,
            done,
        })
    }

    /// Writes a planned change in crash-safe order (see the module comment).
    fn commit(&mut self, plan: &mut Plan) -> Result<()> {
        if plan.mark.is_empty() {
            return Ok(());
        }
        let bs = self.sb.block_size;
        let dev = &self.dev;
        dev.write_at(SB_OFFSET, &plan.mark)?;
        plan.staged.write_to(dev, bs)?;
        if let Some(t) = &plan.transaction {
            for (off, bytes) in &t.log {
                dev.write_at(*off, bytes)?;
            }
            dev.flush()?;
            dev.write_at(t.open.0, &t.open.1)?;
            dev.write_at(t.commit.0, &t.commit.1)?;
        }
        dev.flush()?;
        for (b, bytes) in &plan.home {
            dev.write_at(b * bs, bytes)?;
        }
        for (off, bytes) in &plan.backups {
            dev.write_at(*off, bytes)?;
        }
        dev.flush()?;
        if let Some(t) = &plan.transaction {
            dev.write_at(t.close.0, &t.close.1)?;
        }
        // The change is durable at home: freed blocks may be wiped now.
        let zeros = vec![0u8; (bs as usize) * 256];
        for &(first, len) in &plan.zero {
            let mut b = first;
            while b < first + len {
                let n = (first + len - b).min(256);
                dev.write_at(b * bs, &zeros[..(n * bs) as usize])?;
                b += n;
            }
        }
        if let Some(t) = &plan.transaction {
            dev.flush()?;
            if let Some(j) = &mut self.journal {
                j.advance(&t.close.1);
            }
        }
        // Made durable by the next flush: until then a crash leaves a
        // consistent filesystem that is merely marked for a check/replay.
        self.dev.write_at(SB_OFFSET, &plan.done)?;
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

/// What one commit writes, in the order [`Ext4Fs::commit`] writes it.
#[derive(Default)]
struct Plan {
    /// The superblock marking the change in flight (empty: nothing to do).
    mark: Vec<u8>,
    /// New file data, written before any metadata that points at it.
    staged: super::staging::Staged,
    /// Freed block runs to wipe once the change is durable.
    zero: Vec<(u64, u64)>,
    /// Metadata blocks at home, `(block, bytes)`.
    home: Vec<(u64, Vec<u8>)>,
    /// Backup superblocks and descriptor blocks, `(device byte offset, bytes)`.
    backups: Vec<(u64, Vec<u8>)>,
    /// The jbd2 transaction, when the change goes through the journal.
    transaction: Option<Transaction>,
    /// The final primary superblock.
    done: Vec<u8>,
}

/// A copy of `sb` with the clean flag (`s_state` bit 0) and
/// `needs_recovery` set as asked, checksum resealed.
/// Whether the backups disagree with the primary superblock `new` in a
/// field they must share: every field e2fsck compares (features, bar the
/// ones the kernel sets only in the primary; block and inode counts; UUID)
/// and the geometry and label, which the kernel copies to them.
pub(super) fn backups_stale(old: &Superblock, new: &Superblock) -> bool {
    use super::bytes::u32_at;
    const SAME: &[(usize, usize)] = &[
        (0x00, 0x08),   // inode and block counts
        (0x14, 0x2C),   // first data block .. inodes per group
        (0x4C, 0x50),   // revision
        (0x54, 0x5A),   // first inode, inode size
        (0x5C, 0x60),   // compatible features
        (0x68, 0x88),   // UUID, label
        (0x150, 0x154), // block count (high)
        (0x270, 0x274), // checksum seed
    ];
    // As e2fsck's FEATURE_INCOMPAT_IGNORE and FEATURE_RO_COMPAT_IGNORE.
    let incompat = |s: &Superblock| u32_at(&s.raw, 0x60) & !(incompat::RECOVER | 0x40);
    let ro_compat = |s: &Superblock| u32_at(&s.raw, 0x64) & !(0x02 | 0x20);
    SAME.iter().any(|&(a, b)| old.raw[a..b] != new.raw[a..b])
        || incompat(old) != incompat(new)
        || ro_compat(old) != ro_compat(new)
}

fn sb_variant(sb: &Superblock, clean: bool, recover: bool) -> Superblock {
    let mut s = sb.clone();
    let state = super::bytes::u16_at(&s.raw, 0x3A);
    let state = if clean { state | 1 } else { state & !1 };
    super::bytes::put_u16(&mut s.raw, 0x3A, state);
    let mut inc = super::bytes::u32_at(&s.raw, 0x60);
    if recover {
        inc |= incompat::RECOVER;
    } else {
        inc &= !incompat::RECOVER;
    }
    super::bytes::put_u32(&mut s.raw, 0x60, inc);
    s.seal();
    s
}
