//! `nodeimg completions SHELL` and `nodeimg man`: what a packaged CLI ships.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::path::{Path, PathBuf};
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
    crate::out::stdout_bytes(&buf);
    Ok(ExitCode::SUCCESS)
}

/// `nodeimg man`: the top page on stdout, or every page into a directory.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `nodeimg.1` and one page per subcommand (`nodeimg-flash.1`,
    /// `nodeimg-fs-cat.1`, …) into DIR (created if missing) instead of
    /// printing `nodeimg.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn man(args: ManArgs) -> Result<ExitCode> {
    let mut cmd = crate::Cli::command().disable_help_subcommand(true);
    // Built, every subcommand knows its full name (`nodeimg-fs-cat`), which
    // names its page and the SEE ALSO references of its parent.
    cmd.build();
    let Some(dir) = args.dir else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        crate::out::stdout_bytes(&buf);
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let mut written = 0;
    write_pages(cmd, &dir, &mut written)?;
    sayln!("wrote {written} man pages to {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn write_pages(cmd: clap::Command, dir: &Path, written: &mut usize) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    let man = clap_mangen::Man::new(cmd);
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    imagegen::sink::write_atomic(&dir.join(man.get_filename()), &buf, 0o644)?;
    *written += 1;
    Ok(())
}
