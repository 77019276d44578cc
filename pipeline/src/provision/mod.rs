//! The one root-only step of stage 1: `[base] provision` scripts run as root
//! inside the image's root filesystem (an aarch64 chroot through the
//! kernel's binfmt_misc handler, or natively on an aarch64 host).
//!
//! [`preflight`] refuses what cannot work before anything is fetched or
//! written (not Linux, not root, no aarch64 handler, a missing script);
//! [`run`] is the hook `nodeimg base` calls on the not-yet-renamed output
//! after every rootless change and before the manifest and bmap. The
//! mechanism (loop devices, a private mount namespace, binds, the chroot)
//! lives in the Linux-only `linux` module.

use crate::board::Board;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

#[cfg(target_os = "linux")]
mod linux;

/// What to run and where its log goes.
#[derive(Debug, Clone)]
pub struct Provision {
    /// Scripts, run in order; each must exit 0.
    pub scripts: Vec<PathBuf>,
    /// Copied to [`SCRATCH`] inside the root for the scripts.
    pub files: Option<PathBuf>,
    /// Everything the scripts print (`OUT.provision.log`).
    pub log: PathBuf,
}

/// Where `provision_files` (and the scripts) appear inside the root, on a
/// tmpfs that never reaches the image.
pub const SCRATCH: &str = "/run/nodeimg-provision";

/// `base.img` → `base.img.provision.log`.
pub fn log_path(out: &Path) -> PathBuf {
    crate::base::with_suffix(out, ".provision.log")
}

/// What to do instead when this machine cannot provision.
const INSTEAD: &str = "run `nodeimg base` with provisioning on Linux as root, or build the root tree with a rootless tool (e.g. `mmdebstrap --mode=unshare`) and give it to `nodeimg base --from TREE`";

/// Refuses, before any work, what cannot run here: another OS, a user other
/// than root, no aarch64 binfmt handler (with the commands that register
/// one), a script or `provision_files` that is not there.
pub fn preflight(p: &Provision) -> Result<()> {
    for s in &p.scripts {
        if !s.is_file() {
            return Err(Error::refused(
                s.display().to_string(),
                "provisioning script not found (or not a file)",
            ));
        }
    }
    if let Some(f) = &p.files {
        if !f.is_dir() {
            return Err(Error::refused(
                f.display().to_string(),
                "provision_files must be a directory",
            ));
        }
    }
    platform_check()
}

#[cfg(not(target_os = "linux"))]
fn platform_check() -> Result<()> {
    Err(Error::refused(
        "provision",
        format!(
            "running scripts inside the image needs Linux (mounts, a chroot, binfmt_misc); {INSTEAD}"
        ),
    ))
}

#[cfg(target_os = "linux")]
fn platform_check() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::refused(
            "provision",
            format!("running scripts inside the image needs root (loop devices, mounts, chroot); {INSTEAD}"),
        ));
    }
    linux::check_aarch64_exec()
}

/// Runs the scripts inside `image` (the pending output file); see the
/// module documentation. Output is streamed to stderr prefixed with
/// `provision: ` and kept in `p.log`.
pub fn run(image: &Path, board: &Board, p: &Provision) -> Result<()> {
    preflight(p)?;
    run_checked(image, board, p)
}

#[cfg(not(target_os = "linux"))]
fn run_checked(_: &Path, _: &Board, _: &Provision) -> Result<()> {
    platform_check()
}

#[cfg(target_os = "linux")]
fn run_checked(image: &Path, _board: &Board, p: &Provision) -> Result<()> {
    linux::provision(image, p)
}
