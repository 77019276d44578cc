//! `nodeimg verify`: read a card back and compare it with the image.

use super::flash::{prepare, Inputs};
use anyhow::Context;
use clap::Args;
use flasher::progress::{Bars, JsonLines, Observer, Silent};
use flasher::target::DeviceTarget;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Check that a card holds the image: every range a flash would write is read
/// back past the page cache and its SHA-256 compared with the image's.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Image the card was written from: raw, or compressed with xz, zstd or gzip.
    pub source: PathBuf,
    /// Node delta the card was written with (SOURCE is then its base image).
    #[arg(long, value_name = "NODE.delta")]
    pub delta: Option<PathBuf>,
    /// bmap file the card was written with: compare exactly the blocks it lists (and check the
    /// image against its range checksums). Without this flag, IMAGE.bmap beside the image is used.
    #[arg(long, value_name = "FILE", conflicts_with = "no_bmap")]
    pub bmap: Option<PathBuf>,
    /// Do not look for a bmap beside the image.
    #[arg(long)]
    pub no_bmap: bool,
    /// Device (or image file) to check.
    #[arg(long, value_name = "DEV")]
    pub device: PathBuf,
    /// Print progress and the result as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let prepared = prepare(&Inputs {
        source: &args.source,
        delta: args.delta.as_deref(),
        bmap: args.bmap.as_deref(),
        find_bmap: !args.no_bmap,
        sha256: None,
        exact: true,
    })?;
    let target = DeviceTarget::open_read_only(&args.device)
        .with_context(|| format!("opening {}", args.device.display()))?;
    let name = args.device.display().to_string();
    let device_size = flasher::target::Target::size(&target);
    if device_size < prepared.plan.image_size {
        anyhow::bail!(
            "{name}: device shorter than the image ({device_size} bytes, the image has {}); it cannot hold it",
            prepared.plan.image_size
        );
    }
    let cancel = flasher::interrupt::flag();
    crate::signals::cooperate(cancel, "the card was not fully compared");
    let t0 = Instant::now();
    let random = prepared.source.random_access();
    let (_, read) = flasher::writer::write_all(
        prepared.source,
        &prepared.plan,
        &[],
        flasher::writer::Options {
            verify: false,
            hash: true,
            checks: prepared.checks,
        },
        &Silent,
        cancel,
    );
    let read = read.with_context(|| format!("reading {}", args.source.display()))?;
    let hashes = read.hashes;
    let observer: Box<dyn Observer> = if args.json {
        Box::new(JsonLines::new(vec![name.clone()]))
    } else {
        Box::new(Bars::new(vec![name.clone()]))
    };
    let result =
        flasher::verify::verify_target(&target, &hashes, random.as_deref(), 0, &*observer, cancel);
    drop(observer);
    if crate::signals::interrupted() {
        return Ok(ExitCode::FAILURE);
    }
    let secs = t0.elapsed().as_secs_f64();
    let bytes: u64 = hashes.iter().map(|h| u64::from(h.len)).sum();
    if args.json {
        JsonLines::emit(&json!({
            "event": "summary",
            "device": name,
            "ok": result.is_ok(),
            "bytes_compared": bytes,
            "seconds": secs,
            "verification": if result.is_ok() { "ok" } else { "failed" },
            "error": result.as_ref().err().map(|e| e.to_string()),
        }));
    }
    match result {
        Ok(()) => {
            if !args.json {
                notice!(
                    "{name}: verification ok: {} bytes compared in {secs:.1} s",
                    bytes
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}
