//! Opening the filesystem a `nodeimg fs` command works on.

use anyhow::{bail, Context};
use clap::Args;
use imagegen::block::{BlockDevice, FileDevice};
use imagegen::fs::Filesystem;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The image argument every verb takes.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Bare filesystem image (raw, not compressed)
    pub image: PathBuf,
}

/// Magic bytes of the compressed formats images come in.
// TODO(found): switch to imagegen::source's detection once it lands.
const COMPRESSED: [(&[u8], &str); 3] = [
    (&[0xFD, b'7', b'z', b'X', b'Z', 0x00], "xz"),
    (&[0x28, 0xB5, 0x2F, 0xFD], "zstd"),
    (&[0x1F, 0x8B], "gzip"),
];

/// The compression format of `path`, if it starts with known magic bytes.
fn compression(path: &Path) -> anyhow::Result<Option<&'static str>> {
    let mut head = [0u8; 6];
    let mut file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut got = 0;
    while got < head.len() {
        match file
            .read(&mut head[got..])
            .with_context(|| path.display().to_string())?
        {
            0 => break,
            n => got += n,
        }
    }
    Ok(COMPRESSED
        .iter()
        .find(|(magic, _)| head[..got].starts_with(magic))
        .map(|&(_, name)| name))
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
    if let Some(kind) = compression(path)? {
        let doing = if writable { "changed" } else { "read" };
        bail!(
            "{}: {kind}-compressed image cannot be {doing} in place; decompress it first",
            path.display()
        );
    }
    let file = if writable {
        FileDevice::open_rw(path)
    } else {
        FileDevice::open(path)
    }?;
    let dev: Arc<dyn BlockDevice> = Arc::new(file);
    imagegen::fs::open(dev, writable).map_err(|e| in_image(e, path))
}
