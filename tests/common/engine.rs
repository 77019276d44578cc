//! Opening an image with our engine through the public entry point only
//! (`imagegen::fs::open`, which recognises ext4 by probing), so the tests
//! never depend on engine internals.

use imagegen::block::{BlockDevice, FileDevice};
use imagegen::fs::Filesystem;
use std::path::Path;
use std::sync::Arc;

/// Opens whatever filesystem fills `dev`, read-only or writable.
pub fn open_dev(
    dev: Arc<dyn BlockDevice>,
    writable: bool,
) -> imagegen::Result<Box<dyn Filesystem>> {
    // The test's time source, as the command line's: SOURCE_DATE_EPOCH or
    // the clock.
    let opts = if writable {
        imagegen::fs::OpenOptions::writable(imagegen::fs::Timestamp::now()?)
    } else {
        imagegen::fs::OpenOptions::read_only()
    };
    imagegen::fs::open(dev, opts)
}

/// Opens a bare filesystem image, read-only or writable.
pub fn open(image: &Path, writable: bool) -> imagegen::Result<Box<dyn Filesystem>> {
    let dev = if writable {
        FileDevice::open_rw(image)?
    } else {
        FileDevice::open(image)?
    };
    open_dev(Arc::new(dev), writable)
}

/// Opens `image` writable, applies `f`, flushes and closes: every change
/// is on disk before an oracle looks.
pub fn with_writable<T>(
    image: &Path,
    f: impl FnOnce(&mut dyn Filesystem) -> imagegen::Result<T>,
) -> imagegen::Result<T> {
    let mut fs = open(image, true)?;
    let out = f(&mut *fs)?;
    fs.flush()?;
    Ok(out)
}
