//! The write plan: which byte ranges of the image go to the card, and which
//! of them hold the partition table (written last).
//!
//! Providers, in order of preference: a bmap file covers the whole image; else
//! each region of the image is decided by the best provider that knows it —
//! the allocation map of the filesystem in a partition, the data/hole map of a
//! sparse image file (`SEEK_DATA`/`SEEK_HOLE`), or, failing those, the region
//! in full. Zero bytes inside a mapped range are written like any others: a
//! block is never skipped merely because it reads as zeros. Ranges are widened
//! to 4 KiB so that direct I/O can take them.
//!
//! A compressed image cannot be read at random, so its filesystems' maps are
//! learned as it streams past ([`imagegen::ranges::StreamMapper`]): the plan
//! is then [`Plan::learned`] and its data ranges are known only once the
//! writer has read the image (it returns the plan as learned). One pass over
//! the image, decompression running beside the writes, and no scratch space.

use crate::bmap::Bmap;
use crate::ranges::{data_map, filesystem_map, Extent, RangeSet};
use crate::source::Source;
use crate::{Error, Result};
use imagegen::block::MemDevice;
use imagegen::layout::{self, Partition, PartitionTable, Scheme, SECTOR};
use std::fs::File;

/// Alignment of every planned range.
pub const ALIGN: u64 = 4096;

/// How one region of the image was mapped, for `--dry-run` and the summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Region {
    /// What the region is: "whole image", "partition 2", "gap before partition 1".
    pub what: String,
    /// The provider that decided it: "bmap", "ext4 allocation map", "sparse file", "in full".
    pub provider: String,
    /// Start of the region in the image.
    pub start: u64,
    /// Length of the region.
    pub len: u64,
    /// Bytes of it that will be written.
    pub mapped: u64,
}

/// Ranges to write, in image (and device) offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Size of the image.
    pub image_size: u64,
    /// Everything written before the table, disjoint from `table`.
    pub write: RangeSet,
    /// The sectors that hold the partition table, written last.
    pub table: RangeSet,
    /// How each region was decided.
    pub regions: Vec<Region>,
    /// For a stream without a bmap: the partitions whose maps are learned as
    /// the image passes. `write` then holds only what is written whatever the
    /// maps say (what a delta changes).
    pub learn: Option<Vec<Partition>>,
    /// Compare exactly the mapped bytes: no widening, no table of its own
    /// (`verify --bmap`, so that padding bmaptool never wrote is not judged).
    pub exact: bool,
}

impl Plan {
    /// Whether the data ranges are learned while the image streams.
    pub fn learned(&self) -> bool {
        self.learn.is_some()
    }

    /// Bytes the plan writes, table included (for a learned plan, before
    /// the image has been read: at most the whole image).
    pub fn bytes(&self) -> u64 {
        if self.learned() {
            return self.image_size;
        }
        self.write.bytes() + self.table.bytes()
    }

    /// Bytes of the image the plan leaves unwritten.
    pub fn skipped(&self) -> u64 {
        self.image_size.saturating_sub(self.bytes())
    }

    /// The data and table ranges as separate pieces, in offset order (the
    /// reader cuts its chunks at their boundaries).
    pub fn pieces(&self) -> Vec<Extent> {
        let mut v: Vec<Extent> = self
            .write
            .extents()
            .iter()
            .chain(self.table.extents())
            .copied()
            .collect();
        v.sort();
        v
    }
}

/// Where the plan may look besides the image itself.
#[derive(Debug, Default)]
pub struct Hints<'a> {
    /// A bmap for the image (`--bmap`).
    pub bmap: Option<&'a Bmap>,
    /// The image file itself, when it is a raw file whose holes mean "unused".
    pub sparse_file: Option<&'a File>,
    /// Ranges that are always written (what a node delta changes).
    pub changed: Option<&'a RangeSet>,
    /// With a bmap: plan exactly its ranges (see [`Plan::exact`]).
    pub exact: bool,
}

/// Builds the plan for `source`.
pub fn build(source: &Source, hints: &Hints) -> Result<Plan> {
    let size = source.size();
    let table_info = partition_table(source);
    let table = table_extents(table_info.as_ref(), size).aligned(ALIGN, size);
    let mut regions = Vec::new();
    let mapped = if let Some(bmap) = hints.bmap {
        if bmap.image_size != size {
            return Err(Error::Image(imagegen::Error::Invalid(format!(
                "the bmap describes an image of {} bytes but {} has {size}",
                bmap.image_size,
                source.describe()
            ))));
        }
        regions.push(Region {
            what: "whole image".into(),
            provider: format!("bmap {} ({})", bmap.version, bmap.describe_protection()),
            start: 0,
            len: size,
            mapped: bmap.mapped.bytes(),
        });
        if hints.exact {
            let write = match hints.changed {
                Some(c) => bmap.mapped.union(c),
                None => bmap.mapped.clone(),
            };
            return Ok(Plan {
                image_size: size,
                write,
                table: RangeSet::new(),
                regions,
                learn: None,
                exact: true,
            });
        }
        bmap.mapped.clone()
    } else {
        let parts: Vec<&Partition> = table_info
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| !p.kind.is_extended() && p.size > 0)
            .collect();
        if !parts.is_empty() && source.random_access().is_none() {
            // A stream: maps are learned as it passes (see the module doc).
            for p in &parts {
                regions.push(Region {
                    what: format!("partition {} (type {})", p.number, p.kind),
                    provider: "learned as the image streams".into(),
                    start: p.start,
                    len: p.size,
                    mapped: p.size,
                });
            }
            let write = hints
                .changed
                .map_or_else(RangeSet::new, |c| c.aligned(ALIGN, size).subtract(&table));
            return Ok(Plan {
                image_size: size,
                write,
                table,
                regions,
                learn: Some(parts.into_iter().cloned().collect()),
                exact: false,
            });
        }
        if parts.is_empty() {
            let what = match &table_info {
                Some(t) if t.scheme != Scheme::None => "whole image",
                Some(_) => "whole image (no partition table)",
                None => "whole image (partition table unreadable)",
            };
            let whole = RangeSet::full(size);
            let (provider, set) = fallback(&whole, hints)?;
            regions.push(Region {
                what: what.into(),
                provider,
                start: 0,
                len: size,
                mapped: set.bytes(),
            });
            set
        } else {
            let mut mapped = RangeSet::new();
            let mut covered = RangeSet::new();
            let dev = source.random_access().expect("checked above");
            for p in parts {
                let region = RangeSet::full(p.end()).subtract(&RangeSet::full(p.start));
                let (provider, set) = match filesystem_map(&dev, p) {
                    Ok(Some(found)) => found,
                    Ok(None) => fallback(&region, hints)?,
                    // A map that exists but cannot be trusted (a journal to
                    // replay, an unclean unmount, damage): all of it, holes
                    // of a sparse file included, as they may hide live data.
                    Err(why) => (format!("in full ({why})"), region.clone()),
                };
                regions.push(Region {
                    what: format!("partition {} (type {})", p.number, p.kind),
                    provider,
                    start: p.start,
                    len: p.size,
                    mapped: set.bytes(),
                });
                mapped = mapped.union(&set);
                covered = covered.union(&region);
            }
            // Tables, boot code and firmware live outside the partitions.
            let gaps = RangeSet::full(size).subtract(&covered);
            for g in gaps.extents() {
                regions.push(Region {
                    what: "outside the partitions".into(),
                    provider: "in full".into(),
                    start: g.start,
                    len: g.len(),
                    mapped: g.len(),
                });
            }
            mapped.union(&gaps)
        }
    };
    let mapped = match hints.changed {
        Some(c) => mapped.union(c),
        None => mapped,
    };
    let write = mapped.aligned(ALIGN, size).subtract(&table);
    Ok(Plan {
        image_size: size,
        write,
        table,
        regions,
        learn: None,
        exact: false,
    })
}

impl Plan {
    /// The plan as learned from the stream: `selected` by the maps (image
    /// offsets), with the regions the mapper reports.
    pub fn with_learned(
        &self,
        selected: &RangeSet,
        regions: Vec<imagegen::ranges::LearnedRegion>,
    ) -> Plan {
        let size = self.image_size;
        Plan {
            image_size: size,
            write: selected
                .union(&self.write)
                .aligned(ALIGN, size)
                .subtract(&self.table),
            table: self.table.clone(),
            regions: regions
                .into_iter()
                .map(|r| Region {
                    what: r.what,
                    provider: r.how,
                    start: r.start,
                    len: r.len,
                    mapped: r.selected,
                })
                .collect(),
            learn: None,
            exact: false,
        }
    }
}

/// A region no filesystem map covers: its data map when the image is a
/// sparse file, else all of it.
fn fallback(region: &RangeSet, hints: &Hints) -> Result<(String, RangeSet)> {
    match hints.sparse_file {
        Some(f) => {
            let size = region.extents().last().map_or(0, |e| e.end);
            let data = data_map(f, size)
                .map_err(|e| imagegen::Error::io_context("mapping the holes of the image", e))?;
            Ok(("sparse file".into(), data.intersect(region)))
        }
        None => Ok(("in full".into(), region.clone())),
    }
}

/// The image's partition table, read by `imagegen::layout` (from the
/// read-ahead head for a stream); `None` when it does not parse, in which
/// case the image is written without table-aware mapping.
fn partition_table(source: &Source) -> Option<PartitionTable> {
    match (source.random_access(), source.head()) {
        (Some(dev), _) => layout::read_table(&*dev).ok(),
        (None, Some(head)) => layout::parse_table(&MemDevice::from_vec(head.to_vec())).ok(),
        (None, None) => None,
    }
}

/// The sectors holding partition tables: sector 0 (MBR, or GPT's protective
/// MBR) always, and for GPT the primary header and entries (LBA 1–33) and the
/// backup copy in the last 33 sectors.
fn table_extents(table: Option<&PartitionTable>, size: u64) -> RangeSet {
    let mut t = RangeSet::new();
    t.insert(0, SECTOR.min(size));
    if table.is_some_and(|t| t.scheme == Scheme::Gpt) && size >= 67 * SECTOR {
        t.insert(0, 34 * SECTOR);
        t.insert(size - 33 * SECTOR, size);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagegen::block::{FileDevice, MemDevice};
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    #[test]
    fn sparse_file_plan_keeps_data_zeros_and_table() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[0x55, 0xaa], 510).unwrap();
        // A block of explicit zeros is data: it must be written.
        f.write_all_at(&vec![0u8; 8192], 1 << 20).unwrap();
        f.write_all_at(b"x", (4 << 20) + 5).unwrap();
        f.sync_all().unwrap();
        let dev = FileDevice::open(&p).unwrap();
        let src = Source::Random(Arc::new(dev));
        let file = File::open(&p).unwrap();
        let plan = build(
            &src,
            &Hints {
                bmap: None,
                sparse_file: Some(&file),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(plan.table.extents(), &[Extent::new(0, 4096)]);
        for must in [1 << 20, (1 << 20) + 8191, (4 << 20) + 5] {
            assert!(
                plan.write
                    .extents()
                    .iter()
                    .any(|e| e.start <= must && must < e.end),
                "{must} not planned: {:?}",
                plan.write
            );
        }
        assert!(plan.skipped() > 7 << 20, "holes are skipped: {plan:?}");
        assert!(plan.write.intersect(&plan.table).is_empty());
    }

    #[test]
    fn gpt_tables_at_both_ends_are_written_last() {
        let size = 4 << 20;
        // The test is about the plan; sfdisk makes the GPT.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gpt.img");
        std::fs::write(&p, vec![0u8; size]).unwrap();
        let mut child = std::process::Command::new("sfdisk")
            .args(["-q", p.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sfdisk (fdisk package) is installed");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: gpt\n2048,2048,L\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        let dev = MemDevice::from_vec(std::fs::read(&p).unwrap());
        let plan = build(&Source::Random(Arc::new(dev)), &Hints::default()).unwrap();
        let size = size as u64;
        assert_eq!(
            plan.table.extents(),
            &[Extent::new(0, 20480), Extent::new(size - 20480, size)]
        );
        assert_eq!(plan.bytes(), size, "no map: everything in full");
        assert_eq!(
            plan.regions[0].what,
            "partition 1 (type 0fc63daf-8483-4772-8e79-3d69d8477de4)"
        );
    }

    #[test]
    fn bmap_of_another_size_is_refused() {
        let b = Bmap {
            version: "2.0".into(),
            image_size: 8192,
            block_size: 4096,
            blocks_count: 2,
            mapped_blocks_count: 1,
            mapped: RangeSet::full(4096),
            checksum_type: None,
            checksums: Vec::new(),
            protection: crate::bmap::Protection::None,
        };
        let src = Source::Random(Arc::new(MemDevice::zeroed(4096)));
        let err = build(
            &src,
            &Hints {
                bmap: Some(&b),
                sparse_file: None,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("8192"), "{err}");
    }
}
