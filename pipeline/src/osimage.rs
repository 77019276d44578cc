//! An OS installed on a disk image, read and changed by the OS's own paths
//! without mounting anything and without root.
//!
//! [`OsImage::open`] reads the partition table, finds the root filesystem
//! (the ext2/3/4 partition holding `/etc/os-release`, `/usr/lib/os-release`
//! or a Nix store) and then mounts — in our own code, through
//! [`imagegen::fs::open`] on a partition [`Window`] — every partition the OS
//! itself mounts:
//!
//! - by `/etc/fstab` of the root: `PARTUUID=` (MBR `<disk id>-<NN>`, GPT
//!   partition GUID), `LABEL=`, `UUID=` (ext UUID or FAT volume id
//!   `XXXX-XXXX`) and their `/dev/disk/by-*` spellings, for vfat/ext
//!   entries (also `noauto` ones: NixOS mounts its firmware partition so);
//! - when fstab names no other partition of this disk (NixOS before its
//!   first activation has no `/etc`), the lowest-numbered FAT partition at
//!   `/boot/firmware`, where NixOS sd-images and Raspberry Pi OS keep it.
//!
//! A bare filesystem image (no partition table) is its own root.
//!
//! Paths are absolute OS paths. Symlinks are followed in our own resolver
//! (absolute targets stay inside the image, never on the host), across
//! mounts, so `/lib/systemd/system/x` works on a root where `/lib` is a
//! link to `usr/lib`. Changes go through [`OsImage::apply`] (see
//! [`crate::customise`]) and are committed together, by
//! [`OsImage::flush`] (group commit, [`Filesystem::defer_commits`]): a
//! customisation is many small changes, and one commit each would cost
//! four device flushes apiece. Changes not flushed are dropped.
//!
//! The device can be anything that is an [`BlockDevice`]: an image file
//! ([`imagegen::block::FileDevice`]) or an [`imagegen::block::Overlay`] of a
//! base, in which case the base is never written.

use crate::os::{OsFiles, OsProfile};
use crate::{Error, Result};
use imagegen::block::{BlockDevice, Window};
use imagegen::fs::{DirEntry, FileKind, Filesystem, OpenOptions, Stat};
use imagegen::inspect::FsInfo;
use imagegen::layout::{read_table, PartitionTable, Scheme};
use serde::Serialize;
use std::sync::Arc;

/// Symlinks followed while resolving one path before giving up (Linux's
/// limit).
const MAX_SYMLINKS: usize = 40;

/// One filesystem of the image and where the OS mounts it.
pub(crate) struct Mount {
    pub(crate) info: MountInfo,
    pub(crate) fs: Box<dyn Filesystem>,
}

/// Where a partition's filesystem is mounted, for manifests and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountInfo {
    /// Mount point (`/`, `/boot/firmware`).
    pub point: String,
    /// Partition number; `None` for a bare filesystem image.
    pub partition: Option<u32>,
    /// `ext4`, `fat32`, …
    pub fs: String,
    pub label: Option<String>,
    /// ext UUID or FAT volume id.
    pub uuid: Option<String>,
}

/// A user of the image's `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// What a path names, as far as resolution cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Dir,
    File { size: u64 },
    Symlink(String),
    Other(FileKind),
}

/// `lstat` by canonical path (no symlink among the ancestors): what path
/// resolution needs from a tree.
pub(crate) trait Lookup {
    fn lstat_node(&self, path: &str) -> Result<Option<Node>>;
}

/// An OS on a disk image; see the module documentation.
pub struct OsImage {
    disk: Arc<dyn BlockDevice>,
    table: PartitionTable,
    /// Longest mount point first, so routing takes the deepest match.
    pub(crate) mounts: Vec<Mount>,
    profile: OsProfile,
    /// The time given to everything written (the open options' `now`).
    pub(crate) now: imagegen::fs::Timestamp,
}

impl std::fmt::Debug for OsImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsImage")
            .field("disk", &self.disk.describe())
            .field("mounts", &self.mounts())
            .field("profile", &self.profile)
            .finish()
    }
}

impl OsImage {
    /// Reads the partition table of `disk`, finds the root filesystem and the
    /// partitions it mounts, opens each with `opts`, and detects the OS.
    pub fn open(disk: Arc<dyn BlockDevice>, opts: OpenOptions) -> Result<OsImage> {
        let mut image = Self::open_mounts(disk, opts)?;
        image.profile = OsProfile::detect(&image)?;
        Ok(image)
    }

    /// [`open`](Self::open) for a disk whose OS is already known — the same
    /// base opened again for the next node through a fresh overlay — so the
    /// detection (os-release, network stack, cloud-init, …) runs once per
    /// base, not once per node.
    pub fn open_as(
        disk: Arc<dyn BlockDevice>,
        opts: OpenOptions,
        profile: OsProfile,
    ) -> Result<OsImage> {
        let mut image = Self::open_mounts(disk, opts)?;
        image.profile = profile;
        Ok(image)
    }

    /// The partition table and the mounted filesystems; the profile is a
    /// placeholder until the caller sets it.
    fn open_mounts(disk: Arc<dyn BlockDevice>, opts: OpenOptions) -> Result<OsImage> {
        let table = read_table(&*disk)?;
        let what = disk.describe();
        let mut candidates: Vec<(Option<u32>, Arc<dyn BlockDevice>)> = Vec::new();
        if table.scheme == Scheme::None {
            candidates.push((None, disk.clone()));
        } else {
            for p in table.partitions.iter().filter(|p| !p.kind.is_extended()) {
                let w: Arc<dyn BlockDevice> = Arc::new(Window::new(disk.clone(), p.start, p.size)?);
                candidates.push((Some(p.number), w));
            }
        }
        // Identify every partition; one we cannot read is only an error if
        // the OS mounts it.
        let mut parts = Vec::new();
        for (number, dev) in candidates {
            let info = imagegen::inspect::probe(&*dev, &dev.describe());
            parts.push((number, dev, info));
        }
        let mut root: Option<Mount> = None;
        let mut root_index = None;
        for (i, (number, dev, info)) in parts.iter().enumerate() {
            let Ok(FsInfo::Ext(ext)) = info else { continue };
            let fs = open_fs(dev, opts)?;
            let has = |p: &str| exists_in(&*fs, p);
            if has("/etc/os-release")? || has("/usr/lib/os-release")? || has("/nix/store")? {
                root = Some(Mount {
                    info: MountInfo {
                        point: "/".into(),
                        partition: *number,
                        fs: fs.kind(),
                        label: ext.label.clone(),
                        uuid: Some(ext.uuid.clone()),
                    },
                    fs,
                });
                root_index = Some(i);
                break;
            }
        }
        let (Some(root), Some(root_index)) = (root, root_index) else {
            return Err(Error::refused(
                what,
                format!(
                    "no root filesystem found (an ext2/3/4 partition with /etc/os-release, /usr/lib/os-release or /nix/store); partitions: {}",
                    table.summary()
                ),
            ));
        };
        let mut fstab = Vec::new();
        if root.fs.stat("/etc/fstab").is_ok() {
            let mut buf = Vec::new();
            root.fs.read_file("/etc/fstab", &mut buf)?;
            fstab = parse_fstab(&String::from_utf8_lossy(&buf));
        }
        let mut mounts = vec![root];
        let mut used = vec![root_index];
        for entry in &fstab {
            if entry.point == "/" || !entry.point.starts_with('/') {
                continue;
            }
            let Some(i) = parts
                .iter()
                .position(|(number, _, info)| matches_spec(&entry.spec, &table, *number, info))
            else {
                continue;
            };
            if used.contains(&i) || mounts.iter().any(|m| m.info.point == entry.point) {
                continue;
            }
            used.push(i);
            mounts.push(mount_part(&parts[i], &entry.point, opts)?);
        }
        if mounts.len() == 1 {
            let fat = parts
                .iter()
                .position(|(_, _, info)| matches!(info, Ok(FsInfo::Fat(_))));
            if let Some(i) = fat {
                mounts.push(mount_part(&parts[i], "/boot/firmware", opts)?);
            }
        }
        mounts.sort_by(|a, b| {
            b.info
                .point
                .len()
                .cmp(&a.info.point.len())
                .then(a.info.point.cmp(&b.info.point))
        });
        Ok(OsImage {
            disk,
            table,
            mounts,
            profile: OsProfile::NixOs { version: None },
            now: opts.now,
        })
    }

    /// The OS detected at open.
    pub fn profile(&self) -> &OsProfile {
        &self.profile
    }

    /// The disk's partition table.
    pub fn table(&self) -> &PartitionTable {
        &self.table
    }

    /// The mounted filesystems, deepest mount point first.
    pub fn mounts(&self) -> Vec<MountInfo> {
        self.mounts.iter().map(|m| m.info.clone()).collect()
    }

    /// The contents of the file at `path` (symlinks followed); `None` when
    /// nothing is there.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(canon) = resolve_existing(self, path, true)? else {
            return Ok(None);
        };
        match self.lstat_node(&canon)? {
            None => Ok(None),
            Some(Node::File { .. }) => {
                let (m, inner) = self.route(&canon);
                let mut buf = Vec::new();
                self.mounts[m]
                    .fs
                    .read_file(&inner, &mut buf)
                    .map_err(|e| Error::at(path, e))?;
                Ok(Some(buf))
            }
            Some(_) => Err(Error::refused(path, "not a regular file")),
        }
    }

    /// What `path` is: symlinks among its ancestors are followed, the last
    /// component is not (like `lstat`). `None` when absent.
    pub fn stat(&self, path: &str) -> Result<Option<Stat>> {
        let Some(canon) = resolve_existing(self, path, false)? else {
            return Ok(None);
        };
        let (m, inner) = self.route(&canon);
        not_found_is_none(self.mounts[m].fs.stat(&inner))
    }

    /// The entries of a directory (symlinks followed), sorted by name.
    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        let canon = resolve(self, path, true)?;
        let (m, inner) = self.route(&canon);
        self.mounts[m]
            .fs
            .list(&inner)
            .map_err(|e| Error::at(path, e))
    }

    /// Whether `path` is a directory (symlinks followed).
    pub fn is_dir(&self, path: &str) -> Result<bool> {
        let Some(canon) = resolve_existing(self, path, true)? else {
            return Ok(false);
        };
        Ok(self.lstat_node(&canon)? == Some(Node::Dir))
    }

    /// `/etc/passwd` entry of a user: uid, gid, home.
    pub fn user(&self, name: &str) -> Result<Option<User>> {
        let Some(passwd) = self.read("/etc/passwd")? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&passwd);
        for (n, line) in text.lines().enumerate() {
            let f: Vec<&str> = line.split(':').collect();
            if f.first() != Some(&name) {
                continue;
            }
            let bad = || {
                Error::refused(
                    format!("/etc/passwd line {}", n + 1),
                    format!("entry for {name} is not NAME:PW:UID:GID:GECOS:HOME:SHELL"),
                )
            };
            if f.len() < 7 {
                return Err(bad());
            }
            return Ok(Some(User {
                name: name.to_string(),
                uid: f[2].parse().map_err(|_| bad())?,
                gid: f[3].parse().map_err(|_| bad())?,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            }));
        }
        Ok(None)
    }

    /// Which partition serves `path` (symlinks followed); `None` for a bare
    /// filesystem image.
    pub fn mount_of(&self, path: &str) -> Option<u32> {
        let canon = resolve(self, path, true).unwrap_or_else(|_| path.to_string());
        let (m, _) = self.route(&canon);
        self.mounts[m].info.partition
    }

    /// Writes back every filesystem and makes the device durable.
    pub fn flush(&mut self) -> Result<()> {
        for m in &mut self.mounts {
            m.fs.flush()?;
        }
        self.disk.flush()?;
        Ok(())
    }

    /// The mount serving the canonical path `path` and the path inside it.
    pub(crate) fn route(&self, path: &str) -> (usize, String) {
        for (i, m) in self.mounts.iter().enumerate() {
            let point = m.info.point.as_str();
            if point == "/" {
                return (i, path.to_string());
            }
            if path == point {
                return (i, "/".into());
            }
            if let Some(rest) = path.strip_prefix(point) {
                if rest.starts_with('/') {
                    return (i, rest.to_string());
                }
            }
        }
        // The root mount is always present and matches everything.
        (self.mounts.len() - 1, path.to_string())
    }

    /// Whether the filesystem serving `path` stores modes, owners and
    /// symlinks (ext) or not (FAT).
    pub(crate) fn is_unix_fs(&self, path: &str) -> bool {
        let (m, _) = self.route(path);
        self.mounts[m].info.fs.starts_with("ext")
    }

    /// The mount point `path` is, if it is one.
    pub(crate) fn is_mount_point(&self, path: &str) -> bool {
        self.mounts.iter().any(|m| m.info.point == path)
    }
}

impl Lookup for OsImage {
    fn lstat_node(&self, path: &str) -> Result<Option<Node>> {
        let (m, inner) = self.route(path);
        let Some(st) = not_found_is_none(self.mounts[m].fs.stat(&inner))? else {
            return Ok(None);
        };
        Ok(Some(match st.kind {
            FileKind::Dir => Node::Dir,
            FileKind::File => Node::File { size: st.size },
            FileKind::Symlink => Node::Symlink(st.link_target.unwrap_or_default()),
            other => Node::Other(other),
        }))
    }
}

impl OsFiles for OsImage {
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.read(path)
    }

    fn exists(&self, path: &str) -> Result<bool> {
        let Some(canon) = resolve_existing(self, path, true)? else {
            return Ok(false);
        };
        Ok(self.lstat_node(&canon)?.is_some())
    }

    fn entries(&self, path: &str) -> Result<Vec<DirEntry>> {
        let Some(canon) = resolve_existing(self, path, true)? else {
            return Ok(Vec::new());
        };
        match self.lstat_node(&canon)? {
            Some(Node::Dir) => self.list(&canon),
            _ => Ok(Vec::new()),
        }
    }
}

fn not_found_is_none<T>(r: imagegen::Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(imagegen::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn exists_in(fs: &dyn Filesystem, path: &str) -> Result<bool> {
    Ok(not_found_is_none(fs.stat(path))?.is_some())
}

/// Resolves `path` to a canonical path: every symlink among its components
/// followed inside the image (absolute targets from the image's root, `..`
/// handled), and the last one too when `follow_last`. Components that do
/// not exist are kept as written, so the result also names what is to be
/// created. A component that exists and is not a directory, with more to
/// come, is refused ("not a directory").
pub(crate) fn resolve<L: Lookup + ?Sized>(
    tree: &L,
    path: &str,
    follow_last: bool,
) -> Result<String> {
    match resolve_or_notdir(tree, path, follow_last)? {
        Ok(p) => Ok(p),
        Err(here) => Err(Error::refused(path, format!("{here} is not a directory"))),
    }
}

/// [`resolve`] for questions of existence: a path through something that
/// is not a directory does not exist (`None`), as `stat` says ENOTDIR.
pub(crate) fn resolve_existing<L: Lookup + ?Sized>(
    tree: &L,
    path: &str,
    follow_last: bool,
) -> Result<Option<String>> {
    Ok(resolve_or_notdir(tree, path, follow_last)?.ok())
}

/// The canonical path, or (inner `Err`) the component that is not a
/// directory.
fn resolve_or_notdir<L: Lookup + ?Sized>(
    tree: &L,
    path: &str,
    follow_last: bool,
) -> Result<std::result::Result<String, String>> {
    imagegen::fs::path_components(path)?;
    let mut todo: std::collections::VecDeque<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    let mut missing = false;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        cur.push(c);
        if missing {
            continue;
        }
        let last = todo.is_empty();
        let here = join(&cur);
        match tree.lstat_node(&here)? {
            None => missing = true,
            Some(Node::Dir) => {}
            Some(Node::Symlink(target)) if !last || follow_last => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(Error::refused(path, "too many levels of symbolic links"));
                }
                cur.pop();
                if target.starts_with('/') {
                    cur.clear();
                }
                for part in target.split('/').rev() {
                    todo.push_front(part.to_string());
                }
            }
            Some(_) if !last => return Ok(Err(here)),
            Some(_) => {}
        }
    }
    Ok(Ok(join(&cur)))
}

/// `/a/b` from `["a", "b"]`; `/` from nothing.
pub(crate) fn join(parts: &[String]) -> String {
    if parts.is_empty() {
        "/".into()
    } else {
        format!("/{}", parts.join("/"))
    }
}

/// Opens a filesystem, with group commit when writable.
fn open_fs(dev: &Arc<dyn BlockDevice>, opts: OpenOptions) -> Result<Box<dyn Filesystem>> {
    let mut fs = imagegen::fs::open(dev.clone(), opts)?;
    if opts.writable {
        fs.defer_commits();
    }
    Ok(fs)
}

/// Opens partition `part` for the mount point `point`.
fn mount_part(
    part: &(Option<u32>, Arc<dyn BlockDevice>, imagegen::Result<FsInfo>),
    point: &str,
    opts: OpenOptions,
) -> Result<Mount> {
    let (number, dev, info) = part;
    let info = match info {
        Ok(i) => i,
        Err(e) => {
            return Err(Error::refused(
                format!("{} (mounted at {point})", dev.describe()),
                e.to_string(),
            ))
        }
    };
    let (label, uuid) = match info {
        FsInfo::Fat(f) => (f.label.clone(), Some(f.volume_id.clone())),
        FsInfo::Ext(e) => (e.label.clone(), Some(e.uuid.clone())),
        _ => {
            return Err(Error::refused(
                format!("{} (mounted at {point})", dev.describe()),
                "holds no FAT or ext filesystem",
            ))
        }
    };
    let fs = open_fs(dev, opts)?;
    Ok(Mount {
        info: MountInfo {
            point: point.to_string(),
            partition: *number,
            fs: fs.kind(),
            label,
            uuid,
        },
        fs,
    })
}

/// One line of fstab that may name a partition of this disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FstabEntry {
    spec: String,
    point: String,
}

/// The vfat/ext (or `auto`) entries of an fstab, mount points unescaped.
fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if !matches!(
            f[2],
            "vfat" | "msdos" | "fat" | "ext2" | "ext3" | "ext4" | "auto"
        ) {
            continue;
        }
        let point = unescape_octal(f[1]);
        let point = if point.len() > 1 {
            point.trim_end_matches('/').to_string()
        } else {
            point
        };
        out.push(FstabEntry {
            spec: unescape_octal(f[0]),
            point,
        });
    }
    out
}

/// fstab's `\040`-style escapes.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the fstab `spec` names partition `number` of this disk.
fn matches_spec(
    spec: &str,
    table: &PartitionTable,
    number: Option<u32>,
    info: &imagegen::Result<FsInfo>,
) -> bool {
    let (key, value) = if let Some((k, v)) = spec.split_once('=') {
        (k.to_ascii_uppercase(), v.trim_matches('"').to_string())
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-partuuid/") {
        ("PARTUUID".into(), v.to_string())
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-label/") {
        ("LABEL".into(), unescape_octal(&v.replace("\\x20", " ")))
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-uuid/") {
        ("UUID".into(), v.to_string())
    } else {
        return false;
    };
    let Some(number) = number else { return false };
    match key.as_str() {
        "PARTUUID" => {
            let Some(p) = table.get(number) else {
                return false;
            };
            match (&table.scheme, &table.disk_id, &p.guid) {
                (Scheme::Gpt, _, Some(g)) => g.eq_ignore_ascii_case(&value),
                (Scheme::Mbr, Some(id), _) => {
                    format!("{id}-{number:02x}").eq_ignore_ascii_case(&value)
                }
                _ => false,
            }
        }
        "LABEL" => match info {
            Ok(FsInfo::Ext(e)) => e.label.as_deref() == Some(value.as_str()),
            Ok(FsInfo::Fat(f)) => f
                .label
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(&value)),
            _ => false,
        },
        "UUID" => match info {
            Ok(FsInfo::Ext(e)) => e.uuid.eq_ignore_ascii_case(&value),
            Ok(FsInfo::Fat(f)) => f.volume_id.eq_ignore_ascii_case(&value),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Tree(BTreeMap<&'static str, Node>);

    impl Lookup for Tree {
        fn lstat_node(&self, path: &str) -> Result<Option<Node>> {
            Ok(self.0.get(path).cloned())
        }
    }

    #[test]
    fn resolution_follows_links_inside_the_image() {
        let t = Tree(BTreeMap::from([
            ("/lib", Node::Symlink("usr/lib".into())),
            ("/usr", Node::Dir),
            ("/usr/lib", Node::Dir),
            ("/etc", Node::Dir),
            ("/etc/hostname", Node::File { size: 3 }),
            (
                "/etc/localtime",
                Node::Symlink("/usr/share/zoneinfo/UTC".into()),
            ),
            ("/loop", Node::Symlink("/loop".into())),
            ("/up", Node::Symlink("../../etc".into())),
        ]));
        assert_eq!(
            resolve(&t, "/lib/systemd/x", true).unwrap(),
            "/usr/lib/systemd/x"
        );
        assert_eq!(
            resolve(&t, "/etc/localtime", false).unwrap(),
            "/etc/localtime"
        );
        assert_eq!(
            resolve(&t, "/etc/localtime", true).unwrap(),
            "/usr/share/zoneinfo/UTC"
        );
        assert_eq!(resolve(&t, "/up/hostname", true).unwrap(), "/etc/hostname");
        assert!(resolve(&t, "/loop/x", true)
            .unwrap_err()
            .to_string()
            .contains("too many"));
        let e = resolve(&t, "/etc/hostname/x", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        assert!(resolve(&t, "etc", true).is_err());
    }

    #[test]
    fn fstab_entries() {
        let f = parse_fstab(
            "# c\nproc /proc proc defaults 0 0\nPARTUUID=8a438930-01  /boot/firmware  vfat defaults 0 2\nLABEL=my\\040disk /mnt/a\\040b/ ext4 defaults 0 0\n/dev/x none swap sw 0 0\n",
        );
        assert_eq!(
            f,
            vec![
                FstabEntry {
                    spec: "PARTUUID=8a438930-01".into(),
                    point: "/boot/firmware".into()
                },
                FstabEntry {
                    spec: "LABEL=my disk".into(),
                    point: "/mnt/a b".into()
                }
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn fstab_never_panics(text in "\\PC{0,400}") {
            let _ = parse_fstab(&text);
            let _ = unescape_octal(&text);
        }
    }
}
