//! Byte sizes on the command line: the one parser lives in `pipeline::size`
//! (the cluster file's `size = "8GiB"` uses it too).

pub use pipeline::size::parse_size;
