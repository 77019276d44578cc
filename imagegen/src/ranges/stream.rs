//! The allocation maps of a disk image learned from the image as it streams
//! past, once, in offset order — for compressed images, which cannot be read
//! at random.
//!
//! The partition table comes first (from the stream's head). In each
//! partition the filesystem's own metadata precedes, in the usual layouts,
//! the data it describes: a FAT volume's tables lead it, and an ext4 group's
//! block bitmap lies at the start of its group or, with `flex_bg`, at the
//! start of its flex group. So [`StreamMapper::feed`] keeps only the bytes a
//! map needs (the head of each partition until its filesystem opens, then
//! the block bitmaps as they pass) and decides every byte as it arrives:
//! used, or not. A byte whose map has not passed yet (a bitmap placed after
//! the data it describes, metadata that never parses) is written, and the
//! region says how much and why. Memory stays near the size of the bitmaps:
//! 1/32768 of an ext4 filesystem with 4 KiB blocks.

use super::{Extent, RangeSet};
use crate::block::{BlockDevice, Window};
use crate::fs::ext4::Ext4Fs;
use crate::fs::{self, FsType, OpenOptions};
use crate::layout::Partition;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Most of a partition's head kept while waiting for its filesystem to open.
const PROBE_LIMIT: u64 = 64 << 20;

/// Bytes of the image seen so far, by offset; reads of anything else fail
/// and are remembered, so a parser's "not there yet" is told from "corrupt".
#[derive(Debug)]
struct Captured {
    size: u64,
    pieces: Mutex<BTreeMap<u64, Vec<u8>>>,
    missed: AtomicBool,
}

impl Captured {
    fn insert(&self, offset: u64, data: &[u8]) {
        if !data.is_empty() {
            self.lock().insert(offset, data.to_vec());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<u8>>> {
        self.pieces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops what lies in `[start, end)` except the bytes in `keep`.
    fn keep_only(&self, start: u64, end: u64, keep: &RangeSet) {
        let mut pieces = self.lock();
        let inside: Vec<u64> = pieces.range(start..end).map(|(k, _)| *k).collect();
        for k in inside {
            let Some(bytes) = pieces.remove(&k) else {
                continue;
            };
            let piece = RangeSet::from_extents(vec![Extent::new(k, k + bytes.len() as u64)]);
            for e in piece.intersect(keep).extents() {
                let at = (e.start - k) as usize;
                pieces.insert(e.start, bytes[at..at + e.len() as usize].to_vec());
            }
        }
    }

    /// Whether a read failed for want of bytes since the last call.
    fn take_missed(&self) -> bool {
        self.missed.swap(false, Ordering::Relaxed)
    }
}

impl BlockDevice for Captured {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        crate::block::check_bounds(offset, buf.len(), self.size)?;
        let pieces = self.lock();
        let mut at = offset;
        let end = offset + buf.len() as u64;
        while at < end {
            let found = pieces
                .range(..=at)
                .next_back()
                .filter(|(k, v)| **k + v.len() as u64 > at);
            let Some((k, v)) = found else {
                self.missed.store(true, Ordering::Relaxed);
                return Err(Error::corrupt(
                    "image stream",
                    format!("byte {at} has not been read yet"),
                ));
            };
            let from = (at - k) as usize;
            let n = (v.len() - from).min((end - at) as usize);
            let to = (at - offset) as usize;
            buf[to..to + n].copy_from_slice(&v[from..from + n]);
            at += n as u64;
        }
        Ok(())
    }

    fn write_at(&self, _: u64, _: &[u8]) -> Result<()> {
        Err(Error::ReadOnly(self.describe()))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        "image stream".into()
    }

    fn is_read_only(&self) -> bool {
        true
    }
}

type Win = Window<Arc<Captured>>;

/// An ext4 filesystem opened from its streamed head.
struct Ext4State {
    fs: Ext4Fs<Win>,
    /// Image offsets of every block bitmap on disk.
    bitmaps: RangeSet,
    /// The used bytes (image offsets) of the group last looked at.
    group: Option<(u32, RangeSet)>,
}

enum State {
    /// Keeping the partition's head until its filesystem opens.
    Probing,
    /// A FAT volume: its whole map is known once its tables have passed.
    Fat(FsType, RangeSet),
    Ext4(FsType, Box<Ext4State>),
    /// Written in full, for the reason given.
    Whole(String),
}

struct Part {
    p: Partition,
    state: State,
    /// Bytes of this partition selected so far.
    selected: u64,
    /// Of which: written only because their map came later in the stream.
    late: u64,
    /// Groups whose bitmap could not be used, with the first reason.
    trouble: Option<String>,
}

/// How a region of the image was decided, once the stream has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedRegion {
    /// `partition 2`, `outside the partitions`, `whole image`.
    pub what: String,
    /// The map used, or why there was none.
    pub how: String,
    pub start: u64,
    pub len: u64,
    /// Bytes selected for writing.
    pub selected: u64,
}

/// Learns which bytes of a streamed image matter, from the image itself.
pub struct StreamMapper {
    size: u64,
    store: Arc<Captured>,
    parts: Vec<Part>,
    /// Bytes outside every partition, all selected.
    gaps: RangeSet,
    /// Everything selected so far.
    selected: RangeSet,
    /// Next offset expected.
    pos: u64,
}

impl std::fmt::Debug for StreamMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMapper")
            .field("size", &self.size)
            .field("partitions", &self.parts.len())
            .field("pos", &self.pos)
            .finish()
    }
}

impl StreamMapper {
    /// A mapper for an image of `size` bytes with these partitions (from
    /// its table; empty when it has none, and then everything is selected).
    pub fn new(size: u64, partitions: &[Partition]) -> Self {
        let mut parts: Vec<Part> = partitions
            .iter()
            .filter(|p| !p.kind.is_extended() && p.size > 0 && p.end() <= size)
            .map(|p| Part {
                p: p.clone(),
                state: State::Probing,
                selected: 0,
                late: 0,
                trouble: None,
            })
            .collect();
        parts.sort_by_key(|p| p.p.start);
        let covered = RangeSet::from_extents(
            parts
                .iter()
                .map(|p| Extent::new(p.p.start, p.p.end()))
                .collect(),
        );
        StreamMapper {
            size,
            store: Arc::new(Captured {
                size,
                pieces: Mutex::new(BTreeMap::new()),
                missed: AtomicBool::new(false),
            }),
            gaps: RangeSet::full(size).subtract(&covered),
            parts,
            selected: RangeSet::new(),
            pos: 0,
        }
    }

    /// Takes the image bytes at `offset` (the next ones of the stream) and
    /// returns which of them must be written.
    pub fn feed(&mut self, offset: u64, data: &[u8]) -> Result<RangeSet> {
        if offset != self.pos {
            return Err(Error::Invalid(format!(
                "stream mapper fed at {offset}, expected {}",
                self.pos
            )));
        }
        let end = offset + data.len() as u64;
        self.pos = end;
        let block = RangeSet::from_extents(vec![Extent::new(offset, end)]);
        let mut sel = if self.parts.is_empty() {
            block.clone()
        } else {
            self.gaps.intersect(&block)
        };
        let store = self.store.clone();
        for part in &mut self.parts {
            let p = &part.p;
            let (from, to) = (offset.max(p.start), end.min(p.end()));
            if from >= to {
                continue;
            }
            let ov = RangeSet::from_extents(vec![Extent::new(from, to)]);
            let slice = |e: &Extent| &data[(e.start - offset) as usize..(e.end - offset) as usize];
            let chosen = match &mut part.state {
                State::Probing => {
                    store.insert(from, slice(&Extent::new(from, to)));
                    part.state = open(&store, p, to);
                    // Opened within this block: its map decides the block too.
                    match &mut part.state {
                        State::Fat(_, map) => map.intersect(&ov),
                        State::Ext4(_, x) => {
                            ext4_select(x, p.start, from, to, &mut part.late, &mut part.trouble)
                        }
                        State::Probing | State::Whole(_) => ov,
                    }
                }
                State::Fat(_, map) => map.intersect(&ov),
                State::Whole(_) => ov,
                State::Ext4(_, x) => {
                    for e in x.bitmaps.intersect(&ov).extents() {
                        store.insert(e.start, slice(e));
                    }
                    ext4_select(x, p.start, from, to, &mut part.late, &mut part.trouble)
                }
            };
            part.selected += chosen.bytes();
            sel = sel.union(&chosen);
        }
        self.selected = self.selected.union(&sel);
        Ok(sel)
    }

    /// Everything selected so far.
    pub fn selected(&self) -> &RangeSet {
        &self.selected
    }

    /// How each region was decided (call once the stream has passed).
    pub fn regions(&self) -> Vec<LearnedRegion> {
        if self.parts.is_empty() {
            return vec![LearnedRegion {
                what: "whole image".into(),
                how: "in full (no partition table)".into(),
                start: 0,
                len: self.size,
                selected: self.selected.bytes(),
            }];
        }
        let mut out: Vec<LearnedRegion> = self
            .parts
            .iter()
            .map(|part| {
                let mut how = match &part.state {
                    State::Probing => "in full (its filesystem metadata never parsed)".into(),
                    State::Whole(why) => format!("in full ({why})"),
                    State::Fat(kind, _) | State::Ext4(kind, _) => {
                        format!("{kind} allocation map, read as the image streamed")
                    }
                };
                if part.late > 0 {
                    how += &format!(
                        "; {} bytes written in full because their bitmaps come after them",
                        part.late
                    );
                }
                if let Some(t) = &part.trouble {
                    how += &format!("; some groups in full: {t}");
                }
                LearnedRegion {
                    what: format!("partition {} (type {})", part.p.number, part.p.kind),
                    how,
                    start: part.p.start,
                    len: part.p.size,
                    selected: part.selected,
                }
            })
            .collect();
        for g in self.gaps.extents() {
            out.push(LearnedRegion {
                what: "outside the partitions".into(),
                how: "in full".into(),
                start: g.start,
                len: g.len(),
                selected: g.len(),
            });
        }
        out.sort_by_key(|r| r.start);
        out
    }
}

/// Tries to open the filesystem of `p` from what has been captured, the
/// stream being at `pos`.
fn open(store: &Arc<Captured>, p: &Partition, pos: u64) -> State {
    let win = match Window::new(store.clone(), p.start, p.size) {
        Ok(w) => w,
        Err(e) => return State::Whole(e.to_string()),
    };
    let waiting = |store: &Captured, e: Error| {
        let missed = store.take_missed();
        if missed && pos < p.end() && pos - p.start < PROBE_LIMIT {
            State::Probing
        } else if missed {
            State::Whole(format!(
                "its filesystem metadata is not within its first {} MiB",
                PROBE_LIMIT >> 20
            ))
        } else {
            State::Whole(format!("filesystem map unavailable: {e}"))
        }
    };
    store.take_missed();
    let kind = match fs::probe(&win) {
        Ok(Some(kind)) => kind,
        Ok(None) => return State::Whole("no filesystem nodeimg knows".into()),
        Err(e) => return waiting(store, e),
    };
    let keep_nothing = RangeSet::new();
    match kind {
        FsType::Fat12 | FsType::Fat16 | FsType::Fat32 => match fs::fat::used_ranges(&win) {
            Ok(v) => {
                store.keep_only(p.start, p.end(), &keep_nothing);
                let map = RangeSet::from_extents(
                    v.into_iter().map(|r| Extent::new(r.start, r.end)).collect(),
                )
                .intersect(&RangeSet::full(p.size))
                .shifted(p.start);
                State::Fat(kind, map)
            }
            Err(e) => waiting(store, e),
        },
        FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => {
            let fs = match Ext4Fs::open_with(win, OpenOptions::read_only()) {
                Ok(fs) => fs,
                Err(e) => return waiting(store, e),
            };
            if let Some(why) = fs.map_refusal() {
                store.keep_only(p.start, p.end(), &keep_nothing);
                return State::Whole(format!("{kind}: {why}"));
            }
            let bitmaps = RangeSet::from_extents(
                (0..fs.group_count())
                    .filter_map(|g| fs.block_bitmap_bytes(g))
                    .map(|r| Extent::new(p.start + r.start, p.start + r.end))
                    .collect(),
            )
            .intersect(&RangeSet::from_extents(vec![Extent::new(p.start, p.end())]));
            store.keep_only(p.start, p.end(), &bitmaps);
            State::Ext4(
                kind,
                Box::new(Ext4State {
                    fs,
                    bitmaps,
                    group: None,
                }),
            )
        }
    }
}

/// The used bytes of `[from, to)` (image offsets) of an ext4 partition at
/// `base`: from each group's bitmap when it has passed, else all of them.
fn ext4_select(
    x: &mut Ext4State,
    base: u64,
    from: u64,
    to: u64,
    late: &mut u64,
    trouble: &mut Option<String>,
) -> RangeSet {
    let mut out = RangeSet::new();
    let fs_end = base + x.fs.group_bytes(x.fs.group_count().saturating_sub(1)).end;
    let mut at = from;
    while at < to.min(fs_end) {
        let g = group_of(&x.fs, at - base);
        let ge = base + x.fs.group_bytes(g).end;
        let piece = RangeSet::from_extents(vec![Extent::new(at, to.min(ge))]);
        if x.group.as_ref().is_none_or(|(n, _)| *n != g) {
            let bitmap_passed =
                x.fs.block_bitmap_bytes(g)
                    .is_none_or(|r| base + r.end <= to);
            let used = if bitmap_passed {
                x.fs.group_used_ranges(g).map(|v| {
                    RangeSet::from_extents(
                        v.into_iter()
                            .map(|r| Extent::new(base + r.start, base + r.end))
                            .collect(),
                    )
                })
            } else {
                Err(Error::Invalid(String::new()))
            };
            match used {
                Ok(set) => x.group = Some((g, set)),
                Err(e) => {
                    if bitmap_passed && trouble.is_none() {
                        *trouble = Some(format!("group {g}: {e}"));
                    } else if !bitmap_passed {
                        *late += piece.bytes();
                    }
                    out = out.union(&piece);
                    at = piece.extents()[0].end;
                    // Undecided: the next piece of this group asks again.
                    x.group = None;
                    continue;
                }
            }
        }
        let used = &x.group.as_ref().expect("set above").1;
        out = out.union(&used.intersect(&piece));
        at = to.min(ge);
    }
    out
}

fn group_of(fs: &Ext4Fs<Win>, rel: u64) -> u32 {
    // Groups are equal in size but for the last; search is cheap enough.
    let n = fs.group_count();
    let (mut lo, mut hi) = (0u32, n);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if fs.group_bytes(mid).start <= rel {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::FileDevice;
    use crate::layout;
    use std::process::{Command, Stdio};

    fn sh(cmd: &str, args: &[&str]) {
        let out = Command::new(cmd).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// MBR, FAT at 1 MiB (8 MiB), ext4 at 9 MiB (`blocks` 1 KiB blocks) with files.
    fn image(dir: &std::path::Path, ext4_args: &[&str]) -> std::path::PathBuf {
        let img = dir.join("s.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(48 << 20)
            .unwrap();
        let mut c = Command::new("sfdisk")
            .args(["-q", img.to_str().unwrap()])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(b"label: dos\n2048,16384,c\n18432,,83\n")
            .unwrap();
        assert!(c.wait().unwrap().success());
        sh(
            "mkfs.fat",
            &["--offset", "2048", img.to_str().unwrap(), "8192"],
        );
        let tree = dir.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        for i in 0..6u32 {
            let v: Vec<u8> = (0..1_500_000u32)
                .map(|j| (j * (i + 3) % 253) as u8)
                .collect();
            std::fs::write(tree.join(format!("f{i}")), v).unwrap();
        }
        let mut args = vec!["-q", "-F"];
        args.extend_from_slice(ext4_args);
        let off = format!("offset={}", 18432 * 512);
        let t = tree.to_str().unwrap().to_string();
        args.extend_from_slice(&["-E", &off, "-d", &t, img.to_str().unwrap(), "39M"]);
        sh("mkfs.ext4", &args);
        img
    }

    fn learn(img: &std::path::Path, step: usize) -> (RangeSet, Vec<LearnedRegion>) {
        let data = std::fs::read(img).unwrap();
        let table = layout::read_table(&FileDevice::open(img).unwrap()).unwrap();
        let mut m = StreamMapper::new(data.len() as u64, &table.partitions);
        let mut all = RangeSet::new();
        for (i, piece) in data.chunks(step).enumerate() {
            let off = (i * step) as u64;
            let sel = m.feed(off, piece).unwrap();
            assert!(sel
                .subtract(&RangeSet::from_extents(vec![Extent::new(
                    off,
                    off + piece.len() as u64
                )]))
                .is_empty());
            all = all.union(&sel);
        }
        assert_eq!(&all, m.selected());
        (all, m.regions())
    }

    fn random_map(img: &std::path::Path) -> RangeSet {
        let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(img).unwrap());
        let table = layout::read_table(&*dev).unwrap();
        let mut set = RangeSet::full(table.partitions[0].start);
        for p in &table.partitions {
            let (_, s) = super::super::filesystem_map(&dev, p).unwrap().unwrap();
            set = set.union(&s);
        }
        set
    }

    #[test]
    fn the_stream_learns_what_random_access_reads() {
        let dir = tempfile::tempdir().unwrap();
        // 1 KiB blocks, 8 MiB groups: several groups, bitmaps packed by flex_bg.
        let img = image(dir.path(), &["-b", "1024"]);
        let random = random_map(&img);
        for step in [1 << 20, 4 << 20, 3 * 4096 + 512] {
            let (learned, regions) = learn(&img, step);
            // Never less than the maps say; more only where a bitmap came late.
            assert!(random.subtract(&learned).is_empty(), "step {step}");
            let late: u64 = regions
                .iter()
                .filter(|r| r.how.contains("bitmaps come after"))
                .count() as u64;
            if late == 0 {
                assert_eq!(learned, random, "step {step}: {regions:?}");
            }
            assert!(learned.bytes() < 30 << 20, "sparse: {}", learned.bytes());
            assert!(
                regions[1].how.starts_with("fat12 allocation map"),
                "{regions:?}"
            );
            assert!(
                regions[2].how.starts_with("ext4 allocation map"),
                "{regions:?}"
            );
        }
    }

    #[test]
    fn an_ext4_that_is_not_clean_is_learned_whole() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), &[]);
        let fs_at = format!("{}?offset={}", img.display(), 18432 * 512);
        sh("debugfs", &["-w", "-R", "feature needs_recovery", &fs_at]);
        let (learned, regions) = learn(&img, 1 << 20);
        let p2 = &regions[2];
        assert!(p2.how.contains("journal needs recovery"), "{regions:?}");
        assert_eq!(p2.selected, p2.len);
        assert!(learned.bytes() > 39 << 20);
        // Random access says the same.
        let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&img).unwrap());
        let table = layout::read_table(&*dev).unwrap();
        let err = super::super::filesystem_map(&dev, &table.partitions[1]).unwrap_err();
        assert!(err.contains("journal needs recovery"), "{err}");
    }
}
