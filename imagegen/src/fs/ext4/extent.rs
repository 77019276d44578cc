//! Extent trees: reading trees of any depth, and building the smallest tree
//! for a list of extents (in the inode when four or fewer, otherwise leaf and
//! index blocks packed full, so `e2fsck` finds nothing to narrow or shorten).

use super::bytes::{put_u16, put_u32, u16_at, u32_at};
use crate::fs::Extent;
use crate::{Error, Result};

const MAGIC: u16 = 0xF30A;
/// Longest initialised extent.
pub const MAX_LEN: u64 = 32768;
const MAX_DEPTH: u16 = 5;

/// Entries that fit in one tree block.
pub fn per_block(block_size: u64) -> usize {
    (block_size as usize - 12) / 12
}

/// Everything a file's extent tree says.
#[derive(Debug, Default)]
pub struct Tree {
    pub extents: Vec<Extent>,
    /// Index and leaf blocks below the inode.
    pub tree_blocks: Vec<u64>,
}

/// What reading a tree needs from the filesystem.
pub struct ReadCtx<'a> {
    pub block_size: u64,
    pub blocks_count: u64,
    /// Inode checksum seed, when extent blocks carry checksums.
    pub csum_seed: Option<u32>,
    pub ino: u32,
    pub read_block: &'a mut dyn FnMut(u64) -> Result<Vec<u8>>,
}

/// Reads the tree whose root is the inode's 60-byte `i_block`.
pub fn read(root: &[u8], ctx: &mut ReadCtx) -> Result<Tree> {
    let mut tree = Tree::default();
    walk(root, None, ctx, &mut tree, 0)?;
    Ok(tree)
}

fn walk(
    node: &[u8],
    expect_depth: Option<u16>,
    ctx: &mut ReadCtx,
    tree: &mut Tree,
    level: u16,
) -> Result<()> {
    let ino = ctx.ino;
    let what = || format!("extent tree of inode {ino}");
    if u16_at(node, 0) != MAGIC {
        return Err(Error::corrupt(what(), "bad extent header magic"));
    }
    let entries = usize::from(u16_at(node, 2));
    let max = usize::from(u16_at(node, 4));
    let depth = u16_at(node, 6);
    if 12 + max * 12 > node.len() || entries > max {
        return Err(Error::corrupt(
            what(),
            format!("{entries} of {max} entries do not fit the node"),
        ));
    }
    if depth > MAX_DEPTH || level > MAX_DEPTH || expect_depth.is_some_and(|d| d != depth) {
        return Err(Error::corrupt(
            what(),
            format!("inconsistent depth {depth}"),
        ));
    }
    for i in 0..entries {
        let e = &node[12 + i * 12..24 + i * 12];
        let logical = u64::from(u32_at(e, 0));
        if depth == 0 {
            let raw_len = u64::from(u16_at(e, 4));
            let (len, uninit) = if raw_len > MAX_LEN {
                (raw_len - MAX_LEN, true)
            } else {
                (raw_len, false)
            };
            let physical = u64::from(u16_at(e, 6)) << 32 | u64::from(u32_at(e, 8));
            if len == 0
                || physical
                    .checked_add(len)
                    .is_none_or(|end| end > ctx.blocks_count)
                || physical == 0
            {
                return Err(Error::corrupt(
                    what(),
                    format!("extent at block {physical} (+{len}) is outside the filesystem"),
                ));
            }
            if let Some(prev) = tree.extents.last() {
                if prev.logical + prev.len > logical {
                    return Err(Error::corrupt(what(), "overlapping or unsorted extents"));
                }
            }
            tree.extents.push(Extent {
                logical,
                physical,
                len,
                uninit,
            });
        } else {
            let child = u64::from(u16_at(e, 8)) << 32 | u64::from(u32_at(e, 4));
            if child == 0 || child >= ctx.blocks_count {
                return Err(Error::corrupt(
                    what(),
                    format!("index points at block {child}"),
                ));
            }
            if tree.tree_blocks.len() > 1 << 20 {
                return Err(Error::corrupt(what(), "too many tree blocks"));
            }
            tree.tree_blocks.push(child);
            let block = (ctx.read_block)(child)?;
            if let Some(seed) = ctx.csum_seed {
                if !super::csum::extent_block_ok(&block, seed) {
                    return Err(Error::corrupt(
                        what(),
                        format!("checksum mismatch in tree block {child}"),
                    ));
                }
            }
            walk(&block, Some(depth - 1), ctx, tree, level + 1)?;
        }
    }
    Ok(())
}

/// Splits runs of `(physical, len)` into extents of at most [`MAX_LEN`],
/// numbering logical blocks from 0.
pub fn from_runs(runs: &[(u64, u64)]) -> Vec<Extent> {
    let mut out = Vec::new();
    let mut logical = 0;
    for &(mut physical, mut len) in runs {
        while len > 0 {
            let n = len.min(MAX_LEN);
            out.push(Extent {
                logical,
                physical,
                len: n,
                uninit: false,
            });
            logical += n;
            physical += n;
            len -= n;
        }
    }
    out
}

/// Tree blocks needed below the inode for `n` extents.
pub fn blocks_needed(n: usize, block_size: u64) -> u64 {
    let per = per_block(block_size);
    let mut nodes = n;
    let mut total = 0;
    while nodes > 4 {
        nodes = nodes.div_ceil(per);
        total += nodes as u64;
    }
    total
}

/// A built tree: the inode's new `i_block` and the blocks to write.
pub struct Built {
    pub root: [u8; 60],
    pub blocks: Vec<(u64, Vec<u8>)>,
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put_u16(buf, 0, MAGIC);
    put_u16(buf, 2, entries as u16);
    put_u16(buf, 4, max as u16);
    put_u16(buf, 6, depth);
    put_u32(buf, 8, 0);
}

fn put_extent(buf: &mut [u8], i: usize, e: &Extent) {
    let o = 12 + i * 12;
    put_u32(buf, o, e.logical as u32);
    put_u16(
        buf,
        o + 4,
        (e.len + if e.uninit { MAX_LEN } else { 0 }) as u16,
    );
    put_u16(buf, o + 6, (e.physical >> 32) as u16);
    put_u32(buf, o + 8, e.physical as u32);
}

fn put_index(buf: &mut [u8], i: usize, logical: u64, child: u64) {
    let o = 12 + i * 12;
    put_u32(buf, o, logical as u32);
    put_u32(buf, o + 4, child as u32);
    put_u16(buf, o + 8, (child >> 32) as u16);
    put_u16(buf, o + 10, 0);
}

/// Builds the tree for `extents` (sorted, each at most [`MAX_LEN`]) into
/// `tree_blocks` (exactly [`blocks_needed`] of them). `csum_seed` is the
/// inode's checksum seed on `metadata_csum` filesystems.
pub fn build(
    extents: &[Extent],
    tree_blocks: &[u64],
    block_size: u64,
    csum_seed: Option<u32>,
) -> Built {
    let per = per_block(block_size);
    let mut root = [0u8; 60];
    let mut blocks = Vec::new();
    let mut free = tree_blocks.iter().copied();
    // (first logical block, node block) of the level being built.
    let mut level: Vec<(u64, u64)> = Vec::new();
    let mut depth = 0u16;
    if extents.len() <= 4 {
        header(&mut root, extents.len(), 4, 0);
        for (i, e) in extents.iter().enumerate() {
            put_extent(&mut root, i, e);
        }
        return Built { root, blocks };
    }
    let seal = |buf: &mut Vec<u8>| super::csum::extent_block_seal(buf, csum_seed);
    for chunk in extents.chunks(per) {
        let b = free
            .next()
            .expect("caller allocated blocks_needed() tree blocks");
        let mut buf = vec![0u8; block_size as usize];
        header(&mut buf, chunk.len(), per, 0);
        for (i, e) in chunk.iter().enumerate() {
            put_extent(&mut buf, i, e);
        }
        seal(&mut buf);
        blocks.push((b, buf));
        level.push((chunk[0].logical, b));
    }
    depth += 1;
    while level.len() > 4 {
        let mut next = Vec::new();
        for chunk in level.chunks(per) {
            let b = free
                .next()
                .expect("caller allocated blocks_needed() tree blocks");
            let mut buf = vec![0u8; block_size as usize];
            header(&mut buf, chunk.len(), per, depth);
            for (i, &(logical, child)) in chunk.iter().enumerate() {
                put_index(&mut buf, i, logical, child);
            }
            seal(&mut buf);
            blocks.push((b, buf));
            next.push((chunk[0].0, b));
        }
        level = next;
        depth += 1;
    }
    header(&mut root, level.len(), 4, depth);
    for (i, &(logical, child)) in level.iter().enumerate() {
        put_index(&mut root, i, logical, child);
    }
    Built { root, blocks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn round_trip(n: usize, bs: u64) {
        let extents: Vec<Extent> = (0..n as u64)
            .map(|i| Extent {
                logical: i * 2,
                physical: 1000 + i * 3,
                len: 1,
                uninit: false,
            })
            .collect();
        let need = blocks_needed(n, bs);
        let tree_blocks: Vec<u64> = (0..need).map(|i| 500_000 + i).collect();
        let built = build(&extents, &tree_blocks, bs, Some(7));
        let store: HashMap<u64, Vec<u8>> = built.blocks.into_iter().collect();
        let mut read_block = |b: u64| {
            store
                .get(&b)
                .cloned()
                .ok_or_else(|| Error::NotFound(b.to_string()))
        };
        let mut ctx = ReadCtx {
            block_size: bs,
            blocks_count: 1 << 40,
            csum_seed: Some(7),
            ino: 12,
            read_block: &mut read_block,
        };
        let tree = read(&built.root, &mut ctx).unwrap();
        assert_eq!(tree.extents, extents, "{n} extents, {bs}-byte blocks");
        assert_eq!(tree.tree_blocks.len() as u64, need);
    }

    #[test]
    fn trees_of_every_depth_read_back() {
        for bs in [1024, 2048, 4096] {
            for n in [0, 1, 4, 5, 84, 85, 340, 341, 1400, 30_000] {
                round_trip(n, bs);
            }
        }
    }

    #[test]
    fn long_runs_are_split() {
        let e = from_runs(&[(100, 40_000), (200_000, 3)]);
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[1].logical, e[1].physical, e[1].len),
            (32768, 100 + 32768, 40_000 - 32768)
        );
        assert_eq!((e[2].logical, e[2].physical), (40_000, 200_000));
    }
}
