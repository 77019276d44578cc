//! Legacy (ext2/ext3) block maps, read only: twelve direct pointers, then
//! single, double and triple indirect blocks.

use super::bytes::u32_at;
use super::extent::{ReadCtx, Tree};
use crate::fs::Extent;
use crate::{Error, Result};

/// Maps the first `nblocks` logical blocks of a block-mapped inode.
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
    for (i, level) in [(12usize, 1u32), (13, 2), (14, 3)] {
        if logical >= nblocks {
            break;
        }
        let ptr = u64::from(u32_at(i_block, i * 4));
        let span = (ctx.block_size / 4).pow(level);
        if ptr != 0 {
            indirect(ptr, level, &mut logical, nblocks, ctx, &mut tree)?;
        } else {
            logical += span;
        }
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

fn indirect(
    ptr: u64,
    level: u32,
    logical: &mut u64,
    nblocks: u64,
    ctx: &mut ReadCtx,
    tree: &mut Tree,
) -> Result<()> {
    if ptr >= ctx.blocks_count {
        return Err(Error::corrupt(
            format!("block map of inode {}", ctx.ino),
            format!("indirect block {ptr} is outside the filesystem"),
        ));
    }
    tree.tree_blocks.push(ptr);
    let block = (ctx.read_block)(ptr)?;
    let per = ctx.block_size / 4;
    for i in 0..per as usize {
        if *logical >= nblocks {
            return Ok(());
        }
        let p = u64::from(u32_at(&block, i * 4));
        if level == 1 {
            push(tree, *logical, p, ctx)?;
            *logical += 1;
        } else if p == 0 {
            *logical += per.pow(level - 1);
        } else {
            indirect(p, level - 1, logical, nblocks, ctx, tree)?;
        }
    }
    Ok(())
}
