//! The guest's disk: a throw-away sparse copy of the base (data extents
//! only, shared where the filesystem can), with the node's delta and
//! deferred secrets applied into it. The guest writes only to this copy;
//! the SOURCE files are opened read-only and never change.

use anyhow::{bail, Context, Result};
use imagegen::block::FileDevice;
use imagegen::delta::Delta;
use imagegen::fs::{OpenOptions, Timestamp};
use pipeline::customise::Op;
use pipeline::osimage::OsImage;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a node's disk is made of.
#[derive(Debug, Clone)]
pub struct DiskSource {
    /// A full image, or the base a delta applies to.
    pub image: PathBuf,
    pub delta: Option<PathBuf>,
}

/// Makes the throw-away disk at `out`: `source.image` cloned sparsely, the
/// delta's ranges written over it (refused when the delta is of another
/// base), then `ops` (deferred secrets) applied with our filesystem code.
pub fn prepare(source: &DiskSource, ops: &[Op], out: &Path) -> Result<()> {
    if imagegen::source::ImageSource::open(&source.image)?
        .compression()
        .is_compressed()
    {
        bail!(
            "{}: compressed; boot needs a raw image (nodeimg delta apply or unxz/unzstd makes one)",
            source.image.display()
        );
    }
    let src = std::fs::File::open(&source.image)
        .with_context(|| format!("opening {}", source.image.display()))?;
    let size = src
        .metadata()
        .with_context(|| format!("reading {}", source.image.display()))?
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
        .with_context(|| format!("copying {} to {}", source.image.display(), out.display()))?;
    if let Some(d) = &source.delta {
        let delta = Delta::open(d)?;
        // The manifest's recorded hash when it still describes the base,
        // else a full hash: a delta over the wrong base would boot garbage.
        let stamper = pipeline::stamp::Stamper::open(&source.image, Timestamp::default())?;
        let id = stamper.base_id()?;
        if id != delta.base() {
            bail!(
                "{} is a delta of another base ({}), not of {}",
                d.display(),
                delta.base(),
                source.image.display()
            );
        }
        let mut buf = vec![0u8; 1 << 20];
        for r in delta.ranges() {
            let mut done = 0;
            while done < r.len {
                let n = (r.len - done).min(buf.len() as u64) as usize;
                delta.read_range(r, done, &mut buf[..n])?;
                dst.write_all_at(&buf[..n], r.offset + done)
                    .with_context(|| format!("writing {}", out.display()))?;
                done += n as u64;
            }
        }
    }
    drop(dst);
    if !ops.is_empty() {
        let dev = Arc::new(FileDevice::open_rw(out)?);
        let mut image = OsImage::open(dev, imagegen::fs::OpenOptions::writable(now()))?;
        image.apply(ops)?;
        image.flush()?;
    }
    Ok(())
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
