//! ext4 (and ext2/ext3) filesystems, read and changed in place on any
//! [`BlockDevice`]: an image file, a partition [`Window`](crate::block::Window),
//! an overlay.
//!
//! # What it reads
//! Superblock and 32/64-byte group descriptors, inodes of any size, extent
//! trees of any depth, legacy block maps, linear, htree and inline-data
//! directories, fast and slow symlinks, sparse files, extended attributes in
//! the inode and in a block, inline-data files.
//!
//! # What it changes, and the guarantees
//! Create or replace regular files (extents, as few as free space allows,
//! with a tree below the inode when more than four), directories (with
//! parents), fast and slow symlinks, hard links, removal (recursive),
//! mode/owner/times, extended attributes. Block and inode bitmaps, group
//! counters and flags (`BLOCK_UNINIT`, `INODE_UNINIT`, `itable_unused`),
//! superblock free counts, directory link counts and every `metadata_csum`
//! or `gdt_csum` checksum stay consistent: `e2fsck -fn` finds nothing.
//!
//! Each change is all-or-nothing: data and metadata are staged in memory and
//! written only when the whole operation succeeded, so running out of blocks
//! or inodes midway leaves the filesystem exactly as it was. The write is
//! crash-safe (see `engine` and `journal`): through the internal jbd2
//! journal a crash leaves the old or the new state after replay; without a
//! journal, a filesystem marked not clean until the change is complete.
//! Replacing an existing regular file rewrites it in its own inode (hard
//! links see the new bytes; mode, owner and attributes stay unless given),
//! so a name never appears twice. Writing over a symlink (or any other
//! non-directory that is not a regular file) replaces that entry with a new
//! regular file; the link is not followed. A full htree leaf is split; when its
//! parent index is full too, the directory becomes a valid linear one.
//!
//! # What it refuses, with one line and no change
//! A journal needing recovery, a filesystem not cleanly unmounted or marked
//! with errors, unknown incompatible features, `encrypt`, `casefold`,
//! `bigalloc`, `meta_bg`, `journal_dev` (refused even for reading); `mmp`,
//! `ea_inode`, `quota`, `project`, `orphan_present` and unknown read-only
//! features (read only); changes to inline-data inodes and to block-mapped
//! directories; filesystems without extents (ext2/ext3, read only); block
//! sizes other than 1, 2 and 4 KiB; checksum mismatches in any structure a
//! change touches (named with its group). Corrupt images give errors, not
//! panics: every on-disk number is bounds-checked.

mod alloc;
mod blockmap;
mod bytes;
mod csum;
mod devices;
mod dir;
mod dirent;
mod edit;
mod engine;
mod extent;
mod fixed;
mod group;
mod hash;
mod inode;
mod journal;
mod ops;
mod scan;
mod staging;
mod superblock;
mod xattr;

pub use engine::Ext4Fs;
pub use scan::MapReport;

use crate::block::BlockDevice;
use crate::fs::{DirEntry, Filesystem, NewAttrs, Stat, Timestamp};
use crate::{Error, Result};
use inode::{TimeField, FL_EXTENTS, FL_INDEX, FL_INLINE_DATA};
use serde::Serialize;
use std::io::{Read, Write};
use std::ops::Range;

/// Whether `dev` holds an ext2/3/4 filesystem (by [`crate::fs::probe`]).
pub fn probe(dev: &dyn BlockDevice) -> Result<bool> {
    Ok(matches!(
        crate::fs::probe(dev)?,
        Some(crate::fs::FsType::Ext2 | crate::fs::FsType::Ext3 | crate::fs::FsType::Ext4)
    ))
}

/// Feature names as `dumpe2fs` prints them (unknown bits as
/// `incompat_0x…`), from the one feature-name table.
pub fn feature_names(compat: u32, incompat: u32, ro_compat: u32) -> Vec<String> {
    superblock::all_feature_names(compat, incompat, ro_compat)
}

/// Why the engine would refuse to change the filesystem whose 1024-byte
/// superblock is `sb` (`None`: it would change it). For `inspect`.
pub fn change_refusal(sb: &[u8]) -> Option<String> {
    match superblock::Superblock::parse(sb.to_vec(), u64::MAX) {
        Ok(sb) => sb.write_refusal(),
        Err(e) => Some(e.to_string()),
    }
}

/// Byte ranges of `dev` in use according to the filesystem's block
/// bitmaps (groups still `BLOCK_UNINIT` count only their metadata).
/// [`Error::Unsupported`] when the bitmaps cannot be trusted
/// ([`Ext4Fs::map_refusal`]: a journal to recover, an unclean unmount).
pub fn used_ranges<D: BlockDevice>(dev: D) -> Result<Vec<Range<u64>>> {
    let fs = Ext4Fs::open_with(dev, crate::fs::OpenOptions::read_only())?;
    if let Some(why) = fs.map_refusal() {
        return Err(Error::unsupported("ext4 allocation map", why));
    }
    fs.used_byte_ranges()
}

/// What `nodeimg inspect` shows about an ext4 filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ext4Details {
    /// `ext2`, `ext3` or `ext4`.
    pub kind: String,
    pub label: String,
    pub uuid: String,
    pub block_size: u64,
    pub blocks: u64,
    pub free_blocks: u64,
    pub reserved_blocks: u64,
    pub inodes: u32,
    pub free_inodes: u32,
    pub inode_size: usize,
    pub groups: u32,
    /// Feature names as `dumpe2fs` prints them.
    pub features: Vec<String>,
    /// `clean`, `not clean` or `errors`.
    pub state: String,
    /// Why the engine would refuse to change it, if it would.
    pub read_only_reason: Option<String>,
}

fn uuid_string(u: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*u).to_string()
}

/// Inode flags worth showing in `stat`.
const FLAG_WORDS: &[(u32, &str)] = &[
    (0x8, "sync"),
    (0x10, "immutable"),
    (0x20, "append"),
    (0x40, "nodump"),
    (0x80, "noatime"),
    (0x800, "encrypted"),
    (FL_INDEX, "htree"),
    (inode::FL_HUGE_FILE, "huge_file"),
    (FL_EXTENTS, "extents"),
    (inode::FL_VERITY, "verity"),
    (FL_INLINE_DATA, "inline_data"),
    (inode::FL_CASEFOLD, "casefold"),
];

impl<D: BlockDevice> Ext4Fs<D> {
    /// Summary of the filesystem for `inspect`.
    pub fn details(&self) -> Ext4Details {
        let sb = &self.sb;
        // The same words as `fs::probe`, which decides them from the same bytes.
        let kind = match crate::fs::probe(&self.dev) {
            Ok(Some(t)) => t.name(),
            _ => "ext4",
        };
        Ext4Details {
            kind: kind.into(),
            label: sb.label(),
            uuid: uuid_string(&sb.uuid),
            block_size: sb.block_size,
            blocks: sb.blocks_count,
            free_blocks: sb.free_blocks(),
            reserved_blocks: sb.reserved_blocks(),
            inodes: sb.inodes_count,
            free_inodes: sb.free_inodes(),
            inode_size: sb.inode_size,
            groups: sb.group_count,
            features: sb.feature_list(),
            state: if sb.state & 2 != 0 {
                "errors"
            } else if sb.state & 1 != 0 {
                "clean"
            } else {
                "not clean"
            }
            .into(),
            read_only_reason: self.refusal.clone(),
        }
    }

    /// Entries of the directory at `path`, without `.` and `..`, by name.
    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        let ino = self.resolve(path)?;
        let inode = self.read_inode(ino)?;
        if !inode.is_dir() {
            return Err(Error::Invalid(format!("{path}: not a directory")));
        }
        let mut out = Vec::new();
        for (name, found) in self.dir_records(ino, &inode)? {
            if name == b"." || name == b".." {
                continue;
            }
            let child = self.read_inode(found.ino)?;
            let kind = child.kind().ok_or_else(|| {
                Error::corrupt(
                    format!("ext4 inode {}", found.ino),
                    format!("unknown file type {:o}", child.mode()),
                )
            })?;
            out.push(DirEntry {
                name: String::from_utf8_lossy(&name).into_owned(),
                kind,
                size: child.size(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Everything `stat` shows about `path` (not following a final symlink).
    pub fn stat(&self, path: &str) -> Result<Stat> {
        let ino = self.resolve(path)?;
        let inode = self.read_inode(ino)?;
        let kind = inode.kind().ok_or_else(|| {
            Error::corrupt(
                format!("ext4 inode {ino}"),
                format!("unknown file type {:o}", inode.mode()),
            )
        })?;
        let link_target = if inode.is_symlink() {
            Some(self.link_target(ino, &inode)?)
        } else {
            None
        };
        let mut xattrs: Vec<(String, Vec<u8>)> = self
            .xattrs(&inode)?
            .into_iter()
            .map(|a| (a.full_name(), a.value))
            .collect();
        xattrs.sort();
        let extents = if self.is_fast_symlink(&inode) {
            Vec::new()
        } else {
            self.map(ino, &inode)?.extents
        };
        let mut flags: Vec<String> = Vec::new();
        for (bit, word) in FLAG_WORDS {
            if inode.has_flag(*bit) {
                flags.push((*word).to_string());
            }
        }
        Ok(Stat {
            kind,
            size: inode.size(),
            mode: Some(u32::from(inode.mode() & 0o7777)),
            uid: Some(inode.uid()),
            gid: Some(inode.gid()),
            nlink: Some(u32::from(inode.links())),
            ino: Some(u64::from(ino)),
            atime: inode.time(TimeField::Atime),
            mtime: inode.time(TimeField::Mtime),
            ctime: inode.time(TimeField::Ctime),
            crtime: inode.time(TimeField::Crtime),
            link_target,
            xattrs,
            extents,
            flags,
        })
    }

    /// Streams the regular file at `path` into `out`.
    pub fn read_file(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let ino = self.resolve(path)?;
        let inode = self.read_inode(ino)?;
        if !inode.is_reg() {
            return Err(Error::Invalid(format!("{path}: not a regular file")));
        }
        self.read_data(ino, &inode, out)
    }

    /// Commits the running deferred transaction (if any), then flushes the
    /// device: everything changed so far is durable when it returns.
    pub fn sync(&mut self) -> Result<()> {
        self.commit_deferred()?;
        self.dev.flush()
    }
}

impl<D: BlockDevice> Filesystem for Ext4Fs<D> {
    fn kind(&self) -> String {
        self.details().kind
    }

    fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        Ext4Fs::list(self, path)
    }

    fn stat(&self, path: &str) -> Result<Stat> {
        Ext4Fs::stat(self, path)
    }

    fn read_file(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        Ext4Fs::read_file(self, path, out)
    }

    fn write_file(
        &mut self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        attrs: &NewAttrs,
    ) -> Result<()> {
        self.put(path, data, size, attrs)
    }

    fn mkdir(&mut self, path: &str, parents: bool, attrs: &NewAttrs) -> Result<()> {
        Ext4Fs::mkdir(self, path, parents, attrs)
    }

    fn remove(&mut self, path: &str, recursive: bool) -> Result<()> {
        Ext4Fs::remove(self, path, recursive)
    }

    fn symlink(&mut self, target: &str, path: &str, attrs: &NewAttrs) -> Result<()> {
        Ext4Fs::symlink(self, target, path, attrs)
    }

    fn hard_link(&mut self, existing: &str, new: &str) -> Result<()> {
        Ext4Fs::hard_link(self, existing, new)
    }

    fn set_mode(&mut self, path: &str, mode: u32) -> Result<()> {
        Ext4Fs::set_mode(self, path, mode)
    }

    fn set_owner(&mut self, path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        Ext4Fs::set_owner(self, path, uid, gid)
    }

    fn set_times(
        &mut self,
        path: &str,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
        Ext4Fs::set_times(self, path, atime, mtime)
    }

    fn set_xattr(&mut self, path: &str, name: &str, value: &[u8]) -> Result<()> {
        Ext4Fs::set_xattr(self, path, name, value)
    }

    fn get_xattr(&self, path: &str, name: &str) -> Result<Option<Vec<u8>>> {
        Ext4Fs::get_xattr(self, path, name)
    }

    fn remove_xattr(&mut self, path: &str, name: &str) -> Result<()> {
        Ext4Fs::remove_xattr(self, path, name)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        Ext4Fs::rename(self, from, to)
    }

    fn mknod(
        &mut self,
        path: &str,
        kind: crate::fs::FileKind,
        major: u32,
        minor: u32,
        attrs: &NewAttrs,
    ) -> Result<()> {
        Ext4Fs::mknod(self, path, kind, major, minor, attrs)
    }

    fn set_flags(&mut self, path: &str, set: &[&str], clear: &[&str]) -> Result<()> {
        Ext4Fs::set_flags(self, path, set, clear)
    }

    fn truncate(&mut self, path: &str, size: u64) -> Result<()> {
        Ext4Fs::truncate(self, path, size)
    }

    fn batch(&mut self, f: &mut dyn FnMut(&mut dyn Filesystem) -> Result<()>) -> Result<()> {
        Ext4Fs::batch(self, |fs| f(fs))
    }

    fn flush(&mut self) -> Result<()> {
        self.sync()
    }

    fn defer_commits(&mut self) {
        Ext4Fs::defer_commits(self)
    }
}

#[cfg(test)]
mod tests;
