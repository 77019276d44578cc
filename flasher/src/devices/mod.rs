//! Candidate target disks and what is mounted from them.
//!
//! [`linux`] reads `/sys/block`, `/proc/self/mountinfo` and `/proc/swaps`
//! (from roots that tests replace with their own); [`macos`] parses
//! `diskutil list -plist` and `diskutil info -plist`. Both produce [`Disk`]s,
//! which [`crate::policy`] judges without knowing the platform.

pub mod linux;
pub mod macos;

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
    if ["/media", "/run/media", "/mnt", "/Volumes"]
        .iter()
        .any(|p| mp.starts_with(&format!("{p}/")))
    {
        return true;
    }
    !(SYSTEM_DIRS.contains(&mp) || SYSTEM_TREES.iter().any(|t| mp.starts_with(t)))
}

/// Linux roots, with the mount tables replaceable through `NODEIMG_MOUNTINFO`
/// and `NODEIMG_SWAPS` (used by the integration tests to inject a system disk).
#[cfg(target_os = "linux")]
fn roots() -> linux::Roots {
    let mut r = linux::Roots::default();
    if let Some(p) = std::env::var_os("NODEIMG_MOUNTINFO") {
        r.mountinfo = p.into();
    }
    if let Some(p) = std::env::var_os("NODEIMG_SWAPS") {
        r.swaps = p.into();
    }
    r
}

/// Every whole disk of this machine.
pub fn list() -> crate::Result<Vec<Disk>> {
    #[cfg(target_os = "linux")]
    return linux::list(&roots());
    #[cfg(target_os = "macos")]
    return macos::list();
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    return Err(crate::Error::system(
        "listing disks",
        std::io::Error::from(std::io::ErrorKind::Unsupported),
    ));
}

/// The whole disk at `path` (`/dev/sdb`; on macOS `/dev/disk4` or `/dev/rdisk4`).
pub fn find(path: &std::path::Path) -> crate::Result<Disk> {
    #[cfg(target_os = "linux")]
    return linux::find(&roots(), path);
    #[cfg(not(target_os = "linux"))]
    {
        let want = path.to_string_lossy().replace("/dev/rdisk", "/dev/disk");
        list()?
            .into_iter()
            .find(|d| d.path == want)
            .ok_or_else(|| crate::Error::Refused {
                device: path.display().to_string(),
                reason: "it is not a whole disk diskutil knows".into(),
            })
    }
}

/// Unmounts every removable-media mount on `disk` (never a system mount:
/// the policy has refused such a disk before this is called).
pub fn unmount(disk: &Disk) -> crate::Result<()> {
    #[cfg(target_os = "macos")]
    return macos::unmount_disk(&disk.path);
    #[cfg(not(target_os = "macos"))]
    {
        for m in disk.mounts.iter().filter(|m| !m.system) {
            if m.mountpoint == "[swap]" {
                continue;
            }
            let c = std::ffi::CString::new(m.mountpoint.as_str()).map_err(|_| {
                crate::Error::system(
                    format!("unmounting {}", m.mountpoint),
                    std::io::Error::from(std::io::ErrorKind::InvalidInput),
                )
            })?;
            // SAFETY: c is a valid NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                return Err(crate::Error::system(
                    format!("unmounting {} from {}", m.mountpoint, m.device),
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok(())
    }
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
