//! Bad input to ext4 creation: one clear error, and nothing left under the
//! final name.

mod mkfs_support;

use imagegen::mkfs::ext4::{build_file, Ext4Options, InodePolicy};
use imagegen::tree::{DirSource, OwnerMap, TarSource};
use mkfs_support::*;
use std::path::Path;
use std::process::Command;

fn options(size: u64) -> Ext4Options {
    Ext4Options {
        size,
        label: None,
        uuid: [9; 16],
        hash_seed: None,
        inodes: InodePolicy::Auto,
        epoch: 1_750_000_000,
        clamp: None,
        owner_map: None,
    }
}

/// Builds from `tarball` into `dir/out.img`, expecting an error that
/// contains `want`, and checks that no file is left in `dir` but the
/// tarball.
fn refused(tarball: &Path, want: &str) {
    let dir = tarball.parent().unwrap();
    let out = dir.join("out.img");
    let err = TarSource::open(tarball)
        .and_then(|mut src| build_file(&mut src, &options(64 << 20), &out))
        .expect_err("must be refused");
    let text = err.to_string();
    assert!(text.contains(want), "{text:?} lacks {want:?}");
    assert!(!text.contains('\n'), "one line: {text:?}");
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != tarball.file_name().unwrap())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A directory holding one tarball made by GNU tar from `files` (paths
/// relative to a scratch tree) with extra `tar` arguments.
fn tarball(files: &[&str], extra: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let tree = tempfile::tempdir().unwrap();
    for f in files {
        let p = tree.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![b'z'; 10_000]).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("in.tar");
    run(Command::new("tar")
        .args(["--format=posix", "-cf"])
        .arg(&tar)
        .args(extra)
        .arg("-C")
        .arg(tree.path())
        .args(files));
    (dir, tar)
}

#[test]
fn a_tree_that_does_not_fit_says_how_much_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), vec![1u8; 40 << 20]).unwrap();
    let out = dir.path().join("small.img");
    let err = build_file(&mut DirSource::new(&src).unwrap(), &options(32 << 20), &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit in 32 MiB"), "{err}");
    assert!(err.contains("needs about"), "{err}");
    assert!(!out.exists());
    let needed: u64 = err
        .split("needs about ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    build_file(
        &mut DirSource::new(&src).unwrap(),
        &options(needed << 20),
        &out,
    )
    .unwrap();
    e2fsck_clean(&out);
}

#[test]
fn a_truncated_tarball_is_refused() {
    let (_dir, tar) = tarball(&["a", "b", "c"], &[]);
    let len = std::fs::metadata(&tar).unwrap().len();
    // Cut inside the data of the second file.
    let f = std::fs::OpenOptions::new().write(true).open(&tar).unwrap();
    f.set_len(len / 2).unwrap();
    refused(&tar, "truncated");
}

#[test]
fn a_truncated_compressed_tarball_is_refused() {
    let (dir, tar) = tarball(&["a", "b", "c"], &[]);
    let gz = Command::new("gzip")
        .arg("-c")
        .arg(&tar)
        .output()
        .unwrap()
        .stdout;
    std::fs::remove_file(&tar).unwrap();
    let tgz = dir.path().join("in.tar.gz");
    std::fs::write(&tgz, &gz[..gz.len() - 20]).unwrap();
    refused(&tgz, "in.tar.gz");
}

#[test]
fn entries_escaping_the_root_are_refused() {
    let (_dir, tar) = tarball(&["x/evil"], &["--transform=s,^x/,../,", "-P"]);
    refused(&tar, "escapes the tree through '..'");
    let (_dir, tar) = tarball(&["x/evil"], &["--transform=s,^x/,/etc/,", "-P"]);
    refused(&tar, "has an absolute path");
}

#[test]
fn names_longer_than_255_bytes_are_refused() {
    let long = "l".repeat(256);
    let (_dir, tar) = tarball(&["x/name"], &[&format!("--transform=s,name,{long},")]);
    refused(&tar, "has a name of 256 bytes");
}

#[test]
fn a_bad_owner_map_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("owners");
    std::fs::write(&map, "/ 0:0\n/home/pi pi:pi\n").unwrap();
    let err = OwnerMap::load(&map).unwrap_err().to_string();
    assert!(err.contains("owners:2: UID is not a number"), "{err}");
}

#[test]
fn owner_map_sets_owners_for_a_user_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("home/pi/.ssh")).unwrap();
    std::fs::write(src.join("home/pi/.ssh/authorized_keys"), "ssh-ed25519 AAAA").unwrap();
    std::fs::write(src.join("etc-file"), "x").unwrap();
    let map = tmp.path().join("owners");
    std::fs::write(&map, "# pi owns its home\n/home/pi 1000:1000\n").unwrap();
    let mut opts = options(32 << 20);
    opts.owner_map = Some(OwnerMap::load(&map).unwrap());
    let out = tmp.path().join("o.img");
    // As a user would: every owner 0:0 before the map.
    let mut source = DirSource::new(&src).unwrap().real_owners(false);
    build_file(&mut source, &opts, &out).unwrap();
    e2fsck_clean(&out);
    let stat = |p: &str| {
        run(Command::new("debugfs")
            .args(["-R", &format!("stat {p}")])
            .arg(&out))
    };
    assert!(stat("/home/pi/.ssh/authorized_keys").contains("User:  1000   Group:  1000"));
    assert!(stat("/home/pi").contains("User:  1000   Group:  1000"));
    assert!(stat("/etc-file").contains("User:     0   Group:     0"));
}
