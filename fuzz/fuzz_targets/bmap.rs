//! Arbitrary text as a bmap (plain or clearsigned): the parser returns a map
//! or an error, never panics; an accepted map's range verifier takes any
//! bytes without panicking.
#![no_main]

use imagegen::bmap::{Bmap, RangeVerifier};
use imagegen::ranges::RangeSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(b) = Bmap::parse(text) {
        assert!(b.mapped.extents().last().is_none_or(|e| e.end <= b.image_size));
        if let Some(mut v) = RangeVerifier::new(&b, &RangeSet::new()) {
            let _ = v.feed(0, &data[..data.len().min(1 << 16)]);
            let _ = v.finish();
        }
    }
});
