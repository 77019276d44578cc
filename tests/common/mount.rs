//! A read-only kernel loop mount of an image: the kernel's ext4 driver as an
//! oracle. The loop device and the mount are torn down in `Drop`, also when
//! the test fails halfway.

use super::oracle::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An image attached read-only to a loop device and mounted `ro`.
pub struct RoMount {
    dir: tempfile::TempDir,
    loopdev: String,
    mounted: bool,
}

impl RoMount {
    /// Attaches `image` with `losetup -r` and mounts it read-only. A journal
    /// that needs recovery makes the kernel refuse: that is an error too.
    pub fn new(image: &Path) -> Result<RoMount, String> {
        let out = run(Command::new("losetup")
            .args(["-r", "-f", "--show"])
            .arg(image));
        if !out.status.success() {
            return Err(format!(
                "losetup -r {}: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let loopdev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut guard = RoMount {
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            loopdev,
            mounted: false,
        };
        let out = run(Command::new("mount")
            .args(["-t", "ext4", "-o", "ro"])
            .arg(&guard.loopdev)
            .arg(guard.dir.path()));
        if !out.status.success() {
            return Err(format!(
                "mount -o ro {} ({}): {}",
                guard.loopdev,
                image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        guard.mounted = true;
        Ok(guard)
    }

    /// Where the filesystem is mounted.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Host path of a path inside the image.
    pub fn host(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }
}

impl Drop for RoMount {
    fn drop(&mut self) {
        if self.mounted {
            let out = run(Command::new("umount").arg(self.dir.path()));
            if !out.status.success() {
                // A busy mount: detach lazily so the loop device still goes away.
                run(Command::new("umount").arg("-l").arg(self.dir.path()));
            }
        }
        run(Command::new("losetup").arg("-d").arg(&self.loopdev));
    }
}
