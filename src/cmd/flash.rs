//! `nodeimg flash`: write an image to one or more cards, safely, sparsely, verified.

use anyhow::{bail, Context};
use clap::Args;
use flasher::devices::Disk;
use flasher::plan::{self, Hints, Plan};
use flasher::policy::{self, human};
use flasher::progress::{Bars, JsonLines, Observer};
use flasher::source::Source;
use flasher::target::{DeviceTarget, Target};
use flasher::{bmap::Bmap, verify};
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// Write an image to one or more cards: only the blocks that matter, the
/// partition table last, every written byte read back and compared.
#[derive(Debug, Args)]
pub struct FlashArgs {
    /// Image to write: a raw disk image, or one compressed with xz, zstd or gzip (recognised by content).
    pub source: PathBuf,
    /// Whole-disk device to write, e.g. /dev/sdb or /dev/disk4; repeat to write several cards from one read of the image.
    #[arg(long = "device", value_name = "DEV", required = true)]
    pub devices: Vec<PathBuf>,
    /// Node delta (from `nodeimg stamp`) applied on the fly: SOURCE is then its base image.
    #[arg(long, value_name = "NODE.delta")]
    pub delta: Option<PathBuf>,
    /// bmaptool block map of the image: write only the blocks it lists (plus what a delta changes).
    #[arg(long, value_name = "FILE")]
    pub bmap: Option<PathBuf>,
    /// Do not ask for confirmation (required when there is no terminal).
    #[arg(long)]
    pub yes: bool,
    /// Skip reading the cards back after writing.
    #[arg(long)]
    pub no_verify: bool,
    /// Run every check and print the plan, but open nothing for writing.
    #[arg(long)]
    pub dry_run: bool,
    /// Accept non-removable (internal, fixed) disks as targets.
    #[arg(long)]
    pub allow_fixed: bool,
    /// Refuse a target with mounted partitions instead of unmounting them.
    #[arg(long)]
    pub no_unmount: bool,
    /// Print progress and the final summary as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// Keep each card attached after writing (macOS ejects a flashed card so it can be pulled; Linux never ejects).
    #[arg(long)]
    pub no_eject: bool,
}

/// The image, its plan and what decided it: shared by `flash` and `verify`.
pub(crate) struct Prepared {
    pub source: Source,
    pub plan: Plan,
}

/// Opens SOURCE and plans which ranges matter.
pub(crate) fn prepare(
    source: &Path,
    delta: Option<&Path>,
    bmap: Option<&Path>,
) -> anyhow::Result<Prepared> {
    let bmap = bmap.map(Bmap::load).transpose()?;
    let image = flasher::source::open(source, delta, bmap.as_ref().map(|b| b.image_size))
        .with_context(|| format!("opening image {}", source.display()))?;
    let plan = plan::build(
        &image.source,
        &Hints {
            bmap: bmap.as_ref(),
            sparse_file: image.sparse_file.as_ref(),
            changed: Some(&image.changed),
        },
    )
    .with_context(|| format!("planning the write of {}", source.display()))?;
    Ok(Prepared {
        source: image.source,
        plan,
    })
}

fn describe_plan(p: &Plan) -> String {
    let mut s = format!(
        "plan: {} of {} to write ({} skipped), partition table last ({} bytes)\n",
        human(p.bytes()),
        human(p.image_size),
        human(p.skipped()),
        p.table.bytes()
    );
    for r in &p.regions {
        s += &format!(
            "  {} [{}..{}): {} to write ({})\n",
            r.what,
            r.start,
            r.start + r.len,
            human(r.mapped),
            r.provider
        );
    }
    s
}

fn plan_json(p: &Plan) -> serde_json::Value {
    json!({
        "image_size": p.image_size,
        "bytes_to_write": p.bytes(),
        "bytes_skipped": p.skipped(),
        "write": p.write.extents(),
        "table": p.table.extents(),
        "regions": p.regions,
    })
}

/// Finds each device and applies every safety rule; all refusals are reported.
fn check_devices(args: &FlashArgs, image_size: u64) -> anyhow::Result<Vec<Disk>> {
    let opts = policy::Options {
        allow_fixed: args.allow_fixed,
        no_unmount: args.no_unmount,
    };
    let mut disks: Vec<Disk> = Vec::new();
    let mut refused = Vec::new();
    for dev in &args.devices {
        match flasher::devices::find(dev) {
            Ok(d) => {
                // Two paths to one disk (a symlink, /dev/diskN and /dev/rdiskN)
                // are one disk: compare device numbers, not strings.
                if let Some(o) = disks.iter().find(|o| {
                    o.write_path == d.write_path
                        || (o.device_number.is_some() && o.device_number == d.device_number)
                }) {
                    if o.path == d.path {
                        bail!("{} is given twice", d.path);
                    }
                    bail!(
                        "{} is given twice: {} and {} are the same disk",
                        o.path,
                        o.path,
                        dev.display()
                    );
                }
                for reason in policy::refusals(&d, Some(image_size), opts) {
                    refused.push(format!("refusing {}: {reason}", d.path));
                }
                disks.push(d);
            }
            Err(e) => refused.push(e.to_string()),
        }
    }
    if !refused.is_empty() {
        bail!("{}", refused.join("; "));
    }
    Ok(disks)
}

/// Outcome of one device, for the summary.
struct Outcome {
    device: String,
    written: u64,
    write_seconds: f64,
    verify_seconds: f64,
    verification: &'static str,
    error: Option<String>,
}

pub fn run(args: FlashArgs) -> anyhow::Result<ExitCode> {
    let prepared = prepare(&args.source, args.delta.as_deref(), args.bmap.as_deref())?;
    let plan = &prepared.plan;
    let disks = check_devices(&args, plan.image_size)?;
    if args.dry_run {
        if args.json {
            JsonLines::emit(&json!({
                "event": "plan",
                "source": args.source,
                "plan": plan_json(plan),
                "devices": disks,
            }));
        } else {
            print!("{}", describe_plan(plan));
            for d in &disks {
                let mounted: Vec<&str> = policy::media_mounts(d)
                    .iter()
                    .map(|m| m.mountpoint.as_str())
                    .collect();
                println!(
                    "would write {} ({}, {}){}{}: every check passed",
                    d.path,
                    human(d.size),
                    d.transport,
                    if mounted.is_empty() {
                        String::new()
                    } else {
                        format!(" after unmounting {}", mounted.join(", "))
                    },
                    if flasher::devices::should_eject(
                        flasher::platform::EJECTS,
                        true,
                        args.no_eject
                    ) {
                        ", then eject it"
                    } else {
                        ""
                    }
                );
            }
            println!("dry run: nothing was opened for writing");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let refs: Vec<&Disk> = disks.iter().collect();
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    policy::confirm(
        &refs,
        args.yes,
        interactive,
        &mut std::io::stdin().lock(),
        &mut std::io::stderr(),
    )?;
    let mut targets: Vec<Arc<dyn Target>> = Vec::new();
    for d in &disks {
        if !policy::media_mounts(d).is_empty() {
            let gone = flasher::devices::unmount(d)?;
            if !gone.is_empty() {
                eprintln!("{}: unmounted {}", d.path, gone.join(", "));
            }
        }
        let t = DeviceTarget::open_sized(Path::new(&d.write_path), d.size).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                anyhow::anyhow!(
                    "{} is in use (mounted or opened exclusively by another program)",
                    d.path
                )
            } else {
                anyhow::anyhow!("opening {} for writing: {e}", d.path)
            }
        })?;
        t.check_identity(d)?;
        targets.push(Arc::new(t));
    }
    let names: Vec<String> = disks.iter().map(|d| d.path.clone()).collect();
    let observer: Box<dyn Observer> = if args.json {
        Box::new(JsonLines::new(names.clone()))
    } else {
        Box::new(Bars::new(names.clone()))
    };
    let cancel = flasher::interrupt::install();
    let random = prepared.source.random_access();
    let (reports, hashes) = flasher::writer::write_all(
        prepared.source,
        plan,
        &targets,
        !args.no_verify,
        &*observer,
        cancel,
    );
    let mut source_error = None;
    let hashes = match hashes {
        Ok(h) => Some(h),
        Err(e) => {
            source_error = Some(format!("{e:#}"));
            None
        }
    };
    let mut outcomes: Vec<Outcome> = reports
        .into_iter()
        .zip(&names)
        .map(|(r, name)| Outcome {
            device: name.clone(),
            written: r.written,
            write_seconds: r.seconds,
            verify_seconds: 0.0,
            verification: if args.no_verify { "skipped" } else { "not run" },
            error: r.result.err().map(|e| e.to_string()),
        })
        .collect();
    if let (false, Some(hashes)) = (args.no_verify, &hashes) {
        verify_all(
            &targets,
            hashes,
            random.as_deref(),
            &*observer,
            cancel,
            &mut outcomes,
        );
    }
    drop(observer);
    drop(targets);
    let code = summarise(&args, plan, &outcomes, source_error.as_deref());
    if source_error.is_none() {
        eject_flashed(&args, &disks, &outcomes);
    }
    Ok(code)
}

/// Ejects each card whose write (and verification) succeeded, where the
/// platform wants it; says so, or why not.
fn eject_flashed(args: &FlashArgs, disks: &[Disk], outcomes: &[Outcome]) {
    for (d, o) in disks.iter().zip(outcomes) {
        let ok = o.error.is_none();
        if !flasher::devices::should_eject(flasher::platform::EJECTS, ok, args.no_eject) {
            continue;
        }
        match flasher::devices::eject(d) {
            Ok(true) => eprintln!("{}: ejected; the card can be removed", d.path),
            Ok(false) => {}
            Err(e) => eprintln!("nodeimg: warning: {}: not ejected: {e}", d.path),
        }
    }
}

fn verify_all(
    targets: &[Arc<dyn Target>],
    hashes: &verify::HashList,
    source: Option<&dyn imagegen::block::BlockDevice>,
    observer: &dyn Observer,
    cancel: &AtomicBool,
    outcomes: &mut [Outcome],
) {
    std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .zip(outcomes.iter())
            .enumerate()
            .filter(|(_, (_, o))| o.error.is_none())
            .map(|(i, (t, _))| {
                let t = t.clone();
                (
                    i,
                    s.spawn(move || {
                        let t0 = Instant::now();
                        let r = verify::verify_target(&*t, hashes, source, i, observer, cancel);
                        if r.is_err() {
                            observer.failed(i);
                        }
                        (r, t0.elapsed().as_secs_f64())
                    }),
                )
            })
            .collect();
        for (i, h) in handles {
            let (r, secs) = h.join().expect("verify thread does not panic");
            let o = &mut outcomes[i];
            o.verify_seconds = secs;
            match r {
                Ok(()) => o.verification = "ok",
                Err(e) => {
                    o.verification = "failed";
                    o.error = Some(e.to_string());
                }
            }
        }
    });
}

fn summarise(
    args: &FlashArgs,
    plan: &Plan,
    outcomes: &[Outcome],
    source_error: Option<&str>,
) -> ExitCode {
    let failed = source_error.is_some() || outcomes.iter().any(|o| o.error.is_some());
    let mbps = |o: &Outcome| {
        if o.write_seconds > 0.0 {
            o.written as f64 / 1e6 / o.write_seconds
        } else {
            0.0
        }
    };
    if args.json {
        let devices: Vec<_> = outcomes
            .iter()
            .map(|o| {
                json!({
                    "device": o.device,
                    "ok": o.error.is_none(),
                    "bytes_written": o.written,
                    "bytes_skipped": plan.skipped(),
                    "seconds": o.write_seconds + o.verify_seconds,
                    "write_seconds": o.write_seconds,
                    "verify_seconds": o.verify_seconds,
                    "mb_per_s": mbps(o),
                    "verification": o.verification,
                    "error": o.error,
                })
            })
            .collect();
        JsonLines::emit(&json!({
            "event": "summary",
            "source": args.source,
            "ok": !failed,
            "image_size": plan.image_size,
            "source_error": source_error,
            "devices": devices,
        }));
    }
    if let Some(e) = &source_error {
        eprintln!("nodeimg: error: reading {}: {e}", args.source.display());
    }
    for o in outcomes {
        match &o.error {
            Some(e) => eprintln!("nodeimg: error: {e}"),
            None if !args.json => eprintln!(
                "{}: wrote {} in {:.1} s ({:.1} MB/s), skipped {}; verification {}",
                o.device,
                human(o.written),
                o.write_seconds,
                mbps(o),
                human(plan.skipped()),
                if o.verification == "ok" {
                    format!("ok ({:.1} s)", o.verify_seconds)
                } else {
                    o.verification.to_string()
                }
            ),
            None => {}
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
