//! Linux disks from sysfs and procfs. Every path is taken from [`Roots`], so
//! tests run the same code on a fake `/sys` tree and injected mount tables.

use crate::devices::{is_media_mount, Disk, Mount, Transport};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the kernel's tables are read from.
#[derive(Debug, Clone)]
pub struct Roots {
    /// `/sys`.
    pub sys: PathBuf,
    /// `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// `/proc/swaps`.
    pub swaps: PathBuf,
    /// Whether device paths may be resolved with `stat` (false for fake trees).
    pub stat_devices: bool,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: "/sys".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            swaps: "/proc/swaps".into(),
            stat_devices: true,
        }
    }
}

/// A block device node known to sysfs: a disk or one of its partitions.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    /// The whole disk it belongs to.
    disk: String,
    /// Devices this one is stacked on (device-mapper, md).
    slaves: Vec<String>,
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn io(p: &Path, e: std::io::Error) -> Error {
    Error::Image(imagegen::Error::io(p, e))
}

/// Every disk in `/sys/block` (loop devices without a backing file left out).
pub fn list(roots: &Roots) -> Result<Vec<Disk>> {
    let nodes = scan(roots)?;
    let mounts = mounts(roots, &nodes)?;
    let block = roots.sys.join("block");
    let mut names: Vec<String> = nodes
        .values()
        .filter(|n| n.disk == n.name)
        .map(|n| n.name.clone())
        .collect();
    names.sort();
    let mut disks = Vec::new();
    for name in names {
        let dir = block.join(&name);
        let size = read(&dir.join("size"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            * 512;
        if size == 0 {
            continue; // unbound loop devices, empty card readers
        }
        let real = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
        let real_s = real.to_string_lossy();
        let transport = transport_of(&real_s);
        let dev = dir.join("device");
        // Virtio and NVMe report PCI ids ("0x1af4") as vendor: not a name.
        let clean = |s: Option<String>| s.filter(|v| !v.is_empty() && !v.starts_with("0x"));
        let model = clean(read(&dev.join("model"))).or_else(|| clean(read(&dev.join("name"))));
        let mmc_sd = read(&dev.join("type")).as_deref() == Some("SD");
        let removable = read(&dir.join("removable")).as_deref() == Some("1")
            || transport == Transport::Usb
            || (transport == Transport::Mmc && mmc_sd);
        disks.push(Disk {
            path: format!("/dev/{name}"),
            write_path: format!("/dev/{name}"),
            size,
            vendor: clean(read(&dev.join("vendor"))),
            model,
            transport,
            removable,
            read_only: read(&dir.join("ro")).as_deref() == Some("1"),
            mounts: mounts.get(&name).cloned().unwrap_or_default(),
            device_number: read(&dir.join("dev")).as_deref().and_then(parse_devnum),
            unsuitable: Vec::new(),
        });
    }
    Ok(disks)
}

/// The disk whose device node is `path`. A partition, or a node that is not a
/// block device sysfs knows, is refused with the reason.
pub fn find(roots: &Roots, path: &Path) -> Result<Disk> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let shown = path.display().to_string();
    let refuse = |reason: String| Error::Refused {
        device: shown.clone(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
    if !meta.file_type().is_block_device() {
        return Err(refuse("it is not a block device".into()));
    }
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    find_devnum(roots, &format!("{major}:{minor}"), &shown)
}

/// The disk with device number `devnum` (`major:minor`), shown as `shown`.
fn find_devnum(roots: &Roots, devnum: &str, shown: &str) -> Result<Disk> {
    let refuse = |reason: String| Error::Refused {
        device: shown.to_string(),
        reason,
    };
    let nodes = scan(roots)?;
    let node = nodes
        .iter()
        .find(|(num, _)| **num == devnum)
        .map(|(_, n)| n.clone())
        .ok_or_else(|| {
            refuse(format!(
                "device {devnum} is not in {}/block",
                roots.sys.display()
            ))
        })?;
    if node.disk != node.name {
        return Err(refuse(format!(
            "it is a partition of /dev/{}; give the whole disk",
            node.disk
        )));
    }
    list(roots)?
        .into_iter()
        .find(|d| d.path == format!("/dev/{}", node.name))
        .map(|mut d| {
            d.path = shown.to_string();
            d.write_path = shown.to_string();
            d
        })
        .ok_or_else(|| refuse("it has no medium (size 0)".into()))
}

fn transport_of(real: &str) -> Transport {
    if real.contains("/usb") {
        Transport::Usb
    } else if real.contains("/mmc_host/") || real.contains("/mmcblk") {
        Transport::Mmc
    } else if real.contains("/nvme") {
        Transport::Nvme
    } else if real.contains("/ata") {
        Transport::Sata
    } else if real.contains("/virtio") {
        Transport::Virtio
    } else if real.contains("/devices/virtual/") {
        Transport::Virtual
    } else if real.contains("/host") {
        Transport::Scsi
    } else {
        Transport::Unknown
    }
}

/// Every disk and partition, keyed by `major:minor`.
fn scan(roots: &Roots) -> Result<HashMap<String, Node>> {
    let block = roots.sys.join("block");
    let mut nodes = HashMap::new();
    let entries = std::fs::read_dir(&block).map_err(|e| io(&block, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = block.join(&name);
        let slaves = |d: &Path| -> Vec<String> {
            std::fs::read_dir(d.join("slaves"))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(num) = read(&dir.join("dev")) {
            nodes.insert(
                num,
                Node {
                    name: name.clone(),
                    disk: name.clone(),
                    slaves: slaves(&dir),
                },
            );
        }
        for part in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let pdir = part.path();
            if !pdir.join("partition").exists() {
                continue;
            }
            if let Some(num) = read(&pdir.join("dev")) {
                nodes.insert(
                    num,
                    Node {
                        name: part.file_name().to_string_lossy().into_owned(),
                        disk: name.clone(),
                        slaves: Vec::new(),
                    },
                );
            }
        }
    }
    Ok(nodes)
}

/// The whole disks under node `name`, following stacked devices down.
fn disks_under(nodes: &HashMap<String, Node>, name: &str, out: &mut Vec<String>, depth: u32) {
    let Some(n) = nodes.values().find(|n| n.name == name) else {
        return;
    };
    if n.slaves.is_empty() || depth > 8 {
        if !out.contains(&n.disk) {
            out.push(n.disk.clone());
        }
        return;
    }
    for s in &n.slaves {
        disks_under(nodes, s, out, depth + 1);
    }
}

/// Mounts and swap per whole disk.
fn mounts(roots: &Roots, nodes: &HashMap<String, Node>) -> Result<HashMap<String, Vec<Mount>>> {
    let mut out: HashMap<String, Vec<Mount>> = HashMap::new();
    let mut add = |node: &str, device: String, mountpoint: String| {
        let mut disks = Vec::new();
        disks_under(nodes, node, &mut disks, 0);
        let system = mountpoint == "[swap]" || !is_media_mount(&mountpoint);
        for d in disks {
            let m = Mount {
                device: device.clone(),
                mountpoint: mountpoint.clone(),
                system,
            };
            let v = out.entry(d).or_default();
            if !v.contains(&m) {
                v.push(m);
            }
        }
    };
    let info = std::fs::read_to_string(&roots.mountinfo).map_err(|e| io(&roots.mountinfo, e))?;
    for line in info.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source superopts
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let mountpoint = unescape(f[4]);
        let source = f
            .iter()
            .position(|x| *x == "-")
            .and_then(|i| f.get(i + 2))
            .map(|s| unescape(s));
        let mut node = nodes.get(f[2]).map(|n| n.name.clone());
        if node.is_none() {
            // btrfs and friends report an anonymous device number; try the source.
            node = source
                .as_deref()
                .and_then(|s| node_of_path(roots, nodes, s));
        }
        if let Some(n) = node {
            add(&n, format!("/dev/{n}"), mountpoint);
        }
    }
    let swaps = std::fs::read_to_string(&roots.swaps).map_err(|e| io(&roots.swaps, e))?;
    for line in swaps.lines().skip(1) {
        let Some(file) = line.split_whitespace().next() else {
            continue;
        };
        let file = unescape(file);
        if let Some(n) = node_of_path(roots, nodes, &file) {
            add(&n, file, "[swap]".into());
        }
    }
    Ok(out)
}

/// The sysfs node of `/dev/NAME` (by name, else by `stat`), or of the
/// filesystem holding a swap file.
fn node_of_path(roots: &Roots, nodes: &HashMap<String, Node>, path: &str) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if let Some(name) = path.strip_prefix("/dev/") {
        if nodes.values().any(|n| n.name == name) {
            return Some(name.to_string());
        }
    }
    if !roots.stat_devices {
        return None;
    }
    let meta = std::fs::metadata(path).ok()?;
    let num = if meta.file_type().is_block_device() {
        meta.rdev()
    } else {
        meta.dev()
    };
    let key = format!("{}:{}", libc::major(num), libc::minor(num));
    nodes.get(&key).map(|n| n.name.clone())
}

/// `MAJ:MIN` as sysfs writes it → the device number `stat` reports.
fn parse_devnum(s: &str) -> Option<u64> {
    let (maj, min) = s.split_once(':')?;
    Some(libc::makedev(maj.parse().ok()?, min.parse().ok()?))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake /sys with: sda (SATA, root + swap), sdb (USB stick, mounted under
    /// /media), mmcblk0 (SD card), nvme0n1 (under LVM holding /home), loop0 (virtual).
    pub(crate) fn fake(dir: &Path) -> Roots {
        let sys = dir.join("sys");
        let mk = |devpath: &str, name: &str, dev: &str, size: u64, removable: u8| {
            let d = sys.join("devices").join(devpath).join(name);
            fs::create_dir_all(d.join("device")).unwrap();
            fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
            fs::write(d.join("size"), format!("{size}\n")).unwrap();
            fs::write(d.join("removable"), format!("{removable}\n")).unwrap();
            fs::write(d.join("ro"), "0\n").unwrap();
            fs::create_dir_all(sys.join("block")).unwrap();
            std::os::unix::fs::symlink(&d, sys.join("block").join(name)).unwrap();
            d
        };
        let part = |d: &Path, name: &str, dev: &str| {
            let p = d.join(name);
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("dev"), dev).unwrap();
            fs::write(p.join("partition"), "1").unwrap();
        };
        let sda = mk(
            "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block",
            "sda",
            "8:0",
            1 << 30,
            0,
        );
        part(&sda, "sda1", "8:1");
        part(&sda, "sda2", "8:2");
        fs::write(sda.join("device/model"), "Samsung SSD\n").unwrap();
        let sdb = mk(
            "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host1/target1:0:0/1:0:0:0/block",
            "sdb",
            "8:16",
            1 << 25,
            1,
        );
        part(&sdb, "sdb1", "8:17");
        fs::write(sdb.join("device/vendor"), "SanDisk \n").unwrap();
        let mmc = mk(
            "platform/fe320000.mmc/mmc_host/mmc1/mmc1:aaaa/block",
            "mmcblk0",
            "179:0",
            1 << 25,
            0,
        );
        fs::write(mmc.join("device/type"), "SD\n").unwrap();
        fs::write(mmc.join("device/name"), "SD32G\n").unwrap();
        let nvme = mk(
            "pci0000:00/0000:00:1d.0/nvme/nvme0",
            "nvme0n1",
            "259:0",
            1 << 30,
            0,
        );
        part(&nvme, "nvme0n1p1", "259:1");
        let dm = mk("virtual/block", "dm-0", "254:0", 1 << 29, 0);
        fs::create_dir_all(dm.join("slaves")).unwrap();
        fs::write(dm.join("slaves/nvme0n1p1"), "").unwrap();
        mk("virtual/block", "loop0", "7:0", 1 << 20, 0);
        mk("virtual/block", "loop1", "7:1", 0, 0);
        let mountinfo = dir.join("mountinfo");
        fs::write(
            &mountinfo,
            "22 1 8:2 / / rw - ext4 /dev/sda2 rw\n\
             23 22 0:21 / /proc rw - proc proc rw\n\
             24 22 8:1 / /boot/efi rw - vfat /dev/sda1 rw\n\
             25 22 8:17 / /media/me/NO\\040NAME rw - vfat /dev/sdb1 rw\n\
             26 22 254:0 / /home rw - ext4 /dev/mapper/vg-home rw\n",
        )
        .unwrap();
        let swaps = dir.join("swaps");
        fs::write(
            &swaps,
            "Filename Type Size Used Priority\n/dev/sda2 partition 1 0 -2\n",
        )
        .unwrap();
        Roots {
            sys,
            mountinfo,
            swaps,
            stat_devices: false,
        }
    }

    #[test]
    fn reads_disks_transports_and_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let disks = list(&fake(dir.path())).unwrap();
        let by = |n: &str| {
            disks
                .iter()
                .find(|d| d.path == format!("/dev/{n}"))
                .unwrap()
        };
        let names: Vec<&str> = disks.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "/dev/dm-0",
                "/dev/loop0",
                "/dev/mmcblk0",
                "/dev/nvme0n1",
                "/dev/sda",
                "/dev/sdb"
            ]
        );
        assert_eq!(by("sda").transport, Transport::Sata);
        assert_eq!(by("sda").model.as_deref(), Some("Samsung SSD"));
        assert!(!by("sda").removable);
        let r = by("sda").system_reasons();
        assert!(r.iter().any(|s| s.contains("holds / ")), "{r:?}");
        assert!(r.iter().any(|s| s.contains("/boot/efi")), "{r:?}");
        assert!(r.iter().any(|s| s.contains("swap")), "{r:?}");
        let sdb = by("sdb");
        assert_eq!((sdb.transport, sdb.removable), (Transport::Usb, true));
        assert_eq!(sdb.vendor.as_deref(), Some("SanDisk"));
        assert_eq!(sdb.mounts[0].mountpoint, "/media/me/NO NAME");
        assert!(sdb.system_reasons().is_empty());
        let mmc = by("mmcblk0");
        assert_eq!((mmc.transport, mmc.removable), (Transport::Mmc, true));
        assert_eq!(by("loop0").transport, Transport::Virtual);
        // /home on LVM on nvme0n1p1 makes the NVMe disk a system disk.
        assert!(by("nvme0n1").system_reasons()[0].contains("/home"));
    }

    #[test]
    fn partitions_and_empty_devices_are_not_targets() {
        let dir = tempfile::tempdir().unwrap();
        let roots = fake(dir.path());
        let e = find_devnum(&roots, "8:17", "/dev/sdb1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("partition of /dev/sdb; give the whole disk"),
            "{e}"
        );
        let e = find_devnum(&roots, "7:1", "/dev/loop1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no medium"), "{e}");
        let e = find_devnum(&roots, "9:9", "/dev/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in"), "{e}");
        let d = find_devnum(&roots, "8:16", "/dev/sdb").unwrap();
        assert_eq!((d.path.as_str(), d.size), ("/dev/sdb", 512 << 25));
    }
}
