//! Rename, device nodes, inode flags and truncation: the operations the
//! stages need beyond create/replace/remove. Each runs as one transaction.

use super::dirent;
use super::engine::Ext4Fs;
use super::inode::*;
use super::ops::ftype_of;
use crate::block::BlockDevice;
use crate::fs::{Extent, FileKind, NewAttrs};
use crate::{Error, Result};

/// Inode flags a user may turn on and off, by the words `stat` shows.
const SETTABLE: &[(u32, &str)] = &[
    (0x8, "sync"),
    (0x10, "immutable"),
    (0x20, "append"),
    (0x40, "nodump"),
    (0x80, "noatime"),
    (0x1_0000, "dirsync"),
    (0x2_0000, "topdir"),
];

/// Deepest directory nesting followed when checking that a directory does
/// not move below itself.
const MAX_DEPTH: usize = 4096;

impl<D: BlockDevice> Ext4Fs<D> {
    /// Renames `from` to `to` like `rename(2)` (see [`crate::fs::Filesystem::rename`]).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.change(|fs| fs.rename_tx(from, to))
    }

    fn rename_tx(&mut self, from: &str, to: &str) -> Result<()> {
        let src = self.resolve_parent_required(from)?;
        let dst = self.resolve_parent_required(to)?;
        let src_dir = self.read_inode(src.dir)?;
        let found = self
            .dir_lookup(src.dir, &src_dir, &src.name)?
            .ok_or_else(|| Error::NotFound(from.to_string()))?;
        if found.at.is_none() {
            return Err(Error::Invalid(format!("{from}: cannot rename this entry")));
        }
        let ino = found.ino;
        let mut inode = self.read_inode(ino)?;
        self.refuse_inline(ino, &inode, from)?;
        let moving_dir = inode.is_dir();
        if moving_dir && dst.dir != src.dir {
            self.refuse_move_below_itself(ino, dst.dir, to)?;
        }
        let dst_dir = self.read_inode(dst.dir)?;
        self.check_dir_changeable(src.dir, &src_dir)?;
        self.check_dir_changeable(dst.dir, &dst_dir)?;
        if let Some(old) = self.dir_lookup(dst.dir, &dst_dir, &dst.name)? {
            if old.ino == ino {
                // Two names of one inode: rename(2) does nothing.
                return Ok(());
            }
            let target = self.read_inode(old.ino)?;
            match (moving_dir, target.is_dir()) {
                (true, false) => {
                    return Err(Error::AlreadyExists(format!("{to} (not a directory)")))
                }
                (false, true) => return Err(Error::AlreadyExists(format!("{to} (a directory)"))),
                _ => {}
            }
            let mut d = self.read_inode(dst.dir)?;
            // Non-recursive: a directory in the way must be empty.
            self.remove_tx(&dst, &mut d, false, to)?;
            self.write_inode(dst.dir, &mut d)?;
        }
        let mut s = self.read_inode(src.dir)?;
        self.dir_remove(src.dir, &mut s, &src.name)?;
        self.touch_dir(&mut s);
        if moving_dir && src.dir != dst.dir {
            let links = s.links();
            if links > 2 {
                s.set_links(links - 1);
            }
        }
        self.write_inode(src.dir, &mut s)?;
        let mut d = self.read_inode(dst.dir)?;
        if moving_dir && src.dir != dst.dir {
            self.check_subdir_room(&d, to)?;
        }
        self.dir_add(dst.dir, &mut d, &dst.name, ino, ftype_of(&inode))?;
        if moving_dir && src.dir != dst.dir {
            let links = d.links();
            if links != 1 {
                d.set_links(if links + 1 >= super::ops::LINK_MAX {
                    1
                } else {
                    links + 1
                });
            }
            self.set_dotdot(ino, &inode, dst.dir)?;
        }
        self.touch_dir(&mut d);
        self.write_inode(dst.dir, &mut d)?;
        let mut inode_now = self.read_inode(ino)?;
        inode_now.set_time(TimeField::Ctime, self.clock());
        inode = inode_now;
        self.write_inode(ino, &mut inode)
    }

    /// Refuses moving directory `ino` into `dest` when `dest` is `ino`
    /// itself or below it (walking `..` up to the root, bounded).
    fn refuse_move_below_itself(&self, ino: u32, dest: u32, to: &str) -> Result<()> {
        let mut cur = dest;
        for _ in 0..MAX_DEPTH {
            if cur == ino {
                return Err(Error::Invalid(format!(
                    "{to}: a directory cannot move below itself"
                )));
            }
            if cur == super::ops::ROOT {
                return Ok(());
            }
            let dir = self.read_inode(cur)?;
            let up = self
                .dir_lookup(cur, &dir, b"..")?
                .ok_or_else(|| {
                    Error::corrupt(format!("ext4 directory inode {cur}"), "no '..' entry")
                })?
                .ino;
            cur = up;
        }
        Err(Error::corrupt(
            format!("ext4 directory inode {dest}"),
            format!("more than {MAX_DEPTH} levels below the root, or a cycle"),
        ))
    }

    /// Points directory `ino`'s `..` record at `parent`.
    fn set_dotdot(&mut self, ino: u32, inode: &Inode, parent: u32) -> Result<()> {
        let blocks = self.dir_blocks(ino, inode)?;
        let phys = blocks
            .first()
            .filter(|(l, _)| *l == 0)
            .map(|(_, p)| *p)
            .ok_or_else(|| Error::corrupt(format!("ext4 directory inode {ino}"), "no block 0"))?;
        let mut buf = self.dir_block_for_change(ino, inode, phys)?;
        let entries = dirent::parse(
            &buf,
            self.sb.has_incompat(super::superblock::incompat::FILETYPE),
            &|| format!("ext4 directory inode {ino}"),
        )?;
        let dotdot = entries
            .get(1)
            .filter(|e| e.name(&buf) == b"..")
            .ok_or_else(|| {
                Error::corrupt(
                    format!("ext4 directory inode {ino}"),
                    "'..' is not the second record",
                )
            })?;
        super::bytes::put_u32(&mut buf, dotdot.off, parent);
        dirent::seal(&mut buf, self.inode_seed(ino, inode));
        self.write_block(phys, buf);
        Ok(())
    }

    /// Creates a device node, FIFO or socket.
    pub fn mknod(
        &mut self,
        path: &str,
        kind: FileKind,
        major: u32,
        minor: u32,
        attrs: &NewAttrs,
    ) -> Result<()> {
        let (ifmt, ftype) = match kind {
            FileKind::CharDevice => (S_IFCHR, 3),
            FileKind::BlockDevice => (S_IFBLK, 4),
            FileKind::Fifo => (S_IFIFO, 5),
            FileKind::Socket => (S_IFSOCK, 6),
            _ => {
                return Err(Error::Invalid(format!(
                    "{path}: mknod makes devices, FIFOs and sockets only"
                )))
            }
        };
        if major > 0xFFF || minor > 0xF_FFFF {
            return Err(Error::Invalid(format!(
                "{path}: device {major}:{minor} does not fit (major < 4096, minor < 1048576)"
            )));
        }
        self.change(|fs| {
            let t = fs.resolve_parent_required(path)?;
            let mut dir = fs.read_inode(t.dir)?;
            if fs.dir_lookup(t.dir, &dir, &t.name)?.is_some() {
                return Err(Error::AlreadyExists(path.to_string()));
            }
            fs.check_dir_changeable(t.dir, &dir)?;
            fs.check_time(&fs.new_inode(ifmt, &NewAttrs::default()), attrs.mtime, path)?;
            let ino = fs.alloc_inode(fs.inode_group(t.dir), false)?;
            let mut inode =
                fs.new_inode(ifmt | (attrs.mode.unwrap_or(0o644) & 0o7777) as u16, attrs);
            inode.set_links(1);
            if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
                // The kernel's encodings: old (8:8 bits) in word 0 when both
                // fit, else new (12:20 bits, minor split) in word 1.
                let blk = inode.i_block_mut();
                if major < 256 && minor < 256 {
                    super::bytes::put_u32(blk, 0, (major << 8) | minor);
                } else {
                    let new = (minor & 0xFF) | (major << 8) | ((minor & !0xFF) << 12);
                    super::bytes::put_u32(blk, 4, new);
                }
            }
            fs.write_inode(ino, &mut inode)?;
            fs.dir_add(t.dir, &mut dir, &t.name, ino, ftype)?;
            fs.touch_dir(&mut dir);
            fs.write_inode(t.dir, &mut dir)
        })
    }

    /// Turns on the flags named in `set` and off those in `clear`.
    pub fn set_flags(&mut self, path: &str, set: &[&str], clear: &[&str]) -> Result<()> {
        let bits = |words: &[&str]| -> Result<u32> {
            let mut out = 0;
            for w in words {
                match SETTABLE.iter().find(|(_, n)| n == w) {
                    Some((b, _)) => out |= b,
                    None => {
                        let known: Vec<&str> = SETTABLE.iter().map(|(_, n)| *n).collect();
                        return Err(Error::Invalid(format!(
                            "{path}: flag {w:?} cannot be set here (settable: {})",
                            known.join(", ")
                        )));
                    }
                }
            }
            Ok(out)
        };
        let (on, off) = (bits(set)?, bits(clear)?);
        if on & off != 0 {
            return Err(Error::Invalid(format!(
                "{path}: a flag cannot be both set and cleared"
            )));
        }
        self.modify(path, |_, _, i| {
            i.set_flags((i.flags() | on) & !off);
            Ok(())
        })
    }

    /// Cuts the regular file at `path` to `size` bytes or extends it with a hole.
    pub fn truncate(&mut self, path: &str, size: u64) -> Result<()> {
        self.change(|fs| {
            let ino = fs.resolve(path)?;
            let mut inode = fs.read_inode(ino)?;
            if !inode.is_reg() {
                return Err(Error::Invalid(format!("{path}: not a regular file")));
            }
            fs.refuse_inline(ino, &inode, path)?;
            let bs = fs.block_size();
            if size > (1u64 << 32) * bs - 1 {
                return Err(Error::Invalid(format!(
                    "{path}: {size} bytes is beyond the format's largest file"
                )));
            }
            if size > u64::from(u32::MAX)
                && !fs
                    .sb
                    .has_ro_compat(super::superblock::ro_compat::LARGE_FILE)
            {
                return Err(Error::unsupported(
                    "ext4 file size",
                    format!("{path}: files over 4 GiB need the large_file feature"),
                ));
            }
            let old = inode.size();
            let tree = fs.map_all(ino, &inode)?;
            let keep_blocks = size.div_ceil(bs);
            let mut kept: Vec<Extent> = Vec::new();
            let mut freed: Vec<(u64, u64)> = Vec::new();
            for e in &tree.extents {
                if e.logical >= keep_blocks {
                    freed.push((e.physical, e.len));
                } else if e.logical + e.len > keep_blocks {
                    let n = keep_blocks - e.logical;
                    kept.push(Extent { len: n, ..*e });
                    freed.push((e.physical + n, e.len - n));
                } else {
                    kept.push(*e);
                }
            }
            fs.free_blocks_later(freed);
            fs.set_extents(ino, &mut inode, &kept, &tree.tree_blocks)?;
            inode.set_size(size);
            fs.recount_blocks(&mut inode, &kept)?;
            let now = fs.clock();
            inode.set_time(TimeField::Mtime, now);
            inode.set_time(TimeField::Ctime, now);
            fs.write_inode(ino, &mut inode)?;
            // Bytes between the new end and its block's end must read as
            // zeros if the file grows again: clear them in the last kept block.
            let edge = size.min(old);
            if edge % bs != 0 {
                let lb = edge / bs;
                if let Some(e) = kept
                    .iter()
                    .find(|e| !e.uninit && e.logical <= lb && lb < e.logical + e.len)
                {
                    let phys = e.physical + (lb - e.logical);
                    let mut buf = vec![0u8; bs as usize];
                    fs.stream(
                        &[Extent {
                            logical: 0,
                            physical: phys,
                            len: 1,
                            uninit: false,
                        }],
                        bs,
                        &mut &mut buf[..],
                    )?;
                    buf[(edge % bs) as usize..].fill(0);
                    // Last: a staged patch cannot be undone inside a batch.
                    fs.write_data(phys, &buf)?;
                }
            }
            Ok(())
        })
    }

    /// Checks a directory can take one more subdirectory link.
    fn check_subdir_room(&self, dir: &Inode, path: &str) -> Result<()> {
        if dir.links() >= super::ops::LINK_MAX - 1
            && !self
                .sb
                .has_ro_compat(super::superblock::ro_compat::DIR_NLINK)
            && dir.links() != 1
        {
            return Err(Error::NoSpace(format!(
                "{path}: the parent has too many subdirectories"
            )));
        }
        Ok(())
    }
}
