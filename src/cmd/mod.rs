//! The subcommands. Each module owns its clap arguments and its `run`.

mod inspect;
pub mod fs;
pub mod size;

use clap::Subcommand;
use std::process::ExitCode;

/// Every `nodeimg` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read and change files inside an image's filesystem, without mounting
    Fs(fs::FsArgs),
    /// Show an image's partition table and filesystems.
    Inspect(inspect::InspectArgs),
}

/// Runs one subcommand; the returned code is the process exit status.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Fs(args) => fs::run(args),
        Command::Inspect(args) => inspect::run(args),
    }
}
