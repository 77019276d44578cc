//! Disk-image sources: decompressed into the new base sparsely, and the
//! root filesystem grown (or shrunk to no less than its content) to a
//! requested size by repacking it through `mkfs::ext4`, keeping its UUID,
//! label and directory-hash seed, and the partition's number and start, so
//! `root=PARTUUID=`, `cmdline.txt` and `/etc/fstab` stay true.

use super::mbr;
use super::Progress;
use crate::error::{Error, Result};
use imagegen::block::{BlockDevice, FileDevice, Window};
use imagegen::bmap::Bmap;
use imagegen::mkfs::ext4::{self as mkext4, Ext4Options};
use imagegen::ranges::RangeSet;
use imagegen::source::ImageSource;
use imagegen::tree::FsSource;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const CHUNK: usize = 1 << 20;
const ZERO_RUN: usize = 64 << 10;

/// A `.bmap` beside a source image: `x.img.bmap`/`x.bmap` for `x.img.xz`
/// or `x.img`, and `x.img.xz.bmap`.
pub fn bmap_beside(source: &Path) -> Option<PathBuf> {
    let name = source.file_name()?.to_string_lossy().into_owned();
    let mut stems = vec![name.clone()];
    for ext in [".xz", ".zst", ".gz"] {
        if let Some(s) = name.strip_suffix(ext) {
            stems.push(s.to_string());
        }
    }
    let more: Vec<String> = stems
        .iter()
        .filter_map(|s| s.strip_suffix(".img").map(str::to_string))
        .collect();
    stems.extend(more);
    stems
        .iter()
        .map(|s| source.with_file_name(format!("{s}.bmap")))
        .find(|p| p.is_file())
}

/// Decompresses `src` into `out` (a new, empty file), writing only
/// non-zero data (the rest stays holes) and, with a bmap, only its mapped
/// blocks. Returns the image size.
pub fn unpack(
    mut src: ImageSource,
    out: &File,
    bmap: Option<&Bmap>,
    progress: &dyn Progress,
) -> Result<u64> {
    let what = src.describe().to_string();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    loop {
        let mut n = 0;
        while n < CHUNK {
            match src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(imagegen::Error::io_context(what.clone(), e).into()),
            }
        }
        if n == 0 {
            break;
        }
        for (i, run) in buf[..n].chunks(ZERO_RUN).enumerate() {
            let off = at + (i * ZERO_RUN) as u64;
            if run.iter().all(|&b| b == 0) {
                continue;
            }
            if let Some(b) = bmap {
                let span = RangeSet::from_extents(vec![imagegen::ranges::Extent::new(
                    off,
                    off + run.len() as u64,
                )]);
                for e in span.intersect(&b.mapped).extents() {
                    let s = (e.start - off) as usize;
                    let t = (e.end - off) as usize;
                    out.write_all_at(&run[s..t], e.start)
                        .map_err(|e| imagegen::Error::io_context("writing the base", e))?;
                }
                continue;
            }
            out.write_all_at(run, off)
                .map_err(|e| imagegen::Error::io_context("writing the base", e))?;
        }
        at += n as u64;
        progress.advance(n as u64);
    }
    out.set_len(at)
        .map_err(|e| imagegen::Error::io_context("sizing the base", e))?;
    if let Some(b) = bmap {
        if b.image_size != at {
            return Err(Error::refused(
                what,
                format!(
                    "is {at} bytes but the bmap beside it describes {} bytes",
                    b.image_size
                ),
            ));
        }
    }
    Ok(at)
}

/// Raw superblock fields that a repack keeps.
struct Ext4Ids {
    uuid: [u8; 16],
    hash_seed: [u8; 16],
    label: String,
    block_size: u64,
}

fn ext4_ids(dev: &dyn BlockDevice) -> Result<Ext4Ids> {
    let mut sb = [0u8; 1024];
    dev.read_at(1024, &mut sb)?;
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[0x68..0x78]);
    let mut hash_seed = [0u8; 16];
    hash_seed.copy_from_slice(&sb[0xec..0xfc]);
    let raw = &sb[0x78..0x88];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(Ext4Ids {
        uuid,
        hash_seed,
        label: String::from_utf8_lossy(&raw[..end]).into_owned(),
        block_size: 1024u64 << u32::from_le_bytes([sb[0x18], sb[0x19], sb[0x1a], sb[0x1b]]).min(6),
    })
}

/// Resizes the image file to `new_size` with the root partition (MBR slot
/// `slot`, the last partition on the disk) ending at the new end, and its
/// ext4 filesystem repacked to fill it. `scratch` is a directory for the
/// repacked filesystem (beside the output, so no other disk fills up).
pub fn resize_root(
    file: &File,
    path: &Path,
    slot: u32,
    new_size: u64,
    scratch: &Path,
    progress: &dyn Progress,
    now: imagegen::fs::Timestamp,
) -> Result<()> {
    let old_size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::from_file(dup(file, path)?, path, true)?);
    let entries = mbr::entries(&*dev)?;
    let root = entries
        .iter()
        .find(|e| e.slot == slot)
        .copied()
        .ok_or_else(|| {
            Error::refused(path.display().to_string(), format!("no partition {slot}"))
        })?;
    if let Some(after) = entries.iter().find(|e| e.kind != 0 && e.start > root.start) {
        return Err(Error::refused(
            path.display().to_string(),
            format!(
                "the root partition {slot} is not the last one (partition {} follows it): it cannot grow",
                after.slot
            ),
        ));
    }
    if new_size <= root.start + mkext4::MIN_SIZE {
        return Err(Error::refused(
            format!("--size {new_size}"),
            format!(
                "leaves no room for the root filesystem after byte {}",
                root.start
            ),
        ));
    }
    let new_part = (new_size - root.start) / 512 * 512;
    let fs_size = new_part / mkext4::BLOCK_SIZE * mkext4::BLOCK_SIZE;
    let win: Arc<dyn BlockDevice> = Arc::new(Window::new(dev.clone(), root.start, root.size)?);
    let ids = ext4_ids(&*win)?;
    let old = imagegen::fs::open(win.clone(), imagegen::fs::OpenOptions::read_only())?;
    let mut src = FsSource::new(old, format!("partition {slot}"), Some(ids.block_size));
    // The request's time (the command line's one time source): the
    // superblock's and new objects' time; nothing later survives.
    let mut opts = Ext4Options::new(fs_size, ids.uuid, now.secs, Some(now.secs));
    opts.hash_seed = Some(ids.hash_seed);
    opts.label = (!ids.label.is_empty()).then(|| ids.label.clone());
    let tmp = tempfile::NamedTempFile::new_in(scratch).map_err(|e| Error::io(scratch, e))?;
    tmp.as_file()
        .set_len(fs_size)
        .map_err(|e| Error::io(tmp.path(), e))?;
    let tmp_dev = FileDevice::from_file(dup(tmp.as_file(), tmp.path())?, tmp.path(), true)?;
    progress.step("repacking the root filesystem");
    let tmp_dev = Arc::new(tmp_dev);
    match mkext4::build(&mut src, &opts, &*tmp_dev, true) {
        Ok(_) => {}
        Err(imagegen::Error::NoSpace(why)) => {
            return Err(Error::refused(
                format!("--size {new_size}"),
                format!("is smaller than the content of the root filesystem: {why}"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    drop(src);
    // The old root is read; now replace it.
    let end_old = root.start + root.size;
    file.set_len(new_size.max(old_size))
        .map_err(|e| Error::io(path, e))?;
    punch(file, root.start, end_old.max(new_size) - root.start).map_err(|e| Error::io(path, e))?;
    let data =
        imagegen::ranges::data_map(tmp.as_file(), fs_size).map_err(|e| Error::io(tmp.path(), e))?;
    let mut buf = vec![0u8; CHUNK];
    for e in data.extents() {
        let mut at = e.start;
        while at < e.end {
            let n = ((e.end - at) as usize).min(CHUNK);
            tmp_dev.read_at(at, &mut buf[..n])?;
            file.write_all_at(&buf[..n], root.start + at)
                .map_err(|e| Error::io(path, e))?;
            at += n as u64;
        }
    }
    file.set_len(new_size).map_err(|e| Error::io(path, e))?;
    mbr::set_entry(
        &*dev,
        mbr::Entry {
            size: new_part,
            ..root
        },
        None,
    )?;
    dev.flush()?;
    Ok(())
}

fn dup(f: &File, path: &Path) -> Result<File> {
    f.try_clone().map_err(|e| Error::io(path, e))
}

/// Turns `start..start+len` of `file` into zeros, as holes where the system
/// can, written zeros otherwise.
pub fn punch(file: &File, start: u64, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{fallocate, FallocateFlags};
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        if fallocate(file, flags, start as i64, len as i64).is_ok() {
            return Ok(());
        }
    }
    let zeros = vec![0u8; CHUNK];
    let mut at = start;
    while at < start + len {
        let n = ((start + len - at) as usize).min(CHUNK);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}
