//! The base manifest, `<image>.json` beside the base (`base.img` →
//! `base.img.json`): what stage 2 and the flasher need to know about a base
//! without reading or hashing it again.
//!
//! Format (JSON, one object; `format` is 1; unknown keys are refused so a
//! newer manifest is not half-understood):
//!
//! ```json
//! {
//!   "format": 1,
//!   "tool_version": "0.1.0",
//!   "board": "rpi5",
//!   "source": { "kind": "image", "what": "raspios.img.xz",
//!               "sha256": "<hex of the source file as given>" },
//!   "firmware": { "what": "odroid-C4.tar.xz", "sha256": "<hex>" },   // or null
//!   "layout": {
//!     "scheme": "mbr", "disk_id": "2178694e", "size": 8589934592,
//!     "partitions": [
//!       { "number": 1, "start": 8388608, "size": 536870912, "type": "0x0c",
//!         "bootable": false, "partuuid": "2178694e-01", "fs": "fat",
//!         "uuid": "4a1b-2c3d", "label": "bootfs", "mount": "/boot/firmware" },
//!       …
//!     ]
//!   },
//!   "os": { "name": "debian", "id": "raspbian", "codename": "trixie", … },  // pipeline::os::OsProfile
//!   "customisations": [ { "action": "enable", "path": "ssh.service",
//!                         "mode": null, "uid": null, "gid": null, "secret": false }, … ],
//!   "image": { "sha256": "<hex>", "size": 8589934592, "mtime_ns": 1733100000000000000 }
//! }
//! ```
//!
//! Partition `start`/`size` are bytes; `type` is the MBR type byte; `fs` is
//! `ext4`, `fat` or null (firmware, unknown); `uuid` is the filesystem UUID
//! (ext4) or volume id (FAT, `XXXX-XXXX`); `mount` is where the OS mounts it
//! (null when it does not). `image.mtime_ns` is the base's modification time
//! when the manifest was written: [`BaseManifest::trusted_sha256`] trusts
//! `image.sha256` only while the file keeps that size and mtime.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The manifest format this code writes and reads.
pub const FORMAT: u32 = 1;

/// `base.img` → `base.img.json`.
pub fn manifest_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// Everything known about a base image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseManifest {
    pub format: u32,
    pub tool_version: String,
    /// Board name (`rpi5`, `odroid-c4`, or a user's board's name).
    pub board: String,
    pub source: SourceRecord,
    pub firmware: Option<FirmwareRecord>,
    pub layout: LayoutRecord,
    /// The OS profile detected on the image.
    pub os: crate::os::OsProfile,
    pub customisations: Vec<AppliedRecord>,
    pub image: ImageRecord,
}

/// What the base was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRecord {
    /// `image` (a disk image) or `tree` (a directory or tarball).
    pub kind: String,
    /// The path or URL as the user gave it.
    pub what: String,
    /// SHA-256 of the source file (hex); null for a directory.
    pub sha256: Option<String>,
}

/// Firmware laid onto the base (Tow-Boot, RPi boot files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareRecord {
    pub what: String,
    pub sha256: Option<String>,
}

/// The partition table of the base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutRecord {
    /// `mbr`.
    pub scheme: String,
    /// MBR disk id, 8 lower-case hex digits.
    pub disk_id: Option<String>,
    /// Size of the whole image in bytes.
    pub size: u64,
    pub partitions: Vec<PartitionRecord>,
}

/// One partition of the base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionRecord {
    pub number: u32,
    pub start: u64,
    pub size: u64,
    /// `0x0c`, `0x83`, `0xf8` …
    #[serde(rename = "type")]
    pub kind: String,
    pub bootable: bool,
    /// `<disk id>-<NN>` as in `root=PARTUUID=`.
    pub partuuid: Option<String>,
    /// `ext4`, `fat` or null.
    pub fs: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// Where the OS mounts it.
    pub mount: Option<String>,
}

/// One applied customisation (`customise::Applied` in owned form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedRecord {
    pub action: String,
    pub path: String,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub secret: bool,
}

impl From<&crate::customise::Applied> for AppliedRecord {
    fn from(a: &crate::customise::Applied) -> Self {
        AppliedRecord {
            action: a.action.to_string(),
            path: a.path.clone(),
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            secret: a.secret,
        }
    }
}

/// The base image file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    /// SHA-256 of the whole raw image (hex).
    pub sha256: String,
    pub size: u64,
    /// Modification time when the manifest was written, ns since the epoch.
    pub mtime_ns: i128,
}

impl ImageRecord {
    /// Size and mtime of `path` now, with a known hash.
    pub fn of(path: &Path, sha256: &[u8; 32]) -> Result<ImageRecord> {
        let (size, mtime_ns) = size_mtime(path)?;
        Ok(ImageRecord {
            sha256: imagegen::source::to_hex(sha256),
            size,
            mtime_ns,
        })
    }
}

fn size_mtime(path: &Path) -> Result<(u64, i128)> {
    let md = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = md.modified().map_err(|e| Error::io(path, e))?;
    let ns = match mtime.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    Ok((md.len(), ns))
}

impl BaseManifest {
    /// Reads and checks a manifest.
    pub fn load(path: &Path) -> Result<BaseManifest> {
        crate::json_file::load(path, "base manifest", |m: &BaseManifest| m.format, FORMAT)
    }

    /// Writes the manifest (pretty JSON, trailing newline) atomically
    /// (`imagegen::sink::write_atomic`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::internal("encoding the manifest", e.to_string()))?;
        text.push('\n');
        Ok(imagegen::sink::write_atomic(path, text.as_bytes(), 0o644)?)
    }

    /// The base's SHA-256 when `image` still matches the recorded size and
    /// mtime (so stage 2 never hashes the base again); `None` otherwise.
    pub fn trusted_sha256(&self, image: &Path) -> Option<[u8; 32]> {
        let (size, mtime) = size_mtime(image).ok()?;
        if size != self.image.size || mtime != self.image.mtime_ns {
            return None;
        }
        from_hex32(&self.image.sha256)
    }

    /// The partition mounted at `mount` (e.g. `/`, `/boot/firmware`).
    pub fn partition_at(&self, mount: &str) -> Option<&PartitionRecord> {
        self.layout
            .partitions
            .iter()
            .find(|p| p.mount.as_deref() == Some(mount))
    }
}

/// 64 hex digits → 32 bytes.
pub fn from_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(image: &Path) -> BaseManifest {
        let sha = [7u8; 32];
        BaseManifest {
            format: FORMAT,
            tool_version: "0.1.0".into(),
            board: "rpi5".into(),
            source: SourceRecord {
                kind: "image".into(),
                what: "x.img.xz".into(),
                sha256: Some("ab".repeat(32)),
            },
            firmware: None,
            layout: LayoutRecord {
                scheme: "mbr".into(),
                disk_id: Some("2178694e".into()),
                size: 4096,
                partitions: vec![PartitionRecord {
                    number: 2,
                    start: 1 << 20,
                    size: 1 << 20,
                    kind: "0x83".into(),
                    bootable: true,
                    partuuid: Some("2178694e-02".into()),
                    fs: Some("ext4".into()),
                    uuid: Some("0b7e…".into()),
                    label: Some("rootfs".into()),
                    mount: Some("/".into()),
                }],
            },
            os: crate::os::OsProfile::NixOs {
                version: Some("25.05".into()),
            },
            customisations: vec![AppliedRecord {
                action: "enable".into(),
                path: "ssh.service".into(),
                mode: None,
                uid: None,
                gid: None,
                secret: false,
            }],
            image: ImageRecord::of(image, &sha).unwrap(),
        }
    }

    #[test]
    fn round_trip_and_trust() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("base.img");
        std::fs::write(&img, vec![0u8; 4096]).unwrap();
        let m = sample(&img);
        let mp = manifest_path(&img);
        assert!(mp.ends_with("base.img.json"));
        m.save(&mp).unwrap();
        let back = BaseManifest::load(&mp).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.trusted_sha256(&img), Some([7u8; 32]));
        assert_eq!(back.partition_at("/").unwrap().number, 2);
        // A changed image is not trusted.
        std::fs::write(&img, vec![1u8; 4097]).unwrap();
        assert_eq!(back.trusted_sha256(&img), None);
    }

    #[test]
    fn bad_manifests_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        std::fs::write(&p, "{\n \"format\": 1,\n \"colour\": 2 }").unwrap();
        let e = BaseManifest::load(&p).unwrap_err().to_string();
        assert!(e.contains("m.json:"), "{e}");
        let img = dir.path().join("i");
        std::fs::write(&img, b"x").unwrap();
        let mut m = sample(&img);
        m.format = 9;
        m.save(&p).unwrap();
        let e = BaseManifest::load(&p).unwrap_err().to_string();
        assert!(e.contains("format 9"), "{e}");
    }
}
