//! The subcommands. Each module owns its clap arguments and its `run`.

mod base;
mod boot;
mod build;
mod cluster;
mod completions;
mod delta;
mod devices;
mod flash;
mod flash_dist;
pub mod fs;
mod inspect;
pub mod size;
pub mod stamp;
pub mod usage;
mod verify;

use clap::Subcommand;
use std::process::ExitCode;

/// Every `nodeimg` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a board's base image once, from an upstream OS image or a root tree.
    Base(Box<base::BaseArgs>),
    /// Create, show and apply deltas (a node's changes to its base).
    Delta(delta::DeltaArgs),
    /// Write an image to one or more cards (sparse, partition table last, verified).
    Flash(flash::FlashArgs),
    /// Read a card back and compare it with an image.
    Verify(verify::VerifyArgs),
    /// List disks a card could be written to, and why others are refused.
    Devices(devices::DevicesArgs),
    /// Read and change files inside an image's filesystem, without mounting
    Fs(fs::FsArgs),
    /// Show an image's partition table and filesystems.
    Inspect(inspect::InspectArgs),
    /// Stamp nodes over a base image: identity, keys, secrets, role bootstrap, as deltas.
    Stamp(stamp::StampArgs),
    /// Check a cluster file and show its public facts (roles, age public key, CA pin).
    Cluster(cluster::ClusterArgs),
    /// Boot nodes under QEMU and check their first boot, before any card is written.
    Boot(boot::BootArgs),
    /// Build a whole cluster's artefacts: base, every node, manifest, SHA256SUMS.
    Build(build::BuildArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff) to stdout, or write every subcommand's page with --dir.
    Man(completions::ManArgs),
}

/// Runs one subcommand; the returned code is the process exit status.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Base(a) => base::run(*a),
        Command::Delta(args) => delta::run(args),
        Command::Flash(a) => flash::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Devices(a) => devices::run(a),
        Command::Fs(args) => fs::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Stamp(a) => stamp::run(a),
        Command::Cluster(a) => cluster::run(a),
        Command::Build(a) => build::run(a),
        Command::Boot(a) => boot::run(a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => completions::man(a),
    }
}
