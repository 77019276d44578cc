//! Sequences of ext4 operations from structured input (see `ops_driver.rs`):
//! after each, either the engine's map scan finds the filesystem consistent
//! or the operation failed and the image is byte-identical. The base image
//! is a 16 MiB filesystem made once by `imagegen::mkfs::ext4`.
#![no_main]

#[path = "../ops_driver.rs"]
mod ops_driver;

use imagegen::block::MemDevice;
use imagegen::mkfs::ext4::{build, Ext4Options, MIN_SIZE};
use imagegen::tree::EmptyTree;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

fn base() -> &'static Arc<MemDevice> {
    static BASE: OnceLock<Arc<MemDevice>> = OnceLock::new();
    BASE.get_or_init(|| {
        let dev = MemDevice::zeroed(MIN_SIZE as usize);
        let mut opts = Ext4Options::new(MIN_SIZE, [7; 16], 1_700_000_000, Some(1_700_000_000));
        opts.epoch = 1_700_000_000;
        build(&mut EmptyTree, &opts, &dev, true).expect("mkfs");
        Arc::new(dev)
    })
}

fuzz_target!(|data: &[u8]| {
    ops_driver::run(base(), data);
});
