//! Shared helpers of the `mkfs_*` tests: trees with every kind of file,
//! the oracles (`e2fsck -fn`, a read-only loop mount, `diff -r`,
//! `getfattr`) and a listing of what the kernel shows for every path.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command; panics with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `e2fsck -fn` on an image file or a device must find nothing and exit 0.
pub fn e2fsck_clean(image: &Path) {
    let out = Command::new("e2fsck")
        .args(["-fn"])
        .arg(image)
        .output()
        .expect("e2fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "e2fsck -fn {}:\n{text}",
        image.display()
    );
}

/// A read-only loop device over an image (or a byte range of one),
/// detached on drop even when the test fails.
pub struct LoopDevice {
    pub device: String,
}

impl LoopDevice {
    pub fn new(image: &Path, window: Option<(u64, u64)>) -> LoopDevice {
        let mut losetup = Command::new("losetup");
        losetup.args(["-r", "--find", "--show"]);
        if let Some((offset, len)) = window {
            losetup.args([format!("--offset={offset}"), format!("--sizelimit={len}")]);
        }
        LoopDevice {
            device: run(losetup.arg(image)).trim().to_string(),
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// A read-only mount of a read-only loop device, unmounted and detached
/// on drop even when the test fails.
pub struct LoopMount {
    pub dir: tempfile::TempDir,
    // Dropped after the unmount in `drop` below.
    device: LoopDevice,
    mounted: bool,
}

impl LoopMount {
    /// Attaches `image` (from `offset`, `len` bytes when given) read-only
    /// and mounts it read-only.
    pub fn new(image: &Path, window: Option<(u64, u64)>) -> LoopMount {
        let mut guard = LoopMount {
            dir: tempfile::tempdir().expect("mount point"),
            device: LoopDevice::new(image, window),
            mounted: false,
        };
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "ro"])
            .arg(&guard.device.device)
            .arg(guard.dir.path()));
        guard.mounted = true;
        guard
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

/// One line per path below `root` (sorted; `lost+found` left out): type
/// and mode, uid, gid, size (not for directories, whose size is a layout
/// detail), link count, device numbers, mtime, symlink target.
pub fn listing(root: &Path, with_mtime: bool) -> String {
    let mut lines = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new("lost+found") {
                continue;
            }
            let md = fs::symlink_metadata(&path).unwrap();
            if md.is_dir() {
                stack.push(path.clone());
            }
            all.push((rel, path, md));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let root_md = fs::symlink_metadata(root).unwrap();
    lines.push(format!(
        "/ mode={:o} uid={} gid={}",
        root_md.mode(),
        root_md.uid(),
        root_md.gid()
    ));
    for (rel, path, md) in all {
        let size = if md.is_dir() {
            "-".to_string()
        } else {
            md.len().to_string()
        };
        let target = if md.file_type().is_symlink() {
            fs::read_link(&path).unwrap().display().to_string()
        } else {
            String::new()
        };
        let mtime = if with_mtime {
            format!(" mtime={}.{:09}", md.mtime(), md.mtime_nsec())
        } else {
            String::new()
        };
        lines.push(format!(
            "{} mode={:o} uid={} gid={} size={size} nlink={} rdev={:x}{mtime} -> {target}",
            rel.display(),
            md.mode(),
            md.uid(),
            md.gid(),
            md.nlink(),
            md.rdev(),
        ));
    }
    lines.join("\n")
}

/// Every extended attribute below `root` as `getfattr` prints them, one
/// block per file, sorted by path so directory order does not matter.
pub fn xattr_listing(root: &Path) -> String {
    let out = Command::new("getfattr")
        .args(["-R", "-P", "-h", "-d", "-m", "-", "-e", "hex", "."])
        .current_dir(root)
        .output()
        .expect("getfattr (Debian package attr)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut blocks: Vec<String> = text
        .split("\n\n")
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty() && !b.starts_with("# file: ./lost+found"))
        .collect();
    blocks.sort();
    blocks.join("\n\n")
}

/// `diff -r` of two trees; special files of the same type on both sides
/// are not differences (diff cannot compare them; the listing does).
pub fn diff_trees(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference", "-x", "lost+found"])
        .arg(a)
        .arg(b)
        .output()
        .expect("diff");
    let text = String::from_utf8_lossy(&out.stdout);
    let real: Vec<&str> = text
        .lines()
        .filter(|line| {
            // "File X is a fifo while file Y is a fifo"
            let parts: Vec<&str> = line.split(" while file ").collect();
            !(parts.len() == 2
                && line.starts_with("File ")
                && parts[0].rsplit(" is a ").next() == parts[1].rsplit(" is a ").next())
        })
        .collect();
    assert!(
        real.is_empty(),
        "diff -r {} {}:\n{}",
        a.display(),
        b.display(),
        real.join("\n")
    );
}

/// Compares a mounted image with its source through every oracle.
pub fn assert_same_tree(source: &Path, mounted: &Path, with_mtime: bool) {
    diff_trees(source, mounted);
    let (want, got) = (listing(source, with_mtime), listing(mounted, with_mtime));
    if want != got {
        let diffs: Vec<String> = want
            .lines()
            .zip(got.lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .map(|(a, b)| format!("source: {a}\n image: {b}"))
            .collect();
        panic!(
            "listings differ ({} vs {} lines):\n{}",
            want.lines().count(),
            got.lines().count(),
            diffs.join("\n")
        );
    }
    assert_eq!(
        xattr_listing(source),
        xattr_listing(mounted),
        "xattrs differ"
    );
}

/// `security.capability` granting cap_net_raw (v2 format, as setcap writes).
pub const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// Builds a tree with every kind of file under `root` (which must not
/// exist): regular files from 0 B to a 100 MiB sparse one, a directory of
/// `wide` entries, a deep path, hard links, symlinks (short, long,
/// dangling, absolute), FIFO, socket, char and block devices, setuid,
/// setgid and sticky bits, owners, and xattrs including
/// `security.capability`. Times are fixed so listings can compare them.
pub fn make_rich_tree(root: &Path, wide: usize) {
    fs::create_dir_all(root).unwrap();
    let w = |p: &str, data: &[u8]| {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        path
    };
    w("empty", b"");
    w("one", b"1");
    w("block-minus-one", &vec![b'a'; 4095]);
    w("block", &vec![b'b'; 4096]);
    w("block-plus-one", &vec![b'c'; 4097]);
    let pattern: Vec<u8> = (0..(3 << 20) + 123)
        .map(|i: u32| (i * 7 + i / 4096) as u8)
        .collect();
    w("bin/three-megs", &pattern);

    // Sparse: 100 MiB with data at the start, in the middle and at the end.
    let big = w("var/big-sparse", b"");
    let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len(100 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(&vec![9u8; 8192], 50 << 20).unwrap();
    f.write_all_at(b"tail", (100 << 20) - 4).unwrap();
    // A hole at the start, data not block-aligned at the end.
    let holey = w("var/hole-first", b"");
    let f = fs::OpenOptions::new().write(true).open(&holey).unwrap();
    f.write_all_at(b"after a hole", 1 << 20).unwrap();
    // Entirely a hole.
    let f = fs::File::create(root.join("var/all-hole")).unwrap();
    f.set_len(5 << 20).unwrap();

    for i in 0..wide {
        w(&format!("wide/entry-{i:05}"), format!("{i}\n").as_bytes());
    }
    let mut deep = PathBuf::from("deep");
    for i in 0..40 {
        deep.push(format!("level-{i:02}-{}", "d".repeat(20)));
    }
    w(&deep.join("bottom").display().to_string(), b"deep down");
    w(&"n".repeat(255), b"longest name");

    // Hard links, within and across directories.
    let orig = w("links/original", b"shared inode");
    fs::hard_link(&orig, root.join("links/second")).unwrap();
    fs::hard_link(&orig, root.join("bin/third")).unwrap();

    symlink("original", root.join("links/short")).unwrap();
    symlink(
        "../".repeat(30) + "usr/lib/very/long/target",
        root.join("links/long"),
    )
    .unwrap();
    symlink("/nonexistent/dangling", root.join("links/dangling")).unwrap();
    symlink("/etc/hostname", root.join("links/absolute")).unwrap();

    fs::create_dir_all(root.join("dev")).unwrap();
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    nix::unistd::mkfifo(&root.join("dev/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    mknod(
        &root.join("dev/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknod(
        &root.join("dev/big-minor"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(4095, 1_000_000),
    )
    .unwrap();
    mknod(
        &root.join("dev/loop7"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        makedev(7, 7),
    )
    .unwrap();
    drop(std::os::unix::net::UnixListener::bind(root.join("dev/socket")).unwrap());

    let ping = w("bin/ping", b"#!/bin/sh\necho ping\n");
    fs::set_permissions(&ping, fs::Permissions::from_mode(0o755)).unwrap();
    xattr::set(&ping, "security.capability", &CAP_NET_RAW).unwrap();
    let su = w("bin/su", b"setuid");
    fs::set_permissions(&su, fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir_all(root.join("srv/shared")).unwrap();
    fs::set_permissions(root.join("srv/shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let noted = w("home/pi/notes", b"owned by pi");
    xattr::set(&noted, "user.comment", b"hello").unwrap();
    xattr::set(&noted, "trusted.big", &vec![b'x'; 2000]).unwrap();
    xattr::set(root.join("home/pi"), "user.dir", b"on a directory").unwrap();
    for p in ["home/pi", "home/pi/notes"] {
        std::os::unix::fs::lchown(root.join(p), Some(1000), Some(1000)).unwrap();
    }
    std::os::unix::fs::lchown(root.join("links/short"), Some(5), Some(6)).unwrap();
    std::os::unix::fs::lchown(root.join("srv/shared"), Some(0), Some(50)).unwrap();

    // Fixed times, deepest first so setting a child does not move its
    // parent's mtime afterwards.
    run(Command::new("find").arg(root).args([
        "-depth",
        "-exec",
        "touch",
        "-h",
        "-d",
        "2024-05-06 07:08:09.123456789 UTC",
        "{}",
        "+",
    ]));
}

/// SHA-256 of a file, hex.
pub fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
