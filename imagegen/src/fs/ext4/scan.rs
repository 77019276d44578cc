//! A read-only consistency scan of the block and inode maps against what
//! the inodes and directories really reference — the check for lies a
//! single change cannot see: a bitmap that marks a block free while a file
//! uses it, blocks two files share, files that name fixed metadata, entries
//! naming free inodes, counters that disagree with the bitmaps.
//!
//! Cost: one read of every group's bitmaps, of the inode tables up to each
//! group's high-water mark, of extent-tree and indirect blocks, and of
//! directory blocks — no file data. Run it once on a base before stamping
//! many nodes from it (`nodeimg fs check`).

use super::engine::Ext4Fs;
use super::group::{BLOCK_UNINIT, INODE_UNINIT};
use super::inode::Inode;
use crate::block::BlockDevice;
use crate::Result;
use serde::Serialize;
use std::collections::HashMap;

/// Problems listed in full; beyond this they are only counted.
const MAX_LISTED: usize = 200;

/// What [`Ext4Fs::check_maps`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MapReport {
    /// One line per problem (at most 200; `more` counts the rest).
    pub problems: Vec<String>,
    /// Problems found beyond those listed.
    pub more: usize,
    /// Inodes in use that were looked at.
    pub inodes: u64,
    /// Blocks that inodes claim.
    pub claimed_blocks: u64,
}

impl MapReport {
    /// Whether the maps agree with the inodes.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, line: String) {
        if self.problems.len() < MAX_LISTED {
            self.problems.push(line);
        } else {
            self.more += 1;
        }
    }
}

struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    fn get(&self, i: u64) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// Sets bit `i`; returns whether it was set already.
    fn set(&mut self, i: u64) -> bool {
        let w = &mut self.0[(i / 64) as usize];
        let m = 1 << (i % 64);
        let was = *w & m != 0;
        *w |= m;
        was
    }
}

fn bit(bm: &[u8], i: u64) -> bool {
    bm[(i / 8) as usize] & (1 << (i % 8)) != 0
}

impl<D: BlockDevice> Ext4Fs<D> {
    /// Scans block and inode bitmaps against what inodes and directory
    /// entries reference (read-only; see the module docs for the cost).
    /// `Err` only when the device cannot be read; damage is in the report.
    pub fn check_maps(&self) -> Result<MapReport> {
        let sb = &self.sb;
        let mut r = MapReport::default();
        let fixed = match self.compute_fixed() {
            Ok(f) => f,
            Err(e) => {
                r.problem(e.to_string());
                return Ok(r);
            }
        };
        let special = self.special_inodes();
        let mut claimed = Bits::new(sb.blocks_count);
        let mut used_inodes = Bits::new(u64::from(sb.inodes_count) + 1);
        // Inode → (is a directory, link count) for the directory pass.
        let mut live: HashMap<u32, (bool, u16)> = HashMap::new();
        let mut xattr_blocks: HashMap<u64, u32> = HashMap::new();
        let ipg = sb.inodes_per_group;
        let isz = sb.inode_size as u64;
        for g in 0..sb.group_count {
            let ibm = match self.inode_bitmap(g) {
                Ok(b) => b,
                Err(e) => {
                    r.problem(e.to_string());
                    continue;
                }
            };
            let high = if sb.group_csum() && self.groups.flags(g) & INODE_UNINIT != 0 {
                0
            } else if sb.group_csum() {
                match ipg.checked_sub(self.groups.itable_unused(g)) {
                    Some(h) => h,
                    None => {
                        r.problem(format!(
                            "group {g}: {} unused inodes of {ipg}",
                            self.groups.itable_unused(g)
                        ));
                        ipg
                    }
                }
            } else {
                ipg
            };
            let mut free_bits = 0u32;
            for idx in 0..ipg {
                if !bit(&ibm, u64::from(idx)) {
                    free_bits += 1;
                } else if idx >= high {
                    r.problem(format!(
                        "inode {} is marked in use beyond group {g}'s initialised inode table",
                        g * ipg + idx + 1
                    ));
                }
            }
            if free_bits != self.groups.free_inodes(g) {
                r.problem(format!(
                    "group {g}: {} free inodes recorded, the bitmap shows {free_bits}",
                    self.groups.free_inodes(g)
                ));
            }
            if high == 0 {
                continue;
            }
            let mut table = vec![0u8; (u64::from(high) * isz) as usize];
            self.dev
                .read_at(self.groups.inode_table(g) * sb.block_size, &mut table)?;
            for idx in 0..high {
                if !bit(&ibm, u64::from(idx)) {
                    continue;
                }
                let ino = g * ipg + idx + 1;
                used_inodes.set(u64::from(ino));
                let off = (u64::from(idx) * isz) as usize;
                let inode = Inode {
                    raw: table[off..off + sb.inode_size].to_vec(),
                };
                if special.contains(&ino) || (ino < sb.first_ino && ino != 2) {
                    continue;
                }
                if sb.metadata_csum() && !inode.checksum_ok(sb.csum_seed, ino) {
                    r.problem(format!("inode {ino}: checksum mismatch"));
                    continue;
                }
                if inode.mode() == 0 || inode.links() == 0 {
                    r.problem(format!(
                        "inode {ino} is marked in use but is empty or deleted"
                    ));
                    continue;
                }
                r.inodes += 1;
                // Attribute inodes are referenced by attributes, not names.
                if !inode.has_flag(super::inode::FL_EA_INODE) {
                    live.insert(ino, (inode.is_dir(), inode.links()));
                }
                let acl = inode.file_acl();
                if acl != 0 {
                    *xattr_blocks.entry(acl).or_default() += 1;
                }
                if !self.owns_blocks(&inode) {
                    continue;
                }
                let tree = match self.map_all(ino, &inode) {
                    Ok(t) => t,
                    Err(e) => {
                        r.problem(format!("inode {ino}: {e}"));
                        continue;
                    }
                };
                let runs = tree
                    .extents
                    .iter()
                    .map(|e| (e.physical, e.len))
                    .chain(tree.tree_blocks.iter().map(|&b| (b, 1)));
                for (first, len) in runs {
                    if let Some(b) = fixed.first_in(first, len) {
                        r.problem(format!(
                            "inode {ino} names block {b}, which is fixed metadata"
                        ));
                        continue;
                    }
                    for b in first..first + len {
                        r.claimed_blocks += 1;
                        if claimed.set(b) {
                            r.problem(format!("block {b} is claimed twice (again by inode {ino})"));
                        }
                    }
                }
            }
        }
        for (&b, &users) in &xattr_blocks {
            if b >= sb.blocks_count || fixed.contains(b) {
                r.problem(format!(
                    "xattr block {b} ({users} users) is outside the filesystem or fixed metadata"
                ));
                continue;
            }
            r.claimed_blocks += 1;
            if claimed.set(b) {
                r.problem(format!("xattr block {b} is also claimed as file data"));
            }
        }
        self.compare_block_bitmaps(&claimed, &fixed, &mut r);
        self.check_entries(&live, &used_inodes, &mut r);
        Ok(r)
    }

    /// Block bitmaps against claimed blocks and fixed metadata.
    fn compare_block_bitmaps(
        &self,
        claimed: &Bits,
        fixed: &super::fixed::Fixed,
        r: &mut MapReport,
    ) {
        let sb = &self.sb;
        for g in 0..sb.group_count {
            let bm = match self.block_bitmap(g) {
                Ok(b) => b,
                Err(e) => {
                    r.problem(e.to_string());
                    continue;
                }
            };
            let start = sb.group_first_block(g);
            let len = sb.group_len(g);
            let mut free_bits = 0u32;
            for i in 0..len {
                let b = start + i;
                let used = bit(&bm, i);
                let owned = claimed.get(b) || fixed.contains(b);
                if !used {
                    free_bits += 1;
                }
                if owned && !used {
                    r.problem(format!(
                        "block {b} is in use but free in group {g}'s bitmap"
                    ));
                } else if used && !owned {
                    r.problem(format!(
                        "block {b} is marked in use in group {g}'s bitmap but nothing owns it"
                    ));
                }
            }
            let uninit = sb.group_csum() && self.groups.flags(g) & BLOCK_UNINIT != 0;
            if free_bits != self.groups.free_blocks(g) && !uninit {
                r.problem(format!(
                    "group {g}: {} free blocks recorded, the bitmap shows {free_bits}",
                    self.groups.free_blocks(g)
                ));
            }
        }
    }

    /// Directory entries against the inode bitmap and link counts.
    fn check_entries(&self, live: &HashMap<u32, (bool, u16)>, used: &Bits, r: &mut MapReport) {
        let mut refs: HashMap<u32, u32> = HashMap::new();
        let mut dirs: Vec<u32> = live.iter().filter(|(_, v)| v.0).map(|(&k, _)| k).collect();
        dirs.sort_unstable();
        for dir in dirs {
            let inode = match self.read_inode(dir) {
                Ok(i) => i,
                Err(e) => {
                    r.problem(e.to_string());
                    continue;
                }
            };
            let records = match self.dir_records(dir, &inode) {
                Ok(x) => x,
                Err(e) => {
                    r.problem(format!("directory inode {dir}: {e}"));
                    continue;
                }
            };
            for (name, found) in records {
                if found.ino == 0 || found.ino > self.sb.inodes_count {
                    r.problem(format!(
                        "directory inode {dir}: entry names inode {}",
                        found.ino
                    ));
                    continue;
                }
                if !used.get(u64::from(found.ino)) {
                    r.problem(format!(
                        "directory inode {dir}: entry {:?} names free inode {}",
                        String::from_utf8_lossy(&name),
                        found.ino
                    ));
                    continue;
                }
                if name != b"." && name != b".." {
                    *refs.entry(found.ino).or_default() += 1;
                }
            }
        }
        let mut files: Vec<(&u32, &(bool, u16))> = live.iter().filter(|(_, v)| !v.0).collect();
        files.sort_unstable();
        for (&ino, &(_, links)) in files {
            let n = refs.get(&ino).copied().unwrap_or(0);
            if n != u32::from(links) {
                r.problem(format!(
                    "inode {ino} has {links} links but {n} directory entries"
                ));
            }
        }
    }
}
