//! The FAT boot sector (BIOS parameter block), parsed and checked by us
//! before `fatfs` ever sees it.
//!
//! `fatfs` validates some fields itself but trusts others (a FAT too small for
//! the cluster count underflows, a volume longer than the device reads past
//! its end). Every geometry the rest of this module and `fatfs` rely on is
//! checked here, so a boot sector that lies is an [`Error::Corrupt`].

use crate::block::BlockDevice;
use crate::{Error, Result};
use std::ops::Range;

/// Which FAT variant a volume is; decided by its cluster count, as the
/// specification says (never by the type string in the boot sector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

impl FatType {
    /// The variant a volume with `clusters` data clusters must be.
    pub fn from_clusters(clusters: u64) -> FatType {
        if clusters < 4085 {
            FatType::Fat12
        } else if clusters < 65525 {
            FatType::Fat16
        } else {
            FatType::Fat32
        }
    }

    /// `fat12`, `fat16` or `fat32`.
    pub fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "fat12",
            FatType::Fat16 => "fat16",
            FatType::Fat32 => "fat32",
        }
    }

    /// Bits per FAT entry.
    pub fn entry_bits(self) -> u64 {
        match self {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        }
    }
}

/// The checked geometry of a FAT volume, in bytes and clusters.
#[derive(Debug, Clone)]
pub struct Geometry {
    pub fat_type: FatType,
    pub bytes_per_sector: u64,
    pub cluster_size: u64,
    pub reserved_sectors: u64,
    pub fats: u64,
    pub sectors_per_fat: u64,
    pub root_entries: u64,
    pub total_sectors: u64,
    /// Number of data clusters; valid cluster numbers are `2..clusters + 2`.
    pub clusters: u64,
    /// First cluster of the root directory on FAT32.
    pub root_cluster: u32,
    /// The FAT that is read (FAT32 may disable mirroring and name one).
    pub active_fat: u64,
    pub volume_id: Option<u32>,
    pub label: Option<String>,
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// Whether `sector` (the first 512 bytes of a volume) carries the FAT boot
/// sector signatures: a jump instruction, `55 AA` and a sector size FAT
/// allows. Says nothing about whether the rest is true.
pub fn looks_like_fat(sector: &[u8]) -> bool {
    if sector.len() < 512 || sector[510..512] != [0x55, 0xAA] {
        return false;
    }
    let jump = sector[0] == 0xE9 || (sector[0] == 0xEB && sector[2] == 0x90);
    jump && matches!(le16(sector, 11), 512 | 1024 | 2048 | 4096)
}

impl Geometry {
    /// Reads and checks the boot sector of `dev`.
    pub fn read(dev: &dyn BlockDevice) -> Result<Geometry> {
        let what = || format!("FAT boot sector of {}", dev.describe());
        if dev.size() < 512 {
            return Err(Error::corrupt(
                what(),
                format!("device is only {} bytes", dev.size()),
            ));
        }
        let mut sector = [0u8; 512];
        dev.read_at(0, &mut sector)?;
        if !looks_like_fat(&sector) {
            return Err(Error::corrupt(
                what(),
                "no FAT signature (jump instruction, 55 AA, sector size)",
            ));
        }
        Self::parse(&sector, dev.size()).map_err(|why| Error::corrupt(what(), why))
    }

    /// Checks a boot sector against itself and against a device of
    /// `device_size` bytes; the error is the reason it lies.
    pub fn parse(b: &[u8; 512], device_size: u64) -> Result<Geometry, String> {
        let bytes_per_sector = le16(b, 11);
        let sectors_per_cluster = u64::from(b[13]);
        let reserved_sectors = le16(b, 14);
        let fats = u64::from(b[16]);
        let root_entries = le16(b, 17);
        let total16 = le16(b, 19);
        let spf16 = le16(b, 22);
        let total32 = le32(b, 32);
        if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
            return Err(format!("{bytes_per_sector} bytes per sector"));
        }
        if !(1..=128).contains(&sectors_per_cluster) || !sectors_per_cluster.is_power_of_two() {
            return Err(format!("{sectors_per_cluster} sectors per cluster"));
        }
        if reserved_sectors == 0 {
            return Err("no reserved sectors".into());
        }
        if !(1..=4).contains(&fats) {
            return Err(format!("{fats} FATs"));
        }
        if (total16 == 0) == (total32 == 0) {
            return Err("exactly one of the 16- and 32-bit sector counts must be set".into());
        }
        let total_sectors = total16.max(total32);
        let is_fat32 = spf16 == 0;
        let (sectors_per_fat, root_cluster, active_fat) = if is_fat32 {
            let spf32 = le32(b, 36);
            let ext_flags = le16(b, 40);
            let version = le16(b, 42);
            let root = le32(b, 44);
            let fsinfo = le16(b, 48);
            let backup = le16(b, 50);
            if spf32 == 0 {
                return Err("FAT32 volume with 0 sectors per FAT".into());
            }
            if root_entries != 0 || total16 != 0 {
                return Err("FAT32 volume with FAT16 root entry or sector counts".into());
            }
            if version != 0 {
                return Err(format!("unknown FAT32 version {version:#x}"));
            }
            if fsinfo >= reserved_sectors || backup >= reserved_sectors {
                return Err(format!(
                    "FSInfo sector {fsinfo} or backup boot sector {backup} outside the {reserved_sectors} reserved sectors"
                ));
            }
            // Bit 7 set: mirroring off, the low four bits name the one FAT in use.
            let active = if ext_flags & 0x80 != 0 {
                ext_flags & 0x0F
            } else {
                0
            };
            if active >= fats {
                return Err(format!("active FAT {active} of {fats}"));
            }
            (spf32, root as u32, active)
        } else {
            if root_entries == 0 {
                return Err("FAT12/16 volume without root directory entries".into());
            }
            (spf16, 0, 0)
        };
        let root_dir_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
        let first_data = reserved_sectors + fats * sectors_per_fat + root_dir_sectors;
        if first_data >= total_sectors {
            return Err(format!(
                "metadata ({first_data} sectors) fills the whole volume ({total_sectors} sectors)"
            ));
        }
        let volume_bytes = total_sectors * bytes_per_sector;
        if volume_bytes > device_size {
            return Err(format!(
                "volume of {volume_bytes} bytes does not fit the {device_size}-byte device (truncated image?)"
            ));
        }
        let clusters = (total_sectors - first_data) / sectors_per_cluster;
        let fat_type = FatType::from_clusters(clusters);
        if is_fat32 != (fat_type == FatType::Fat32) {
            return Err(format!(
                "{clusters} clusters make a {} volume, but the FAT size fields say {}",
                fat_type.name(),
                if is_fat32 { "fat32" } else { "fat12/16" }
            ));
        }
        if fat_type == FatType::Fat32 && clusters > 0x0FFF_FFF5 {
            return Err(format!(
                "{clusters} clusters is more than FAT32 can address"
            ));
        }
        let fat_entries = sectors_per_fat * bytes_per_sector * 8 / fat_type.entry_bits();
        if fat_entries < clusters + 2 {
            return Err(format!(
                "each FAT has room for {fat_entries} entries but the volume has {clusters} clusters"
            ));
        }
        if is_fat32 && !(2..clusters + 2).contains(&u64::from(root_cluster)) {
            return Err(format!(
                "root directory cluster {root_cluster} out of range"
            ));
        }
        let ext_at = if is_fat32 { 66 } else { 38 };
        let (volume_id, label) = if b[ext_at] == 0x29 {
            let id = le32(b, ext_at + 1) as u32;
            let label = String::from_utf8_lossy(&b[ext_at + 5..ext_at + 16])
                .trim_end()
                .to_string();
            (Some(id), Some(label))
        } else {
            (None, None)
        };
        Ok(Geometry {
            fat_type,
            bytes_per_sector,
            cluster_size: sectors_per_cluster * bytes_per_sector,
            reserved_sectors,
            fats,
            sectors_per_fat,
            root_entries,
            total_sectors,
            clusters,
            root_cluster,
            active_fat,
            volume_id,
            label,
        })
    }

    /// Byte offset of the active FAT.
    pub fn fat_offset(&self) -> u64 {
        (self.reserved_sectors + self.active_fat * self.sectors_per_fat) * self.bytes_per_sector
    }

    /// Bytes of the FAT12/16 root directory region (empty on FAT32).
    pub fn root_region(&self) -> Range<u64> {
        let start =
            (self.reserved_sectors + self.fats * self.sectors_per_fat) * self.bytes_per_sector;
        start..start + self.root_entries * 32
    }

    /// Byte offset of the first data cluster (cluster 2).
    pub fn data_offset(&self) -> u64 {
        let root_sectors = (self.root_entries * 32).div_ceil(self.bytes_per_sector);
        (self.reserved_sectors + self.fats * self.sectors_per_fat + root_sectors)
            * self.bytes_per_sector
    }

    /// Byte offset of a data cluster; the caller checks it is in range.
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset() + (u64::from(cluster) - 2) * self.cluster_size
    }

    /// Whether `cluster` names a data cluster of this volume.
    pub fn is_data_cluster(&self, cluster: u32) -> bool {
        (2..self.clusters + 2).contains(&u64::from(cluster))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FAT16 boot sector like `mkfs.vfat -F 16` writes for 16 MiB.
    fn fat16() -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 4;
        b[14..16].copy_from_slice(&4u16.to_le_bytes());
        b[16] = 2;
        b[17..19].copy_from_slice(&512u16.to_le_bytes());
        b[19..21].copy_from_slice(&32768u16.to_le_bytes());
        b[21] = 0xF8;
        b[22..24].copy_from_slice(&32u16.to_le_bytes());
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn accepts_a_sane_fat16_boot_sector() {
        let g = Geometry::parse(&fat16(), 16 << 20).unwrap();
        assert_eq!(g.fat_type, FatType::Fat16);
        assert_eq!(g.cluster_size, 2048);
        assert_eq!(g.clusters, (32768 - 4 - 64 - 32) / 4);
    }

    #[test]
    fn refuses_lies() {
        let mut b = fat16();
        b[22..24].copy_from_slice(&1u16.to_le_bytes());
        assert!(Geometry::parse(&b, 16 << 20)
            .unwrap_err()
            .contains("room for"));
        assert!(Geometry::parse(&fat16(), 8 << 20)
            .unwrap_err()
            .contains("does not fit"));
        let mut b = fat16();
        b[13] = 3;
        assert!(Geometry::parse(&b, 16 << 20).is_err());
        let mut b = fat16();
        b[19..21].copy_from_slice(&50u16.to_le_bytes());
        assert!(Geometry::parse(&b, 16 << 20).is_err());
    }

    #[test]
    fn never_panics_on_arbitrary_sectors() {
        // A cheap deterministic fuzz: xorshift bytes over a valid template.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut b = fat16();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = 11 + (x % 60) as usize;
                b[at] = (x >> 32) as u8;
            }
            let _ = Geometry::parse(&b, 1 << 40);
        }
    }
}
