//! Stage 1: `nodeimg base`.

pub mod spec;
