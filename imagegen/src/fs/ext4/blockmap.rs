//! Legacy (ext2/ext3) block maps, read only: twelve direct pointers, then
//! single, double and triple indirect blocks.

use super::bytes::u32_at;
use super::extent::{ReadCtx, Tree};
use crate::fs::Extent;
use crate::{Error, Result};

/// Logical blocks a block map can address: 12 direct, then single,
/// double and triple indirect.
pub fn max_blocks(block_size: u64) -> u64 {
    let per = block_size / 4;
    12 + per + per * per + per * per * per
}

/// Indirect blocks one inode may have before its map is called corrupt
/// (a 4 KiB-block file of 4 TiB needs about a million).
const MAX_INDIRECT: usize = 1 << 20;

/// Maps the first `nblocks` logical blocks of a block-mapped inode. The
/// walk is iterative; an indirect block named twice (a cycle or a shared
/// block) or more than [`MAX_INDIRECT`] of them is corruption.
pub fn read(i_block: &[u8], nblocks: u64, ctx: &mut ReadCtx) -> Result<Tree> {
    let mut tree = Tree::default();
    let mut logical = 0u64;
    for i in 0..12 {
        if logical >= nblocks {
            return Ok(tree);
        }
        push(&mut tree, logical, u64::from(u32_at(i_block, i * 4)), ctx)?;
        logical += 1;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, level) in [(12usize, 1u32), (13, 2), (14, 3)] {
        if logical >= nblocks {
            break;
        }
        let ptr = u64::from(u32_at(i_block, i * 4));
        let span = (ctx.block_size / 4).pow(level);
        if ptr != 0 {
            indirect(ptr, level, logical, nblocks, ctx, &mut tree, &mut seen)?;
        }
        logical += span;
    }
    Ok(tree)
}

fn push(tree: &mut Tree, logical: u64, physical: u64, ctx: &ReadCtx) -> Result<()> {
    if physical == 0 {
        return Ok(());
    }
    if physical >= ctx.blocks_count {
        return Err(Error::corrupt(
            format!("block map of inode {}", ctx.ino),
            format!("block {physical} is outside the filesystem"),
        ));
    }
    if let Some(last) = tree.extents.last_mut() {
        if last.logical + last.len == logical
            && last.physical + last.len == physical
            && last.len < 32768
        {
            last.len += 1;
            return Ok(());
        }
    }
    tree.extents.push(Extent {
        logical,
        physical,
        len: 1,
        uninit: false,
    });
    Ok(())
}

/// Walks the indirect tree below `ptr` (at `level`, mapping logical blocks
/// from `first`) with an explicit stack.
fn indirect(
    ptr: u64,
    level: u32,
    first: u64,
    nblocks: u64,
    ctx: &mut ReadCtx,
    tree: &mut Tree,
    seen: &mut std::collections::HashSet<u64>,
) -> Result<()> {
    let per = ctx.block_size / 4;
    let what = || format!("block map of inode {}", ctx.ino);
    // (block, level, first logical block it maps)
    let mut stack = vec![(ptr, level, first)];
    while let Some((ptr, level, first)) = stack.pop() {
        if first >= nblocks {
            continue;
        }
        if ptr >= ctx.blocks_count {
            return Err(Error::corrupt(
                what(),
                format!("indirect block {ptr} is outside the filesystem"),
            ));
        }
        if !seen.insert(ptr) || seen.len() > MAX_INDIRECT {
            return Err(Error::corrupt(
                what(),
                format!("indirect block {ptr} is named twice, or there are too many"),
            ));
        }
        tree.tree_blocks.push(ptr);
        let block = (ctx.read_block)(ptr)?;
        let span = per.pow(level - 1);
        let mut children = Vec::new();
        for i in 0..per {
            let logical = first + i * span;
            if logical >= nblocks {
                break;
            }
            let p = u64::from(u32_at(&block, i as usize * 4));
            if level == 1 {
                push(tree, logical, p, ctx)?;
            } else if p != 0 {
                children.push((p, level - 1, logical));
            }
        }
        // Pushed in reverse so logical order is kept.
        stack.extend(children.into_iter().rev());
    }
    Ok(())
}
