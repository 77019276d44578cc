//! Repacking: an ext4 made by `mkfs.ext4 -d` read through nodeimg's ext4
//! engine and written anew, larger and smaller, judged by `e2fsck -fn` and
//! by loop mounts of the original and the repack compared with the source.

mod mkfs_support;

use imagegen::block::{BlockDevice, FileDevice};
use imagegen::fs::ext4::Ext4Fs;
use imagegen::mkfs::ext4::{build_file, Ext4Options, InodePolicy};
use imagegen::tree::FsSource;
use mkfs_support::*;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// `mke2fs -d` 1.47.0 cannot store the rich tree's 2000-byte xattr: use
/// a value that fits an xattr block it can write.
fn shrink_big_xattr(src: &Path) {
    let notes = src.join("home/pi/notes");
    xattr::set(&notes, "trusted.big", &[b'y'; 700]).unwrap();
    run(Command::new("touch")
        .args(["-h", "-d", "2024-05-06 07:08:09.123456789 UTC"])
        .arg(&notes));
}

fn repack(from: &Path, to: &Path, size: u64) {
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(from).unwrap());
    let fs = Ext4Fs::open(dev.clone(), imagegen::fs::Timestamp::default()).unwrap();
    let block_size = fs.details().block_size;
    let devices = Ext4Fs::open(dev, imagegen::fs::Timestamp::default()).unwrap();
    let mut source = FsSource::new(Box::new(fs), from.display().to_string(), Some(block_size))
        .with_device_numbers(Box::new(move |path| {
            devices
                .device_numbers(path)?
                .ok_or_else(|| imagegen::Error::Invalid(format!("{path}: not a device node")))
        }));
    let opts = Ext4Options {
        size,
        label: Some("repacked".into()),
        uuid: *b"nodeimg-repack-t",
        hash_seed: None,
        inodes: InodePolicy::Auto,
        epoch: 1_750_000_000,
        clamp: None,
        owner_map: None,
    };
    build_file(&mut source, &opts, to).unwrap();
}

/// `mke2fs -d` drops nanoseconds, so the original image, mounted, is the
/// reference for times; the source is the reference for everything else.
/// Returns the repack's mount.
fn compare(original: &Path, repacked: &Path, src: &Path) -> LoopMount {
    let before = LoopMount::new(original, None);
    let after = LoopMount::new(repacked, None);
    assert_same_tree(before.path(), after.path(), true);
    assert_same_tree(src, after.path(), false);
    after
}

#[test]
fn mke2fs_image_repacks_larger_and_smaller() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_rich_tree(&src, 2000);
    shrink_big_xattr(&src);
    let original = tmp.path().join("original.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-I", "256", "-d"])
        .arg(&src)
        .arg(&original)
        .arg("300M"));
    e2fsck_clean(&original);

    for (name, size) in [("larger.img", 512u64 << 20), ("smaller.img", 160 << 20)] {
        let out = tmp.path().join(name);
        repack(&original, &out, size);
        e2fsck_clean(&out);
        let mount = compare(&original, &out, &src);
        // Sparse files stay sparse through the repack.
        let big = std::fs::metadata(mount.path().join("var/big-sparse")).unwrap();
        assert!(
            std::os::unix::fs::MetadataExt::blocks(&big) * 512 < 1 << 20,
            "{name}"
        );
    }
}

#[test]
fn one_kib_block_image_repacks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_rich_tree(&src, 100);
    shrink_big_xattr(&src);
    std::fs::remove_file(src.join("var/big-sparse")).unwrap();
    let original = tmp.path().join("small-blocks.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "1024", "-d"])
        .arg(&src)
        .arg(&original)
        .arg("64M"));
    let out = tmp.path().join("out.img");
    repack(&original, &out, 64 << 20);
    e2fsck_clean(&out);
    compare(&original, &out, &src);
}
