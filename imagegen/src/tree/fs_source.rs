//! An existing filesystem, read through [`Filesystem`], as a tree source:
//! what repacking an image into a new filesystem of another size walks.
//!
//! Kind, mode, owner, times, extended attributes, symlink targets and the
//! flags that describe the file (immutable, append-only, …) come from
//! [`Filesystem::stat`]; hard links from the link count and inode number;
//! sparseness from the extents (unmapped or unwritten blocks are holes),
//! given the source's block size. Directories are walked depth-first in
//! name order.
//!
//! [`Filesystem::read_file`] pushes data into a writer while writers such
//! as `mkext4` pull from a reader, so each file's data ranges are first
//! collected: in memory up to [`SPOOL_LIMIT`], in an unlinked temporary
//! file beyond, so memory stays bounded whatever the file size.

use super::{DataMap, Entry, EntryKind, InodeFlags, TreeSource, Visitor, SPARSE_ALIGN};
use crate::fs::{FileKind, Filesystem, Stat};
use crate::{Error, Result};
use std::collections::HashMap;
use std::io::{self, Seek, Write};

/// Largest file data kept in memory while repacking; bigger files are
/// spooled through a temporary file.
pub const SPOOL_LIMIT: usize = 8 << 20;

/// A filesystem read as a tree; see the module documentation.
pub struct FsSource<F: Filesystem + ?Sized> {
    fs: Box<F>,
    name: String,
    block_size: Option<u64>,
    devices: Option<DeviceNumbers>,
}

/// Looks up the device numbers `(major, minor)` of the device node at a
/// path of the filesystem; [`Stat`] does not carry them.
pub type DeviceNumbers = Box<dyn Fn(&str) -> Result<(u32, u32)>>;

impl<F: Filesystem + ?Sized> FsSource<F> {
    /// Walks `fs`; `name` is used in messages. `block_size` is the unit
    /// of [`Stat::extents`]; without it every file is treated as dense.
    pub fn new(fs: Box<F>, name: impl Into<String>, block_size: Option<u64>) -> Self {
        FsSource {
            fs,
            name: name.into(),
            block_size,
            devices: None,
        }
    }

    /// Where device numbers come from; without it, device nodes are
    /// refused.
    pub fn with_device_numbers(mut self, lookup: DeviceNumbers) -> Self {
        self.devices = Some(lookup);
        self
    }

    fn entry(&self, fs_path: &str, tree_path: String, stat: &Stat) -> Result<Entry> {
        let kind = match stat.kind {
            FileKind::File => EntryKind::File {
                size: stat.size,
                data: self.data_map(stat),
            },
            FileKind::Dir => EntryKind::Dir,
            FileKind::Symlink => EntryKind::Symlink {
                target: stat.link_target.clone().ok_or_else(|| {
                    Error::corrupt(
                        format!("{} {fs_path}", self.name),
                        "symlink without a target",
                    )
                })?,
            },
            FileKind::Fifo => EntryKind::Fifo,
            FileKind::Socket => EntryKind::Socket,
            FileKind::CharDevice | FileKind::BlockDevice => {
                let Some(lookup) = &self.devices else {
                    return Err(Error::unsupported(
                        "device node",
                        format!(
                            "{}: {fs_path}: the filesystem reader reports no device numbers",
                            self.name
                        ),
                    ));
                };
                let (major, minor) = lookup(fs_path)?;
                if stat.kind == FileKind::CharDevice {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                }
            }
        };
        let mtime = stat.mtime.unwrap_or_default();
        Ok(Entry {
            path: tree_path,
            kind,
            mode: stat.mode.unwrap_or(match stat.kind {
                FileKind::Dir => 0o755,
                _ => 0o644,
            }) & 0o7777,
            uid: stat.uid.unwrap_or(0),
            gid: stat.gid.unwrap_or(0),
            atime: stat.atime.unwrap_or(mtime),
            mtime,
            ctime: stat.ctime.unwrap_or(mtime),
            crtime: stat.crtime,
            xattrs: stat.xattrs.clone(),
            flags: InodeFlags::from_words(&stat.flags),
            nlink: stat.nlink,
        })
    }

    /// Byte ranges holding data, from the extents; dense when unknown.
    fn data_map(&self, stat: &Stat) -> DataMap {
        let (Some(bs), size) = (self.block_size, stat.size) else {
            return DataMap::Dense;
        };
        // No extents at all: inline data or a filesystem that does not
        // report them; copying zeros is always correct.
        if stat.extents.is_empty() || size == 0 {
            return DataMap::Dense;
        }
        let mut runs: Vec<(u64, u64)> = stat
            .extents
            .iter()
            .filter(|e| !e.uninit)
            .map(|e| {
                let start = (e.logical * bs) / SPARSE_ALIGN * SPARSE_ALIGN;
                let end = ((e.logical + e.len) * bs).next_multiple_of(SPARSE_ALIGN);
                (start.min(size), end.min(size))
            })
            .filter(|(s, e)| e > s)
            .collect();
        runs.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (start, end) in runs {
            match ranges.last_mut() {
                Some((s, l)) if *s + *l >= start => *l = (*s + *l).max(end) - *s,
                _ => ranges.push((start, end - start)),
            }
        }
        if ranges.len() == 1 && ranges[0] == (0, size) {
            DataMap::Dense
        } else {
            DataMap::Sparse(ranges)
        }
    }
}

/// Receives a whole file from `read_file` and keeps only the bytes of
/// the data ranges: in memory, or in a temporary file past the limit.
struct RangeCollector<'a> {
    ranges: &'a [(u64, u64)],
    pos: u64,
    memory: Vec<u8>,
    spool: Option<std::fs::File>,
}

impl RangeCollector<'_> {
    fn keep(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.spool.is_none() && self.memory.len() + bytes.len() > SPOOL_LIMIT {
            let mut file = tempfile::tempfile()?;
            file.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.spool = Some(file);
        }
        match &mut self.spool {
            Some(file) => file.write_all(bytes),
            None => {
                self.memory.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

impl Write for RangeCollector<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (start, end) = (self.pos, self.pos + buf.len() as u64);
        for &(offset, len) in self.ranges {
            let (lo, hi) = (offset.max(start), (offset + len).min(end));
            if lo < hi {
                self.keep(&buf[(lo - start) as usize..(hi - start) as usize])?;
            }
        }
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

impl<F: Filesystem + ?Sized> TreeSource for FsSource<F> {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn walk(&mut self, with_data: bool, visit: &mut Visitor<'_>) -> Result<()> {
        let root = self.fs.stat("/")?;
        visit(&self.entry("/", String::new(), &root)?, None)?;
        let mut first_names: HashMap<u64, String> = HashMap::new();
        // Per open directory: its tree path and the names left (reversed).
        let mut stack: Vec<(String, Vec<String>)> = vec![(String::new(), self.names("")?)];
        while let Some((dir, names)) = stack.last_mut() {
            let Some(name) = names.pop() else {
                stack.pop();
                continue;
            };
            let tree_path = join(dir, &name);
            let fs_path = format!("/{tree_path}");
            let stat = self.fs.stat(&fs_path)?;
            if stat.kind == FileKind::File && stat.nlink.unwrap_or(1) > 1 {
                if let Some(ino) = stat.ino {
                    if let Some(first) = first_names.get(&ino) {
                        let mut entry = self.entry(&fs_path, tree_path, &stat)?;
                        entry.kind = EntryKind::HardLink {
                            target: first.clone(),
                        };
                        visit(&entry, None)?;
                        continue;
                    }
                    first_names.insert(ino, tree_path.clone());
                }
            }
            let entry = self.entry(&fs_path, tree_path, &stat)?;
            if entry.kind == EntryKind::Dir {
                visit(&entry, None)?;
                let names = self.names(&entry.path)?;
                stack.push((entry.path, names));
            } else if with_data && entry.data_bytes() > 0 {
                self.pump(&fs_path, &entry, visit)?;
            } else {
                visit(&entry, None)?;
            }
        }
        Ok(())
    }
}

impl<F: Filesystem + ?Sized> FsSource<F> {
    /// Names of a directory's entries, reversed so `pop` yields them in
    /// name order.
    fn names(&self, tree_path: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .fs
            .list(&format!("/{tree_path}"))?
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        Ok(names)
    }

    /// Collects one file's data ranges and hands them to `visit`.
    fn pump(&mut self, fs_path: &str, entry: &Entry, visit: &mut Visitor<'_>) -> Result<()> {
        let EntryKind::File { size, data } = &entry.kind else {
            return visit(entry, None);
        };
        let whole = [(0, *size)];
        let ranges: &[(u64, u64)] = match data {
            DataMap::Dense => &whole,
            DataMap::Sparse(ranges) => ranges,
        };
        let mut collector = RangeCollector {
            ranges,
            pos: 0,
            memory: Vec::new(),
            spool: None,
        };
        let read = self.fs.read_file(fs_path, &mut collector)?;
        if read != *size {
            return Err(Error::corrupt(
                format!("{} {fs_path}", self.name),
                format!("stat says {size} bytes but {read} were read"),
            ));
        }
        match collector.spool {
            Some(mut file) => {
                file.rewind()
                    .map_err(|e| Error::io_context("rewinding the spool file", e))?;
                visit(entry, Some(&mut io::BufReader::new(file)))
            }
            None => visit(entry, Some(&mut &collector.memory[..])),
        }
    }
}
