//! Library-level tests of `FatFs` on in-memory volumes; the CLI tests in
//! `tests/fs_fat.rs` check the same against fsck.vfat and mtools.

use super::*;
use crate::block::MemDevice;

fn fresh(bits: FatBits, size: usize) -> Arc<dyn BlockDevice> {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::zeroed(size));
    let opts = FormatOptions {
        bits,
        ..Default::default()
    };
    format(&*dev, &opts).unwrap();
    dev
}

fn read(fs: &FatFs, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    fs.read_file(path, &mut out).unwrap();
    out
}

#[test]
fn write_read_replace_remove() {
    for (bits, size) in [(FatBits::Fat16, 16 << 20), (FatBits::Fat32, 40 << 20)] {
        let dev = fresh(bits, size);
        let mut fs = FatFs::open(dev.clone(), true, crate::fs::Timestamp::system_now()).unwrap();
        let free0 = fs.free_clusters().unwrap();
        let attrs = NewAttrs::default();
        fs.mkdir("/a/b/Long Directory Name", true, &attrs).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = "/a/b/Long Directory Name/some file.bin";
        fs.write_file(path, &mut &data[..], data.len() as u64, &attrs)
            .unwrap();
        assert_eq!(read(&fs, path), data);
        fs.write_file(path, &mut &b"short"[..], 5, &attrs).unwrap();
        assert_eq!(read(&fs, path), b"short");
        let names: Vec<_> = fs.list("/a/b/long directory name").unwrap();
        assert_eq!(names.len(), 1, "replacing keeps one entry: {names:?}");
        assert_eq!(names[0].name, "some file.bin");
        let st = fs.stat(path).unwrap();
        assert_eq!((st.kind, st.size), (FileKind::File, 5));
        assert!(st.ino.is_some() && st.flags.is_empty());
        let t = Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        };
        fs.set_times(path, None, Some(t)).unwrap();
        assert_eq!(fs.stat(path).unwrap().mtime, Some(t));
        assert!(matches!(
            fs.remove("/a", false),
            Err(Error::Invalid(m)) if m.contains("not empty")
        ));
        fs.remove("/a", true).unwrap();
        assert!(fs.list("/").unwrap().is_empty());
        fs.flush().unwrap();
        assert_eq!(fs.free_clusters().unwrap(), free0);
        assert!(matches!(fs.stat("/a"), Err(Error::NotFound(_))));
    }
}

#[test]
fn refusals_change_nothing() {
    let dev = fresh(FatBits::Fat16, 16 << 20);
    let mut fs = FatFs::open(dev.clone(), true, crate::fs::Timestamp::system_now()).unwrap();
    let attrs = NewAttrs::default();
    assert!(matches!(
        fs.write_file("/missing/x", &mut &b"x"[..], 1, &attrs),
        Err(Error::NotFound(_))
    ));
    assert!(fs
        .write_file("/bad:name", &mut &b"x"[..], 1, &attrs)
        .is_err());
    let big = fs.geometry().clusters * fs.geometry().cluster_size;
    assert!(matches!(
        fs.write_file("/big", &mut io::repeat(0), big, &attrs),
        Err(Error::NoSpace(_))
    ));
    assert!(fs
        .write_file("/short", &mut &b"abc"[..], 10, &attrs)
        .is_err());
    assert!(
        fs.list("/").unwrap().is_empty(),
        "failed writes leave nothing"
    );
    assert!(fs.symlink("/x", "/y", &attrs).is_err());
    let mut ro = FatFs::open(dev, false, crate::fs::Timestamp::system_now()).unwrap();
    assert!(matches!(
        ro.mkdir("/d", false, &attrs),
        Err(Error::ReadOnly(_))
    ));
}

#[test]
fn hostile_chains_are_corrupt_not_panics() {
    let dev = fresh(FatBits::Fat16, 16 << 20);
    {
        let mut fs = FatFs::open(dev.clone(), true, crate::fs::Timestamp::system_now()).unwrap();
        let data = vec![1u8; 10_000];
        fs.mkdir("/d", false, &NewAttrs::default()).unwrap();
        fs.write_file("/d/f", &mut &data[..], 10_000, &NewAttrs::default())
            .unwrap();
        fs.flush().unwrap();
    }
    let geo = Geometry::read(&*dev).unwrap();
    // Make the directory's cluster point to itself: a loop.
    let fs = FatFs::open(dev.clone(), false, crate::fs::Timestamp::system_now()).unwrap();
    let d = fs.stat("/d").unwrap().ino.unwrap() as u32;
    drop(fs);
    dev.write_at(
        geo.fat_offset() + u64::from(d) * 2,
        &(d as u16).to_le_bytes(),
    )
    .unwrap();
    let fs = FatFs::open(dev.clone(), false, crate::fs::Timestamp::system_now()).unwrap();
    assert!(matches!(fs.list("/d"), Err(Error::Corrupt { .. })));
    assert!(matches!(
        fs.read_file("/d/f", &mut io::sink()),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn used_ranges_cover_metadata_and_data() {
    let dev = fresh(FatBits::Fat32, 40 << 20);
    let before = used_ranges(&*dev).unwrap();
    {
        let mut fs = FatFs::open(dev.clone(), true, crate::fs::Timestamp::system_now()).unwrap();
        let data = vec![7u8; 100_000];
        fs.write_file("/f", &mut &data[..], 100_000, &NewAttrs::default())
            .unwrap();
        fs.flush().unwrap();
    }
    let after = used_ranges(&*dev).unwrap();
    let total = |r: &[Range<u64>]| r.iter().map(|r| r.end - r.start).sum::<u64>();
    let geo = Geometry::read(&*dev).unwrap();
    assert_eq!(
        total(&after) - total(&before),
        100_000u64.div_ceil(geo.cluster_size) * geo.cluster_size
    );
    assert_eq!(after[0].start, 0);
    let i = info(&*dev).unwrap();
    assert_eq!(i.fat_type, "fat32");
}

/// Reads everything reachable, ignoring errors: what a corrupt image may
/// legitimately produce. Only panics and hangs are failures.
fn read_all(fs: &FatFs, path: &str, depth: usize) {
    let _ = fs.stat(path);
    let Ok(entries) = fs.list(path) else { return };
    for e in entries.iter().take(50) {
        let child = format!("{}/{}", path.trim_end_matches('/'), e.name);
        match e.kind {
            FileKind::Dir if depth < 8 => read_all(fs, &child, depth + 1),
            _ => {
                let _ = fs.stat(&child);
                let _ = fs.read_file(&child, &mut io::sink());
            }
        }
    }
}

/// Damages random metadata bytes and runs every operation on the result.
/// `FAT_FUZZ_ROUNDS=3000` for a longer run (passed 3000 rounds per variant).
#[test]
fn random_corruption_never_panics_or_hangs() {
    for bits in [FatBits::Fat16, FatBits::Fat32] {
        let size = if bits == FatBits::Fat16 {
            8 << 20
        } else {
            34 << 20
        };
        let dev = fresh(bits, size);
        {
            let mut fs =
                FatFs::open(dev.clone(), true, crate::fs::Timestamp::system_now()).unwrap();
            let a = NewAttrs::default();
            fs.mkdir("/d/e/A longer directory", true, &a).unwrap();
            for (i, len) in [0usize, 1, 5000, 70_000].iter().enumerate() {
                let data = vec![i as u8; *len];
                let path = format!("/d/e/A longer directory/file number {i}.bin");
                fs.write_file(&path, &mut &data[..], *len as u64, &a)
                    .unwrap();
                fs.write_file(&format!("/f{i}"), &mut &data[..], *len as u64, &a)
                    .unwrap();
            }
            fs.flush().unwrap();
        }
        let mut pristine = vec![0u8; size];
        dev.read_at(0, &mut pristine).unwrap();
        // Writes the rounds make past the damaged region are harmless data.
        let geo = Geometry::read(&*dev).unwrap();
        let hot = (geo.data_offset() + 64 * geo.cluster_size) as usize;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let rounds: usize = std::env::var("FAT_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40);
        for _ in 0..rounds {
            // Only the metadata and first clusters are damaged, so only
            // they need restoring between rounds.
            let mut bytes = pristine[..hot].to_vec();
            for _ in 0..1 + next() % 6 {
                let at = (next() % hot as u64) as usize;
                bytes[at] = next() as u8;
            }
            dev.write_at(0, &bytes).unwrap();
            if let Ok(fs) = FatFs::open(dev.clone(), false, crate::fs::Timestamp::system_now()) {
                read_all(&fs, "/", 0);
            }
            if let Ok(mut fs) = FatFs::open(dev.clone(), true, crate::fs::Timestamp::system_now()) {
                let a = NewAttrs::default();
                let _ = fs.write_file("/d/e/new", &mut &[1u8; 3000][..], 3000, &a);
                let _ = fs.write_file("/f2", &mut &[2u8; 9000][..], 9000, &a);
                let _ = fs.mkdir("/d/x/y", true, &a);
                let _ = fs.remove("/d", true);
                let _ = fs.flush();
            }
            let _ = used_ranges(&*dev);
            let _ = info(&*dev);
        }
    }
}

#[test]
fn replaces_in_place_when_there_is_no_room_for_two_copies() {
    let dev = fresh(FatBits::Fat16, 8 << 20);
    let mut fs = FatFs::open(dev, true, crate::fs::Timestamp::system_now()).unwrap();
    let a = NewAttrs::default();
    let cs = fs.geometry().cluster_size;
    // Leave room for the file once, not twice.
    let free = fs.free_clusters().unwrap();
    let filler = (free - 12) * cs;
    fs.write_file("/filler", &mut io::repeat(9), filler, &a)
        .unwrap();
    let old = vec![1u8; (8 * cs) as usize];
    fs.write_file("/f", &mut &old[..], old.len() as u64, &a)
        .unwrap();
    let new = vec![2u8; (10 * cs) as usize];
    fs.write_file("/f", &mut &new[..], new.len() as u64, &a)
        .unwrap();
    assert_eq!(read(&fs, "/f"), new);
    assert_eq!(fs.list("/").unwrap().len(), 2);
    let too_big = vec![3u8; (14 * cs) as usize];
    assert!(matches!(
        fs.write_file("/f", &mut &too_big[..], too_big.len() as u64, &a),
        Err(Error::NoSpace(_))
    ));
    assert_eq!(read(&fs, "/f"), new, "a refused write keeps the old file");
}

#[test]
fn rename_moves_and_replaces_and_the_time_is_the_one_given() {
    let dev = fresh(FatBits::Fat32, 40 << 20);
    let now = Timestamp {
        secs: 1_700_000_000,
        nanos: 0,
    };
    let mut fs = FatFs::open_with(dev.clone(), crate::fs::OpenOptions::writable(now)).unwrap();
    let attrs = NewAttrs::default();
    fs.mkdir("/a/b", true, &attrs).unwrap();
    fs.write_file("/a/f", &mut &b"one"[..], 3, &attrs).unwrap();
    fs.write_file("/g", &mut &b"two"[..], 3, &attrs).unwrap();
    fs.rename("/a/f", "/a/b/moved").unwrap();
    assert_eq!(read(&fs, "/a/b/moved"), b"one");
    fs.rename("/g", "/a/b/moved").unwrap();
    assert_eq!(read(&fs, "/a/b/moved"), b"two");
    assert!(fs.stat("/g").is_err() && fs.stat("/a/f").is_err());
    assert!(fs.rename("/a", "/a/b/inside").is_err());
    assert!(fs.rename("/a/b/moved", "/a").is_err());
    assert!(fs.rename("/missing", "/x").is_err());
    fs.rename("/a/b", "/c").unwrap();
    assert_eq!(read(&fs, "/c/moved"), b"two");
    let st = fs.stat("/c/moved").unwrap();
    assert_eq!(st.mtime.map(|t| t.secs), Some(now.secs));
    fs.flush().unwrap();
}
