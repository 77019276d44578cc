//! The e2fsprogs oracles: `e2fsck -fn`, `debugfs -R`, `dumpe2fs -h`, plus
//! byte-exact image snapshots. They judge our engine independently of its own reader.

use std::path::Path;
use std::process::{Command, Output};

/// Runs a tool, panicking only when it cannot be started at all.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is e2fsprogs installed?)"))
}

/// Lines a clean `e2fsck -fn` prints; anything else names a problem.
fn is_clean_fsck_line(line: &str) -> bool {
    line.is_empty()
        || line.starts_with("e2fsck ")
        || line.starts_with("Pass 1: Checking inodes, blocks, and sizes")
        || line.starts_with("Pass 2: Checking directory structure")
        || line.starts_with("Pass 3: Checking directory connectivity")
        || line.starts_with("Pass 4: Checking reference counts")
        || line.starts_with("Pass 5: Checking group summary information")
        // The summary: "img: 11/8192 files (0.0% non-contiguous), 6938/32768 blocks".
        || (line.contains(" files (") && line.contains("non-contiguous), ") && line.ends_with(" blocks"))
}

/// Exit status and combined output of `e2fsck -fn IMAGE`.
pub fn fsck(image: &Path) -> (i32, String) {
    let out = run(Command::new("e2fsck").arg("-fn").arg(image));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `Ok` when `e2fsck -fn` exits 0 and prints nothing but its five passes and
/// the summary; otherwise the full output.
pub fn fsck_clean(image: &Path) -> Result<(), String> {
    let (code, text) = fsck(image);
    let problems: Vec<&str> = text.lines().filter(|l| !is_clean_fsck_line(l)).collect();
    if code == 0 && problems.is_empty() {
        Ok(())
    } else {
        Err(format!("e2fsck -fn exited {code}:\n{text}"))
    }
}

/// Panics with `context` and e2fsck's output unless the image is clean.
pub fn assert_fsck_clean(image: &Path, context: &str) {
    if let Err(e) = fsck_clean(image) {
        panic!("{context}: {e}");
    }
}

/// Runs one debugfs request read-only; returns (stdout, stderr without the banner).
pub fn debugfs(image: &Path, request: &str) -> (Vec<u8>, String) {
    let out = run(Command::new("debugfs").arg("-R").arg(request).arg(image));
    let err: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs "))
        .map(|l| format!("{l}\n"))
        .collect();
    (out.stdout, err)
}

fn debugfs_text(image: &Path, request: &str) -> Result<String, String> {
    let (out, err) = debugfs(image, request);
    if !err.trim().is_empty() {
        return Err(format!("debugfs -R '{request}': {}", err.trim()));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// What `debugfs -R 'stat PATH'` says about an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugfsStat {
    /// `regular`, `directory`, `symlink`, …
    pub kind: String,
    /// Permission bits as printed (`0o7777` range).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u32,
    pub inode: u64,
    /// The inode flags word (`0x80000` = extents, `0x10000000` = inline data).
    pub flags: u32,
    /// Target of a fast symlink (kept in the inode).
    pub fast_link: Option<String>,
    /// Access and modification time (seconds, nanoseconds), decoded from
    /// the raw `0xSECS:EXTRA` debugfs prints (extra: 2 epoch bits, 30 bits ns).
    pub atime: Option<(i64, u32)>,
    pub mtime: Option<(i64, u32)>,
    /// debugfs's whole `stat` output, for messages.
    pub raw: String,
}

/// Decodes `0x6553f100:00000000` (or `0x6553f100` without extra fields).
fn raw_time(text: &str, key: &str) -> Option<(i64, u32)> {
    let line = text.lines().find(|l| l.trim_start().starts_with(key))?;
    let value = line.trim_start()[key.len()..].split_whitespace().next()?;
    let value = value.trim_start_matches("0x");
    let (secs, extra) = match value.split_once(':') {
        Some((s, x)) => (s, u32::from_str_radix(x, 16).ok()?),
        None => (value, 0),
    };
    let secs = i64::from(u32::from_str_radix(secs, 16).ok()? as i32) + (i64::from(extra & 3) << 32);
    Some((secs, extra >> 2))
}

/// Value of `key` in a `stat` line such as `User:  1000   Group:  2000`.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    text[at..].split_whitespace().next()
}

/// `debugfs -R 'stat PATH'`, parsed.
pub fn stat(image: &Path, path: &str) -> Result<DebugfsStat, String> {
    let text = debugfs_text(image, &format!("stat \"{path}\""))?;
    let num = |key: &str| -> Result<u64, String> {
        field(&text, key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("debugfs stat {path}: no {key} in:\n{text}"))
    };
    let mode = field(&text, "Mode:")
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .ok_or_else(|| format!("debugfs stat {path}: no mode in:\n{text}"))?;
    let flags = field(&text, "Flags:")
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let fast_link = text.lines().find_map(|l| {
        let rest = l.strip_prefix("Fast link dest: \"")?;
        Some(rest.strip_suffix('"').unwrap_or(rest).to_string())
    });
    Ok(DebugfsStat {
        kind: field(&text, "Type:").unwrap_or("?").to_string(),
        mode,
        uid: num("User:")? as u32,
        gid: num("Group:")? as u32,
        size: num("Size:")?,
        links: num("Links:")? as u32,
        inode: num("Inode:")?,
        flags,
        fast_link,
        atime: raw_time(&text, "atime:"),
        mtime: raw_time(&text, "mtime:"),
        raw: text.clone(),
    })
}

/// The bytes of a file (or a slow symlink's target) by `debugfs -R 'cat PATH'`.
pub fn cat(image: &Path, path: &str) -> Result<Vec<u8>, String> {
    let (out, err) = debugfs(image, &format!("cat \"{path}\""));
    if !err.trim().is_empty() {
        return Err(format!("debugfs cat {path}: {}", err.trim()));
    }
    Ok(out)
}

/// A symlink's target as debugfs sees it (fast: from `stat`; slow: `cat`).
pub fn link_target(image: &Path, path: &str) -> Result<String, String> {
    let st = stat(image, path)?;
    if st.kind != "symlink" {
        return Err(format!(
            "{path} is a {} for debugfs, not a symlink",
            st.kind
        ));
    }
    match st.fast_link {
        Some(t) => Ok(t),
        None => Ok(String::from_utf8_lossy(&cat(image, path)?).into_owned()),
    }
}

/// One row of `debugfs -R 'ls -p DIR'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsEntry {
    pub inode: u64,
    /// Full mode, type bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    /// Empty for directories.
    pub size: String,
}

/// Every live entry of a directory (including `.` and `..`) as debugfs lists them.
pub fn ls(image: &Path, dir: &str) -> Result<Vec<LsEntry>, String> {
    let text = debugfs_text(image, &format!("ls -p \"{dir}\""))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('/')) {
        // "/ino/mode/uid/gid/name/size/"; a name cannot contain '/'.
        let parts: Vec<&str> = line.split('/').collect();
        if parts.len() < 8 {
            return Err(format!("debugfs ls -p {dir}: odd line {line:?}"));
        }
        let n = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("bad number in {line:?}"))
        };
        out.push(LsEntry {
            inode: n(parts[1])?,
            mode: u32::from_str_radix(parts[2], 8).map_err(|_| format!("bad mode in {line:?}"))?,
            uid: n(parts[3])? as u32,
            gid: n(parts[4])? as u32,
            name: parts[5].to_string(),
            size: parts[6].to_string(),
        });
    }
    Ok(out)
}

/// How many entries of `dir` are called `name` (exactly one after a replace).
pub fn count_entries(image: &Path, dir: &str, name: &str) -> Result<usize, String> {
    Ok(ls(image, dir)?.iter().filter(|e| e.name == name).count())
}

/// The names of a file's extended attributes (`debugfs -R 'ea_list PATH'`).
pub fn xattr_names(image: &Path, path: &str) -> Result<Vec<String>, String> {
    let text = debugfs_text(image, &format!("ea_list \"{path}\""))?;
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// The raw value of one extended attribute, `None` when it is absent.
pub fn xattr(image: &Path, path: &str, name: &str) -> Result<Option<Vec<u8>>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = dir.path().join("value");
    let (_, err) = debugfs(
        image,
        &format!("ea_get -f {} \"{path}\" {name}", out.display()),
    );
    if err.contains("not found") {
        return Ok(None);
    }
    if !err.trim().is_empty() {
        return Err(format!("debugfs ea_get {path} {name}: {}", err.trim()));
    }
    std::fs::read(&out)
        .map(Some)
        .map_err(|e| format!("reading ea_get output: {e}"))
}

/// Depth of a file's extent tree (0: all extents in the inode), from
/// `debugfs -R 'ex PATH'`, whose rows start with "level/ max-level".
pub fn extent_depth(image: &Path, path: &str) -> Result<u32, String> {
    let text = debugfs_text(image, &format!("ex \"{path}\""))?;
    text.lines()
        .filter_map(|l| {
            let (level, rest) = l.trim_start().split_once('/')?;
            level.parse::<u32>().ok()?;
            rest.split_whitespace().next()?.parse::<u32>().ok()
        })
        .max()
        .ok_or_else(|| format!("debugfs ex {path}: no extents in:\n{text}"))
}

/// Free blocks and free inodes from `dumpe2fs -h`.
pub fn free_counts(image: &Path) -> (u64, u64) {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(image));
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("dumpe2fs -h has no {key:?}:\n{text}"))
    };
    (get("Free blocks:"), get("Free inodes:"))
}

/// One superblock field from `dumpe2fs -h` (`Filesystem features:` …).
pub fn superblock_field(image: &Path, key: &str) -> Option<String> {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(image));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
}

/// A byte-exact copy of an image, to prove later that nothing changed.
pub struct Snapshot {
    _dir: tempfile::TempDir,
    copy: std::path::PathBuf,
}

impl Snapshot {
    /// Copies `image` (sparse, so cheap).
    pub fn take(image: &Path) -> Snapshot {
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("snapshot.img");
        let out = run(Command::new("cp")
            .arg("--sparse=always")
            .arg(image)
            .arg(&copy));
        assert!(out.status.success(), "cp {}", image.display());
        Snapshot { _dir: dir, copy }
    }

    /// `None` when `image` is byte-for-byte the snapshot, else the first
    /// differing bytes as `cmp -l` lists them.
    pub fn differences(&self, image: &Path) -> Option<String> {
        let out = run(Command::new("cmp").arg("-l").arg(&self.copy).arg(image));
        if out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().take(8).collect();
        Some(format!(
            "{} differing bytes (offset+1, old, new octal): {}",
            text.lines().count(),
            lines.join("; ")
        ))
    }
}
