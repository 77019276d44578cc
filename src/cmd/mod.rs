//! The subcommands. Each module owns its clap arguments and its `run`.

use clap::Subcommand;
use std::process::ExitCode;

/// Every `nodeimg` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {}

/// Runs one subcommand; the returned code is the process exit status.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {}
}
