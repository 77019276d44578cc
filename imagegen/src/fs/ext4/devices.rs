//! Device numbers of device-node inodes, which [`Stat`](crate::fs::Stat)
//! does not carry: what repacking a filesystem into a new one needs.

use super::inode::{S_IFBLK, S_IFCHR};
use super::Ext4Fs;
use crate::block::BlockDevice;
use crate::Result;

impl<D: BlockDevice> Ext4Fs<D> {
    /// `(major, minor)` of the character or block device node at `path`
    /// (not following symlinks); `None` for anything else. Reads both
    /// encodings of the inode's block field: the old 8:8 one in its first
    /// word, the new 12:20 one in its second.
    pub fn device_numbers(&self, path: &str) -> Result<Option<(u32, u32)>> {
        let ino = self.resolve(path)?;
        let inode = self.read_inode(ino)?;
        if !matches!(inode.file_type(), S_IFCHR | S_IFBLK) {
            return Ok(None);
        }
        let block = inode.i_block();
        let word =
            |i: usize| u32::from_le_bytes([block[i], block[i + 1], block[i + 2], block[i + 3]]);
        let (old, new) = (word(0), word(4));
        Ok(Some(if old != 0 {
            ((old >> 8) & 0xff, old & 0xff)
        } else {
            ((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00))
        }))
    }
}
