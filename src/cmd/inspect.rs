//! `nodeimg inspect`: what is in an image (partition table, filesystems).

use anyhow::{Context, Result};
use clap::Args;
use imagegen::block::FileDevice;
use imagegen::layout::{self, PartitionTable};
use std::path::PathBuf;
use std::process::ExitCode;

/// Show an image's partition table and the filesystem in each partition.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Disk or filesystem image to inspect.
    pub image: PathBuf,
    /// Print JSON (shape documented in docs/inspect.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> Result<ExitCode> {
    let dev = FileDevice::open(&args.image)?;
    let table =
        layout::read_table(&dev).with_context(|| format!("inspecting {}", args.image.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&table)?);
    } else {
        print_text(&table);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(t: &PartitionTable) {
    println!("scheme: {}", t.scheme);
    if let Some(id) = &t.disk_id {
        println!("disk id: {id}");
    }
    for p in &t.partitions {
        println!(
            "partition {}: start {} size {} type {}{}",
            p.number,
            p.start,
            p.size,
            p.kind,
            if p.bootable { " bootable" } else { "" }
        );
    }
}
