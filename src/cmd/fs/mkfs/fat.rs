//! `nodeimg fs mkfs fat OUT --size SIZE`: a fresh FAT16/FAT32 image.

use crate::cmd::fs::image::in_image;
use crate::cmd::size::parse_size;
use anyhow::Context;
use clap::Args;
use imagegen::block::{BlockDevice, FileDevice};
use imagegen::fs::fat::{format, FatBits, FormatOptions};
use imagegen::layout::select;
use imagegen::mkfs::fat::check_size;
use imagegen::sink::PendingFile;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct FatArgs {
    /// Image file to create (must not exist unless --force), or with --part
    /// the disk image whose partition is formatted in place
    out: PathBuf,
    /// Replace OUT if it exists
    #[arg(long, conflicts_with = "part")]
    force: bool,
    /// Size of the new image, e.g. 64MiB, 512M, 8GiB (not with --part)
    #[arg(long, value_parser = parse_size, required_unless_present = "part", conflicts_with = "part")]
    size: Option<u64>,
    /// Format partition N of the existing disk image OUT instead of creating a file
    #[arg(long, value_name = "N")]
    part: Option<u32>,
    /// FAT variant: 16 or 32 (32 is what the Raspberry Pi boot partition uses)
    #[arg(long = "fat", default_value = "32", value_parser = ["16", "32"])]
    bits: String,
    /// Volume label, up to 11 characters (stored upper-case)
    #[arg(long)]
    label: Option<String>,
    /// Volume id as 8 hex digits, e.g. 1A2B3C4D (default: from the clock or SOURCE_DATE_EPOCH)
    #[arg(long, value_parser = parse_volume_id)]
    volume_id: Option<u32>,
    /// Bytes per cluster, a power of two from 512 to 32K (default: by size)
    #[arg(long, value_parser = parse_size)]
    cluster_size: Option<u64>,
}

fn parse_volume_id(text: &str) -> Result<u32, String> {
    let hex = text.trim_start_matches("0x").replace('-', "");
    u32::from_str_radix(&hex, 16).map_err(|_| format!("{text:?} is not a 32-bit hex volume id"))
}

pub fn run(args: FatArgs) -> anyhow::Result<()> {
    let out = &args.out;
    let cluster_size = args
        .cluster_size
        .map(|c| u32::try_from(c).context("cluster size too large"))
        .transpose()?;
    let opts = FormatOptions {
        bits: if args.bits == "16" {
            FatBits::Fat16
        } else {
            FatBits::Fat32
        },
        label: args.label.clone(),
        volume_id: args.volume_id,
        cluster_size,
        now: imagegen::fs::Timestamp::now()?,
    };
    if let Some(part) = args.part {
        let _lock = crate::cmd::fs::image::lock_image(out, true)?;
        let disk: Arc<dyn BlockDevice> = Arc::new(FileDevice::open_rw(out)?);
        let dev = select(disk, Some(part)).map_err(|e| in_image(e, out))?;
        format(&*dev, &opts).map_err(|e| in_image(e, out))?;
        return Ok(());
    }
    let size = args.size.context("--size is required without --part")?;
    check_size(size, &opts).with_context(|| out.display().to_string())?;
    let made = (|| -> anyhow::Result<()> {
        let pending = PendingFile::create_checked(out, args.force, &[])?;
        let dev = pending.device(size)?;
        format(&dev, &opts)?;
        drop(dev);
        pending.commit(0o644)?;
        Ok(())
    })();
    made.with_context(|| out.display().to_string())
}
