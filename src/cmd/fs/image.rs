//! Opening the filesystem a `nodeimg fs` command works on.

use anyhow::bail;
use clap::Args;
use imagegen::block::{BlockDevice, FileDevice};
use imagegen::fs::Filesystem;
use imagegen::layout::select;
use imagegen::source::Compression;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The image arguments every verb takes.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Disk image or bare filesystem image (raw, not compressed)
    pub image: PathBuf,
    /// Partition number inside a disk image (omit for a bare filesystem image)
    #[arg(long, value_name = "N")]
    pub part: Option<u32>,
}

/// Names the image in a library error unless the message already does.
pub fn in_image(err: imagegen::Error, image: &Path) -> anyhow::Error {
    let name = image.display().to_string();
    if err.to_string().contains(&name) {
        anyhow::Error::new(err)
    } else {
        anyhow::Error::new(err).context(name)
    }
}

/// Opens the filesystem of `args` for reading, or for writing too.
pub fn open_fs(args: &ImageArgs, writable: bool) -> anyhow::Result<Box<dyn Filesystem>> {
    let path = &args.image;
    let compression = Compression::of_file(path)?;
    if compression.is_compressed() {
        let doing = if writable { "changed" } else { "read" };
        bail!(
            "{}: {}-compressed image cannot be {doing} in place; decompress it first",
            path.display(),
            compression.name()
        );
    }
    let file = if writable {
        FileDevice::open_rw(path)
    } else {
        FileDevice::open(path)
    }?;
    let disk: Arc<dyn BlockDevice> = Arc::new(file);
    let dev = select(disk, args.part).map_err(|e| in_image(e, path))?;
    imagegen::fs::OpenOptions::from_env(writable)
        .and_then(|opts| imagegen::fs::open(dev, opts))
        .map_err(|e| in_image(e, path))
}
