//! Arbitrary bytes as a delta file: the parser must return an error or a
//! table whose ranges obey the format's rules, never panic.
#![no_main]

use imagegen::delta::DeltaInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = DeltaInfo::parse(data, "fuzz") {
        let mut end = 0;
        for r in &info.ranges {
            assert!(r.offset >= end && r.len > 0 && r.end() <= info.base.size);
            end = r.end();
        }
    }
});
