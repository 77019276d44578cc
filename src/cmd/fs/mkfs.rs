//! `nodeimg fs mkfs TYPE …`: a dispatcher with one sub-subcommand per
//! filesystem type (FAT here; ext4 sits beside it).

mod fat;

use clap::{Args, Subcommand};

/// Arguments of `nodeimg fs mkfs`.
#[derive(Debug, Args)]
pub struct MkfsArgs {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(Debug, Subcommand)]
enum Kind {
    /// Create a FAT16 or FAT32 filesystem
    Fat(fat::FatArgs),
}

/// Runs `nodeimg fs mkfs`.
pub fn run(args: MkfsArgs) -> anyhow::Result<()> {
    match args.kind {
        Kind::Fat(a) => fat::run(a),
    }
}
