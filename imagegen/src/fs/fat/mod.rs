//! FAT12/16/32 on the `fatfs` crate, behind [`Filesystem`].
//!
//! `fatfs` does the writing (allocation, long-name generation, directory
//! entries). It trusts what it reads, so everything it will follow is
//! checked by our own code first: the boot sector ([`bpb`]), and on every
//! operation the cluster chains of the directories along the path and of
//! the file or tree being read, replaced or removed (`dir`, `table`).
//! With those checks a hostile image yields [`Error::Corrupt`], not a
//! panic or an endless loop inside `fatfs`.
//!
//! FAT keeps no owners, permission bits, links or extended attributes:
//! those operations are `Unsupported`, and the `mode`/`uid`/`gid` of
//! [`NewAttrs`] are ignored. `stat` reports the first cluster as `ino`, the
//! FAT attributes (`readonly`, `hidden`, `system`, `archive`) as `flags`,
//! and extents in clusters (`physical` is the cluster number).

pub mod bpb;
pub(crate) mod dir;
pub(crate) mod table;
pub(crate) mod time;

pub use crate::mkfs::fat::{format, FatBits, FormatOptions};
pub use bpb::{FatType, Geometry};

use self::dir::{DirLoc, DirReader, RawEntry};
use self::table::Link;
use crate::block::{BlockDevice, DeviceCursor};
use crate::fs::{
    path_components, DirEntry, Extent, FileKind, Filesystem, NewAttrs, Stat, Timestamp,
};
use crate::{Error, Result};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::sync::Arc;

type Inner = fatfs::FileSystem<DeviceCursor<Arc<dyn BlockDevice>>>;

/// Largest file FAT can hold.
const MAX_FILE: u64 = u32::MAX as u64;

/// Copy buffer: files are streamed, never held whole.
const CHUNK: usize = 256 * 1024;

/// A FAT filesystem on a device, opened for reading or for reading and
/// writing.
pub struct FatFs {
    dev: Arc<dyn BlockDevice>,
    geo: Geometry,
    /// Always `Some` outside [`FatFs::flush`], which unmounts and remounts.
    inner: Option<Inner>,
    writable: bool,
    /// Something was changed since the last flush.
    changed: bool,
    /// The time changes are stamped with (given when opened).
    clock: &'static time::Clock,
}

/// What `inspect` reports about a FAT volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FatInfo {
    /// `fat12`, `fat16` or `fat32`.
    pub fat_type: String,
    /// The root directory's label entry, else the boot sector's.
    pub label: Option<String>,
    pub volume_id: Option<u32>,
    pub cluster_size: u64,
    pub clusters: u64,
    pub free_clusters: u64,
    /// Bytes of the volume (boot sector's sector count).
    pub size: u64,
}

/// Reads a FAT volume's type, label, size and free space, counting free
/// clusters from the FAT itself (the FSInfo hint may lie).
pub fn info(dev: &dyn BlockDevice) -> Result<FatInfo> {
    let geo = Geometry::read(dev)?;
    let mut reader = DirReader::new(dev, &geo);
    let root_label = reader.volume_label()?;
    Ok(FatInfo {
        fat_type: geo.fat_type.name().into(),
        label: root_label.or_else(|| geo.label.clone()),
        volume_id: geo.volume_id,
        cluster_size: geo.cluster_size,
        clusters: geo.clusters,
        free_clusters: table::count_free(dev, &geo)?,
        size: geo.total_sectors * geo.bytes_per_sector,
    })
}

/// The byte ranges of a FAT volume that hold anything: the reserved
/// sectors, the FATs, the FAT12/16 root directory and every allocated
/// cluster, merged and sorted. Everything else may be skipped when copying.
pub fn used_ranges(dev: &dyn BlockDevice) -> Result<Vec<Range<u64>>> {
    let geo = Geometry::read(dev)?;
    let mut ranges: Vec<Range<u64>> = Vec::new();
    ranges.push(0..geo.data_offset());
    table::scan(dev, &geo, |cluster, link| {
        if matches!(link, Link::Free | Link::Bad) {
            return;
        }
        let start = geo.cluster_offset(cluster);
        let end = start + geo.cluster_size;
        match ranges.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => ranges.push(start..end),
        }
    })?;
    Ok(ranges)
}

fn flags(attrs: u8) -> Vec<String> {
    [
        (dir::ATTR_READ_ONLY, "readonly"),
        (dir::ATTR_HIDDEN, "hidden"),
        (dir::ATTR_SYSTEM, "system"),
        (dir::ATTR_ARCHIVE, "archive"),
    ]
    .iter()
    .filter(|(bit, _)| attrs & bit != 0)
    .map(|(_, name)| name.to_string())
    .collect()
}

/// Refuses names FAT cannot store or Windows would mangle.
fn check_name(path: &str, name: &str) -> Result<()> {
    let bad_char = name
        .chars()
        .any(|c| c < ' ' || "\"*/:<>?\\|".contains(c) || u32::from(c) > 0xFFFF || c == '\u{7F}');
    if bad_char || name.ends_with('.') || name.ends_with(' ') || name.encode_utf16().count() > 255 {
        return Err(Error::Invalid(format!(
            "{path}: not a valid FAT name (no control characters, none of \"*/:<>?\\|, no trailing dot or space, at most 255 characters)"
        )));
    }
    Ok(())
}

fn join(parts: &[&str]) -> String {
    format!("/{}", parts.join("/"))
}

impl FatFs {
    /// Opens the FAT volume that fills `dev`; changes are stamped with
    /// `now` (the caller's one time source: nothing below the command line
    /// reads a clock).
    pub fn open(dev: Arc<dyn BlockDevice>, writable: bool, now: Timestamp) -> Result<FatFs> {
        Self::open_with(
            dev,
            crate::fs::OpenOptions {
                writable,
                now,
                scrub: false,
            },
        )
    }

    /// Opens with explicit options: whether changes are allowed and the
    /// time every change is stamped with (the volume never reads a clock).
    pub fn open_with(dev: Arc<dyn BlockDevice>, opts: crate::fs::OpenOptions) -> Result<FatFs> {
        let writable = opts.writable;
        if writable && dev.is_read_only() {
            return Err(Error::ReadOnly(dev.describe()));
        }
        let geo = Geometry::read(&*dev)?;
        if geo.fat_type == FatType::Fat32 {
            DirReader::new(&*dev, &geo).chain(geo.root_cluster, "root directory")?;
        }
        let clock = time::clock_for(opts.now);
        let inner = Self::mount(&dev, clock)?;
        Ok(FatFs {
            dev,
            geo,
            inner: Some(inner),
            writable,
            changed: false,
            clock,
        })
    }

    fn mount(dev: &Arc<dyn BlockDevice>, clock: &'static time::Clock) -> Result<Inner> {
        let options = fatfs::FsOptions::new()
            .time_provider(clock)
            .update_accessed_date(false);
        fatfs::FileSystem::new(DeviceCursor::new(dev.clone()), options).map_err(|e| {
            Error::corrupt(
                format!("FAT filesystem on {}", dev.describe()),
                e.to_string(),
            )
        })
    }

    /// The checked geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    fn inner(&self) -> &Inner {
        // Invariant: only `flush` takes it out, and puts it back before returning.
        self.inner.as_ref().expect("FAT volume is mounted")
    }

    fn reader(&self) -> DirReader<'_> {
        DirReader::new(&*self.dev, &self.geo)
    }

    fn check_writable(&self, path: &str) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::ReadOnly(format!(
                "{} (FAT volume opened read-only, changing {path})",
                self.dev.describe()
            )))
        }
    }

    /// Turns an error from `fatfs` into ours, keeping device errors intact.
    fn fat_err(&self, op: &str, path: &str, e: io::Error) -> Error {
        if e.to_string().contains("No space left") {
            return Error::NoSpace(format!("{op} {path} on {}", self.dev.describe()));
        }
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(Ok(inner)) = e.into_inner().map(|i| i.downcast::<Error>()) {
                return *inner;
            }
            return Error::Invalid(format!("{op} {path}: device error"));
        }
        Error::io_context(format!("{op} {path} on {}", self.dev.describe()), e)
    }

    /// The entry `parts` names, checked; `None` for the root.
    fn lookup(&self, parts: &[&str]) -> Result<Option<RawEntry>> {
        if parts.is_empty() {
            return Ok(None);
        }
        match self.reader().walk(parts)? {
            (_, Some(e)) => Ok(Some(e)),
            (_, None) => Err(Error::NotFound(join(parts))),
        }
    }

    /// The directory `parts` names.
    fn dir_loc(&self, reader: &mut DirReader, parts: &[&str]) -> Result<DirLoc> {
        match self.lookup(parts)? {
            None => Ok(reader.root()),
            Some(e) => reader.open_dir(&e, &join(parts)),
        }
    }

    fn free_clusters(&self) -> Result<u64> {
        table::count_free(&*self.dev, &self.geo)
    }

    fn clusters_for(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.geo.cluster_size)
    }

    /// Rewrites the times of the entry at `offset`.
    fn write_times(
        &self,
        offset: u64,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
        let mut e = [0u8; 32];
        self.dev.read_at(offset, &mut e)?;
        if let Some(t) = atime {
            let d = time::DosTime::from_timestamp(t);
            e[18..20].copy_from_slice(&d.date.to_le_bytes());
        }
        if let Some(t) = mtime {
            let d = time::DosTime::from_timestamp(t);
            e[22..24].copy_from_slice(&d.time.to_le_bytes());
            e[24..26].copy_from_slice(&d.date.to_le_bytes());
        }
        self.dev.write_at(offset, &e)
    }

    /// Rewrites the first cluster of the directory `fatfs` just created.
    /// `fatfs` 0.3.6 puts long-name entries before `.` and `..` and points
    /// `..` at the FAT32 root's cluster; fsck.vfat rejects both. The
    /// specification wants `.` and `..` as the first two plain entries and
    /// `..` = 0 when the parent is the root.
    fn write_dot_entries(&self, dir: &RawEntry, parent: u32) -> Result<()> {
        if !self.geo.is_data_cluster(dir.first_cluster) {
            return Err(Error::corrupt(
                format!("FAT filesystem on {}", self.dev.describe()),
                format!(
                    "new directory {} got cluster {}",
                    dir.name, dir.first_cluster
                ),
            ));
        }
        let mut block = vec![0u8; self.geo.cluster_size as usize];
        let entry = |slot: &mut [u8], name: &[u8; 11], cluster: u32| {
            slot[..11].copy_from_slice(name);
            slot[11] = dir::ATTR_DIR;
            slot[13] = dir.created.hundredths;
            slot[14..16].copy_from_slice(&dir.created.time.to_le_bytes());
            slot[16..18].copy_from_slice(&dir.created.date.to_le_bytes());
            slot[18..20].copy_from_slice(&dir.accessed_date.to_le_bytes());
            slot[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
            slot[22..24].copy_from_slice(&dir.modified.time.to_le_bytes());
            slot[24..26].copy_from_slice(&dir.modified.date.to_le_bytes());
            slot[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
        };
        entry(&mut block[0..32], b".          ", dir.first_cluster);
        entry(&mut block[32..64], b"..         ", parent);
        self.dev
            .write_at(self.geo.cluster_offset(dir.first_cluster), &block)
    }

    /// Streams exactly `size` bytes from `data` into `file`.
    fn fill(
        file: &mut fatfs::File<'_, DeviceCursor<Arc<dyn BlockDevice>>>,
        data: &mut dyn Read,
        size: u64,
        path: &str,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; CHUNK];
        let mut left = size;
        while left > 0 {
            let want = left.min(CHUNK as u64) as usize;
            let n = match data.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "source for {path} ended after {} of {size} bytes",
                            size - left
                        ),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            file.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Collects a tree for removal, children before parents, checking every
    /// chain and refusing directory loops.
    fn collect_tree(
        &self,
        reader: &mut DirReader,
        entry: &RawEntry,
        path: String,
        seen: &mut HashSet<u32>,
        out: &mut Vec<String>,
    ) -> Result<()> {
        if entry.is_dir() {
            if !seen.insert(entry.first_cluster) {
                return Err(Error::corrupt(
                    format!("FAT filesystem on {}", self.dev.describe()),
                    format!("directory {path} loops back to one of its ancestors"),
                ));
            }
            let loc = reader.open_dir(entry, &path)?;
            for child in reader.entries(loc, &path)? {
                let child_path = format!("{path}/{}", child.name);
                self.collect_tree(reader, &child, child_path, seen, out)?;
            }
        } else {
            reader.check_file(entry, &path)?;
        }
        out.push(path);
        Ok(())
    }

    fn remove_one(&self, path: &str) -> Result<()> {
        let rel = path.trim_start_matches('/');
        self.inner()
            .root_dir()
            .remove(rel)
            .map_err(|e| self.fat_err("removing", path, e))
    }

    /// A name for a scratch file in the directory at `loc`.
    fn temp_name(&self, reader: &mut DirReader, loc: DirLoc, path: &str) -> Result<String> {
        let entries = reader.entries(loc, path)?;
        (0..1000)
            .map(|i| format!("nodeimg{i}.tmp"))
            .find(|n| !entries.iter().any(|e| e.matches(n)))
            .ok_or_else(|| Error::Invalid(format!("{path}: no free scratch name")))
    }
}

impl Filesystem for FatFs {
    fn kind(&self) -> String {
        self.geo.fat_type.name().into()
    }

    fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        let parts = path_components(path)?;
        let mut reader = self.reader();
        let loc = self.dir_loc(&mut reader, &parts)?;
        let mut out: Vec<DirEntry> = reader
            .entries(loc, path)?
            .into_iter()
            .map(|e| DirEntry {
                kind: e.kind(),
                size: if e.is_dir() { 0 } else { u64::from(e.size) },
                name: e.name,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn stat(&self, path: &str) -> Result<Stat> {
        let parts = path_components(path)?;
        let mut reader = self.reader();
        let entry = self.lookup(&parts)?;
        let (first, size) = match &entry {
            None if self.geo.fat_type == FatType::Fat32 => (self.geo.root_cluster, 0),
            None => (0, 0),
            Some(e) if e.is_dir() => (e.first_cluster, 0),
            Some(e) => {
                reader.check_file(e, path)?;
                (e.first_cluster, u64::from(e.size))
            }
        };
        let mut extents = Vec::new();
        if first != 0 {
            let mut logical = 0;
            for run in reader.chain(first, path)? {
                let len = u64::from(run.end - run.start);
                extents.push(Extent {
                    logical,
                    physical: u64::from(run.start),
                    len,
                    uninit: false,
                });
                logical += len;
            }
        }
        let stamp = |d: time::DosTime| d.to_timestamp();
        Ok(Stat {
            kind: entry.as_ref().map_or(FileKind::Dir, RawEntry::kind),
            size,
            mode: None,
            uid: None,
            gid: None,
            nlink: None,
            ino: (first != 0).then_some(u64::from(first)),
            atime: entry.as_ref().and_then(|e| {
                stamp(time::DosTime {
                    date: e.accessed_date,
                    time: 0,
                    hundredths: 0,
                })
            }),
            mtime: entry.as_ref().and_then(|e| stamp(e.modified)),
            ctime: None,
            crtime: entry.as_ref().and_then(|e| stamp(e.created)),
            link_target: None,
            xattrs: Vec::new(),
            extents,
            flags: entry.as_ref().map_or_else(Vec::new, |e| flags(e.attrs)),
        })
    }

    fn read_file(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let parts = path_components(path)?;
        let entry = match self.lookup(&parts)? {
            None => return Err(Error::Invalid(format!("{path}: is a directory"))),
            Some(e) if e.is_dir() => return Err(Error::Invalid(format!("{path}: is a directory"))),
            Some(e) => e,
        };
        self.reader().check_file(&entry, path)?;
        let rel = parts.join("/");
        let mut file = self
            .inner()
            .root_dir()
            .open_file(&rel)
            .map_err(|e| self.fat_err("opening", path, e))?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fat_err("reading", path, e)),
            };
            out.write_all(&buf[..n])
                .map_err(|e| Error::io_context(format!("writing out {path}"), e))?;
            total += n as u64;
        }
        if total != u64::from(entry.size) {
            return Err(Error::corrupt(
                format!("FAT filesystem on {}", self.dev.describe()),
                format!("{path}: read {total} of {} bytes", entry.size),
            ));
        }
        Ok(total)
    }

    fn write_file(
        &mut self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        attrs: &NewAttrs,
    ) -> Result<()> {
        self.check_writable(path)?;
        let parts = path_components(path)?;
        let Some((&name, parent)) = parts.split_last() else {
            return Err(Error::Invalid(format!("{path}: is a directory")));
        };
        check_name(path, name)?;
        if size > MAX_FILE {
            return Err(Error::Invalid(format!(
                "{path}: {size} bytes is more than a FAT file can hold ({MAX_FILE})"
            )));
        }
        let mut reader = self.reader();
        let parent_loc = self.dir_loc(&mut reader, parent)?;
        let existing = reader
            .entries(parent_loc, &join(parent))?
            .into_iter()
            .find(|e| e.matches(name));
        let old_clusters = match &existing {
            Some(e) if e.is_dir() => {
                return Err(Error::Invalid(format!("{path}: is a directory")));
            }
            Some(e) => {
                reader.check_file(e, path)?;
                self.clusters_for(u64::from(e.size))
            }
            None => 0,
        };
        let need = self.clusters_for(size);
        let free = self.free_clusters()?;
        // One spare cluster: the directory may grow to hold new entries.
        let via_scratch = free > need;
        if !via_scratch && free + old_clusters < need + 1 {
            return Err(Error::NoSpace(format!(
                "{path} needs {need} clusters, {} has {free} free",
                self.dev.describe()
            )));
        }
        let scratch = if via_scratch {
            Some(self.temp_name(&mut reader, parent_loc, &join(parent))?)
        } else {
            None
        };
        self.changed = true;
        let fs = self.inner();
        let root = fs.root_dir();
        let parent_rel = parent.join("/");
        let dir = if parent.is_empty() {
            root
        } else {
            root.open_dir(&parent_rel)
                .map_err(|e| self.fat_err("opening", &join(parent), e))?
        };
        // New content goes to a scratch name and is renamed over the old
        // one, so a failed write never leaves a half-written file under the
        // final name. Only when there is no room for both copies is the
        // file rewritten in place.
        let target = scratch.as_deref().unwrap_or(name);
        let written = (|| -> io::Result<()> {
            let mut file = dir.create_file(target)?;
            file.truncate()?;
            Self::fill(&mut file, data, size, path)?;
            file.flush()
        })();
        if let Err(e) = written {
            if let Some(tmp) = &scratch {
                let _ = dir.remove(tmp);
            }
            return Err(self.fat_err("writing", path, e));
        }
        if let Some(tmp) = &scratch {
            if existing.is_some() {
                dir.remove(name)
                    .map_err(|e| self.fat_err("replacing", path, e))?;
            }
            dir.rename(tmp, &dir, name)
                .map_err(|e| self.fat_err("renaming into", path, e))?;
        }
        if let Some(t) = attrs.mtime {
            if let Some(e) = self.lookup(&parts)? {
                self.write_times(e.offset, Some(t), Some(t))?;
            }
        }
        Ok(())
    }

    fn mkdir(&mut self, path: &str, parents: bool, attrs: &NewAttrs) -> Result<()> {
        self.check_writable(path)?;
        let parts = path_components(path)?;
        if parts.is_empty() {
            return if parents {
                Ok(())
            } else {
                Err(Error::AlreadyExists("/".into()))
            };
        }
        for depth in 1..=parts.len() {
            let prefix = &parts[..depth];
            let here = join(prefix);
            let last = depth == parts.len();
            let (_, found) = self.reader().walk(prefix)?;
            match found {
                Some(e) if e.is_dir() => {
                    if last && !parents {
                        return Err(Error::AlreadyExists(here));
                    }
                }
                Some(_) => {
                    return Err(Error::Invalid(format!(
                        "{here}: exists and is not a directory"
                    )))
                }
                None if !last && !parents => return Err(Error::NotFound(here)),
                None => {
                    check_name(&here, prefix[depth - 1])?;
                    if self.free_clusters()? < 2 {
                        return Err(Error::NoSpace(format!(
                            "creating {here} on {}",
                            self.dev.describe()
                        )));
                    }
                    self.changed = true;
                    self.inner()
                        .root_dir()
                        .create_dir(&prefix.join("/"))
                        .map_err(|e| self.fat_err("creating", &here, e))?;
                    let parent = match self.lookup(&prefix[..depth - 1])? {
                        Some(p) => p.first_cluster,
                        None => 0,
                    };
                    let Some(e) = self.lookup(prefix)? else {
                        return Err(Error::NotFound(here));
                    };
                    self.write_dot_entries(&e, parent)?;
                    if let Some(t) = attrs.mtime {
                        self.write_times(e.offset, Some(t), Some(t))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.check_writable(from)?;
        let fp = path_components(from)?;
        let tp = path_components(to)?;
        let (Some(_), Some(last)) = (fp.last(), tp.last()) else {
            return Err(Error::Invalid(format!(
                "{from} -> {to}: the root directory cannot be renamed or replaced"
            )));
        };
        check_name(to, last)?;
        let lower = |p: &[&str]| p.iter().map(|c| c.to_lowercase()).collect::<Vec<_>>();
        let (fl, tl) = (lower(&fp), lower(&tp));
        if tl.len() > fl.len() && tl.starts_with(&fl) {
            return Err(Error::Invalid(format!(
                "{to}: a directory cannot move below itself"
            )));
        }
        let src = self
            .lookup(&fp)?
            .ok_or_else(|| Error::NotFound(from.to_string()))?;
        // The destination's directory must exist before anything changes.
        let parent = &tp[..tp.len() - 1];
        if !parent.is_empty() {
            match self.lookup(parent)? {
                Some(e) if e.is_dir() => {}
                Some(_) => {
                    return Err(Error::Invalid(format!(
                        "{to}: a component is not a directory"
                    )))
                }
                None => return Err(Error::NotFound(to.to_string())),
            }
        }
        let existing = match self.lookup(&tp) {
            Err(Error::NotFound(_)) => None,
            other => other?,
        };
        if let Some(dst) = existing {
            if fl == tl {
                return Ok(());
            }
            match (src.is_dir(), dst.is_dir()) {
                (true, false) => {
                    return Err(Error::AlreadyExists(format!("{to} (not a directory)")))
                }
                (false, true) => return Err(Error::AlreadyExists(format!("{to} (a directory)"))),
                _ => {}
            }
            // rename(2): the old entry at `to` goes (an empty directory only).
            self.remove(to, false)?;
        }
        let result = {
            let root = self.inner().root_dir();
            let dst_dir = if parent.is_empty() {
                Ok(root.clone())
            } else {
                root.open_dir(&parent.join("/"))
            };
            dst_dir.and_then(|d| root.rename(&fp.join("/"), &d, last))
        };
        self.changed = true;
        result.map_err(|e| self.fat_err("renaming", from, e))
    }

    fn remove(&mut self, path: &str, recursive: bool) -> Result<()> {
        self.check_writable(path)?;
        let parts = path_components(path)?;
        let Some(entry) = self.lookup(&parts)? else {
            return Err(Error::Invalid("/: cannot remove the root directory".into()));
        };
        let mut reader = self.reader();
        let mut order = Vec::new();
        if entry.is_dir() {
            let loc = reader.open_dir(&entry, path)?;
            if !recursive && !reader.entries(loc, path)?.is_empty() {
                return Err(Error::Invalid(format!("{path}: directory not empty")));
            }
            let mut seen = HashSet::new();
            self.collect_tree(&mut reader, &entry, join(&parts), &mut seen, &mut order)?;
        } else {
            reader.check_file(&entry, path)?;
            order.push(join(&parts));
        }
        self.changed = true;
        for victim in &order {
            self.remove_one(victim)?;
        }
        Ok(())
    }

    fn set_times(
        &mut self,
        path: &str,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
        self.check_writable(path)?;
        let parts = path_components(path)?;
        let Some(entry) = self.lookup(&parts)? else {
            return Err(Error::unsupported(
                "timestamps",
                "the root directory of a FAT filesystem has none",
            ));
        };
        self.changed = true;
        self.write_times(entry.offset, atime, mtime)
    }

    fn flush(&mut self) -> Result<()> {
        if !self.writable || !self.changed {
            return Ok(());
        }
        // Unmounting is what makes `fatfs` write FSInfo and clear the dirty
        // flag; remount right after so the volume stays usable.
        if let Some(inner) = self.inner.take() {
            let unmounted = inner
                .unmount()
                .map_err(|e| self.fat_err("unmounting", "/", e));
            self.inner = Some(Self::mount(&self.dev, self.clock)?);
            unmounted?;
        }
        if self.geo.fat_type == FatType::Fat32 {
            write_fsinfo(&*self.dev, &self.geo)?;
        }
        self.dev.flush()?;
        self.changed = false;
        Ok(())
    }
}

/// Puts the true free-cluster count into FAT32's FSInfo sector (`fatfs`
/// leaves it unknown after formatting and only adjusts whatever count was
/// there, which may be wrong).
pub(crate) fn write_fsinfo(dev: &dyn BlockDevice, geo: &Geometry) -> Result<()> {
    let mut boot = [0u8; 512];
    dev.read_at(0, &mut boot)?;
    let sector = u64::from(u16::from_le_bytes([boot[48], boot[49]]));
    let at = sector * geo.bytes_per_sector;
    let mut info = [0u8; 512];
    dev.read_at(at, &mut info)?;
    if info[0..4] != *b"RRaA" || info[484..488] != *b"rrAa" {
        return Ok(());
    }
    let free = table::count_free(dev, geo)? as u32;
    info[488..492].copy_from_slice(&free.to_le_bytes());
    info[492..496].copy_from_slice(&u32::MAX.to_le_bytes());
    dev.write_at(at, &info)
}

impl Drop for FatFs {
    fn drop(&mut self) {
        // Best effort for callers that forgot to flush; errors are theirs
        // to see through `flush`.
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests;
