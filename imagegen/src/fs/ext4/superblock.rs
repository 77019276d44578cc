//! The superblock: geometry, feature gating and the few fields we change.
//!
//! The raw 1024 bytes are kept and patched in place, so fields this engine
//! does not model (quota inodes, MMP, error records, mount options, …) are
//! written back untouched.

use super::bytes::{put_u32, u16_at, u32_at};
use crate::{Error, Result};

/// Byte offset of the primary superblock.
pub const SB_OFFSET: u64 = 1024;
const SB_MAGIC: u16 = 0xEF53;

pub mod compat {
    pub const HAS_JOURNAL: u32 = 0x4;
    pub const EXT_ATTR: u32 = 0x8;
    pub const RESIZE_INODE: u32 = 0x10;
    pub const DIR_INDEX: u32 = 0x20;
    pub const SPARSE_SUPER2: u32 = 0x200;
    pub const ORPHAN_FILE: u32 = 0x1000;
}

pub mod incompat {
    pub const COMPRESSION: u32 = 0x1;
    pub const FILETYPE: u32 = 0x2;
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const FLEX_BG: u32 = 0x200;
    pub const EA_INODE: u32 = 0x400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
    /// Everything this engine reads.
    pub const READ: u32 = FILETYPE
        | RECOVER
        | EXTENTS
        | BIT64
        | MMP
        | FLEX_BG
        | EA_INODE
        | CSUM_SEED
        | LARGEDIR
        | INLINE_DATA;
    /// Everything this engine changes filesystems with.
    pub const WRITE: u32 =
        FILETYPE | EXTENTS | BIT64 | FLEX_BG | CSUM_SEED | LARGEDIR | INLINE_DATA;
}

pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const LARGE_FILE: u32 = 0x2;
    pub const BTREE_DIR: u32 = 0x4;
    pub const HUGE_FILE: u32 = 0x8;
    pub const GDT_CSUM: u32 = 0x10;
    pub const DIR_NLINK: u32 = 0x20;
    pub const EXTRA_ISIZE: u32 = 0x40;
    pub const QUOTA: u32 = 0x100;
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
    pub const READONLY: u32 = 0x1000;
    pub const PROJECT: u32 = 0x2000;
    pub const VERITY: u32 = 0x8000;
    pub const ORPHAN_PRESENT: u32 = 0x10000;
    /// Everything this engine changes filesystems with.
    pub const WRITE: u32 = SPARSE_SUPER
        | LARGE_FILE
        | BTREE_DIR
        | HUGE_FILE
        | GDT_CSUM
        | DIR_NLINK
        | EXTRA_ISIZE
        | METADATA_CSUM
        | VERITY;
}

/// Names of feature bits, for `inspect` and for refusals.
const FEATURE_NAMES: &[(u8, u32, &str)] = &[
    (0, 0x1, "dir_prealloc"),
    (0, 0x2, "imagic_inodes"),
    (0, compat::HAS_JOURNAL, "has_journal"),
    (0, compat::EXT_ATTR, "ext_attr"),
    (0, compat::RESIZE_INODE, "resize_inode"),
    (0, compat::DIR_INDEX, "dir_index"),
    (0, 0x40, "lazy_bg"),
    (0, 0x100, "snapshot_bitmap"),
    (0, compat::SPARSE_SUPER2, "sparse_super2"),
    (0, 0x400, "fast_commit"),
    (0, 0x800, "stable_inodes"),
    (0, compat::ORPHAN_FILE, "orphan_file"),
    (1, incompat::COMPRESSION, "compression"),
    (1, incompat::FILETYPE, "filetype"),
    (1, incompat::RECOVER, "needs_recovery"),
    (1, incompat::JOURNAL_DEV, "journal_dev"),
    (1, incompat::META_BG, "meta_bg"),
    (1, incompat::EXTENTS, "extent"),
    (1, incompat::BIT64, "64bit"),
    (1, incompat::MMP, "mmp"),
    (1, incompat::FLEX_BG, "flex_bg"),
    (1, incompat::EA_INODE, "ea_inode"),
    (1, incompat::DIRDATA, "dirdata"),
    (1, incompat::CSUM_SEED, "metadata_csum_seed"),
    (1, incompat::LARGEDIR, "large_dir"),
    (1, incompat::INLINE_DATA, "inline_data"),
    (1, incompat::ENCRYPT, "encrypt"),
    (1, incompat::CASEFOLD, "casefold"),
    (2, ro_compat::SPARSE_SUPER, "sparse_super"),
    (2, ro_compat::LARGE_FILE, "large_file"),
    (2, ro_compat::BTREE_DIR, "btree_dir"),
    (2, ro_compat::HUGE_FILE, "huge_file"),
    (2, ro_compat::GDT_CSUM, "uninit_bg"),
    (2, ro_compat::DIR_NLINK, "dir_nlink"),
    (2, ro_compat::EXTRA_ISIZE, "extra_isize"),
    (2, 0x80, "snapshot"),
    (2, ro_compat::QUOTA, "quota"),
    (2, ro_compat::BIGALLOC, "bigalloc"),
    (2, ro_compat::METADATA_CSUM, "metadata_csum"),
    (2, 0x800, "replica"),
    (2, ro_compat::READONLY, "read-only"),
    (2, ro_compat::PROJECT, "project"),
    (2, 0x4000, "shared_blocks"),
    (2, ro_compat::VERITY, "verity"),
    (2, ro_compat::ORPHAN_PRESENT, "orphan_present"),
];

/// Names of every set bit: compat, then incompat, then ro_compat.
pub fn all_feature_names(compat: u32, incompat: u32, ro_compat: u32) -> Vec<String> {
    let mut v = feature_names(0, compat);
    v.extend(feature_names(1, incompat));
    v.extend(feature_names(2, ro_compat));
    v
}

fn feature_names(set: u8, bits: u32) -> Vec<String> {
    (0..32)
        .map(|i| 1u32 << i)
        .filter(|bit| bits & bit != 0)
        .map(|bit| {
            FEATURE_NAMES
                .iter()
                .find(|(s, b, _)| *s == set && *b == bit)
                .map(|(_, _, n)| (*n).to_string())
                .unwrap_or_else(|| {
                    format!(
                        "{}_{bit:#x}",
                        ["compat", "incompat", "ro_compat"][set as usize]
                    )
                })
        })
        .collect()
}

/// The parsed superblock plus its raw bytes.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub raw: Vec<u8>,
    pub block_size: u64,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub blocks_per_group: u64,
    pub inodes_per_group: u32,
    pub inodes_count: u32,
    pub inode_size: usize,
    pub first_ino: u32,
    pub group_count: u32,
    pub desc_size: usize,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub hash_seed: [u32; 4],
    pub flags: u32,
    pub reserved_gdt_blocks: u64,
    pub want_extra_isize: u16,
    pub state: u16,
    /// Seed of every crc32c checksum (`metadata_csum`).
    pub csum_seed: u32,
}

impl Superblock {
    /// Parses and sanity-checks the superblock; refuses what we cannot even read.
    pub fn parse(raw: Vec<u8>, device_size: u64) -> Result<Superblock> {
        let what = "ext4 superblock";
        if raw.len() < 1024 || u16_at(&raw, 0x38) != SB_MAGIC {
            return Err(Error::corrupt(what, "no ext2/3/4 magic at byte 1080"));
        }
        let log_bs = u32_at(&raw, 0x18);
        if log_bs > 2 {
            return Err(Error::unsupported(
                "ext4 block size",
                format!(
                    "{} bytes (only 1, 2 and 4 KiB are handled)",
                    1024u64 << log_bs.min(20)
                ),
            ));
        }
        let block_size = 1024u64 << log_bs;
        let compat = u32_at(&raw, 0x5C);
        let incompat = u32_at(&raw, 0x60);
        let ro_compat = u32_at(&raw, 0x64);
        let rev = u32_at(&raw, 0x4C);
        let unknown = incompat & !incompat::READ;
        if unknown != 0 {
            return Err(Error::unsupported(
                "ext4 feature",
                format!(
                    "incompatible feature(s) {} are not handled",
                    feature_names(1, unknown).join(",")
                ),
            ));
        }
        if ro_compat & ro_compat::BIGALLOC != 0 {
            return Err(Error::unsupported(
                "ext4 feature",
                "bigalloc is not handled",
            ));
        }
        let mut blocks_count = u64::from(u32_at(&raw, 0x04));
        let mut free_hi = 0u64;
        let _ = &mut free_hi;
        if incompat & incompat::BIT64 != 0 {
            blocks_count |= u64::from(u32_at(&raw, 0x150)) << 32;
        }
        let first_data_block = u64::from(u32_at(&raw, 0x14));
        let blocks_per_group = u64::from(u32_at(&raw, 0x20));
        let inodes_per_group = u32_at(&raw, 0x28);
        let inodes_count = u32_at(&raw, 0x00);
        let (inode_size, first_ino) = if rev == 0 {
            (128usize, 11u32)
        } else {
            (usize::from(u16_at(&raw, 0x58)), u32_at(&raw, 0x54))
        };
        let bad = |why: String| Err(Error::corrupt(what, why));
        if blocks_per_group == 0 || blocks_per_group > block_size * 8 {
            return bad(format!("{blocks_per_group} blocks per group"));
        }
        if u64::from(u32_at(&raw, 0x24)) != blocks_per_group {
            return bad("clusters per group differ from blocks per group".into());
        }
        if inodes_per_group == 0 || u64::from(inodes_per_group) > block_size * 8 {
            return bad(format!("{inodes_per_group} inodes per group"));
        }
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size as u64 > block_size {
            return bad(format!("inode size {inode_size}"));
        }
        if first_data_block != u64::from(block_size == 1024) {
            return bad(format!(
                "first data block {first_data_block} for {block_size}-byte blocks"
            ));
        }
        if blocks_count <= first_data_block {
            return bad(format!("{blocks_count} blocks"));
        }
        if first_ino < 11 || first_ino > inodes_count {
            return bad(format!("first inode {first_ino}"));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        if groups > u64::from(u32::MAX)
            || u64::from(inodes_count) != groups * u64::from(inodes_per_group)
        {
            return bad(format!(
                "{inodes_count} inodes do not match {groups} groups of {inodes_per_group}"
            ));
        }
        let desc_size = if incompat & incompat::BIT64 != 0 {
            let d = usize::from(u16_at(&raw, 0xFE));
            if !(32..=1024).contains(&d) || !d.is_power_of_two() {
                return bad(format!("group descriptor size {d}"));
            }
            d
        } else {
            32
        };
        let uuid: [u8; 16] = raw[0x68..0x78].try_into().expect("16-byte slice");
        let csum_seed = if incompat & incompat::CSUM_SEED != 0 {
            u32_at(&raw, 0x270)
        } else {
            mkext4::csum::fs_seed(&uuid)
        };
        let sb = Superblock {
            block_size,
            blocks_count,
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            inodes_count,
            inode_size,
            first_ino,
            group_count: groups as u32,
            desc_size,
            compat,
            incompat,
            ro_compat,
            uuid,
            hash_seed: [
                u32_at(&raw, 0xEC),
                u32_at(&raw, 0xF0),
                u32_at(&raw, 0xF4),
                u32_at(&raw, 0xF8),
            ],
            flags: u32_at(&raw, 0x160),
            reserved_gdt_blocks: u64::from(u16_at(&raw, 0xCE)),
            want_extra_isize: u16_at(&raw, 0x15E),
            state: u16_at(&raw, 0x3A),
            csum_seed,
            raw,
        };
        if sb.metadata_csum() {
            let stored = u32_at(&sb.raw, 0x3FC);
            if mkext4::csum::superblock(&sb.raw) != stored {
                return Err(Error::corrupt(what, "checksum mismatch"));
            }
        }
        let _ = device_size;
        Ok(sb)
    }

    pub fn metadata_csum(&self) -> bool {
        self.ro_compat & ro_compat::METADATA_CSUM != 0
    }

    /// Whether group descriptors carry a checksum (and the UNINIT flags mean something).
    pub fn group_csum(&self) -> bool {
        self.ro_compat & (ro_compat::METADATA_CSUM | ro_compat::GDT_CSUM) != 0
    }

    pub fn has_incompat(&self, bit: u32) -> bool {
        self.incompat & bit != 0
    }

    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.ro_compat & bit != 0
    }

    pub fn has_compat(&self, bit: u32) -> bool {
        self.compat & bit != 0
    }

    /// All feature names, as `dumpe2fs` would list them.
    pub fn feature_list(&self) -> Vec<String> {
        all_feature_names(self.compat, self.incompat, self.ro_compat)
    }

    /// Why this filesystem must not be changed, if it must not.
    pub fn write_refusal(&self) -> Option<String> {
        if self.has_incompat(incompat::RECOVER) {
            return Some(
                "the journal needs recovery: it is mounted now, or was not cleanly unmounted (unmount it; if it is not mounted, run e2fsck on it)"
                    .into(),
            );
        }
        if self.state & 1 == 0 {
            return Some(
                "it is mounted now, or was not cleanly unmounted (unmount it; if it is not mounted, run e2fsck on it)"
                    .into(),
            );
        }
        if self.state & 2 != 0 {
            return Some("it is marked as having errors (run e2fsck first)".into());
        }
        let bad_incompat = self.incompat & !incompat::WRITE;
        if bad_incompat != 0 {
            return Some(format!(
                "changing filesystems with {} is not handled",
                feature_names(1, bad_incompat).join(",")
            ));
        }
        let bad_ro = self.ro_compat & !ro_compat::WRITE;
        if bad_ro != 0 {
            return Some(format!(
                "changing filesystems with {} is not handled",
                feature_names(2, bad_ro).join(",")
            ));
        }
        if !self.has_incompat(incompat::EXTENTS) {
            return Some(
                "changing filesystems without the extent feature (ext2/ext3) is not handled".into(),
            );
        }
        None
    }

    pub fn free_blocks(&self) -> u64 {
        let mut v = u64::from(u32_at(&self.raw, 0x0C));
        if self.has_incompat(incompat::BIT64) {
            v |= u64::from(u32_at(&self.raw, 0x158)) << 32;
        }
        v
    }

    pub fn set_free_blocks(&mut self, v: u64) {
        put_u32(&mut self.raw, 0x0C, v as u32);
        if self.has_incompat(incompat::BIT64) {
            put_u32(&mut self.raw, 0x158, (v >> 32) as u32);
        }
    }

    pub fn free_inodes(&self) -> u32 {
        u32_at(&self.raw, 0x10)
    }

    pub fn set_free_inodes(&mut self, v: u32) {
        put_u32(&mut self.raw, 0x10, v);
    }

    pub fn reserved_blocks(&self) -> u64 {
        let mut v = u64::from(u32_at(&self.raw, 0x08));
        if self.has_incompat(incompat::BIT64) {
            v |= u64::from(u32_at(&self.raw, 0x154)) << 32;
        }
        v
    }

    /// Recomputes the stored checksum after a change.
    pub fn seal(&mut self) {
        if self.metadata_csum() {
            let c = mkext4::csum::superblock(&self.raw);
            put_u32(&mut self.raw, 0x3FC, c);
        }
    }

    pub fn label(&self) -> String {
        let v = &self.raw[0x78..0x88];
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        String::from_utf8_lossy(&v[..end]).into_owned()
    }

    /// Blocks used by the group descriptor table.
    pub fn gdt_blocks(&self) -> u64 {
        (u64::from(self.group_count) * self.desc_size as u64).div_ceil(self.block_size)
    }

    /// Whether group `g` holds a superblock backup (and so a GDT copy).
    pub fn group_has_super(&self, g: u32) -> bool {
        if g == 0 {
            return true;
        }
        if self.has_compat(compat::SPARSE_SUPER2) {
            return g == u32_at(&self.raw, 0x24C) || g == u32_at(&self.raw, 0x250);
        }
        if !self.has_ro_compat(ro_compat::SPARSE_SUPER) || g == 1 {
            return true;
        }
        [3u32, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < g {
                match p.checked_mul(base) {
                    Some(n) => p = n,
                    None => return false,
                }
            }
            p == g
        })
    }

    /// First block of group `g`.
    pub fn group_first_block(&self, g: u32) -> u64 {
        self.first_data_block + u64::from(g) * self.blocks_per_group
    }

    /// Number of blocks in group `g` (the last one may be short).
    pub fn group_len(&self, g: u32) -> u64 {
        (self.blocks_count - self.group_first_block(g)).min(self.blocks_per_group)
    }
}

#[cfg(test)]
mod tests {
    use super::feature_names;

    #[test]
    fn unknown_features_get_a_name() {
        assert_eq!(
            feature_names(1, 0x40 | 0x8000_0000),
            vec!["extent", "incompat_0x80000000"]
        );
    }
}
