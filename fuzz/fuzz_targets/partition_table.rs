//! Arbitrary bytes as a disk: the MBR/GPT reader must return a table or an
//! error, never panic or loop, and whatever it accepts must validate.
#![no_main]

use imagegen::block::{BlockDevice, MemDevice};
use imagegen::layout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dev = MemDevice::from_vec(data.to_vec());
    if let Ok(table) = layout::read_table(&dev) {
        layout::validate(&table, dev.size(), "fuzz").expect("read_table returned an invalid table");
        let _ = layout::write_table(&MemDevice::zeroed(data.len()), &table);
    }
});
