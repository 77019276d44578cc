//! Blocks that are the filesystem's own and never belong to a file: boot
//! block and superblock, superblock and descriptor backups, reserved GDT
//! blocks, every group's bitmaps and inode table, and the blocks of the
//! special inodes (journal, resize inode, quota, orphan file, boot loader).
//! The allocator never hands them out and freeing one is refused as
//! corruption: an extent that names the inode table is a lie, not an
//! instruction.

use super::bytes::u32_at;
use super::engine::Ext4Fs;
use crate::block::BlockDevice;
use crate::{Error, Result};

/// Sorted, merged block ranges `[start, end)`.
#[derive(Debug, Clone, Default)]
pub struct Fixed {
    ranges: Vec<(u64, u64)>,
}

impl Fixed {
    fn from_unsorted(mut v: Vec<(u64, u64)>) -> Fixed {
        v.retain(|r| r.0 < r.1);
        v.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, e) in v {
            match ranges.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => ranges.push((s, e)),
            }
        }
        Fixed { ranges }
    }

    /// The first fixed block in `first..first + len`, if any.
    pub fn first_in(&self, first: u64, len: u64) -> Option<u64> {
        let end = first.saturating_add(len);
        // The last range starting at or before `end - 1`.
        let i = self.ranges.partition_point(|r| r.0 < end);
        let r = *self.ranges[..i].last()?;
        (r.1 > first).then(|| r.0.max(first))
    }

    /// Whether `b` is fixed metadata.
    pub fn contains(&self, b: u64) -> bool {
        self.first_in(b, 1).is_some()
    }
}

/// Special inode numbers whose blocks are the filesystem's: bad blocks (1),
/// the old quota inodes (3, 4), boot loader (5), resize (7), journal (8).
const SPECIAL: [u32; 6] = [1, 3, 4, 5, 7, 8];

impl<D: BlockDevice> Ext4Fs<D> {
    /// Computes the fixed-metadata map. Errors (a special inode whose map
    /// is corrupt) are returned for the caller to turn into a refusal.
    pub(super) fn compute_fixed(&self) -> Result<Fixed> {
        let sb = &self.sb;
        let mut v = vec![(0, sb.first_data_block + 1)];
        let itable = self.groups.itable_blocks(sb);
        for g in 0..sb.group_count {
            let start = sb.group_first_block(g);
            if sb.group_has_super(g) {
                v.push((start, start + 1 + sb.gdt_blocks() + sb.reserved_gdt_blocks));
            }
            let bb = self.groups.block_bitmap(g);
            let ib = self.groups.inode_bitmap(g);
            let it = self.groups.inode_table(g);
            v.push((bb, bb + 1));
            v.push((ib, ib + 1));
            v.push((it, it + itable));
        }
        for ino in self.special_inodes() {
            let inode = self
                .read_inode(ino)
                .map_err(|e| Error::corrupt(format!("ext4 special inode {ino}"), e.to_string()))?;
            if inode.mode() == 0 && inode.links() == 0 && inode.size() == 0 {
                continue;
            }
            let tree = self
                .map_all(ino, &inode)
                .map_err(|e| Error::corrupt(format!("ext4 special inode {ino}"), e.to_string()))?;
            for e in &tree.extents {
                v.push((e.physical, e.physical + e.len));
            }
            v.extend(tree.tree_blocks.iter().map(|&b| (b, b + 1)));
        }
        Ok(Fixed::from_unsorted(v))
    }

    /// The special inodes this filesystem has: the fixed ones below
    /// `first_ino`, plus quota and orphan-file inodes the superblock names.
    pub(super) fn special_inodes(&self) -> Vec<u32> {
        let sb = &self.sb;
        let mut out: Vec<u32> = SPECIAL
            .iter()
            .copied()
            .filter(|&i| i < sb.first_ino && i <= sb.inodes_count)
            .collect();
        use super::superblock::{compat, ro_compat};
        let named = [
            (sb.has_compat(compat::HAS_JOURNAL), 0xE0), // s_journal_inum
            (sb.has_ro_compat(ro_compat::QUOTA), 0x240), // s_usr_quota_inum
            (sb.has_ro_compat(ro_compat::QUOTA), 0x244), // s_grp_quota_inum
            (sb.has_ro_compat(ro_compat::PROJECT), 0x26C), // s_prj_quota_inum
            (sb.has_compat(compat::ORPHAN_FILE), 0x280), // s_orphan_file_inum
        ];
        for (present, off) in named {
            if !present {
                continue;
            }
            let ino = u32_at(&sb.raw, off);
            if ino != 0 && ino <= sb.inodes_count && !out.contains(&ino) {
                out.push(ino);
            }
        }
        out
    }

    /// Refuses a run that touches fixed metadata: `what` says why it was asked.
    pub(super) fn refuse_fixed(&self, first: u64, len: u64, what: &str) -> Result<()> {
        if let Some(b) = self.fixed.first_in(first, len) {
            return Err(Error::corrupt(
                format!("ext4 block {b}"),
                format!("{what}, but it is fixed metadata (superblock, descriptors, bitmaps, inode table or a special inode's block)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Fixed;

    #[test]
    fn ranges_merge_and_answer_overlaps() {
        let f = Fixed::from_unsorted(vec![(10, 12), (0, 2), (11, 20), (30, 31)]);
        assert_eq!(f.ranges, vec![(0, 2), (10, 20), (30, 31)]);
        assert_eq!(f.first_in(2, 8), None);
        assert_eq!(f.first_in(5, 6), Some(10));
        assert_eq!(f.first_in(19, 5), Some(19));
        assert_eq!(f.first_in(20, 10), None);
        assert!(f.contains(30));
        assert!(!f.contains(31));
    }
}
