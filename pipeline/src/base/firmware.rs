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
    /// Bytes to write from the region's first byte (byte 512 on Tow-Boot's
    /// boards: everything after sector 0).
    pub bytes: Vec<u8>,
    /// The firmware region `start..end` in bytes, when it came from a disk
    /// image's own 0xF8 entry (Tow-Boot's `shared.disk-image.img`); `None`
    /// for a raw binary, which gets the board's region.
    pub region: Option<(u64, u64)>,
    /// Where they came from, for messages and the manifest.
    pub origin: String,
}

/// Reads Tow-Boot from a release archive (`.tar.xz` holding
/// `shared.disk-image.img`, or at least `binaries/Tow-Boot.noenv.bin`), a
/// `shared.disk-image.img`, or a raw firmware binary. Tow-Boot's binaries
/// are told apart by name (`Tow-Boot.<variant>.bin`, made by the installPhase
/// of Tow-Boot/Tow-Boot modules/hardware/amlogic/default.nix): `noenv` is
/// taken as is, `mmcboot` without its 512 leading zeros, `spi` and other
/// variants, and the `*.installer.img` images, are refused by name. `offset`
/// is where the board's boot ROM reads (a disk image's 0xF8 entry must start
/// there); `end` bounds a raw binary.
pub fn read_towboot(path: &Path, offset: u64, end: u64) -> Result<Towboot> {
    let what = path.display().to_string();
    let mut src = imagegen::source::ImageSource::open(path)?;
    let mut head = vec![0u8; 512];
    let n = read_up_to(&mut src, &mut head)?;
    head.truncate(n);
    if n >= 262 && &head[257..262] == b"ustar" {
        return towboot_from_tar(path, offset, end);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = Kind::of(&name, &what)?;
    let mut all = head;
    src.read_to_end(&mut all).map_err(|e| Error::io(path, e))?;
    from_bytes(all, &what, kind, offset, end)
}

/// What a file is, by the name Tow-Boot gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `Tow-Boot.noenv.bin`: the firmware as it goes from byte 512.
    Noenv,
    /// `Tow-Boot.mmcboot.bin`: 512 zero bytes, then the firmware.
    Mmcboot,
    /// Any other name: a disk image with an 0xF8 entry, or raw bytes
    /// (512 leading zeros are taken as the mmcboot padding).
    ByContent,
}

impl Kind {
    fn of(file_name: &str, what: &str) -> Result<Kind> {
        let name = ["xz", "zst", "gz"]
            .iter()
            .find_map(|c| file_name.strip_suffix(&format!(".{c}")))
            .unwrap_or(file_name);
        if name.ends_with(".installer.img") {
            return Err(Error::refused(
                what,
                "is one of Tow-Boot's installer images (it installs Tow-Boot to SPI flash or eMMC when booted); give the release archive, shared.disk-image.img or binaries/Tow-Boot.noenv.bin",
            ));
        }
        let Some(variant) = name
            .strip_prefix("Tow-Boot.")
            .and_then(|v| v.strip_suffix(".bin"))
        else {
            return Ok(Kind::ByContent);
        };
        match variant {
            "noenv" => Ok(Kind::Noenv),
            "mmcboot" => Ok(Kind::Mmcboot),
            "spi" => Err(Error::refused(
                what,
                "is Tow-Boot's SPI flash variant, which goes into the board's SPI flash (through spi.installer.img), not onto the card; give binaries/Tow-Boot.noenv.bin or shared.disk-image.img",
            )),
            other => Err(Error::refused(
                what,
                format!(
                    "is Tow-Boot's {other:?} variant; nodeimg writes the card variants noenv (binaries/Tow-Boot.noenv.bin, shared.disk-image.img) and mmcboot"
                ),
            )),
        }
    }
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

/// The primary MBR entries of `img` that are in use: (type, start, end) in
/// bytes.
fn mbr_entries(img: &[u8]) -> Option<Vec<(u8, u64, u64)>> {
    if img.len() < 512 || img[510..512] != [0x55, 0xaa] {
        return None;
    }
    let le = |b: &[u8]| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    Some(
        (0..4)
            .map(|i| &img[446 + 16 * i..446 + 16 * (i + 1)])
            .filter(|e| e[4] != 0)
            .map(|e| {
                let start = le(&e[8..12]) * 512;
                (e[4], start, start + le(&e[12..16]) * 512)
            })
            .collect(),
    )
}

/// A shared disk image (MBR with a 0xF8 entry) or raw firmware bytes.
fn from_bytes(all: Vec<u8>, what: &str, kind: Kind, offset: u64, end: u64) -> Result<Towboot> {
    let entries = match kind {
        Kind::ByContent => mbr_entries(&all),
        Kind::Noenv | Kind::Mmcboot => None,
    };
    let (bytes, region) = if let Some(entries) = entries {
        let Some(&(_, start, f8_end)) = entries.iter().find(|e| e.0 == 0xf8) else {
            return Err(Error::refused(
                what,
                "is a disk image without a Tow-Boot (0xF8) firmware partition",
            ));
        };
        if entries.len() > 1 {
            return Err(Error::refused(
                what,
                format!(
                    "is a disk image with {} partitions besides Tow-Boot's 0xF8 firmware partition (shared.disk-image.img has only that one)",
                    entries.len() - 1
                ),
            ));
        }
        if start != offset {
            return Err(Error::refused(
                what,
                format!(
                    "has its firmware partition at byte {start}; this board's boot ROM reads it from byte {offset}"
                ),
            ));
        }
        // The seed's `dd bs=512 skip=1 seek=1` copies everything after
        // sector 0: the firmware partition, then Tow-Boot's alignment
        // padding (its image builder rounds the image up to 1 MiB and adds
        // a sector), which must be zeros to leave out.
        let cut = (f8_end as usize).min(all.len()).max(start as usize);
        if let Some(i) = all[cut..].iter().position(|&b| b != 0) {
            return Err(Error::refused(
                what,
                format!(
                    "holds data at byte {} after its firmware partition (which ends at byte {f8_end})",
                    cut + i
                ),
            ));
        }
        (all[start as usize..cut].to_vec(), Some((start, f8_end)))
    } else if kind == Kind::Mmcboot
        || (kind == Kind::ByContent && all.len() > 512 && all[..512].iter().all(|&b| b == 0))
    {
        if all.len() <= 512 || all[..512].iter().any(|&b| b != 0) {
            return Err(Error::refused(
                what,
                "does not start with the 512 zero bytes of Tow-Boot's mmcboot variant",
            ));
        }
        (all[512..].to_vec(), None)
    } else {
        (all, None)
    };
    if bytes.iter().all(|&b| b == 0) {
        return Err(Error::refused(what, "holds no firmware (only zeros)"));
    }
    let (start, stop) = region.unwrap_or((offset, end));
    if start + bytes.len() as u64 > stop {
        return Err(Error::refused(
            what,
            format!(
                "firmware of {} bytes does not fit between byte {start} and {stop}",
                bytes.len()
            ),
        ));
    }
    Ok(Towboot {
        bytes,
        region,
        origin: what.to_string(),
    })
}

fn towboot_from_tar(path: &Path, offset: u64, end: u64) -> Result<Towboot> {
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
        return from_bytes(
            img,
            &format!("{what}: shared.disk-image.img"),
            Kind::ByContent,
            offset,
            end,
        );
    }
    if let Some(bin) = noenv {
        return from_bytes(
            bin,
            &format!("{what}: Tow-Boot.noenv.bin"),
            Kind::Noenv,
            offset,
            end,
        );
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
/// entry over the firmware region (`fw.region`, else `offset..end`) in a
/// free slot, keeps the disk id and the OS
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
    let (offset, end) = fw.region.unwrap_or((offset, end));
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
    let mut region = vec![0u8; (end - offset) as usize];
    let n = fw.bytes.len().min(region.len());
    region[..n].copy_from_slice(&fw.bytes[..n]);
    let win = Window::new(disk.clone(), offset, end - offset)?;
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
