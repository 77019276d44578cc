//! Creating a fresh FAT16 or FAT32 filesystem on a device.

use crate::block::{BlockDevice, DeviceCursor};
use crate::fs::fat::bpb::{FatType, Geometry};
use crate::fs::fat::time::DosTime;
use crate::fs::Timestamp;
use crate::{Error, Result};

/// Which FAT variant to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatBits {
    Fat16,
    Fat32,
}

/// What `format` creates. Defaults: FAT32, no label (`NO NAME`), a volume
/// id derived from `now` (as mkfs.fat derives it from the clock), cluster
/// size by volume size.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    pub bits: FatBits,
    /// Up to 11 characters of printable ASCII; stored upper-case.
    pub label: Option<String>,
    pub volume_id: Option<u32>,
    /// Bytes per cluster (a power of two from 512 to 32768); `None` picks one.
    pub cluster_size: Option<u32>,
    /// The time of the label entry and, without `volume_id`, the source of
    /// the volume id: given by the caller (the command line reads
    /// `SOURCE_DATE_EPOCH` or the clock once), never read here.
    pub now: Timestamp,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            bits: FatBits::Fat32,
            label: None,
            volume_id: None,
            cluster_size: None,
            now: Timestamp::default(),
        }
    }
}

/// Characters a FAT label may not contain (the short-name rules).
const LABEL_FORBIDDEN: &[u8] = b"\"*+,./:;<=>?[\\]|";

fn label_bytes(label: &str) -> Result<[u8; 11]> {
    let upper = label.to_ascii_uppercase();
    let bad = |c: u8| !(0x20..0x7F).contains(&c) || LABEL_FORBIDDEN.contains(&c);
    if upper.len() > 11 || upper.bytes().any(bad) || upper.trim().is_empty() {
        return Err(Error::Invalid(format!(
            "FAT label {label:?}: 1 to 11 printable ASCII characters, none of {}",
            String::from_utf8_lossy(LABEL_FORBIDDEN)
        )));
    }
    let mut out = [b' '; 11];
    out[..upper.len()].copy_from_slice(upper.as_bytes());
    Ok(out)
}

/// Cluster size for a volume of `bytes`: mkfs.fat's choices, which keep
/// FAT32 above its 65525-cluster minimum and FAT16 below its maximum.
fn default_cluster_size(bits: FatBits, bytes: u64) -> u32 {
    const MIB: u64 = 1 << 20;
    match bits {
        FatBits::Fat16 => match bytes {
            b if b <= 16 * MIB => 1024,
            b if b <= 128 * MIB => 2048,
            b if b <= 256 * MIB => 4096,
            b if b <= 512 * MIB => 8192,
            b if b <= 1024 * MIB => 16384,
            _ => 32768,
        },
        FatBits::Fat32 => match bytes {
            b if b <= 260 * MIB => 512,
            b if b <= 8192 * MIB => 4096,
            b if b <= 16384 * MIB => 8192,
            b if b <= 32768 * MIB => 16384,
            _ => 32768,
        },
    }
}

/// Checks that a volume of `size` bytes can be formatted with `opts` (the
/// variant's cluster-count limits), before anything is created; returns the
/// variant and cluster size [`format()`] will use.
pub fn check_size(size: u64, opts: &FormatOptions) -> Result<(fatfs::FatType, u32)> {
    let cluster_size = opts
        .cluster_size
        .unwrap_or_else(|| default_cluster_size(opts.bits, size));
    if !(512..=32768).contains(&cluster_size) || !cluster_size.is_power_of_two() {
        return Err(Error::Invalid(format!(
            "cluster size {cluster_size}: must be a power of two from 512 to 32768"
        )));
    }
    // Cluster-count limits of each variant, with room for the metadata.
    let clusters = size / u64::from(cluster_size);
    let (min, max, fat_type, name) = match opts.bits {
        FatBits::Fat16 => (4085 + 64, 65524, fatfs::FatType::Fat16, "FAT16"),
        FatBits::Fat32 => (65525 + 64, 0x0FFF_FFF5, fatfs::FatType::Fat32, "FAT32"),
    };
    if clusters < min {
        return Err(Error::Invalid(format!(
            "{size} bytes is too small for {name} with {cluster_size}-byte clusters (at least {} bytes)",
            min * u64::from(cluster_size)
        )));
    }
    let sectors_max = u64::from(u32::MAX) * 512;
    let clusters_max = (max + max / 64) * u64::from(cluster_size);
    if clusters > max + max / 64 || size / 512 > u64::from(u32::MAX) {
        return Err(Error::Invalid(format!(
            "{size} bytes is too large for {name} with {cluster_size}-byte clusters (at most {} bytes)",
            sectors_max.min(clusters_max)
        )));
    }
    Ok((fat_type, cluster_size))
}

/// Formats all of `dev` as FAT16 or FAT32, replacing whatever was there,
/// and returns the new volume's geometry. Only metadata is written; data
/// clusters keep their old bytes (a sparse image stays sparse).
pub fn format(dev: &dyn BlockDevice, opts: &FormatOptions) -> Result<Geometry> {
    let size = dev.size();
    let (fat_type, cluster_size) = check_size(size, opts)?;
    let what = || format!("FAT filesystem on {}", dev.describe());
    let name = if fat_type == fatfs::FatType::Fat16 {
        "FAT16"
    } else {
        "FAT32"
    };
    let label = opts.label.as_deref().map(label_bytes).transpose()?;
    let volume_id = opts.volume_id.unwrap_or_else(|| {
        // Like mkfs.fat: the volume id comes from the clock.
        let t = DosTime::from_timestamp(opts.now);
        (u32::from(t.date) << 16) | u32::from(t.time)
    });
    let mut options = fatfs::FormatVolumeOptions::new()
        .fat_type(fat_type)
        .bytes_per_cluster(cluster_size)
        .volume_id(volume_id)
        .total_sectors((size / 512) as u32);
    if let Some(label) = label {
        options = options.volume_label(label);
    }
    fatfs::format_volume(DeviceCursor::new(dev), options)
        .map_err(|e| Error::io_context(format!("formatting {name} on {}", dev.describe()), e))?;
    let geo = Geometry::read(dev)?;
    if let Some(label) = label {
        write_root_label(dev, &geo, &label, opts.now)?;
    }
    if geo.fat_type == FatType::Fat32 {
        crate::fs::fat::write_fsinfo(dev, &geo)?;
    }
    dev.flush()?;
    if geo.fat_type != FatType::Fat16 && opts.bits == FatBits::Fat16
        || geo.fat_type != FatType::Fat32 && opts.bits == FatBits::Fat32
    {
        return Err(Error::corrupt(
            what(),
            format!("asked for {name}, got {}", geo.fat_type.name()),
        ));
    }
    Ok(geo)
}

/// Writes the volume-label entry into the (empty) root directory, where
/// most readers look for the label.
fn write_root_label(
    dev: &dyn BlockDevice,
    geo: &Geometry,
    label: &[u8; 11],
    now: Timestamp,
) -> Result<()> {
    let at = match geo.fat_type {
        FatType::Fat32 => geo.cluster_offset(geo.root_cluster),
        _ => geo.root_region().start,
    };
    let mut entry = [0u8; 32];
    entry[..11].copy_from_slice(label);
    entry[11] = crate::fs::fat::dir::ATTR_VOLUME;
    let t = DosTime::from_timestamp(now);
    entry[22..24].copy_from_slice(&t.time.to_le_bytes());
    entry[24..26].copy_from_slice(&t.date.to_le_bytes());
    dev.write_at(at, &entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;

    #[test]
    fn formats_both_variants_and_reads_back() {
        let dev = MemDevice::zeroed(40 << 20);
        let geo = format(
            &dev,
            &FormatOptions {
                bits: FatBits::Fat32,
                label: Some("boot".into()),
                volume_id: Some(0xDEAD_BEEF),
                cluster_size: None,
                now: Timestamp::default(),
            },
        )
        .unwrap();
        assert_eq!(geo.fat_type, FatType::Fat32);
        assert_eq!(geo.volume_id, Some(0xDEAD_BEEF));
        assert_eq!(geo.label.as_deref(), Some("BOOT"));

        let dev = MemDevice::zeroed(16 << 20);
        let opts = FormatOptions {
            bits: FatBits::Fat16,
            ..Default::default()
        };
        assert_eq!(format(&dev, &opts).unwrap().fat_type, FatType::Fat16);
    }

    #[test]
    fn refuses_sizes_and_labels_that_cannot_work() {
        let dev = MemDevice::zeroed(8 << 20);
        assert!(format(&dev, &FormatOptions::default()).is_err());
        let dev = MemDevice::zeroed(1 << 20);
        let opts = FormatOptions {
            bits: FatBits::Fat16,
            ..Default::default()
        };
        assert!(format(&dev, &opts).is_err());
        assert!(label_bytes("way too long label").is_err());
        assert!(label_bytes("a/b").is_err());
    }
}
