//! `nodeimg completions SHELL` and `nodeimg man`: what a packaged CLI ships.

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell, e.g. `nodeimg completions bash > /etc/bash_completion.d/nodeimg`.
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = crate::Cli::command();
    // Into memory first: the generator panics on a write error (a closed pipe).
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "nodeimg", &mut buf);
    emit(&buf)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(buf: &[u8]) -> Result<ExitCode> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(buf) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `nodeimg man > nodeimg.1`.
pub fn man() -> Result<ExitCode> {
    let cmd = crate::Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    emit(&buf)
}
