//! Helpers for the customisation tests: open a fixture copy as an
//! `OsImage`, read results back with independent tools (`debugfs`,
//! `mtype`, `e2fsck`, `fsck.vfat`) by partition offset.
#![allow(dead_code)]

use imagegen::block::{BlockDevice, FileDevice};
use imagegen::fs::{OpenOptions, Timestamp};
use pipeline::osimage::OsImage;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// A fixed time for every write, so results do not depend on the clock.
pub const NOW: Timestamp = Timestamp {
    secs: 1_767_225_600,
    nanos: 0,
};

pub fn open_rw(img: &Path) -> OsImage {
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open_rw(img).unwrap());
    OsImage::open(dev, OpenOptions::writable(NOW)).unwrap()
}

pub fn open_ro(img: &Path) -> OsImage {
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(img).unwrap());
    OsImage::open(dev, OpenOptions::read_only()).unwrap()
}

/// `(start, size)` in bytes of partition `n` (1-based), from `sfdisk --json`.
pub fn partition(img: &Path, n: usize) -> (u64, u64) {
    let out = run(Command::new("sfdisk").arg("--json").arg(img));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &v["partitiontable"]["partitions"][n - 1];
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("oracle runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `debugfs -R REQUEST` on partition `n` of `img`.
pub fn debugfs(img: &Path, n: usize, request: &str) -> String {
    let (start, _) = partition(img, n);
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(format!("{}?offset={start}", img.display()))
        .output()
        .expect("debugfs runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file's content read by debugfs (`None` when debugfs cannot find it).
pub fn ext_cat(img: &Path, n: usize, path: &str) -> Option<String> {
    let st = debugfs(img, n, &format!("stat {path}"));
    if !st.contains("Inode:") {
        return None;
    }
    Some(debugfs(img, n, &format!("cat {path}")))
}

/// `(mode & 0o7777, uid, gid, type)` of a path, from `debugfs stat`.
pub fn ext_stat(img: &Path, n: usize, path: &str) -> Option<(u32, u32, u32, String)> {
    let st = debugfs(img, n, &format!("stat {path}"));
    let line = st.lines().find(|l| l.starts_with("Inode:"))?;
    let kind = line
        .split("Type:")
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_string();
    let mode = line.split("Mode:").nth(1)?.split_whitespace().next()?;
    let mode = u32::from_str_radix(mode, 8).ok()?;
    let owner = st.lines().find(|l| l.starts_with("User:"))?;
    let mut it = owner.split_whitespace();
    let uid = it.nth(1)?.parse().ok()?;
    let gid = it.nth(1)?.parse().ok()?;
    Some((mode & 0o7777, uid, gid, kind))
}

/// A symlink's target, from `debugfs stat` ("Fast link dest:").
pub fn ext_link(img: &Path, n: usize, path: &str) -> Option<String> {
    let st = debugfs(img, n, &format!("stat {path}"));
    let line = st.lines().find(|l| l.contains("link dest:"))?;
    let dest = line.split("link dest:").nth(1)?.trim();
    Some(dest.trim_matches('"').to_string())
}

/// Every symlink under `dir` on partition `n`: path → target, by debugfs.
pub fn ext_links(img: &Path, n: usize, dir: &str, out: &mut Vec<(String, String)>) {
    let listing = debugfs(img, n, &format!("ls -p {dir}"));
    for line in listing.lines() {
        // /ino/mode/uid/gid/name/size/
        let f: Vec<&str> = line.split('/').collect();
        if f.len() < 7 {
            continue;
        }
        let (mode, name) = (f[2], f[5]);
        if name == "." || name == ".." || name.is_empty() {
            continue;
        }
        let path = format!("{dir}/{name}");
        let mode = u32::from_str_radix(mode, 8).unwrap_or(0);
        match mode & 0o170000 {
            0o120000 => {
                let target = ext_link(img, n, &path).unwrap_or_default();
                out.push((path, target));
            }
            0o040000 => ext_links(img, n, &path, out),
            _ => {}
        }
    }
}

/// A FAT file's content by `mtype` (`None` when absent).
pub fn fat_cat(img: &Path, n: usize, path: &str) -> Option<String> {
    let (start, _) = partition(img, n);
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{start}", img.display()))
        .arg(format!("::{path}"))
        .output()
        .expect("mtype runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `e2fsck -fn` on every ext partition and `fsck.vfat -n` on every FAT one.
pub fn fsck_all(img: &Path) {
    let out = run(Command::new("sfdisk").arg("--json").arg(img));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let parts = v["partitiontable"]["partitions"].as_array().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for p in parts {
        let start = p["start"].as_u64().unwrap();
        let size = p["size"].as_u64().unwrap();
        let kind = p["type"].as_str().unwrap();
        if kind == "83" || kind.eq_ignore_ascii_case("0FC63DAF-8483-4772-8E79-3D69D8477DE4") {
            run(Command::new("e2fsck").arg("-fn").arg(format!(
                "{}?offset={}",
                img.display(),
                start * 512
            )));
        } else {
            let part = tmp.path().join("part");
            run(Command::new("dd")
                .arg(format!("if={}", img.display()))
                .arg(format!("of={}", part.display()))
                .args(["bs=512", "status=none", "conv=sparse"])
                .arg(format!("skip={start}"))
                .arg(format!("count={size}")));
            run(Command::new("fsck.vfat").arg("-n").arg(&part));
        }
    }
}

/// Whether two files have the same bytes (`cmp -s`).
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    Command::new("cmp")
        .arg("-s")
        .arg(a)
        .arg(b)
        .status()
        .expect("cmp runs")
        .success()
}
