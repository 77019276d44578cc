//! Arbitrary bytes as an ext4 image: opening it, walking the whole tree,
//! reading every file and trying a few changes must return `Ok` or `Err`,
//! never panic (and never run away: reads and walks are capped).
//! Seed corpus: `fuzz/seed-ext4.sh` makes small real images with mkfs.ext4.
#![no_main]

use imagegen::block::{BlockDevice, MemDevice};
use imagegen::fs::ext4::Ext4Fs;
use imagegen::fs::{FileKind, Filesystem, NewAttrs};
use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::sync::Arc;

/// Stops a read after 4 MiB: a corrupt size may claim terabytes.
struct Capped(usize);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        if self.0 > 4 << 20 {
            return Err(std::io::Error::other("cap"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn walk(fs: &dyn Filesystem) {
    let mut stack = vec![("/".to_string(), 0)];
    let mut budget = 2000;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs.list(&dir) else { continue };
        for e in entries {
            budget -= 1;
            if budget == 0 {
                return;
            }
            let path = if dir == "/" { format!("/{}", e.name) } else { format!("{dir}/{}", e.name) };
            match fs.stat(&path).map(|s| s.kind) {
                Ok(FileKind::File) => {
                    let _ = fs.read_file(&path, &mut Capped(0));
                }
                Ok(FileKind::Dir) if depth < 16 => stack.push((path, depth + 1)),
                _ => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_vec(data.to_vec()));
    if let Ok(fs) = Ext4Fs::open(Arc::clone(&dev), imagegen::fs::Timestamp::default()) {
        walk(&fs);
    }
    if let Ok(mut fs) = Ext4Fs::open(dev, imagegen::fs::Timestamp::default()) {
        let attrs = NewAttrs::default();
        let _ = fs.write_file("/new", &mut &b"data"[..], 4, &attrs);
        let _ = fs.mkdir("/a/b", true, &attrs);
        let _ = fs.symlink("/new", "/l", &attrs);
        let _ = fs.remove("/d", true);
        let _ = fs.flush();
    }
});
