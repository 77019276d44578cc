//! Damaged FAT volumes: the fuzzer's bytes patch the metadata of a small
//! valid FAT16 volume (boot sector, FATs, root directory, first clusters),
//! then every `FatFs` operation runs on it. Errors are fine; panics and
//! hangs are bugs.
#![no_main]

use imagegen::block::{BlockDevice, MemDevice};
use imagegen::fs::fat::{self, FatBits, FatFs, FormatOptions};
use imagegen::fs::{FileKind, Filesystem, NewAttrs};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

const SIZE: usize = 5 << 20;

/// The pristine volume and how many leading bytes hold its metadata.
fn base() -> &'static (Vec<u8>, usize) {
    static BASE: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    BASE.get_or_init(|| {
        let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::zeroed(SIZE));
        let opts = FormatOptions {
            bits: FatBits::Fat16,
            ..Default::default()
        };
        let geo = fat::format(&*dev, &opts).expect("format");
        {
            let mut fs = FatFs::open(dev.clone(), true, imagegen::fs::Timestamp::default()).expect("open");
            let a = NewAttrs::default();
            fs.mkdir("/dir/A longer sub directory", true, &a).unwrap();
            for (i, len) in [0usize, 3, 2000, 9000].iter().enumerate() {
                let data = vec![i as u8; *len];
                let p = format!("/dir/A longer sub directory/file {i}.bin");
                fs.write_file(&p, &mut &data[..], *len as u64, &a).unwrap();
                fs.write_file(&format!("/f{i}"), &mut &data[..], *len as u64, &a).unwrap();
            }
            fs.flush().unwrap();
        }
        let mut bytes = vec![0u8; SIZE];
        dev.read_at(0, &mut bytes).unwrap();
        (bytes, (geo.data_offset() + 32 * geo.cluster_size) as usize)
    })
}

fn walk(fs: &FatFs, path: &str, depth: usize) {
    let _ = fs.stat(path);
    let Ok(entries) = fs.list(path) else { return };
    for e in entries.iter().take(32) {
        let child = format!("{}/{}", path.trim_end_matches('/'), e.name);
        if e.kind == FileKind::Dir && depth < 6 {
            walk(fs, &child, depth + 1);
        } else {
            let _ = fs.read_file(&child, &mut std::io::sink());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (pristine, hot) = base();
    let mut bytes = pristine.clone();
    // Each 3 input bytes: a 16-bit position scaled into the metadata, a value.
    for patch in data.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([patch[0], patch[1]])) * hot / 65536;
        bytes[at] = patch[2];
    }
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_vec(bytes));
    if let Ok(fs) = FatFs::open(dev.clone(), false, imagegen::fs::Timestamp::default()) {
        walk(&fs, "/", 0);
    }
    if let Ok(mut fs) = FatFs::open(dev.clone(), true, imagegen::fs::Timestamp::default()) {
        let a = NewAttrs::default();
        let _ = fs.write_file("/dir/new", &mut &[1u8; 3000][..], 3000, &a);
        let _ = fs.write_file("/f2", &mut &[2u8; 5000][..], 5000, &a);
        let _ = fs.mkdir("/dir/x/y", true, &a);
        let _ = fs.remove("/dir", true);
        let _ = fs.flush();
    }
    let _ = fat::used_ranges(&*dev);
    let _ = fat::info(&*dev);
});
