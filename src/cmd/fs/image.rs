//! Opening the filesystem a `nodeimg fs` command works on.

use anyhow::{bail, Context};
use clap::Args;
use imagegen::block::{BlockDevice, FileDevice};
use imagegen::fs::Filesystem;
use imagegen::layout::select;
use imagegen::source::Compression;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::PermissionsExt;
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

/// Takes the advisory lock (`flock`) that keeps two nodeimg processes from
/// changing one image at once: exclusive for writing, shared for reading, so
/// nobody reads an image while another process changes it. The lock lasts
/// as long as the returned file is open. An image file without write
/// permission is refused for writing, even to root.
pub fn lock_image(path: &Path, writable: bool) -> anyhow::Result<Flock<File>> {
    let file = File::open(path).with_context(|| path.display().to_string())?;
    if writable {
        let meta = file
            .metadata()
            .with_context(|| path.display().to_string())?;
        let mode = meta.permissions().mode();
        if meta.is_file() && mode & 0o222 == 0 {
            bail!(
                "{}: the image file is read-only (mode {:04o}); refusing to change it, even as root (chmod u+w to allow)",
                path.display(),
                mode & 0o7777
            );
        }
    }
    let op = if writable {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockSharedNonblock
    };
    match Flock::lock(file, op) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "{}: another process is {} this image (it holds the image's lock); try again when it has finished",
            path.display(),
            if writable { "using" } else { "changing" }
        ),
        Err((_, e)) => Err(std::io::Error::from(e))
            .with_context(|| format!("{}: locking", path.display())),
    }
}

/// An open filesystem and the image lock held while it is open.
pub struct OpenFs {
    fs: Box<dyn Filesystem>,
    _lock: Flock<File>,
}

impl Deref for OpenFs {
    type Target = dyn Filesystem;
    fn deref(&self) -> &Self::Target {
        &*self.fs
    }
}

impl DerefMut for OpenFs {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.fs
    }
}

/// Opens the filesystem of `args` for reading, or for writing too, under
/// the image's lock.
pub fn open_fs(args: &ImageArgs, writable: bool) -> anyhow::Result<OpenFs> {
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
    let lock = lock_image(path, writable)?;
    let file = if writable {
        FileDevice::open_rw(path)
    } else {
        FileDevice::open(path)
    }?;
    let disk: Arc<dyn BlockDevice> = Arc::new(file);
    let dev = select(disk, args.part).map_err(|e| in_image(e, path))?;
    // The command line's one time source: SOURCE_DATE_EPOCH or the clock.
    let opts = if writable {
        imagegen::fs::OpenOptions::writable(imagegen::fs::Timestamp::now()?)
    } else {
        imagegen::fs::OpenOptions::read_only()
    };
    let fs = imagegen::fs::open(dev, opts).map_err(|e| in_image(e, path))?;
    Ok(OpenFs { fs, _lock: lock })
}
