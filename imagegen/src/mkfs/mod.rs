//! Creating filesystems from scratch: ext4 from a file tree (on `mkext4`)
//! and empty FAT volumes. These sit above [`crate::tree`] and
//! [`crate::fs`]; nothing below them depends on them.

pub mod ext4;
pub mod fat;
