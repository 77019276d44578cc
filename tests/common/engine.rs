//! Opening an image with our engine. Everything goes through the
//! `Filesystem` trait; this is the only place that names the engine type,
//! until `imagegen::fs::open` (which picks it by probing) is on main.

use imagegen::block::{BlockDevice, FileDevice};
use imagegen::fs::ext4::Ext4Fs;
use imagegen::fs::Filesystem;
use std::path::Path;
use std::sync::Arc;

/// Opens an image holding a bare ext4 filesystem through any block device.
pub fn open_dev(dev: Arc<dyn BlockDevice>) -> imagegen::Result<Box<dyn Filesystem>> {
    Ok(Box::new(Ext4Fs::open(dev)?))
}

/// Opens a bare filesystem image, read-only or writable.
pub fn open(image: &Path, writable: bool) -> imagegen::Result<Box<dyn Filesystem>> {
    let dev = if writable {
        FileDevice::open_rw(image)?
    } else {
        FileDevice::open(image)?
    };
    open_dev(Arc::new(dev))
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
