//! `nodeimg fs mkfs TYPE …`: a dispatcher with one sub-subcommand per
//! filesystem type (FAT here; ext4 sits beside it).

mod ext4;
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
    /// Create an ext4 filesystem, empty or from a directory, tarball or image (repack)
    Ext4(ext4::Ext4Args),
}

/// Runs `nodeimg fs mkfs`.
pub fn run(args: MkfsArgs) -> anyhow::Result<()> {
    match args.kind {
        Kind::Fat(a) => fat::run(a),
        Kind::Ext4(a) => ext4::run(a),
    }
}
