//! Engine tests against the real tools: images made by `mkfs.ext4`,
//! changed by us, judged by `e2fsck -fn` and read back with `debugfs`.
//! (The wider matrix and the randomised model test live in the test suite.)

use super::Ext4Fs;
use crate::block::FileDevice;
use crate::fs::{FileKind, NewAttrs};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) struct Img {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub(crate) fn mkfs(size_mib: u64, opts: &[&str]) -> Img {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size_mib << 20).unwrap();
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=1",
            "-U",
            "6a1b3c5e-0000-4000-8000-00000000abcd",
        ])
        .args(opts)
        .arg(&path)
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .output()
        .expect("mkfs.ext4 (e2fsprogs) is needed for these tests");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Img { _dir: dir, path }
}

pub(crate) fn fsck(path: &Path) {
    let out = Command::new("e2fsck")
        .args(["-fn"])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| {
            !(l.trim().is_empty()
                || l.starts_with("Pass ")
                || l.starts_with("e2fsck ")
                || l.contains(" files ("))
        })
        .collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "e2fsck -fn:\n{text}"
    );
}

pub(crate) fn debugfs(path: &Path, req: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", req])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn open(path: &Path) -> Ext4Fs<FileDevice> {
    Ext4Fs::open(
        FileDevice::open_rw(path).unwrap(),
        crate::fs::Timestamp::system_now(),
    )
    .unwrap()
}

fn put(fs: &mut Ext4Fs<FileDevice>, path: &str, data: &[u8]) {
    fs.put(
        path,
        &mut &data[..],
        data.len() as u64,
        &NewAttrs::default(),
    )
    .unwrap();
}

fn cat(fs: &Ext4Fs<FileDevice>, path: &str) -> Vec<u8> {
    let mut v = Vec::new();
    fs.read_file(path, &mut v).unwrap();
    v
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn exercise(opts: &[&str]) {
    let img = mkfs(32, opts);
    let mut fs = open(&img.path);
    put(&mut fs, "/hello", b"hi there\n");
    fsck(&img.path);
    fs.mkdir("/etc/ssh/keys", true, &NewAttrs::default())
        .unwrap();
    let big = pattern(3 << 20, 1);
    put(&mut fs, "/etc/big", &big);
    fsck(&img.path);
    assert_eq!(cat(&fs, "/etc/big"), big);
    put(&mut fs, "/etc/big", b"small now");
    assert_eq!(cat(&fs, "/etc/big"), b"small now");
    fs.symlink("/etc/big", "/fast", &NewAttrs::default())
        .unwrap();
    let long = "x/".repeat(100);
    fs.symlink(&long, "/slow", &NewAttrs::default()).unwrap();
    fs.hard_link("/hello", "/etc/hello2").unwrap();
    fs.set_mode("/hello", 0o600).unwrap();
    fs.set_owner("/hello", Some(1000), Some(1001)).unwrap();
    fs.set_xattr(
        "/hello",
        "security.capability",
        &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    )
    .unwrap();
    fs.set_xattr("/hello", "user.big", &vec![7u8; 300]).unwrap();
    fsck(&img.path);
    assert_eq!(fs.stat("/slow").unwrap().link_target.unwrap(), long);
    assert_eq!(fs.stat("/fast").unwrap().link_target.unwrap(), "/etc/big");
    let st = fs.stat("/etc/hello2").unwrap();
    assert_eq!(
        (st.mode, st.uid, st.gid, st.nlink),
        (Some(0o600), Some(1000), Some(1001), Some(2))
    );
    assert_eq!(st.xattrs.len(), 2);
    fs.remove_xattr("/hello", "user.big").unwrap();
    fsck(&img.path);
    for i in 0..300 {
        put(
            &mut fs,
            &format!("/etc/ssh/f{i:04}-with-a-longish-name"),
            &pattern(i * 7, i as u8),
        );
    }
    fsck(&img.path);
    fs.remove("/etc/ssh/f0100-with-a-longish-name", false)
        .unwrap();
    assert!(fs.remove("/etc", false).is_err());
    fs.remove("/etc", true).unwrap();
    fsck(&img.path);
    assert_eq!(
        fs.list("/")
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.kind))
            .collect::<Vec<_>>(),
        vec![
            ("fast", FileKind::Symlink),
            ("hello", FileKind::File),
            ("lost+found", FileKind::Dir),
            ("slow", FileKind::Symlink)
        ]
    );
    let ls = debugfs(&img.path, "stat /hello");
    assert!(
        ls.contains("User:  1000") && ls.contains("Links: 1"),
        "{ls}"
    );
}

#[test]
fn defaults_4k() {
    exercise(&["-b", "4096"]);
}

#[test]
fn defaults_1k() {
    exercise(&[]);
}

#[test]
fn gdt_csum_era() {
    exercise(&["-O", "^metadata_csum,^64bit,uninit_bg"]);
}

#[test]
fn small_inodes_no_journal() {
    exercise(&["-I", "128", "-O", "^has_journal"]);
}

/// An image with a `/big` directory of `entries` names, indexed (htree).
fn htree_image(opts: &[&str], entries: usize) -> Img {
    htree_image_named(opts, entries, "entry-")
}

fn htree_image_named(opts: &[&str], entries: usize, prefix: &str) -> Img {
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..entries {
        std::fs::write(big.join(format!("{prefix}{i:05}")), b"x").unwrap();
    }
    let mut all = vec!["-d", src.path().to_str().unwrap()];
    all.extend_from_slice(opts);
    let img = mkfs(64, &all);
    // mke2fs -d writes linear directories; e2fsck -D indexes them.
    Command::new("e2fsck")
        .args(["-fyD"])
        .arg(&img.path)
        .output()
        .unwrap();
    fsck(&img.path);
    assert!(
        debugfs(&img.path, "htree /big").contains("Root node dump"),
        "/big is not indexed"
    );
    img
}

fn count_name(img: &Path, dir: &str, name: &str) -> usize {
    debugfs(img, &format!("ls {dir}"))
        .split_whitespace()
        .filter(|w| *w == name)
        .count()
}

fn htree_exercise(opts: &[&str]) {
    let img = htree_image(opts, 3000);
    let mut fs = open(&img.path);
    // Replace an existing name: exactly one entry stays.
    put(&mut fs, "/big/entry-02500", b"replaced");
    fsck(&img.path);
    assert_eq!(count_name(&img.path, "/big", "entry-02500"), 1);
    assert_eq!(cat(&fs, "/big/entry-02500"), b"replaced");
    // New names go to their hash leaf; enough of them to fill leaves too.
    for i in 0..400 {
        put(&mut fs, &format!("/big/new-{i:04}"), b"n");
        if i % 100 == 0 {
            fsck(&img.path);
        }
    }
    fsck(&img.path);
    // Full leaves were split: still indexed.
    assert!(debugfs(&img.path, "htree /big").contains("Root node dump"));
    assert_eq!(count_name(&img.path, "/big", "new-0399"), 1);
    fs.remove("/big/entry-00007", false).unwrap();
    put(&mut fs, "/big/entry-00008", b"again");
    fsck(&img.path);
    assert_eq!(count_name(&img.path, "/big", "entry-00008"), 1);
    assert_eq!(fs.list("/big").unwrap().len(), 3000 + 400 - 1);
    fs.remove("/big", true).unwrap();
    fsck(&img.path);
}

#[test]
fn htree_4k() {
    htree_exercise(&["-b", "4096"]);
}

#[test]
fn htree_1k_gdt_csum() {
    htree_exercise(&["-O", "^metadata_csum,^64bit,uninit_bg"]);
}

fn bytes_of(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn inline_data_reads_and_refuses_changes() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("tiny"), b"inline bytes").unwrap();
    std::fs::create_dir(src.path().join("d")).unwrap();
    std::fs::write(src.path().join("d/a"), b"1").unwrap();
    let img = mkfs(
        16,
        &["-O", "inline_data", "-d", src.path().to_str().unwrap()],
    );
    let before = bytes_of(&img.path);
    let mut fs = open(&img.path);
    assert_eq!(cat(&fs, "/tiny"), b"inline bytes");
    assert!(fs
        .stat("/tiny")
        .unwrap()
        .flags
        .contains(&"inline_data".to_string()));
    assert_eq!(fs.list("/d").unwrap().len(), 1);
    assert_eq!(cat(&fs, "/d/a"), b"1");
    let e = fs
        .put("/d/b", &mut &b"x"[..], 1, &NewAttrs::default())
        .unwrap_err();
    assert!(e.to_string().contains("inline"), "{e}");
    assert!(fs
        .put("/tiny", &mut &b"x"[..], 1, &NewAttrs::default())
        .is_err());
    assert!(fs.remove("/tiny", false).is_err());
    assert!(fs.set_xattr("/tiny", "user.a", b"b").is_err());
    assert!(
        bytes_of(&img.path) == before,
        "a refused change wrote something"
    );
}

#[test]
fn journal_needing_recovery_is_refused_without_change() {
    let img = mkfs(16, &[]);
    Command::new("debugfs")
        .args(["-w", "-R", "feature needs_recovery"])
        .arg(&img.path)
        .output()
        .unwrap();
    let before = bytes_of(&img.path);
    let mut fs = open(&img.path);
    let e = fs.mkdir("/x", false, &NewAttrs::default()).unwrap_err();
    assert!(e.to_string().contains("recovery"), "{e}");
    assert!(fs.list("/").is_ok(), "reading stays possible");
    assert!(bytes_of(&img.path) == before);
}

#[test]
fn enospc_leaves_the_filesystem_untouched() {
    for opts in [&["-b", "4096"][..], &["-O", "^has_journal"][..]] {
        let img = mkfs(8, opts);
        let mut fs = open(&img.path);
        let free = fs.details().free_blocks * fs.details().block_size;
        // Fill most of it, then ask for more than is left.
        let first = pattern((free / 2) as usize, 3);
        put(&mut fs, "/fill", &first);
        fsck(&img.path);
        let before = bytes_of(&img.path);
        let more = pattern((free / 2 + 8192) as usize, 4);
        let e = fs
            .put(
                "/more",
                &mut &more[..],
                more.len() as u64,
                &NewAttrs::default(),
            )
            .unwrap_err();
        assert!(matches!(e, crate::Error::NoSpace(_)), "{e}");
        // Replacing needs the new blocks before the old ones are freed.
        assert!(fs
            .put(
                "/fill",
                &mut &more[..],
                more.len() as u64,
                &NewAttrs::default()
            )
            .is_err());
        assert!(bytes_of(&img.path) == before, "ENOSPC changed the image");
        fsck(&img.path);
        // Exhaust inodes too.
        let mut n = 0;
        let err = loop {
            match fs.put(&format!("/i{n}"), &mut &b""[..], 0, &NewAttrs::default()) {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, crate::Error::NoSpace(_)), "{err}");
        fsck(&img.path);
        assert_eq!(cat(&fs, "/fill"), first);
    }
}

#[test]
fn checksum_mismatch_is_named_and_nothing_changes() {
    let img = mkfs(16, &["-b", "4096"]);
    let fs = open(&img.path);
    let root = fs.read_inode(2).unwrap();
    let block = fs.map(2, &root).unwrap().extents[0].physical;
    drop(fs);
    // Flip a byte inside the root directory's `lost+found` name.
    let mut bytes = bytes_of(&img.path);
    let off = (block * 4096) as usize;
    let pos = off
        + bytes[off..off + 4096]
            .windows(10)
            .position(|w| w == b"lost+found")
            .unwrap();
    bytes[pos] ^= 0x20;
    std::fs::write(&img.path, &bytes).unwrap();
    let mut fs = open(&img.path);
    let e = fs.mkdir("/new", false, &NewAttrs::default()).unwrap_err();
    assert!(
        e.to_string().contains("checksum mismatch") && e.to_string().contains("group 0"),
        "{e}"
    );
    assert!(bytes_of(&img.path) == bytes);
}

#[test]
fn used_ranges_cover_exactly_the_used_blocks() {
    for opts in [&["-b", "4096"][..], &[][..]] {
        let img = mkfs(64, opts);
        let mut fs = open(&img.path);
        put(&mut fs, "/data", &pattern(5 << 20, 9));
        let d = fs.details();
        drop(fs);
        let ranges = super::used_ranges(FileDevice::open(&img.path).unwrap()).unwrap();
        let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        // Block 0 of a 1 KiB filesystem is in no group but counts as used.
        assert_eq!(total, (d.blocks - d.free_blocks) * d.block_size);
        assert!(ranges.windows(2).all(|w| w[0].end < w[1].start));
    }
}

/// Walks everything readable; errors are fine, panics are not.
fn walk_all(fs: &Ext4Fs<crate::block::MemDevice>, dir: &str, depth: usize) {
    let Ok(entries) = fs.list(dir) else { return };
    for e in entries.into_iter().take(50) {
        let p = format!("{}/{}", dir.trim_end_matches('/'), e.name);
        let _ = fs.stat(&p);
        // A corrupt size can make a (valid, sparse) file of terabytes.
        if e.size < 64 << 20 {
            let _ = fs.read_file(&p, &mut std::io::sink());
        }
        if e.kind == FileKind::Dir && depth < 4 {
            walk_all(fs, &p, depth + 1);
        }
    }
}

#[test]
fn garbage_never_panics() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("a/b")).unwrap();
    for i in 0..40 {
        std::fs::write(
            src.path().join(format!("a/f{i}")),
            pattern(i * 300, i as u8),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("a/f1", src.path().join("l")).unwrap();
    let d = src.path().to_str().unwrap();
    // Without checksums, corruption reaches the parsers behind them.
    let images = [
        mkfs(4, &["-d", d]),
        mkfs(4, &["-d", d, "-O", "^metadata_csum"]),
    ];
    let mut seed = 0x1234_5678u32;
    for round in 0..600 {
        let good = bytes_of(&images[round % 2].path);
        let mut bytes = good.clone();
        for _ in 0..16 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let pos = (seed as usize >> 3) % (1 << 20);
            bytes[pos] = (seed >> 24) as u8;
        }
        if round % 50 == 0 {
            bytes.truncate(bytes.len() / 2);
        }
        let dev = crate::block::MemDevice::from_vec(bytes);
        if let Ok(mut fs) = Ext4Fs::open(dev, crate::fs::Timestamp::system_now()) {
            walk_all(&fs, "/", 0);
            let _ = used_ranges_of(&fs);
            let _ = fs.mkdir("/x/y", true, &NewAttrs::default());
            let _ = fs.put("/a/f3", &mut &b"abc"[..], 3, &NewAttrs::default());
            let _ = fs.set_xattr("/a/f4", "user.k", b"v");
            let _ = fs.remove("/a", true);
        }
    }
}

fn used_ranges_of(
    fs: &Ext4Fs<crate::block::MemDevice>,
) -> crate::Result<Vec<std::ops::Range<u64>>> {
    fs.used_byte_ranges()
}

#[test]
fn fragmented_free_space_gives_deep_extent_trees() {
    for opts in [
        &[][..],
        &["-b", "4096", "-O", "^metadata_csum,^64bit,uninit_bg"][..],
    ] {
        let img = mkfs(48, opts);
        let mut fs = open(&img.path);
        let bs = fs.details().block_size as usize;
        fs.mkdir("/frag", false, &NewAttrs::default()).unwrap();
        // Checkerboard the free space: one-block files, every other one removed.
        for i in 0..1200 {
            put(&mut fs, &format!("/frag/{i}"), &pattern(bs, i as u8));
        }
        for i in (0..1200).step_by(2) {
            fs.remove(&format!("/frag/{i}"), false).unwrap();
        }
        fsck(&img.path);
        // Bigger than all the contiguous space: must use the holes too.
        let free = (fs.details().free_blocks as usize - 64) * bs;
        let data = pattern(free, 77);
        put(&mut fs, "/big", &data);
        fsck(&img.path);
        let st = fs.stat("/big").unwrap();
        assert!(st.extents.len() > 4, "only {} extents", st.extents.len());
        assert_eq!(cat(&fs, "/big"), data);
        let dbg = debugfs(&img.path, "stat /big");
        assert!(dbg.contains("(ETB0)") || dbg.contains("ETB"), "{dbg}");
        // Replace and remove it again: all blocks come back.
        put(&mut fs, "/big", b"tiny");
        fsck(&img.path);
        fs.remove("/big", false).unwrap();
        fs.remove("/frag", true).unwrap();
        fsck(&img.path);
    }
}

#[test]
fn big_file_across_uninit_groups() {
    let img = mkfs(128, &[]);
    let mut fs = open(&img.path);
    let data = pattern(50 << 20, 5);
    put(&mut fs, "/fifty", &data);
    fsck(&img.path);
    assert_eq!(cat(&fs, "/fifty"), data);
    let out = Command::new("debugfs")
        .args(["-R", "dump /fifty /dev/stdout"])
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(out.stdout == data, "debugfs reads different bytes");
}

#[test]
fn two_kib_blocks() {
    exercise(&["-b", "2048"]);
}

#[test]
fn htree_with_a_full_root_becomes_linear_and_stays_valid() {
    let long = "n".repeat(200);
    let img = htree_image_named(&["-O", "^metadata_csum"], 300, &long);
    let mut fs = open(&img.path);
    let mut became_linear = false;
    for i in 0..700 {
        put(&mut fs, &format!("/big/{long}-new-{i:04}"), b"n");
        if i % 50 == 49 {
            fsck(&img.path);
            became_linear |= !debugfs(&img.path, "htree /big").contains("Root node dump");
        }
    }
    assert!(became_linear, "the root never filled up");
    assert_eq!(fs.list("/big").unwrap().len(), 1000);
    assert_eq!(
        count_name(&img.path, "/big", &format!("{long}-new-0000")),
        1
    );
}

#[test]
fn inode_flags_are_named_as_lsattr_names_them() {
    let img = mkfs(8, &["-b", "4096"]);
    let mut fs = open(&img.path);
    for name in ["/s", "/i", "/a"] {
        put(&mut fs, name, b"x");
    }
    drop(fs);
    for (name, flags) in [("/s", "0x80008"), ("/i", "0x80010"), ("/a", "0x800a0")] {
        let req = format!("set_inode_field {name} flags {flags}");
        Command::new("debugfs")
            .args(["-w", "-R", &req])
            .arg(&img.path)
            .output()
            .unwrap();
    }
    fsck(&img.path);
    let fs = open(&img.path);
    assert_eq!(fs.stat("/s").unwrap().flags, vec!["sync", "extents"]);
    assert_eq!(fs.stat("/i").unwrap().flags, vec!["immutable", "extents"]);
    assert_eq!(
        fs.stat("/a").unwrap().flags,
        vec!["append", "noatime", "extents"]
    );
}

#[test]
fn newer_features_orphan_file_csum_seed_large_dir() {
    exercise(&[
        "-b",
        "4096",
        "-O",
        "orphan_file,metadata_csum_seed,large_dir",
    ]);
}

#[test]
fn times_outside_the_inode_range_are_refused() {
    for (opts, far) in [
        (&["-I", "128"][..], 4_000_000_000i64),
        (&["-b", "4096"][..], 1i64 << 34),
    ] {
        let img = mkfs(8, opts);
        let mut fs = open(&img.path);
        put(&mut fs, "/f", b"x");
        let before = bytes_of(&img.path);
        let t = crate::fs::Timestamp {
            secs: far,
            nanos: 0,
        };
        assert!(fs.set_times("/f", None, Some(t)).is_err());
        let attrs = NewAttrs {
            mtime: Some(t),
            ..NewAttrs::default()
        };
        assert!(fs.put("/g", &mut &b"y"[..], 1, &attrs).is_err());
        assert!(fs.mkdir("/d", false, &attrs).is_err());
        let old = crate::fs::Timestamp {
            secs: -(1i64 << 32),
            nanos: 0,
        };
        assert!(fs.set_times("/f", Some(old), None).is_err());
        assert!(bytes_of(&img.path) == before);
        // In range: stored exactly (past 2038 where the inode has room).
        let ok = crate::fs::Timestamp {
            secs: if far > 1 << 33 {
                5_000_000_000
            } else {
                2_000_000_000
            },
            nanos: 0,
        };
        fs.set_times("/f", Some(ok), Some(ok)).unwrap();
        assert_eq!(fs.stat("/f").unwrap().mtime, Some(ok));
        fsck(&img.path);
    }
}

/// A change of a few files leaves the backup superblocks and descriptors as
/// they were, as the kernel does; the filesystem stays clean to e2fsck.
#[test]
fn backups_are_left_alone_when_only_counts_change() {
    let img = mkfs(512, &["-b", "4096"]);
    // Group 1 (sparse_super keeps a backup there): superblock and GDT.
    let backup = 32768u64 * 4096..32770 * 4096;
    let primary_before = bytes_of(&img.path)[1024..2048].to_vec();
    let backup_before = bytes_of(&img.path)[backup.start as usize..backup.end as usize].to_vec();
    {
        let mut fs = open(&img.path);
        put(&mut fs, "/etc-hostname", b"node-1\n");
        put(&mut fs, "/big", &pattern(3 << 20, 7));
    }
    let after = bytes_of(&img.path);
    assert_ne!(
        &after[1024..2048],
        &primary_before[..],
        "the primary changed"
    );
    assert_eq!(
        &after[backup.start as usize..backup.end as usize],
        &backup_before[..],
        "a backup was rewritten for a change of free counts"
    );
    fsck(&img.path);
}

/// Which superblock fields make the backups stale: those e2fsck compares
/// and the label, not the counts or the flags the kernel keeps only in the
/// primary.
#[test]
fn backups_go_stale_only_with_shared_fields() {
    let img = mkfs(64, &[]);
    let raw = bytes_of(&img.path)[1024..2048].to_vec();
    let size = std::fs::metadata(&img.path).unwrap().len();
    let old = super::superblock::Superblock::parse(raw, size).unwrap();
    let sb = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut s = old.clone();
        edit(&mut s.raw);
        s
    };
    let stale = |edit: &dyn Fn(&mut Vec<u8>)| super::engine::backups_stale(&old, &sb(edit));
    assert!(!stale(&|r| r[0x0C] ^= 1), "free block count");
    assert!(!stale(&|r| r[0x10] ^= 1), "free inode count");
    assert!(!stale(&|r| r[0x30] ^= 1), "mount time");
    assert!(!stale(&|r| r[0x60] ^= 0x04), "needs_recovery");
    assert!(!stale(&|r| r[0x64] ^= 0x02), "large_file");
    assert!(stale(&|r| r[0x78] = b'x'), "label");
    assert!(stale(&|r| r[0x68] ^= 1), "UUID");
    assert!(stale(&|r| r[0x5C] ^= 0x08), "a compatible feature");
    assert!(stale(&|r| r[0x04] ^= 1), "block count");
}
