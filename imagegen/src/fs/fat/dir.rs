//! Our own reader of FAT directories: entries with long names, their
//! on-disk position and first cluster (which `fatfs` keeps private), and the
//! path walk every operation starts with. Walking a path here first checks
//! each directory's cluster chain, so `fatfs` only ever follows chains we
//! have verified.

use super::bpb::{FatType, Geometry};
use super::table::FatReader;
use super::time::DosTime;
use crate::block::BlockDevice;
use crate::fs::FileKind;
use crate::{Error, Result};

/// FAT attribute bits.
pub const ATTR_READ_ONLY: u8 = 0x01;
pub const ATTR_HIDDEN: u8 = 0x02;
pub const ATTR_SYSTEM: u8 = 0x04;
pub const ATTR_VOLUME: u8 = 0x08;
pub const ATTR_DIR: u8 = 0x10;
pub const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = 0x0F;

/// One short directory entry with the long name that precedes it.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The long name if there is a valid one, else the 8.3 name.
    pub name: String,
    /// The 8.3 name as `NAME.EXT`.
    pub short_name: String,
    pub attrs: u8,
    /// 0 for an empty file.
    pub first_cluster: u32,
    pub size: u32,
    pub created: DosTime,
    pub accessed_date: u16,
    pub modified: DosTime,
    /// Byte offset of the 32-byte short entry on the device.
    pub offset: u64,
}

impl RawEntry {
    pub fn is_dir(&self) -> bool {
        self.attrs & ATTR_DIR != 0
    }

    pub fn kind(&self) -> FileKind {
        if self.is_dir() {
            FileKind::Dir
        } else {
            FileKind::File
        }
    }

    /// Whether `name` names this entry (FAT compares names case-insensitively).
    pub fn matches(&self, name: &str) -> bool {
        let upper = |s: &str| s.chars().flat_map(char::to_uppercase).collect::<String>();
        let wanted = upper(name);
        upper(&self.name) == wanted || upper(&self.short_name) == wanted
    }
}

/// Where a directory's entries live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirLoc {
    /// The fixed root region of FAT12/16.
    FixedRoot,
    /// A cluster chain (every other directory, and the FAT32 root).
    Chain(u32),
}

/// Reads directories of one volume.
pub struct DirReader<'a> {
    pub dev: &'a dyn BlockDevice,
    pub geo: &'a Geometry,
    pub fat: FatReader<'a>,
}

fn corrupt(dev: &dyn BlockDevice, why: String) -> Error {
    Error::corrupt(format!("FAT filesystem on {}", dev.describe()), why)
}

fn lfn_checksum(short: &[u8]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

fn short_name(raw: &[u8]) -> String {
    let lower_base = raw[12] & 0x08 != 0;
    let lower_ext = raw[12] & 0x10 != 0;
    let decode = |bytes: &[u8], lower: bool| -> String {
        let text: String = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                // 0x05 in the first byte stands for a real 0xE5.
                let b = if i == 0 && b == 0x05 { 0xE5 } else { b };
                if b.is_ascii() {
                    b as char
                } else {
                    char::REPLACEMENT_CHARACTER
                }
            })
            .collect();
        let text = text.trim_end_matches(' ').to_string();
        if lower {
            text.to_ascii_lowercase()
        } else {
            text
        }
    };
    let base = decode(&raw[0..8], lower_base);
    let ext = decode(&raw[8..11], lower_ext);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// Accumulates long-name fragments until the short entry they belong to.
#[derive(Default)]
struct LongName {
    parts: Vec<[u16; 13]>,
    checksum: u8,
    /// The sequence number expected next (counting down to 1).
    next: u8,
}

impl LongName {
    fn feed(&mut self, e: &[u8]) {
        let seq = e[0] & 0x1F;
        if e[0] & 0x40 != 0 {
            self.parts = vec![[0xFFFF; 13]; usize::from(seq)];
            self.checksum = e[13];
            self.next = seq;
        }
        if seq == 0 || seq != self.next || e[13] != self.checksum || self.parts.is_empty() {
            self.parts.clear();
            return;
        }
        let mut units = [0u16; 13];
        let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (u, &at) in units.iter_mut().zip(offsets.iter()) {
            *u = u16::from_le_bytes([e[at], e[at + 1]]);
        }
        self.parts[usize::from(seq) - 1] = units;
        self.next = seq - 1;
    }

    fn take(&mut self, short: &[u8]) -> Option<String> {
        let complete = !self.parts.is_empty() && self.next == 0;
        let ok = complete && lfn_checksum(short) == self.checksum;
        let parts = std::mem::take(&mut self.parts);
        if !ok {
            return None;
        }
        let units: Vec<u16> = parts
            .iter()
            .flatten()
            .copied()
            .take_while(|&u| u != 0)
            .collect();
        Some(String::from_utf16_lossy(&units))
    }
}

impl<'a> DirReader<'a> {
    pub fn new(dev: &'a dyn BlockDevice, geo: &'a Geometry) -> Self {
        DirReader {
            dev,
            geo,
            fat: FatReader::new(dev, geo),
        }
    }

    /// The directory that holds the root's entries.
    pub fn root(&self) -> DirLoc {
        match self.geo.fat_type {
            FatType::Fat32 => DirLoc::Chain(self.geo.root_cluster),
            _ => DirLoc::FixedRoot,
        }
    }

    /// The cluster chain from `first`, checked; `what` names it in errors.
    pub fn chain(&mut self, first: u32, what: &str) -> Result<Vec<std::ops::Range<u32>>> {
        self.fat
            .chain(first)?
            .map_err(|why| corrupt(self.dev, format!("{what}: {why}")))
    }

    /// Byte ranges holding a directory's entries, in order.
    fn regions(&mut self, loc: DirLoc, what: &str) -> Result<Vec<std::ops::Range<u64>>> {
        Ok(match loc {
            DirLoc::FixedRoot => vec![self.geo.root_region()],
            DirLoc::Chain(first) => self
                .chain(first, what)?
                .into_iter()
                .map(|run| {
                    self.geo.cluster_offset(run.start)
                        ..self.geo.cluster_offset(run.end - 1) + self.geo.cluster_size
                })
                .collect(),
        })
    }

    /// The live entries of a directory, without `.`, `..` and labels.
    pub fn entries(&mut self, loc: DirLoc, what: &str) -> Result<Vec<RawEntry>> {
        let mut out = Vec::new();
        let mut long = LongName::default();
        let mut buf = vec![0u8; 64 * 1024];
        for region in self.regions(loc, what)? {
            let mut pos = region.start;
            while pos < region.end {
                let n = (region.end - pos).min(buf.len() as u64) as usize;
                self.dev.read_at(pos, &mut buf[..n])?;
                for (i, e) in buf[..n].chunks_exact(32).enumerate() {
                    if e[0] == 0 {
                        return Ok(out);
                    }
                    if e[0] == 0xE5 {
                        long.parts.clear();
                        continue;
                    }
                    let attrs = e[11];
                    if attrs & 0x3F == ATTR_LFN {
                        long.feed(e);
                        continue;
                    }
                    let name = long.take(&e[0..11]);
                    if attrs & ATTR_VOLUME != 0 || e[0] == b'.' {
                        continue;
                    }
                    let short = short_name(e);
                    let hi = if self.geo.fat_type == FatType::Fat32 {
                        u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
                    } else {
                        0
                    };
                    let u16_at = |at: usize| u16::from_le_bytes([e[at], e[at + 1]]);
                    out.push(RawEntry {
                        name: name.unwrap_or_else(|| short.clone()),
                        short_name: short,
                        attrs,
                        first_cluster: hi | u32::from(u16_at(26)),
                        size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
                        created: DosTime {
                            date: u16_at(16),
                            time: u16_at(14),
                            hundredths: e[13],
                        },
                        accessed_date: u16_at(18),
                        modified: DosTime {
                            date: u16_at(24),
                            time: u16_at(22),
                            hundredths: 0,
                        },
                        offset: pos + (i as u64) * 32,
                    });
                }
                pos += n as u64;
            }
        }
        Ok(out)
    }

    /// The label entry of the root directory, if it has one.
    pub fn volume_label(&mut self) -> Result<Option<String>> {
        let mut buf = vec![0u8; 32];
        let regions = self.regions(self.root(), "root directory")?;
        for region in regions {
            let mut pos = region.start;
            while pos + 32 <= region.end {
                self.dev.read_at(pos, &mut buf)?;
                if buf[0] == 0 {
                    return Ok(None);
                }
                if buf[0] != 0xE5 && buf[11] & 0x3F != ATTR_LFN && buf[11] & ATTR_VOLUME != 0 {
                    let label = String::from_utf8_lossy(&buf[..11]).trim_end().to_string();
                    return Ok(Some(label));
                }
                pos += 32;
            }
        }
        Ok(None)
    }

    /// The directory `entry` (named `path`) opens, after checking its chain.
    pub fn open_dir(&mut self, entry: &RawEntry, path: &str) -> Result<DirLoc> {
        if !entry.is_dir() {
            return Err(Error::Invalid(format!("{path}: not a directory")));
        }
        if entry.first_cluster == 0 {
            return Err(corrupt(
                self.dev,
                format!("directory {path} has no cluster"),
            ));
        }
        Ok(DirLoc::Chain(entry.first_cluster))
    }

    /// Checks that a file's chain is intact and long enough for its size.
    pub fn check_file(&mut self, entry: &RawEntry, path: &str) -> Result<()> {
        let needed = u64::from(entry.size).div_ceil(self.geo.cluster_size);
        if entry.first_cluster == 0 {
            return if needed == 0 {
                Ok(())
            } else {
                Err(corrupt(
                    self.dev,
                    format!("{path} has {} bytes but no cluster", entry.size),
                ))
            };
        }
        let have: u64 = self
            .chain(entry.first_cluster, path)?
            .iter()
            .map(|r| u64::from(r.end - r.start))
            .sum();
        if have < needed {
            return Err(corrupt(
                self.dev,
                format!("{path} has {} bytes but only {have} clusters", entry.size),
            ));
        }
        Ok(())
    }

    /// Walks `parts` from the root. Returns the directory holding the last
    /// component and its entry (`None` if that one does not exist; the
    /// directories on the way must). An empty path is the root: `(root, None)`.
    pub fn walk(&mut self, parts: &[&str]) -> Result<(DirLoc, Option<RawEntry>)> {
        let mut dir = self.root();
        let mut here = String::new();
        for (i, part) in parts.iter().enumerate() {
            let path = format!("{here}/{part}");
            let found = self
                .entries(dir, if here.is_empty() { "/" } else { &here })?
                .into_iter()
                .find(|e| e.matches(part));
            if i + 1 == parts.len() {
                return Ok((dir, found));
            }
            match found {
                Some(e) => dir = self.open_dir(&e, &path)?,
                None => return Err(Error::NotFound(path)),
            }
            here = path;
        }
        Ok((dir, None))
    }
}
