//! `imagegen`: everything that produces image bytes for nodeimg.
//!
//! The layers, bottom-up: [`block`] (positioned I/O on image files, partition
//! windows, the copy-on-write overlay), then sources, partition tables and
//! filesystems built on top of it.

pub mod block;
pub mod bmap;
pub mod delta;
pub mod error;
pub mod fs;
pub mod inspect;
pub mod layout;
pub mod mkfs;
pub mod ranges;
pub mod sink;
pub mod source;
pub mod tree;

pub use error::{Error, Result};
