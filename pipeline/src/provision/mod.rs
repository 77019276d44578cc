//! The one root-only step of stage 1: `[base] provision` scripts run as root
//! inside the image's root filesystem (an aarch64 chroot through the
//! kernel's binfmt_misc handler, or natively on an aarch64 host).
//!
//! [`preflight`] refuses what cannot work before anything is fetched or
//! written (not Linux, not root, no aarch64 handler, a missing script);
//! [`run`] is the hook `nodeimg base` calls on the not-yet-renamed output
//! after every rootless change and before the manifest and bmap. The
//! mechanism (loop devices, a private mount namespace, binds, the chroot)
//! lives in the Linux-only `linux` module. [`Provision::new`] turns the
//! `provision` entries into scripts: a shipped recipe's name ([`recipes`])
//! is rendered with the cluster's versions, anything else is a script file.

use crate::board::Board;
use crate::cluster::Versions;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(target_os = "linux")]
mod linux;
pub mod recipes;

/// What to run and where its log goes.
#[derive(Debug, Clone)]
pub struct Provision {
    /// Scripts, run in order; each must exit 0.
    pub scripts: Vec<PathBuf>,
    /// Copied to [`SCRATCH`] inside the root for the scripts.
    pub files: Option<PathBuf>,
    /// Everything the scripts print (`OUT.provision.log`).
    pub log: PathBuf,
    /// Where rendered recipes live until the run is over.
    _rendered: Option<Arc<tempfile::TempDir>>,
}

impl Provision {
    /// The scripts for `entries` (`[base] provision` then `--provision`):
    /// a shipped recipe's name becomes the recipe rendered with `versions`
    /// (kept in a temporary directory as long as this value), anything else
    /// must be a script file.
    pub fn new(
        entries: &[PathBuf],
        versions: &Versions,
        files: Option<PathBuf>,
        log: PathBuf,
    ) -> Result<Provision> {
        let mut scripts = Vec::new();
        let mut rendered: Option<Arc<tempfile::TempDir>> = None;
        for e in entries {
            let Some(r) = recipes::find(e) else {
                if !e.is_file() {
                    let why = if e.components().count() == 1 && e.extension().is_none() {
                        format!(
                            "neither a shipped recipe ({}) nor a script file",
                            recipes::names()
                        )
                    } else {
                        "provisioning script not found (or not a file)".to_string()
                    };
                    return Err(Error::refused(e.display().to_string(), why));
                }
                scripts.push(e.clone());
                continue;
            };
            let dir = match &rendered {
                Some(d) => d.clone(),
                None => {
                    let d = Arc::new(
                        tempfile::Builder::new()
                            .prefix("nodeimg-recipes.")
                            .tempdir()
                            .map_err(|e| Error::io(std::env::temp_dir(), e))?,
                    );
                    rendered = Some(d.clone());
                    d
                }
            };
            let path = dir.path().join(format!("{}.sh", r.name));
            std::fs::write(&path, r.render(versions)?).map_err(|e| Error::io(&path, e))?;
            scripts.push(path);
        }
        Ok(Provision {
            scripts,
            files,
            log,
            _rendered: rendered,
        })
    }
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
