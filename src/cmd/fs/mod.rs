//! `nodeimg fs`: look at and change the files inside an image's filesystem
//! without mounting it. Every verb is written against
//! [`imagegen::fs::Filesystem`], so it works on any filesystem `open` knows.

pub(crate) mod check;
pub(crate) mod image;
mod mkfs;
mod read;
mod write;

use clap::{Args, Subcommand};
use std::process::ExitCode;

/// Arguments of `nodeimg fs`.
#[derive(Debug, Args)]
pub struct FsArgs {
    #[command(subcommand)]
    verb: Verb,
}

/// The `nodeimg fs` verbs.
#[derive(Debug, Subcommand)]
enum Verb {
    /// List a directory (or show one file)
    Ls(read::LsArgs),
    /// Write a file's contents to stdout
    Cat(read::CatArgs),
    /// Show everything the filesystem records about a path
    Stat(read::StatArgs),
    /// Copy a local file into the image, creating or replacing PATH
    Put(write::PutArgs),
    /// Create a directory
    Mkdir(write::MkdirArgs),
    /// Remove a file or an empty directory (or a tree, with --recursive)
    Rm(write::RmArgs),
    /// Create a symbolic link PATH pointing to TARGET
    Symlink(write::SymlinkArgs),
    /// Create a hard link NEW to the file EXISTING
    Link(write::LinkArgs),
    /// Set permission bits
    Chmod(write::ChmodArgs),
    /// Set owner and/or group
    Chown(write::ChownArgs),
    /// Set an extended attribute
    Setxattr(write::SetxattrArgs),
    /// Print an extended attribute's value
    Getxattr(read::GetxattrArgs),
    /// Create a fresh filesystem
    Mkfs(mkfs::MkfsArgs),
    /// Check an ext2/3/4 filesystem's block and inode maps against what its
    /// files reference (read-only; exits non-zero when they disagree)
    Check(check::CheckArgs),
}

/// Runs one `nodeimg fs` verb.
pub fn run(args: FsArgs) -> anyhow::Result<ExitCode> {
    match args.verb {
        Verb::Ls(a) => read::ls(a),
        Verb::Cat(a) => read::cat(a),
        Verb::Stat(a) => read::stat(a),
        Verb::Getxattr(a) => read::getxattr(a),
        Verb::Put(a) => write::put(a),
        Verb::Mkdir(a) => write::mkdir(a),
        Verb::Rm(a) => write::rm(a),
        Verb::Symlink(a) => write::symlink(a),
        Verb::Link(a) => write::link(a),
        Verb::Chmod(a) => write::chmod(a),
        Verb::Chown(a) => write::chown(a),
        Verb::Setxattr(a) => write::setxattr(a),
        Verb::Mkfs(a) => mkfs::run(a),
        Verb::Check(a) => check::run(a),
    }?;
    Ok(ExitCode::SUCCESS)
}
