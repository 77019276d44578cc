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

/// Whether a mountpoint is removable media mounted for a look rather than part
/// of the running system.
pub fn is_media_mount(mountpoint: &str) -> bool {
    ["/media/", "/run/media/", "/mnt/", "/Volumes/"]
        .iter()
        .any(|p| mountpoint.starts_with(p))
        || mountpoint == "/mnt"
}
