//! Inodes of any size (128 bytes and up), as raw bytes with typed accessors.

use super::bytes::{put_u16, put_u32, u16_at, u32_at};
use crate::fs::{FileKind, Timestamp};

pub const S_IFMT: u16 = 0o170000;
pub const S_IFSOCK: u16 = 0o140000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFIFO: u16 = 0o010000;

pub const FL_INDEX: u32 = 0x1000;
pub const FL_HUGE_FILE: u32 = 0x4_0000;
pub const FL_EXTENTS: u32 = 0x8_0000;
pub const FL_EA_INODE: u32 = 0x20_0000;
pub const FL_INLINE_DATA: u32 = 0x1000_0000;
pub const FL_ENCRYPT: u32 = 0x800;
pub const FL_CASEFOLD: u32 = 0x4000_0000;
pub const FL_VERITY: u32 = 0x10_0000;

/// Where each timestamp lives: (seconds offset, extra offset).
#[derive(Debug, Clone, Copy)]
pub enum TimeField {
    Atime,
    Ctime,
    Mtime,
    Crtime,
}

impl TimeField {
    fn offsets(self) -> (usize, usize) {
        match self {
            TimeField::Atime => (0x08, 0x8C),
            TimeField::Ctime => (0x0C, 0x84),
            TimeField::Mtime => (0x10, 0x88),
            TimeField::Crtime => (0x90, 0x94),
        }
    }
}

/// One on-disk inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub raw: Vec<u8>,
}

impl Inode {
    pub fn mode(&self) -> u16 {
        u16_at(&self.raw, 0x00)
    }
    pub fn set_mode(&mut self, v: u16) {
        put_u16(&mut self.raw, 0x00, v)
    }
    pub fn file_type(&self) -> u16 {
        self.mode() & S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.file_type() == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.file_type() == S_IFLNK
    }
    pub fn kind(&self) -> Option<FileKind> {
        Some(match self.file_type() {
            S_IFREG => FileKind::File,
            S_IFDIR => FileKind::Dir,
            S_IFLNK => FileKind::Symlink,
            S_IFCHR => FileKind::CharDevice,
            S_IFBLK => FileKind::BlockDevice,
            S_IFIFO => FileKind::Fifo,
            S_IFSOCK => FileKind::Socket,
            _ => return None,
        })
    }
    pub fn uid(&self) -> u32 {
        u32::from(u16_at(&self.raw, 0x02)) | u32::from(u16_at(&self.raw, 0x78)) << 16
    }
    pub fn set_uid(&mut self, v: u32) {
        put_u16(&mut self.raw, 0x02, v as u16);
        put_u16(&mut self.raw, 0x78, (v >> 16) as u16);
    }
    pub fn gid(&self) -> u32 {
        u32::from(u16_at(&self.raw, 0x18)) | u32::from(u16_at(&self.raw, 0x7A)) << 16
    }
    pub fn set_gid(&mut self, v: u32) {
        put_u16(&mut self.raw, 0x18, v as u16);
        put_u16(&mut self.raw, 0x7A, (v >> 16) as u16);
    }
    pub fn size(&self) -> u64 {
        u64::from(u32_at(&self.raw, 0x04)) | u64::from(u32_at(&self.raw, 0x6C)) << 32
    }
    pub fn set_size(&mut self, v: u64) {
        put_u32(&mut self.raw, 0x04, v as u32);
        put_u32(&mut self.raw, 0x6C, (v >> 32) as u32);
    }
    pub fn links(&self) -> u16 {
        u16_at(&self.raw, 0x1A)
    }
    pub fn set_links(&mut self, v: u16) {
        put_u16(&mut self.raw, 0x1A, v)
    }
    pub fn flags(&self) -> u32 {
        u32_at(&self.raw, 0x20)
    }
    pub fn set_flags(&mut self, v: u32) {
        put_u32(&mut self.raw, 0x20, v)
    }
    pub fn has_flag(&self, f: u32) -> bool {
        self.flags() & f != 0
    }
    pub fn generation(&self) -> u32 {
        u32_at(&self.raw, 0x64)
    }
    pub fn set_dtime(&mut self, v: u32) {
        put_u32(&mut self.raw, 0x14, v)
    }
    /// The 60-byte `i_block` area (extent root, block map or inline data).
    pub fn i_block(&self) -> &[u8] {
        &self.raw[0x28..0x64]
    }
    pub fn i_block_mut(&mut self) -> &mut [u8] {
        &mut self.raw[0x28..0x64]
    }
    pub fn file_acl(&self) -> u64 {
        u64::from(u32_at(&self.raw, 0x68)) | u64::from(u16_at(&self.raw, 0x76)) << 32
    }
    pub fn set_file_acl(&mut self, v: u64) {
        put_u32(&mut self.raw, 0x68, v as u32);
        put_u16(&mut self.raw, 0x76, (v >> 32) as u16);
    }
    /// `i_blocks` in 512-byte units (converting huge-file inodes).
    pub fn blocks_512(&self, block_size: u64, huge_file: bool) -> u64 {
        let mut v = u64::from(u32_at(&self.raw, 0x1C));
        if huge_file {
            v |= u64::from(u16_at(&self.raw, 0x74)) << 32;
            if self.has_flag(FL_HUGE_FILE) {
                v *= block_size / 512;
            }
        }
        v
    }
    /// Stores `i_blocks` (512-byte units); false if it does not fit.
    pub fn set_blocks_512(&mut self, v: u64, huge_file: bool) -> bool {
        let f = self.flags() & !FL_HUGE_FILE;
        self.set_flags(f);
        if v <= u64::from(u32::MAX) {
            put_u32(&mut self.raw, 0x1C, v as u32);
            put_u16(&mut self.raw, 0x74, 0);
            true
        } else if huge_file && v < 1 << 48 {
            put_u32(&mut self.raw, 0x1C, v as u32);
            put_u16(&mut self.raw, 0x74, (v >> 32) as u16);
            true
        } else {
            false
        }
    }
    /// `i_extra_isize`, 0 for 128-byte inodes.
    pub fn extra_isize(&self) -> usize {
        if self.raw.len() > 128 {
            usize::from(u16_at(&self.raw, 0x80))
        } else {
            0
        }
    }
    pub fn set_extra_isize(&mut self, v: u16) {
        if self.raw.len() > 128 {
            put_u16(&mut self.raw, 0x80, v)
        }
    }
    fn has_field(&self, off: usize) -> bool {
        off + 4 <= 128 + self.extra_isize() && off + 4 <= self.raw.len()
    }
    pub fn time(&self, f: TimeField) -> Option<Timestamp> {
        let (s, x) = f.offsets();
        if s >= 128 && !self.has_field(s) {
            return None;
        }
        let mut secs = i64::from(u32_at(&self.raw, s) as i32);
        let mut nanos = 0;
        if self.has_field(x) {
            let extra = u32_at(&self.raw, x);
            secs += i64::from(extra & 3) << 32;
            nanos = (extra >> 2).min(999_999_999);
        }
        Some(Timestamp { secs, nanos })
    }
    /// Whether `t`'s seconds can be stored in this inode: 32 signed bits
    /// (1901–2038) without the extra fields, two more epoch bits (to 2446)
    /// with them. Nanoseconds are dropped where there is no extra field.
    pub fn time_fits(&self, t: Timestamp) -> bool {
        let max = if self.has_field(0x88) {
            i64::from(i32::MAX) + (3i64 << 32)
        } else {
            i64::from(i32::MAX)
        };
        (i64::from(i32::MIN)..=max).contains(&t.secs)
    }

    pub fn set_time(&mut self, f: TimeField, t: Timestamp) {
        let (s, x) = f.offsets();
        if s >= 128 && !self.has_field(s) {
            return;
        }
        put_u32(&mut self.raw, s, t.secs as u32);
        if self.has_field(x) {
            let epoch = (t.secs.wrapping_sub(i64::from(t.secs as i32)) >> 32) as u32 & 3;
            put_u32(&mut self.raw, x, epoch | (t.nanos.min(999_999_999) << 2));
        }
    }
    /// Byte offset where in-inode extended attributes start (after the magic).
    pub fn xattr_area(&self) -> Option<usize> {
        let start = 128 + self.extra_isize();
        (self.raw.len() > 128
            && start + 4 <= self.raw.len()
            && self.extra_isize().is_multiple_of(4))
        .then_some(start)
    }

    /// Fills in the checksum (`metadata_csum` filesystems).
    pub fn seal(&mut self, seed: u32, ino: u32) {
        let c = mkext4::csum::inode(seed, ino, self.generation(), &self.raw);
        put_u16(&mut self.raw, 0x7C, c as u16);
        if self.raw.len() > 128 && self.extra_isize() >= 4 {
            put_u16(&mut self.raw, 0x82, (c >> 16) as u16);
        }
    }

    /// Whether the stored checksum is right (`metadata_csum` filesystems).
    pub fn checksum_ok(&self, seed: u32, ino: u32) -> bool {
        let c = mkext4::csum::inode(seed, ino, self.generation(), &self.raw);
        let lo_ok = u16_at(&self.raw, 0x7C) == c as u16;
        if self.raw.len() > 128 && self.extra_isize() >= 4 {
            lo_ok && u16_at(&self.raw, 0x82) == (c >> 16) as u16
        } else {
            lo_ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_with_epoch_bits_and_nanos() {
        let mut ino = Inode { raw: vec![0; 256] };
        ino.set_extra_isize(32);
        for secs in [0i64, 1_700_000_000, -1, 1 << 33, (1 << 31) + 5] {
            let t = Timestamp {
                secs,
                nanos: 123_456_789,
            };
            ino.set_time(TimeField::Mtime, t);
            assert_eq!(ino.time(TimeField::Mtime), Some(t));
        }
        let mut small = Inode { raw: vec![0; 128] };
        small.set_time(TimeField::Mtime, Timestamp { secs: 42, nanos: 7 });
        assert_eq!(
            small.time(TimeField::Mtime),
            Some(Timestamp { secs: 42, nanos: 0 })
        );
        assert_eq!(small.time(TimeField::Crtime), None);
    }
}
