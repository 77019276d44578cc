//! `nodeimg flash`: write an image to one or more cards, safely, sparsely, verified.

use anyhow::{bail, Context};
use clap::Args;
use flasher::bmap::{Bmap, RangeVerifier};
use flasher::devices::Disk;
use flasher::plan::{self, Hints, Plan};
use flasher::policy::{self, human};
use flasher::progress::{Bars, JsonLines, Observer, Silent};
use flasher::source::Source;
use flasher::target::{DeviceTarget, Target};
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Write an image to one or more cards: only the blocks that matter, the
/// partition table last, every written byte read back and compared.
#[derive(Debug, Args)]
pub struct FlashArgs {
    /// Image to write: a raw disk image, or one compressed with xz, zstd or gzip (recognised by content); or a `nodeimg build` output directory (then each --device is DEV=NODE).
    pub source: PathBuf,
    /// Whole-disk device to write, e.g. /dev/sdb or /dev/disk4; repeat to write several cards from one read of the image. With a build directory: DEV=NODE, the node the card becomes (all cards are written at once, from one read of the base).
    #[arg(long = "device", value_name = "DEV", required = true)]
    pub devices: Vec<PathBuf>,
    /// With a build directory and one --device: the node the card becomes.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// With a build made with `--secrets defer`: the cluster's state file, whose secrets are written onto each card while it is written (never to another disk).
    #[arg(long, value_name = "STATE")]
    pub secrets: Option<PathBuf>,
    /// Node delta (from `nodeimg stamp` or `nodeimg delta create`) applied on the fly: SOURCE is then its base image.
    #[arg(long, value_name = "NODE.delta")]
    pub delta: Option<PathBuf>,
    /// bmaptool block map of the image: write only the blocks it lists (plus what a delta
    /// changes), and refuse the image unless every listed range matches its checksum. Without
    /// this flag, IMAGE.bmap (or IMAGE without its compression suffix + .bmap) is used when it exists.
    #[arg(long, value_name = "FILE", conflicts_with = "no_bmap")]
    pub bmap: Option<PathBuf>,
    /// Do not look for a bmap beside the image.
    #[arg(long)]
    pub no_bmap: bool,
    /// Expected SHA-256 of SOURCE as stored (compressed or not): 64 hex digits, or a
    /// SHA256SUMS-style file that lists SOURCE's name. Checked before anything is written.
    #[arg(long, value_name = "HEX|FILE")]
    pub sha256: Option<String>,
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
    /// The bmap's range checksums, to be checked as the image streams.
    pub checks: Option<RangeVerifier>,
    /// The bmap used and whether it was found beside the image.
    pub bmap: Option<(PathBuf, bool)>,
}

/// How `prepare` finds and uses a bmap and checks the image file.
pub(crate) struct Inputs<'a> {
    pub source: &'a Path,
    pub delta: Option<&'a Path>,
    pub bmap: Option<&'a Path>,
    /// Look for IMAGE.bmap when `bmap` is not given.
    pub find_bmap: bool,
    pub sha256: Option<&'a str>,
    /// Plan exactly the bmap's ranges (verify).
    pub exact: bool,
}

/// Checks `--sha256` and opens SOURCE; finds its bmap; plans which ranges matter.
pub(crate) fn prepare(i: &Inputs) -> anyhow::Result<Prepared> {
    if let Some(want) = i.sha256 {
        flasher::integrity::check_sha256(i.source, want)?;
    }
    let bmap_path = match i.bmap {
        Some(p) => Some((p.to_path_buf(), false)),
        None if i.find_bmap => flasher::integrity::bmap_beside(i.source).map(|p| (p, true)),
        None => None,
    };
    // A bmap's checksums judge the image; without one, at least refuse
    // what is plainly not a disk image.
    if bmap_path.is_none() && i.delta.is_none() {
        refuse_non_image(i.source)?;
    }
    let bmap = bmap_path.as_ref().map(|(p, _)| Bmap::load(p)).transpose()?;
    let image = flasher::source::open(i.source, i.delta, bmap.as_ref().map(|b| b.image_size))
        .with_context(|| format!("opening image {}", i.source.display()))?;
    let plan = plan::build(
        &image.source,
        &Hints {
            bmap: bmap.as_ref(),
            sparse_file: image.sparse_file.as_ref(),
            changed: Some(&image.changed),
            exact: i.exact,
        },
    )
    .with_context(|| format!("planning the write of {}", i.source.display()))?;
    // A delta replaces some of the base's bytes; the base itself is vouched
    // for by the SHA-256 the delta records.
    let checks = bmap
        .as_ref()
        .and_then(|b| RangeVerifier::new(b, &image.changed));
    Ok(Prepared {
        source: image.source,
        plan,
        checks,
        bmap: bmap_path,
    })
}

/// Refuses a source whose first bytes hold neither a partition table nor a
/// filesystem (a text file, a truncated download, the wrong file): writing
/// it would only wipe a card.
fn refuse_non_image(source: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let mut head = Vec::new();
    imagegen::source::ImageSource::open(source)
        .and_then(|s| {
            s.take(64 << 10)
                .read_to_end(&mut head)
                .map_err(|e| imagegen::Error::io(source, e))
        })
        .with_context(|| format!("opening image {}", source.display()))?;
    let has = |at: usize, magic: &[u8]| head.get(at..at + magic.len()) == Some(magic);
    // MBR or FAT boot sector, GPT header, ext2/3/4 superblock.
    if has(510, &[0x55, 0xaa]) || has(512, b"EFI PART") || has(1080, &[0x53, 0xef]) {
        return Ok(());
    }
    bail!(
        "{}: not a disk image (no partition table and no filesystem in its first {} bytes); refusing to write it",
        source.display(),
        head.len()
    )
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
/// `devices` are the paths of `args.devices` (without a `=NODE`).
pub(super) fn check_devices(
    args: &FlashArgs,
    devices: &[PathBuf],
    image_size: u64,
) -> anyhow::Result<Vec<Disk>> {
    let opts = policy::Options {
        allow_fixed: args.allow_fixed,
        no_unmount: args.no_unmount,
    };
    let mut disks: Vec<Disk> = Vec::new();
    let mut refused = Vec::new();
    for dev in devices {
        match flasher::devices::find(dev) {
            Ok(d) => {
                // Two paths to one disk (a symlink, /dev/diskN and /dev/rdiskN)
                // are one disk: compare device numbers, not strings.
                if let Some(o) = disks.iter().find(|o| {
                    o.write_path == d.write_path
                        || (o.device_number.is_some() && o.device_number == d.device_number)
                }) {
                    let why = if o.path == d.path {
                        format!("{} is given twice", d.path)
                    } else {
                        format!(
                            "{} is given twice: {} and {} are the same disk",
                            o.path,
                            o.path,
                            dev.display()
                        )
                    };
                    // Refused (3), like the other device checks: the
                    // command line parsed, the devices it names do not fit.
                    bail!("{why}; give each card once");
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

/// Asks before overwriting `disks` (on a terminal; elsewhere `--yes` is
/// required), naming each one.
pub(super) fn confirm(disks: &[Disk], yes: bool) -> anyhow::Result<()> {
    let refs: Vec<&Disk> = disks.iter().collect();
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    policy::confirm(
        &refs,
        yes,
        interactive,
        &mut std::io::stdin().lock(),
        &mut std::io::stderr(),
    )?;
    Ok(())
}

/// Opens a checked card for writing: unmounts what the policy allows, opens
/// it exclusively and makes sure it is still the disk that was checked.
pub(super) fn open_target(d: &Disk) -> anyhow::Result<DeviceTarget> {
    if !policy::media_mounts(d).is_empty() {
        let gone = flasher::devices::unmount(d)?;
        if !gone.is_empty() {
            notice!("{}: unmounted {}", d.path, gone.join(", "));
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
    Ok(t)
}

/// Outcome of one device, for the summary.
struct Outcome {
    device: String,
    written: u64,
    write_seconds: f64,
    verify_seconds: f64,
    verification: &'static str,
    error: Option<String>,
    /// The exit code this card's error means.
    code: Option<crate::exit::Code>,
}

pub fn run(args: FlashArgs) -> anyhow::Result<ExitCode> {
    if super::flash_dist::is_dist(&args.source) {
        return super::flash_dist::run(args);
    }
    crate::signals::doing(format!("flashing {}", args.source.display()));
    let _stage = tracing::info_span!("flash").entered();
    let t0 = std::time::Instant::now();
    if args.node.is_some() || args.secrets.is_some() {
        bail!("--node and --secrets go with a `nodeimg build` output directory as SOURCE");
    }
    let prepared = prepare(&Inputs {
        source: &args.source,
        delta: args.delta.as_deref(),
        bmap: args.bmap.as_deref(),
        find_bmap: !args.no_bmap,
        sha256: args.sha256.as_deref(),
        exact: false,
    })?;
    if let (Some((p, true)), false) = (&prepared.bmap, args.json) {
        notice!("using the bmap beside the image: {}", p.display());
    }
    let disks = check_devices(&args, &args.devices, prepared.plan.image_size)?;
    if args.dry_run {
        // A streamed image's maps are known only once it has been read:
        // read it once (nothing is written) so the plan shown is the plan.
        let plan = if prepared.plan.learned() || prepared.checks.is_some() {
            let (_, read) = flasher::writer::write_all(
                prepared.source,
                &prepared.plan,
                &[],
                flasher::writer::Options {
                    checks: prepared.checks,
                    ..Default::default()
                },
                &Silent,
                flasher::interrupt::flag(),
            );
            read.with_context(|| format!("reading {}", args.source.display()))?
                .plan
        } else {
            prepared.plan
        };
        let plan = &plan;
        if args.json {
            JsonLines::emit(&json!({
                "event": "plan",
                "source": args.source,
                "plan": plan_json(plan),
                "devices": disks,
            }));
        } else {
            out!("{}", describe_plan(plan));
            for d in &disks {
                let mounted: Vec<&str> = policy::media_mounts(d)
                    .iter()
                    .map(|m| m.mountpoint.as_str())
                    .collect();
                outln!(
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
            sayln!("dry run: nothing was opened for writing");
        }
        return Ok(ExitCode::SUCCESS);
    }
    confirm(&disks, args.yes)?;
    let mut targets: Vec<Arc<dyn Target>> = Vec::new();
    for d in &disks {
        targets.push(Arc::new(open_target(d)?));
    }
    let names: Vec<String> = disks.iter().map(|d| d.path.clone()).collect();
    let observer: Box<dyn Observer> = if args.json {
        Box::new(JsonLines::new(names.clone()))
    } else if crate::out::quiet() || crate::out::verbose() {
        Box::new(Silent)
    } else {
        Box::new(Bars::new(names.clone()))
    };
    let cancel = flasher::interrupt::flag();
    crate::signals::cooperate(
        cancel,
        "the cards hold part of the image; the partition table was not written",
    );
    tracing::info!(
        secs = format_args!("{:.2}", t0.elapsed().as_secs_f64()),
        "planned; writing"
    );
    let (reports, read) = flasher::writer::write_all(
        prepared.source,
        &prepared.plan,
        &targets,
        flasher::writer::Options {
            verify: !args.no_verify,
            hash: false,
            checks: prepared.checks,
        },
        &*observer,
        cancel,
    );
    drop(observer);
    let source_code = read.as_ref().err().map(crate::exit::flasher);
    let (plan, source_error) = match read {
        Ok(w) => {
            if w.checked > 0 && !args.json {
                eprintln!(
                    "{}: {} in every bmap range matched its checksum",
                    args.source.display(),
                    human(w.checked)
                );
            }
            (w.plan, None)
        }
        Err(e) => (prepared.plan, Some(format!("{e:#}"))),
    };
    let outcomes: Vec<Outcome> = reports
        .into_iter()
        .zip(&names)
        .map(|(r, name)| Outcome {
            device: name.clone(),
            written: r.written,
            write_seconds: r.seconds,
            verify_seconds: r.verify_seconds,
            verification: match (&r.result, args.no_verify) {
                (_, true) => "skipped",
                (Ok(()), false) => "ok",
                (Err(flasher::Error::Mismatch { .. }), false) => "failed",
                (Err(_), false) => "not run",
            },
            code: r.result.as_ref().err().map(crate::exit::flasher),
            error: r.result.err().map(|e| e.to_string()),
        })
        .collect();
    drop(targets);
    // Interrupted: main prints the one line that says so; JSON readers
    // still get their summary on stdout.
    let interrupted = crate::signals::interrupted();
    if interrupted && !args.json {
        return Ok(ExitCode::FAILURE);
    }
    let failed = summarise(
        &args,
        &plan,
        &outcomes,
        source_error.as_deref(),
        !interrupted,
    );
    // The image's own failure first (it stopped every card), then the first
    // failed card's: 4 for a read-back difference, 5 for a device error.
    let code = match source_code.or_else(|| outcomes.iter().find_map(|o| o.code)) {
        _ if interrupted => ExitCode::FAILURE,
        Some(c) => c.into(),
        None if failed => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
    };
    if source_error.is_none() && !interrupted {
        let ok: Vec<bool> = outcomes.iter().map(|o| o.error.is_none()).collect();
        eject_flashed(&args, &disks, &ok);
    }
    Ok(code)
}
/// Ejects each card whose write (and verification) succeeded, where the
/// platform wants it; says so, or why not.
pub(super) fn eject_flashed(args: &FlashArgs, disks: &[Disk], ok: &[bool]) {
    for (d, &ok) in disks.iter().zip(ok) {
        if !flasher::devices::should_eject(flasher::platform::EJECTS, ok, args.no_eject) {
            continue;
        }
        match flasher::devices::eject(d) {
            Ok(true) => notice!("{}: ejected; the card can be removed", d.path),
            Ok(false) => {}
            Err(e) => eprintln!("nodeimg: warning: {}: not ejected: {e}", d.path),
        }
    }
}

fn summarise(
    args: &FlashArgs,
    plan: &Plan,
    outcomes: &[Outcome],
    source_error: Option<&str>,
    to_stderr: bool,
) -> bool {
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
    if !to_stderr {
        return failed;
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
    failed
}
