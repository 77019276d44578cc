//! Filesystem summaries: what `inspect` says about a partition's contents.
//! FAT through the `fatfs` crate (free space counted from the FAT itself,
//! not the FSInfo hint); ext2/3/4 from the superblock decoded by `mkext4`.

use crate::block::{BlockDevice, DeviceCursor};
use crate::fs::FsType;
use crate::source::to_hex;
use crate::{Error, Result};
use serde::Serialize;

/// What a partition (or a bare image) holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FsInfo {
    Fat(FatInfo),
    Ext(ExtInfo),
    /// An MBR extended-partition container (its logical partitions are
    /// listed on their own).
    Extended,
    /// Nothing we recognise.
    Unknown,
}

impl FsInfo {
    /// Bytes the filesystem says it spans at least (to catch truncation).
    pub fn min_bytes(&self) -> Option<u64> {
        match self {
            FsInfo::Fat(f) => Some(f.size),
            FsInfo::Ext(e) => e.blocks.checked_mul(e.block_size),
            FsInfo::Extended | FsInfo::Unknown => None,
        }
    }
}

/// A FAT12/16/32 filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FatInfo {
    /// `fat12`, `fat16` or `fat32`.
    pub fat_type: &'static str,
    /// Volume label (root-directory label, else the boot sector's), trimmed.
    pub label: Option<String>,
    /// Volume serial as `XXXX-XXXX`.
    pub volume_id: String,
    pub cluster_size: u64,
    /// Bytes of the data area (clusters × cluster size).
    pub size: u64,
    /// Bytes in free clusters, counted from the first FAT.
    pub free: u64,
}

/// An ext2/3/4 filesystem, from its primary superblock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtInfo {
    /// `ext2`, `ext3` or `ext4`, decided by features as blkid does.
    pub version: &'static str,
    pub uuid: String,
    pub label: Option<String>,
    pub block_size: u64,
    pub blocks: u64,
    pub free_blocks: u64,
    pub inodes: u64,
    pub free_inodes: u64,
    /// Whether the superblock says it was cleanly unmounted.
    pub clean: bool,
    /// Feature names as `dumpe2fs` prints them (unknown bits as hex).
    pub features: Vec<String>,
    /// Why nodeimg's ext4 engine would refuse to change it (`None`: it can).
    pub changes_refused: Option<String>,
}

/// Identifies and summarises the filesystem on `dev` (a partition window or
/// a whole bare image). Reads go forward, so streamed images work.
pub fn probe(dev: &dyn BlockDevice, what: &str) -> Result<FsInfo> {
    let size = dev.size();
    let mut head = vec![0u8; (crate::fs::PROBE_BYTES as u64).min(size) as usize];
    dev.read_at(0, &mut head)?;
    // The one recogniser; a FAT boot sector whose geometry lies is still
    // FAT, and `probe_fat` says what is wrong with it.
    match crate::fs::recognise(&head, size) {
        Ok(Some(FsType::Fat12 | FsType::Fat16 | FsType::Fat32)) | Err(_) => {
            probe_fat(dev, &head, what).map(FsInfo::Fat)
        }
        Ok(Some(FsType::Ext2 | FsType::Ext3 | FsType::Ext4)) => {
            probe_ext(&head[1024..2048], size, what).map(FsInfo::Ext)
        }
        Ok(None) => Ok(FsInfo::Unknown),
    }
}

fn le16(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}
fn le32(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]))
}

fn probe_fat(dev: &dyn BlockDevice, boot: &[u8], what: &str) -> Result<FatInfo> {
    let ctx = || format!("FAT filesystem in {what}");
    // Geometry from the BPB, checked against the partition before fatfs
    // (which trusts it) touches anything else.
    let bps = le16(boot, 11);
    let spc = u64::from(boot[13]);
    let reserved = le16(boot, 14);
    let fats = u64::from(boot[16]);
    let root_entries = le16(boot, 17);
    let total = match le16(boot, 19) {
        0 => le32(boot, 32),
        n => n,
    };
    let fat_sectors = match le16(boot, 22) {
        0 => le32(boot, 36),
        n => n,
    };
    let claimed = total * bps;
    if claimed > dev.size() {
        return Err(Error::corrupt(
            ctx(),
            format!(
                "boot sector claims {claimed} bytes but there are only {}",
                dev.size()
            ),
        ));
    }
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let first_data = reserved + fats * fat_sectors + root_sectors;
    if reserved == 0 || fat_sectors == 0 || first_data >= total {
        return Err(Error::corrupt(
            ctx(),
            format!("inconsistent geometry: {reserved} reserved sectors, {fats} FATs of {fat_sectors} sectors, {total} sectors in all"),
        ));
    }
    let clusters = (total - first_data) / spc;

    let cursor = DeviceCursor::new(dev);
    let fs = fatfs::FileSystem::new(cursor, fatfs::FsOptions::new())
        .map_err(|e| Error::corrupt(ctx(), e.to_string()))?;
    let fat_type = match fs.fat_type() {
        fatfs::FatType::Fat12 => "fat12",
        fatfs::FatType::Fat16 => "fat16",
        fatfs::FatType::Fat32 => "fat32",
    };
    let entry_bits = match fs.fat_type() {
        fatfs::FatType::Fat12 => 12,
        fatfs::FatType::Fat16 => 16,
        fatfs::FatType::Fat32 => 32,
    };
    if (clusters + 2) * entry_bits > fat_sectors * bps * 8 {
        return Err(Error::corrupt(
            ctx(),
            format!("{clusters} clusters do not fit in a FAT of {fat_sectors} sectors"),
        ));
    }
    let free = crate::fs::fat::table::count_zero_entries(dev, reserved * bps, entry_bits, clusters)
        .map_err(|e| Error::corrupt(ctx(), e.to_string()))?;
    let root_label = fs
        .read_volume_label_from_root_dir()
        .map_err(|e| Error::corrupt(ctx(), format!("reading the root directory: {e}")))?;
    let label = root_label
        .or_else(|| Some(fs.volume_label()))
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty() && l != "NO NAME");
    let id = fs.volume_id();
    let cluster_size = u64::from(fs.cluster_size());
    Ok(FatInfo {
        fat_type,
        label,
        volume_id: format!("{:04X}-{:04X}", id >> 16, id & 0xffff),
        cluster_size,
        size: clusters * cluster_size,
        free: free * cluster_size,
    })
}

fn probe_ext(sb: &[u8], size: u64, what: &str) -> Result<ExtInfo> {
    let ctx = || format!("ext filesystem in {what}");
    let s =
        mkext4::spec::Superblock::decode(sb).map_err(|e| Error::corrupt(ctx(), e.to_string()))?;
    if s.log_block_size > 6 {
        return Err(Error::corrupt(
            ctx(),
            format!("block size 2^(10+{}) is out of range", s.log_block_size),
        ));
    }
    let block_size = s.block_size();
    let claimed = u128::from(s.blocks_count) * u128::from(block_size);
    if claimed > u128::from(size) {
        return Err(Error::corrupt(
            ctx(),
            format!(
                "superblock claims {claimed} bytes but there are only {size} (truncated image?)"
            ),
        ));
    }
    let label = String::from_utf8_lossy(&s.volume_name)
        .trim_end_matches('\0')
        .to_string();
    let u = &s.uuid;
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        to_hex(&u[0..4]),
        to_hex(&u[4..6]),
        to_hex(&u[6..8]),
        to_hex(&u[8..10]),
        to_hex(&u[10..16])
    );
    Ok(ExtInfo {
        version: crate::fs::ext_kind(s.feature_compat, s.feature_incompat, s.feature_ro_compat)
            .name(),
        uuid,
        label: Some(label).filter(|l| !l.is_empty()),
        block_size,
        blocks: s.blocks_count,
        free_blocks: s.free_blocks_count,
        inodes: u64::from(s.inodes_count),
        free_inodes: u64::from(s.free_inodes_count),
        clean: s.state & 1 != 0 && s.state & 2 == 0,
        features: crate::fs::ext4::feature_names(
            s.feature_compat,
            s.feature_incompat,
            s.feature_ro_compat,
        ),
        changes_refused: crate::fs::ext4::change_refusal(sb),
    })
}
