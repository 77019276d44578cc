//! Customisation operations: what `base` and `stamp` change in an OS image,
//! as data, and their one executor, [`OsImage::apply`](crate::osimage::OsImage::apply).
//! Producing ops (from `[base]`: [`base_ops`]; from a node's file list:
//! stamp; from templates) is separate from executing them, so "where is the
//! hostname written" has one answer and every change is listed in the
//! manifests ([`Applied`]).
//!
//! Paths are absolute paths as the booted OS sees them (`/etc/hostname`,
//! `/boot/firmware/cmdline.txt`); the executor routes each to the partition
//! the OS mounts there (see [`crate::osimage`]) and follows symlinks inside
//! the image (`/lib/…` on a root where `/lib` → `usr/lib`).
//!
//! # How a list is executed
//! 1. **Plan.** Every op is checked and turned into primitive writes against
//!    a staged view of the image as the earlier ops leave it: a unit file
//!    written by one op can be enabled by the next, a directory removed by
//!    one is gone for the next. Every refusal happens here.
//! 2. **Write.** The primitives run in order. A refused list therefore
//!    changes no byte (the tests prove it with `cmp`); only the device or
//!    filesystem failing underneath (no space, I/O) can stop a list halfway,
//!    and stamping writes into an overlay where that leaves the base as it
//!    was.
//!
//! # The operations
//! | op | effect | refused when |
//! |---|---|---|
//! | [`Op::File`] | creates or replaces the file (a symlink at the path is replaced, not followed); missing parents are made root:root 0755; mode/owner ignored on FAT | the path or a parent is not a directory where one is needed; it is a directory; `secret` with any group/other bit; a name FAT cannot hold |
//! | [`Op::Dir`] | creates the directory (and parents root 0755); an existing one gets the mode and owner (not on FAT) | something else is there |
//! | [`Op::Symlink`] | creates or replaces the link; the target is stored as given | on FAT; a directory is there |
//! | [`Op::Remove`] | removes a file, link or whole directory; absent is fine | the path is `/` or a mount point |
//! | [`Op::RemoveGlob`] | removes each entry of `dir` matching `*`, `?`, `[…]`; an absent directory is fine | the pattern has a `/` |
//! | [`Op::Enable`] | `systemctl --root enable` (see [`crate::systemd`]) | the unit or an `Also=` unit does not exist; masked; template without instance; a link in the way |
//! | [`Op::Disable`] | `systemctl --root disable`; on a first-boot image (machine-id `uninitialized`) followed by a mask of the unit, since first-boot presets could re-enable it | the unit does not exist; on first boot, its unit file is in `/etc/systemd/system` (nothing can mask it there) |
//! | [`Op::Mask`] | `/etc/systemd/system/UNIT` → `/dev/null` | a unit file or another link is there |
//! | [`Op::Cmdline`] | edits the kernel command line: `cmdline.txt` in `/boot/firmware` (or `/boot`), its first line, kept one line; or, on NixOS and where there is no `cmdline.txt`, every `APPEND` line of `/boot/extlinux/extlinux.conf`. `remove` words go first (a word without `=` also removes `word=…`), then `append` words not yet present | neither file exists; a word is empty or has spaces |
//! | [`Op::Edit`] | a [`LineEdit`] on the file the path leads to (symlinks followed); mode and owner kept; untouched lines kept byte for byte; the result ends with a newline | the file is absent (except `RemoveMatching`, which then does nothing); not UTF-8; a bad regex; a line with a line break |
//!
//! [`Applied`] records say what was done, never contents: one per op, and
//! for removals one per path actually removed (none when nothing was
//! there); a disable that masks adds `mask` records.

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
