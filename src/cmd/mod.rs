//! The subcommands. Each module owns its clap arguments and its `run`.

pub mod fs;
pub mod size;

use clap::Subcommand;
use std::process::ExitCode;

/// Every `nodeimg` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read and change files inside an image's filesystem, without mounting
    Fs(fs::FsArgs),
}

/// Runs one subcommand; the returned code is the process exit status.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Fs(args) => fs::run(args),
    }
}
