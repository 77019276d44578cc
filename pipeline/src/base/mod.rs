//! Stage 1: `nodeimg base` — a bootable board image from an upstream disk
//! image or a root tree, with the board's firmware and `[base]`'s
//! customisations, without root and without mounts.
//!
//! [`build_base`] runs the steps in this order, everything into one new
//! file under a temporary name beside the output ([`PendingFile`]), renamed
//! only when all succeeded:
//!
//! 1. source: fetched ([`fetch`]) and recognised by content — a disk image
//!    (raw, xz, zstd, gzip; a `.bmap` beside it limits what is copied) or a
//!    root tree (a directory or a tarball, laid out by [`tree`]);
//! 2. size: `--size` grows (or shrinks to no less than the content) the
//!    root partition and its ext4 filesystem ([`image::resize_root`]);
//! 3. firmware: Raspberry Pi boot files laid over and checked, or Tow-Boot
//!    written after the MBR ([`firmware`]);
//! 4. customisations: `[base]`'s operations through the shared executor;
//! 5. the provisioning hook ([`BaseRequest::provision`]): the one place
//!    where a step that needs root (scripts in a chroot) runs, after every
//!    rootless change and before the image is hashed and mapped;
//! 6. outputs: the image, its manifest ([`manifest`]), a bmap and a
//!    zstd copy when asked.

pub mod fetch;
pub mod firmware;
pub mod image;
pub mod manifest;
pub mod mbr;
pub mod spec;
pub mod stream;
pub mod tree;

use crate::board::{Board, FirmwarePlacement};
use crate::customise::base_ops;
use crate::error::{Error, Result};
use crate::os::OsProfile;
use crate::osimage::OsImage;
use fetch::FetchOptions;
use imagegen::block::{BlockDevice, FileDevice, Window};
use imagegen::fs::{self, OpenOptions, Timestamp};
use imagegen::inspect::FsInfo;
use imagegen::sink::PendingFile;
use imagegen::source::{to_hex, ImageSource};
use imagegen::tree::{DirSource, TarSource, TreeSource};
use manifest::{
    manifest_path, AppliedRecord, BaseManifest, FirmwareRecord, ImageRecord, LayoutRecord,
    PartitionRecord, SourceRecord,
};
use spec::{BaseSpec, FirmwareSpec};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How long steps report progress (the CLI draws bars; tests ignore it).
pub trait Progress {
    /// A new step begins; `total` bytes when known.
    fn step_total(&self, what: &str, total: Option<u64>);
    /// A new step without a byte count.
    fn step(&self, what: &str) {
        self.step_total(what, None)
    }
    /// `n` more bytes of the current step are done.
    fn advance(&self, n: u64);
    /// The current step is at `done` bytes (of `total`, when it changed).
    fn position(&self, done: u64, total: Option<u64>);
}

/// Progress that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn step_total(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn position(&self, _: u64, _: Option<u64>) {}
}

/// Clones the raw source at `path` (`len` bytes, as when it was opened)
/// into the still empty output; false (nothing changed) where the
/// filesystem cannot, so the source is copied instead.
fn reflink_source(path: &Path, pending: &PendingFile, len: u64) -> bool {
    let Ok(src) = std::fs::File::open(path) else {
        return false;
    };
    if src.metadata().map(|m| m.len()).ok() != Some(len) {
        return false;
    }
    // FICLONE on Linux (btrfs, XFS with reflink, bcachefs); an error where
    // the filesystem cannot (ext4), across filesystems, or elsewhere.
    if reflink_copy::reflink_file(&src, pending.file()).is_err() {
        return false;
    }
    // The source changed between the check and the clone: copy instead.
    if pending.file().metadata().map(|m| m.len()).ok() == Some(len) {
        return true;
    }
    let _ = pending.file().set_len(0);
    false
}

/// The customisation step: recognises the OS on the disk ([`OsImage`]) and
/// applies `[base]`'s changes through the shared executor
/// ([`base_ops`], which always removes the SSH host keys).
fn customise(
    disk: Arc<dyn BlockDevice>,
    spec: &BaseSpec,
    now: Timestamp,
) -> Result<(OsProfile, Vec<AppliedRecord>)> {
    let mut image = OsImage::open(disk, OpenOptions::writable(now))?;
    let ops = base_ops(spec, &image)?;
    let applied = image.apply(&ops)?;
    image.flush()?;
    Ok((
        image.profile().clone(),
        applied.iter().map(AppliedRecord::from).collect(),
    ))
}

/// A step run after the rootless ones, before hashing (provisioning).
pub type ProvisionHook<'a> = &'a dyn Fn(&Path, &Board, &BaseSpec) -> Result<()>;

/// Everything `nodeimg base` was asked.
pub struct BaseRequest<'a> {
    pub board: Board,
    pub spec: BaseSpec,
    pub firmware: FirmwareSpec,
    pub out: PathBuf,
    pub bmap: bool,
    pub zstd: bool,
    pub force: bool,
    pub cache_dir: Option<PathBuf>,
    /// The time of every change (`SOURCE_DATE_EPOCH` or the clock).
    pub now: Timestamp,
    /// Runs on the finished, customised image file before it is hashed.
    pub provision: Option<ProvisionHook<'a>>,
    /// Download attempts and backoff.
    pub fetch: FetchOptions,
}

/// What was made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BaseOutcome {
    pub image: PathBuf,
    pub manifest_path: PathBuf,
    pub bmap: Option<PathBuf>,
    pub zstd: Option<PathBuf>,
    pub manifest: BaseManifest,
    /// Things the user should know (partitions moved, cache hits).
    pub notes: Vec<String>,
}

/// `base.img` → `base.img.bmap`, `base.img.zst`.
pub fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Refuses outputs that exist (without `force`) or that are an input.
fn check_outputs(req: &BaseRequest, inputs: &[&Path]) -> Result<Vec<PathBuf>> {
    let mut outs = vec![req.out.clone(), manifest_path(&req.out)];
    if req.bmap {
        outs.push(with_suffix(&req.out, ".bmap"));
    }
    if req.zstd {
        outs.push(with_suffix(&req.out, ".zst"));
    }
    for o in &outs {
        imagegen::sink::check_distinct(o, inputs)?;
        if !req.force && o.symlink_metadata().is_ok() {
            return Err(Error::refused(
                o.display().to_string(),
                "exists (use --force to replace it)",
            ));
        }
    }
    Ok(outs)
}

/// What the source turned out to be. An image comes with its stream,
/// already opened, and the bytes read to recognise it, so the decoder that
/// recognised it goes on (a threaded xz decoder is not started twice).
enum SourceKind {
    Image(ImageSource, Vec<u8>),
    Dir,
    Tarball,
}

fn recognise(path: &Path) -> Result<SourceKind> {
    if path.is_dir() {
        return Ok(SourceKind::Dir);
    }
    let mut src = ImageSource::open(path)?;
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match src.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => {
                return Err(Error::refused(
                    path.display().to_string(),
                    format!("cannot be read as a {} stream: {e}", src.compression()),
                ))
            }
        }
    }
    if n >= 262 && &head[257..262] == b"ustar" {
        return Ok(SourceKind::Tarball);
    }
    if n == 512 && head[510..512] == [0x55, 0xaa] {
        return Ok(SourceKind::Image(src, head));
    }
    Err(Error::refused(
        path.display().to_string(),
        "is neither a disk image (no partition table) nor a root tree (directory or tarball)",
    ))
}

fn parse_size(s: &Option<String>) -> Result<Option<u64>> {
    s.as_deref()
        .map(|t| crate::size::parse_size(t).map_err(|why| Error::refused("--size", why)))
        .transpose()
}

/// Builds the base; see the module documentation.
pub fn build_base(req: &BaseRequest, progress: &dyn Progress) -> Result<BaseOutcome> {
    let what =
        req.spec.source.clone().ok_or_else(|| {
            Error::refused("source", "no source given (--from, or source in [base])")
        })?;
    let size = parse_size(&req.spec.size)?;
    // Refuse what can be refused before any download or write.
    let local_inputs: Vec<PathBuf> = [Some(what.as_str()), req.firmware.towboot.as_deref()]
        .into_iter()
        .flatten()
        .filter(|s| !fetch::is_url(s))
        .map(PathBuf::from)
        .chain(req.firmware.boot_files.clone())
        .collect();
    let input_refs: Vec<&Path> = local_inputs.iter().map(PathBuf::as_path).collect();
    check_outputs(req, &input_refs)?;
    let mut notes = Vec::new();

    progress.step(&format!("fetching {what}"));
    let fetch_opts = FetchOptions {
        cache_dir: req.cache_dir.clone(),
        ..req.fetch.clone()
    };
    let (mut src, mut source_hash) = fetch::fetch_overlapped(
        &what,
        req.spec.sha256.as_deref(),
        &fetch_opts,
        req.provision.is_some(),
        &mut |d, t| progress.position(d, t),
    )?;
    if src.cached {
        notes.push(format!(
            "{what}: used the cached copy {}",
            src.path.display()
        ));
    }
    check_outputs(req, &[&src.path])?;
    let towboot = match (&req.board.firmware, &req.firmware.towboot) {
        (FirmwarePlacement::Towboot { offset, end, .. }, Some(t)) => {
            let f = fetch::fetch(
                t,
                req.firmware.sha256.as_deref(),
                &fetch_opts,
                &mut |d, tot| progress.position(d, tot),
            )?;
            Some((firmware::read_towboot(&f.path, *offset, *end)?, f))
        }
        (FirmwarePlacement::BootFiles { .. }, Some(_)) => {
            return Err(Error::refused(
                "--towboot",
                format!(
                    "board {} takes boot files (--firmware), not Tow-Boot",
                    req.board.name
                ),
            ))
        }
        _ => None,
    };
    if req.firmware.boot_files.is_some()
        && matches!(req.board.firmware, FirmwarePlacement::Towboot { .. })
    {
        return Err(Error::refused(
            "--firmware",
            format!(
                "board {} takes Tow-Boot (--towboot), not boot files",
                req.board.name
            ),
        ));
    }
    let kind = recognise(&src.path)?;

    let pending = PendingFile::create(&req.out)?;
    let dir = match req.out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // With the image's size known (a raw file's length, the xz index, the
    // zstd frame header), it is decoded in one pass while the steps below
    // already work on it ([`stream`]); otherwise (a resize, a bmap beside
    // the source, a size not recorded) it is decoded first.
    let mut filler: Option<stream::Filler> = None;
    let mut filling: Option<Arc<imagegen::block::FillingDevice<FileDevice>>> = None;
    let mut precompressed = None;
    let (source_kind, disk): (&str, Arc<dyn BlockDevice>) = match kind {
        SourceKind::Image(s, head) => {
            let bmap = image::bmap_beside(&src.path)
                .map(|p| imagegen::bmap::Bmap::load(&p).map(|b| (p, b)))
                .transpose()?;
            if let Some((p, _)) = &bmap {
                notes.push(format!("used the block map {}", p.display()));
            }
            let recorded = match s.compression() {
                imagegen::source::Compression::Raw => std::fs::metadata(&src.path)
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len()),
                c => imagegen::source::recorded_size(&src.path, c)?,
            }
            .filter(|n| bmap.is_none() && size.is_none_or(|t| t == *n));
            // A raw source on a filesystem that shares blocks between files
            // (btrfs, XFS): the output is a reflink of it, made at once and
            // taking no space until the customisation writes.
            let cloned = match recorded {
                Some(len) if s.compression() == imagegen::source::Compression::Raw => {
                    reflink_source(&src.path, &pending, len)
                }
                _ => false,
            };
            match recorded {
                Some(len) if cloned => {
                    drop((s, head));
                    notes.push(format!(
                        "{what}: the output shares its blocks (reflink) until they change"
                    ));
                    ("image", Arc::new(pending.device(len)?))
                }
                Some(len) => {
                    progress.step("decompressing and customising the image");
                    let dev = pending.device(len)?;
                    let file = pending
                        .file()
                        .try_clone()
                        .map_err(|e| Error::io(pending.path(), e))?;
                    // zstd frames made while decoding, unless provisioning
                    // will change anything anywhere.
                    if req.zstd && req.provision.is_none() {
                        precompressed = Some(stream::Precompressed::new(&dir, 3)?);
                    }
                    let f = if s.compression() == imagegen::source::Compression::Raw {
                        // Read again by extents: a sparse source's holes are
                        // never read.
                        let raw =
                            std::fs::File::open(&src.path).map_err(|e| Error::io(&src.path, e))?;
                        let what = s.describe().to_string();
                        drop((s, head));
                        stream::Filler::start_raw(raw, what, file, len, precompressed.clone())?
                    } else {
                        stream::Filler::start(head, s, file, len, precompressed.clone())?
                    };
                    let dev = Arc::new(imagegen::block::FillingDevice::new(dev, f.mark()));
                    filler = Some(f);
                    filling = Some(dev.clone());
                    ("image", dev)
                }
                None => {
                    drop(s);
                    progress.step_total("decompressing the image", None);
                    let s = ImageSource::open(&src.path)?;
                    let len =
                        image::unpack(s, pending.file(), bmap.as_ref().map(|(_, b)| b), progress)?;
                    if let Some(target) = size {
                        if target != len {
                            let slot = root_slot(&pending, len)?;
                            image::resize_root(
                                pending.file(),
                                pending.path(),
                                slot,
                                target,
                                &dir,
                                progress,
                                req.now,
                            )?;
                        }
                    }
                    let len = pending
                        .file()
                        .metadata()
                        .map_err(|e| Error::io(pending.path(), e))?
                        .len();
                    ("image", Arc::new(pending.device(len)?))
                }
            }
        }
        SourceKind::Dir | SourceKind::Tarball => {
            let mut t: Box<dyn TreeSource> = match kind {
                SourceKind::Dir => Box::new(DirSource::new(&src.path)?),
                _ => Box::new(TarSource::open(&src.path)?),
            };
            let mut open =
                |n: u64| -> Result<Arc<dyn BlockDevice>> { Ok(Arc::new(pending.device(n)?)) };
            let (_, dev) = tree::build(&mut *t, &req.board, size, req.now, &mut open, progress)?;
            ("tree", dev)
        }
    };

    // Every step from here may fail because the decoder did: its error is
    // the one to report.
    let outputs = (|| {
        let firmware_record = lay_firmware(req, &disk, &towboot, &what, &mut notes, progress)?;
        progress.step("customising");
        let (os, customisations) = customise(disk.clone(), &req.spec, req.now)?;
        disk.flush()?;
        Ok((firmware_record, os, customisations))
    })();
    let (firmware_record, os, customisations) = match (outputs, filler.take()) {
        (Ok(v), f) => {
            filler = f;
            v
        }
        (Err(e), Some(f)) => return Err(f.abandon(e)),
        (Err(e), None) => return Err(e),
    };
    drop(disk);
    // What the steps above changed after the decoder wrote it: those chunks'
    // zstd frames are made again.
    let frames = precompressed.zip(filling.take().map(|f| f.written()));

    if let Some(hook) = req.provision {
        // Provisioning works on the whole file: the decoder finishes first.
        if let Some(f) = filler.take() {
            f.finish()?;
        }
        progress.step("provisioning");
        hook(pending.tmp_path(), &req.board, &req.spec)?;
    }
    if let Some(h) = source_hash.as_mut() {
        h.start()?;
    }

    let done = match filler.as_ref() {
        Some(f) => f.mark(),
        None => {
            let len = pending
                .file()
                .metadata()
                .map_err(|e| Error::io(pending.path(), e))?
                .len();
            let m = imagegen::block::Watermark::new();
            m.advance(len);
            Arc::new(m)
        }
    };
    let outputs = write_outputs(req, &pending, done, frames, progress);
    let (layout, sha, bmap_path, zst) = match (outputs, filler.take()) {
        (Ok(v), Some(f)) => {
            f.finish()?;
            v
        }
        (Ok(v), None) => v,
        (Err(e), Some(f)) => return Err(f.abandon(e)),
        (Err(e), None) => return Err(e),
    };
    // The source's hash (on its own thread since fetching) is in before
    // anything is committed.
    if let Some(h) = source_hash {
        src.sha256 = Some(h.wait()?);
    }
    if let Some(w) = zst {
        w.finish()?;
    }
    pending.commit(0o644)?;
    let bmap_out = match bmap_path {
        Some((p, pf)) => {
            pf.commit(0o644)?;
            Some(p)
        }
        None => None,
    };
    let zst_path = req.zstd.then(|| with_suffix(&req.out, ".zst"));
    let manifest = BaseManifest {
        format: manifest::FORMAT,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        board: req.board.name.clone(),
        source: SourceRecord {
            kind: source_kind.into(),
            what: what.clone(),
            sha256: src.sha256.map(|h| to_hex(&h)),
        },
        firmware: firmware_record,
        layout,
        os,
        customisations,
        image: ImageRecord::of(&req.out, &sha)?,
    };
    let mp = manifest_path(&req.out);
    manifest.save(&mp)?;
    Ok(BaseOutcome {
        image: req.out.clone(),
        manifest_path: mp,
        bmap: bmap_out,
        zstd: zst_path,
        manifest,
        notes,
    })
}

/// Lays the board's firmware onto the disk: Raspberry Pi boot files over
/// the boot partition (and checks what the board loads is there), or
/// Tow-Boot after the MBR.
fn lay_firmware(
    req: &BaseRequest,
    disk: &Arc<dyn BlockDevice>,
    towboot: &Option<(firmware::Towboot, fetch::Fetched)>,
    what: &str,
    notes: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<Option<FirmwareRecord>> {
    let mut firmware_record = None;
    match &req.board.firmware {
        FirmwarePlacement::BootFiles { kernel, required } => {
            let boot = boot_partition(disk, &req.board)?;
            let win: Arc<dyn BlockDevice> = Arc::new(Window::new(disk.clone(), boot.0, boot.1)?);
            let mut fat = fs::open(win, OpenOptions::writable(req.now))?;
            if let Some(bf) = &req.firmware.boot_files {
                progress.step("laying the boot files over the boot partition");
                let mut t: Box<dyn TreeSource> = if bf.is_dir() {
                    Box::new(DirSource::new(bf)?)
                } else {
                    Box::new(TarSource::open(bf)?)
                };
                firmware::copy_tree_into_fat(&mut *t, "", &mut *fat)?;
                firmware_record = Some(FirmwareRecord {
                    what: bf.display().to_string(),
                    sha256: bf
                        .is_file()
                        .then(|| imagegen::source::sha256_file(bf).map(|(h, _)| to_hex(&h)))
                        .transpose()?,
                });
            }
            let missing = firmware::missing_pi_boot_files(&*fat, required, kernel);
            if !missing.is_empty() {
                return Err(Error::refused(
                    what,
                    format!(
                        "the boot partition lacks what the {} loads: {} (add them with --firmware DIR|TARBALL)",
                        req.board.description,
                        missing.join(", ")
                    ),
                ));
            }
            fat.flush()?;
        }
        FirmwarePlacement::Towboot {
            offset,
            end,
            mbr_type,
        } => {
            if let Some((tb, f)) = towboot {
                progress.step("writing Tow-Boot");
                let placed = firmware::place_towboot(
                    disk,
                    tb,
                    *offset,
                    *end,
                    *mbr_type,
                    req.firmware.relocate,
                    req.board.align,
                )?;
                for (n, from, to) in &placed.moved {
                    notes.push(format!(
                        "moved partition {n} from byte {from} to byte {to} out of the firmware region (--relocate)"
                    ));
                }
                firmware_record = Some(FirmwareRecord {
                    what: f.what.clone(),
                    sha256: f.sha256.map(|h| to_hex(&h)),
                });
            } else {
                notes.push(format!(
                    "no --towboot given: the {} needs Tow-Boot on the card to boot this image",
                    req.board.description
                ));
            }
        }
    }
    Ok(firmware_record)
}

/// What [`write_outputs`] made, not yet committed: the layout, the image's
/// SHA-256, the bmap and the zstd copy.
type Outputs = (
    LayoutRecord,
    [u8; 32],
    Option<(PathBuf, PendingFile)>,
    Option<stream::ZstOut>,
);

/// The outputs' pass over the finished (or still decoding, up to `done`)
/// image: its layout, one read in order for the manifest's SHA-256 and the
/// zstd copy, and the bmap on a thread of its own once the image is
/// complete. Nothing is committed here: the caller does that once the
/// decoder has confirmed the source's end.
fn write_outputs(
    req: &BaseRequest,
    pending: &PendingFile,
    done: Arc<imagegen::block::Watermark>,
    frames: Option<(Arc<stream::Precompressed>, imagegen::ranges::RangeSet)>,
    progress: &dyn Progress,
) -> Result<Outputs> {
    let len = pending
        .file()
        .metadata()
        .map_err(|e| Error::io(pending.path(), e))?
        .len();
    let file = pending
        .file()
        .try_clone()
        .map_err(|e| Error::io(pending.path(), e))?;
    let dev: Arc<dyn BlockDevice> = Arc::new(imagegen::block::FillingDevice::new(
        FileDevice::from_file(file, pending.path(), false)?,
        done.clone(),
    ));
    let layout = layout_record(&dev, &req.board)?;
    progress.step_total(
        if req.zstd {
            "hashing and compressing the base"
        } else {
            "hashing the base"
        },
        Some(len),
    );
    let zst_path = with_suffix(&req.out, ".zst");
    let mut zst = match (req.zstd, frames) {
        (false, _) => None,
        (true, Some((pre, changed))) => Some(stream::ZstOut::Frames {
            out: PendingFile::create(&zst_path)?,
            pos: 0,
            pre,
            changed,
            cx: imagegen::sink::FrameCompressor::new(3)
                .map_err(|e| imagegen::Error::io_context("compressing the base", e))?,
        }),
        (true, None) => Some(stream::ZstOut::Stream(imagegen::sink::ImageWriter::create(
            &zst_path,
            imagegen::sink::OutputFormat::Zstd { level: 3 },
            Some(len),
        )?)),
    };
    let (sha, bmap) = std::thread::scope(|s| {
        let out = &req.out;
        let bmap = req.bmap.then(|| {
            let (dev, done) = (dev.clone(), done.clone());
            s.spawn(move || -> Result<(PathBuf, PendingFile)> {
                // The filesystems' maps are read once the image is complete
                // (their bitmaps lie all over it).
                done.wait_for(len)?;
                let text =
                    imagegen::bmap::write_bmap(&*dev, &mapped_ranges(&dev, pending.file(), len)?)?;
                let p = with_suffix(out, ".bmap");
                let pf = PendingFile::create(&p)?;
                std::io::Write::write_all(&mut pf.file(), text.as_bytes())
                    .map_err(|e| Error::io(&p, e))?;
                Ok((p, pf))
            })
        });
        let sha = stream::output_pass(pending.file(), len, &done, zst.as_mut(), progress);
        let bmap = bmap
            .map(|h| {
                h.join()
                    .map_err(|_| Error::internal("writing the block map", "thread panicked"))?
            })
            .transpose();
        (sha, bmap)
    });
    Ok((layout, sha?, bmap?, zst))
}

/// The MBR slot of the root partition of an unpacked image: the last
/// partition holding ext4.
fn root_slot(pending: &PendingFile, len: u64) -> Result<u32> {
    let dev: Arc<dyn BlockDevice> = Arc::new(pending.device(len)?);
    let table = imagegen::layout::read_table(&*dev)?;
    table
        .partitions
        .iter()
        .rev()
        .find(|p| {
            Window::new(dev.clone(), p.start, p.size)
                .ok()
                .and_then(|w| imagegen::fs::ext4::probe(&w).ok())
                .unwrap_or(false)
        })
        .map(|p| p.number)
        .ok_or_else(|| {
            Error::refused(
                pending.path().display().to_string(),
                "has no ext4 root partition to resize",
            )
        })
}

/// The boot partition of a Raspberry Pi image: the first FAT partition.
fn boot_partition(disk: &Arc<dyn BlockDevice>, board: &Board) -> Result<(u64, u64)> {
    let table = imagegen::layout::read_table(&**disk)?;
    for p in &table.partitions {
        let w = Window::new(disk.clone(), p.start, p.size)?;
        if let Ok(Some(t)) = fs::probe(&w) {
            if t.name().starts_with("fat") {
                return Ok((p.start, p.size));
            }
        }
    }
    Err(Error::refused(
        disk.describe(),
        format!(
            "has no FAT boot partition, which the {} needs",
            board.description
        ),
    ))
}

fn layout_record(dev: &Arc<dyn BlockDevice>, board: &Board) -> Result<LayoutRecord> {
    let report = imagegen::inspect::inspect_device(&**dev, &dev.describe())?;
    let disk_id = report.disk_id.clone();
    let mut parts = Vec::new();
    let root_number = report
        .partitions
        .iter()
        .rev()
        .find(|p| matches!(p.filesystem, FsInfo::Ext(_)))
        .map(|p| p.number);
    let boot_number = report
        .partitions
        .iter()
        .find(|p| matches!(p.filesystem, FsInfo::Fat(_)))
        .map(|p| p.number);
    for p in &report.partitions {
        let (fsname, uuid, label) = match &p.filesystem {
            FsInfo::Fat(f) => (
                Some("fat".to_string()),
                Some(f.volume_id.clone()),
                f.label.clone(),
            ),
            FsInfo::Ext(e) => (
                Some("ext4".to_string()),
                Some(e.uuid.clone()),
                e.label.clone(),
            ),
            _ => (None, None, None),
        };
        let mount = if Some(p.number) == root_number {
            Some("/".to_string())
        } else if Some(p.number) == boot_number {
            Some(board.boot_mount().unwrap_or("/boot/firmware").to_string())
        } else {
            None
        };
        parts.push(PartitionRecord {
            number: p.number,
            start: p.start,
            size: p.size,
            kind: p.kind.clone(),
            bootable: p.bootable,
            partuuid: disk_id.as_ref().map(|d| format!("{d}-{:02}", p.number)),
            fs: fsname,
            uuid,
            label,
            mount,
        });
    }
    Ok(LayoutRecord {
        scheme: report.scheme.to_string().to_lowercase(),
        disk_id,
        size: dev.size(),
        partitions: parts,
    })
}

/// What a bmap lists: the used blocks of every filesystem the partitions
/// hold, and everything else the file holds as data (tables, firmware,
/// partitions without a known filesystem).
fn mapped_ranges(
    dev: &Arc<dyn BlockDevice>,
    file: &std::fs::File,
    len: u64,
) -> Result<imagegen::ranges::RangeSet> {
    use imagegen::ranges::{data_map, filesystem_map, Extent, RangeSet};
    let table = imagegen::layout::read_table(&**dev)?;
    let data =
        data_map(file, len).map_err(|e| imagegen::Error::io_context("mapping the base", e))?;
    let mut known = RangeSet::new();
    let mut used = RangeSet::new();
    for p in &table.partitions {
        if let Ok(Some((_, set))) = filesystem_map(dev, p) {
            known = known.union(&RangeSet::from_extents(vec![Extent::new(p.start, p.end())]));
            used = used.union(&set);
        }
    }
    Ok(used.union(&data.subtract(&known)))
}
