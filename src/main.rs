//! `nodeimg`: build, stamp and flash SD-card images for clusters of aarch64 boards.
//!
//! Each subcommand lives in its own module under `cmd/`; this file only parses
//! the command line and reports errors as one line on stderr.

mod cmd;

use clap::Parser;
use std::process::ExitCode;

/// Build, stamp and flash SD-card images for clusters of aarch64 boards.
#[derive(Debug, Parser)]
#[command(name = "nodeimg", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cmd::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            // One line: the context chain joined with ": ".
            eprintln!("nodeimg: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
