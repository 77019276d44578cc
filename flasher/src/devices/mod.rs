//! Candidate target disks and what is mounted from them.
//!
//! The platform layer ([`crate::platform`]) finds them: on Linux from
//! `/sys/block`, `/proc/self/mountinfo` and `/proc/swaps`; on macOS from
//! `diskutil`, whose output [`diskutil`] parses on any host. Both produce
//! [`Disk`]s, which [`crate::policy`] judges without knowing the platform.

pub mod diskutil;

use serde::Serialize;

/// How a disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Usb,
    /// SD card or eMMC.
    Mmc,
    Nvme,
    Sata,
    Scsi,
    Virtio,
    /// Loop, device-mapper, RAM disks, disk images.
    Virtual,
    Unknown,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("unknown"))
    }
}

#[cfg(test)]
mod eject_tests {
    use super::should_eject;

    #[test]
    fn eject_follows_success_platform_and_flag() {
        assert!(should_eject(true, true, false), "macOS, verified: ejected");
        assert!(!should_eject(true, true, true), "--no-eject keeps it");
        assert!(!should_eject(true, false, false), "a failed card stays");
        assert!(!should_eject(false, true, false), "Linux has no eject step");
    }
}

/// A mounted filesystem (or active swap) living on a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// The device it is mounted from (a partition or the disk itself).
    pub device: String,
    /// Where it is mounted, or `[swap]`.
    pub mountpoint: String,
    /// Whether it belongs to the running system rather than being removable
    /// media mounted for a look (under `/media`, `/run/media`, `/mnt`, `/Volumes`).
    pub system: bool,
}

/// A whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// Device node, e.g. `/dev/sdb` or `/dev/disk4`.
    pub path: String,
    /// Node to write through (`/dev/rdisk4` on macOS; the same as `path` on Linux).
    pub write_path: String,
    /// Size in bytes.
    pub size: u64,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub transport: Transport,
    /// Removable media or an external bus (USB, SD).
    pub removable: bool,
    pub read_only: bool,
    /// Filesystems and swap on the disk, its partitions, or devices stacked on them.
    pub mounts: Vec<Mount>,
    /// Device number (`st_rdev`) of `write_path` when it was found, so the
    /// device opened after confirmation can be checked to be this one, and
    /// two paths to one disk are seen to be one.
    pub device_number: Option<u64>,
    /// Facts of the platform that rule the disk out whatever the flags: a
    /// disk synthesized by APFS, a disk image attached from a file.
    pub unsuitable: Vec<String>,
}

impl Disk {
    /// Why this disk is the system disk (empty when it is not).
    pub fn system_reasons(&self) -> Vec<String> {
        self.mounts
            .iter()
            .filter(|m| m.system)
            .map(|m| {
                if m.mountpoint == "[swap]" {
                    format!("it holds active swap ({})", m.device)
                } else {
                    format!("it holds {} (mounted from {})", m.mountpoint, m.device)
                }
            })
            .collect()
    }
}

/// Directories of the running system: a filesystem mounted on one of them
/// (or below the first group) makes its disk the system disk.
const SYSTEM_DIRS: [&str; 16] = [
    "/", "/boot", "/efi", "/usr", "/var", "/etc", "/opt", "/srv", "/nix", "/home", "/root", "/tmp",
    "/snap", "/System", "/private", "/Library",
];
const SYSTEM_TREES: [&str; 9] = [
    "/boot/",
    "/efi/",
    "/usr/",
    "/var/",
    "/nix/",
    "/opt/",
    "/srv/",
    "/System/",
    "/private/",
];

/// Whether a mountpoint is removable media mounted for a look rather than part
/// of the running system: anything but the system's own directories, so a
/// card mounted under `/media`, `/mnt`, `/Volumes` or a work directory in
/// `/home/USER` or `/tmp` is media, while `/`, `/boot/firmware` or `/var/lib`
/// are not.
pub fn is_media_mount(mountpoint: &str) -> bool {
    let mp = mountpoint.trim_end_matches('/');
    let mp = if mp.is_empty() { "/" } else { mp };
    if in_media_dir(mp) {
        return true;
    }
    !(SYSTEM_DIRS.contains(&mp) || SYSTEM_TREES.iter().any(|t| mp.starts_with(t)))
}

/// Where a removable card's filesystems are mounted by desktops and users
/// (docs/flash.md): the only mounts `flash` unmounts itself.
pub const MEDIA_DIRS: [&str; 4] = ["/media", "/run/media", "/mnt", "/Volumes"];

/// Whether `mountpoint` lies under one of [`MEDIA_DIRS`].
pub fn in_media_dir(mountpoint: &str) -> bool {
    MEDIA_DIRS
        .iter()
        .any(|p| mountpoint.starts_with(&format!("{p}/")))
}

/// Every whole disk of this machine.
pub fn list() -> crate::Result<Vec<Disk>> {
    crate::platform::list_disks()
}

/// The whole disk at `path` (`/dev/sdb`; on macOS `/dev/disk4` or `/dev/rdisk4`).
pub fn find(path: &std::path::Path) -> crate::Result<Disk> {
    crate::platform::find_disk(path)
}

/// Unmounts every removable-media mount on `disk` (never a system mount:
/// the policy has refused such a disk before this is called), and says
/// which: the mountpoints (or, on macOS, the disk) unmounted.
pub fn unmount(disk: &Disk) -> crate::Result<Vec<String>> {
    crate::platform::unmount(disk)
}

/// Whether a card is ejected once flashed: where the platform's readers
/// want it (macOS: `diskutil eject`, so the card can be pulled), when its
/// write — and its verification, if one ran — succeeded, unless the user
/// keeps it attached (`--no-eject`). A failed card stays for inspection.
pub fn should_eject(platform_ejects: bool, succeeded: bool, no_eject: bool) -> bool {
    platform_ejects && succeeded && !no_eject
}

/// Ejects `disk` after a verified write so the card can be pulled (macOS:
/// `diskutil eject`); `false` where the platform has no such step.
pub fn eject(disk: &Disk) -> crate::Result<bool> {
    crate::platform::eject(disk)
}

#[cfg(test)]
mod media_tests {
    use super::is_media_mount;

    #[test]
    fn work_directories_are_media_and_system_paths_are_not() {
        for media in [
            "/media/pi/bootfs",
            "/mnt",
            "/mnt/card",
            "/Volumes/bootfs",
            "/home/pi/work/card",
            "/tmp/tmp.x1/root",
            "/run/media/u/rootfs",
        ] {
            assert!(is_media_mount(media), "{media}");
        }
        for system in [
            "/",
            "/boot",
            "/boot/firmware",
            "/boot/efi",
            "/home",
            "/var/lib/docker",
            "/usr/local",
            "/nix/store",
            "/System/Volumes/Data",
        ] {
            assert!(!is_media_mount(system), "{system}");
        }
    }
}
