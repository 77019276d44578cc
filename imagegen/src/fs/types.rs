//! The vocabulary every filesystem speaks: kinds, times, extents, listings,
//! `stat` results, attributes for new entries, and the [`Filesystem`] trait.

use crate::{Error, Result};
use serde::Serialize;
use std::io::{Read, Write};

/// What kind of object a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// A timestamp: seconds since the Unix epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// One run of a file's data on disk, in filesystem blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// First block of the run inside the file.
    pub logical: u64,
    /// First block of the run inside the filesystem.
    pub physical: u64,
    /// Number of blocks.
    pub len: u64,
    /// Allocated but not yet written (reads as zeros).
    pub uninit: bool,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
}

/// Everything `stat` reports. Fields a filesystem does not keep are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stat {
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits and setuid/setgid/sticky (`0o7777`).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub nlink: Option<u32>,
    /// Inode number, or the first cluster on FAT.
    pub ino: Option<u64>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
    pub crtime: Option<Timestamp>,
    /// Target of a symlink.
    pub link_target: Option<String>,
    /// Extended attributes, full names (`security.capability`), sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Where the data lives, in filesystem blocks.
    pub extents: Vec<Extent>,
    /// Filesystem-specific flags, as short words (`readonly`, `immutable`, …).
    pub flags: Vec<String>,
}

/// Ownership, mode and times for something being created. `None` takes the
/// filesystem's default (root-owned, 0644 files, 0755 directories, now — or
/// `SOURCE_DATE_EPOCH` when the caller sets it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAttrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<Timestamp>,
}

/// Any [`Filesystem`] as a trait object (for [`Filesystem::batch`]'s default).
pub trait AsDynFilesystem {
    fn as_dyn(&mut self) -> &mut dyn Filesystem;
}

impl<T: Filesystem> AsDynFilesystem for T {
    fn as_dyn(&mut self) -> &mut dyn Filesystem {
        self
    }
}

/// A mounted-without-mounting filesystem: read and change it in place.
pub trait Filesystem: AsDynFilesystem {
    /// Short name of the filesystem type: `fat16`, `fat32`, `ext4`, …
    fn kind(&self) -> String;

    /// The entries of a directory, without `.` and `..`, sorted by name.
    fn list(&self, path: &str) -> Result<Vec<DirEntry>>;

    /// What `path` is. Symlinks are not followed.
    fn stat(&self, path: &str) -> Result<Stat>;

    /// Streams a regular file's contents into `out`; returns the byte count.
    fn read_file(&self, path: &str, out: &mut dyn Write) -> Result<u64>;

    /// Creates or replaces the regular file `path` with `size` bytes from
    /// `data`. The parent must exist. Replacing keeps exactly one entry.
    fn write_file(
        &mut self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        attrs: &NewAttrs,
    ) -> Result<()>;

    /// Creates a directory; with `parents`, also missing ancestors, and an
    /// existing directory is not an error.
    fn mkdir(&mut self, path: &str, parents: bool, attrs: &NewAttrs) -> Result<()>;

    /// Removes a file, symlink or empty directory; with `recursive`, a
    /// directory and everything below it.
    fn remove(&mut self, path: &str, recursive: bool) -> Result<()>;

    /// Creates a symlink at `path` pointing to `target`.
    fn symlink(&mut self, target: &str, path: &str, attrs: &NewAttrs) -> Result<()> {
        let _ = (target, attrs);
        Err(self.unsupported("symlinks", path))
    }

    /// Creates a second name `new` for the file `existing`.
    fn hard_link(&mut self, existing: &str, new: &str) -> Result<()> {
        let _ = existing;
        Err(self.unsupported("hard links", new))
    }

    /// Sets the permission bits (`0o7777`).
    fn set_mode(&mut self, path: &str, mode: u32) -> Result<()> {
        let _ = mode;
        Err(self.unsupported("permission bits", path))
    }

    /// Sets owner and/or group; `None` leaves that one unchanged.
    fn set_owner(&mut self, path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let _ = (uid, gid);
        Err(self.unsupported("owners", path))
    }

    /// Sets access and/or modification time; `None` leaves that one unchanged.
    fn set_times(
        &mut self,
        path: &str,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()>;

    /// Sets an extended attribute (full name, e.g. `security.capability`).
    fn set_xattr(&mut self, path: &str, name: &str, value: &[u8]) -> Result<()> {
        let _ = (name, value);
        Err(self.unsupported("extended attributes", path))
    }

    /// Reads an extended attribute; `Ok(None)` when it is not set.
    fn get_xattr(&self, path: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let _ = name;
        Err(self.unsupported("extended attributes", path))
    }

    /// Removes an extended attribute; removing an absent one is an error.
    fn remove_xattr(&mut self, path: &str, name: &str) -> Result<()> {
        let _ = name;
        Err(self.unsupported("extended attributes", path))
    }

    /// Renames `from` to `to`, like `rename(2)`: an existing non-directory
    /// at `to` is replaced, an existing empty directory is replaced by a
    /// directory, and a directory cannot move below itself. Both parents
    /// must exist.
    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let _ = to;
        Err(self.unsupported("rename", from))
    }

    /// Creates a device node, FIFO or socket at `path` (`kind` is one of
    /// [`FileKind::CharDevice`], [`FileKind::BlockDevice`], [`FileKind::Fifo`],
    /// [`FileKind::Socket`]); `major`/`minor` matter only for devices.
    fn mknod(
        &mut self,
        path: &str,
        kind: FileKind,
        major: u32,
        minor: u32,
        attrs: &NewAttrs,
    ) -> Result<()> {
        let _ = (kind, major, minor, attrs);
        Err(self.unsupported("device nodes", path))
    }

    /// Turns on the inode flags named in `set` and off those in `clear`,
    /// using the words [`Stat::flags`] reports (`immutable`, `append`,
    /// `nodump`, `noatime`, `sync`, …). Flags that describe the on-disk
    /// layout (`extents`, `htree`, `inline_data`, …) cannot be changed.
    fn set_flags(&mut self, path: &str, set: &[&str], clear: &[&str]) -> Result<()> {
        let _ = (set, clear);
        Err(self.unsupported("inode flags", path))
    }

    /// Cuts the regular file `path` to `size` bytes, or extends it with a
    /// hole that reads as zeros.
    fn truncate(&mut self, path: &str, size: u64) -> Result<()> {
        let _ = size;
        Err(self.unsupported("truncate", path))
    }

    /// Runs `f`, which may call any operations on this filesystem, as one
    /// change: filesystems that can (ext4) commit everything once at the
    /// end and leave the filesystem as it was when `f` or the commit fails;
    /// the default runs `f` and each operation commits on its own. Each
    /// failed operation inside `f` is undone by itself, so `f` may handle
    /// an error and continue.
    fn batch(&mut self, f: &mut dyn FnMut(&mut dyn Filesystem) -> Result<()>) -> Result<()> {
        f(self.as_dyn())
    }

    /// Lets changes commit together, on [`flush`](Self::flush) or when
    /// enough have gathered, instead of one by each (ext4's group commit,
    /// as the kernel's journal does it): every change is still all or
    /// nothing and a failed one still leaves the filesystem as it was, but
    /// a crash loses what came after the last commit and changes not
    /// flushed are dropped with the handle. For writers of many small
    /// changes to an image file (stages, bulk copies); the default does
    /// nothing (each change is written as it is made).
    fn defer_commits(&mut self) {}

    /// Writes back everything still cached and makes it durable.
    fn flush(&mut self) -> Result<()>;

    /// The error for an operation this filesystem cannot express.
    fn unsupported(&self, what: &str, path: &str) -> Error {
        Error::unsupported(what, format!("{} has no {what} ({path})", self.kind()))
    }
}

/// Splits an absolute path into its components, refusing empty, relative and
/// `.`/`..` components so no operation can escape or alias a directory.
pub fn path_components(path: &str) -> Result<Vec<&str>> {
    if !path.starts_with('/') {
        return Err(Error::Invalid(format!(
            "{path}: paths inside an image must be absolute"
        )));
    }
    let mut parts = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(Error::Invalid(format!(
                "{path}: '.' and '..' are not allowed in image paths"
            )));
        }
        parts.push(part);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::path_components;

    #[test]
    fn components_are_absolute_and_plain() {
        assert_eq!(path_components("/etc//ssh/").unwrap(), vec!["etc", "ssh"]);
        assert!(path_components("/").unwrap().is_empty());
        assert!(path_components("etc").is_err());
        assert!(path_components("/etc/../root").is_err());
    }
}
