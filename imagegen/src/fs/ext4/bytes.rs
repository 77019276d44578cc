//! Little-endian field access on raw on-disk buffers.
//!
//! Callers pass offsets that are constants of the format inside buffers of a
//! known minimum size (a superblock, an inode, a block), or offsets they have
//! bounds-checked themselves; the `get_*` variants do the check for offsets
//! that come from disk.

use crate::{Error, Result};

pub fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// A bounds-checked slice for offsets and lengths read from disk.
pub fn slice<'a>(b: &'a [u8], off: usize, len: usize, what: &str) -> Result<&'a [u8]> {
    off.checked_add(len)
        .and_then(|end| b.get(off..end))
        .ok_or_else(|| {
            Error::corrupt(
                what,
                format!(
                    "{len} bytes at offset {off} overrun a {}-byte structure",
                    b.len()
                ),
            )
        })
}
