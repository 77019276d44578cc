//! Creating tables: a declarative list of partitions is planned into a
//! [`PartitionTable`] (aligned starts, "rest of the disk" sizes, ids), which
//! [`write_table`] then writes with `mbrman` or `gpt`.

use super::gpt_table::{LB, LEGACY_BIOS_BOOTABLE};
use super::io::Stream;
use super::{validate, PartKind, Partition, PartitionTable, Scheme, DEFAULT_ALIGN, SECTOR};
use crate::block::BlockDevice;
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// GPT: sectors reserved at each end (MBR + header + 32 sectors of entries
/// at the start; entries + backup header at the end).
const GPT_HEAD: u64 = 34;
const GPT_TAIL: u64 = 33;

/// How big a partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSize {
    /// Exactly this many bytes (a multiple of 512).
    Bytes(u64),
    /// Everything up to the end of the usable area.
    Rest,
}

/// One partition to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Byte offset (a multiple of 512); `None` = the first aligned offset after
    /// the previous partition.
    pub start: Option<u64>,
    pub size: PartSize,
    pub kind: PartKind,
    pub bootable: bool,
    /// GPT partition name (refused on MBR).
    pub name: Option<String>,
    /// GPT partition GUID; `None` derives one from the disk GUID and number.
    pub guid: Option<String>,
}

impl PartitionSpec {
    /// A partition of `size` at the next aligned offset, not bootable, unnamed.
    pub fn new(size: PartSize, kind: PartKind) -> Self {
        PartitionSpec {
            start: None,
            size,
            kind,
            bootable: false,
            name: None,
            guid: None,
        }
    }
}

/// A table to create; partitions are numbered 1.. in list order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// [`Scheme::Mbr`] or [`Scheme::Gpt`].
    pub scheme: Scheme,
    /// MBR signature (8 hex digits) or GPT disk GUID; `None` derives one from
    /// a hash of the planned layout, so the same spec gives the same bytes.
    pub disk_id: Option<String>,
    /// Alignment of starts that are not given explicitly, in bytes.
    pub align: u64,
    pub partitions: Vec<PartitionSpec>,
}

impl TableSpec {
    /// An empty spec with 1 MiB alignment.
    pub fn new(scheme: Scheme) -> Self {
        TableSpec {
            scheme,
            disk_id: None,
            align: DEFAULT_ALIGN,
            partitions: Vec::new(),
        }
    }
}

/// Turns `spec` into the table it describes on a disk of `disk_size` bytes.
pub fn plan_table(spec: &TableSpec, disk_size: u64) -> Result<PartitionTable> {
    let bad = |msg: String| Error::Invalid(format!("partition layout: {msg}"));
    if spec.align == 0 || !spec.align.is_multiple_of(SECTOR) {
        return Err(bad(format!(
            "alignment {} is not a positive multiple of {SECTOR}",
            spec.align
        )));
    }
    let sectors = disk_size / SECTOR;
    let (first, last_end) = match spec.scheme {
        Scheme::Mbr => {
            if spec.partitions.len() > 4 {
                return Err(bad(format!(
                    "{} partitions, but an MBR holds at most 4 primary partitions",
                    spec.partitions.len()
                )));
            }
            (1, sectors)
        }
        Scheme::Gpt => {
            if sectors < GPT_HEAD + GPT_TAIL + 1 {
                return Err(bad(format!(
                    "a disk of {disk_size} bytes is too small for a GPT"
                )));
            }
            (GPT_HEAD, sectors - GPT_TAIL)
        }
        Scheme::None => return Err(bad("scheme must be MBR or GPT".into())),
    };
    let (first, last_end) = (first * SECTOR, last_end * SECTOR);
    let mut partitions = Vec::new();
    let mut cursor = first;
    for (i, p) in spec.partitions.iter().enumerate() {
        let number = i as u32 + 1;
        let at = |msg: String| bad(format!("partition {number}: {msg}"));
        let start = match p.start {
            Some(s) if s % SECTOR != 0 => {
                return Err(at(format!("start {s} is not a multiple of {SECTOR}")))
            }
            Some(s) if s < first => {
                return Err(at(format!(
                    "start {s} lies inside the partition table (first usable byte {first})"
                )))
            }
            Some(s) => s,
            None => cursor.div_ceil(spec.align) * spec.align,
        };
        let size = match p.size {
            PartSize::Bytes(n) if n == 0 || n % SECTOR != 0 => {
                return Err(at(format!(
                    "size {n} is not a positive multiple of {SECTOR}"
                )))
            }
            PartSize::Bytes(n) => n,
            PartSize::Rest if start >= last_end => {
                return Err(at(format!(
                "no room left: it would start at byte {start}, the usable area ends at {last_end}"
            )))
            }
            PartSize::Rest => last_end - start,
        };
        let end = start.checked_add(size).filter(|&e| e <= last_end);
        let Some(end) = end else {
            return Err(at(format!(
                "{size} bytes at {start} do not fit: the usable area ends at byte {last_end}"
            )));
        };
        match (&spec.scheme, &p.kind) {
            (Scheme::Mbr, PartKind::Mbr(0)) => return Err(at("MBR type 0 means unused".into())),
            (Scheme::Mbr, PartKind::Mbr(_)) => {
                if p.name.is_some() || p.guid.is_some() {
                    return Err(at("MBR partitions have no name or GUID".into()));
                }
                if end / SECTOR > u64::from(u32::MAX) + 1 {
                    return Err(at("ends beyond 2 TiB, out of an MBR's reach".into()));
                }
            }
            (Scheme::Gpt, PartKind::Gpt(g)) => {
                parse_guid(g, &format!("type of partition {number}"))?;
                if let Some(g) = &p.guid {
                    parse_guid(g, &format!("GUID of partition {number}"))?;
                }
                if p.name
                    .as_ref()
                    .is_some_and(|n| n.encode_utf16().count() > 36)
                {
                    return Err(at("GPT names hold at most 36 UTF-16 units".into()));
                }
            }
            (s, k) => return Err(at(format!("type {k} does not belong in an {s} table"))),
        }
        partitions.push(Partition {
            number,
            start,
            size,
            kind: p.kind.clone(),
            bootable: p.bootable,
            name: p.name.clone(),
            guid: p.guid.clone(),
        });
        cursor = end;
    }
    let mut table = PartitionTable {
        scheme: spec.scheme,
        disk_id: spec.disk_id.clone(),
        partitions,
    };
    validate(&table, disk_size, "the planned layout").map_err(|e| bad(e.to_string()))?;
    fill_ids(&mut table, disk_size)?;
    Ok(table)
}

/// Derives missing ids from a hash of the layout, so plans are reproducible.
fn fill_ids(table: &mut PartitionTable, disk_size: u64) -> Result<()> {
    let mut h = Sha256::new();
    h.update(b"nodeimg partition table\0");
    h.update(disk_size.to_le_bytes());
    for p in &table.partitions {
        h.update(format!("{}:{}:{}:{};", p.number, p.start, p.size, p.kind));
    }
    let seed: [u8; 32] = h.finalize().into();
    match table.scheme {
        Scheme::Mbr => {
            if let Some(id) = &table.disk_id {
                parse_mbr_id(id)?;
            } else {
                let sig = u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]]);
                table.disk_id = Some(format!("{sig:08x}"));
            }
        }
        Scheme::Gpt => {
            let disk = match &table.disk_id {
                Some(id) => parse_guid(id, "disk GUID")?,
                None => guid_from(&seed),
            };
            table.disk_id = Some(disk.hyphenated().to_string());
            for p in &mut table.partitions {
                if p.guid.is_none() {
                    let mut h = Sha256::new();
                    h.update(disk.as_bytes());
                    h.update(p.number.to_le_bytes());
                    let s: [u8; 32] = h.finalize().into();
                    p.guid = Some(guid_from(&s).hyphenated().to_string());
                }
            }
        }
        Scheme::None => {}
    }
    Ok(())
}

/// A version-4-shaped GUID from hash bytes.
fn guid_from(seed: &[u8; 32]) -> uuid::Uuid {
    let mut b = [0u8; 16];
    b.copy_from_slice(&seed[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

fn parse_guid(s: &str, what: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(s).map_err(|e| Error::Invalid(format!("{what} {s:?}: {e}")))
}

fn parse_mbr_id(s: &str) -> Result<u32> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.len() != 8 {
        return Err(Error::Invalid(format!(
            "MBR disk id {s:?}: expected 8 hex digits"
        )));
    }
    u32::from_str_radix(hex, 16).map_err(|e| Error::Invalid(format!("MBR disk id {s:?}: {e}")))
}

/// Writes `table` to `dev`, replacing any table there. For MBR, the boot code
/// in sector 0 is kept (boards put a first-stage loader there); only primary
/// partitions (1–4) can be written. For GPT, a protective MBR, the primary and
/// the backup header and entry arrays are written. The table is validated
/// against the device first; nothing is written if it does not fit.
pub fn write_table(dev: &dyn BlockDevice, table: &PartitionTable) -> Result<()> {
    let what = dev.describe();
    validate(table, dev.size(), &what)?;
    match table.scheme {
        Scheme::Mbr => write_mbr(dev, table),
        Scheme::Gpt => write_gpt(dev, table),
        Scheme::None => Err(Error::Invalid(format!(
            "cannot write \"no partition table\" to {what}"
        ))),
    }
}

fn write_mbr(dev: &dyn BlockDevice, table: &PartitionTable) -> Result<()> {
    let what = dev.describe();
    let sig = match &table.disk_id {
        Some(id) => parse_mbr_id(id)?,
        None => 0,
    };
    let mut header = mbrman::MBRHeader::new(sig.to_le_bytes());
    let mut sector0 = [0u8; 512];
    if dev.size() >= SECTOR {
        dev.read_at(0, &mut sector0)?;
        if sector0[510..512] == [0x55, 0xaa] {
            header.bootstrap_code.copy_from_slice(&sector0[..440]);
        }
    }
    for p in &table.partitions {
        let err =
            |msg: &str| Error::Invalid(format!("MBR partition {} for {what}: {msg}", p.number));
        let PartKind::Mbr(sys) = p.kind else {
            return Err(err("has a GPT type"));
        };
        let entry = header
            .get_mut(p.number as usize)
            .ok_or_else(|| err("only primary partitions 1-4 can be written"))?;
        if entry.is_used() {
            return Err(err("listed twice"));
        }
        if p.start % SECTOR != 0 || p.size % SECTOR != 0 || p.size == 0 {
            return Err(err("start and size must be positive multiples of 512"));
        }
        let lba = u32::try_from(p.start / SECTOR).map_err(|_| err("start beyond 2 TiB"))?;
        let sectors = u32::try_from(p.size / SECTOR).map_err(|_| err("size beyond 2 TiB"))?;
        if sys == 0 {
            return Err(err("type 0 means unused"));
        }
        *entry = mbrman::MBRPartitionEntry {
            boot: if p.bootable { 0x80 } else { 0x00 },
            first_chs: mbrman::CHS::empty(),
            sys,
            last_chs: mbrman::CHS::empty(),
            starting_lba: lba,
            sectors,
        };
    }
    header
        .write_into(&mut Stream::new(dev))
        .map_err(|e| Error::Invalid(format!("writing the MBR of {what}: {e}")))?;
    dev.flush()
}

fn write_gpt(dev: &dyn BlockDevice, table: &PartitionTable) -> Result<()> {
    let what = dev.describe();
    let gerr = |e: gpt::GptError| Error::Invalid(format!("writing the GPT of {what}: {e}"));
    let sectors = dev.size() / SECTOR;
    if sectors < GPT_HEAD + GPT_TAIL + 1 {
        return Err(Error::Invalid(format!("{what} is too small for a GPT")));
    }
    let disk_guid = match &table.disk_id {
        Some(id) => parse_guid(id, "disk GUID")?,
        None => uuid::Uuid::nil(),
    };
    let mut entries = BTreeMap::new();
    for p in &table.partitions {
        let err =
            |msg: &str| Error::Invalid(format!("GPT partition {} for {what}: {msg}", p.number));
        let PartKind::Gpt(kind) = &p.kind else {
            return Err(err("has an MBR type"));
        };
        if p.number == 0 || p.number > 128 {
            return Err(err("numbers run from 1 to 128"));
        }
        if p.start % SECTOR != 0 || p.size % SECTOR != 0 || p.size == 0 {
            return Err(err("start and size must be positive multiples of 512"));
        }
        let (first, last) = (p.start / SECTOR, p.end() / SECTOR - 1);
        if first < GPT_HEAD || last >= sectors - GPT_TAIL {
            return Err(err("outside the area a GPT leaves usable"));
        }
        let guid = match &p.guid {
            Some(g) => parse_guid(g, "partition GUID")?,
            None => return Err(err("has no partition GUID (plan the table first)")),
        };
        let name = p.name.clone().unwrap_or_default();
        if name.encode_utf16().count() > 36 {
            return Err(err("name longer than 36 UTF-16 units"));
        }
        entries.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: parse_guid(kind, "partition type")?.into(),
                part_guid: guid,
                first_lba: first,
                last_lba: last,
                flags: if p.bootable { LEGACY_BIOS_BOOTABLE } else { 0 },
                name,
            },
        );
    }
    // The gpt crate packs used entries at the front of the array, so a gap
    // in the numbering would silently renumber the partitions after it.
    if let Some(gap) = (1..=entries.len() as u32).find(|n| !entries.contains_key(n)) {
        return Err(Error::unsupported(
            format!("GPT for {what}"),
            format!(
                "partition numbers must run 1..{} without gaps, {gap} is missing",
                entries.len()
            ),
        ));
    }
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(LB)
        .create_from_device(Stream::new(dev), Some(disk_guid))
        .map_err(gerr)?;
    disk.update_partitions(entries).map_err(gerr)?;
    let mut stream = disk.write().map_err(gerr)?;
    let protective =
        gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    protective
        .overwrite_lba0(&mut stream)
        .map_err(|e| Error::Invalid(format!("writing the protective MBR of {what}: {e}")))?;
    dev.flush()
}
