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
    clap_complete::generate(args.shell, &mut cmd, "nodeimg", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// `nodeimg man > nodeimg.1`.
pub fn man() -> Result<ExitCode> {
    let cmd = crate::Cli::command();
    clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
    Ok(ExitCode::SUCCESS)
}
