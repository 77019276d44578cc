use super::*;
use crate::block::{FileDevice, MemDevice, Overlay};
use crate::sink::OutputFormat;
use std::io::{Cursor, Read};

fn base_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i / 3 % 251) as u8).collect()
}

/// A base file, an overlay with some writes, the delta saved from it.
fn setup(dir: &Path) -> (PathBuf, Vec<u8>, PathBuf) {
    let base = dir.join("base.img");
    // Not a multiple of 4096: the last range may be short.
    std::fs::write(&base, base_bytes(40_000 + 123)).unwrap();
    let dev = FileDevice::open(&base).unwrap();
    let ov = Overlay::new(&dev).unwrap();
    ov.write_at(5000, b"hello").unwrap();
    ov.write_at(8192, &[9u8; 8192]).unwrap(); // adjacent to the block of 5000
    ov.write_at(40_100, b"tail").unwrap();
    let mut expect = vec![0u8; dev.size() as usize];
    ov.read_at(0, &mut expect).unwrap();
    let delta = dir.join("node.delta");
    let info = save_overlay(&ov, BaseId::of_device(&dev).unwrap(), &delta).unwrap();
    assert_eq!(
        info.ranges
            .iter()
            .map(|r| (r.offset, r.len))
            .collect::<Vec<_>>(),
        vec![(4096, 12288), (36864, 40_123 - 36864)]
    );
    (base, expect, delta)
}

#[test]
fn overlay_delta_applies_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (base, expect, delta_path) = setup(dir.path());
    let delta = Delta::open(&delta_path).unwrap();
    assert_eq!(delta.info().changed_bytes(), 12288 + 40_123 - 36864);
    let out = dir.path().join("node.img");
    apply_file(&base, &delta, &out, OutputFormat::Raw).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), expect);

    let patched = Patched::new(FileDevice::open(&base).unwrap(), &delta).unwrap();
    patched.verify_base().unwrap();
    let mut mid = vec![0u8; 9000];
    patched.read_at(4000, &mut mid).unwrap();
    assert_eq!(mid, expect[4000..13_000]);
    assert!(patched.write_at(0, &[1]).is_err());
    // Owned deltas make 'static devices (for threads).
    let shared = std::sync::Arc::new(Delta::open(&delta_path).unwrap());
    let dev: std::sync::Arc<dyn BlockDevice> = std::sync::Arc::new(
        Patched::new(FileDevice::open(&base).unwrap(), shared.clone()).unwrap(),
    );
    let back = std::thread::spawn(move || {
        let mut all = vec![0u8; dev.size() as usize];
        dev.read_at(0, &mut all).unwrap();
        all
    })
    .join()
    .unwrap();
    assert_eq!(back, expect);
    let mut streamed = Vec::new();
    PatchedReader::new(std::fs::File::open(&base).unwrap(), shared, "base")
        .read_to_end(&mut streamed)
        .unwrap();
    assert_eq!(streamed, expect);

    // A compressed base works the same.
    let zbase = dir.path().join("base.img.zst");
    std::fs::write(
        &zbase,
        zstd::encode_all(&std::fs::read(&base).unwrap()[..], 3).unwrap(),
    )
    .unwrap();
    let out2 = dir.path().join("node2.img.zst");
    apply_file(&zbase, &delta, &out2, OutputFormat::Zstd { level: 3 }).unwrap();
    let back = zstd::decode_all(std::fs::File::open(&out2).unwrap()).unwrap();
    assert_eq!(back, expect);
}

#[test]
fn create_from_images_matches_the_overlay_delta() {
    let dir = tempfile::tempdir().unwrap();
    let (base, expect, delta_path) = setup(dir.path());
    let modified = dir.path().join("mod.img");
    std::fs::write(&modified, &expect).unwrap();
    let again = dir.path().join("again.delta");
    let info = create_from_images(&base, &modified, &again, DEFAULT_BLOCK).unwrap();
    assert_eq!(info, *Delta::open(&delta_path).unwrap().info());
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&delta_path).unwrap()
    );
}

#[test]
fn wrong_base_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _, delta_path) = setup(dir.path());
    let delta = Delta::open(&delta_path).unwrap();
    let other = dir.path().join("other.img");
    let mut bytes = std::fs::read(&base).unwrap();
    bytes[30_000] ^= 1;
    std::fs::write(&other, &bytes).unwrap();
    let out = dir.path().join("out.img");
    let err = apply_file(&other, &delta, &out, OutputFormat::Raw)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("other.img") && err.contains("is not the base"),
        "{err}"
    );
    assert!(!out.exists());
    bytes.truncate(1000);
    std::fs::write(&other, &bytes).unwrap();
    let err = apply_file(&other, &delta, &out, OutputFormat::Raw)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1000 bytes"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial") || n.starts_with("out"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn damaged_deltas_are_corrupt_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, delta_path) = setup(dir.path());
    let good = std::fs::read(&delta_path).unwrap();
    DeltaInfo::parse(Cursor::new(&good), "good").unwrap();
    for (i, cut) in [0, 7, 63, 64, 100, good.len() - 1].into_iter().enumerate() {
        let err = DeltaInfo::parse(Cursor::new(&good[..cut]), "cut").unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{i}: {err}");
    }
    let mut flipped = good.clone();
    flipped[200] ^= 0x40;
    let err = DeltaInfo::parse(Cursor::new(&flipped), "flip")
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    let mut longer = good.clone();
    longer.push(0);
    assert!(DeltaInfo::parse(Cursor::new(&longer), "long").is_err());
    let mut v2 = good;
    v2[8] = 2;
    let err = DeltaInfo::parse(Cursor::new(&v2), "v2").unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

#[test]
fn writer_refuses_ranges_out_of_order_or_out_of_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d");
    let mut w = DeltaWriter::create(&p, 4096).unwrap();
    w.push(8192, &[1; 4096]).unwrap();
    assert!(w.push(4096, &[1; 4096]).is_err());
    let base = BaseId::of_device(&MemDevice::zeroed(10_000)).unwrap();
    assert!(
        w.finish(base).is_err(),
        "8192+4096 is past a 10000-byte base"
    );
    assert!(!p.exists());
}
