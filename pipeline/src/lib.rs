//! `pipeline`: the policy of nodeimg's stages, over `imagegen`'s mechanism.
//!
//! - [`osimage`]: an OS on a disk image, its partitions mounted (in our own
//!   code, without root) where the OS's fstab mounts them; [`os`]: which OS
//!   it is ([`os::OsProfile`]).
//! - [`customise`]: the one executor of customisation operations (files,
//!   directories, links, systemd units, line edits) that `base` and `stamp`
//!   share, over an [`osimage::OsImage`]; [`systemd`]: unit enable/disable/
//!   mask with `systemctl --root`'s results.
//! - [`base`]: stage 1, a board image from an upstream image or a root tree.
//! - [`templates`]: the role bootstraps, units and cluster files a node gets,
//!   rendered from embedded (or user-overridden) templates.
//! - [`board`]: boards as data (`boards/*.toml`).
//! - [`cluster`], [`secrets`], [`stamp`]: the cluster file, its generated
//!   secrets, and stage 2, each node as a delta over the base.
//! - [`json_file`]: reading the versioned JSON files (manifests) we write;
//!   [`file_hashes`]: SHA-256 of local inputs, remembered between runs.
//! - [`provision`]: the optional root-only step of stage 1, scripts run in an
//!   aarch64 chroot of the image, in a private mount namespace.
//!
//! This crate depends on `imagegen` only, never on `flasher`.

pub mod base;
pub mod board;
pub mod build;
pub mod cluster;
pub mod customise;
pub mod error;
pub mod file_hashes;
pub mod flavour;
pub mod json_file;
pub mod os;
pub mod osimage;
pub mod provision;
pub mod secrets;
pub mod size;
pub mod stamp;
pub mod systemd;
pub mod templates;

pub use error::{Error, Result};
