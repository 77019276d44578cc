//! The ext4 engine never makes a filesystem worse. Images made by
//! `mkfs.ext4` are damaged the ways real images get damaged — with
//! `debugfs -w` (which re-seals every checksum, so the damage reaches the
//! write paths instead of stopping at the first checksum) and with byte
//! surgery where a bad checksum is the point — and then every write
//! operation is tried on a fresh copy. Each must either succeed with
//! `e2fsck -fn` no worse than before (its problem lines, numbers aside, a
//! subset of the earlier ones) or fail with a one-line error and the image
//! byte-identical (`cmp`).
//!
//! Lies only a scan can see (a bitmap marking a used block free, blocks
//! two files share) are caught by `Ext4Fs::check_maps`, which the CLI's
//! write verbs run first: the library cases here check the scan, the CLI
//! cases check the refusal.

mod common;

use common::fixture::{Fixture, Variant};
use common::oracle::{self, run, Snapshot};
use imagegen::block::FileDevice;
use imagegen::fs::ext4::Ext4Fs;
use imagegen::fs::{FileKind, Filesystem, NewAttrs, OpenOptions};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn nodeimg(args: &[&str]) -> std::process::Output {
    run(Command::new(env!("CARGO_BIN_EXE_nodeimg")).args(args))
}

/// Runs debugfs requests writable, one per line.
fn debugfs_w(image: &Path, requests: &[String]) {
    let script = image.with_extension("debugfs");
    std::fs::write(&script, requests.join("\n") + "\n").unwrap();
    let out = run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(image));
    assert!(out.status.success(), "debugfs {requests:?}");
    let _ = std::fs::remove_file(script);
}

/// One number from a read-only debugfs request's output, after `key`.
fn debugfs_num(image: &Path, request: &str, key: &str) -> u64 {
    let (out, _) = oracle::debugfs(image, request);
    let text = String::from_utf8_lossy(&out);
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("{request}: no {key:?} in {text}"))
        + key.len();
    text[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{request}: no number after {key:?} in {text}"))
}

/// e2fsck's problem lines with every number replaced by `N` and every path by `PATH`.
fn problems(image: &Path) -> BTreeSet<String> {
    let (_, text) = oracle::fsck(image);
    let text = text.replace(image.to_str().unwrap(), "IMAGE");
    text.lines()
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("e2fsck ")
                || l.starts_with("Pass ")
                || l.contains(" files (")
                || l.starts_with("Running additional passes"))
        })
        .map(|l| {
            // Paths differ after a rename and times after any change: the
            // problem is the same.
            let l = match (l.find("mod time"), l.rfind(')')) {
                (Some(a), Some(b)) if a < b => format!("{}{}", &l[..a], &l[b..]),
                _ => l.to_string(),
            };
            let l: Vec<String> = l
                .split(' ')
                .map(|w| {
                    if w.starts_with('/') {
                        "PATH".into()
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            let l = l.join(" ");
            let mut out = String::new();
            let mut in_num = false;
            for c in l.chars() {
                if c.is_ascii_digit() {
                    if !in_num {
                        out.push('N');
                    }
                    in_num = true;
                } else {
                    out.push(c);
                    in_num = false;
                }
            }
            out
        })
        .collect()
}

fn copy(image: &Path, to: &Path) {
    let out = run(Command::new("cp").arg("--sparse=always").arg(image).arg(to));
    assert!(out.status.success());
}

fn open_rw(image: &Path) -> imagegen::Result<Box<dyn Filesystem>> {
    common::engine::open(image, true)
}

type Step = fn(&mut dyn Filesystem) -> imagegen::Result<()>;

/// The debugfs requests that damage an image (given its path to look things up).
type Damage = fn(&Path) -> Vec<String>;

fn put(fs: &mut dyn Filesystem, path: &str, n: usize) -> imagegen::Result<()> {
    let data = vec![0x5Au8; n];
    fs.write_file(path, &mut &data[..], n as u64, &NewAttrs::default())
}

/// Every write operation the engine offers, on paths every fixture has.
fn every_write() -> Vec<(&'static str, Step)> {
    vec![
        ("put new", |fs| put(fs, "/etc/new", 8192)),
        ("put big", |fs| put(fs, "/big", 300_000)),
        ("put over", |fs| put(fs, "/usr/bin/tool", 20_000)),
        ("put over small", |fs| put(fs, "/etc/hostname", 5)),
        ("mkdir", |fs| {
            fs.mkdir("/newdir/a", true, &NewAttrs::default())
        }),
        ("rm file", |fs| fs.remove("/usr/bin/tool", false)),
        ("rm hostname", |fs| fs.remove("/etc/hostname", false)),
        ("rm -r", |fs| fs.remove("/var", true)),
        ("rm -r home", |fs| fs.remove("/home", true)),
        ("symlink", |fs| {
            fs.symlink(&"t".repeat(100), "/etc/slow-link", &NewAttrs::default())
        }),
        ("link", |fs| fs.hard_link("/etc/hostname", "/hl")),
        ("chmod", |fs| fs.set_mode("/etc/hostname", 0o600)),
        ("chown", |fs| {
            fs.set_owner("/usr/bin/tool", Some(7), Some(7))
        }),
        ("setxattr", |fs| {
            fs.set_xattr("/etc/hostname", "user.note", &[b'x'; 300])
        }),
        ("rename", |fs| fs.rename("/etc/hostname", "/etc/hostname2")),
        ("rename dir", |fs| fs.rename("/var", "/usr/var")),
        ("truncate", |fs| fs.truncate("/usr/bin/tool", 100)),
        ("mknod", |fs| {
            fs.mknod("/null", FileKind::CharDevice, 1, 3, &NewAttrs::default())
        }),
        ("chattr", |fs| fs.set_flags("/etc/hosts", &["nodump"], &[])),
        ("batch", |fs| {
            fs.batch(&mut |fs| {
                put(fs, "/etc/b1", 5000)?;
                fs.remove("/usr/bin/tool", false)?;
                fs.mkdir("/bdir", false, &NewAttrs::default())
            })
        }),
    ]
}

/// Tries every write on a fresh copy of `image`; see the module docs.
fn judge_every_write(image: &Path, case: &str) {
    let before = problems(image);
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work.img");
    for (name, step) in every_write() {
        copy(image, &work);
        let snap = Snapshot::take(&work);
        let result = open_rw(&work).and_then(|mut fs| {
            step(&mut *fs)?;
            fs.flush()
        });
        match result {
            Ok(()) => {
                let after = problems(&work);
                let new: Vec<&String> = after.difference(&before).collect();
                assert!(
                    new.is_empty(),
                    "{case}: {name} succeeded but e2fsck finds new problems: {new:?}\n(before: {before:?})"
                );
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "{case}: {name}: not one line: {msg}");
                if let Some(d) = snap.differences(&work) {
                    panic!("{case}: {name} failed ({msg}) but changed the image: {d}");
                }
            }
        }
    }
}

/// The scan's findings on `image`.
fn scan(image: &Path) -> Vec<String> {
    let dev = FileDevice::open(image).unwrap();
    let fs = Ext4Fs::open_with(dev, OpenOptions::read_only()).unwrap();
    fs.check_maps().unwrap().problems
}

/// A fresh fixture damaged by `debugfs -w` requests.
fn damaged(variant: Variant, requests: impl FnOnce(&Path) -> Vec<String>) -> Fixture {
    let fx = Fixture::new(variant);
    let reqs = requests(&fx.image);
    debugfs_w(&fx.image, &reqs);
    fx
}

/// `/usr/bin/tool`'s one extent (word 5 of `i_block`: `ee_start_lo`) set to `block`.
fn tool_extent_at(block: u64) -> Vec<String> {
    vec![format!("sif /usr/bin/tool block[5] {block}")]
}

#[test]
fn the_scan_is_clean_on_every_fixture_and_after_our_changes() {
    for v in Variant::ALL {
        let fx = Fixture::new(v);
        assert_eq!(scan(&fx.image), Vec::<String>::new(), "{v:?} as made");
        let mut fs = open_rw(&fx.image).unwrap();
        fs.batch(&mut |fs| {
            put(fs, "/scan-a", 50_000)?;
            fs.mkdir("/scan-d/e", true, &NewAttrs::default())?;
            fs.hard_link("/scan-a", "/scan-d/e/b")?;
            // Refused on inline-data directories; undone alone in the batch.
            let _ = fs.remove("/var", true);
            fs.set_xattr("/scan-a", "user.big", &[1u8; 900])?;
            fs.mknod("/scan-fifo", FileKind::Fifo, 0, 0, &NewAttrs::default())
        })
        .unwrap_or_else(|e| panic!("{v:?}: {e}"));
        fs.flush().unwrap();
        drop(fs);
        oracle::assert_fsck_clean(&fx.image, &format!("{v:?}"));
        assert_eq!(scan(&fx.image), Vec::<String>::new(), "{v:?} after changes");
        let out = nodeimg(&["fs", "check", fx.image.to_str().unwrap()]);
        assert!(out.status.success(), "{v:?}: fs check failed");
    }
}

#[test]
fn extents_into_fixed_metadata_are_refused() {
    let cases: Vec<(&str, Damage)> = vec![
        ("descriptor table", |_| tool_extent_at(1)),
        ("block bitmap", |img| {
            tool_extent_at(debugfs_num(img, "stats", "block bitmap at"))
        }),
        ("inode bitmap", |img| {
            tool_extent_at(debugfs_num(img, "stats", "inode bitmap at"))
        }),
        ("inode table", |img| {
            tool_extent_at(debugfs_num(img, "imap /etc/hostname", "located at block"))
        }),
        ("journal", |img| {
            tool_extent_at(debugfs_num(img, "bmap <8> 0", ""))
        }),
    ];
    for (name, req) in cases {
        let fx = damaged(Variant::Defaults, req);
        assert!(
            scan(&fx.image).iter().any(|p| p.contains("fixed metadata")),
            "{name}: the scan misses it"
        );
        judge_every_write(&fx.image, name);
        // The operations that free the extent are refused, not performed.
        let snap = Snapshot::take(&fx.image);
        let mut fs = open_rw(&fx.image).unwrap();
        let err = fs.remove("/usr/bin/tool", false).unwrap_err().to_string();
        assert!(err.contains("fixed metadata"), "{name}: {err}");
        drop(fs);
        assert_eq!(snap.differences(&fx.image), None, "{name}");
    }
}

#[test]
fn lies_only_a_scan_sees_are_found_and_the_cli_refuses() {
    let cases: Vec<(&str, Damage)> = vec![
        ("shared block", |img| {
            tool_extent_at(debugfs_num(img, "bmap /etc/hostname 0", ""))
        }),
        ("used block marked free", |img| {
            let b = debugfs_num(img, "bmap /usr/bin/tool 3", "");
            vec![format!("freeb {b}")]
        }),
        ("free block marked used", |img| {
            vec![format!(
                "setb {}",
                debugfs_num(img, "ffb 1 12000", "found:")
            )]
        }),
        ("entry names a free inode", |img| {
            let ino = debugfs_num(img, "stat /etc/hostname", "Inode:");
            vec![format!("freei <{ino}>")]
        }),
    ];
    for (name, req) in cases {
        let fx = damaged(Variant::Defaults, req);
        let found = scan(&fx.image);
        assert!(!found.is_empty(), "{name}: the scan finds nothing");
        let img = fx.image.to_str().unwrap();
        let out = nodeimg(&["fs", "check", img]);
        assert!(!out.status.success(), "{name}: fs check passed");
        let local = fx.scratch().join("x");
        std::fs::write(&local, b"x").unwrap();
        let snap = Snapshot::take(&fx.image);
        for args in [
            vec!["fs", "put", img, local.to_str().unwrap(), "/etc/x"],
            vec!["fs", "rm", img, "/etc/hostname"],
            vec!["fs", "mkdir", img, "/d"],
        ] {
            let out = nodeimg(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{name}: {args:?} succeeded");
            assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
            assert!(err.contains("maps disagree"), "{name}: {err}");
        }
        assert_eq!(snap.differences(&fx.image), None, "{name}");
    }
    // A bitmap marking an unowned block used only wastes it: writes through
    // the library are still no worse.
    let fx = damaged(Variant::Defaults, |img| {
        vec![format!(
            "setb {}",
            debugfs_num(img, "ffb 1 12000", "found:")
        )]
    });
    judge_every_write(&fx.image, "free block marked used");
}

#[test]
fn directory_cycles_and_linked_directories_are_refused() {
    let fx = damaged(Variant::Defaults, |_| {
        vec![
            "mkdir /var/log/deep".into(),
            "link /var /var/log/deep/up".into(),
        ]
    });
    judge_every_write(&fx.image, "cycle");
    let snap = Snapshot::take(&fx.image);
    let mut fs = open_rw(&fx.image).unwrap();
    let err = fs.remove("/var", true).unwrap_err().to_string();
    assert!(err.contains("cycle"), "{err}");
    assert!(fs.rename("/var", "/var/log/deep/inside").is_err());
    drop(fs);
    assert_eq!(snap.differences(&fx.image), None);
}

#[test]
fn counters_at_zero_one_and_beyond_are_errors_not_wraps() {
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "group free blocks 0",
            vec!["set_bg 0 free_blocks_count 0".into()],
        ),
        (
            "group free blocks 1",
            vec!["set_bg 0 free_blocks_count 1".into()],
        ),
        (
            "group free inodes 0",
            vec!["set_bg 0 free_inodes_count 0".into()],
        ),
        (
            "group free inodes all",
            vec!["set_bg 0 free_inodes_count 8192".into()],
        ),
        ("group dirs 0", vec!["set_bg 0 used_dirs_count 0".into()]),
        (
            "itable_unused huge",
            vec!["set_bg 0 itable_unused 65535".into()],
        ),
        ("itable_unused 0", vec!["set_bg 0 itable_unused 0".into()]),
        ("sb free blocks 0", vec!["ssv free_blocks_count 0".into()]),
        ("sb free inodes 1", vec!["ssv free_inodes_count 1".into()]),
        (
            "sb free blocks huge",
            vec!["ssv free_blocks_count 4000000000".into()],
        ),
    ];
    for (name, reqs) in cases {
        let fx = damaged(Variant::Defaults, |_| reqs.clone());
        judge_every_write(&fx.image, name);
    }
}

/// Flips one byte at `offset` (no re-sealing: a bad checksum is the point).
fn flip(image: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x55;
    f.write_all_at(&b, offset).unwrap();
}

#[test]
fn bad_checksums_on_each_block_kind_are_refused_unchanged() {
    let bs = 4096u64;
    // Directory leaf: the checksum in /etc's tail.
    let fx = Fixture::new(Variant::Defaults);
    let b = debugfs_num(&fx.image, "bmap /etc 0", "");
    flip(&fx.image, b * bs + bs - 1);
    judge_every_write(&fx.image, "dir leaf checksum");
    let fs = common::engine::open(&fx.image, false).unwrap();
    assert!(
        fs.list("/etc").is_err(),
        "a bad leaf is read without complaint"
    );
    drop(fs);

    // htree index root: a hash in the dx_root entries.
    let fx = Fixture::new(Variant::Htree);
    let b = debugfs_num(&fx.image, "bmap /big 0", "");
    flip(&fx.image, b * bs + 0x20 + 8);
    judge_every_write(&fx.image, "htree root checksum");
    let mut fs = open_rw(&fx.image).unwrap();
    assert!(put(&mut *fs, "/big/new-entry", 10).is_err());
    drop(fs);

    // Inode: /etc/hostname's generation.
    let fx = Fixture::new(Variant::Defaults);
    let blk = debugfs_num(&fx.image, "imap /etc/hostname", "located at block");
    let (out, _) = oracle::debugfs(&fx.image, "imap /etc/hostname");
    let text = String::from_utf8_lossy(&out);
    let off = text
        .split("offset 0x")
        .nth(1)
        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
        .unwrap();
    flip(&fx.image, blk * bs + off + 0x64);
    judge_every_write(&fx.image, "inode checksum");

    // Extended-attribute block.
    let fx = Fixture::new(Variant::Defaults);
    with_rw(&fx.image, |fs| {
        fs.set_xattr("/etc/hosts", "user.big", &[7u8; 2000])
    });
    let acl = debugfs_num(&fx.image, "stat /etc/hosts", "File ACL:");
    assert!(acl != 0);
    flip(&fx.image, acl * bs + 0x40);
    judge_every_write(&fx.image, "xattr block checksum");
    let fs = common::engine::open(&fx.image, false).unwrap();
    assert!(fs.get_xattr("/etc/hosts", "user.big").is_err());
    drop(fs);

    // Extent tree block: a file fragmented enough to need one.
    let fx = Fixture::new(Variant::Fragmented);
    with_rw(&fx.image, |fs| put(fs, "/frag/long", 200 * 1024));
    let depth = oracle::extent_depth(&fx.image, "/frag/long").unwrap();
    assert!(depth >= 1, "no tree below the inode");
    let (out, _) = oracle::debugfs(&fx.image, "stat /frag/long");
    let text = String::from_utf8_lossy(&out);
    // "(ETB0):1234" names the first tree block.
    let etb: u64 = text
        .split("(ETB0):")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ETB0 in {text}"));
    flip(&fx.image, etb * 1024 + 20);
    judge_every_write(&fx.image, "extent block checksum");
    let mut fs = open_rw(&fx.image).unwrap();
    assert!(fs.remove("/frag/long", false).is_err());
    drop(fs);

    // Block bitmap.
    let fx = Fixture::new(Variant::Defaults);
    let bb = debugfs_num(&fx.image, "stats", "block bitmap at");
    flip(&fx.image, bb * bs + 1000);
    judge_every_write(&fx.image, "block bitmap checksum");
}

fn with_rw(image: &Path, f: impl FnOnce(&mut dyn Filesystem) -> imagegen::Result<()>) {
    common::engine::with_writable(image, f).unwrap();
}

#[test]
fn attribute_values_in_inodes_without_the_feature_are_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let img: PathBuf = dir.path().join("ea.img");
    common::fixture::mkfs(&img, 32, &["-T", "default", "-O", "ea_inode"], None).unwrap();
    let value = dir.path().join("value");
    // Larger than an attribute block holds, so debugfs puts it in an inode.
    std::fs::write(&value, vec![b'v'; 6000]).unwrap();
    debugfs_w(
        &img,
        &[
            "write /dev/null /f".into(),
            format!("ea_set -f {} /f user.big", value.display()),
        ],
    );
    // On the ea_inode filesystem the value is readable, as debugfs reads it.
    let expected = oracle::xattr(&img, "/f", "user.big").unwrap().unwrap();
    assert!(expected.len() > 4000);
    let fs = common::engine::open(&img, false).unwrap();
    assert_eq!(fs.get_xattr("/f", "user.big").unwrap(), Some(expected));
    drop(fs);
    // Without the feature, the reference is refused, never dropped. With
    // i_blocks charged for the value's inode, as e2fsck counts it, the
    // filesystem is clean (f_ea_inode_no_feature's situation).
    debugfs_w(
        &img,
        &["feature -ea_inode".into(), "sif /f blocks 8".into()],
    );
    oracle::fsck_clean(&img).unwrap();
    let snap = Snapshot::take(&img);
    let mut fs = open_rw(&img).unwrap();
    // Rewriting the file would leave i_blocks without that charge.
    let err = fs
        .write_file("/f", &mut &b"hello\n"[..], 6, &NewAttrs::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("lacks ea_inode"), "{err}");
    assert!(fs.set_xattr("/f", "user.other", b"x").is_err());
    assert!(fs.remove_xattr("/f", "user.big").is_err());
    assert!(fs.remove("/f", false).is_err());
    assert!(fs.stat("/f").is_err());
    drop(fs);
    assert_eq!(snap.differences(&img), None);
    oracle::fsck_clean(&img).unwrap();
}

#[test]
fn truncated_images_are_refused_unchanged() {
    let fx = Fixture::new(Variant::Defaults);
    let len = std::fs::metadata(&fx.image).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&fx.image)
        .unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let snap = Snapshot::take(&fx.image);
    assert!(open_rw(&fx.image).is_err());
    let img = fx.image.to_str().unwrap();
    let out = nodeimg(&["fs", "mkdir", img, "/x"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .trim_end()
            .lines()
            .count(),
        1
    );
    assert_eq!(snap.differences(&fx.image), None);
}

#[test]
fn a_bare_filesystem_with_55_aa_is_a_filesystem_not_an_empty_disk() {
    let fx = Fixture::new(Variant::Defaults);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&fx.image)
            .unwrap();
        f.write_all_at(&[0x55, 0xAA], 510).unwrap();
    }
    let img = fx.image.to_str().unwrap();
    let out = nodeimg(&["fs", "ls", img, "/etc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hostname"));
    let out = nodeimg(&["fs", "mkdir", img, "/after-55aa"]);
    assert!(out.status.success());
    oracle::assert_fsck_clean(&fx.image, "after mkdir on a 55 AA image");
}

#[test]
fn ext3_with_quota_is_ext4_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("q.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(32 << 20).unwrap();
    drop(f);
    let out = run(Command::new("mkfs.ext3")
        .args(["-q", "-F", "-O", "quota"])
        .arg(&img));
    assert!(out.status.success());
    let dev = FileDevice::open(&img).unwrap();
    assert_eq!(
        imagegen::fs::probe(&dev).unwrap(),
        Some(imagegen::fs::FsType::Ext4)
    );
    let fs = Ext4Fs::open_with(dev, OpenOptions::read_only()).unwrap();
    assert_eq!(fs.details().kind, "ext4");
    let out = nodeimg(&["inspect", img.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ext4") && !text.contains("ext3"), "{text}");
}
