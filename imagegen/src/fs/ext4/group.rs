//! Block group descriptors (32- and 64-byte), kept as the raw table and
//! patched field by field so unmodelled bytes survive.

use super::bytes::{put_u16, u16_at, u32_at};
use super::csum;
use super::superblock::Superblock;
use crate::{Error, Result};
use std::collections::BTreeSet;

pub const INODE_UNINIT: u16 = 0x1;
pub const BLOCK_UNINIT: u16 = 0x2;
pub const ITABLE_ZEROED: u16 = 0x4;

/// The group descriptor table as read from disk, plus which groups changed.
#[derive(Debug, Clone)]
pub struct Groups {
    raw: Vec<u8>,
    desc_size: usize,
    count: u32,
    wide: bool,
    pub dirty: BTreeSet<u32>,
}

impl Groups {
    /// Wraps the raw table (at least `count * desc_size` bytes) and checks
    /// that every descriptor points inside the filesystem.
    pub fn parse(raw: Vec<u8>, sb: &Superblock) -> Result<Groups> {
        let g = Groups {
            raw,
            desc_size: sb.desc_size,
            count: sb.group_count,
            wide: sb.desc_size >= 64,
            dirty: BTreeSet::new(),
        };
        let itable_blocks = g.itable_blocks(sb);
        for i in 0..g.count {
            let what = || format!("ext4 group descriptor {i}");
            for (name, b, len) in [
                ("block bitmap", g.block_bitmap(i), 1),
                ("inode bitmap", g.inode_bitmap(i), 1),
                ("inode table", g.inode_table(i), itable_blocks),
            ] {
                if b < sb.first_data_block || b.checked_add(len).is_none_or(|e| e > sb.blocks_count)
                {
                    return Err(Error::corrupt(
                        what(),
                        format!("{name} at block {b} is outside the filesystem"),
                    ));
                }
            }
            if sb.group_csum() {
                let stored = u16_at(g.desc(i), 0x1E);
                if g.checksum(sb, i) != stored {
                    return Err(Error::corrupt(what(), "checksum mismatch"));
                }
            }
        }
        Ok(g)
    }

    /// Blocks taken by one group's inode table.
    pub fn itable_blocks(&self, sb: &Superblock) -> u64 {
        (u64::from(sb.inodes_per_group) * sb.inode_size as u64).div_ceil(sb.block_size)
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    fn desc(&self, g: u32) -> &[u8] {
        let off = g as usize * self.desc_size;
        &self.raw[off..off + self.desc_size]
    }

    fn desc_mut(&mut self, g: u32) -> &mut [u8] {
        self.dirty.insert(g);
        let off = g as usize * self.desc_size;
        &mut self.raw[off..off + self.desc_size]
    }

    fn get32(&self, g: u32, lo: usize, hi: usize) -> u64 {
        let d = self.desc(g);
        let mut v = u64::from(u32_at(d, lo));
        if self.wide {
            v |= u64::from(u32_at(d, hi)) << 32;
        }
        v
    }

    fn get16(&self, g: u32, lo: usize, hi: usize) -> u32 {
        let d = self.desc(g);
        let mut v = u32::from(u16_at(d, lo));
        if self.wide {
            v |= u32::from(u16_at(d, hi)) << 16;
        }
        v
    }

    fn set16(&mut self, g: u32, lo: usize, hi: usize, v: u32) {
        let wide = self.wide;
        let d = self.desc_mut(g);
        put_u16(d, lo, v as u16);
        if wide {
            put_u16(d, hi, (v >> 16) as u16);
        }
    }

    pub fn block_bitmap(&self, g: u32) -> u64 {
        self.get32(g, 0x00, 0x20)
    }
    pub fn inode_bitmap(&self, g: u32) -> u64 {
        self.get32(g, 0x04, 0x24)
    }
    pub fn inode_table(&self, g: u32) -> u64 {
        self.get32(g, 0x08, 0x28)
    }
    pub fn free_blocks(&self, g: u32) -> u32 {
        self.get16(g, 0x0C, 0x2C)
    }
    pub fn set_free_blocks(&mut self, g: u32, v: u32) {
        self.set16(g, 0x0C, 0x2C, v)
    }
    pub fn free_inodes(&self, g: u32) -> u32 {
        self.get16(g, 0x0E, 0x2E)
    }
    pub fn set_free_inodes(&mut self, g: u32, v: u32) {
        self.set16(g, 0x0E, 0x2E, v)
    }
    pub fn used_dirs(&self, g: u32) -> u32 {
        self.get16(g, 0x10, 0x30)
    }
    pub fn set_used_dirs(&mut self, g: u32, v: u32) {
        self.set16(g, 0x10, 0x30, v)
    }
    pub fn itable_unused(&self, g: u32) -> u32 {
        self.get16(g, 0x1C, 0x32)
    }
    pub fn set_itable_unused(&mut self, g: u32, v: u32) {
        self.set16(g, 0x1C, 0x32, v)
    }
    pub fn flags(&self, g: u32) -> u16 {
        u16_at(self.desc(g), 0x12)
    }
    pub fn set_flags(&mut self, g: u32, v: u16) {
        put_u16(self.desc_mut(g), 0x12, v)
    }
    pub fn block_bitmap_csum(&self, g: u32) -> u32 {
        self.get16(g, 0x18, 0x38)
    }
    pub fn set_block_bitmap_csum(&mut self, g: u32, v: u32) {
        self.set16(g, 0x18, 0x38, v)
    }
    pub fn inode_bitmap_csum(&self, g: u32) -> u32 {
        self.get16(g, 0x1A, 0x3A)
    }
    pub fn set_inode_bitmap_csum(&mut self, g: u32, v: u32) {
        self.set16(g, 0x1A, 0x3A, v)
    }
    /// Bitmap checksums are 32 bits wide only in 64-byte descriptors.
    pub fn bitmap_csum_mask(&self) -> u32 {
        if self.wide {
            u32::MAX
        } else {
            0xFFFF
        }
    }

    fn checksum(&self, sb: &Superblock, g: u32) -> u16 {
        csum::group_desc(sb.metadata_csum(), sb.csum_seed, &sb.uuid, g, self.desc(g))
    }

    /// Recomputes the checksums of changed descriptors.
    pub fn seal(&mut self, sb: &Superblock) {
        if !sb.group_csum() {
            return;
        }
        let dirty: Vec<u32> = self.dirty.iter().copied().collect();
        for g in dirty {
            let c = self.checksum(sb, g);
            let off = g as usize * self.desc_size;
            put_u16(&mut self.raw[off..off + self.desc_size], 0x1E, c);
        }
    }
}
