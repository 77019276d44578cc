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
/// back past the page cache and its SHA-256 compared with the image's. A
/// card flashed from a build: `verify DIST --device DEV=NODE [--secrets STATE]`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Image the card was written from: raw, or compressed with xz, zstd or
    /// gzip; or a `nodeimg build` output directory (then --device DEV=NODE).
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
    /// Device (or image file) to check; `DEV=NODE` for a card flashed from
    /// a build directory as node NODE.
    #[arg(long, value_name = "DEV")]
    pub device: PathBuf,
    /// With a build directory made with `--secrets defer`: the state file the
    /// card was flashed with, so its secret files are compared too.
    #[arg(long, value_name = "STATE")]
    pub secrets: Option<PathBuf>,
    /// Print progress and the result as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    if super::flash_dist::is_dist(&args.source) {
        return run_dist(&args);
    }
    if args.secrets.is_some() {
        anyhow::bail!("--secrets goes with a `nodeimg build` output directory as SOURCE");
    }
    let prepared = prepare(&Inputs {
        source: &args.source,
        delta: args.delta.as_deref(),
        bmap: args.bmap.as_deref(),
        find_bmap: !args.no_bmap,
        sha256: None,
        exact: true,
    })?;
    compare(
        &args,
        &args.device,
        prepared.source,
        &prepared.plan,
        prepared.checks,
    )
}

/// `verify DIST --device DEV=NODE`: the card against what `flash DIST`
/// wrote for NODE (base ⊕ its artefact ⊕ its secrets, when given).
fn run_dist(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    use pipeline::build::manifest::BuildManifest;
    let dist = &args.source;
    if args.delta.is_some() || args.bmap.is_some() {
        anyhow::bail!(
            "--delta and --bmap go with an image as SOURCE; a build directory names its own"
        );
    }
    let m = BuildManifest::load(&dist.join(pipeline::build::MANIFEST))?;
    let text = args.device.to_string_lossy();
    let Some((dev, node)) = text.split_once('=') else {
        anyhow::bail!(
            "--device {text}: say which node the card was flashed as (--device DEV=NODE)"
        );
    };
    let Some(n) = m.node(node) else {
        let names: Vec<&str> = m.nodes.iter().map(|n| n.hostname.as_str()).collect();
        anyhow::bail!(
            "node {node}: not in this build's manifest (nodes: {})",
            names.join(", ")
        );
    };
    let state = super::flash_dist::load_state(args.secrets.as_deref(), &m, dist)?;
    let mut files = vec![
        pipeline::build::MANIFEST,
        m.base.image.as_str(),
        m.base.bmap.as_str(),
        n.artefact.as_str(),
    ];
    if let (Some(s), Some(_)) = (&n.secrets, &state) {
        files.push(s);
    }
    super::flash_dist::check_sums(dist, &files)?;
    let bmap = flasher::bmap::Bmap::load(&dist.join(&m.base.bmap))?;
    crate::signals::doing(format!(
        "verifying {dev} as node {node}: unpacking the base"
    ));
    let mut spool = super::flash_dist::unpack(dist, &m, &[node], state.as_ref(), &bmap)?;
    let (source, plan, changed) = spool.cards.remove(0);
    let checks = flasher::bmap::RangeVerifier::new(&bmap, &changed);
    compare(args, std::path::Path::new(dev), source, &plan, checks)
}

/// Reads `device` back over `plan`'s ranges and compares it with `source`.
fn compare(
    args: &VerifyArgs,
    device: &std::path::Path,
    source: flasher::source::Source,
    plan: &flasher::plan::Plan,
    checks: Option<flasher::bmap::RangeVerifier>,
) -> anyhow::Result<ExitCode> {
    let target = DeviceTarget::open_read_only(device)
        .with_context(|| format!("opening {}", device.display()))?;
    let name = device.display().to_string();
    let device_size = flasher::target::Target::size(&target);
    if device_size < plan.image_size {
        anyhow::bail!(
            "{name}: device shorter than the image ({device_size} bytes, the image has {}); it cannot hold it",
            plan.image_size
        );
    }
    crate::signals::doing(format!("verifying {name}"));
    let cancel = flasher::interrupt::flag();
    crate::signals::cooperate(cancel, "the card was not fully compared");
    let t0 = Instant::now();
    let random = source.random_access();
    let (_, read) = flasher::writer::write_all(
        source,
        plan,
        &[],
        flasher::writer::Options {
            verify: false,
            hash: true,
            checks,
        },
        &Silent,
        cancel,
    );
    let read = read.with_context(|| format!("reading {}", args.source.display()))?;
    let hashes = read.hashes;
    let observer: Box<dyn Observer> = if args.json {
        Box::new(JsonLines::new(vec![name.clone()]))
    } else if crate::out::quiet() || crate::out::verbose() {
        Box::new(flasher::progress::Silent)
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
