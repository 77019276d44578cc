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
const EXT_SB: usize = 1024;
const EXT_MAGIC: u16 = 0xEF53;
/// Bytes [`recognise`] looks at.
pub const PROBE_BYTES: usize = 2048;

/// Which of ext2, ext3 and ext4 a superblock's feature words make it, by
/// blkid's rule — the one rule every part of nodeimg uses: a feature ext3
/// does not know (anything beyond filetype, needs_recovery and meta_bg;
/// sparse_super, large_file and btree_dir) makes ext4; else a journal makes
/// ext3; else ext2.
pub fn ext_kind(compat: u32, incompat: u32, ro_compat: u32) -> FsType {
    const EXT3_INCOMPAT: u32 = 0x2 | 0x4 | 0x10;
    const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;
    const HAS_JOURNAL: u32 = 0x4;
    if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
        FsType::Ext4
    } else if compat & HAS_JOURNAL != 0 {
        FsType::Ext3
    } else {
        FsType::Ext2
    }
}

/// Whether a 512-byte sector 0 is a filesystem's boot sector (FAT, NTFS,
/// exFAT) rather than a master boot record: both end in `55 AA`. The jump
/// and the type string decide, not the geometry: a FAT boot sector whose
/// geometry is broken is still a (corrupt) filesystem.
pub fn is_boot_sector(s: &[u8]) -> bool {
    if s.len() < 512 {
        return false;
    }
    if &s[3..11] == b"NTFS    " || &s[3..11] == b"EXFAT   " {
        return true;
    }
    let jump = s[0] == 0xeb || s[0] == 0xe9;
    looks_like_fat(s) || (jump && (&s[54..57] == b"FAT" || &s[82..87] == b"FAT32"))
}

/// The recogniser: what filesystem the first [`PROBE_BYTES`] bytes of a
/// volume of `size` bytes belong to. Pure — `inspect`, [`probe`]
/// (`fs::open`), `layout` and the flasher all decide through it. FAT by its
/// boot sector (a jump, `55 AA`, a valid sector size; the variant by cluster
/// count), ext2/3/4 by the superblock magic and [`ext_kind`]. `Ok(None)`
/// when nothing matches; a FAT boot sector whose geometry lies is an
/// [`Error::Corrupt`](crate::Error::Corrupt), not "unknown".
pub fn recognise(head: &[u8], size: u64) -> std::result::Result<Option<FsType>, String> {
    if head.len() >= 512 && looks_like_fat(head) {
        let mut sector = [0u8; 512];
        sector.copy_from_slice(&head[..512]);
        let geo = Geometry::parse(&sector, size)?;
        return Ok(Some(match geo.fat_type {
            FatType::Fat12 => FsType::Fat12,
            FatType::Fat16 => FsType::Fat16,
            FatType::Fat32 => FsType::Fat32,
        }));
    }
    if head.len() >= EXT_SB + 1024 {
        let sb = &head[EXT_SB..EXT_SB + 1024];
        if u16::from_le_bytes([sb[56], sb[57]]) == EXT_MAGIC {
            let word = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
            return Ok(Some(ext_kind(word(92), word(96), word(100))));
        }
    }
    Ok(None)
}

/// What filesystem fills `dev`: reads its first bytes and asks [`recognise`].
pub fn probe(dev: &dyn BlockDevice) -> Result<Option<FsType>> {
    let size = dev.size();
    let mut head = vec![0u8; (PROBE_BYTES as u64).min(size) as usize];
    dev.read_at(0, &mut head)?;
    recognise(&head, size)
        .map_err(|why| crate::Error::corrupt(format!("FAT boot sector of {}", dev.describe()), why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_on_ext3_is_ext4_as_blkid_says() {
        // mkfs.ext3 -O quota: has_journal + filetype + sparse_super,large_file,quota.
        assert_eq!(ext_kind(0x4 | 0x8, 0x2, 0x1 | 0x2 | 0x100), FsType::Ext4);
        assert_eq!(ext_kind(0x4 | 0x8, 0x2, 0x1 | 0x2), FsType::Ext3);
        assert_eq!(ext_kind(0x8, 0x2, 0x1), FsType::Ext2);
        assert_eq!(ext_kind(0, 0x40, 0), FsType::Ext4);
    }
}
