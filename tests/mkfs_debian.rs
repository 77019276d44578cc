//! A real Debian arm64 root filesystem, made by
//! `fixtures/make-debian-rootfs.sh` (mmdebstrap, network), through ext4
//! creation: from its tarball and from the tree extracted as root, each
//! judged by `e2fsck -fn` and a read-only loop mount compared with the
//! extracted tree.

mod mkfs_support;

use imagegen::mkfs::ext4::{build_file, Ext4Options, InodePolicy};
use imagegen::tree::{DirSource, TarSource};
use mkfs_support::*;
use std::path::PathBuf;
use std::process::Command;

fn tarball() -> PathBuf {
    std::env::var_os("NODEIMG_DEBIAN_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/debian-arm64-rootfs.tar")
        })
}

#[test]
#[ignore = "needs fixtures/make-debian-rootfs.sh (network to Debian mirrors)"]
fn debian_arm64_rootfs_from_tarball_and_directory() {
    let tar = tarball();
    assert!(
        tar.exists(),
        "run fixtures/make-debian-rootfs.sh first ({})",
        tar.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&tree));

    let opts = Ext4Options {
        size: 1 << 30,
        label: Some("debian".into()),
        uuid: *b"debian-rootfs-t1",
        hash_seed: None,
        inodes: InodePolicy::Auto,
        epoch: 1_750_000_000,
        clamp: None,
        owner_map: None,
    };
    let from_tar = tmp.path().join("tar.img");
    build_file(&mut TarSource::open(&tar).unwrap(), &opts, &from_tar).unwrap();
    e2fsck_clean(&from_tar);
    {
        let mount = LoopMount::new(&from_tar, None);
        assert_same_tree(&tree, mount.path(), true);
    }
    let again = tmp.path().join("tar2.img");
    build_file(&mut TarSource::open(&tar).unwrap(), &opts, &again).unwrap();
    assert_eq!(sha256(&from_tar), sha256(&again));

    let from_dir = tmp.path().join("dir.img");
    build_file(&mut DirSource::new(&tree).unwrap(), &opts, &from_dir).unwrap();
    e2fsck_clean(&from_dir);
    let mount = LoopMount::new(&from_dir, None);
    assert_same_tree(&tree, mount.path(), true);
}
