//! macOS disks from `diskutil list -plist` and `diskutil info -plist DISK`.
//!
//! The parsing and every decision taken from it (the raw node, which disks
//! are synthesized or attached disk images) are plain data handling, tested
//! on any host with recorded outputs (`fixtures/diskutil/`); running
//! `diskutil` is [`crate::platform`]'s job. Writes go through the raw node
//! `/dev/rdiskN`, several times faster than the buffered `/dev/diskN`.

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
    /// APFS containers (synthesized disks) and the partitions they live on:
    /// (`disk3`, `disk0s2`). Never targets themselves.
    pub containers: Vec<(String, Vec<String>)>,
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
    let mut containers: Vec<(Vec<String>, Vec<Mount>)> = Vec::new();
    let mut synthesized = Vec::new();
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
        let store_parts: Vec<String> = dicts(d, "APFSPhysicalStores")
            .filter_map(|p| s(p, "DeviceIdentifier"))
            .map(str::to_string)
            .collect();
        if store_parts.is_empty() {
            disks.push((id.to_string(), mounts));
        } else {
            synthesized.push((id.to_string(), store_parts.clone()));
            let stores = store_parts.iter().map(|p| whole_disk(p)).collect();
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
    Ok(Listing {
        disks,
        containers: synthesized,
    })
}

/// `disk0s2` → `disk0`.
pub fn whole_disk(id: &str) -> String {
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
    let mut unsuitable = Vec::new();
    let virtual_disk = s(&d, "VirtualOrPhysical") == Some("Virtual");
    if transport == Transport::Virtual && s(&d, "BusProtocol") == Some("Disk Image") {
        unsuitable.push("it is a disk image attached from a file, not a card".to_string());
    } else if virtual_disk || d.contains_key("APFSPhysicalStores") {
        unsuitable.push("it is a disk synthesized by APFS; its physical disk holds it".to_string());
    }
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
        device_number: None,
        unsuitable,
    })
}

/// The identifier a user's path names: `/dev/disk4`, `/dev/rdisk4`,
/// `disk4` → `disk4`.
pub fn identifier(path: &str) -> String {
    let name = path.strip_prefix("/dev/").unwrap_or(path);
    name.strip_prefix('r')
        .filter(|n| n.starts_with("disk"))
        .unwrap_or(name)
        .to_string()
}

/// The raw (unbuffered) node of a disk identifier: `disk4` → `/dev/rdisk4`.
pub fn raw_node(id: &str) -> String {
    format!("/dev/r{id}")
}

/// The disk `path` names, judged from the listing and `info` (which runs
/// `diskutil info -plist ID` on a Mac, or reads a recorded file in tests).
/// A partition, an APFS container or its physical store, and an unknown
/// disk are refused with the reason.
pub fn find_in(
    listing: &Listing,
    info: &dyn Fn(&str) -> Result<Vec<u8>>,
    path: &str,
) -> Result<Disk> {
    let id = identifier(path);
    let refuse = |reason: String| Error::Refused {
        device: path.to_string(),
        reason,
    };
    if let Some((container, stores)) = listing.containers.iter().find(|(c, _)| *c == id) {
        return Err(refuse(format!(
            "it is an APFS container ({container}) synthesized from {}; it cannot be a target",
            stores.join(", ")
        )));
    }
    if let Some((container, _)) = listing
        .containers
        .iter()
        .find(|(_, stores)| stores.contains(&id))
    {
        return Err(refuse(format!(
            "it is the physical store of the APFS container {container}"
        )));
    }
    let whole = whole_disk(&id);
    if whole != id {
        return Err(refuse(format!(
            "it is a partition of /dev/{whole}; give the whole disk"
        )));
    }
    let Some((_, mounts)) = listing.disks.iter().find(|(d, _)| *d == id) else {
        return Err(refuse("it is not a disk diskutil knows".into()));
    };
    parse_info(&info(&id)?, mounts.clone())
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
            .filter(|(id, _)| ["disk0", "disk4", "disk5"].contains(&id.as_str()))
            .map(|(id, mounts)| parse_info(info(&id), mounts).unwrap())
            .collect()
    }

    /// `diskutil info -plist ID` as recorded.
    fn recorded(id: &str) -> Result<Vec<u8>> {
        let path = format!(
            "{}/../fixtures/diskutil/info-{id}.plist",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).map_err(|e| Error::system(format!("reading {path}"), e))
    }

    fn find(path: &str) -> Result<Disk> {
        find_in(&parse_list(LIST).unwrap(), &recorded, path)
    }

    #[test]
    fn raw_node_is_the_write_path_whatever_node_is_given() {
        for given in ["/dev/disk4", "/dev/rdisk4", "disk4"] {
            let d = find(given).unwrap();
            assert_eq!(
                (d.path.as_str(), d.write_path.as_str()),
                ("/dev/disk4", "/dev/rdisk4")
            );
        }
        assert_eq!(identifier("/dev/rdisk12"), "disk12");
        assert_eq!(raw_node("disk12"), "/dev/rdisk12");
    }

    #[test]
    fn each_mac_refusal_rule_has_its_reason() {
        let opts = Options::default();
        // The boot disk: the APFS container on its store holds `/`.
        let boot = find("/dev/disk0").unwrap();
        let why = refusals(&boot, Some(1 << 30), opts);
        assert!(
            why.iter()
                .any(|r| r.contains("system disk") && r.contains("holds /")),
            "{why:?}"
        );
        // A system disk is refused whatever the flags: no hint at --allow-fixed.
        assert!(!why.iter().any(|r| r.contains("--allow-fixed")), "{why:?}");
        // The synthesized container and its physical store are never targets.
        let e = find("/dev/disk3").unwrap_err().to_string();
        assert!(
            e.contains("APFS container (disk3)") && e.contains("disk0s2"),
            "{e}"
        );
        let e = find("/dev/disk0s2").unwrap_err().to_string();
        assert!(
            e.contains("physical store of the APFS container disk3"),
            "{e}"
        );
        // A synthesized disk's own info is unsuitable whatever the flags.
        let synth = parse_info(&recorded("disk3").unwrap(), vec![]).unwrap();
        let every_flag = Options {
            allow_fixed: true,
            no_unmount: false,
        };
        assert!(refusals(&synth, None, every_flag)
            .iter()
            .any(|r| r.contains("synthesized by APFS")));
        // A disk image attached from a file.
        let dmg = find("/dev/disk7").unwrap();
        assert_eq!(dmg.transport, Transport::Virtual);
        let why = refusals(&dmg, Some(1 << 30), every_flag);
        assert!(
            why.iter()
                .any(|r| r.contains("disk image attached from a file")),
            "{why:?}"
        );
        // A partition of a card.
        let e = find("/dev/disk4s1").unwrap_err().to_string();
        assert!(e.contains("partition of /dev/disk4"), "{e}");
        let e = find("/dev/disk9").unwrap_err().to_string();
        assert!(e.contains("not a disk diskutil knows"), "{e}");
    }

    #[test]
    fn card_readers_are_removable_targets() {
        // The built-in SD slot and a USB card reader, each with a mounted volume.
        for (id, transport, mp) in [
            ("/dev/disk4", Transport::Mmc, "/Volumes/bootfs"),
            ("/dev/disk6", Transport::Usb, "/Volumes/NO NAME"),
        ] {
            let d = find(id).unwrap();
            assert_eq!((d.transport, d.removable), (transport, true), "{id}");
            assert!(d.unsuitable.is_empty(), "{id}: {:?}", d.unsuitable);
            assert_eq!(d.mounts[0].mountpoint, mp);
            assert!(
                refusals(&d, Some(1 << 30), Options::default()).is_empty(),
                "{id}"
            );
        }
    }

    #[test]
    fn apfs_container_volumes_count_for_the_physical_disk() {
        let listing = parse_list(LIST).unwrap();
        let ids: Vec<&str> = listing.disks.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["disk0", "disk4", "disk5", "disk6", "disk7"]);
        assert_eq!(
            listing.containers,
            [("disk3".to_string(), vec!["disk0s2".to_string()])]
        );
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
