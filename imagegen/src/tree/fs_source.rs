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
//! as `mkext4` pull from a reader, so each file's data is pumped by a
//! short-lived thread through a small bounded channel: memory stays at a
//! few chunks whatever the file size.

use super::{DataMap, Entry, EntryKind, InodeFlags, TreeSource, Visitor, SPARSE_ALIGN};
use crate::fs::{FileKind, Filesystem, Stat};
use crate::{Error, Result};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::mpsc;

/// A filesystem read as a tree; see the module documentation.
pub struct FsSource<F: Filesystem + Send + ?Sized> {
    fs: Box<F>,
    name: String,
    block_size: Option<u64>,
}

impl<F: Filesystem + Send + ?Sized> FsSource<F> {
    /// Walks `fs`; `name` is used in messages. `block_size` is the unit
    /// of [`Stat::extents`]; without it every file is treated as dense.
    pub fn new(fs: Box<F>, name: impl Into<String>, block_size: Option<u64>) -> Self {
        FsSource {
            fs,
            name: name.into(),
            block_size,
        }
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
            // `Stat` carries no device numbers, so a device node cannot be
            // copied faithfully: refuse rather than invent 0:0.
            FileKind::CharDevice | FileKind::BlockDevice => {
                return Err(Error::unsupported(
                    "device node",
                    format!(
                        "{}: {fs_path}: the filesystem reader reports no device numbers",
                        self.name
                    ),
                ))
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

/// Receives a whole file from `read_file` and forwards only the bytes of
/// the data ranges, in chunks, to the pulling side.
struct RangeForwarder<'a> {
    ranges: &'a [(u64, u64)],
    pos: u64,
    tx: mpsc::SyncSender<Vec<u8>>,
}

impl Write for RangeForwarder<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (start, end) = (self.pos, self.pos + buf.len() as u64);
        for &(offset, len) in self.ranges {
            let (lo, hi) = (offset.max(start), (offset + len).min(end));
            if lo < hi {
                let chunk = buf[(lo - start) as usize..(hi - start) as usize].to_vec();
                self.tx
                    .send(chunk)
                    .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "reader stopped"))?;
            }
        }
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The pulling side of the channel.
struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0), // sender finished
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

impl<F: Filesystem + Send + ?Sized> TreeSource for FsSource<F> {
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

impl<F: Filesystem + Send + ?Sized> FsSource<F> {
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

    /// Streams one file's data ranges to `visit` through a pump thread.
    fn pump(&mut self, fs_path: &str, entry: &Entry, visit: &mut Visitor<'_>) -> Result<()> {
        let EntryKind::File { size, data } = &entry.kind else {
            return visit(entry, None);
        };
        let whole = [(0, *size)];
        let ranges: &[(u64, u64)] = match data {
            DataMap::Dense => &whole,
            DataMap::Sparse(ranges) => ranges,
        };
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
        let fs = &mut self.fs;
        std::thread::scope(|scope| {
            let pump = scope.spawn(move || {
                let mut out = RangeForwarder { ranges, pos: 0, tx };
                fs.read_file(fs_path, &mut out)
            });
            let mut reader = ChunkReader {
                rx,
                chunk: Vec::new(),
                at: 0,
            };
            let visited = visit(entry, Some(&mut reader));
            // Unblock the pump if the consumer stopped early.
            drop(reader);
            let pumped = pump.join().map_err(|_| {
                Error::Invalid(format!("{fs_path}: reading the source file panicked"))
            })?;
            visited?;
            let read = pumped?;
            if read != *size {
                return Err(Error::corrupt(
                    fs_path.to_string(),
                    format!("stat says {size} bytes but {read} were read"),
                ));
            }
            Ok(())
        })
    }
}
