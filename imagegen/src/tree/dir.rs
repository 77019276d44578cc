//! A directory on the host as a tree source.
//!
//! Entries come depth-first, parents before children, names sorted by
//! their bytes, so two walks of an unchanged directory agree. Owners are
//! the real ones when the process runs as root and 0:0 otherwise (what
//! `mke2fs -d` run by a user would give); an [`OwnerMap`](super::OwnerMap)
//! applied by the writer refines either. Access times are not taken: the
//! walk itself changes them, so copying them would make two builds differ;
//! every entry's atime is its mtime.

use super::SPARSE_ALIGN;
use super::{normalize_path, DataMap, Entry, EntryKind, InodeFlags, TreeSource, Visitor, NAME_MAX};
use crate::fs::Timestamp;
use crate::{Error, Result};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A host directory read as a tree; see the module documentation.
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
    real_owners: bool,
}

impl DirSource {
    /// A source for the directory `root`; real owners when running as root.
    pub fn new(root: impl Into<PathBuf>) -> Result<DirSource> {
        let root = root.into();
        let md = std::fs::metadata(&root).map_err(|e| Error::io(&root, e))?;
        if !md.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: not a directory",
                root.display()
            )));
        }
        Ok(DirSource {
            root,
            real_owners: nix::unistd::geteuid().is_root(),
        })
    }

    /// Overrides the owner policy: `true` takes every file's uid/gid,
    /// `false` makes everything 0:0.
    pub fn real_owners(mut self, real: bool) -> DirSource {
        self.real_owners = real;
        self
    }

    fn entry(&self, fs_path: &Path, tree_path: String, md: &Metadata, full: bool) -> Result<Entry> {
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() && !full {
            EntryKind::Symlink {
                target: String::new(),
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(fs_path).map_err(|e| Error::io(fs_path, e))?;
            let target = target.into_os_string().into_string().map_err(|t| {
                Error::unsupported(
                    "symlink target",
                    format!("{}: target {t:?} is not UTF-8", fs_path.display()),
                )
            })?;
            EntryKind::Symlink { target }
        } else if ft.is_file() {
            EntryKind::File {
                size: md.len(),
                data: data_map(fs_path, md)?,
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = md.rdev();
            // libc's split follows the host's dev_t encoding (Linux and macOS differ).
            let major = libc::major(rdev as libc::dev_t) as u32;
            let minor = libc::minor(rdev as libc::dev_t) as u32;
            if ft.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else if ft.is_socket() {
            EntryKind::Socket
        } else {
            return Err(Error::unsupported(
                "file type",
                format!("{}: unknown file type", fs_path.display()),
            ));
        };
        let (uid, gid) = if self.real_owners {
            (md.uid(), md.gid())
        } else {
            (0, 0)
        };
        let mtime = Timestamp {
            secs: md.mtime(),
            nanos: md.mtime_nsec() as u32,
        };
        Ok(Entry {
            path: tree_path,
            kind,
            mode: md.mode() & 0o7777,
            uid,
            gid,
            atime: mtime,
            mtime,
            ctime: Timestamp {
                secs: md.ctime(),
                nanos: md.ctime_nsec() as u32,
            },
            crtime: None,
            xattrs: if full {
                read_xattrs(fs_path)?
            } else {
                Vec::new()
            },
            flags: InodeFlags::default(),
            nlink: Some(md.nlink() as u32),
        })
    }
}

/// Extended attributes of `path` (not following symlinks), sorted.
fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        // Filesystems without xattr support simply have none.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = Vec::new();
    for name in names {
        let name_str = name.to_str().ok_or_else(|| {
            Error::unsupported(
                "extended attribute",
                format!("{}: attribute name {name:?} is not UTF-8", path.display()),
            )
        })?;
        if let Some(value) = xattr::get(path, &name).map_err(|e| Error::io(path, e))? {
            out.push((name_str.to_string(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Which byte ranges of a regular file hold data, from `SEEK_DATA` /
/// `SEEK_HOLE`, widened to [`SPARSE_ALIGN`]. Files with as many allocated
/// blocks as bytes skip the probe.
fn data_map(path: &Path, md: &Metadata) -> Result<DataMap> {
    let size = md.len();
    if size == 0 || md.blocks() * 512 >= size {
        return Ok(DataMap::Dense);
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut pos: u64 = 0;
    use nix::unistd::{lseek, Whence};
    while pos < size {
        let start = match lseek(&file, pos as i64, Whence::SeekData) {
            Ok(off) => off as u64,
            Err(nix::errno::Errno::ENXIO) => break, // no data after pos
            Err(nix::errno::Errno::EINVAL) => return Ok(DataMap::Dense), // no support
            Err(e) => return Err(Error::io(path, io::Error::from(e))),
        };
        let end = match lseek(&file, start as i64, Whence::SeekHole) {
            Ok(off) => (off as u64).min(size),
            Err(e) => return Err(Error::io(path, io::Error::from(e))),
        };
        let start = start / SPARSE_ALIGN * SPARSE_ALIGN;
        let end = end.next_multiple_of(SPARSE_ALIGN).min(size);
        match ranges.last_mut() {
            Some((s, l)) if *s + *l >= start => *l = end.max(*s + *l) - *s,
            _ => ranges.push((start, end - start)),
        }
        pos = end.max(pos + 1);
    }
    if ranges.len() == 1 && ranges[0] == (0, size) {
        return Ok(DataMap::Dense);
    }
    Ok(DataMap::Sparse(ranges))
}

/// Reads the data ranges of a sparse file back to back.
struct RangeReader<'a> {
    file: &'a File,
    ranges: &'a [(u64, u64)],
    index: usize,
    done: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(offset, len)) = self.ranges.get(self.index) {
            if self.done == len {
                self.index += 1;
                self.done = 0;
                continue;
            }
            let want = buf.len().min((len - self.done) as usize);
            let n = self.file.read_at(&mut buf[..want], offset + self.done)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being read",
                ));
            }
            self.done += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

fn sorted_names(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        names.push(entry.map_err(|e| Error::io(dir, e))?.file_name());
    }
    names.sort();
    Ok(names)
}

impl TreeSource for DirSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn walk(&mut self, with_data: bool, visit: &mut Visitor<'_>) -> Result<()> {
        let what = self.describe();
        let md = std::fs::symlink_metadata(&self.root).map_err(|e| Error::io(&self.root, e))?;
        visit(
            &self.entry(&self.root, String::new(), &md, !with_data)?,
            None,
        )?;
        // (dev, ino) of multiply-linked files → tree path of the first name.
        let mut first_names: HashMap<(u64, u64), String> = HashMap::new();
        // One level per open directory: its host path, tree path and the
        // names still to visit (reversed, so `pop` yields sorted order).
        let mut stack = vec![(
            self.root.clone(),
            String::new(),
            rev(sorted_names(&self.root)?),
        )];
        while let Some((dir, dir_tree, names)) = stack.last_mut() {
            let Some(name) = names.pop() else {
                stack.pop();
                continue;
            };
            let fs_path = dir.join(&name);
            let name = name.into_string().map_err(|n| {
                Error::unsupported(
                    "file name",
                    format!("{}: name {n:?} is not UTF-8", dir.display()),
                )
            })?;
            if name.len() > NAME_MAX {
                return Err(Error::Invalid(format!(
                    "{}: name of {} bytes (the limit is {NAME_MAX})",
                    fs_path.display(),
                    name.len()
                )));
            }
            let tree_path = if dir_tree.is_empty() {
                normalize_path(&name, &what)?
            } else {
                format!("{dir_tree}/{name}")
            };
            let md = std::fs::symlink_metadata(&fs_path).map_err(|e| Error::io(&fs_path, e))?;
            if md.is_file() && md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = first_names.get(&key) {
                    let mut entry = self.entry(&fs_path, tree_path, &md, !with_data)?;
                    entry.kind = EntryKind::HardLink {
                        target: first.clone(),
                    };
                    visit(&entry, None)?;
                    continue;
                }
                first_names.insert(key, tree_path.clone());
            }
            let entry = self.entry(&fs_path, tree_path, &md, !with_data)?;
            match &entry.kind {
                EntryKind::Dir => {
                    visit(&entry, None)?;
                    let names = rev(sorted_names(&fs_path)?);
                    stack.push((fs_path, entry.path, names));
                }
                EntryKind::File { size, data } if with_data && entry.data_bytes() > 0 => {
                    let file = File::open(&fs_path).map_err(|e| Error::io(&fs_path, e))?;
                    let result = match data {
                        DataMap::Dense => visit(&entry, Some(&mut (&file).take(*size))),
                        DataMap::Sparse(ranges) => {
                            let mut reader = RangeReader {
                                file: &file,
                                ranges,
                                index: 0,
                                done: 0,
                            };
                            visit(&entry, Some(&mut reader))
                        }
                    };
                    result.map_err(|e| match e {
                        Error::IoContext { context, source } => Error::IoContext {
                            context: format!("{}: {context}", fs_path.display()),
                            source,
                        },
                        other => other,
                    })?;
                    let now = file.metadata().map_err(|e| Error::io(&fs_path, e))?;
                    if now.len() != *size {
                        return Err(Error::Invalid(format!(
                            "{}: changed size while the image was built ({size} → {} bytes)",
                            fs_path.display(),
                            now.len()
                        )));
                    }
                }
                _ => visit(&entry, None)?,
            }
        }
        Ok(())
    }
}

fn rev(mut names: Vec<OsString>) -> Vec<OsString> {
    names.reverse();
    names
}
