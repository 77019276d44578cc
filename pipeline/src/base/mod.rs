//! Stage 1: `nodeimg base`.

pub mod manifest;
pub mod spec;
