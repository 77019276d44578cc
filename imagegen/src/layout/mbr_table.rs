//! MBR reading: the primary table through `mbrman`, the extended chain by hand
//! (with checked arithmetic and a bound, since it is untrusted data).

use super::{io::Stream, truncated, PartKind, Partition, PartitionTable, Scheme, SECTOR};
use crate::block::BlockDevice;
use crate::{Error, Result};

/// What sector 0 holds.
pub(super) enum Found {
    /// A DOS partition table.
    Table(PartitionTable),
    /// A protective MBR: the real table is a GPT.
    Protective,
    /// No partition table (no signature, or a filesystem boot sector).
    Nothing,
}

/// Logical partitions beyond this many are refused (loops, hostile chains).
const MAX_LOGICAL: u32 = 128;

pub(super) fn read(dev: &dyn BlockDevice) -> Result<Found> {
    let what = dev.describe();
    if dev.size() < SECTOR {
        return Ok(Found::Nothing);
    }
    let mut sector0 = [0u8; 512];
    dev.read_at(0, &mut sector0)?;
    if sector0[510..512] != [0x55, 0xaa] || crate::fs::is_boot_sector(&sector0) {
        return Ok(Found::Nothing);
    }
    let header = match mbrman::MBRHeader::read_from(&mut Stream::new(dev)) {
        Ok(h) => h,
        // A boot flag other than 0x00/0x80 means this is not a partition
        // table (libblkid draws the same line).
        Err(mbrman::Error::InvalidBootFlag | mbrman::Error::InvalidSignature) => {
            return Ok(Found::Nothing)
        }
        Err(e) => {
            return Err(Error::corrupt(
                format!("MBR of {what}"),
                format!("cannot be read: {e}"),
            ))
        }
    };
    if header.iter().any(|(_, e)| e.sys == 0xee) {
        return Ok(Found::Protective);
    }
    let mut partitions = Vec::new();
    let mut extended = None;
    for (i, e) in header.iter() {
        if e.sys == 0 || e.sectors == 0 {
            continue;
        }
        let p = Partition {
            number: i as u32,
            start: u64::from(e.starting_lba) * SECTOR,
            size: u64::from(e.sectors) * SECTOR,
            kind: PartKind::Mbr(e.sys),
            bootable: e.boot == 0x80,
            name: None,
            guid: None,
        };
        if e.starting_lba == 0 {
            return Err(Error::corrupt(
                format!("MBR partition {i} of {what}"),
                "starts at sector 0, over the partition table itself",
            ));
        }
        if p.kind.is_extended() {
            if extended.is_some() {
                return Err(Error::corrupt(
                    format!("MBR partition {i} of {what}"),
                    "a second extended partition",
                ));
            }
            extended = Some((u64::from(e.starting_lba), u64::from(e.sectors)));
        }
        partitions.push(p);
    }
    if partitions.is_empty() {
        // A table with no entries is no table: a bare filesystem image whose
        // first sector happens to end in 55 AA (boot code, a blank boot
        // sector) must open as that filesystem, not as an empty disk.
        return Ok(Found::Nothing);
    }
    if let Some((ext_lba, ext_sectors)) = extended {
        read_logical(dev, &what, ext_lba, ext_sectors, &mut partitions)?;
    }
    let sig = u32::from_le_bytes(header.disk_signature);
    Ok(Found::Table(PartitionTable {
        scheme: Scheme::Mbr,
        disk_id: Some(format!("{sig:08x}")),
        partitions,
    }))
}

/// Walks the EBR chain of the extended partition at `ext_lba`.
fn read_logical(
    dev: &dyn BlockDevice,
    what: &str,
    ext_lba: u64,
    ext_sectors: u64,
    out: &mut Vec<Partition>,
) -> Result<()> {
    let mut rel: u64 = 0;
    let mut number = 5u32;
    for hop in 0..=MAX_LOGICAL {
        let ebr_lba = ext_lba + rel;
        let ctx = || format!("extended boot record at sector {ebr_lba} of {what}");
        if hop == MAX_LOGICAL {
            return Err(Error::corrupt(
                ctx(),
                format!("more than {MAX_LOGICAL} logical partitions"),
            ));
        }
        let mut ebr = [0u8; 512];
        dev.read_at(ebr_lba * SECTOR, &mut ebr)
            .map_err(|e| truncated(ctx(), e))?;
        if ebr[510..512] != [0x55, 0xaa] {
            if hop == 0 {
                return Ok(()); // an empty extended partition needs no EBR
            }
            return Err(Error::corrupt(ctx(), "no 0x55AA signature"));
        }
        let entry = |i: usize| -> (u8, u8, u64, u64) {
            let e = &ebr[446 + 16 * i..446 + 16 * (i + 1)];
            let lba = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
            let n = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
            (e[0], e[4], u64::from(lba), u64::from(n))
        };
        let (boot, sys, lba, sectors) = entry(0);
        if sys != 0 && sectors != 0 {
            if lba == 0 {
                return Err(Error::corrupt(
                    format!("MBR partition {number} of {what}"),
                    "logical partition starts on its own extended boot record",
                ));
            }
            out.push(Partition {
                number,
                start: (ebr_lba + lba) * SECTOR,
                size: sectors * SECTOR,
                kind: PartKind::Mbr(sys),
                bootable: boot == 0x80,
                name: None,
                guid: None,
            });
            number += 1;
        }
        let (_, next_sys, next_rel, _) = entry(1);
        if next_sys == 0 || next_rel == 0 {
            return Ok(());
        }
        if next_rel <= rel || next_rel >= ext_sectors {
            return Err(Error::corrupt(
                ctx(),
                format!("link to the next record (sector {next_rel} of the extended partition) goes backwards or out of it"),
            ));
        }
        rel = next_rel;
    }
    Ok(())
}
