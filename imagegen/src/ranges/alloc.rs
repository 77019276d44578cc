//! Where the data of a disk image is, from its own metadata: the allocation
//! map of the filesystem in a partition, or the data/hole map of a sparse
//! file. The flasher plans its writes and `base` writes its bmap from these.

use super::{Extent, RangeSet};
use crate::block::{BlockDevice, Window};
use crate::fs::{self, FsType};
use crate::layout::Partition;
use std::fs::File;
use std::sync::Arc;

/// The used ranges of the filesystem in partition `p`, in image offsets:
/// `Ok(None)` when no known filesystem is there, `Err` with the reason when
/// one is there but its map cannot be trusted (the caller then falls back).
pub fn filesystem_map(
    dev: &Arc<dyn BlockDevice>,
    p: &Partition,
) -> std::result::Result<Option<(String, RangeSet)>, String> {
    let win = Window::new(dev.clone(), p.start, p.size).map_err(|e| e.to_string())?;
    let to_set = |v: Vec<std::ops::Range<u64>>| {
        RangeSet::from_extents(v.into_iter().map(|r| Extent::new(r.start, r.end)).collect())
            .intersect(&RangeSet::full(p.size))
            .shifted(p.start)
    };
    let kind = match fs::probe(&win) {
        Ok(Some(kind)) => kind,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("filesystem not recognised: {e}")),
    };
    let used = match kind {
        FsType::Fat12 | FsType::Fat16 | FsType::Fat32 => fs::fat::used_ranges(&win),
        FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => fs::ext4::used_ranges(&win),
    };
    match used {
        Ok(v) => Ok(Some((format!("{kind} allocation map"), to_set(v)))),
        // The map exists but must not be trusted: say why the region is whole.
        Err(crate::Error::Unsupported { why, .. }) => Err(format!("{kind}: {why}")),
        Err(e) => Err(format!("{kind} map unavailable: {e}")),
    }
}

/// The data ranges of a file below `size`, from `SEEK_DATA`/`SEEK_HOLE`.
/// Filesystems without hole support report everything as data.
pub fn data_map(file: &File, size: u64) -> std::io::Result<RangeSet> {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    let mut set = RangeSet::new();
    let mut pos: i64 = 0;
    let end = size.min(i64::MAX as u64) as i64;
    while pos < end {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after pos
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let hole = (hole as i64).min(end);
        set.insert(data as u64, hole as u64);
        if hole <= data as i64 {
            break;
        }
        pos = hole;
    }
    Ok(set)
}
