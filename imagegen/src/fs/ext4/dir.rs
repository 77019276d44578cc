//! Directories: listing and lookup (linear, htree and inline-data), and
//! adding and removing names.
//!
//! Adding to an htree directory goes to the leaf the filesystem's hash
//! selects. A full leaf is split in two by hash (the new half appended to
//! the directory and indexed in the leaf's parent). Only when that parent
//! index is full too is the directory rewritten as a valid linear one
//! (index flag cleared, index blocks turned into empty directory blocks)
//! and the name added linearly; a later `e2fsck -D` may index it again.

use super::bytes::{u16_at, u32_at};
use super::dirent;
use super::engine::Ext4Fs;
use super::extent;
use super::hash;
use super::inode::{Inode, FL_EXTENTS, FL_INDEX, FL_INLINE_DATA};
use super::superblock::incompat;
use crate::block::BlockDevice;
use crate::fs::Extent;
use crate::{Error, Result};

/// One index block on the way down an htree.
struct DxLevel {
    phys: u64,
    /// Offset of the `limit`/`count` header in the block.
    count_off: usize,
    /// The entry followed.
    index: usize,
}

/// The way from the htree root to a leaf, for one name.
struct DxPath {
    version: u8,
    hash: u32,
    levels: Vec<DxLevel>,
    leaf: u64,
}

/// Where a name was found.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub ino: u32,
    /// Physical block and index of the record (None for inline directories).
    pub at: Option<(u64, usize)>,
}

impl<D: BlockDevice> Ext4Fs<D> {
    fn filetype(&self) -> bool {
        self.sb.has_incompat(incompat::FILETYPE)
    }

    /// The directory's blocks as `(logical, physical)`.
    pub(super) fn dir_blocks(&self, ino: u32, inode: &Inode) -> Result<Vec<(u64, u64)>> {
        let tree = self.map(ino, inode)?;
        let nblocks = inode.size().div_ceil(self.block_size());
        let mut out = Vec::new();
        for e in &tree.extents {
            for i in 0..e.len.min(nblocks.saturating_sub(e.logical)) {
                out.push((e.logical + i, e.physical + i));
            }
            // 2^20 blocks is a directory of gigabytes: not a real one.
            if out.len() > 1 << 20 {
                return Err(Error::corrupt(
                    format!("ext4 directory inode {ino}"),
                    "absurdly large",
                ));
            }
        }
        Ok(out)
    }

    /// Every record of a directory (including `.` and `..` when stored), as
    /// `(name, inode, file type, location)`.
    pub(super) fn dir_records(&self, ino: u32, inode: &Inode) -> Result<Vec<(Vec<u8>, Found)>> {
        let what = || format!("ext4 directory inode {ino}");
        if !inode.is_dir() {
            return Err(Error::Invalid(format!("inode {ino} is not a directory")));
        }
        let ft = self.filetype();
        let mut out = Vec::new();
        if inode.has_flag(FL_INLINE_DATA) {
            let parent = u32_at(inode.i_block(), 0);
            out.push((
                b"..".to_vec(),
                Found {
                    ino: parent,
                    at: None,
                },
            ));
            let mut areas = vec![inode.i_block()[4..].to_vec()];
            if let Some(extra) = self.inline_xattr_data(inode)? {
                areas.push(extra);
            }
            for area in areas {
                for e in dirent::parse(&area, ft, &what)? {
                    if e.ino != 0 {
                        out.push((
                            e.name(&area).to_vec(),
                            Found {
                                ino: e.ino,
                                at: None,
                            },
                        ));
                    }
                }
            }
            return Ok(out);
        }
        for (logical, phys) in self.dir_blocks(ino, inode)? {
            let buf = self.read_dir_block(ino, inode, logical, phys)?;
            for (i, e) in dirent::parse(&buf, ft, &what)?.iter().enumerate() {
                if e.ino != 0 {
                    out.push((
                        e.name(&buf).to_vec(),
                        Found {
                            ino: e.ino,
                            at: Some((phys, i)),
                        },
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Looks `name` up in directory `ino`; `.` and `..` work too.
    pub(super) fn dir_lookup(&self, ino: u32, inode: &Inode, name: &[u8]) -> Result<Option<Found>> {
        if name == b"." {
            return Ok(Some(Found { ino, at: None }));
        }
        Ok(self
            .dir_records(ino, inode)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f))
    }

    fn dir_seed(&self, ino: u32, inode: &Inode) -> Option<u32> {
        self.inode_seed(ino, inode)
    }

    /// Reads a directory block we are about to change, checking its checksum.
    pub(super) fn dir_block_for_change(
        &self,
        ino: u32,
        inode: &Inode,
        phys: u64,
    ) -> Result<Vec<u8>> {
        let buf = self.read_block(phys)?;
        if let Some(seed) = self.dir_seed(ino, inode) {
            if !dirent::checksum_ok(&buf, seed) {
                let g = self.inode_group(ino);
                return Err(Error::corrupt(
                    format!("ext4 directory block {phys} of inode {ino} (group {g})"),
                    "checksum mismatch",
                ));
            }
        }
        Ok(buf)
    }

    /// Reads any block of a directory, verifying it on `metadata_csum`: a
    /// leaf by its tail; an htree index node (a block without a tail in an
    /// indexed directory) by its `dx_tail`. Every directory read goes
    /// through here, [`dir_block_for_change`](Self::dir_block_for_change)
    /// or [`read_dx_block`](Self::read_dx_block).
    pub(super) fn read_dir_block(
        &self,
        ino: u32,
        inode: &Inode,
        logical: u64,
        phys: u64,
    ) -> Result<Vec<u8>> {
        let buf = self.read_block(phys)?;
        let Some(seed) = self.dir_seed(ino, inode) else {
            return Ok(buf);
        };
        let ok = if super::csum::dir_has_tail(&buf) {
            dirent::checksum_ok(&buf, seed)
        } else if inode.has_flag(FL_INDEX) {
            super::csum::dx_ok(&buf, seed, if logical == 0 { 0x20 } else { 8 })
        } else {
            false
        };
        if !ok {
            let g = self.inode_group(ino);
            return Err(Error::corrupt(
                format!("ext4 directory block {phys} of inode {ino} (group {g})"),
                "checksum mismatch",
            ));
        }
        Ok(buf)
    }

    /// Reads an htree index node (`count_off`: 0x20 for the root, 8
    /// below), verifying its `dx_tail` on `metadata_csum`.
    fn read_dx_block(
        &self,
        ino: u32,
        inode: &Inode,
        phys: u64,
        count_off: usize,
    ) -> Result<Vec<u8>> {
        let buf = self.read_block(phys)?;
        if let Some(seed) = self.dir_seed(ino, inode) {
            if !super::csum::dx_ok(&buf, seed, count_off) {
                return Err(Error::corrupt(
                    format!(
                        "ext4 htree index block {phys} of inode {ino} (group {})",
                        self.inode_group(ino)
                    ),
                    "checksum mismatch",
                ));
            }
        }
        Ok(buf)
    }

    pub(super) fn check_dir_changeable(&self, ino: u32, inode: &Inode) -> Result<()> {
        if inode.has_flag(FL_INLINE_DATA) {
            return Err(Error::unsupported(
                "ext4 change",
                format!("directory inode {ino} keeps its entries inline (inline_data); changing it is not handled"),
            ));
        }
        if !inode.has_flag(FL_EXTENTS) {
            return Err(Error::unsupported(
                "ext4 change",
                format!(
                    "directory inode {ino} uses a legacy block map; changing it is not handled"
                ),
            ));
        }
        Ok(())
    }

    /// Removes the record `name` from directory `ino` (which must have it).
    pub(super) fn dir_remove(&mut self, ino: u32, inode: &mut Inode, name: &[u8]) -> Result<()> {
        self.check_dir_changeable(ino, inode)?;
        let found = self
            .dir_lookup(ino, inode, name)?
            .ok_or_else(|| Error::NotFound(String::from_utf8_lossy(name).into_owned()))?;
        let (phys, i) = found
            .at
            .ok_or_else(|| Error::Invalid("cannot remove '.'".into()))?;
        let mut buf = self.dir_block_for_change(ino, inode, phys)?;
        let entries = dirent::parse(&buf, self.filetype(), &|| {
            format!("ext4 directory inode {ino}")
        })?;
        dirent::remove(&mut buf, &entries, i);
        dirent::seal(&mut buf, self.dir_seed(ino, inode));
        self.write_block(phys, buf);
        Ok(())
    }

    /// Adds `name → child` to directory `ino` (the name must be absent).
    /// Updates `inode` (size, blocks, flags) and stages it.
    pub(super) fn dir_add(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        name: &[u8],
        child: u32,
        ftype: u8,
    ) -> Result<()> {
        self.check_dir_changeable(ino, inode)?;
        let ft = self.filetype();
        let seed = self.dir_seed(ino, inode);
        let what = || format!("ext4 directory inode {ino}");
        let blocks = self.dir_blocks(ino, inode)?;
        if inode.has_flag(FL_INDEX) && self.sb.has_compat(super::superblock::compat::DIR_INDEX) {
            let path = self.htree_path(ino, inode, &blocks, name)?;
            let leaf = path.leaf;
            let phys = blocks
                .iter()
                .find(|(l, _)| *l == leaf)
                .map(|(_, p)| *p)
                .ok_or_else(|| {
                    Error::corrupt(what(), format!("htree points at missing block {leaf}"))
                })?;
            let mut buf = self.dir_block_for_change(ino, inode, phys)?;
            let entries = dirent::parse(&buf, ft, &what)?;
            if dirent::insert(&mut buf, &entries, child, name, ftype, ft) {
                dirent::seal(&mut buf, seed);
                self.write_block(phys, buf);
                return Ok(());
            }
            if self.split_leaf(ino, inode, &blocks, &path, phys, name, child, ftype)? {
                return Ok(());
            }
            self.unindex(ino, inode, &blocks)?;
        } else if inode.has_flag(FL_INDEX) {
            // dir_index is off: the kernel treats the directory as linear,
            // and so do we after dropping the stale flag.
            self.unindex(ino, inode, &blocks)?;
        }
        for &(_, phys) in &blocks {
            let mut buf = self.dir_block_for_change(ino, inode, phys)?;
            let entries = dirent::parse(&buf, ft, &what)?;
            if dirent::insert(&mut buf, &entries, child, name, ftype, ft) {
                dirent::seal(&mut buf, seed);
                self.write_block(phys, buf);
                self.write_inode(ino, inode)?;
                return Ok(());
            }
        }
        // No room: grow the directory by one block.
        let bs = self.block_size() as usize;
        let mut buf = dirent::empty_block(bs, seed);
        let entries = dirent::parse(&buf, ft, &what)?;
        let inserted = dirent::insert(&mut buf, &entries, child, name, ftype, ft);
        debug_assert!(inserted, "a name always fits an empty block");
        dirent::seal(&mut buf, seed);
        self.append_dir_block(ino, inode, &blocks, buf)?;
        self.write_inode(ino, inode)
    }

    /// Adds `buf` as a new last block of the directory (size, extents and
    /// block count updated in `inode`, which the caller stages).
    fn append_dir_block(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        blocks: &[(u64, u64)],
        buf: Vec<u8>,
    ) -> Result<u64> {
        let logical = inode.size().div_ceil(self.block_size());
        let goal = blocks.last().map(|(_, p)| *p).unwrap_or(0);
        let goal_group =
            ((goal.saturating_sub(self.sb.first_data_block)) / self.sb.blocks_per_group) as u32;
        let runs = self.alloc_blocks(1, goal_group)?;
        let phys = runs[0].0;
        self.write_block(phys, buf);
        let tree = self.map(ino, inode)?;
        let mut extents = tree.extents.clone();
        match extents.last_mut() {
            Some(e)
                if !e.uninit
                    && e.logical + e.len == logical
                    && e.physical + e.len == phys
                    && e.len < extent::MAX_LEN =>
            {
                e.len += 1
            }
            _ => extents.push(Extent {
                logical,
                physical: phys,
                len: 1,
                uninit: false,
            }),
        }
        self.set_extents(ino, inode, &extents, &tree.tree_blocks)?;
        inode.set_size(inode.size() + self.block_size());
        self.recount_blocks(inode, &extents)?;
        Ok(logical)
    }

    /// The way down an htree to the leaf `name` hashes to.
    fn htree_path(
        &self,
        ino: u32,
        inode: &Inode,
        blocks: &[(u64, u64)],
        name: &[u8],
    ) -> Result<DxPath> {
        let what = || format!("ext4 htree directory inode {ino}");
        let phys_of = |l: u64| blocks.iter().find(|(x, _)| *x == l).map(|(_, p)| *p);
        let root_phys = phys_of(0).ok_or_else(|| Error::corrupt(what(), "no block 0"))?;
        let root = self.read_dx_block(ino, inode, root_phys, 0x20)?;
        let info_len = usize::from(root[0x1D]);
        let levels = root[0x1E];
        let max_levels = if self.sb.has_incompat(incompat::LARGEDIR) {
            3
        } else {
            2
        };
        if u32_at(&root, 0x18) != 0 || info_len != 8 || levels >= max_levels {
            return Err(Error::corrupt(what(), "bad dx_root header"));
        }
        let mut version = root[0x1C];
        if version <= hash::TEA && self.sb.flags & 2 != 0 {
            version += 3;
        }
        let (h, _) = hash::dirhash(version, &self.sb.hash_seed, name).ok_or_else(|| {
            Error::unsupported(
                "ext4 htree",
                format!("hash version {version} in directory inode {ino}"),
            )
        })?;
        let mut path = DxPath {
            version,
            hash: h,
            levels: Vec::new(),
            leaf: 0,
        };
        let mut node = root;
        let mut phys = root_phys;
        let mut at = 0x20usize;
        for level in 0..=levels {
            let limit = usize::from(u16_at(&node, at));
            let count = usize::from(u16_at(&node, at + 2));
            if count == 0 || count > limit || at + limit * 8 > node.len() {
                return Err(Error::corrupt(
                    what(),
                    format!("bad dx count {count}/{limit}"),
                ));
            }
            let mut index = 0;
            for i in 1..count {
                if u32_at(&node, at + i * 8) > h {
                    break;
                }
                index = i;
            }
            let pick = u64::from(u32_at(&node, at + index * 8 + 4));
            path.levels.push(DxLevel {
                phys,
                count_off: at,
                index,
            });
            if level == levels {
                path.leaf = pick;
                return Ok(path);
            }
            phys = phys_of(pick)
                .ok_or_else(|| Error::corrupt(what(), format!("dx node {pick} missing")))?;
            node = self.read_dx_block(ino, inode, phys, 8)?;
            at = 8;
        }
        unreachable!("the loop returns at the last level")
    }

    /// Splits the full leaf `leaf_phys` in two by hash, adds the new half
    /// to the parent index and `name` to its half. `Ok(false)` (nothing
    /// changed) when the parent index is full or the halves cannot take
    /// the name.
    #[allow(clippy::too_many_arguments)]
    fn split_leaf(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        blocks: &[(u64, u64)],
        path: &DxPath,
        leaf_phys: u64,
        name: &[u8],
        child: u32,
        ftype: u8,
    ) -> Result<bool> {
        let what = || format!("ext4 htree directory inode {ino}");
        let ft = self.filetype();
        let seed = self.dir_seed(ino, inode);
        let bs = self.block_size() as usize;
        let parent = path.levels.last().expect("a path has at least the root");
        let mut pbuf = self.read_dx_block(ino, inode, parent.phys, parent.count_off)?;
        let limit = usize::from(u16_at(&pbuf, parent.count_off));
        let count = usize::from(u16_at(&pbuf, parent.count_off + 2));
        if count >= limit {
            return Ok(false);
        }
        let leaf = self.dir_block_for_change(ino, inode, leaf_phys)?;
        let mut live: Vec<(u32, u32, u32, Vec<u8>, u8)> = Vec::new();
        for e in dirent::parse(&leaf, ft, &what)? {
            if e.ino != 0 {
                let n = e.name(&leaf).to_vec();
                let (h, m) = hash::dirhash(path.version, &self.sb.hash_seed, &n)
                    .expect("version checked by htree_path");
                live.push((h, m, e.ino, n, e.ftype));
            }
        }
        if live.len() < 2 {
            return Ok(false);
        }
        live.sort();
        let split = live.len() / 2;
        let hash2 = live[split].0;
        let continued = u32::from(live[split - 1].0 == hash2);
        let stored = hash2 | continued;
        let pack = |part: &[(u32, u32, u32, Vec<u8>, u8)]| -> Option<Vec<u8>> {
            let mut buf = dirent::empty_block(bs, seed);
            for (_, _, i, n, t) in part {
                let entries = dirent::parse(&buf, ft, &|| String::new()).ok()?;
                if !dirent::insert(&mut buf, &entries, *i, n, *t, ft) {
                    return None;
                }
            }
            Some(buf)
        };
        let (Some(mut lower), Some(mut upper)) = (pack(&live[..split]), pack(&live[split..]))
        else {
            return Ok(false);
        };
        let target = if path.hash >= stored {
            &mut upper
        } else {
            &mut lower
        };
        let entries = dirent::parse(target, ft, &what)?;
        if !dirent::insert(target, &entries, child, name, ftype, ft) {
            return Ok(false);
        }
        dirent::seal(&mut lower, seed);
        dirent::seal(&mut upper, seed);
        self.write_block(leaf_phys, lower);
        let new_logical = self.append_dir_block(ino, inode, blocks, upper)?;
        // Open a slot after the entry we came through.
        let slot = parent.count_off + (parent.index + 1) * 8;
        let end = parent.count_off + count * 8;
        pbuf.copy_within(slot..end, slot + 8);
        super::bytes::put_u32(&mut pbuf, slot, stored);
        super::bytes::put_u32(&mut pbuf, slot + 4, new_logical as u32);
        super::bytes::put_u16(&mut pbuf, parent.count_off + 2, (count + 1) as u16);
        super::csum::dx_seal(&mut pbuf, seed, parent.count_off);
        self.write_block(parent.phys, pbuf);
        self.write_inode(ino, inode)?;
        Ok(true)
    }

    /// Turns an htree directory into a linear one.
    fn unindex(&mut self, ino: u32, inode: &mut Inode, blocks: &[(u64, u64)]) -> Result<()> {
        let seed = self.dir_seed(ino, inode);
        let bs = self.block_size() as usize;
        let ft = self.filetype();
        for &(logical, phys) in blocks {
            let buf = self.read_block(phys)?;
            if logical == 0 {
                let parent = u32_at(&buf, 12);
                self.write_block(phys, dirent::dots_block(bs, ino, parent, seed, ft));
            } else if u32_at(&buf, 0) == 0 && usize::from(u16_at(&buf, 4)) == bs {
                // An index node disguised as one empty record.
                self.write_block(phys, dirent::empty_block(bs, seed));
            }
        }
        inode.set_flags(inode.flags() & !FL_INDEX);
        self.write_inode(ino, inode)
    }

    /// Replaces an inode's extent tree by one for `extents`, freeing the old
    /// tree blocks and allocating new ones.
    pub(super) fn set_extents(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        extents: &[Extent],
        old_tree: &[u64],
    ) -> Result<()> {
        self.free_blocks_later(old_tree.iter().map(|&b| (b, 1)));
        let need = extent::blocks_needed(extents.len(), self.block_size());
        let goal = self.inode_group(ino);
        let mut tree_blocks = Vec::new();
        for (b, l) in self.alloc_blocks(need, goal)? {
            tree_blocks.extend(b..b + l);
        }
        let built = extent::build(
            extents,
            &tree_blocks,
            self.block_size(),
            self.inode_seed(ino, inode),
        );
        for (b, buf) in built.blocks {
            self.write_block(b, buf);
        }
        inode.i_block_mut().copy_from_slice(&built.root);
        inode.set_flags(inode.flags() | FL_EXTENTS);
        Ok(())
    }

    /// Sets `i_blocks` from the data extents, tree size and xattr block.
    pub(super) fn recount_blocks(&self, inode: &mut Inode, extents: &[Extent]) -> Result<()> {
        let data: u64 = extents.iter().map(|e| e.len).sum();
        let tree = extent::blocks_needed(extents.len(), self.block_size());
        let acl = u64::from(inode.file_acl() != 0);
        let total = (data + tree + acl) * (self.block_size() / 512);
        if !inode.set_blocks_512(total, self.huge_file()) {
            return Err(Error::NoSpace(
                "file too large for this filesystem's block count field".into(),
            ));
        }
        Ok(())
    }
}
