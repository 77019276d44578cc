//! Directory blocks: parsing, inserting into and removing from one block of
//! `ext4_dir_entry_2` records, and the `metadata_csum` tail.

use super::bytes::{put_u16, put_u32, u16_at, u32_at};
use crate::{Error, Result};

pub const FT_UNKNOWN: u8 = 0;
pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_SYMLINK: u8 = 7;
const TAIL_LEN: usize = 12;

/// One record of a directory block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub off: usize,
    pub ino: u32,
    pub rec_len: usize,
    pub name_len: usize,
    pub ftype: u8,
}

impl Entry {
    pub fn name<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.off + 8..self.off + 8 + self.name_len]
    }
    /// Bytes this record really needs.
    fn used(&self) -> usize {
        if self.ino == 0 {
            0
        } else {
            need(self.name_len)
        }
    }
}

/// Record length for a name of `name_len` bytes.
pub fn need(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

fn is_tail(buf: &[u8], off: usize) -> bool {
    off + TAIL_LEN == buf.len()
        && u32_at(buf, off) == 0
        && u16_at(buf, off + 4) == TAIL_LEN as u16
        && buf[off + 6] == 0
        && buf[off + 7] == 0xDE
}

/// Parses the records of `buf` (a block, or an inline-data area), stopping
/// at a checksum tail. `filetype`: whether byte 7 is a file type (else the
/// high byte of the name length).
pub fn parse(buf: &[u8], filetype: bool, what: &dyn Fn() -> String) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        if is_tail(buf, off) {
            break;
        }
        if off + 8 > buf.len() {
            return Err(Error::corrupt(
                what(),
                format!("truncated entry at offset {off}"),
            ));
        }
        let ino = u32_at(buf, off);
        let rec_len = usize::from(u16_at(buf, off + 4));
        let (name_len, ftype) = if filetype {
            (usize::from(buf[off + 6]), buf[off + 7])
        } else {
            (usize::from(u16_at(buf, off + 6)), FT_UNKNOWN)
        };
        if rec_len < 8 || rec_len % 4 != 0 || off + rec_len > buf.len() || 8 + name_len > rec_len {
            return Err(Error::corrupt(
                what(),
                format!(
                    "bad entry at offset {off} (record length {rec_len}, name length {name_len})"
                ),
            ));
        }
        out.push(Entry {
            off,
            ino,
            rec_len,
            name_len,
            ftype,
        });
        off += rec_len;
    }
    Ok(out)
}

/// Whether the block carries a tail, and its checksum is right.
pub fn checksum_ok(buf: &[u8], seed: u32) -> bool {
    super::csum::dir_leaf_ok(buf, seed)
}

/// Writes the tail (when `seed` is given) with its checksum.
pub fn seal(buf: &mut [u8], seed: Option<u32>) {
    super::csum::dir_leaf_seal(buf, seed)
}

/// Space for records: the block minus the tail on `metadata_csum`.
pub fn payload(block_size: usize, csum: bool) -> usize {
    block_size - if csum { TAIL_LEN } else { 0 }
}

fn put_entry(
    buf: &mut [u8],
    off: usize,
    ino: u32,
    rec_len: usize,
    name: &[u8],
    ftype: u8,
    filetype: bool,
) {
    put_u32(buf, off, ino);
    put_u16(buf, off + 4, rec_len as u16);
    if filetype {
        buf[off + 6] = name.len() as u8;
        buf[off + 7] = ftype;
    } else {
        put_u16(buf, off + 6, name.len() as u16);
    }
    buf[off + 8..off + 8 + name.len()].copy_from_slice(name);
    // Zero the name's padding so the block's bytes are deterministic.
    let end = (off + need(name.len())).min(off + rec_len);
    buf[off + 8 + name.len()..end].fill(0);
}

/// Adds a record to a block if it has room; returns whether it did.
pub fn insert(
    buf: &mut [u8],
    entries: &[Entry],
    ino: u32,
    name: &[u8],
    ftype: u8,
    filetype: bool,
) -> bool {
    let n = need(name.len());
    for e in entries {
        let used = e.used();
        if e.rec_len - used < n {
            continue;
        }
        if e.ino == 0 {
            put_entry(buf, e.off, ino, e.rec_len, name, ftype, filetype);
        } else {
            put_u16(buf, e.off + 4, used as u16);
            put_entry(
                buf,
                e.off + used,
                ino,
                e.rec_len - used,
                name,
                ftype,
                filetype,
            );
        }
        return true;
    }
    false
}

/// Removes record `i`, merging its space into the previous record (or
/// marking it unused when it is the block's first).
pub fn remove(buf: &mut [u8], entries: &[Entry], i: usize) {
    let e = entries[i];
    if i == 0 {
        put_u32(buf, e.off, 0);
    } else {
        let p = entries[i - 1];
        put_u16(buf, p.off + 4, (p.rec_len + e.rec_len) as u16);
    }
}

/// An empty directory block.
pub fn empty_block(block_size: usize, seed: Option<u32>) -> Vec<u8> {
    let mut buf = vec![0u8; block_size];
    put_u16(&mut buf, 4, payload(block_size, seed.is_some()) as u16);
    seal(&mut buf, seed);
    buf
}

/// The first block of a directory: `.` and `..`.
pub fn dots_block(
    block_size: usize,
    me: u32,
    parent: u32,
    seed: Option<u32>,
    filetype: bool,
) -> Vec<u8> {
    let mut buf = vec![0u8; block_size];
    put_entry(&mut buf, 0, me, 12, b".", FT_DIR, filetype);
    let rest = payload(block_size, seed.is_some()) - 12;
    put_entry(&mut buf, 12, parent, rest, b"..", FT_DIR, filetype);
    seal(&mut buf, seed);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn what() -> String {
        "test block".into()
    }

    #[test]
    fn insert_and_remove_keep_the_block_valid() {
        let mut b = dots_block(1024, 12, 2, Some(5), true);
        assert!(checksum_ok(&b, 5));
        for i in 0..40u32 {
            let e = parse(&b, true, &what).unwrap();
            let name = format!("file{i:03}");
            let ok = insert(&mut b, &e, 100 + i, name.as_bytes(), FT_REG, true);
            seal(&mut b, Some(5));
            if !ok {
                assert!(i > 30, "block filled after {i} names");
                break;
            }
        }
        let e = parse(&b, true, &what).unwrap();
        assert!(checksum_ok(&b, 5));
        remove(&mut b, &e, 3);
        let after = parse(&b, true, &what).unwrap();
        assert_eq!(after.len(), e.len() - 1);
        assert_eq!(after.iter().map(|x| x.rec_len).sum::<usize>(), 1012);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut b = vec![0xFFu8; 64];
        assert!(parse(&b, true, &what).is_err());
        b[4] = 4;
        b[5] = 0;
        assert!(parse(&b, true, &what).is_err());
    }
}
