//! `nodeimg flash DIST --device DEV=NODE`: cards written as nodes of a
//! `nodeimg build` output directory.
//!
//! Every artefact read is checked against `SHA256SUMS` before the first
//! write; the base is decompressed once (sparse, into a temporary file) and
//! every card gets base ⊕ its node's delta, written with the build's
//! `base.img.bmap` plus the ranges the node changes. The cards are written
//! at once, one writer per card over that one base file (read from disk
//! once, then from the page cache); every check, refusal and confirmation
//! comes before the first card is opened. With a build made with
//! `--secrets defer`, `--secrets STATE` opens each node's sealed secret
//! files in memory and writes them onto the card through an overlay: they
//! never reach a disk other than the card.

use super::flash::FlashArgs;
use anyhow::{bail, Context, Result};
use flasher::bmap::Bmap;
use flasher::plan::{self, Hints};
use flasher::policy::human;
use flasher::progress::{Bars, JsonLines, Observer};
use flasher::ranges::{Extent, RangeSet};
use flasher::source::Source;
use flasher::target::Target;
use flasher::writer::CardWrite;
use imagegen::block::{BlockDevice, FileDevice, Overlay};
use imagegen::delta::{Delta, Patched};
use imagegen::fs::{OpenOptions, Timestamp};
use imagegen::sink::{write_image, OutputFormat};
use imagegen::source::ImageSource;
use pipeline::build::manifest::{parse_sums, sha256_of, BuildManifest};
use pipeline::build::{deferred, SecretsMode, MANIFEST, SUMS};
use pipeline::osimage::OsImage;
use pipeline::secrets::State;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// True when SOURCE is a `nodeimg build` output directory.
pub fn is_dist(source: &Path) -> bool {
    source.is_dir() && source.join(MANIFEST).is_file()
}

/// One card and the node it becomes.
struct Card {
    device: PathBuf,
    node: String,
}

fn cards(args: &FlashArgs, manifest: &BuildManifest) -> Result<Vec<Card>> {
    let mut out = Vec::new();
    for d in &args.devices {
        let s = d.to_string_lossy();
        let (device, node) = match (s.split_once('='), &args.node) {
            (Some((dev, node)), _) => (PathBuf::from(dev), node.to_string()),
            (None, Some(node)) if args.devices.len() == 1 => (d.clone(), node.clone()),
            _ => bail!(
                "--device {s}: say which node it becomes (--device DEV=NODE, or --node NODE with one --device)"
            ),
        };
        if manifest.node(&node).is_none() {
            let names: Vec<&str> = manifest.nodes.iter().map(|n| n.hostname.as_str()).collect();
            bail!(
                "node {node}: not in this build's manifest (nodes: {})",
                names.join(", ")
            );
        }
        out.push(Card { device, node });
    }
    Ok(out)
}

/// Checks the files the flash reads against SHA256SUMS.
pub(super) fn check_sums(dist: &Path, files: &[&str]) -> Result<()> {
    let text = std::fs::read_to_string(dist.join(SUMS))
        .with_context(|| format!("reading {}", dist.join(SUMS).display()))?;
    let sums = parse_sums(&text)?;
    for f in files {
        let want = sums.get(*f).with_context(|| {
            format!("{}: {f} is not listed in {SUMS}; refusing", dist.display())
        })?;
        let got = imagegen::source::to_hex(&sha256_of(&dist.join(f))?);
        if &got != want {
            bail!(
                "{}: SHA-256 mismatch (SHA256SUMS says {want}, the file has {got}); nothing was written",
                dist.join(f).display()
            );
        }
    }
    Ok(())
}

/// Loads the state for a deferred build, refusing another cluster's.
pub(super) fn load_state(
    secrets: Option<&Path>,
    m: &BuildManifest,
    dist: &Path,
) -> Result<Option<State>> {
    if m.secrets != SecretsMode::Defer || m.nodes.iter().all(|n| n.secrets.is_none()) {
        return Ok(None);
    }
    let Some(path) = secrets else {
        bail!(
            "{} was built with --secrets defer: give --secrets PATH, the state file `nodeimg build` used (cluster.state beside the cluster file; in CI, from the secret store)",
            dist.display()
        );
    };
    if !path.is_file() {
        bail!("--secrets {}: no such state file", path.display());
    }
    let state =
        State::open(path, &m.cluster).with_context(|| format!("--secrets {}", path.display()))?;
    if state.fingerprint() != m.state_fingerprint {
        bail!(
            "--secrets {}: not the state this build was made with (fingerprint differs); refusing",
            path.display()
        );
    }
    Ok(Some(state))
}

pub fn run(args: FlashArgs) -> Result<ExitCode> {
    let dist = args.source.clone();
    let m = BuildManifest::load(&dist.join(MANIFEST))?;
    let cards = cards(&args, &m)?;
    let state = load_state(args.secrets.as_deref(), &m, &dist)?;
    let mut files = vec![MANIFEST, m.base.image.as_str(), m.base.bmap.as_str()];
    for c in &cards {
        let n = m.node(&c.node).context("node not in manifest")?;
        files.push(&n.artefact);
        if let (Some(s), Some(_)) = (&n.secrets, &state) {
            files.push(s);
        }
    }
    check_sums(&dist, &files)?;
    let bmap = Bmap::load(&dist.join(&m.base.bmap))?;
    let size = m.base.manifest.image.size;

    // Devices: every rule, every refusal, before anything is opened.
    let paths: Vec<PathBuf> = cards.iter().map(|c| c.device.clone()).collect();
    let disks = super::flash::check_devices(&args, &paths, size)?;
    if args.dry_run {
        if args.json {
            let plan: Vec<_> = cards
                .iter()
                .zip(&disks)
                .map(|(c, d)| {
                    let n = m.node(&c.node);
                    json!({
                        "device": d.path,
                        "size": d.size,
                        "node": c.node,
                        "artefact": n.map(|n| n.artefact.as_str()),
                        "secrets": n.and_then(|n| n.secrets.as_deref()).filter(|_| state.is_some()),
                    })
                })
                .collect();
            JsonLines::emit(&json!({
                "event": "dry_run",
                "source": dist,
                "image_size": size,
                "base": m.base.image,
                "bmap": m.base.bmap,
                "cards": plan,
            }));
            return Ok(ExitCode::SUCCESS);
        }
        for (c, d) in cards.iter().zip(&disks) {
            let n = m.node(&c.node);
            outln!(
                "would write {} ({}) as node {}: {} + {}{}, ranges from {}",
                d.path,
                human(d.size),
                c.node,
                m.base.image,
                n.map_or("?", |n| n.artefact.as_str()),
                match (n.and_then(|n| n.secrets.as_deref()), &state) {
                    (Some(s), Some(_)) => format!(" + {s} (opened with --secrets)"),
                    _ => String::new(),
                },
                m.base.bmap
            );
        }
        sayln!("dry run: nothing was opened for writing");
        return Ok(ExitCode::SUCCESS);
    }
    super::flash::confirm(&disks, args.yes)?;

    crate::signals::doing(format!(
        "flashing {}: unpacking the base before any card was opened",
        dist.display()
    ));
    let _stage = tracing::info_span!("flash").entered();
    let t0 = std::time::Instant::now();
    let nodes: Vec<&str> = cards.iter().map(|c| c.node.as_str()).collect();
    let spool = unpack(&dist, &m, &nodes, state.as_ref(), &bmap)?;
    tracing::info!(
        secs = format_args!("{:.2}", t0.elapsed().as_secs_f64()),
        "unpacked the base and planned every card; writing"
    );
    let mut writes = Vec::new();
    for ((source, plan, changed), d) in spool.cards.into_iter().zip(&disks) {
        let target: Arc<dyn Target> = Arc::new(super::flash::open_target(d)?);
        // The base's bmap vouches for the base's bytes; what the node
        // changes is vouched for by the delta's own checksums.
        let checks = flasher::bmap::RangeVerifier::new(&bmap, &changed);
        writes.push(CardWrite {
            source,
            plan,
            target,
            opts: flasher::writer::Options {
                verify: !args.no_verify,
                hash: false,
                checks,
            },
        });
    }
    let skipped: Vec<u64> = writes.iter().map(|w| w.plan.skipped()).collect();

    crate::signals::doing(format!("flashing {}", dist.display()));
    // Every card at once, each from its own source over the one base.
    let cancel = flasher::interrupt::flag();
    crate::signals::cooperate(
        cancel,
        "the cards hold part of their nodes' images; no partition table was written after the interruption",
    );
    let names: Vec<String> = disks.iter().map(|d| d.path.clone()).collect();
    let observer: Box<dyn Observer> = if args.json {
        Box::new(JsonLines::new(names))
    } else if crate::out::quiet() || crate::out::verbose() {
        Box::new(flasher::progress::Silent)
    } else {
        Box::new(Bars::new(names))
    };
    let results = flasher::writer::write_each(writes, &*observer, cancel);
    drop(observer);
    // Interrupted: main prints the one line that says so; JSON readers
    // still get their summary on stdout.
    let interrupted = crate::signals::interrupted();
    if interrupted && !args.json {
        return Ok(ExitCode::FAILURE);
    }
    let mut devices = Vec::new();
    let mut ok = Vec::new();
    let mut code = None;
    for (((report, read), c), (d, skipped)) in results
        .into_iter()
        .zip(&cards)
        .zip(disks.iter().zip(skipped))
    {
        // Verification runs inside the write, before the partition table.
        let verification = match (&report.result, &read, args.no_verify) {
            (_, _, true) => "skipped",
            (Ok(()), Ok(_), false) => "ok",
            (Err(flasher::Error::Mismatch { .. }), _, false) => "failed",
            _ => "not run",
        };
        if code.is_none() {
            code = match (&report.result, &read) {
                (Err(e), _) => Some(crate::exit::flasher(e)),
                (Ok(()), Err(e)) => Some(crate::exit::flasher(e)),
                _ => None,
            };
        }
        let result = report
            .result
            .map_err(anyhow::Error::from)
            .and_then(|()| read.map(|_| ()).map_err(anyhow::Error::from));
        ok.push(result.is_ok());
        match &result {
            Ok(()) if !args.json => notice!(
                "{}: node {} — wrote {} ({} skipped); verification {verification}",
                d.path,
                c.node,
                human(report.written),
                human(skipped)
            ),
            Ok(()) => {}
            Err(e) => eprintln!("nodeimg: error: {} (node {}): {e:#}", d.path, c.node),
        }
        devices.push(json!({
            "device": d.path,
            "node": c.node,
            "ok": result.is_ok(),
            "bytes_written": report.written,
            "bytes_skipped": skipped,
            "write_seconds": report.seconds,
            "verify_seconds": report.verify_seconds,
            "verification": verification,
            "error": result.err().map(|e| format!("{e:#}")),
        }));
    }
    if args.json {
        JsonLines::emit(&json!({
            "event": "summary",
            "source": dist,
            "ok": !ok.contains(&false) && !interrupted,
            "image_size": size,
            "devices": devices,
        }));
    }
    if interrupted {
        return Ok(ExitCode::FAILURE);
    }
    // Where the platform ejects a flashed card (macOS), as `flash` does.
    super::flash::eject_flashed(&args, &disks, &ok);
    // The first failed card's code: 4 for a read-back difference, 5 for a
    // device error, 3 for a source that does not decode.
    Ok(match code {
        Some(c) => c.into(),
        None if ok.contains(&false) => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
    })
}

/// Every card's source, prepared before any card is opened: the base
/// unpacked once into a registered temporary directory (an interrupt
/// removes it), and per node base ⊕ its artefact (⊕ its opened secrets),
/// with the plan a flash writes and the ranges the node changes.
pub(super) struct Spool {
    /// Keeps the temporary directory until the cards are written.
    _dir: imagegen::sink::PendingDir,
    pub cards: Vec<(Source, flasher::plan::Plan, RangeSet)>,
}

pub(super) fn unpack(
    dist: &Path,
    m: &BuildManifest,
    nodes: &[&str],
    state: Option<&State>,
    bmap: &Bmap,
) -> Result<Spool> {
    // The base, read once: every card's source reads this one file, which
    // the page cache then serves to the other cards' writers.
    let dir = imagegen::sink::PendingDir::temp("nodeimg-flash-")
        .context("making a temporary directory")?;
    let base_path = dir.path().join("base.img");
    write_image(
        ImageSource::open(dist.join(&m.base.image))?,
        &base_path,
        OutputFormat::Raw,
        Some(m.base.manifest.image.size),
    )
    .context("decompressing the base")?;
    let base_dev = FileDevice::open(&base_path)?;
    let base_file = base_dev.file().try_clone().context("base file")?;
    let base: Arc<dyn BlockDevice> = Arc::new(base_dev);
    let now = secrets_time(m)?;

    // Each card's source and plan, one after another (stamping secrets
    // works on an image that stays on this thread); a node that cannot be
    // prepared stops before any card is opened.
    let mut cards = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let n = m.node(node).context("node not in manifest")?;
        let (dev, changed) = card_source(
            dist,
            n.artefact.as_str(),
            n.secrets.as_deref().zip(state),
            node,
            &base,
            &dir.path().join(format!("node{i}.img")),
            now,
        )?;
        let source = Source::Random(dev);
        let plan = plan::build(
            &source,
            &Hints {
                bmap: Some(bmap),
                sparse_file: Some(&base_file),
                changed: Some(&changed),
                exact: false,
            },
        )?;
        cards.push((source, plan, changed));
    }
    Ok(Spool { _dir: dir, cards })
}

/// The time given to the secret files written at flash time: the build's
/// `SOURCE_DATE_EPOCH`, else the time the build stamped its nodes, so
/// `nodeimg verify DIST --secrets` recomputes the very bytes a flash wrote.
fn secrets_time(m: &BuildManifest) -> Result<Timestamp> {
    match m.source_date_epoch.or(m.stamped_at) {
        Some(secs) => Ok(Timestamp { secs, nanos: 0 }),
        // A manifest of an older nodeimg: the clock, as it used.
        None => Ok(Timestamp::now()?),
    }
}

/// A card's source as a random-access device, and the ranges it changes
/// over the base: base ⊕ the node's artefact, with the node's sealed
/// secrets (a deferred build) stamped into an in-memory overlay on top.
fn card_source(
    dist: &Path,
    artefact: &str,
    secrets: Option<(&str, &State)>,
    node: &str,
    base: &Arc<dyn BlockDevice>,
    scratch: &Path,
    now: Timestamp,
) -> Result<(Arc<dyn BlockDevice>, RangeSet)> {
    let (node_dev, changed) = node_source(dist, artefact, base, scratch)?;
    let Some((sealed_name, state)) = secrets else {
        return Ok((node_dev, changed));
    };
    let sealed = std::fs::read(dist.join(sealed_name))
        .with_context(|| format!("reading {}", dist.join(sealed_name).display()))?;
    let ops = deferred::open(state, node, &sealed, sealed_name)?;
    let overlay = Arc::new(Overlay::new(node_dev)?);
    let mut img = OsImage::open(
        overlay.clone(),
        OpenOptions {
            writable: true,
            now,
            scrub: true,
        },
    )?;
    img.apply(&ops)
        .with_context(|| format!("node {node}: writing its secret files"))?;
    img.flush()?;
    drop(img);
    let mut ext: Vec<Extent> = changed.extents().to_vec();
    ext.extend(
        overlay
            .changed_ranges()?
            .into_iter()
            .map(|(o, l)| Extent::new(o, o + l)),
    );
    Ok((overlay, RangeSet::from_extents(ext)))
}

/// A node's image as a random-access device, and the ranges it changes
/// over the base: base ⊕ delta, or a full node image decompressed into
/// `scratch` (one per card: the cards are written at once).
fn node_source(
    dist: &Path,
    artefact: &str,
    base: &Arc<dyn BlockDevice>,
    scratch: &Path,
) -> Result<(Arc<dyn BlockDevice>, RangeSet)> {
    let path = dist.join(artefact);
    if artefact.ends_with(".delta") {
        let delta = Delta::open(&path)?;
        let changed = RangeSet::from_extents(
            delta
                .ranges()
                .iter()
                .map(|r| Extent::new(r.offset, r.end()))
                .collect(),
        );
        let patched = Patched::new(base.clone(), delta)?;
        return Ok((Arc::new(patched), changed));
    }
    let size = base.size();
    write_image(
        ImageSource::open(&path)?,
        scratch,
        OutputFormat::Raw,
        Some(size),
    )?;
    // A full image: everything that differs from the base is written.
    Ok((Arc::new(FileDevice::open(scratch)?), RangeSet::full(size)))
}
