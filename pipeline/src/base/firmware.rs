//! Board firmware: the Raspberry Pi 5 boot files in the FAT boot partition
//! (checked, and replaced or added from `--firmware`), and Tow-Boot written
//! as raw bytes after the MBR of an Odroid C4 card.

use super::mbr;
use crate::error::{Error, Result};
use imagegen::block::{BlockDevice, Window};
use imagegen::fs::{FileKind, Filesystem, NewAttrs};
use imagegen::tree::{EntryKind, TreeSource};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Copies the entries of `tree` below `prefix` (a tree path such as
/// `boot/firmware`, or `""` for all) into the FAT filesystem `fat`,
/// replacing files of the same name. Owners, modes and links have no place
/// on FAT: symlinks and special files are refused with their path.
pub fn copy_tree_into_fat(
    tree: &mut dyn TreeSource,
    prefix: &str,
    fat: &mut dyn Filesystem,
) -> Result<u64> {
    let mut copied = 0u64;
    let what = tree.describe();
    let rel = |path: &str| -> Option<String> {
        if prefix.is_empty() {
            return (!path.is_empty()).then(|| path.to_string());
        }
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|r| !r.is_empty())
            .map(str::to_string)
    };
    tree.walk(true, &mut |entry, data| {
        let Some(r) = rel(&entry.path) else {
            return Ok(());
        };
        let path = format!("/{r}");
        let attrs = NewAttrs {
            mtime: Some(entry.mtime),
            ..NewAttrs::default()
        };
        match &entry.kind {
            EntryKind::Dir => fat.mkdir(&path, true, &attrs),
            EntryKind::File { size, .. } => {
                if let Some((parent, _)) = path.rsplit_once('/') {
                    if !parent.is_empty() {
                        fat.mkdir(parent, true, &NewAttrs::default())?;
                    }
                }
                if matches!(fat.stat(&path), Ok(s) if s.kind == FileKind::Dir) {
                    fat.remove(&path, true)?;
                }
                let mut empty: &[u8] = &[];
                let reader: &mut dyn Read = match data {
                    Some(r) => r,
                    None => &mut empty,
                };
                copied += 1;
                fat.write_file(&path, reader, *size, &attrs)
            }
            other => Err(imagegen::Error::unsupported(
                "boot file",
                format!(
                    "{what}: {} is a {other:?}; the FAT boot partition holds only files and directories",
                    entry.path
                ),
            )),
        }
    })?;
    fat.flush()?;
    Ok(copied)
}

/// The boot files the Pi 5 EEPROM loads that `fat` lacks: `required`
/// (`dir/` = a directory) and the kernel (`kernel=` of config.txt, else
/// `default_kernel`).
pub fn missing_pi_boot_files(
    fat: &dyn Filesystem,
    required: &[String],
    default_kernel: &str,
) -> Vec<String> {
    let mut missing = Vec::new();
    let is = |p: &str, dir: bool| match fat.stat(&format!("/{p}")) {
        Ok(s) => (s.kind == FileKind::Dir) == dir,
        Err(_) => false,
    };
    for r in required {
        let (name, dir) = match r.strip_suffix('/') {
            Some(n) => (n, true),
            None => (r.as_str(), false),
        };
        if !is(name, dir) {
            missing.push(r.clone());
        }
    }
    let kernel = config_kernel(fat).unwrap_or_else(|| default_kernel.to_string());
    if !is(&kernel, false) {
        missing.push(kernel);
    }
    missing
}

/// `kernel=` from config.txt, in the sections a Pi 5 reads (`[all]`,
/// `[pi5]`, or before any section).
fn config_kernel(fat: &dyn Filesystem) -> Option<String> {
    let mut buf = Vec::new();
    fat.read_file("/config.txt", &mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let mut active = true;
    let mut kernel = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(sec) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            active = matches!(sec.trim(), "all" | "pi5");
            continue;
        }
        if !active {
            continue;
        }
        if let Some(v) = l.strip_prefix("kernel=") {
            kernel = Some(v.trim().trim_start_matches('/').to_string());
        }
    }
    kernel
}

/// Tow-Boot, as read from what the user gave.
#[derive(Debug, Clone)]
pub struct Towboot {
    /// Bytes to write from disk offset 512 (the region after sector 0).
    pub bytes: Vec<u8>,
    /// Where they came from, for messages and the manifest.
    pub origin: String,
}

/// Reads Tow-Boot from a release archive (`.tar.xz` holding
/// `shared.disk-image.img`, or at least `binaries/Tow-Boot.noenv.bin`), a
/// `shared.disk-image.img`, or a raw firmware `.bin` (`Tow-Boot.mmcboot.bin`
/// with its 512 leading zeros is recognised), by content.
pub fn read_towboot(path: &Path, region_end: u64) -> Result<Towboot> {
    let what = path.display().to_string();
    let mut src = imagegen::source::ImageSource::open(path)?;
    let mut head = vec![0u8; 512];
    let n = read_up_to(&mut src, &mut head)?;
    head.truncate(n);
    if n >= 262 && &head[257..262] == b"ustar" {
        return towboot_from_tar(path, region_end);
    }
    let mut all = head;
    src.read_to_end(&mut all).map_err(|e| Error::io(path, e))?;
    from_bytes(all, &what, region_end)
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(imagegen::Error::io_context("reading firmware", e).into()),
        }
    }
    Ok(n)
}

/// A shared disk image (MBR with a 0xF8 entry) or raw firmware bytes.
fn from_bytes(all: Vec<u8>, what: &str, region_end: u64) -> Result<Towboot> {
    let has_mbr = all.len() >= 512 && all[510..512] == [0x55, 0xaa];
    let f8_end = has_mbr
        .then(|| {
            (0..4).find_map(|i| {
                let e = &all[446 + 16 * i..446 + 16 * (i + 1)];
                let le = |b: &[u8]| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                (e[4] == 0xf8).then(|| (le(&e[8..12]) + le(&e[12..16])) * 512)
            })
        })
        .flatten();
    let bytes = if let Some(end) = f8_end {
        // The seed's `dd bs=512 skip=1 seek=1`: everything after sector 0,
        // which for Tow-Boot's image is the firmware region.
        let end = (end as usize).min(all.len()).max(512);
        all[512..end].to_vec()
    } else if all.len() > 512 && all[..512].iter().all(|&b| b == 0) {
        // Tow-Boot.mmcboot.bin: 512 zeros, then the firmware.
        all[512..].to_vec()
    } else if has_mbr {
        return Err(Error::refused(
            what,
            "is a disk image without a Tow-Boot (0xF8) firmware partition",
        ));
    } else {
        all
    };
    if bytes.iter().all(|&b| b == 0) {
        return Err(Error::refused(what, "holds no firmware (only zeros)"));
    }
    if 512 + bytes.len() as u64 > region_end {
        return Err(Error::refused(
            what,
            format!(
                "firmware of {} bytes does not fit between byte 512 and {region_end}",
                bytes.len()
            ),
        ));
    }
    Ok(Towboot {
        bytes,
        origin: what.to_string(),
    })
}

fn towboot_from_tar(path: &Path, region_end: u64) -> Result<Towboot> {
    let what = path.display().to_string();
    let mut shared = None;
    let mut noenv = None;
    let mut tree = imagegen::tree::TarSource::open(path)?;
    tree.walk(true, &mut |entry, data| {
        let name = entry.path.rsplit('/').next().unwrap_or("");
        let slot = match name {
            "shared.disk-image.img" => &mut shared,
            "Tow-Boot.noenv.bin" => &mut noenv,
            _ => return Ok(()),
        };
        if let Some(r) = data {
            let mut v = Vec::new();
            r.read_to_end(&mut v)
                .map_err(|e| imagegen::Error::io_context(entry.path.clone(), e))?;
            *slot = Some(v);
        }
        Ok(())
    })?;
    if let Some(img) = shared {
        return from_bytes(img, &format!("{what}: shared.disk-image.img"), region_end);
    }
    if let Some(bin) = noenv {
        return from_bytes(bin, &format!("{what}: Tow-Boot.noenv.bin"), region_end);
    }
    Err(Error::refused(
        what,
        "is a tarball without shared.disk-image.img or binaries/Tow-Boot.noenv.bin: not a Tow-Boot release",
    ))
}

/// What laying Tow-Boot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TowbootPlaced {
    /// MBR slot of the 0xF8 entry.
    pub slot: u32,
    /// Partitions moved out of the firmware region: (number, old, new start).
    pub moved: Vec<(u32, u64, u64)>,
}

/// Writes `fw` from byte 512 of `disk`, adds (or reuses) a `mbr_type`
/// entry over `offset..end` in a free slot, keeps the disk id and the OS
/// partitions with their numbers. An OS partition starting inside the
/// region is refused with the offsets, or moved to the first `align`ed
/// place after it with `relocate` when there is room.
pub fn place_towboot(
    disk: &Arc<dyn BlockDevice>,
    fw: &Towboot,
    offset: u64,
    end: u64,
    mbr_type: u8,
    relocate: bool,
    align: u64,
) -> Result<TowbootPlaced> {
    let slots = mbr::entries(&**disk)?;
    let mut os: Vec<mbr::Entry> = slots
        .iter()
        .copied()
        .filter(|e| e.kind != 0 && e.kind != mbr_type)
        .collect();
    os.sort_by_key(|e| e.start);
    let mut moved = Vec::new();
    let inside: Vec<mbr::Entry> = os.iter().copied().filter(|e| e.start < end).collect();
    if !inside.is_empty() && !relocate {
        let list: Vec<String> = inside
            .iter()
            .map(|e| format!("partition {} starts at byte {}", e.slot, e.start))
            .collect();
        return Err(Error::refused(
            disk.describe(),
            format!(
                "{} inside the firmware region {offset}..{end} (use --relocate to move it)",
                list.join(", ")
            ),
        ));
    }
    // Move from the last conflicting partition backwards is not enough when
    // they shift each other; move in order, each after the previous one.
    let mut cursor = end.next_multiple_of(align.max(512));
    for i in 0..os.len() {
        let e = os[i];
        if e.start >= cursor && !inside.contains(&e) {
            cursor = cursor.max(e.start + e.size);
            continue;
        }
        let new_start = cursor.max(e.start).next_multiple_of(align.max(512));
        let limit = os.get(i + 1).map(|n| n.start).unwrap_or(disk.size());
        if new_start + e.size > limit {
            return Err(Error::refused(
                disk.describe(),
                format!(
                    "partition {} ({} bytes at {}) cannot move out of the firmware region: no room before byte {limit} (grow the image with --size)",
                    e.slot, e.size, e.start
                ),
            ));
        }
        if new_start != e.start {
            move_bytes(&**disk, e.start, new_start, e.size)?;
            let moved_e = mbr::Entry {
                start: new_start,
                ..e
            };
            mbr::set_entry(&**disk, moved_e, None)?;
            os[i] = moved_e;
            moved.push((e.slot, e.start, new_start));
        }
        cursor = new_start + e.size;
    }
    let slot = slots
        .iter()
        .find(|e| e.kind == mbr_type)
        .or_else(|| slots.iter().find(|e| e.kind == 0))
        .map(|e| e.slot)
        .ok_or_else(|| {
            Error::refused(
                disk.describe(),
                "all four MBR slots are used: no free slot for the firmware entry",
            )
        })?;
    // Exactly the seed's bytes: the firmware region after sector 0 as given,
    // zeros where the given bytes end.
    let mut region = vec![0u8; (end - 512) as usize];
    let n = fw.bytes.len().min(region.len());
    region[..n].copy_from_slice(&fw.bytes[..n]);
    let win = Window::new(disk.clone(), 512, end - 512)?;
    win.write_at(0, &region)?;
    mbr::set_entry(
        &**disk,
        mbr::Entry {
            slot,
            kind: mbr_type,
            start: offset,
            size: end - offset,
        },
        Some(false),
    )?;
    disk.flush()?;
    Ok(TowbootPlaced { slot, moved })
}

/// Moves `len` bytes from `from` to `to` (to > from: copied from the end).
fn move_bytes(dev: &dyn BlockDevice, from: u64, to: u64, len: u64) -> Result<()> {
    const CHUNK: u64 = 4 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        let at = if to > from { left - n } else { len - left };
        dev.read_at(from + at, &mut buf[..n as usize])?;
        dev.write_at(to + at, &buf[..n as usize])?;
        left -= n;
    }
    Ok(())
}
