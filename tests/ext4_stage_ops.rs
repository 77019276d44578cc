//! The operations the stages need beyond create/replace/remove — rename,
//! mknod, inode flags, truncate, batch — and scrub mode, judged by
//! `e2fsck -fn` and `debugfs` on images made by `mkfs.ext4`; and the rule
//! that a failed change leaves the image byte-identical.

mod common;

use common::engine::with_writable;
use common::fixture::{Fixture, Variant};
use common::oracle::{self, assert_fsck_clean, Snapshot};
use imagegen::block::FileDevice;
use imagegen::fs::{ext4::Ext4Fs, FileKind, Filesystem, NewAttrs, OpenOptions, Timestamp};
use std::sync::Arc;

const VARIANTS: [Variant; 4] = [
    Variant::Defaults,
    Variant::GdtCsum,
    Variant::Block1k,
    Variant::Htree,
];

fn put(fs: &mut dyn Filesystem, path: &str, data: &[u8]) -> imagegen::Result<()> {
    fs.write_file(
        path,
        &mut &data[..],
        data.len() as u64,
        &NewAttrs::default(),
    )
}

#[test]
fn rename_moves_files_and_directories_like_rename2() {
    for v in VARIANTS {
        let fx = Fixture::new(v);
        let img = &fx.image;
        with_writable(img, |fs| {
            fs.rename("/etc/hostname", "/etc/hostname.old")?;
            fs.mkdir("/srv/a/b", true, &NewAttrs::default())?;
            put(fs, "/srv/a/b/f", b"deep\n")?;
            // A directory moves to another parent: its `..` and both link counts follow.
            fs.rename("/srv/a", "/var/log/a")?;
            // Replacing an existing file.
            fs.rename("/etc/hosts", "/etc/hostname.old")?;
            // A directory replaces an empty one.
            fs.mkdir("/empty", false, &NewAttrs::default())?;
            fs.rename("/home/pi", "/empty")
        })
        .unwrap_or_else(|e| panic!("{v:?}: {e}"));
        assert_fsck_clean(img, &format!("{v:?} after renames"));
        assert_eq!(
            oracle::cat(img, "/var/log/a/b/f").unwrap(),
            b"deep\n",
            "{v:?}"
        );
        assert_eq!(
            oracle::cat(img, "/etc/hostname.old").unwrap(),
            b"127.0.0.1\tlocalhost\n127.0.1.1\tseed-node\n"
        );
        assert!(oracle::stat(img, "/etc/hosts").is_err());
        assert!(oracle::stat(img, "/srv/a").is_err());
        assert!(oracle::stat(img, "/empty/.ssh/authorized_keys").is_ok());
        // Refusals change nothing.
        let snap = Snapshot::take(img);
        with_writable(img, |fs| {
            for (from, to) in [
                ("/var/log", "/var/log/a/inside"),
                ("/var", "/var/log/a/b"),
                ("/usr/bin/tool", "/var"),
                ("/var", "/usr/bin/tool"),
                ("/missing", "/x"),
                ("/var/log", "/empty"),
            ] {
                assert!(fs.rename(from, to).is_err(), "{v:?}: {from} -> {to}");
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(snap.differences(img), None, "{v:?}");
    }
}

#[test]
fn mknod_makes_devices_fifos_and_sockets_debugfs_reads() {
    let fx = Fixture::new(Variant::Defaults);
    let img = &fx.image;
    with_writable(img, |fs| {
        fs.mkdir("/dev", false, &NewAttrs::default())?;
        let attrs = NewAttrs {
            mode: Some(0o660),
            ..NewAttrs::default()
        };
        fs.mknod("/dev/null", FileKind::CharDevice, 1, 3, &attrs)?;
        fs.mknod("/dev/sda", FileKind::BlockDevice, 8, 0, &attrs)?;
        fs.mknod("/dev/big", FileKind::CharDevice, 300, 70000, &attrs)?;
        fs.mknod("/dev/fifo", FileKind::Fifo, 0, 0, &attrs)?;
        fs.mknod("/dev/sock", FileKind::Socket, 0, 0, &attrs)
    })
    .unwrap();
    assert_fsck_clean(img, "after mknod");
    let (out, _) = oracle::debugfs(img, "stat /dev/null");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("character special"), "{text}");
    assert!(text.contains("Device major/minor number: 01:03"), "{text}");
    let (out, _) = oracle::debugfs(img, "stat /dev/big");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("Device major/minor number: 300:70000"),
        "{text}"
    );
    let fs = common::engine::open(img, false).unwrap();
    assert_eq!(fs.stat("/dev/sda").unwrap().kind, FileKind::BlockDevice);
    assert_eq!(fs.stat("/dev/fifo").unwrap().kind, FileKind::Fifo);
    assert_eq!(fs.stat("/dev/sock").unwrap().kind, FileKind::Socket);
}

#[test]
fn flags_are_set_and_cleared_by_word() {
    let fx = Fixture::new(Variant::Defaults);
    let img = &fx.image;
    with_writable(img, |fs| {
        fs.set_flags("/etc/hostname", &["immutable", "nodump"], &[])?;
        fs.set_flags("/etc/hostname", &[], &["nodump"])
    })
    .unwrap();
    assert_fsck_clean(img, "after set_flags");
    let st = oracle::stat(img, "/etc/hostname").unwrap();
    assert_eq!(st.flags & 0x50, 0x10, "{}", st.raw);
    let snap = Snapshot::take(img);
    with_writable(img, |fs| {
        assert!(fs.set_flags("/etc/hostname", &["extents"], &[]).is_err());
        assert!(fs.set_flags("/etc/hostname", &["bogus"], &[]).is_err());
        Ok(())
    })
    .unwrap();
    assert_eq!(snap.differences(img), None);
}

#[test]
fn truncate_shrinks_and_grows_with_holes() {
    for v in VARIANTS {
        let fx = Fixture::new(v);
        let img = &fx.image;
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        with_writable(img, |fs| {
            put(fs, "/bigfile", &big)?;
            fs.truncate("/bigfile", 5000)?;
            fs.truncate("/bigfile", 9000)?;
            fs.truncate("/usr/bin/tool", 0)?;
            fs.truncate("/etc/hostname", 1 << 20)
        })
        .unwrap_or_else(|e| panic!("{v:?}: {e}"));
        assert_fsck_clean(img, &format!("{v:?} after truncate"));
        let got = oracle::cat(img, "/bigfile").unwrap();
        assert_eq!(got.len(), 9000);
        assert_eq!(&got[..5000], &big[..5000], "{v:?}");
        assert!(got[5000..].iter().all(|&b| b == 0), "{v:?}: tail not zero");
        assert!(oracle::cat(img, "/usr/bin/tool").unwrap().is_empty());
        let host = oracle::cat(img, "/etc/hostname").unwrap();
        assert_eq!(host.len(), 1 << 20);
        assert_eq!(&host[..10], b"seed-node\n");
    }
}

#[test]
fn a_batch_commits_once_and_undoes_each_failed_step() {
    let fx = Fixture::new(Variant::Defaults);
    let img = &fx.image;
    let mut fs = common::engine::open(img, true).unwrap();
    fs.batch(&mut |fs| {
        fs.mkdir("/stamp", false, &NewAttrs::default())?;
        put(fs, "/stamp/a", b"one\n")?;
        // A failing step inside: undone alone, the batch goes on.
        assert!(fs.mkdir("/stamp", false, &NewAttrs::default()).is_err());
        assert!(put(fs, "/nope/x", b"x").is_err());
        fs.rename("/stamp/a", "/stamp/b")?;
        // Reads inside the batch see its own staged data.
        let mut back = Vec::new();
        fs.read_file("/stamp/b", &mut back)?;
        assert_eq!(back, b"one\n");
        fs.symlink("/stamp/b", "/stamp/link", &NewAttrs::default())
    })
    .unwrap();
    fs.flush().unwrap();
    drop(fs);
    assert_fsck_clean(img, "after batch");
    assert_eq!(oracle::cat(img, "/stamp/b").unwrap(), b"one\n");

    // A batch whose closure fails leaves every byte as it was.
    let snap = Snapshot::take(img);
    let mut fs = common::engine::open(img, true).unwrap();
    let r = fs.batch(&mut |fs| {
        put(fs, "/stamp/c", &vec![7u8; 200_000])?;
        fs.remove("/stamp/b", false)?;
        Err(imagegen::Error::Invalid("changed my mind".into()))
    });
    assert!(r.is_err());
    drop(fs);
    assert_eq!(snap.differences(img), None);
}

#[test]
fn a_refused_put_writes_no_data() {
    for v in [Variant::Defaults, Variant::NearlyFull] {
        let fx = Fixture::new(v);
        let img = &fx.image;
        let snap = Snapshot::take(img);
        let data = vec![0xA5u8; 3 << 20];
        with_writable(img, |fs| {
            // Short source: the data would have been written before the error.
            let mut short = &data[..100_000];
            assert!(fs
                .write_file(
                    "/etc/new",
                    &mut short,
                    data.len() as u64,
                    &NewAttrs::default()
                )
                .is_err());
            // Replacing an existing file from a short source.
            let mut short = &data[..1000];
            assert!(fs
                .write_file("/usr/bin/tool", &mut short, 50_000, &NewAttrs::default())
                .is_err());
            // Too long a source.
            let mut long = &data[..];
            assert!(fs
                .write_file("/etc/hostname", &mut long, 10, &NewAttrs::default())
                .is_err());
            Ok(())
        })
        .unwrap();
        assert_eq!(snap.differences(img), None, "{v:?}");
    }
}

#[test]
fn scrub_zeroes_the_blocks_a_change_frees() {
    let fx = Fixture::new(Variant::Defaults);
    let img = &fx.image;
    let secret = b"AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ".repeat(100);
    with_writable(img, |fs| put(fs, "/root-key", &secret)).unwrap();
    let now = Timestamp {
        secs: 1_800_000_000,
        nanos: 0,
    };
    let dev = FileDevice::open_rw(img).unwrap();
    let mut fs = Ext4Fs::open_with(
        Arc::new(dev),
        OpenOptions {
            scrub: true,
            ..OpenOptions::writable(now)
        },
    )
    .unwrap();
    fs.write_file("/root-key", &mut &b"new\n"[..], 4, &NewAttrs::default())
        .unwrap();
    drop(fs);
    assert_fsck_clean(img, "after scrubbed rewrite");
    let bytes = std::fs::read(img).unwrap();
    assert!(
        !bytes.windows(24).any(|w| w == &secret[..24]),
        "the old secret survives in free space"
    );
}
