//! `nodeimg fs check`: the read-only consistency scan of an ext2/3/4
//! filesystem's block and inode maps against what its inodes reference.

use super::image::{in_image, ImageArgs};
use anyhow::bail;
use clap::Args;
use imagegen::block::{BlockDevice, FileDevice};
use imagegen::fs::ext4::{Ext4Fs, MapReport};
use imagegen::fs::{probe, FsType, OpenOptions};
use imagegen::layout::select;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    image: ImageArgs,
}

/// The scan of `image`'s maps; `None` when it holds no ext2/3/4 filesystem.
fn scan(image: &ImageArgs) -> anyhow::Result<Option<MapReport>> {
    let path = &image.image;
    let disk: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(path)?);
    let dev = select(disk, image.part).map_err(|e| in_image(e, path))?;
    if !matches!(
        probe(&*dev).map_err(|e| in_image(e, path))?,
        Some(FsType::Ext2 | FsType::Ext3 | FsType::Ext4)
    ) {
        return Ok(None);
    }
    let fs = Ext4Fs::open_with(dev, OpenOptions::read_only()).map_err(|e| in_image(e, path))?;
    Ok(Some(fs.check_maps().map_err(|e| in_image(e, path))?))
}

/// Before a write verb changes an ext2/3/4 filesystem: refuses when its
/// maps disagree with its files (a bitmap marking a used block free, blocks
/// two files share, …), lies one change alone cannot see. Images that are
/// not ext, or that the engine cannot open, pass here and meet the engine.
pub fn refuse_if_inconsistent(image: &ImageArgs) -> anyhow::Result<()> {
    let Ok(Some(report)) = scan(image) else {
        return Ok(());
    };
    if let Some(first) = report.problems.first() {
        bail!(
            "{}: refusing to change a filesystem whose maps disagree with its files ({first}; {} problem(s): `nodeimg fs check` lists them, `e2fsck -f` repairs)",
            image.image.display(),
            report.problems.len() + report.more
        );
    }
    Ok(())
}

/// Prints every problem found (one per line) and fails when there is one.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let path = &args.image.image;
    let Some(report) = scan(&args.image)? else {
        bail!(
            "{}: fs check reads ext2/3/4 filesystems only (for FAT use fsck.vfat -n)",
            path.display()
        );
    };
    for line in &report.problems {
        outln!("{line}");
    }
    if report.more > 0 {
        outln!("… and {} more", report.more);
    }
    let total = report.problems.len() + report.more;
    if total > 0 {
        bail!(
            "{}: {total} problem(s) in the block and inode maps",
            path.display()
        );
    }
    sayln!(
        "{}: maps agree with {} inodes and {} claimed blocks",
        path.display(),
        report.inodes,
        report.claimed_blocks
    );
    Ok(())
}
