//! The guest's disk: a throw-away sparse copy of the image (data extents
//! only, shared where the filesystem can) or of base ⊕ delta (the base
//! decompressed when it is, and checked against the delta's record), with
//! deferred secrets applied into it. The guest writes only to this copy;
//! the SOURCE files are opened read-only and never change.

use anyhow::{Context, Result};
use imagegen::block::FileDevice;
use imagegen::delta::{apply_file, Delta};
use imagegen::fs::{OpenOptions, Timestamp};
use imagegen::sink::{write_image, OutputFormat};
use imagegen::source::ImageSource;
use pipeline::customise::Op;
use pipeline::osimage::OsImage;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a node's disk is made of.
#[derive(Debug, Clone)]
pub struct DiskSource {
    /// A full image, or the base a delta applies to.
    pub image: PathBuf,
    pub delta: Option<PathBuf>,
}

/// Makes the throw-away disk at `out` from `source`, then applies `ops`
/// (deferred secrets) with our filesystem code.
pub fn prepare(source: &DiskSource, ops: &[Op], out: &Path) -> Result<()> {
    let compressed = ImageSource::open(&source.image)?
        .compression()
        .is_compressed();
    match (&source.delta, compressed) {
        (Some(d), _) => {
            // Streams the base (decompressing it when it is), patches it,
            // writes sparsely, and refuses a base whose SHA-256 is not the
            // one the delta was made over.
            let delta = Delta::open(d)?;
            apply_file(&source.image, &delta, out, OutputFormat::Raw)?;
        }
        (None, true) => {
            let src = ImageSource::open(&source.image)?;
            write_image(src, out, OutputFormat::Raw, None)?;
        }
        (None, false) => clone(&source.image, out)?,
    }
    if !ops.is_empty() {
        apply(out, ops)?;
    }
    Ok(())
}

/// Applies `ops` to the throw-away disk with nodeimg's filesystem code.
pub fn apply(disk: &Path, ops: &[Op]) -> Result<()> {
    let dev = Arc::new(FileDevice::open_rw(disk)?);
    let mut image = OsImage::open(dev, imagegen::fs::OpenOptions::writable(now()))?;
    image.apply(ops)?;
    image.flush()?;
    Ok(())
}

/// A raw image cloned sparsely (extents shared where the filesystem can).
fn clone(image: &Path, out: &Path) -> Result<()> {
    let src = std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let size = src
        .metadata()
        .with_context(|| format!("reading {}", image.display()))?
        .len();
    let dst = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    dst.set_len(size)
        .with_context(|| format!("sizing {}", out.display()))?;
    pipeline::stamp::clone_sparse(&src, &dst, size)
        .with_context(|| format!("copying {} to {}", image.display(), out.display()))
}

/// Opens the prepared disk read-only to plan the boot.
pub fn open(disk: &Path) -> Result<OsImage> {
    let dev = Arc::new(FileDevice::open(disk)?);
    Ok(OsImage::open(dev, OpenOptions::read_only())?)
}

fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Timestamp { secs, nanos: 0 }
}
