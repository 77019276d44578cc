//! macOS disks from `diskutil list -plist` and `diskutil info -plist DISK`.
//!
//! The parsing is plain data handling and is tested on any host with recorded
//! outputs (`fixtures/diskutil/`); only [`list`] and [`unmount_disk`], which
//! run `diskutil`, are macOS-only. Writes go through the raw node `/dev/rdiskN`.

use super::{is_media_mount, Disk, Mount, Transport};
use crate::{Error, Result};
use plist::{Dictionary, Value};

fn bad(what: &str, why: impl Into<String>) -> Error {
    Error::Image(imagegen::Error::corrupt(what, why))
}

fn parse(bytes: &[u8], what: &str) -> Result<Dictionary> {
    let v: Value = plist::from_bytes(bytes).map_err(|e| bad(what, e.to_string()))?;
    v.into_dictionary()
        .ok_or_else(|| bad(what, "the top level is not a dictionary"))
}

fn s<'a>(d: &'a Dictionary, k: &str) -> Option<&'a str> {
    d.get(k).and_then(Value::as_string)
}

fn b(d: &Dictionary, k: &str) -> Option<bool> {
    d.get(k).and_then(Value::as_boolean)
}

fn u(d: &Dictionary, k: &str) -> Option<u64> {
    d.get(k).and_then(Value::as_unsigned_integer)
}

fn dicts<'a>(d: &'a Dictionary, k: &str) -> impl Iterator<Item = &'a Dictionary> {
    d.get(k)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_dictionary)
}

/// What `diskutil list -plist` says: whole disks and the mounts on each,
/// APFS containers attributed to the physical disks they live on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// (whole-disk identifier, mounts on it).
    pub disks: Vec<(String, Vec<Mount>)>,
}

/// Parses `diskutil list -plist`.
pub fn parse_list(bytes: &[u8]) -> Result<Listing> {
    const WHAT: &str = "diskutil list output";
    let top = parse(bytes, WHAT)?;
    let all: Vec<&Dictionary> = dicts(&top, "AllDisksAndPartitions").collect();
    if top.get("AllDisksAndPartitions").is_none() {
        return Err(bad(WHAT, "no AllDisksAndPartitions"));
    }
    let mut disks: Vec<(String, Vec<Mount>)> = Vec::new();
    // Physical disks first, then containers credited to the disk of their store.
    let mut containers = Vec::new();
    for d in &all {
        let id =
            s(d, "DeviceIdentifier").ok_or_else(|| bad(WHAT, "a disk without DeviceIdentifier"))?;
        let mut mounts = Vec::new();
        let mut add = |dev: &str, mp: Option<&str>| {
            if let Some(mp) = mp.filter(|m| !m.is_empty()) {
                mounts.push(Mount {
                    device: format!("/dev/{dev}"),
                    mountpoint: mp.to_string(),
                    system: !is_media_mount(mp),
                });
            }
        };
        add(id, s(d, "MountPoint"));
        for p in dicts(d, "Partitions").chain(dicts(d, "APFSVolumes")) {
            if let Some(pid) = s(p, "DeviceIdentifier") {
                add(pid, s(p, "MountPoint"));
                // The sealed system volume is mounted as a snapshot.
                for snap in dicts(p, "MountedSnapshots") {
                    add(
                        s(snap, "SnapshotBSD").unwrap_or(pid),
                        s(snap, "SnapshotMountPoint"),
                    );
                }
            }
        }
        let stores: Vec<String> = dicts(d, "APFSPhysicalStores")
            .filter_map(|p| s(p, "DeviceIdentifier"))
            .map(whole_disk)
            .collect();
        if stores.is_empty() {
            disks.push((id.to_string(), mounts));
        } else {
            containers.push((stores, mounts));
        }
    }
    for (stores, mounts) in containers {
        for store in stores {
            if let Some((_, m)) = disks.iter_mut().find(|(id, _)| *id == store) {
                m.extend(mounts.iter().cloned());
            }
        }
    }
    Ok(Listing { disks })
}

/// `disk0s2` → `disk0`.
fn whole_disk(id: &str) -> String {
    let rest = id.strip_prefix("disk").unwrap_or(id);
    let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
    format!("disk{n}")
}

/// Builds a [`Disk`] from `diskutil info -plist DISK` and the mounts the
/// listing found on it.
pub fn parse_info(bytes: &[u8], mounts: Vec<Mount>) -> Result<Disk> {
    const WHAT: &str = "diskutil info output";
    let d = parse(bytes, WHAT)?;
    let id = s(&d, "DeviceIdentifier").ok_or_else(|| bad(WHAT, "no DeviceIdentifier"))?;
    let size = u(&d, "TotalSize")
        .or_else(|| u(&d, "Size"))
        .ok_or_else(|| bad(WHAT, format!("no size for {id}")))?;
    let transport = match s(&d, "BusProtocol").unwrap_or("") {
        "USB" => Transport::Usb,
        "Secure Digital" | "SD" => Transport::Mmc,
        "PCI-Express" | "PCI" | "NVMExpress" | "Apple Fabric" => Transport::Nvme,
        "SATA" => Transport::Sata,
        "SAS" | "Fibre Channel Interface" => Transport::Scsi,
        "Disk Image" | "Virtual Interface" => Transport::Virtual,
        _ => Transport::Unknown,
    };
    let internal = b(&d, "Internal").unwrap_or(true);
    let removable = b(&d, "RemovableMedia").unwrap_or(false)
        || b(&d, "Removable").unwrap_or(false)
        || !internal;
    let mut mounts = mounts;
    if b(&d, "OSInternalMedia").unwrap_or(false) {
        mounts.push(Mount {
            device: format!("/dev/{id}"),
            mountpoint: "(macOS internal media)".into(),
            system: true,
        });
    }
    Ok(Disk {
        path: format!("/dev/{id}"),
        write_path: format!("/dev/r{id}"),
        size,
        vendor: None,
        model: s(&d, "MediaName")
            .or_else(|| s(&d, "IORegistryEntryName"))
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty()),
        transport,
        removable,
        read_only: !b(&d, "WritableMedia").unwrap_or(true),
        mounts,
    })
}

/// Every whole disk, from `diskutil`.
#[cfg(target_os = "macos")]
pub fn list() -> Result<Vec<Disk>> {
    let listing = parse_list(&diskutil(&["list", "-plist"])?)?;
    listing
        .disks
        .into_iter()
        .map(|(id, mounts)| parse_info(&diskutil(&["info", "-plist", &id])?, mounts))
        .collect()
}

/// Unmounts every volume of `disk` (`diskutil unmountDisk`).
#[cfg(target_os = "macos")]
pub fn unmount_disk(disk: &str) -> Result<()> {
    diskutil(&["unmountDisk", disk]).map(|_| ())
}

#[cfg(target_os = "macos")]
fn diskutil(args: &[&str]) -> Result<Vec<u8>> {
    let out = std::process::Command::new("/usr/sbin/diskutil")
        .args(args)
        .output()
        .map_err(|e| Error::system("running diskutil", e))?;
    if !out.status.success() {
        return Err(Error::system(
            format!("diskutil {}", args.join(" ")),
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{refusals, Options};

    const LIST: &[u8] = include_bytes!("../../../fixtures/diskutil/list.plist");

    fn disks() -> Vec<Disk> {
        let listing = parse_list(LIST).unwrap();
        let info = |id: &str| -> &[u8] {
            match id {
                "disk0" => include_bytes!("../../../fixtures/diskutil/info-disk0.plist"),
                "disk4" => include_bytes!("../../../fixtures/diskutil/info-disk4.plist"),
                "disk5" => include_bytes!("../../../fixtures/diskutil/info-disk5.plist"),
                other => panic!("no recorded info for {other}"),
            }
        };
        listing
            .disks
            .into_iter()
            .map(|(id, mounts)| parse_info(info(&id), mounts).unwrap())
            .collect()
    }

    #[test]
    fn apfs_container_volumes_count_for_the_physical_disk() {
        let listing = parse_list(LIST).unwrap();
        let ids: Vec<&str> = listing.disks.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["disk0", "disk4", "disk5"]);
        let disk0 = &listing.disks[0].1;
        let mps: Vec<&str> = disk0.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(mps, ["/", "/System/Volumes/Data"]);
    }

    #[test]
    fn recorded_disks_are_judged_like_linux_ones() {
        let d = disks();
        let opts = Options {
            allow_fixed: true,
            no_unmount: false,
        };
        let internal = refusals(&d[0], Some(1 << 30), opts);
        assert!(
            internal[0].contains("system disk") && internal[0].contains("holds /"),
            "{internal:?}"
        );
        let sd = &d[1];
        assert_eq!((sd.transport, sd.removable), (Transport::Mmc, true));
        assert_eq!(sd.write_path, "/dev/rdisk4");
        assert_eq!(sd.model.as_deref(), Some("Built In SDXC Reader"));
        assert_eq!(sd.mounts[0].mountpoint, "/Volumes/bootfs");
        assert!(refusals(sd, Some(8 << 30), Options::default()).is_empty());
        let no_unmount = Options {
            allow_fixed: false,
            no_unmount: true,
        };
        assert!(refusals(sd, Some(8 << 30), no_unmount)[0].contains("/Volumes/bootfs"));
        let usb = &d[2];
        assert_eq!(
            (usb.transport, usb.removable, usb.size),
            (Transport::Usb, true, 15518924800)
        );
        let small = refusals(usb, Some(16 << 30), Options::default());
        assert!(small[0].contains("too small"), "{small:?}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_list(b"not a plist").is_err());
        assert!(parse_info(b"<plist version=\"1.0\"><array/></plist>", vec![]).is_err());
    }
}
