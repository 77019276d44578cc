//! ext4 from directories and tarballs, judged by `e2fsck -fn` and by a
//! read-only kernel mount compared with the source. Needs root (mknod,
//! chown, loop devices) and the Debian packages e2fsprogs and attr.

mod mkfs_support;

use imagegen::mkfs::ext4::{build_file, Ext4Options, InodePolicy};
use imagegen::tree::{DirSource, TarSource};
use mkfs_support::*;
use std::path::Path;
use std::process::Command;

fn options(size: u64) -> Ext4Options {
    Ext4Options {
        size,
        label: Some("rootfs".into()),
        uuid: *b"nodeimg-mkfs-tst",
        hash_seed: None,
        inodes: InodePolicy::Auto,
        epoch: 1_750_000_000,
        clamp: None,
        owner_map: None,
    }
}

#[test]
fn directory_tree_survives_the_round_trip_through_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_rich_tree(&src, 10_000);
    let image = tmp.path().join("root.img");
    let mut source = DirSource::new(&src).unwrap();
    let summary = build_file(&mut source, &options(256 << 20), &image).unwrap();
    assert!(summary.inodes > 10_000);
    e2fsck_clean(&image);
    // Blocks never written are holes: the 100 MiB sparse file and the
    // free space cost nothing.
    let allocated =
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&image).unwrap()) * 512;
    assert!(allocated < 80 << 20, "image allocates {allocated} bytes");

    let mount = LoopMount::new(&image, None);
    assert_same_tree(&src, mount.path(), true);
    // Sparse files stayed sparse.
    let big = std::fs::metadata(mount.path().join("var/big-sparse")).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&big) * 512 < 1 << 20);
    assert!(mount.path().join("lost+found").is_dir());
}

#[test]
fn two_builds_give_the_same_bytes_and_clamp_times() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_rich_tree(&src, 300);
    let mut opts = options(64 << 20);
    opts.clamp = Some(1_600_000_000); // before the tree's 2024 times
    let (a, b) = (tmp.path().join("a.img"), tmp.path().join("b.img"));
    build_file(&mut DirSource::new(&src).unwrap(), &opts, &a).unwrap();
    // Reading the tree moved its access times; the output must not move.
    build_file(&mut DirSource::new(&src).unwrap(), &opts, &b).unwrap();
    assert_eq!(sha256(&a), sha256(&b));

    let out = run(Command::new("debugfs").args(["-R", "stat /bin/su"]).arg(&a));
    assert!(
        out.contains("mtime: 0x5f5e1000"),
        "mtime not clamped:\n{out}"
    );
    assert!(
        out.contains("ctime: 0x5f5e1000"),
        "ctime not clamped:\n{out}"
    );
}

/// `tar --xattrs` of the tree, as `mmdebstrap` and CI jobs make them.
fn make_tarball(src: &Path, out: &Path) {
    run(Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--format=posix",
            "-cpf",
        ])
        .arg(out)
        .arg("-C")
        .arg(src)
        .arg("."));
}

#[test]
fn tarball_gives_the_same_tree_as_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_rich_tree(&src, 1000);
    // tar has no entry type for sockets.
    std::fs::remove_file(src.join("dev/socket")).unwrap();
    let tarball = tmp.path().join("root.tar");
    make_tarball(&src, &tarball);
    let image = tmp.path().join("root.img");
    build_file(
        &mut TarSource::open(&tarball).unwrap(),
        &options(256 << 20),
        &image,
    )
    .unwrap();
    e2fsck_clean(&image);
    let mount = LoopMount::new(&image, None);
    assert_same_tree(&src, mount.path(), true);
}

#[test]
fn compressed_tarballs_give_the_same_bytes_as_the_plain_one() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_rich_tree(&src, 50);
    // Sockets have no tar type; the big file would only slow the codecs.
    std::fs::remove_file(src.join("dev/socket")).unwrap();
    std::fs::remove_file(src.join("var/big-sparse")).unwrap();
    let tarball = tmp.path().join("root.tar");
    make_tarball(&src, &tarball);
    let opts = options(160 << 20);
    let plain = tmp.path().join("plain.img");
    build_file(&mut TarSource::open(&tarball).unwrap(), &opts, &plain).unwrap();
    e2fsck_clean(&plain);
    for (tool, ext) in [("gzip", "gz"), ("xz", "xz"), ("zstd", "zst")] {
        let packed = tmp.path().join(format!("root.tar.{ext}"));
        let bytes = std::process::Command::new(tool)
            .args(["-c", "-1"])
            .arg(&tarball)
            .output()
            .unwrap();
        assert!(bytes.status.success(), "{tool}");
        std::fs::write(&packed, bytes.stdout).unwrap();
        let image = tmp.path().join(format!("{ext}.img"));
        build_file(&mut TarSource::open(&packed).unwrap(), &opts, &image).unwrap();
        assert_eq!(sha256(&image), sha256(&plain), "{tool}");
    }
}

/// A tree held in memory, for what no host directory or tarball carries.
struct ListSource(Vec<(imagegen::tree::Entry, Vec<u8>)>);

impl imagegen::tree::TreeSource for ListSource {
    fn describe(&self) -> String {
        "list".into()
    }
    fn walk(
        &mut self,
        with_data: bool,
        visit: &mut imagegen::tree::Visitor<'_>,
    ) -> imagegen::Result<()> {
        for (entry, data) in &self.0 {
            if with_data && entry.data_bytes() > 0 {
                visit(entry, Some(&mut &data[..]))?;
            } else {
                visit(entry, None)?;
            }
        }
        Ok(())
    }
}

#[test]
fn inode_flags_reach_the_kernel() {
    use imagegen::fs::Timestamp;
    use imagegen::tree::{DataMap, Entry, EntryKind, InodeFlags};
    let t = Timestamp {
        secs: 1_700_000_000,
        nanos: 0,
    };
    let entry = |path: &str, kind: EntryKind, flags: u32| Entry {
        flags: InodeFlags(flags),
        nlink: Some(1),
        ..Entry::new(path, kind, 0o644, t)
    };
    let file = |size: u64| EntryKind::File {
        size,
        data: DataMap::Dense,
    };
    let mut source = ListSource(vec![
        (entry("", EntryKind::Dir, 0), vec![]),
        (entry("etc", EntryKind::Dir, InodeFlags::NODUMP), vec![]),
        (
            entry("etc/frozen", file(3), InodeFlags::IMMUTABLE),
            b"ice".to_vec(),
        ),
        (
            entry("var.log", file(0), InodeFlags::APPEND | InodeFlags::NOATIME),
            vec![],
        ),
        (entry("plain", file(1), 0), b"p".to_vec()),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("flags.img");
    build_file(&mut source, &options(32 << 20), &image).unwrap();
    e2fsck_clean(&image);
    let mount = LoopMount::new(&image, None);
    let lsattr = |p: &str| {
        run(Command::new("lsattr").arg("-d").arg(mount.path().join(p)))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let (frozen, log, etc, plain) = (
        lsattr("etc/frozen"),
        lsattr("var.log"),
        lsattr("etc"),
        lsattr("plain"),
    );
    assert!(frozen.contains('i') && !frozen.contains('a'), "{frozen}");
    assert!(log.contains('a') && log.contains('A'), "{log}");
    assert!(etc.contains('d'), "{etc}");
    assert!(!plain.contains('i') && !plain.contains('a'), "{plain}");
    assert_eq!(
        std::fs::read(mount.path().join("etc/frozen")).unwrap(),
        b"ice"
    );
}
