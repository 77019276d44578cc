//! Customisation operations: what `base` and `stamp` change in an OS image,
//! as data. Producing them (from `[base]`, from a node's file list) is
//! separate from executing them, so "where is the hostname written" has one
//! answer and every change is listed in the manifests.
//!
//! Paths are absolute paths as the booted OS sees them (`/etc/hostname`,
//! `/boot/firmware/cmdline.txt`); the executor routes each to the partition
//! mounted there.

use serde::Serialize;

pub mod base;
mod exec;
pub(crate) mod staged;
pub mod text;

pub use base::base_ops;

/// One change to an OS image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace a regular file; missing parent directories are
    /// created root-owned 0755.
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
        /// Private key, token, password hash: never printed, 0600, and left
        /// out of artefacts built with `--secrets defer`.
        secret: bool,
    },
    /// Create a directory (and missing parents); an existing one gets this
    /// mode and owner.
    Dir {
        path: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Create or replace a symlink.
    Symlink { path: String, target: String },
    /// Remove a file, link or directory tree; absent is not an error.
    Remove { path: String },
    /// Remove every entry of a directory whose name matches a glob
    /// (`ssh_host_*`); an absent directory is not an error.
    RemoveGlob { dir: String, pattern: String },
    /// Enable a systemd unit the way `systemctl --root enable` does.
    Enable { unit: String },
    /// Disable a systemd unit the way `systemctl --root disable` does.
    Disable { unit: String },
    /// Mask a systemd unit (`/etc/systemd/system/UNIT` → `/dev/null`).
    Mask { unit: String },
    /// Change the kernel command line where the board keeps it.
    Cmdline {
        append: Vec<String>,
        remove: Vec<String>,
    },
    /// Edit a text file line by line; the file keeps its mode and owner.
    Edit { path: String, edit: LineEdit },
}

/// A line edit of a text file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEdit {
    /// Replace every line starting with `prefix` by `line`, or append `line`
    /// when none does (`127.0.1.1` in `/etc/hosts`, `user:` in `/etc/shadow`).
    Set { prefix: String, line: String },
    /// Append `line` unless the file already has it.
    Ensure { line: String },
    /// Remove the lines for which the regular expression matches.
    RemoveMatching { regex: String },
}

/// What one executed operation wrote, for manifests and `--json`: never a
/// file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// `file`, `dir`, `symlink`, `remove`, `enable`, `disable`, `mask`,
    /// `cmdline`, `edit`.
    pub action: &'static str,
    /// The path or unit.
    pub path: String,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub secret: bool,
}
