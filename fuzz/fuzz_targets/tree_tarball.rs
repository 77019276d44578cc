//! Arbitrary bytes as a tarball: the tree source must yield entries or an
//! error, never panic; whatever it yields, ext4 creation must accept or
//! refuse with an error.
#![no_main]

use imagegen::block::MemDevice;
use imagegen::mkfs::ext4::{build, Ext4Options, InodePolicy};
use imagegen::tree::TarSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = data.to_vec();
    let mut source = TarSource::from_opener(
        "fuzz",
        Box::new(move || Ok(Box::new(std::io::Cursor::new(bytes.clone())) as Box<dyn std::io::Read>)),
    );
    let opts = Ext4Options {
        size: 16 << 20,
        label: None,
        uuid: [1; 16],
        hash_seed: None,
        inodes: InodePolicy::Auto,
        epoch: 0,
        clamp: Some(0),
        owner_map: None,
    };
    let _ = build(&mut source, &opts, &MemDevice::zeroed(16 << 20), true);
});
