//! The subcommands. Each module owns its clap arguments and its `run`.

mod delta;
mod inspect;

use clap::Subcommand;
use std::process::ExitCode;

/// Every `nodeimg` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, show and apply deltas (a node's changes to its base).
    Delta(delta::DeltaArgs),
    /// Show an image's partition table and filesystems.
    Inspect(inspect::InspectArgs),
}

/// Runs one subcommand; the returned code is the process exit status.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Delta(args) => delta::run(args),
        Command::Inspect(args) => inspect::run(args),
    }
}
