//! `nodeimg delta`: create, inspect and apply delta files (format in
//! `imagegen::delta` and docs/delta.md).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use imagegen::delta::{self, Delta, DeltaInfo};
use imagegen::sink::{check_output, OutputFormat};
use imagegen::source::to_hex;
use std::path::PathBuf;
use std::process::ExitCode;

/// Work with deltas: the blocks a node image changed relative to its base.
#[derive(Debug, Args)]
pub struct DeltaArgs {
    #[command(subcommand)]
    pub command: DeltaCommand,
}

#[derive(Debug, Subcommand)]
pub enum DeltaCommand {
    /// Rebuild a node image from its base and its delta, bit for bit.
    Apply {
        /// The base image the delta was made against (raw, .xz, .zst or .gz).
        base: PathBuf,
        /// The delta file.
        delta: PathBuf,
        /// Where to write the result; a name ending in .zst is zstd-compressed,
        /// anything else is a sparse raw image.
        #[arg(short, long)]
        output: PathBuf,
        /// Replace OUTPUT if it exists (never when it is BASE or DELTA).
        #[arg(long)]
        force: bool,
    },
    /// Record how MODIFIED differs from BASE as a delta file.
    Create {
        /// The base image (raw or compressed).
        base: PathBuf,
        /// The modified image, same size as the base (raw or compressed).
        modified: PathBuf,
        /// Where to write the delta (created with mode 0600).
        #[arg(short, long)]
        output: PathBuf,
        /// Replace OUTPUT if it exists (never when it is BASE or MODIFIED).
        #[arg(long)]
        force: bool,
    },
    /// Show a delta's base identity and changed ranges.
    Info {
        /// The delta file.
        delta: PathBuf,
        /// Print JSON (documented in docs/delta.md) instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: DeltaArgs) -> Result<ExitCode> {
    match args.command {
        DeltaCommand::Apply {
            base,
            delta,
            output,
            force,
        } => {
            check_output(&output, force, &[&base, &delta])?;
            let d = Delta::open(&delta)?;
            let size = delta::apply_file(&base, &d, &output, OutputFormat::from_path(&output))
                .with_context(|| format!("applying {}", delta.display()))?;
            notice!(
                "wrote {} ({size} bytes, {} changed ranges)",
                output.display(),
                d.ranges().len()
            );
        }
        DeltaCommand::Create {
            base,
            modified,
            output,
            force,
        } => {
            check_output(&output, force, &[&base, &modified])?;
            let info = delta::create_from_images(&base, &modified, &output, delta::DEFAULT_BLOCK)
                .with_context(|| format!("creating delta {}", output.display()))?;
            notice!(
                "wrote {}: {} changed bytes in {} ranges",
                output.display(),
                info.changed_bytes(),
                info.ranges.len()
            );
        }
        DeltaCommand::Info { delta, json } => {
            let d = Delta::open(&delta)?;
            let file_size = std::fs::metadata(&delta)
                .with_context(|| delta.display().to_string())?
                .len();
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&info_json(d.info(), file_size))?
                );
            } else {
                print_info(d.info(), file_size);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn info_json(info: &DeltaInfo, file_size: u64) -> serde_json::Value {
    serde_json::json!({
        "version": info.version,
        "block_size": info.block_size,
        "base": { "size": info.base.size, "sha256": to_hex(&info.base.sha256) },
        "file_size": file_size,
        "changed_bytes": info.changed_bytes(),
        "ranges": info.ranges.iter().map(|r| serde_json::json!({"offset": r.offset, "length": r.len})).collect::<Vec<_>>(),
    })
}

fn print_info(info: &DeltaInfo, file_size: u64) {
    outln!("format version: {}", info.version);
    outln!("block size:     {}", info.block_size);
    outln!("base size:      {}", info.base.size);
    outln!("base sha256:    {}", to_hex(&info.base.sha256));
    outln!("delta size:     {file_size}");
    outln!(
        "changed:        {} bytes in {} ranges",
        info.changed_bytes(),
        info.ranges.len()
    );
    for r in &info.ranges {
        outln!("  {:>14} +{}", r.offset, r.len);
    }
}
