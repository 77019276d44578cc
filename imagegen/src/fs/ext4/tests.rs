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
    Ext4Fs::open(FileDevice::open_rw(path).unwrap()).unwrap()
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
