//! Test support for the ext4 suite: fixture images made by `mkfs.ext4`, the
//! independent oracles (`e2fsck`, `debugfs`, `dumpe2fs`, a read-only kernel
//! loop mount, the `ext4-view` crate), an in-memory model of the expected
//! tree, and the operations the tests apply through our engine.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod check;
pub mod engine;
pub mod fixture;
pub mod model;
pub mod mount;
pub mod ops;
pub mod oracle;
pub mod random;
pub mod rng;
pub mod tree;
