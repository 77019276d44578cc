//! Extended attributes, in the inode body and in one attribute block.
//!
//! Changing attributes rewrites the whole set: everything goes into the
//! inode body when it fits there, otherwise into one attribute block. A
//! block shared by several inodes is copied first (its reference count
//! drops by one).

use super::bytes::{put_u16, put_u32, slice, u16_at, u32_at};
use super::engine::Ext4Fs;
use super::inode::Inode;
use super::superblock::{compat, incompat};
use crate::block::BlockDevice;
use crate::{Error, Result};

const MAGIC: u32 = 0xEA02_0000;
const BLOCK_HEADER: usize = 32;

/// Name prefixes by `e_name_index`.
const PREFIXES: &[(u8, &str)] = &[
    (2, "system.posix_acl_access"),
    (3, "system.posix_acl_default"),
    (8, "system.richacl"),
    (1, "user."),
    (4, "trusted."),
    (6, "security."),
    (7, "system."),
];

/// One attribute: name index, name suffix, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Inode holding the value (`ea_inode`); 0 when the value is inline.
    pub value_inum: u32,
}

impl Xattr {
    pub fn full_name(&self) -> String {
        let prefix = PREFIXES
            .iter()
            .find(|(i, _)| *i == self.index)
            .map(|(_, p)| (*p).to_string())
            .unwrap_or_else(|| format!("index{}.", self.index));
        format!("{prefix}{}", String::from_utf8_lossy(&self.name))
    }

    fn entry_len(&self) -> usize {
        (16 + self.name.len() + 3) & !3
    }

    fn value_len(&self) -> usize {
        (self.value.len() + 3) & !3
    }
}

/// Splits a full name into index and suffix.
pub fn split_name(full: &str) -> Result<(u8, Vec<u8>)> {
    for (i, p) in PREFIXES {
        if p.ends_with('.') {
            if let Some(rest) = full.strip_prefix(p) {
                if rest.is_empty() || rest.len() > 255 {
                    return Err(Error::Invalid(format!(
                        "{full}: bad extended attribute name"
                    )));
                }
                return Ok((*i, rest.as_bytes().to_vec()));
            }
        } else if full == *p {
            return Ok((*i, Vec::new()));
        }
    }
    Err(Error::Invalid(format!(
        "{full}: extended attribute names start with user., trusted., security. or system."
    )))
}

/// Parses entries from `area[start..]`, values at `value_base + e_value_offs`.
fn parse_entries(area: &[u8], start: usize, value_base: usize, what: &str) -> Result<Vec<Xattr>> {
    let mut out = Vec::new();
    let mut off = start;
    loop {
        let head = slice(area, off, 4, what)?;
        if u32_at(head, 0) == 0 {
            break;
        }
        let e = slice(area, off, 16, what)?;
        let name_len = usize::from(e[0]);
        let index = e[1];
        let value_offs = usize::from(u16_at(e, 2));
        let value_inum = u32_at(e, 4);
        let value_size = u32_at(e, 8) as usize;
        let name = slice(area, off + 16, name_len, what)?.to_vec();
        let value = if value_size == 0 || value_inum != 0 {
            Vec::new()
        } else {
            slice(area, value_base + value_offs, value_size, what)?.to_vec()
        };
        if value_inum != 0 && value_size > 65536 {
            return Err(Error::corrupt(what, format!("value of {value_size} bytes")));
        }
        out.push(Xattr {
            index,
            name,
            // The size of a value kept in an inode, until it is read.
            value: if value_inum != 0 {
                vec![0; value_size]
            } else {
                value
            },
            value_inum,
        });
        off += (16 + name_len + 3) & !3;
        if out.len() > 4096 {
            return Err(Error::corrupt(what, "too many attributes"));
        }
    }
    Ok(out)
}

/// Lays `attrs` out into `area` (zeroed by the caller): entries from
/// `start`, values packed down from the end, offsets relative to `value_base`.
fn layout(area: &mut [u8], start: usize, value_base: usize, attrs: &[Xattr]) {
    let mut off = start;
    let mut vend = area.len();
    for a in attrs {
        let voff = if a.value.is_empty() {
            0
        } else {
            vend -= a.value_len();
            area[vend..vend + a.value.len()].copy_from_slice(&a.value);
            vend - value_base
        };
        area[off] = a.name.len() as u8;
        area[off + 1] = a.index;
        put_u16(area, off + 2, voff as u16);
        put_u32(area, off + 4, 0);
        put_u32(area, off + 8, a.value.len() as u32);
        put_u32(
            area,
            off + 12,
            mkext4::csum::xattr_entry_hash(&a.name, &a.value),
        );
        area[off + 16..off + 16 + a.name.len()].copy_from_slice(&a.name);
        off += a.entry_len();
    }
}

fn space_needed(attrs: &[Xattr]) -> usize {
    attrs
        .iter()
        .map(|a| a.entry_len() + a.value_len())
        .sum::<usize>()
        + 4
}

impl<D: BlockDevice> Ext4Fs<D> {
    /// Attributes in the inode body.
    fn ibody_xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let Some(s) = inode.xattr_area() else {
            return Ok(Vec::new());
        };
        if u32_at(&inode.raw, s) != MAGIC {
            return Ok(Vec::new());
        }
        parse_entries(
            &inode.raw,
            s + 4,
            s + 4,
            "ext4 in-inode extended attributes",
        )
    }

    /// Attributes in the inode's attribute block, and the block's reference count.
    fn block_xattrs(&self, inode: &Inode) -> Result<(Vec<Xattr>, u32)> {
        let b = inode.file_acl();
        if b == 0 {
            return Ok((Vec::new(), 0));
        }
        let what = format!("ext4 extended attribute block {b}");
        let buf = self.read_xattr_block(b)?;
        Ok((
            parse_entries(&buf, BLOCK_HEADER, 0, &what)?,
            u32_at(&buf, 4),
        ))
    }

    /// Every attribute of an inode, body first, as stored: values kept
    /// in an inode (`ea_inode`) are not read.
    pub(super) fn raw_xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut v = self.ibody_xattrs(inode)?;
        v.extend(self.block_xattrs(inode)?.0);
        Ok(v)
    }

    /// Every attribute of an inode, body first, with values kept in an
    /// inode read from it — on `ea_inode` filesystems; without the feature
    /// such a reference is corruption.
    pub(super) fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut v = self.raw_xattrs(inode)?;
        for a in &mut v {
            if a.value_inum == 0 {
                continue;
            }
            let what = format!("ext4 extended attribute {}", a.full_name());
            if !self.sb.has_incompat(incompat::EA_INODE) {
                return Err(Error::corrupt(
                    what,
                    format!(
                        "its value is in inode {}, but the filesystem lacks ea_inode",
                        a.value_inum
                    ),
                ));
            }
            let holder = self.read_inode(a.value_inum)?;
            if !holder.is_reg() || !holder.has_flag(super::inode::FL_EA_INODE) {
                return Err(Error::corrupt(
                    what,
                    format!("inode {} is not an attribute inode", a.value_inum),
                ));
            }
            if holder.size() != a.value.len() as u64 {
                return Err(Error::corrupt(
                    what,
                    format!(
                        "inode {} holds {} bytes, the entry says {}",
                        a.value_inum,
                        holder.size(),
                        a.value.len()
                    ),
                ));
            }
            let mut value = Vec::with_capacity(a.value.len());
            self.read_data(a.value_inum, &holder, &mut value)?;
            a.value = value;
        }
        Ok(v)
    }

    /// The attributes of `ino` for a change that rewrites or drops them:
    /// refused when a value lives in another inode, whose reference count
    /// this engine does not keep (dropping the entry would leak or orphan
    /// that inode).
    pub(super) fn xattrs_for_change(&self, ino: u32, inode: &Inode) -> Result<Vec<Xattr>> {
        let v = self.raw_xattrs(inode)?;
        if let Some(a) = v.iter().find(|a| a.value_inum != 0) {
            return Err(Error::unsupported(
                "ext4 extended attributes",
                format!(
                    "inode {ino} keeps the value of {} in inode {} (ea_inode); changing or removing it is not handled",
                    a.full_name(),
                    a.value_inum
                ),
            ));
        }
        Ok(v)
    }

    /// The `system.data` continuation of an inline-data inode.
    pub(super) fn inline_xattr_data(&self, inode: &Inode) -> Result<Option<Vec<u8>>> {
        Ok(self
            .ibody_xattrs(inode)?
            .into_iter()
            .find(|a| a.index == 7 && a.name == b"data" && a.value_inum == 0)
            .map(|a| a.value)
            .filter(|v| !v.is_empty()))
    }

    /// Replaces an inode's attribute set with `attrs` (inode staged by caller).
    pub(super) fn store_xattrs(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        mut attrs: Vec<Xattr>,
    ) -> Result<()> {
        if !attrs.is_empty() && !self.sb.has_compat(compat::EXT_ATTR) {
            return Err(Error::unsupported(
                "ext4 extended attributes",
                "the filesystem lacks the ext_attr feature",
            ));
        }
        if self.sb.has_incompat(incompat::EA_INODE) {
            return Err(Error::unsupported(
                "ext4 extended attributes",
                "ea_inode filesystems are not handled",
            ));
        }
        attrs.sort_by(|a, b| {
            (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name))
        });
        let bs = self.block_size() as usize;
        let (old_block_attrs, refcount) = self.block_xattrs(inode)?;
        let _ = old_block_attrs;
        let old_block = inode.file_acl();
        // In the body when everything fits there.
        let body = inode.xattr_area();
        let fits_body = body.is_some_and(|s| space_needed(&attrs) <= inode.raw.len() - s - 4);
        let (body_attrs, block_attrs) = if fits_body {
            (attrs, Vec::new())
        } else {
            (Vec::new(), attrs)
        };
        if let Some(s) = body {
            let area = &mut inode.raw[s..];
            area.fill(0);
            if !body_attrs.is_empty() {
                put_u32(area, 0, MAGIC);
                layout(area, 4, 4, &body_attrs);
            }
        }
        if block_attrs.is_empty() {
            if old_block != 0 {
                self.release_xattr_block(old_block, refcount)?;
                inode.set_file_acl(0);
            }
            return Ok(());
        }
        if space_needed(&block_attrs) > bs - BLOCK_HEADER {
            return Err(Error::NoSpace(format!(
                "extended attributes of inode {ino} need {} bytes, one block holds {}",
                space_needed(&block_attrs),
                bs - BLOCK_HEADER
            )));
        }
        let target = if old_block != 0 && refcount == 1 {
            old_block
        } else {
            if old_block != 0 {
                self.release_xattr_block(old_block, refcount)?;
            }
            let goal = self.inode_group(ino);
            self.alloc_blocks(1, goal)?[0].0
        };
        let mut buf = vec![0u8; bs];
        put_u32(&mut buf, 0, MAGIC);
        put_u32(&mut buf, 4, 1);
        put_u32(&mut buf, 8, 1);
        layout(&mut buf, BLOCK_HEADER, 0, &block_attrs);
        let hash = mkext4::csum::xattr_block_hash(
            block_attrs
                .iter()
                .map(|a| mkext4::csum::xattr_entry_hash(&a.name, &a.value)),
        );
        put_u32(&mut buf, 12, hash);
        self.seal_xattr_block(target, &mut buf);
        self.write_block(target, buf);
        inode.set_file_acl(target);
        Ok(())
    }

    fn seal_xattr_block(&self, b: u64, buf: &mut [u8]) {
        let seed = self.sb.metadata_csum().then_some(self.sb.csum_seed);
        super::csum::xattr_block_seal(buf, seed, b);
    }

    /// Reads extended-attribute block `b`, checking its header and (on
    /// `metadata_csum`) its checksum: every read goes through here.
    fn read_xattr_block(&self, b: u64) -> Result<Vec<u8>> {
        let what = || format!("ext4 extended attribute block {b}");
        let buf = self.read_block(b)?;
        if u32_at(&buf, 0) != MAGIC || u32_at(&buf, 8) != 1 {
            return Err(Error::corrupt(what(), "bad header"));
        }
        if self.sb.metadata_csum() && !super::csum::xattr_block_ok(&buf, self.sb.csum_seed, b) {
            return Err(Error::corrupt(what(), "checksum mismatch"));
        }
        Ok(buf)
    }

    /// Drops one reference to an attribute block, freeing it at zero.
    pub(super) fn release_xattr_block(&mut self, b: u64, refcount: u32) -> Result<()> {
        if refcount <= 1 {
            self.free_blocks_later([(b, 1)]);
        } else {
            let mut buf = self.read_xattr_block(b)?;
            put_u32(&mut buf, 4, refcount - 1);
            self.seal_xattr_block(b, &mut buf);
            self.write_block(b, buf);
        }
        Ok(())
    }

    /// Drops the inode's attribute block reference (when the inode dies).
    pub(super) fn drop_xattr_block(&mut self, inode: &Inode) -> Result<()> {
        let b = inode.file_acl();
        if b != 0 {
            let (_, refcount) = self.block_xattrs(inode)?;
            self.release_xattr_block(b, refcount)?;
        }
        Ok(())
    }

    /// Checks the attribute block's checksum before we change it.
    pub(super) fn check_xattr_block(&self, inode: &Inode) -> Result<()> {
        let b = inode.file_acl();
        if b != 0 {
            self.read_xattr_block(b)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_and_join() {
        let (i, n) = split_name("security.capability").unwrap();
        assert_eq!((i, n.as_slice()), (6, &b"capability"[..]));
        assert_eq!(
            split_name("system.posix_acl_access").unwrap(),
            (2, Vec::new())
        );
        assert!(split_name("bogus.x").is_err());
        let x = Xattr {
            index: 6,
            name: b"capability".to_vec(),
            value: vec![1],
            value_inum: 0,
        };
        assert_eq!(x.full_name(), "security.capability");
    }

    #[test]
    fn layout_parses_back() {
        let attrs = vec![
            Xattr {
                index: 1,
                name: b"a".to_vec(),
                value: b"hello".to_vec(),
                value_inum: 0,
            },
            Xattr {
                index: 6,
                name: b"capability".to_vec(),
                value: vec![0; 20],
                value_inum: 0,
            },
            Xattr {
                index: 1,
                name: b"empty".to_vec(),
                value: vec![],
                value_inum: 0,
            },
        ];
        let mut area = vec![0u8; 256];
        layout(&mut area, 32, 0, &attrs);
        assert_eq!(parse_entries(&area, 32, 0, "t").unwrap(), attrs);
    }
}
