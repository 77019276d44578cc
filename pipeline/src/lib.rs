//! `pipeline`: the policy of nodeimg's stages, over `imagegen`'s mechanism.
//!
//! - [`customise`]: the one executor of customisation operations (files,
//!   directories, links, systemd units, line edits) that `base` and `stamp`
//!   share, over an OS image's filesystems.
//! - [`base`]: stage 1, a board image from an upstream image or a root tree.
//! - [`board`]: boards as data (`boards/*.toml`).
//!
//! This crate depends on `imagegen` only, never on `flasher`.

pub mod base;
pub mod board;
pub mod customise;
pub mod error;
pub mod flavour;
pub mod os;
pub mod osimage;
pub mod size;
pub mod systemd;

pub use error::{Error, Result};
