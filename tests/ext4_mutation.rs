//! Corrupt ext4 images never panic or hang the engine: seeded byte
//! mutations of small real images (made by `mkfs.ext4`), then open, walk the
//! whole tree, read every file and try one write. Each step must return `Ok`
//! or `Err`. This runs in the normal suite; the coverage-guided `cargo fuzz`
//! target in `fuzz/` does the same with libFuzzer's inputs.
//!
//! Rerun one case: `EXT4_MUTATION_SEED=<seed> cargo test --test ext4_mutation`;
//! run more: `EXT4_MUTATION_SCALE=20`.

mod common;

use common::fixture::mkfs;
use common::oracle::run;
use common::rng::Rng;
use imagegen::block::{BlockDevice, MemDevice};
use imagegen::fs::{FileKind, Filesystem, NewAttrs};
use std::io::Write;
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Stops reading after this many bytes: a corrupt size may claim terabytes.
const READ_CAP: u64 = 16 << 20;
/// Stops walking after this many entries: a corrupt directory may loop.
const WALK_CAP: usize = 3000;

struct Capped(u64);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        if self.0 > READ_CAP {
            return Err(std::io::Error::other("read cap reached"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lists, stats and reads everything reachable; errors are fine.
fn walk(fs: &dyn Filesystem) {
    let mut stack = vec![("/".to_string(), 0usize)];
    let mut seen = 0;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs.list(&dir) else { continue };
        for e in entries {
            seen += 1;
            if seen > WALK_CAP {
                return;
            }
            let path = if dir == "/" {
                format!("/{}", e.name)
            } else {
                format!("{dir}/{}", e.name)
            };
            let Ok(st) = fs.stat(&path) else { continue };
            match st.kind {
                FileKind::File => {
                    let _ = fs.read_file(&path, &mut Capped(0));
                    let _ = fs.get_xattr(&path, "security.capability");
                }
                FileKind::Dir if depth < 32 => stack.push((path, depth + 1)),
                _ => {}
            }
        }
    }
}

/// One mutated image through the engine: open read-only and walk; open
/// writable and try a change.
fn exercise(image: Vec<u8>) {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_vec(image));
    if let Ok(fs) = common::engine::open_dev(Arc::clone(&dev), false) {
        walk(&*fs);
    }
    if let Ok(mut fs) = common::engine::open_dev(dev, true) {
        let _ = fs.write_file("/etc/new", &mut &b"x"[..], 1, &NewAttrs::default());
        let _ = fs.mkdir("/etc/a/b", true, &NewAttrs::default());
        let _ = fs.remove("/etc/hostname", false);
        let _ = fs.flush();
    }
}

/// Small real images: 1 KiB blocks with gdt_csum (no checksums to stop the
/// mutations early) and an htree; 4 KiB metadata_csum; inline_data.
fn base_images() -> Vec<(&'static str, Vec<u8>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("many")).unwrap();
    std::fs::write(src.join("etc/hostname"), b"node\n").unwrap();
    std::fs::write(src.join("etc/big"), vec![0x42u8; 300_000]).unwrap();
    std::os::unix::fs::symlink("etc/hostname", src.join("fast")).unwrap();
    std::os::unix::fs::symlink("x/".repeat(50), src.join("slow")).unwrap();
    for i in 0..300 {
        std::fs::write(src.join(format!("many/file-{i:03}")), format!("{i}")).unwrap();
    }
    let variants: [(&str, u64, &[&str]); 3] = [
        (
            "1k-gdt_csum-htree",
            4,
            &[
                "-b",
                "1024",
                "-N",
                "512",
                "-O",
                "^metadata_csum,^64bit,uninit_bg,^has_journal",
            ],
        ),
        (
            "4k-metadata_csum",
            8,
            &["-T", "default", "-N", "512", "-O", "^has_journal"],
        ),
        (
            "4k-inline_data",
            8,
            &[
                "-T",
                "default",
                "-N",
                "512",
                "-O",
                "inline_data,^has_journal",
            ],
        ),
    ];
    let mut out = Vec::new();
    for (name, mib, args) in variants {
        let image = dir.path().join(format!("{name}.img"));
        mkfs(&image, mib, args, Some(&src)).expect("mkfs");
        let status = run(Command::new("e2fsck").arg("-fyD").arg(&image)).status;
        assert!(status.code().unwrap_or(8) < 4, "e2fsck -fyD {name}");
        out.push((name, std::fs::read(&image).unwrap()));
    }
    out
}

/// Mutates 1–16 bytes inside blocks that hold something (metadata and
/// directory/file data), biased towards boundary values.
fn mutate(base: &[u8], rng: &mut Rng, used_blocks: &[usize]) -> (Vec<u8>, Vec<(usize, u8)>) {
    let mut img = base.to_vec();
    let mut changes = Vec::new();
    for _ in 0..1 + rng.below(16) {
        let block = *rng.pick(used_blocks);
        let at = block * 1024 + rng.below(1024) as usize;
        let value = match rng.below(4) {
            0 => img[at] ^ (1 << rng.below(8)),
            1 => *rng.pick(&[0x00, 0xff, 0x7f, 0x80, 0x01]),
            _ => rng.below(256) as u8,
        };
        img[at] = value;
        changes.push((at, value));
    }
    (img, changes)
}

#[test]
fn mutated_images_never_panic_or_hang() {
    let scale: u64 = std::env::var("EXT4_MUTATION_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let only: Option<u64> = std::env::var("EXT4_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    for (name, base) in base_images() {
        // The engine must read the unmutated image, or the test tests nothing.
        let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_vec(base.clone()));
        let fs = common::engine::open_dev(dev, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            fs.list("/many").map(|l| l.len()).unwrap_or(0) == 300,
            "{name}: cannot list /many"
        );
        drop(fs);
        let used: Vec<usize> = base
            .chunks(1024)
            .enumerate()
            .filter(|(_, c)| c.iter().any(|&b| b != 0))
            .map(|(i, _)| i)
            .collect();
        let seeds: Vec<u64> = match only {
            Some(s) => vec![s],
            None => (0..150 * scale).collect(),
        };
        for seed in seeds {
            let mut rng = Rng::new(seed ^ 0xfeed);
            let (img, changes) = mutate(&base, &mut rng, &used);
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let result = std::panic::catch_unwind(|| exercise(img));
                let _ = tx.send(result.is_ok());
            });
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(true) => {}
                Ok(false) => panic!("{name} seed {seed}: the engine panicked on bytes {changes:?}"),
                Err(_) => panic!("{name} seed {seed}: the engine hung (20 s) on bytes {changes:?}"),
            }
        }
    }
}
