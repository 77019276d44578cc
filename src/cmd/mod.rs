//! The subcommands. Each module owns its clap arguments and its `run`.

mod cluster;
mod delta;
mod devices;
mod flash;
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
}

/// Runs one subcommand; the returned code is the process exit status.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Delta(args) => delta::run(args),
        Command::Flash(a) => flash::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Devices(a) => devices::run(a),
        Command::Fs(args) => fs::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Stamp(a) => stamp::run(a),
        Command::Cluster(a) => cluster::run(a),
    }
}
