//! GPT reading through the `gpt` crate, guarded: the crate asserts on entry
//! sizes other than 128 and trusts the header's geometry, so the header is
//! checked here before it parses the entries.

use super::{io::Stream, truncated, PartKind, Partition, PartitionTable, Scheme, SECTOR};
use crate::block::BlockDevice;
use crate::{Error, Result};
use gpt::disk::LogicalBlockSize;
use gpt::header::HeaderError;

/// Entry arrays longer than this are refused, to keep memory bounded.
const MAX_ENTRIES: u32 = 16384;

/// CRC-32 as GPT uses it (IEEE 802.3, the zlib/PNG one).
pub(super) const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

pub(super) fn read(dev: &dyn BlockDevice) -> Result<PartitionTable> {
    let what = dev.describe();
    let hctx = || format!("GPT header at LBA 1 of {what}");
    let header = match gpt::header::read_header_from_arbitrary_device(&mut Stream::new(dev), LB) {
        Ok(h) => h,
        Err(HeaderError::InvalidGptSignature) => {
            return Err(Error::corrupt(
                hctx(),
                "no \"EFI PART\" signature although the MBR is protective (type 0xee)",
            ))
        }
        Err(HeaderError::InvalidCRC32Checksum) => {
            return Err(Error::corrupt(hctx(), "header CRC32 mismatch"))
        }
        Err(HeaderError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(Error::corrupt(hctx(), "truncated image"))
        }
        Err(e) => return Err(Error::corrupt(hctx(), e.to_string())),
    };
    if !(92..=512).contains(&header.header_size_le) {
        return Err(Error::corrupt(
            hctx(),
            format!("header size {} outside 92..=512", header.header_size_le),
        ));
    }
    if header.current_lba != 1 {
        return Err(Error::corrupt(
            hctx(),
            format!("claims to live at LBA {}", header.current_lba),
        ));
    }
    if header.part_size != 128 {
        return Err(Error::unsupported(
            hctx(),
            format!(
                "partition entries of {} bytes (only 128 is handled)",
                header.part_size
            ),
        ));
    }
    if header.num_parts == 0 || header.num_parts > MAX_ENTRIES {
        return Err(Error::corrupt(
            hctx(),
            format!(
                "{} partition entries (expected 1..={MAX_ENTRIES})",
                header.num_parts
            ),
        ));
    }
    if header.part_start < 2 || header.part_start.checked_mul(SECTOR).is_none() {
        return Err(Error::corrupt(
            hctx(),
            format!("entry array at LBA {}", header.part_start),
        ));
    }
    if header.first_usable > header.last_usable.saturating_add(1) {
        return Err(Error::corrupt(
            hctx(),
            format!(
                "first usable LBA {} after last usable LBA {}",
                header.first_usable, header.last_usable
            ),
        ));
    }

    let actx = || {
        format!(
            "GPT partition entry array (LBA {}) of {what}",
            header.part_start
        )
    };
    let mut array = vec![0u8; header.num_parts as usize * 128];
    dev.read_at(header.part_start * SECTOR, &mut array)
        .map_err(|e| truncated(actx(), e))?;
    if CRC32.checksum(&array) != header.crc32_parts {
        return Err(Error::corrupt(actx(), "entry array CRC32 mismatch"));
    }

    let entries = gpt::partition::file_read_partitions(&mut Stream::new(dev), &header, LB)
        .map_err(|e| Error::corrupt(actx(), e.to_string()))?;
    let mut partitions = Vec::new();
    for (&number, e) in entries.iter().filter(|(_, e)| e.is_used()) {
        let ctx = || format!("GPT partition {number} of {what}");
        if e.first_lba > e.last_lba {
            return Err(Error::corrupt(
                ctx(),
                format!("first LBA {} after last LBA {}", e.first_lba, e.last_lba),
            ));
        }
        if e.first_lba < header.first_usable || e.last_lba > header.last_usable {
            return Err(Error::corrupt(
                ctx(),
                format!(
                    "LBAs {}..={} outside the usable area {}..={}",
                    e.first_lba, e.last_lba, header.first_usable, header.last_usable
                ),
            ));
        }
        let sectors = e.last_lba - e.first_lba + 1;
        let (Some(start), Some(size)) =
            (e.first_lba.checked_mul(SECTOR), sectors.checked_mul(SECTOR))
        else {
            return Err(Error::corrupt(ctx(), "LBA overflows a byte offset"));
        };
        partitions.push(Partition {
            number,
            start,
            size,
            kind: PartKind::Gpt(e.part_type_guid.guid.hyphenated().to_string()),
            bootable: e.flags & LEGACY_BIOS_BOOTABLE != 0,
            name: Some(e.name.clone()).filter(|n| !n.is_empty()),
            guid: Some(e.part_guid.hyphenated().to_string()),
        });
    }
    Ok(PartitionTable {
        scheme: Scheme::Gpt,
        disk_id: Some(header.disk_guid.hyphenated().to_string()),
        partitions,
    })
}

/// GPT attribute bit 2: legacy BIOS bootable.
pub(super) const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

pub(super) const LB: LogicalBlockSize = LogicalBlockSize::Lb512;
