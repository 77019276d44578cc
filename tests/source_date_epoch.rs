//! `SOURCE_DATE_EPOCH` means the same to every writer: new entries get that
//! time, and a value that is not a number is refused before anything changes.

use std::path::Path;
use std::process::{Command, Output};

fn nodeimg(args: &[&str], epoch: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", epoch)
        .output()
        .unwrap()
}

fn refused(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {err}");
    assert!(
        err.contains("SOURCE_DATE_EPOCH=\"soon\" is not a number of seconds"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

fn mkfs_ext4(path: &Path) {
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F", path.to_str().unwrap(), "16M"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfs.ext4");
}

#[test]
fn every_writer_refuses_a_bad_value_and_stamps_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("hostname");
    std::fs::write(&local, "node0\n").unwrap();
    let local = local.to_str().unwrap();

    // ext4, changed in place: refused unchanged, then stamped as asked.
    let ext = dir.path().join("root.img");
    mkfs_ext4(&ext);
    let ext_s = ext.to_str().unwrap();
    let before = std::fs::read(&ext).unwrap();
    refused(&nodeimg(&["fs", "put", ext_s, local, "/hostname"], "soon"));
    assert!(
        std::fs::read(&ext).unwrap() == before,
        "ext4 image unchanged"
    );
    let out = nodeimg(&["fs", "put", ext_s, local, "/hostname"], "1700000000");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stat = Command::new("debugfs")
        .args(["-R", "stat /hostname", ext_s])
        .output()
        .unwrap();
    let stat = String::from_utf8_lossy(&stat.stdout);
    assert!(stat.contains("mtime: 0x6553f100"), "debugfs: {stat}");

    // FAT, formatted and changed: refused with nothing left behind or changed.
    let fat = dir.path().join("boot.img");
    let fat_s = fat.to_str().unwrap();
    refused(&nodeimg(
        &["fs", "mkfs", "fat", fat_s, "--size", "40MiB"],
        "soon",
    ));
    assert!(!fat.exists(), "no half-made FAT image");
    let out = nodeimg(
        &["fs", "mkfs", "fat", fat_s, "--size", "40MiB"],
        "1700000000",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = std::fs::read(&fat).unwrap();
    refused(&nodeimg(&["fs", "put", fat_s, local, "/hostname"], "soon"));
    assert!(
        std::fs::read(&fat).unwrap() == before,
        "FAT image unchanged"
    );

    // ext4 built from a tree uses the same reading of the variable.
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let built = dir.path().join("built.img");
    refused(&nodeimg(
        &[
            "fs",
            "mkfs",
            "ext4",
            built.to_str().unwrap(),
            "--size",
            "32MiB",
            "--from",
            tree.to_str().unwrap(),
        ],
        "soon",
    ));
    assert!(!built.exists(), "no half-made ext4 image");
}
