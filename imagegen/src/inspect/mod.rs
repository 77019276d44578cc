//! `inspect`: what an image holds — partition table, the filesystem in each
//! partition, and whether the gap before the first partition carries data
//! (board firmware). Raw images are read in place; compressed images are
//! read once, forward, without a temporary copy. The JSON form of
//! [`Report`] is documented in `docs/inspect.md` and kept stable.

mod fs;
mod stream;

pub use fs::{probe, ExtInfo, FatInfo, FsInfo};
pub use stream::StreamDevice;

use crate::block::{BlockDevice, FileDevice, Window};
use crate::layout::{self, PartKind, PartitionTable, Scheme, SECTOR};
use crate::source::{Compression, ImageSource};
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// Everything `inspect` reports about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The image as named on the command line.
    pub image: String,
    /// `raw`, `xz`, `zstd` or `gzip`.
    pub compression: Compression,
    /// Bytes of the file as stored.
    pub file_size: u64,
    /// Bytes of the disk image (decompressed).
    pub size: u64,
    /// `mbr`, `gpt` or `none` (a bare filesystem image).
    pub scheme: Scheme,
    /// MBR signature (8 hex digits) or GPT disk GUID.
    pub disk_id: Option<String>,
    /// Whether the MBR's boot-code area (bytes 0..440) is non-zero.
    pub boot_code: bool,
    /// The bytes between the partition table and the first partition.
    pub gap: Option<Gap>,
    pub partitions: Vec<PartitionReport>,
    /// For a bare image (`scheme` = `none`): the filesystem of the whole image.
    pub filesystem: Option<FsInfo>,
}

/// The region before the first partition, where boards keep firmware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub start: u64,
    pub end: u64,
    /// Whether any byte in it is non-zero.
    pub nonzero: bool,
    /// Offset of the first non-zero byte, if any.
    pub first_nonzero: Option<u64>,
}

/// One partition and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    pub number: u32,
    pub start: u64,
    pub size: u64,
    /// MBR type as `0x0c`, or the GPT type GUID.
    #[serde(rename = "type")]
    pub kind: String,
    /// A human name for well-known types.
    pub type_name: Option<&'static str>,
    pub bootable: bool,
    /// GPT partition name.
    pub name: Option<String>,
    /// GPT unique partition GUID.
    pub guid: Option<String>,
    pub filesystem: FsInfo,
}

/// Inspects the image file at `path`, whatever its compression.
pub fn inspect_path(path: &Path) -> Result<Report> {
    let file_size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let compression = Compression::of_file(path)?;
    let image = path.display().to_string();
    let mut report = if compression.is_compressed() {
        let p = path.to_path_buf();
        let dev = StreamDevice::new(move || ImageSource::open(&p))?;
        let table = layout::parse_table(&dev)?;
        // Overlaps can be checked before the size is known.
        layout::validate(&table, u64::MAX, &image)?;
        let report = inspect_table(&dev, &image, &table);
        // A partition past the end shows up as a read past the end of the
        // stream; once the size is known, validation names the entry.
        if let (Err(_), Some(size)) = (&report, dev.known_size()) {
            layout::validate(&table, size, &image)?;
        }
        let mut report = report?;
        report.size = dev.finish()?;
        layout::validate(&table, report.size, &image)?;
        if let Some(claimed) = report.filesystem.as_ref().and_then(FsInfo::min_bytes) {
            if claimed > report.size {
                return Err(Error::corrupt(
                    format!("filesystem in {image}"),
                    format!(
                        "needs {claimed} bytes but the image has {} (truncated image?)",
                        report.size
                    ),
                ));
            }
        }
        report
    } else {
        inspect_device(&FileDevice::open(path)?, &image)?
    };
    report.compression = compression;
    report.file_size = file_size;
    Ok(report)
}

/// Inspects a device of known size; `image` names it in the report.
pub fn inspect_device(dev: &dyn BlockDevice, image: &str) -> Result<Report> {
    let table = layout::read_table(dev)?;
    let mut report = inspect_table(dev, image, &table)?;
    report.size = dev.size();
    report.file_size = dev.size();
    Ok(report)
}

/// Builds the report for `table`, reading `dev` in offset order only (so a
/// stream can serve it). `size` and `file_size` are left for the caller.
fn inspect_table(dev: &dyn BlockDevice, image: &str, table: &PartitionTable) -> Result<Report> {
    let mut report = Report {
        image: image.to_string(),
        compression: Compression::Raw,
        file_size: 0,
        size: 0,
        scheme: table.scheme,
        disk_id: table.disk_id.clone(),
        boot_code: false,
        gap: None,
        partitions: Vec::new(),
        filesystem: None,
    };
    if table.scheme == Scheme::None {
        report.filesystem = Some(probe(dev, image)?);
        return Ok(report);
    }
    let mut sector0 = [0u8; 512];
    dev.read_at(0, &mut sector0)?;
    report.boot_code = sector0[..440].iter().any(|&b| b != 0);
    let gap_start = table_end(dev, table.scheme)?;

    let mut by_start: Vec<_> = table.partitions.iter().collect();
    by_start.sort_by_key(|p| (p.start, p.number));
    if let Some(first) = by_start.first() {
        if first.start > gap_start {
            let first_nonzero = first_nonzero(dev, gap_start, first.start)?;
            report.gap = Some(Gap {
                start: gap_start,
                end: first.start,
                nonzero: first_nonzero.is_some(),
                first_nonzero,
            });
        }
    }
    for p in by_start {
        let filesystem = if p.kind.is_extended() {
            FsInfo::Extended
        } else {
            let what = format!("partition {} of {image}", p.number);
            let win = Window::new(dev, p.start, p.size)?;
            probe(&win, &what)?
        };
        report.partitions.push(PartitionReport {
            number: p.number,
            start: p.start,
            size: p.size,
            kind: p.kind.to_string(),
            type_name: type_name(&p.kind),
            bootable: p.bootable,
            name: p.name.clone(),
            guid: p.guid.clone(),
            filesystem,
        });
    }
    report.partitions.sort_by_key(|p| p.number);
    Ok(report)
}

/// First byte after the partition table structures at the start of the disk.
fn table_end(dev: &dyn BlockDevice, scheme: Scheme) -> Result<u64> {
    if scheme != Scheme::Gpt {
        return Ok(SECTOR);
    }
    // The header was validated by read_table; only its geometry is needed.
    let mut h = [0u8; 92];
    dev.read_at(SECTOR, &mut h)?;
    let part_start = u64::from_le_bytes(h[72..80].try_into().unwrap_or_default());
    let entries = u64::from(u32::from_le_bytes(h[80..84].try_into().unwrap_or_default()));
    let end = part_start * SECTOR + entries * 128;
    Ok(end.div_ceil(SECTOR) * SECTOR)
}

/// Offset of the first non-zero byte in `[start, end)`.
fn first_nonzero(dev: &dyn BlockDevice, start: u64, end: u64) -> Result<Option<u64>> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = start;
    while at < end {
        let n = (end - at).min(buf.len() as u64) as usize;
        dev.read_at(at, &mut buf[..n])?;
        if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
            return Ok(Some(at + i as u64));
        }
        at += n as u64;
    }
    Ok(None)
}

/// Names of common partition types (as fdisk calls them).
pub fn type_name(kind: &PartKind) -> Option<&'static str> {
    match kind {
        PartKind::Mbr(t) => Some(match t {
            0x01 => "FAT12",
            0x04 | 0x06 => "FAT16",
            0x05 => "Extended",
            0x07 => "HPFS/NTFS/exFAT",
            0x0b => "W95 FAT32",
            0x0c => "W95 FAT32 (LBA)",
            0x0e => "W95 FAT16 (LBA)",
            0x0f => "W95 Ext'd (LBA)",
            0x82 => "Linux swap",
            0x83 => "Linux",
            0x85 => "Linux extended",
            0x8e => "Linux LVM",
            0xda => "Non-FS data",
            0xef => "EFI (FAT-12/16/32)",
            0xf8 => "Firmware (Tow-Boot)",
            0xfd => "Linux raid autodetect",
            _ => return None,
        }),
        PartKind::Gpt(g) => Some(match g.as_str() {
            layout::gpt_types::EFI_SYSTEM => "EFI System",
            layout::gpt_types::BASIC_DATA => "Microsoft basic data",
            layout::gpt_types::LINUX_FS => "Linux filesystem",
            layout::gpt_types::LINUX_ROOT_ARM64 => "Linux root (ARM-64)",
            "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" => "Linux swap",
            "21686148-6449-6e6f-744e-656564454649" => "BIOS boot",
            "bc13c2ff-59e6-4262-a352-b275fd6f7172" => "Linux extended boot",
            _ => return None,
        }),
    }
}
