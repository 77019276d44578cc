//! The parsers of untrusted bytes never panic: arbitrary disks through the
//! partition-table reader, arbitrary files through the delta parser (the
//! same properties as the `fuzz/` targets, run in the normal test suite).

use imagegen::block::{BlockDevice, MemDevice};
use imagegen::delta::DeltaInfo;
use imagegen::layout;
use proptest::prelude::*;

/// A disk that starts like an MBR or a GPT (so the interesting paths run)
/// and then has arbitrary bytes patched in.
fn disk() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(0u8), Just(0x83), Just(0x05), Just(0xee), any::<u8>()],
        proptest::collection::vec((0usize..40 * 512, any::<u8>()), 0..64),
        proptest::collection::vec(any::<u32>(), 8),
        1usize..80,
    )
        .prop_map(|(kind, patches, words, sectors)| {
            let mut d = vec![0u8; sectors * 512];
            d[510] = 0x55;
            d[511] = 0xaa;
            d[446 + 4] = kind;
            d[446 + 8..446 + 12].copy_from_slice(&(words[0] % 100).to_le_bytes());
            d[446 + 12..446 + 16].copy_from_slice(&(words[1] % 200).to_le_bytes());
            if d.len() >= 1024 {
                d[512..520].copy_from_slice(b"EFI PART");
                d[512 + 72..512 + 76].copy_from_slice(&(words[2] % 8).to_le_bytes());
                d[512 + 80..512 + 84].copy_from_slice(&(words[3] % 300).to_le_bytes());
                d[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
            }
            for (at, b) in patches {
                if at < d.len() {
                    d[at] = b;
                }
            }
            d
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn partition_reader_never_panics(d in disk()) {
        let dev = MemDevice::from_vec(d);
        if let Ok(table) = layout::read_table(&dev) {
            prop_assert!(layout::validate(&table, dev.size(), "p").is_ok());
        }
    }

    #[test]
    fn partition_reader_survives_plain_noise(d in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = layout::read_table(&MemDevice::from_vec(d));
    }

    #[test]
    fn delta_parser_never_panics(
        head in proptest::collection::vec(any::<u8>(), 0..200),
        count in 0u64..5,
        size in 0u64..100_000,
        noise in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // Besides raw noise, a plausible header, so the range checks run too.
        let mut d = b"NIMGDLT\0".to_vec();
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&4096u32.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&[0u8; 32]);
        d.extend_from_slice(&count.to_le_bytes());
        d.extend_from_slice(&noise);
        for input in [&head[..], &d[..]] {
            if let Ok(info) = DeltaInfo::parse(input, "p") {
                let mut end = 0;
                for r in &info.ranges {
                    prop_assert!(r.offset >= end && r.len > 0 && r.end() <= info.base.size);
                    end = r.end();
                }
            }
        }
    }
}
