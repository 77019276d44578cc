//! Reading the file allocation table: following cluster chains with checks
//! (so a hostile chain cannot loop or point outside the volume), counting
//! free clusters and listing what is allocated.

use super::bpb::{FatType, Geometry};
use crate::block::BlockDevice;
use crate::Result;
use std::ops::Range;

/// What one FAT entry says about the cluster after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Free,
    Next(u32),
    End,
    Bad,
    /// A value that is neither a valid cluster nor a marker.
    Invalid(u32),
}

fn classify(geo: &Geometry, raw: u32) -> Link {
    let (bad, end) = match geo.fat_type {
        FatType::Fat12 => (0xFF7, 0xFF8),
        FatType::Fat16 => (0xFFF7, 0xFFF8),
        FatType::Fat32 => (0x0FFF_FFF7, 0x0FFF_FFF8),
    };
    match raw {
        0 => Link::Free,
        r if r >= end => Link::End,
        r if r == bad => Link::Bad,
        r if geo.is_data_cluster(r) => Link::Next(r),
        r => Link::Invalid(r),
    }
}

fn decode(fat_type: FatType, bytes: &[u8], cluster: u64) -> u32 {
    match fat_type {
        FatType::Fat12 => {
            let at = (cluster + cluster / 2) as usize;
            let v = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
            u32::from(if cluster & 1 == 0 { v & 0x0FFF } else { v >> 4 })
        }
        FatType::Fat16 => {
            let at = (cluster * 2) as usize;
            u32::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
        }
        FatType::Fat32 => {
            let at = (cluster * 4) as usize;
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                & 0x0FFF_FFFF
        }
    }
}

/// Random access to FAT entries with a one-window cache: chains are mostly
/// contiguous, so following one costs a read per window, not per cluster.
pub struct FatReader<'a> {
    dev: &'a dyn BlockDevice,
    geo: &'a Geometry,
    window: Vec<u8>,
    window_start: u64,
}

const WINDOW: u64 = 64 * 1024;

impl<'a> FatReader<'a> {
    pub fn new(dev: &'a dyn BlockDevice, geo: &'a Geometry) -> Self {
        FatReader {
            dev,
            geo,
            window: Vec::new(),
            window_start: 0,
        }
    }

    /// The link stored for `cluster` (a valid data cluster).
    pub fn link(&mut self, cluster: u32) -> Result<Link> {
        let c = u64::from(cluster);
        // Byte range the entry occupies inside the FAT.
        let (first, last) = match self.geo.fat_type {
            FatType::Fat12 => (c + c / 2, c + c / 2 + 1),
            FatType::Fat16 => (c * 2, c * 2 + 1),
            FatType::Fat32 => (c * 4, c * 4 + 3),
        };
        let fat_bytes = self.geo.sectors_per_fat * self.geo.bytes_per_sector;
        let loaded = self.window_start..self.window_start + self.window.len() as u64;
        if !(loaded.contains(&first) && loaded.contains(&last)) {
            // Align windows to 4 bytes so a FAT32 entry never straddles two;
            // FAT12 windows start on an even entry's byte (multiple of 3).
            let start = match self.geo.fat_type {
                FatType::Fat12 => first / 3 * 3,
                _ => first / 4 * 4,
            };
            let len = WINDOW.min(fat_bytes - start);
            self.window.resize(len as usize, 0);
            self.dev
                .read_at(self.geo.fat_offset() + start, &mut self.window)?;
            self.window_start = start;
        }
        // Decode relative to the window: shift the cluster so its byte offset
        // lands inside the buffer (the window start is a multiple of the
        // entry pattern, so parity for FAT12 is preserved).
        let rel_cluster = match self.geo.fat_type {
            FatType::Fat12 => c - self.window_start / 3 * 2,
            FatType::Fat16 => c - self.window_start / 2,
            FatType::Fat32 => c - self.window_start / 4,
        };
        Ok(classify(
            self.geo,
            decode(self.geo.fat_type, &self.window, rel_cluster),
        ))
    }

    /// Follows the chain from `first`, returning its runs of consecutive
    /// clusters. The error is why the chain is broken (for [`Error::Corrupt`]).
    ///
    /// [`Error::Corrupt`]: crate::Error::Corrupt
    pub fn chain(&mut self, first: u32) -> Result<std::result::Result<Vec<Range<u32>>, String>> {
        if !self.geo.is_data_cluster(first) {
            return Ok(Err(format!("first cluster {first} out of range")));
        }
        let mut runs: Vec<Range<u32>> = Vec::new();
        let mut cluster = first;
        let mut steps = 0u64;
        loop {
            match runs.last_mut() {
                Some(run) if run.end == cluster => run.end += 1,
                _ => runs.push(cluster..cluster + 1),
            }
            steps += 1;
            if steps > self.geo.clusters {
                return Ok(Err(format!("cluster chain from {first} loops")));
            }
            match self.link(cluster)? {
                Link::Next(n) => cluster = n,
                Link::End => return Ok(Ok(runs)),
                Link::Free => {
                    return Ok(Err(format!(
                        "chain from {first} runs into free cluster {cluster}"
                    )))
                }
                Link::Bad => {
                    return Ok(Err(format!(
                        "chain from {first} runs into bad cluster {cluster}"
                    )))
                }
                Link::Invalid(v) => {
                    return Ok(Err(format!(
                        "cluster {cluster} links to invalid cluster {v:#x}"
                    )))
                }
            }
        }
    }
}

/// Calls `f(cluster, link)` for every data cluster, reading the FAT in
/// bounded windows.
pub fn scan(dev: &dyn BlockDevice, geo: &Geometry, mut f: impl FnMut(u32, Link)) -> Result<()> {
    let end = geo.clusters + 2;
    // Entries per window, a multiple of 2 so FAT12 windows start on a byte.
    let per_window: u64 = 16 * 1024;
    let mut first = 2u64;
    let mut buf = Vec::new();
    while first < end {
        let base = first / per_window * per_window;
        let last = (base + per_window).min(end);
        let byte_start = base * geo.fat_type.entry_bits() / 8;
        let byte_end = (last * geo.fat_type.entry_bits()).div_ceil(8) + 1;
        let fat_bytes = geo.sectors_per_fat * geo.bytes_per_sector;
        let byte_end = byte_end.min(fat_bytes);
        buf.resize((byte_end - byte_start) as usize, 0);
        dev.read_at(geo.fat_offset() + byte_start, &mut buf)?;
        for c in first..last {
            let raw = decode(geo.fat_type, &buf, c - base);
            f(c as u32, classify(geo, raw));
        }
        first = last;
    }
    Ok(())
}

/// Number of free data clusters, counted from the FAT (FSInfo may lie).
pub fn count_free(dev: &dyn BlockDevice, geo: &Geometry) -> Result<u64> {
    count_zero_entries(
        dev,
        geo.fat_offset(),
        geo.fat_type.entry_bits(),
        geo.clusters,
    )
}

/// Counts the zero entries for clusters `2..clusters + 2` of the FAT at
/// byte `fat_at`, whose entries are `bits` wide (12, 16 or 32; FAT32's top
/// four bits are ignored). A FAT is read whole for every file written and
/// every volume probed, so FAT16/32 are counted by straight word compares
/// over 64 KiB windows (small enough for the block cache of a shared base,
/// no large zeroed buffer), not entry by entry through [`Link`].
pub(crate) fn count_zero_entries(
    dev: &dyn BlockDevice,
    fat_at: u64,
    bits: u64,
    clusters: u64,
) -> Result<u64> {
    let entries = clusters + 2;
    let bytes = (entries * bits).div_ceil(8);
    // Whole entries in every window (FAT12 packs two in 3 bytes).
    let step: u64 = 64 * 1020;
    let mut buf = vec![0u8; step.min(bytes) as usize];
    let mut free = 0u64;
    let mut done = 0u64;
    while done < bytes {
        let n = (bytes - done).min(step) as usize;
        let chunk = &mut buf[..n];
        dev.read_at(fat_at + done, chunk)?;
        let first = done * 8 / bits;
        // Entries of this window that are data clusters (2..entries).
        let skip = 2u64.saturating_sub(first) as usize;
        let count = (n as u64 * 8 / bits).min(entries - first) as usize;
        let word = (bits / 8) as usize;
        let data = &chunk[skip * word..count.max(skip) * word];
        free += match bits {
            32 => data
                .chunks_exact(4)
                .map(|e| u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & 0x0FFF_FFFF == 0))
                .sum::<u64>(),
            16 => data
                .chunks_exact(2)
                .map(|e| u64::from(e[0] | e[1] == 0))
                .sum::<u64>(),
            _ => (skip..count)
                .filter(|&i| decode(FatType::Fat12, chunk, i as u64) == 0)
                .count() as u64,
        };
        done += n as u64;
    }
    Ok(free)
}
