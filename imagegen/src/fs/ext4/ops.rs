//! Path-level operations: resolve, read, create, replace, link, remove and
//! change attributes. Each public change runs as one transaction.

use super::dirent::{FT_DIR, FT_REG, FT_SYMLINK};
use super::engine::Ext4Fs;
use super::extent;
use super::inode::*;
use super::superblock::ro_compat;
use super::xattr::{split_name, Xattr};
use crate::block::BlockDevice;
use crate::fs::{path_components, NewAttrs, Timestamp};
use crate::{Error, Result};
use std::io::Read;

pub(super) const ROOT: u32 = 2;
/// Most links an inode may have.
pub(super) const LINK_MAX: u16 = 65000;
const MAX_SYMLINK_HOPS: usize = 40;

/// A resolved parent directory and the final name.
pub(super) struct Target {
    pub dir: u32,
    pub name: Vec<u8>,
    pub path: String,
}

fn check_name(name: &[u8], path: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.contains(&0) {
        return Err(Error::Invalid(format!(
            "{path}: names must be 1 to 255 bytes without NUL"
        )));
    }
    Ok(())
}

pub(super) fn ftype_of(inode: &Inode) -> u8 {
    match inode.file_type() {
        S_IFREG => FT_REG,
        S_IFDIR => FT_DIR,
        S_IFCHR => 3,
        S_IFBLK => 4,
        S_IFIFO => 5,
        S_IFSOCK => 6,
        S_IFLNK => FT_SYMLINK,
        _ => 0,
    }
}

impl<D: BlockDevice> Ext4Fs<D> {
    /// Resolves `path`, following symlinks in all but the last component.
    pub(super) fn resolve(&self, path: &str) -> Result<u32> {
        match self.resolve_parent(path)? {
            None => Ok(ROOT),
            Some(t) => {
                let dir = self.read_inode(t.dir)?;
                self.dir_lookup(t.dir, &dir, &t.name)?
                    .map(|f| f.ino)
                    .ok_or_else(|| Error::NotFound(path.to_string()))
            }
        }
    }

    /// Resolves the directory holding the last component of `path`
    /// (`None` for `/` itself).
    pub(super) fn resolve_parent(&self, path: &str) -> Result<Option<Target>> {
        let comps = path_components(path)?;
        let Some((last, dirs)) = comps.split_last() else {
            return Ok(None);
        };
        check_name(last.as_bytes(), path)?;
        let mut todo: Vec<Vec<u8>> = dirs.iter().rev().map(|c| c.as_bytes().to_vec()).collect();
        let mut cur = ROOT;
        let mut hops = 0;
        while let Some(comp) = todo.pop() {
            let dir = self.read_inode(cur)?;
            if !dir.is_dir() {
                return Err(Error::Invalid(format!(
                    "{path}: a component is not a directory"
                )));
            }
            let Some(found) = self.dir_lookup(cur, &dir, &comp)? else {
                return Err(Error::NotFound(path.to_string()));
            };
            let child = self.read_inode(found.ino)?;
            if child.is_symlink() {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Error::Invalid(format!(
                        "{path}: too many levels of symbolic links"
                    )));
                }
                let target = self.link_target(found.ino, &child)?;
                if target.starts_with('/') {
                    cur = ROOT;
                }
                for part in target.split('/').filter(|p| !p.is_empty()).rev() {
                    todo.push(part.as_bytes().to_vec());
                }
                continue;
            }
            if !child.is_dir() {
                return Err(Error::Invalid(format!(
                    "{path}: a component is not a directory"
                )));
            }
            cur = found.ino;
        }
        Ok(Some(Target {
            dir: cur,
            name: last.as_bytes().to_vec(),
            path: path.to_string(),
        }))
    }

    pub(super) fn resolve_parent_required(&self, path: &str) -> Result<Target> {
        self.resolve_parent(path)?.ok_or_else(|| {
            Error::Invalid(format!(
                "{path}: the root directory cannot be replaced or removed"
            ))
        })
    }

    /// A symlink's target.
    pub(super) fn link_target(&self, ino: u32, inode: &Inode) -> Result<String> {
        if inode.size() >= self.block_size() {
            return Err(Error::corrupt(
                format!("ext4 symlink inode {ino}"),
                format!("target of {} bytes", inode.size()),
            ));
        }
        let mut out = Vec::new();
        self.read_data(ino, inode, &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Whether `i_block` maps data blocks: regular files, directories and
    /// slow symlinks do; devices keep numbers there, fast symlinks text,
    /// inline-data inodes bytes.
    pub(super) fn owns_blocks(&self, inode: &Inode) -> bool {
        (inode.is_reg() || inode.is_dir() || inode.is_symlink())
            && !self.is_fast_symlink(inode)
            && !inode.has_flag(FL_INLINE_DATA)
    }

    /// Whether a symlink keeps its target in `i_block`.
    pub(super) fn is_fast_symlink(&self, inode: &Inode) -> bool {
        let acl = if inode.file_acl() != 0 {
            self.block_size() / 512
        } else {
            0
        };
        inode.is_symlink()
            && !inode.has_flag(FL_INLINE_DATA)
            && !inode.has_flag(FL_EXTENTS)
            && inode.size() < 60
            && inode.blocks_512(self.block_size(), self.huge_file()) == acl
    }

    /// Streams an inode's bytes (file contents or symlink target).
    pub(super) fn read_data(
        &self,
        ino: u32,
        inode: &Inode,
        out: &mut dyn std::io::Write,
    ) -> Result<u64> {
        let size = inode.size();
        // Logical block numbers are 32 bits: nothing is larger than this.
        if size > (1u64 << 32) * self.block_size() {
            return Err(Error::corrupt(
                format!("ext4 inode {ino}"),
                format!("size {size} exceeds the format's maximum"),
            ));
        }
        if self.is_fast_symlink(inode) {
            out.write_all(&inode.i_block()[..size as usize])
                .map_err(|e| Error::io_context("writing", e))?;
            return Ok(size);
        }
        if inode.has_flag(FL_INLINE_DATA) {
            let mut data = inode.i_block().to_vec();
            if let Some(extra) = self.inline_xattr_data(inode)? {
                data.extend(extra);
            }
            if (data.len() as u64) < size {
                return Err(Error::corrupt(
                    format!("ext4 inline data of inode {ino}"),
                    "shorter than the file size",
                ));
            }
            out.write_all(&data[..size as usize])
                .map_err(|e| Error::io_context("writing", e))?;
            return Ok(size);
        }
        let tree = self.map(ino, inode)?;
        self.stream(&tree.extents, size, out)
    }

    pub(super) fn new_inode(&self, mode: u16, attrs: &NewAttrs) -> Inode {
        let mut inode = Inode {
            raw: vec![0; self.sb.inode_size],
        };
        if self.sb.inode_size > 128 {
            let want = self
                .sb
                .want_extra_isize
                .max(32)
                .min((self.sb.inode_size - 128) as u16)
                & !3;
            inode.set_extra_isize(want);
        }
        inode.set_mode(mode);
        inode.set_uid(attrs.uid.unwrap_or(0));
        inode.set_gid(attrs.gid.unwrap_or(0));
        let now = self.clock();
        let mtime = attrs.mtime.unwrap_or(now);
        inode.set_time(TimeField::Atime, mtime);
        inode.set_time(TimeField::Mtime, mtime);
        inode.set_time(TimeField::Ctime, now);
        inode.set_time(TimeField::Crtime, now);
        inode
    }

    /// Refuses times `inode` cannot hold, rather than storing another one.
    pub(super) fn check_time(&self, inode: &Inode, t: Option<Timestamp>, path: &str) -> Result<()> {
        for t in [t, Some(self.clock())].into_iter().flatten() {
            if !inode.time_fits(t) {
                let range = if inode.raw.len() > 128 && inode.extra_isize() >= 12 {
                    "1901-12-13 to 2446-05-10"
                } else {
                    "1901-12-13 to 2038-01-19 (128-byte inodes)"
                };
                return Err(Error::Invalid(format!(
                    "{path}: time {} seconds is outside what this filesystem stores ({range})",
                    t.secs
                )));
            }
        }
        Ok(())
    }

    /// Stamps a directory's mtime/ctime after its entries changed.
    pub(super) fn touch_dir(&self, dir: &mut Inode) {
        let now = self.clock();
        dir.set_time(TimeField::Mtime, now);
        dir.set_time(TimeField::Ctime, now);
    }

    /// Allocates and writes `size` bytes from `data` into new blocks.
    fn write_new_data(
        &mut self,
        goal: u32,
        data: &mut dyn Read,
        size: u64,
    ) -> Result<Vec<crate::fs::Extent>> {
        let bs = self.block_size();
        let nblocks = size.div_ceil(bs);
        let runs = self.alloc_blocks(nblocks, goal)?;
        let chunk = (1u64 << 20).min(nblocks * bs);
        let mut left = size;
        for &(first, len) in &runs {
            let mut b = first;
            let end = first + len;
            while b < end {
                let n = ((end - b) * bs).min(chunk) as usize;
                let want = (n as u64).min(left) as usize;
                self.write_data_with(b, n, |buf| {
                    read_exact(data, &mut buf[..want])?;
                    buf[want..].fill(0);
                    Ok(())
                })?;
                left -= want as u64;
                b += n as u64 / bs;
            }
        }
        // The source must end exactly at `size`.
        let mut probe = [0u8; 1];
        if read_some(data, &mut probe)? != 0 {
            return Err(Error::Invalid(format!(
                "the source holds more than the {size} bytes announced"
            )));
        }
        Ok(extent::from_runs(&runs))
    }

    /// Frees an inode's data, tree and attribute blocks (not the inode).
    fn free_inode_blocks(&mut self, ino: u32, inode: &Inode) -> Result<()> {
        if self.owns_blocks(inode) {
            let tree = self.map_all(ino, inode)?;
            let runs: Vec<(u64, u64)> = tree
                .extents
                .iter()
                .map(|e| (e.physical, e.len))
                .chain(tree.tree_blocks.iter().map(|&b| (b, 1)))
                .collect();
            self.free_blocks_later(runs);
        }
        Ok(())
    }

    /// Releases an inode whose last link went away.
    fn destroy_inode(&mut self, ino: u32, inode: &Inode) -> Result<()> {
        // Refuses attribute values kept in other inodes rather than orphan them.
        self.xattrs_for_change(ino, inode)?;
        self.free_inode_blocks(ino, inode)?;
        self.drop_xattr_block(inode)?;
        let mut dead = Inode {
            raw: vec![0; self.sb.inode_size],
        };
        dead.set_extra_isize(inode.extra_isize() as u16);
        dead.set_dtime(self.clock().secs as u32);
        self.write_inode(ino, &mut dead)?;
        self.free_inode(ino, inode.is_dir())
    }

    pub(super) fn refuse_inline(&self, ino: u32, inode: &Inode, path: &str) -> Result<()> {
        if inode.has_flag(FL_INLINE_DATA) {
            return Err(Error::unsupported(
                "ext4 change",
                format!("{path} (inode {ino}) keeps its data inline (inline_data); changing it is not handled"),
            ));
        }
        if inode.has_flag(FL_ENCRYPT | FL_CASEFOLD | FL_VERITY | FL_EA_INODE) {
            return Err(Error::unsupported(
                "ext4 change",
                format!(
                    "{path} (inode {ino}) is encrypted, casefolded, verity or an attribute inode"
                ),
            ));
        }
        // An attribute whose value sits in another inode, without ea_inode
        // (the case of e2fsprogs' f_ea_inode_no_feature test image): e2fsck
        // charges that inode's blocks to this one's i_blocks, which a
        // rewrite here would not keep. Refused before a byte changes.
        if !self.sb.has_incompat(super::superblock::incompat::EA_INODE) {
            if let Some(a) = self.raw_xattrs(inode)?.iter().find(|a| a.value_inum != 0) {
                return Err(Error::unsupported(
                    "ext4 change",
                    format!(
                        "{path} (inode {ino}) keeps the value of its attribute {} in inode {} although the filesystem lacks ea_inode; changing it is not handled",
                        a.full_name(),
                        a.value_inum
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Creates or replaces a regular file.
    pub fn put(
        &mut self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        attrs: &NewAttrs,
    ) -> Result<()> {
        self.change(|fs| fs.put_tx(path, data, size, attrs))
    }

    fn put_tx(
        &mut self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        attrs: &NewAttrs,
    ) -> Result<()> {
        let t = self.resolve_parent_required(path)?;
        let mut dir = self.read_inode(t.dir)?;
        let existing = self.dir_lookup(t.dir, &dir, &t.name)?;
        if existing.is_none() {
            // Refuse before any data reaches the device.
            self.check_dir_changeable(t.dir, &dir)?;
        }
        self.check_time(
            &self.new_inode(S_IFREG, &NewAttrs::default()),
            attrs.mtime,
            path,
        )?;
        let bs = self.block_size();
        let nblocks = size.div_ceil(bs);
        // Room check before anything is written: data, a worst-case tree
        // (one extent per 8 blocks) and one directory block.
        let worst_tree = extent::blocks_needed(nblocks.div_ceil(8) as usize, bs);
        if nblocks + worst_tree.min(nblocks) + 1 > self.free_block_count() {
            return Err(Error::NoSpace(format!(
                "{path}: {size} bytes need {} blocks, {} free",
                nblocks + 1,
                self.free_block_count()
            )));
        }
        if size > u64::from(u32::MAX) && !self.sb.has_ro_compat(ro_compat::LARGE_FILE) {
            return Err(Error::unsupported(
                "ext4 file size",
                format!("{path}: files over 4 GiB need the large_file feature"),
            ));
        }
        if let Some(f) = existing {
            let old = self.read_inode(f.ino)?;
            if old.is_dir() {
                return Err(Error::AlreadyExists(format!("{path} (a directory)")));
            }
            if old.is_reg() {
                return self.rewrite_file(f.ino, old, &mut dir, t.dir, data, size, attrs, path);
            }
            self.unlink_tx(&t, &mut dir, path)?;
        }
        if self.sb.free_inodes() == 0 {
            return Err(Error::NoSpace(format!("{path}: no free inodes")));
        }
        let goal = self.inode_group(t.dir);
        let ino = self.alloc_inode(goal, false)?;
        let mut inode = self.new_inode(
            S_IFREG | (attrs.mode.unwrap_or(0o644) & 0o7777) as u16,
            attrs,
        );
        inode.set_links(1);
        let extents = self.write_new_data(self.inode_group(ino), data, size)?;
        self.set_extents(ino, &mut inode, &extents, &[])?;
        inode.set_size(size);
        self.recount_blocks(&mut inode, &extents)?;
        self.write_inode(ino, &mut inode)?;
        self.dir_add(t.dir, &mut dir, &t.name, ino, FT_REG)?;
        self.touch_dir(&mut dir);
        self.write_inode(t.dir, &mut dir)
    }

    /// Replaces a regular file's contents in its own inode (hard links see
    /// the new bytes); mode and owner stay unless `attrs` sets them.
    #[allow(clippy::too_many_arguments)]
    fn rewrite_file(
        &mut self,
        ino: u32,
        mut inode: Inode,
        dir: &mut Inode,
        dir_ino: u32,
        data: &mut dyn Read,
        size: u64,
        attrs: &NewAttrs,
        path: &str,
    ) -> Result<()> {
        self.refuse_inline(ino, &inode, path)?;
        self.check_time(&inode, attrs.mtime, path)?;
        // New blocks first: the old ones stay intact until the commit.
        let extents = self.write_new_data(self.inode_group(ino), data, size)?;
        // Queues the old data and tree blocks; they are freed at the end.
        self.free_inode_blocks(ino, &inode)?;
        self.set_extents(ino, &mut inode, &extents, &[])?;
        inode.set_size(size);
        self.recount_blocks(&mut inode, &extents)?;
        if let Some(m) = attrs.mode {
            inode.set_mode(S_IFREG | (m & 0o7777) as u16);
        }
        if let Some(u) = attrs.uid {
            inode.set_uid(u);
        }
        if let Some(g) = attrs.gid {
            inode.set_gid(g);
        }
        let now = self.clock();
        inode.set_time(TimeField::Mtime, attrs.mtime.unwrap_or(now));
        inode.set_time(TimeField::Ctime, now);
        self.write_inode(ino, &mut inode)?;
        self.touch_dir(dir);
        self.write_inode(dir_ino, dir)
    }

    /// Creates a directory (and with `parents`, its missing ancestors).
    /// `attrs` applies to every directory created, ancestors included (like
    /// `install -d`); existing directories are left as they are.
    pub fn mkdir(&mut self, path: &str, parents: bool, attrs: &NewAttrs) -> Result<()> {
        self.change(|fs| {
            let comps = path_components(path)?;
            if comps.is_empty() {
                return if parents {
                    Ok(())
                } else {
                    Err(Error::AlreadyExists("/".into()))
                };
            }
            let mut prefix = String::new();
            for (i, c) in comps.iter().enumerate() {
                prefix.push('/');
                prefix.push_str(c);
                let last = i + 1 == comps.len();
                if !last && !parents {
                    continue;
                }
                let t = fs.resolve_parent_required(&prefix)?;
                let mut dir = fs.read_inode(t.dir)?;
                if let Some(f) = fs.dir_lookup(t.dir, &dir, &t.name)? {
                    let existing = fs.read_inode(f.ino)?;
                    let is_dir = existing.is_dir()
                        || (existing.is_symlink()
                            && fs.resolve_parent(&format!("{prefix}/x")).is_ok());
                    if !is_dir {
                        return Err(Error::AlreadyExists(format!("{prefix} (not a directory)")));
                    }
                    if last && !parents {
                        return Err(Error::AlreadyExists(prefix));
                    }
                    continue;
                }
                fs.mkdir_one(&t, &mut dir, attrs)?;
            }
            Ok(())
        })
    }

    fn mkdir_one(&mut self, t: &Target, dir: &mut Inode, attrs: &NewAttrs) -> Result<()> {
        self.check_time(
            &self.new_inode(S_IFDIR, &NewAttrs::default()),
            attrs.mtime,
            &t.path,
        )?;
        if dir.links() >= LINK_MAX - 1
            && !self.sb.has_ro_compat(ro_compat::DIR_NLINK)
            && dir.links() != 1
        {
            return Err(Error::NoSpace(format!(
                "{}: the parent has too many subdirectories",
                t.path
            )));
        }
        let goal = self.inode_group(t.dir);
        let ino = self.alloc_inode(goal, true)?;
        let mut inode = self.new_inode(
            S_IFDIR | (attrs.mode.unwrap_or(0o755) & 0o7777) as u16,
            attrs,
        );
        inode.set_links(2);
        let seed = self.inode_seed(ino, &inode);
        let bs = self.block_size();
        let block = super::dirent::dots_block(
            bs as usize,
            ino,
            t.dir,
            seed,
            self.sb.has_incompat(super::superblock::incompat::FILETYPE),
        );
        let b = self.alloc_blocks(1, self.inode_group(ino))?[0].0;
        self.write_block(b, block);
        let extents = extent::from_runs(&[(b, 1)]);
        self.set_extents(ino, &mut inode, &extents, &[])?;
        inode.set_size(bs);
        self.recount_blocks(&mut inode, &extents)?;
        self.write_inode(ino, &mut inode)?;
        self.dir_add(t.dir, dir, &t.name, ino, FT_DIR)?;
        let links = dir.links();
        if links != 1 {
            dir.set_links(if links + 1 >= LINK_MAX { 1 } else { links + 1 });
        }
        self.touch_dir(dir);
        self.write_inode(t.dir, dir)
    }

    /// Creates a symlink at `path` pointing to `target`.
    pub fn symlink(&mut self, target: &str, path: &str, attrs: &NewAttrs) -> Result<()> {
        self.change(|fs| {
            let bytes = target.as_bytes();
            if bytes.is_empty() || bytes.len() as u64 >= fs.block_size() || bytes.contains(&0) {
                return Err(Error::Invalid(format!(
                    "{path}: symlink targets must be 1 to {} bytes",
                    fs.block_size() - 1
                )));
            }
            let t = fs.resolve_parent_required(path)?;
            let mut dir = fs.read_inode(t.dir)?;
            if fs.dir_lookup(t.dir, &dir, &t.name)?.is_some() {
                return Err(Error::AlreadyExists(path.to_string()));
            }
            fs.check_dir_changeable(t.dir, &dir)?;
            fs.check_time(
                &fs.new_inode(S_IFLNK, &NewAttrs::default()),
                attrs.mtime,
                path,
            )?;
            let ino = fs.alloc_inode(fs.inode_group(t.dir), false)?;
            let mut inode = fs.new_inode(S_IFLNK | 0o777, attrs);
            inode.set_links(1);
            inode.set_size(bytes.len() as u64);
            if bytes.len() < 60 {
                inode.i_block_mut()[..bytes.len()].copy_from_slice(bytes);
            } else {
                let extents =
                    fs.write_new_data(fs.inode_group(ino), &mut &bytes[..], bytes.len() as u64)?;
                fs.set_extents(ino, &mut inode, &extents, &[])?;
                fs.recount_blocks(&mut inode, &extents)?;
            }
            fs.write_inode(ino, &mut inode)?;
            fs.dir_add(t.dir, &mut dir, &t.name, ino, FT_SYMLINK)?;
            fs.touch_dir(&mut dir);
            fs.write_inode(t.dir, &mut dir)
        })
    }

    /// Gives the file at `existing` a second name `new`.
    pub fn hard_link(&mut self, existing: &str, new: &str) -> Result<()> {
        self.change(|fs| {
            let ino = fs.resolve(existing)?;
            let mut inode = fs.read_inode(ino)?;
            if inode.is_dir() {
                return Err(Error::Invalid(format!(
                    "{existing}: directories cannot be hard-linked"
                )));
            }
            if inode.links() >= LINK_MAX {
                return Err(Error::NoSpace(format!("{existing}: too many links")));
            }
            let t = fs.resolve_parent_required(new)?;
            let mut dir = fs.read_inode(t.dir)?;
            if fs.dir_lookup(t.dir, &dir, &t.name)?.is_some() {
                return Err(Error::AlreadyExists(new.to_string()));
            }
            inode.set_links(inode.links() + 1);
            inode.set_time(TimeField::Ctime, fs.clock());
            fs.write_inode(ino, &mut inode)?;
            fs.dir_add(t.dir, &mut dir, &t.name, ino, ftype_of(&inode))?;
            fs.touch_dir(&mut dir);
            fs.write_inode(t.dir, &mut dir)
        })
    }

    /// Removes a name; directories must be empty unless `recursive`.
    pub fn remove(&mut self, path: &str, recursive: bool) -> Result<()> {
        self.change(|fs| {
            let t = fs.resolve_parent_required(path)?;
            let mut dir = fs.read_inode(t.dir)?;
            fs.remove_tx(&t, &mut dir, recursive, path)?;
            fs.touch_dir(&mut dir);
            fs.write_inode(t.dir, &mut dir)
        })
    }

    pub(super) fn remove_tx(
        &mut self,
        t: &Target,
        dir: &mut Inode,
        recursive: bool,
        path: &str,
    ) -> Result<()> {
        let found = self
            .dir_lookup(t.dir, dir, &t.name)?
            .ok_or_else(|| Error::NotFound(path.to_string()))?;
        if found.at.is_none() {
            return Err(Error::Invalid(format!("{path}: cannot remove this entry")));
        }
        let inode = self.read_inode(found.ino)?;
        if inode.is_dir() {
            self.refuse_inline(found.ino, &inode, path)?;
            let children: Vec<Vec<u8>> = self
                .dir_records(found.ino, &inode)?
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| n != b"." && n != b"..")
                .collect();
            if !children.is_empty() && !recursive {
                return Err(Error::Invalid(format!("{path}: directory not empty")));
            }
            if !children.is_empty() {
                self.purge_dir(found.ino, path)?;
            }
            let inode = self.read_inode(found.ino)?;
            self.dir_remove(t.dir, dir, &t.name)?;
            self.destroy_inode(found.ino, &inode)?;
            let links = dir.links();
            if links > 2 {
                dir.set_links(links - 1);
            }
            Ok(())
        } else {
            self.unlink_tx(t, dir, path)
        }
    }

    /// Releases everything below directory `top`, which is about to be
    /// destroyed itself: its blocks are not edited, only its children's
    /// link counts and inodes. Iterative, depth-first, children before
    /// their directory; a directory met twice (a hard-linked directory or a
    /// cycle back to an ancestor) is corruption and refuses the removal.
    fn purge_dir(&mut self, top: u32, path: &str) -> Result<()> {
        let mut visited = std::collections::HashSet::from([top]);
        // (directory, its path, whether its children are done)
        let mut stack = vec![(top, path.trim_end_matches('/').to_string(), false)];
        while let Some((ino, dir_path, done)) = stack.pop() {
            if done {
                if ino != top {
                    let inode = self.read_inode(ino)?;
                    self.destroy_inode(ino, &inode)?;
                }
                continue;
            }
            stack.push((ino, dir_path.clone(), true));
            let inode = self.read_inode(ino)?;
            for (name, found) in self.dir_records(ino, &inode)? {
                if name == b"." || name == b".." {
                    continue;
                }
                let child_path = format!("{dir_path}/{}", String::from_utf8_lossy(&name));
                let mut child = self.read_inode(found.ino)?;
                self.refuse_inline(found.ino, &child, &child_path)?;
                if child.is_dir() {
                    if !visited.insert(found.ino) {
                        return Err(Error::corrupt(
                            format!("ext4 directory inode {}", found.ino),
                            format!("{child_path} names a directory already met below {path} (a cycle or a hard-linked directory)"),
                        ));
                    }
                    stack.push((found.ino, child_path, false));
                } else if child.links() <= 1 {
                    self.destroy_inode(found.ino, &child)?;
                } else {
                    child.set_links(child.links() - 1);
                    child.set_time(TimeField::Ctime, self.clock());
                    self.write_inode(found.ino, &mut child)?;
                }
            }
        }
        Ok(())
    }

    /// Removes a non-directory name, releasing the inode at its last link.
    fn unlink_tx(&mut self, t: &Target, dir: &mut Inode, path: &str) -> Result<()> {
        let found = self
            .dir_lookup(t.dir, dir, &t.name)?
            .ok_or_else(|| Error::NotFound(path.to_string()))?;
        let mut inode = self.read_inode(found.ino)?;
        self.refuse_inline(found.ino, &inode, path)?;
        self.dir_remove(t.dir, dir, &t.name)?;
        if inode.links() <= 1 {
            self.destroy_inode(found.ino, &inode)
        } else {
            inode.set_links(inode.links() - 1);
            inode.set_time(TimeField::Ctime, self.clock());
            self.write_inode(found.ino, &mut inode)
        }
    }

    /// Applies `f` to the inode at `path` and stamps its ctime.
    pub(super) fn modify(
        &mut self,
        path: &str,
        f: impl FnOnce(&mut Self, u32, &mut Inode) -> Result<()>,
    ) -> Result<()> {
        self.change(|fs| {
            let ino = fs.resolve(path)?;
            let mut inode = fs.read_inode(ino)?;
            f(fs, ino, &mut inode)?;
            inode.set_time(TimeField::Ctime, fs.clock());
            fs.write_inode(ino, &mut inode)
        })
    }

    pub fn set_mode(&mut self, path: &str, mode: u32) -> Result<()> {
        self.modify(path, |_, _, i| {
            i.set_mode(i.file_type() | (mode & 0o7777) as u16);
            Ok(())
        })
    }

    pub fn set_owner(&mut self, path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        self.modify(path, |_, _, i| {
            if let Some(u) = uid {
                i.set_uid(u);
            }
            if let Some(g) = gid {
                i.set_gid(g);
            }
            Ok(())
        })
    }

    pub fn set_times(
        &mut self,
        path: &str,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<()> {
        self.modify(path, |fs, _, i| {
            fs.check_time(i, atime, path)?;
            fs.check_time(i, mtime, path)?;
            if let Some(t) = atime {
                i.set_time(TimeField::Atime, t);
            }
            if let Some(t) = mtime {
                i.set_time(TimeField::Mtime, t);
            }
            Ok(())
        })
    }

    pub fn set_xattr(&mut self, path: &str, name: &str, value: &[u8]) -> Result<()> {
        let (index, suffix) = split_name(name)?;
        self.modify(path, |fs, ino, inode| {
            fs.refuse_inline(ino, inode, path)?;
            fs.check_xattr_block(inode)?;
            let mut attrs = fs.xattrs_for_change(ino, inode)?;
            attrs.retain(|a| !(a.index == index && a.name == suffix));
            attrs.push(Xattr {
                index,
                name: suffix,
                value: value.to_vec(),
                value_inum: 0,
            });
            fs.store_xattrs(ino, inode, attrs)?;
            fs.recount_after_xattr(ino, inode)
        })
    }

    pub fn remove_xattr(&mut self, path: &str, name: &str) -> Result<()> {
        let (index, suffix) = split_name(name)?;
        self.modify(path, |fs, ino, inode| {
            fs.refuse_inline(ino, inode, path)?;
            fs.check_xattr_block(inode)?;
            let mut attrs = fs.xattrs_for_change(ino, inode)?;
            let before = attrs.len();
            attrs.retain(|a| !(a.index == index && a.name == suffix));
            if attrs.len() == before {
                return Err(Error::NotFound(format!(
                    "{path}: extended attribute {name}"
                )));
            }
            fs.store_xattrs(ino, inode, attrs)?;
            fs.recount_after_xattr(ino, inode)
        })
    }

    fn recount_after_xattr(&mut self, ino: u32, inode: &mut Inode) -> Result<()> {
        if self.is_fast_symlink_layout(inode) {
            let acl = if inode.file_acl() != 0 {
                self.block_size() / 512
            } else {
                0
            };
            inode.set_blocks_512(acl, self.huge_file());
            return Ok(());
        }
        let tree = self.map(ino, inode)?;
        if inode.has_flag(FL_EXTENTS) {
            self.recount_blocks(inode, &tree.extents)
        } else {
            let data: u64 =
                tree.extents.iter().map(|e| e.len).sum::<u64>() + tree.tree_blocks.len() as u64;
            let acl = u64::from(inode.file_acl() != 0);
            inode.set_blocks_512((data + acl) * (self.block_size() / 512), self.huge_file());
            Ok(())
        }
    }

    /// A fast symlink judged by layout alone (its block count is being changed).
    fn is_fast_symlink_layout(&self, inode: &Inode) -> bool {
        inode.is_symlink()
            && !inode.has_flag(FL_EXTENTS)
            && !inode.has_flag(FL_INLINE_DATA)
            && inode.size() < 60
    }

    pub fn get_xattr(&self, path: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let (index, suffix) = split_name(name)?;
        let ino = self.resolve(path)?;
        let inode = self.read_inode(ino)?;
        Ok(self
            .xattrs(&inode)?
            .into_iter()
            .find(|a| a.index == index && a.name == suffix)
            .map(|a| a.value))
    }
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8]) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Invalid("the source ended before the announced size".into())
        } else {
            Error::io_context("reading the source file", e)
        }
    })
}

fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io_context("reading the source file", e)),
        }
    }
}
