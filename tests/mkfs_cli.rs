//! `nodeimg fs mkfs ext4` from the command line: into a file, into a
//! partition of a disk image, repacking, reproducibility, and bad input
//! (one line on stderr, non-zero exit, nothing left under the final name).

mod mkfs_support;

use mkfs_support::*;
use std::path::Path;
use std::process::{Command, Output};

fn nodeimg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("nodeimg")
}

fn ok(args: &[&str]) -> String {
    let out = nodeimg(args);
    assert!(
        out.status.success(),
        "nodeimg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail with one line on stderr containing `want`.
fn fails(args: &[&str], want: &str) {
    let out = nodeimg(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nodeimg {args:?} succeeded");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(want), "{err:?} lacks {want:?}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn into_a_partition_keeping_the_table_and_the_other_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_rich_tree(&src, 200);
    std::fs::remove_file(src.join("var/big-sparse")).unwrap();
    let disk = tmp.path().join("disk.img");
    // Old bytes everywhere, so leftovers in the new filesystem would show.
    std::fs::write(&disk, vec![0xA5u8; 96 << 20]).unwrap();
    let mut sfdisk = Command::new("sfdisk");
    sfdisk
        .arg("-q")
        .arg(&disk)
        .stdin(std::process::Stdio::piped());
    let mut child = sfdisk.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=32768, type=c\nstart=34816, type=83\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let table = run(Command::new("sfdisk").arg("--dump").arg(&disk));
    let first_part = std::fs::read(&disk).unwrap()[..34816 * 512].to_vec();

    let out = ok(&[
        "fs",
        "mkfs",
        "ext4",
        s(&disk),
        "--part",
        "2",
        "--from",
        s(&src),
    ]);
    assert!(out.contains("partition 2: ext4"), "{out}");

    assert_eq!(run(Command::new("sfdisk").arg("--dump").arg(&disk)), table);
    assert_eq!(
        &std::fs::read(&disk).unwrap()[..34816 * 512],
        &first_part[..]
    );
    let (offset, len) = (34816 * 512, (96 << 20) - 34816 * 512);
    {
        let dev = LoopDevice::new(&disk, Some((offset, len)));
        e2fsck_clean(Path::new(&dev.device));
    }
    let mount = LoopMount::new(&disk, Some((offset, len)));
    assert_same_tree(&src, mount.path(), true);

    // And back out of the partition: repack it into a file of its own.
    let alone = tmp.path().join("alone.img");
    ok(&[
        "fs",
        "mkfs",
        "ext4",
        s(&alone),
        "--size",
        "40M",
        "--from",
        s(&disk),
        "--from-part",
        "2",
    ]);
    e2fsck_clean(&alone);
    let repacked = LoopMount::new(&alone, None);
    assert_same_tree(&src, repacked.path(), true);
}

#[test]
fn reproducible_with_source_date_epoch_and_repackable() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_rich_tree(&src, 100);
    let build = |name: &str| {
        let out = tmp.path().join(name);
        let made = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
            .args([
                "fs",
                "mkfs",
                "ext4",
                s(&out),
                "--size",
                "160MiB",
                "--from",
                s(&src),
            ])
            .args(["--label", "root", "--inode-ratio", "8192"])
            .env("SOURCE_DATE_EPOCH", "1735689600")
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        out
    };
    let (a, b) = (build("a.img"), build("b.img"));
    assert_eq!(sha256(&a), sha256(&b));
    e2fsck_clean(&a);

    let repacked = tmp.path().join("repacked.img");
    ok(&[
        "fs",
        "mkfs",
        "ext4",
        s(&repacked),
        "--size",
        "64M",
        "--from",
        s(&a),
    ]);
    e2fsck_clean(&repacked);
    let before = LoopMount::new(&a, None);
    let after = LoopMount::new(&repacked, None);
    assert_same_tree(before.path(), after.path(), true);
}

#[test]
fn an_empty_filesystem_has_lost_and_found() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("empty.img");
    ok(&[
        "fs",
        "mkfs",
        "ext4",
        s(&out),
        "--size",
        "16MiB",
        "--label",
        "empty",
    ]);
    e2fsck_clean(&out);
    let ls = run(Command::new("debugfs").args(["-R", "ls -l /"]).arg(&out));
    assert!(ls.contains("lost+found"), "{ls}");
    let label = run(Command::new("e2label").arg(&out));
    assert_eq!(label.trim(), "empty");
}

#[test]
fn bad_input_gives_one_line_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), vec![7u8; 30 << 20]).unwrap();
    let out = tmp.path().join("out.img");
    let o = s(&out);

    fails(
        &["fs", "mkfs", "ext4", o, "--size", "16M", "--from", s(&src)],
        "does not fit in 16 MiB",
    );
    fails(
        &[
            "fs",
            "mkfs",
            "ext4",
            o,
            "--size",
            "16M",
            "--from",
            "/nonexistent",
        ],
        "/nonexistent",
    );
    fails(
        &["fs", "mkfs", "ext4", o, "--size", "1000000"],
        "not a multiple of 4 KiB",
    );
    fails(
        &["fs", "mkfs", "ext4", o, "--size", "4M"],
        "outside what mkext4 makes",
    );
    fails(
        &[
            "fs",
            "mkfs",
            "ext4",
            o,
            "--size",
            "16M",
            "--label",
            "a-label-longer-than-16",
        ],
        "the limit is 16",
    );
    let map = tmp.path().join("owners");
    std::fs::write(&map, "/etc 0:0\n/home/pi pi\n").unwrap();
    fails(
        &[
            "fs",
            "mkfs",
            "ext4",
            o,
            "--size",
            "64M",
            "--owner-map",
            s(&map),
        ],
        "owners:2: owner is not UID:GID",
    );
    fails(
        &["fs", "mkfs", "ext4", o, "--size", "64M", "--part", "2"],
        "out.img",
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "left behind: {left:?}");

    std::fs::write(&out, b"precious").unwrap();
    fails(
        &["fs", "mkfs", "ext4", o, "--size", "16M"],
        "already exists",
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
}

#[test]
fn a_partition_too_small_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk.img");
    std::fs::write(&disk, vec![0x5Au8; 64 << 20]).unwrap();
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=40960, type=83\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let before = sha256(&disk);
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), vec![7u8; 30 << 20]).unwrap();
    fails(
        &[
            "fs",
            "mkfs",
            "ext4",
            s(&disk),
            "--part",
            "1",
            "--from",
            s(&src),
        ],
        "does not fit in 20 MiB",
    );
    fails(
        &[
            "fs",
            "mkfs",
            "ext4",
            s(&disk),
            "--part",
            "1",
            "--size",
            "40M",
        ],
        "smaller than the",
    );
    fails(
        &["fs", "mkfs", "ext4", s(&disk), "--part", "3"],
        "no partition 3",
    );
    assert_eq!(sha256(&disk), before, "nothing written");
}
