//! Block and inode bitmaps and the allocator.
//!
//! Groups flagged `BLOCK_UNINIT` have no bitmap on disk: it is computed from
//! the group's metadata (superblock and descriptor backups, and any group's
//! bitmaps or inode table that lie inside it). Allocating from such a group
//! writes that bitmap and clears the flag; `INODE_UNINIT` likewise. The
//! unused-inode count (`itable_unused`) only ever shrinks.

use super::engine::Ext4Fs;
use super::group::{BLOCK_UNINIT, INODE_UNINIT, ITABLE_ZEROED};
use crate::block::BlockDevice;
use crate::{Error, Result};
use mkext4::csum::crc32c_raw;

fn bit(bm: &[u8], i: u64) -> bool {
    bm[(i / 8) as usize] & (1 << (i % 8)) != 0
}

fn set_bit(bm: &mut [u8], i: u64, on: bool) {
    let m = 1u8 << (i % 8);
    if on {
        bm[(i / 8) as usize] |= m;
    } else {
        bm[(i / 8) as usize] &= !m;
    }
}

impl<D: BlockDevice> Ext4Fs<D> {
    /// The block bitmap of group `g`: on disk, or computed for `BLOCK_UNINIT`.
    pub(super) fn block_bitmap(&self, g: u32) -> Result<Vec<u8>> {
        let sb = &self.sb;
        if sb.group_csum() && self.groups.flags(g) & BLOCK_UNINIT != 0 {
            return Ok(self.uninit_block_bitmap(g));
        }
        let bm = self.read_block(self.groups.block_bitmap(g))?;
        if sb.metadata_csum() {
            let len = (sb.blocks_per_group / 8) as usize;
            let c = crc32c_raw(sb.csum_seed, &bm[..len]) & self.groups.bitmap_csum_mask();
            if c != self.groups.block_bitmap_csum(g) {
                return Err(Error::corrupt(
                    format!("ext4 block bitmap of group {g}"),
                    "checksum mismatch",
                ));
            }
        }
        Ok(bm)
    }

    fn uninit_block_bitmap(&self, g: u32) -> Vec<u8> {
        let sb = &self.sb;
        let mut bm = vec![0u8; sb.block_size as usize];
        let start = sb.group_first_block(g);
        let len = sb.group_len(g);
        let mut mark = |b: u64, n: u64| {
            // Only the part inside this group, so huge inode tables of
            // other groups cost nothing.
            let from = b.max(start);
            let to = b.saturating_add(n).min(start + len);
            for x in from..to {
                set_bit(&mut bm, x - start, true);
            }
        };
        if sb.group_has_super(g) {
            mark(start, 1 + sb.gdt_blocks() + sb.reserved_gdt_blocks);
        }
        let itable = self.groups.itable_blocks(sb);
        for h in 0..sb.group_count {
            mark(self.groups.block_bitmap(h), 1);
            mark(self.groups.inode_bitmap(h), 1);
            mark(self.groups.inode_table(h), itable);
        }
        for i in len..sb.block_size * 8 {
            set_bit(&mut bm, i, true);
        }
        bm
    }

    fn put_block_bitmap(&mut self, g: u32, bm: Vec<u8>) {
        if self.sb.metadata_csum() {
            let len = (self.sb.blocks_per_group / 8) as usize;
            let c = crc32c_raw(self.sb.csum_seed, &bm[..len]) & self.groups.bitmap_csum_mask();
            self.groups.set_block_bitmap_csum(g, c);
        }
        if self.sb.group_csum() {
            let f = self.groups.flags(g);
            if f & BLOCK_UNINIT != 0 {
                self.groups.set_flags(g, f & !BLOCK_UNINIT);
            }
        }
        let b = self.groups.block_bitmap(g);
        self.write_block(b, bm);
    }

    /// The inode bitmap of group `g`: on disk, or empty for `INODE_UNINIT`.
    pub(super) fn inode_bitmap(&self, g: u32) -> Result<Vec<u8>> {
        let sb = &self.sb;
        if sb.group_csum() && self.groups.flags(g) & INODE_UNINIT != 0 {
            let mut bm = vec![0u8; sb.block_size as usize];
            for i in u64::from(sb.inodes_per_group)..sb.block_size * 8 {
                set_bit(&mut bm, i, true);
            }
            return Ok(bm);
        }
        let bm = self.read_block(self.groups.inode_bitmap(g))?;
        if sb.metadata_csum() {
            let len = (sb.inodes_per_group as usize).div_ceil(8);
            let c = crc32c_raw(sb.csum_seed, &bm[..len]) & self.groups.bitmap_csum_mask();
            if c != self.groups.inode_bitmap_csum(g) {
                return Err(Error::corrupt(
                    format!("ext4 inode bitmap of group {g}"),
                    "checksum mismatch",
                ));
            }
        }
        Ok(bm)
    }

    fn put_inode_bitmap(&mut self, g: u32, bm: Vec<u8>) {
        if self.sb.metadata_csum() {
            let len = (self.sb.inodes_per_group as usize).div_ceil(8);
            let c = crc32c_raw(self.sb.csum_seed, &bm[..len]) & self.groups.bitmap_csum_mask();
            self.groups.set_inode_bitmap_csum(g, c);
        }
        let b = self.groups.inode_bitmap(g);
        self.write_block(b, bm);
    }

    /// Blocks free to allocate now.
    pub(super) fn free_block_count(&self) -> u64 {
        self.sb.free_blocks()
    }

    /// Allocates `n` blocks as few runs as free space allows, preferring
    /// one run at or after group `goal`. Returns `(first block, length)` runs.
    pub(super) fn alloc_blocks(&mut self, n: u64, goal: u32) -> Result<Vec<(u64, u64)>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if n > self.free_block_count() {
            return Err(Error::NoSpace(format!(
                "{n} blocks needed, {} free",
                self.free_block_count()
            )));
        }
        let groups = self.sb.group_count;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut chosen: Option<(u64, u64)> = None;
        // Walk groups from the goal, wrapping; a run that reaches the end of a
        // group continues into the next one when that group starts free.
        'scan: for k in 0..groups {
            let g = (goal % groups + k) % groups;
            if g == 0 && k != 0 {
                // Wrapped around: runs do not continue across the wrap.
                runs.push((0, 0));
            }
            if self.groups.free_blocks(g) == 0 {
                runs.push((0, 0));
                continue;
            }
            let bm = self.block_bitmap(g)?;
            let start = self.sb.group_first_block(g);
            let len = self.sb.group_len(g);
            let mut i = 0;
            while i < len {
                if bit(&bm, i) {
                    i += 1;
                    continue;
                }
                let s = i;
                while i < len && !bit(&bm, i) {
                    i += 1;
                }
                let (b, l) = (start + s, i - s);
                match runs.last_mut() {
                    Some(last) if last.1 > 0 && last.0 + last.1 == b => last.1 += l,
                    _ => runs.push((b, l)),
                }
                if runs.last().is_some_and(|r| r.1 >= n) {
                    let r = *runs.last().expect("just pushed");
                    chosen = Some((r.0, n));
                    break 'scan;
                }
            }
            if i < len || bit(&bm, len - 1) {
                runs.push((0, 0));
            }
        }
        let picked = match chosen {
            Some(r) => vec![r],
            None => {
                runs.retain(|r| r.1 > 0);
                runs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let mut left = n;
                let mut out = Vec::new();
                for (b, l) in runs {
                    if left == 0 {
                        break;
                    }
                    let take = l.min(left);
                    out.push((b, take));
                    left -= take;
                }
                if left > 0 {
                    return Err(Error::NoSpace(format!(
                        "{n} blocks needed, bitmaps show fewer free"
                    )));
                }
                out.sort();
                out
            }
        };
        for &(b, l) in &picked {
            self.mark_blocks(b, l, true)?;
        }
        Ok(picked)
    }

    /// Sets or clears bitmap bits for `len` blocks from `first`, keeping
    /// group and superblock counters in step.
    fn mark_blocks(&mut self, first: u64, len: u64, used: bool) -> Result<()> {
        let end = first
            .checked_add(len)
            .ok_or_else(|| Error::corrupt("ext4 block run", format!("{first}+{len} overflows")))?;
        self.refuse_fixed(
            first,
            len,
            if used {
                "the block bitmap shows it free"
            } else {
                "a file being freed names it"
            },
        )?;
        let mut b = first;
        while b < end {
            if b < self.sb.first_data_block || b >= self.sb.blocks_count {
                return Err(Error::corrupt(
                    "ext4 block run",
                    format!("block {b} is outside the filesystem"),
                ));
            }
            let g = ((b - self.sb.first_data_block) / self.sb.blocks_per_group) as u32;
            let gstart = self.sb.group_first_block(g);
            let gend = (gstart + self.sb.group_len(g)).min(end);
            let mut bm = self.block_bitmap(g)?;
            let mut changed = 0u32;
            for x in b..gend {
                if bit(&bm, x - gstart) == used {
                    return Err(Error::corrupt(
                        format!("ext4 block bitmap of group {g}"),
                        format!(
                            "block {x} is already {}",
                            if used { "in use" } else { "free" }
                        ),
                    ));
                }
                set_bit(&mut bm, x - gstart, used);
                changed += 1;
            }
            self.put_block_bitmap(g, bm);
            let free = self.groups.free_blocks(g);
            let sbfree = self.sb.free_blocks();
            let bad = || {
                Error::corrupt(
                    format!("ext4 group {g}"),
                    format!(
                        "free block count {free} (filesystem: {sbfree}) disagrees with the bitmap"
                    ),
                )
            };
            let (gfree, total) = if used {
                (
                    free.checked_sub(changed),
                    sbfree.checked_sub(u64::from(changed)),
                )
            } else {
                (
                    free.checked_add(changed)
                        .filter(|&f| u64::from(f) <= self.sb.group_len(g)),
                    sbfree
                        .checked_add(u64::from(changed))
                        .filter(|&f| f <= self.sb.blocks_count),
                )
            };
            self.groups.set_free_blocks(g, gfree.ok_or_else(bad)?);
            self.sb.set_free_blocks(total.ok_or_else(bad)?);
            b = gend;
        }
        Ok(())
    }

    /// Frees block runs at the end of the running operation.
    pub(super) fn free_blocks_later(&mut self, runs: impl IntoIterator<Item = (u64, u64)>) {
        self.pending_free.extend(runs);
    }

    pub(super) fn release_pending(&mut self) -> Result<()> {
        let mut runs = std::mem::take(&mut self.pending_free);
        runs.sort();
        for &(b, l) in &runs {
            self.mark_blocks(b, l, false)?;
        }
        if self.scrub {
            self.scrub_runs = runs;
        }
        Ok(())
    }

    /// Allocates an inode, preferring group `goal`; counts directories.
    pub(super) fn alloc_inode(&mut self, goal: u32, dir: bool) -> Result<u32> {
        if self.sb.free_inodes() == 0 {
            return Err(Error::NoSpace("no free inodes".into()));
        }
        let groups = self.sb.group_count;
        let ipg = self.sb.inodes_per_group;
        for k in 0..groups {
            let g = (goal % groups + k) % groups;
            if self.groups.free_inodes(g) == 0 {
                continue;
            }
            let mut bm = self.inode_bitmap(g)?;
            let first = if g == 0 { self.sb.first_ino - 1 } else { 0 };
            let Some(idx) = (first..ipg).find(|&i| !bit(&bm, u64::from(i))) else {
                continue;
            };
            set_bit(&mut bm, u64::from(idx), true);
            self.put_inode_bitmap(g, bm);
            let ino = g * ipg + idx + 1;
            if self.sb.group_csum() {
                let flags = self.groups.flags(g);
                let unused = self.groups.itable_unused(g);
                let high = ipg.checked_sub(unused).ok_or_else(|| {
                    Error::corrupt(
                        format!("ext4 group descriptor {g}"),
                        format!("{unused} unused inodes of {ipg}"),
                    )
                })?;
                if idx >= high {
                    if flags & ITABLE_ZEROED == 0 {
                        // Slots between the old high-water mark and this one
                        // become visible to e2fsck: make them empty inodes.
                        for i in high..idx {
                            let mut blank = super::inode::Inode {
                                raw: vec![0; self.sb.inode_size],
                            };
                            self.write_inode(g * ipg + i + 1, &mut blank)?;
                        }
                    }
                    self.groups.set_itable_unused(g, ipg - idx - 1);
                }
                if flags & INODE_UNINIT != 0 {
                    self.groups
                        .set_flags(g, self.groups.flags(g) & !INODE_UNINIT);
                }
            }
            let bad =
                |what: &str| Error::corrupt(format!("ext4 group descriptor {g}"), what.to_string());
            let free = self.groups.free_inodes(g).checked_sub(1);
            self.groups
                .set_free_inodes(g, free.ok_or_else(|| bad("free inode count"))?);
            if dir {
                let used = self.groups.used_dirs(g).checked_add(1);
                self.groups
                    .set_used_dirs(g, used.ok_or_else(|| bad("directory count"))?);
            }
            let f = self.sb.free_inodes().checked_sub(1);
            self.sb
                .set_free_inodes(f.ok_or_else(|| bad("filesystem free inode count"))?);
            return Ok(ino);
        }
        Err(Error::NoSpace("inode bitmaps show no free inode".into()))
    }

    /// Returns an inode to the free pool.
    pub(super) fn free_inode(&mut self, ino: u32, dir: bool) -> Result<()> {
        let ipg = self.sb.inodes_per_group;
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(Error::corrupt(
                "ext4 inode number",
                format!("{ino} is outside 1..={}", self.sb.inodes_count),
            ));
        }
        let g = (ino - 1) / ipg;
        let idx = u64::from((ino - 1) % ipg);
        let mut bm = self.inode_bitmap(g)?;
        if !bit(&bm, idx) {
            return Err(Error::corrupt(
                format!("ext4 inode bitmap of group {g}"),
                format!("inode {ino} is already free"),
            ));
        }
        set_bit(&mut bm, idx, false);
        self.put_inode_bitmap(g, bm);
        let bad =
            |what: &str| Error::corrupt(format!("ext4 group descriptor {g}"), what.to_string());
        let free = self
            .groups
            .free_inodes(g)
            .checked_add(1)
            .filter(|&f| f <= ipg)
            .ok_or_else(|| bad("free inode count above the group's inodes"))?;
        self.groups.set_free_inodes(g, free);
        if dir {
            // Counted directories must include this one.
            let used = self.groups.used_dirs(g).checked_sub(1);
            self.groups
                .set_used_dirs(g, used.ok_or_else(|| bad("directory count 0"))?);
        }
        let f = self
            .sb
            .free_inodes()
            .checked_add(1)
            .filter(|&f| f <= self.sb.inodes_count)
            .ok_or_else(|| bad("filesystem free inode count above its inodes"))?;
        self.sb.set_free_inodes(f);
        Ok(())
    }

    /// Byte ranges in use according to the block bitmaps (for the flasher).
    pub(super) fn used_byte_ranges(&self) -> Result<Vec<std::ops::Range<u64>>> {
        let bs = self.sb.block_size;
        let mut out: Vec<std::ops::Range<u64>> = Vec::new();
        let mut push = |b: u64, n: u64| {
            let r = b * bs..(b + n) * bs;
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        };
        // Block 0 (boot sector and, on 4 KiB filesystems, the superblock).
        push(0, self.sb.first_data_block.max(1));
        for g in 0..self.sb.group_count {
            let bm = self.block_bitmap(g)?;
            let start = self.sb.group_first_block(g);
            let len = self.sb.group_len(g);
            let first = if start == 0 { 1 } else { 0 };
            for i in first..len {
                if bit(&bm, i) {
                    push(start + i, 1);
                }
            }
        }
        Ok(out)
    }
}
