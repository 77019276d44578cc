//! Partition tables: one model for MBR and GPT, read, validated, selected and
//! written.
//!
//! [`read_table`] recognises an MBR (with its extended/logical chain), a GPT
//! behind a protective MBR, or no table at all (a bare filesystem image), and
//! checks the result against the image: entries past the end, overlaps and a
//! corrupt GPT header or entry array are [`Error::Corrupt`] errors that name
//! the table and the entry. [`select`] turns `--part N` into a [`Window`].
//! [`plan_table`] + [`write_table`] create a table from a declarative list.
//!
//! Limits, on purpose: sectors are 512 bytes (4Kn images are not handled);
//! only the primary GPT header and entry array are read and checked (images
//! that were grown or cut keep a stale backup, as sfdisk tolerates too);
//! writing an MBR covers primary partitions 1–4, and a GPT needs partitions
//! numbered 1..n without gaps (the `gpt` crate packs its entry array).
//!
//! Identifiers are lower-case: an MBR disk id is the signature as 8 hex
//! digits (as in `PARTUUID=xxxxxxxx-02`), GUIDs are hyphenated.

mod create;
mod gpt_table;
mod io;
mod mbr_table;

pub use create::{plan_table, write_table, PartSize, PartitionSpec, TableSpec};

use crate::block::{BlockDevice, Window};
use crate::{Error, Result};
use serde::Serialize;
use std::sync::Arc;

/// Bytes per sector for every table we read or write.
pub const SECTOR: u64 = 512;

/// Default partition alignment for created tables: 1 MiB.
pub const DEFAULT_ALIGN: u64 = 1 << 20;

/// Well-known GPT partition type GUIDs.
pub mod gpt_types {
    /// EFI system partition.
    pub const EFI_SYSTEM: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    /// Microsoft basic data (FAT partitions on GPT disks).
    pub const BASIC_DATA: &str = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7";
    /// Linux filesystem data.
    pub const LINUX_FS: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
    /// Linux root (ARM 64-bit).
    pub const LINUX_ROOT_ARM64: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";
}

/// The kind of partition table on a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// DOS/MBR table (primary entries 1–4, logical entries from 5).
    Mbr,
    /// GUID partition table behind a protective MBR.
    Gpt,
    /// No table: the image is a bare filesystem (or empty).
    None,
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::Mbr => "MBR",
            Scheme::Gpt => "GPT",
            Scheme::None => "no partition table",
        })
    }
}

/// A partition's type: an MBR type byte or a GPT type GUID (lower case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartKind {
    Mbr(u8),
    Gpt(String),
}

impl PartKind {
    /// Whether this is an MBR extended-partition container (05, 0f, 85).
    pub fn is_extended(&self) -> bool {
        matches!(self, PartKind::Mbr(0x05 | 0x0f | 0x85))
    }
}

impl std::fmt::Display for PartKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartKind::Mbr(t) => write!(f, "0x{t:02x}"),
            PartKind::Gpt(g) => f.write_str(g),
        }
    }
}

/// One partition, in bytes from the start of the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based number as the kernel counts it (MBR logical partitions from 5).
    pub number: u32,
    /// Offset of the first byte.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    pub kind: PartKind,
    /// MBR active flag, or GPT attribute bit 2 (legacy BIOS bootable).
    pub bootable: bool,
    /// GPT partition name (None on MBR or when empty).
    pub name: Option<String>,
    /// GPT unique partition GUID.
    pub guid: Option<String>,
}

impl Partition {
    /// One past the last byte (saturating: validation rejects overflow).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionTable {
    pub scheme: Scheme,
    /// MBR signature as 8 hex digits, or the GPT disk GUID.
    pub disk_id: Option<String>,
    /// Partitions ordered by number.
    pub partitions: Vec<Partition>,
}

impl PartitionTable {
    /// The partition numbered `number`.
    pub fn get(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }

    /// A one-line list of the partitions, for messages.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .partitions
            .iter()
            .map(|p| {
                format!(
                    "{} (type {}, {} bytes at {})",
                    p.number, p.kind, p.size, p.start
                )
            })
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Reads and validates the partition table of `dev`.
pub fn read_table(dev: &dyn BlockDevice) -> Result<PartitionTable> {
    let table = parse_table(dev)?;
    validate(&table, dev.size(), &dev.describe())?;
    Ok(table)
}

/// Parses the table without checking it against the device size. For
/// streamed images whose size is learnt only at the end; call [`validate`]
/// once it is known.
pub fn parse_table(dev: &dyn BlockDevice) -> Result<PartitionTable> {
    match mbr_table::read(dev)? {
        mbr_table::Found::Table(t) => Ok(t),
        mbr_table::Found::Protective => gpt_table::read(dev),
        mbr_table::Found::Nothing => Ok(PartitionTable {
            scheme: Scheme::None,
            disk_id: None,
            partitions: Vec::new(),
        }),
    }
}

/// Checks every partition against a disk of `size` bytes: no entry past the
/// end, no overlaps, logical partitions inside their container. `what` names
/// the image in messages.
pub fn validate(table: &PartitionTable, size: u64, what: &str) -> Result<()> {
    let scheme = table.scheme;
    for p in &table.partitions {
        let end = p.start.checked_add(p.size);
        if end.is_none_or(|e| e > size) {
            return Err(Error::corrupt(
                format!("{scheme} partition {} of {what}", p.number),
                format!(
                    "ends at byte {}, past the end of the image ({size} bytes)",
                    p.start as u128 + p.size as u128
                ),
            ));
        }
    }
    let container = table.partitions.iter().find(|p| p.kind.is_extended());
    if let Some(c) = container {
        for p in table.partitions.iter().filter(|p| p.number > 4) {
            if p.start < c.start || p.end() > c.end() {
                return Err(Error::corrupt(
                    format!("{scheme} partition {} of {what}", p.number),
                    format!(
                        "logical partition (bytes {}..{}) lies outside its extended partition {} (bytes {}..{})",
                        p.start, p.end(), c.number, c.start, c.end()
                    ),
                ));
            }
        }
    }
    let mut data: Vec<&Partition> = table
        .partitions
        .iter()
        .filter(|p| !p.kind.is_extended())
        .collect();
    if let Some(c) = container {
        // Primary partitions must stay out of the extended container.
        for p in data.iter().filter(|p| p.number <= 4) {
            if p.start < c.end() && c.start < p.end() {
                return Err(overlap(scheme, what, c, p));
            }
        }
    }
    data.sort_by_key(|p| (p.start, p.number));
    for pair in data.windows(2) {
        if pair[1].start < pair[0].end() {
            return Err(overlap(scheme, what, pair[0], pair[1]));
        }
    }
    Ok(())
}

fn overlap(scheme: Scheme, what: &str, a: &Partition, b: &Partition) -> Error {
    let (a, b) = if a.number <= b.number { (a, b) } else { (b, a) };
    Error::corrupt(
        format!(
            "{scheme} partitions {} and {} of {what}",
            a.number, b.number
        ),
        format!(
            "they overlap ({}: bytes {}..{}, {}: bytes {}..{})",
            a.number,
            a.start,
            a.end(),
            b.number,
            b.start,
            b.end()
        ),
    )
}

/// Picks what a command operates on: partition `part` as a [`Window`], or the
/// whole device when `part` is `None` and it carries no partition table (a
/// bare filesystem image).
pub fn select(dev: Arc<dyn BlockDevice>, part: Option<u32>) -> Result<Arc<dyn BlockDevice>> {
    select_as(dev, part, "--part")
}

/// [`select`] for a command whose partition option is spelt `flag`
/// (`--from-part`), so its advice names the right option.
pub fn select_as(
    dev: Arc<dyn BlockDevice>,
    part: Option<u32>,
    flag: &str,
) -> Result<Arc<dyn BlockDevice>> {
    let table = read_table(&*dev)?;
    let what = dev.describe();
    match part {
        None if table.scheme == Scheme::None => Ok(dev),
        None => Err(Error::Invalid(format!(
            "{what} has an {} partition table; pick a partition with {flag} N: {}",
            table.scheme,
            table.summary()
        ))),
        Some(n) if table.scheme == Scheme::None => Err(Error::Invalid(format!(
            "{what} has no partition table, so there is no partition {n}; omit {flag} to use the whole image"
        ))),
        Some(n) => {
            let p = table.get(n).ok_or_else(|| {
                Error::Invalid(format!(
                    "{what} has no partition {n}; its partitions: {}",
                    table.summary()
                ))
            })?;
            if p.kind.is_extended() {
                return Err(Error::Invalid(format!(
                    "partition {n} of {what} is an extended-partition container, not a filesystem; its partitions: {}",
                    table.summary()
                )));
            }
            Ok(Arc::new(Window::new(dev, p.start, p.size)?))
        }
    }
}

/// Maps a read error on table structures to a "truncated" corruption error;
/// other errors pass through.
fn truncated(what: impl Into<String>, err: Error) -> Error {
    match err {
        Error::OutOfBounds { offset, len, size } => Error::corrupt(
            what,
            format!(
                "truncated image: needs bytes {offset}..{} but the image has {size}",
                offset as u128 + len as u128
            ),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;

    const MIB: u64 = 1 << 20;

    fn spec(scheme: Scheme, parts: &[(PartSize, PartKind)]) -> TableSpec {
        TableSpec {
            partitions: parts
                .iter()
                .map(|(s, k)| PartitionSpec::new(*s, k.clone()))
                .collect(),
            ..TableSpec::new(scheme)
        }
    }

    #[test]
    fn plan_write_read_round_trip_both_schemes() {
        let mbr = spec(
            Scheme::Mbr,
            &[
                (PartSize::Bytes(4 * MIB), PartKind::Mbr(0x0c)),
                (PartSize::Rest, PartKind::Mbr(0x83)),
            ],
        );
        let gpt = spec(
            Scheme::Gpt,
            &[
                (
                    PartSize::Bytes(4 * MIB),
                    PartKind::Gpt(gpt_types::EFI_SYSTEM.into()),
                ),
                (PartSize::Rest, PartKind::Gpt(gpt_types::LINUX_FS.into())),
            ],
        );
        for s in [mbr, gpt] {
            let dev = MemDevice::zeroed(16 * MIB as usize);
            let table = plan_table(&s, dev.size()).unwrap();
            write_table(&dev, &table).unwrap();
            assert_eq!(read_table(&dev).unwrap(), table);
        }
    }

    #[test]
    fn plan_refuses_what_does_not_fit() {
        let too_big = spec(
            Scheme::Mbr,
            &[(PartSize::Bytes(32 * MIB), PartKind::Mbr(0x83))],
        );
        assert!(plan_table(&too_big, 16 * MIB).is_err());
        let five = spec(
            Scheme::Mbr,
            &vec![(PartSize::Bytes(MIB), PartKind::Mbr(0x83)); 5],
        );
        assert!(plan_table(&five, 16 * MIB).is_err());
        let mixed = spec(Scheme::Gpt, &[(PartSize::Rest, PartKind::Mbr(0x83))]);
        assert!(plan_table(&mixed, 16 * MIB).is_err());
        let odd = spec(Scheme::Mbr, &[(PartSize::Bytes(1000), PartKind::Mbr(0x83))]);
        assert!(plan_table(&odd, 16 * MIB).is_err());
    }

    #[test]
    fn fat_boot_sector_is_not_a_partition_table() {
        let mut s = vec![0u8; 4096];
        s[0] = 0xeb;
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[13] = 8;
        s[14] = 32;
        s[16] = 2;
        s[82..87].copy_from_slice(b"FAT32");
        s[510] = 0x55;
        s[511] = 0xaa;
        let dev = MemDevice::from_vec(s);
        assert_eq!(read_table(&dev).unwrap().scheme, Scheme::None);
    }

    #[test]
    fn looping_extended_chain_is_refused_without_hanging() {
        let mut d = vec![0u8; 64 * 512];
        // Extended partition 1 at LBA 2, 60 sectors.
        d[446 + 4] = 0x05;
        d[446 + 8..446 + 12].copy_from_slice(&2u32.to_le_bytes());
        d[446 + 12..446 + 16].copy_from_slice(&60u32.to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xaa;
        // EBR at LBA 2 links to itself (relative sector 0 is "end", so use 4
        // and make the one at 6 link back to 4).
        for (ebr, next) in [(2usize, 4u32), (6, 4)] {
            let o = ebr * 512;
            d[o + 446 + 4] = 0x83;
            d[o + 446 + 8..o + 446 + 12].copy_from_slice(&1u32.to_le_bytes());
            d[o + 446 + 12..o + 446 + 16].copy_from_slice(&1u32.to_le_bytes());
            d[o + 462 + 4] = 0x05;
            d[o + 462 + 8..o + 462 + 12].copy_from_slice(&next.to_le_bytes());
            d[o + 510] = 0x55;
            d[o + 511] = 0xaa;
        }
        let err = read_table(&MemDevice::from_vec(d)).unwrap_err().to_string();
        assert!(err.contains("goes backwards"), "{err}");
    }

    #[test]
    fn gpt_with_odd_entry_size_is_an_error_not_a_panic() {
        let dev = MemDevice::zeroed(4 * MIB as usize);
        let t = plan_table(
            &spec(
                Scheme::Gpt,
                &[(PartSize::Rest, PartKind::Gpt(gpt_types::LINUX_FS.into()))],
            ),
            dev.size(),
        )
        .unwrap();
        write_table(&dev, &t).unwrap();
        // Entry size 256 with a freshly computed, valid header CRC.
        let mut h = [0u8; 92];
        dev.read_at(512, &mut h).unwrap();
        h[84..88].copy_from_slice(&256u32.to_le_bytes());
        h[16..20].fill(0);
        let crc = gpt_table::CRC32.checksum(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        dev.write_at(512, &h).unwrap();
        let err = read_table(&dev).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    }
}
