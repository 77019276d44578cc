//! `nodeimg`: build, stamp and flash SD-card images for clusters of aarch64 boards.
//!
//! Each subcommand lives in its own module under `cmd/`; this file only parses
//! the command line and reports errors as one line on stderr.

mod cmd;
mod signals;

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
    if let Err(err) = signals::install() {
        eprintln!("nodeimg: error: cannot handle signals: {err}");
        return ExitCode::FAILURE;
    }
    let result = cmd::run(cli.command);
    signals::exit_if_interrupted();
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("nodeimg: error: {}", one_line(&err));
            ExitCode::from(cmd::usage::exit_code(&err))
        }
    }
}

/// The context chain joined with ": ", skipping causes whose text the line
/// already carries (library errors embed their I/O source in their message).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let mut text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        // "a.img: a.img: too large": a cause that starts with a path the
        // line already names keeps only its reason.
        if let Some((head, rest)) = text.split_once(": ") {
            if !head.is_empty() && line.contains(head) {
                text = rest.to_string();
            }
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
