//! Recognising a filesystem by its on-disk signatures.

use super::fat::bpb::{looks_like_fat, FatType, Geometry};
use crate::block::BlockDevice;
use crate::Result;

/// A filesystem type `probe` can recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Fat12,
    Fat16,
    Fat32,
    Ext2,
    Ext3,
    Ext4,
}

impl FsType {
    /// `fat32`, `ext4`, … (the same words as [`Filesystem::kind`](super::Filesystem::kind)).
    pub fn name(self) -> &'static str {
        match self {
            FsType::Fat12 => "fat12",
            FsType::Fat16 => "fat16",
            FsType::Fat32 => "fat32",
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
        }
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// ext2/3/4 superblock: at byte 1024, magic `0xEF53` at offset 56.
const EXT_SB: u64 = 1024;
const EXT_MAGIC: u16 = 0xEF53;
/// Feature bits that make an ext filesystem ext4 rather than ext3/ext2.
const EXT4_INCOMPAT: u32 = 0x0040 | 0x0080 | 0x0200 | 0x0400 | 0x2000 | 0x8000; // extents, 64bit, flex_bg, mmp?, csum_seed, inline_data
const EXT4_RO_COMPAT: u32 = 0x0008 | 0x0010 | 0x0020 | 0x0040 | 0x0400; // huge_file, gdt_csum, dir_nlink, extra_isize, metadata_csum
const EXT3_COMPAT_JOURNAL: u32 = 0x0004;

/// What filesystem fills `dev`, judged by signatures: FAT by its boot
/// sector (a jump, `55 AA`, a valid sector size; the variant by cluster
/// count), ext2/3/4 by the superblock magic and feature bits. `Ok(None)`
/// when nothing matches. A FAT boot sector whose geometry lies is an
/// [`Error::Corrupt`](crate::Error::Corrupt), not "unknown".
pub fn probe(dev: &dyn BlockDevice) -> Result<Option<FsType>> {
    let size = dev.size();
    if size >= 512 {
        let mut sector = [0u8; 512];
        dev.read_at(0, &mut sector)?;
        if looks_like_fat(&sector) {
            let geo = Geometry::read(dev)?;
            return Ok(Some(match geo.fat_type {
                FatType::Fat12 => FsType::Fat12,
                FatType::Fat16 => FsType::Fat16,
                FatType::Fat32 => FsType::Fat32,
            }));
        }
    }
    if size >= EXT_SB + 1024 {
        let mut sb = [0u8; 1024];
        dev.read_at(EXT_SB, &mut sb)?;
        if u16::from_le_bytes([sb[56], sb[57]]) == EXT_MAGIC {
            let word = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
            let (compat, incompat, ro_compat) = (word(92), word(96), word(100));
            return Ok(Some(
                if incompat & EXT4_INCOMPAT != 0 || ro_compat & EXT4_RO_COMPAT != 0 {
                    FsType::Ext4
                } else if compat & EXT3_COMPAT_JOURNAL != 0 {
                    FsType::Ext3
                } else {
                    FsType::Ext2
                },
            ));
        }
    }
    Ok(None)
}
