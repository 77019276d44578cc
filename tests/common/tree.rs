//! A filesystem tree as one reader sees it, so that the model, our engine,
//! the kernel mount, debugfs and ext4-view can be compared field by field.
//! Fields a reader cannot see are `None` and are not compared.

use imagegen::fs::{FileKind, Filesystem};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One path as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obs {
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Sizes of files and symlinks (directories' sizes are layout, not content).
    pub size: Option<u64>,
    pub data: Option<Vec<u8>>,
    pub target: Option<String>,
    pub nlink: Option<u32>,
    /// Inode number (readers that show it), to check hard links.
    pub ino: Option<u64>,
    /// The model's node id: paths with the same id must share an inode.
    pub node: Option<usize>,
    /// Extended attributes outside the `system.` namespace.
    pub xattrs: Option<BTreeMap<String, Vec<u8>>>,
}

impl Obs {
    pub fn new(kind: Kind) -> Obs {
        Obs {
            kind,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            data: None,
            target: None,
            nlink: None,
            ino: None,
            node: None,
            xattrs: None,
        }
    }
}

/// Path (absolute, without the root itself) → what is there.
pub type Tree = BTreeMap<String, Obs>;

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The tree below a host directory (a kernel mount or a `debugfs rdump`).
/// `with_inodes`: whether inode numbers and link counts mean anything there.
pub fn from_host(root: &Path, with_inodes: bool) -> Result<Tree, String> {
    let mut tree = Tree::new();
    walk_host(root, "/", with_inodes, &mut tree)?;
    Ok(tree)
}

fn walk_host(root: &Path, dir: &str, with_inodes: bool, tree: &mut Tree) -> Result<(), String> {
    let host_dir = root.join(dir.trim_start_matches('/'));
    let rd = std::fs::read_dir(&host_dir).map_err(|e| format!("{}: {e}", host_dir.display()))?;
    for entry in rd {
        let entry = entry.map_err(|e| format!("{}: {e}", host_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = join(dir, &name);
        let host = entry.path();
        let meta = std::fs::symlink_metadata(&host).map_err(|e| format!("{path}: {e}"))?;
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        let mut obs = Obs::new(kind);
        obs.mode = Some(meta.mode() & 0o7777);
        obs.uid = Some(meta.uid());
        obs.gid = Some(meta.gid());
        if with_inodes {
            // A live mount: inode numbers, link counts and xattrs are real.
            obs.nlink = Some(meta.nlink() as u32);
            obs.ino = Some(meta.ino());
            let mut xattrs = BTreeMap::new();
            for name in xattr::list(&host).map_err(|e| format!("{path}: listxattr: {e}"))? {
                let name = name.to_string_lossy().into_owned();
                if name.starts_with("system.") {
                    continue;
                }
                let value = xattr::get(&host, &name)
                    .map_err(|e| format!("{path}: getxattr {name}: {e}"))?
                    .unwrap_or_default();
                xattrs.insert(name, value);
            }
            obs.xattrs = Some(xattrs);
        }
        match kind {
            Kind::File => {
                obs.size = Some(meta.len());
                obs.data = Some(std::fs::read(&host).map_err(|e| format!("{path}: {e}"))?);
            }
            Kind::Symlink => {
                let t = std::fs::read_link(&host).map_err(|e| format!("{path}: {e}"))?;
                obs.size = Some(meta.len());
                obs.target = Some(t.to_string_lossy().into_owned());
            }
            _ => {}
        }
        tree.insert(path.clone(), obs);
        if kind == Kind::Dir {
            walk_host(root, &path, with_inodes, tree)?;
        }
    }
    Ok(())
}

fn kind_of(k: FileKind) -> Kind {
    match k {
        FileKind::File => Kind::File,
        FileKind::Dir => Kind::Dir,
        FileKind::Symlink => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// The tree as our own engine reads it back through the trait.
pub fn from_fs(fs: &dyn Filesystem) -> Result<Tree, String> {
    let mut tree = Tree::new();
    walk_fs(fs, "/", &mut tree)?;
    Ok(tree)
}

/// Directories with more entries than this are walked shallowly by
/// [`from_fs`]: names, kinds and sizes from the listing only (a stat per
/// entry costs a lookup each, quadratic in a debug build).
const SHALLOW_OVER: usize = 500;

fn walk_fs(fs: &dyn Filesystem, dir: &str, tree: &mut Tree) -> Result<(), String> {
    let entries = fs
        .list(dir)
        .map_err(|e| format!("engine list {dir}: {e}"))?;
    let shallow = entries.len() > SHALLOW_OVER;
    for entry in entries {
        let path = join(dir, &entry.name);
        let kind = kind_of(entry.kind);
        if shallow {
            let mut obs = Obs::new(kind);
            if kind != Kind::Dir {
                obs.size = Some(entry.size);
            }
            tree.insert(path.clone(), obs);
        } else {
            let obs = observe(fs, &path)?;
            if obs.kind != kind {
                return Err(format!(
                    "engine: {path} is listed as {:?} but stat says {:?}",
                    entry.kind, obs.kind
                ));
            }
            tree.insert(path.clone(), obs);
        }
        if kind == Kind::Dir {
            walk_fs(fs, &path, tree)?;
        }
    }
    Ok(())
}

/// The engine's full view of some paths (no walking).
pub fn from_fs_paths(fs: &dyn Filesystem, paths: &[String]) -> Result<Tree, String> {
    paths
        .iter()
        .map(|p| Ok((p.clone(), observe(fs, p)?)))
        .collect()
}

/// Everything the engine says about one path.
fn observe(fs: &dyn Filesystem, path: &str) -> Result<Obs, String> {
    let st = fs
        .stat(path)
        .map_err(|e| format!("engine stat {path}: {e}"))?;
    let kind = kind_of(st.kind);
    let mut obs = Obs::new(kind);
    obs.mode = st.mode;
    obs.uid = st.uid;
    obs.gid = st.gid;
    obs.nlink = st.nlink;
    obs.ino = st.ino;
    obs.xattrs = Some(
        st.xattrs
            .iter()
            .filter(|(n, _)| !n.starts_with("system."))
            .cloned()
            .collect(),
    );
    match kind {
        Kind::File => {
            let mut data = Vec::new();
            let n = fs
                .read_file(path, &mut data)
                .map_err(|e| format!("engine read {path}: {e}"))?;
            if n != data.len() as u64 {
                return Err(format!(
                    "engine read {path}: reported {n} bytes, gave {}",
                    data.len()
                ));
            }
            obs.size = Some(st.size);
            obs.data = Some(data);
        }
        Kind::Symlink => {
            obs.size = Some(st.size);
            obs.target = st.link_target.clone();
        }
        _ => {}
    }
    Ok(obs)
}

/// The tree as the independent `ext4-view` crate reads it.
pub fn from_ext4_view(image: &Path) -> Result<Tree, String> {
    let fs = ext4_view::Ext4::load_from_path(image).map_err(|e| format!("ext4-view load: {e}"))?;
    let mut tree = Tree::new();
    walk_view(&fs, "/", &mut tree)?;
    Ok(tree)
}

fn walk_view(fs: &ext4_view::Ext4, dir: &str, tree: &mut Tree) -> Result<(), String> {
    let rd = fs
        .read_dir(dir)
        .map_err(|e| format!("ext4-view read_dir {dir}: {e}"))?;
    for entry in rd {
        let entry = entry.map_err(|e| format!("ext4-view read_dir {dir}: {e}"))?;
        let name = entry
            .file_name()
            .as_str()
            .map_err(|e| format!("ext4-view: non-UTF-8 name in {dir}: {e}"))?
            .to_string();
        if name == "." || name == ".." {
            continue;
        }
        let path = join(dir, &name);
        let meta = fs
            .symlink_metadata(path.as_str())
            .map_err(|e| format!("ext4-view metadata {path}: {e}"))?;
        let ft = meta.file_type();
        let kind = if ft.is_regular_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        let mut obs = Obs::new(kind);
        obs.mode = Some(u32::from(meta.mode()) & 0o7777);
        obs.uid = Some(meta.uid());
        obs.gid = Some(meta.gid());
        match kind {
            Kind::File => {
                let data = fs
                    .read(path.as_str())
                    .map_err(|e| format!("ext4-view read {path}: {e}"))?;
                obs.size = Some(meta.len());
                obs.data = Some(data);
            }
            Kind::Symlink => {
                let t = fs
                    .read_link(path.as_str())
                    .map_err(|e| format!("ext4-view read_link {path}: {e}"))?;
                obs.size = Some(meta.len());
                obs.target = Some(
                    t.to_str()
                        .map_err(|e| format!("ext4-view: non-UTF-8 target of {path}: {e}"))?
                        .to_string(),
                );
            }
            _ => {}
        }
        tree.insert(path.clone(), obs);
        if kind == Kind::Dir {
            walk_view(fs, &path, tree)?;
        }
    }
    Ok(())
}

fn show_data(d: &[u8]) -> String {
    if d.len() <= 32 {
        format!("{d:?}")
    } else {
        format!("{} bytes", d.len())
    }
}

/// Differences between what the model expects and what a reader saw, one
/// line each; empty when they agree on every field both know.
pub fn diff(expected: &Tree, got: &Tree, reader: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (path, e) in expected {
        let Some(g) = got.get(path) else {
            out.push(format!(
                "{reader}: {path} is missing (expected {:?})",
                e.kind
            ));
            continue;
        };
        if e.kind != g.kind {
            out.push(format!(
                "{reader}: {path} is {:?}, expected {:?}",
                g.kind, e.kind
            ));
            continue;
        }
        let mut field = |name: &str, ev: Option<String>, gv: Option<String>| {
            if let (Some(ev), Some(gv)) = (ev, gv) {
                if ev != gv {
                    out.push(format!("{reader}: {path}: {name} is {gv}, expected {ev}"));
                }
            }
        };
        field(
            "mode",
            e.mode.map(|m| format!("{m:o}")),
            g.mode.map(|m| format!("{m:o}")),
        );
        field(
            "uid",
            e.uid.map(|v| v.to_string()),
            g.uid.map(|v| v.to_string()),
        );
        field(
            "gid",
            e.gid.map(|v| v.to_string()),
            g.gid.map(|v| v.to_string()),
        );
        field(
            "size",
            e.size.map(|v| v.to_string()),
            g.size.map(|v| v.to_string()),
        );
        field("link target", e.target.clone(), g.target.clone());
        field(
            "link count",
            e.nlink.map(|v| v.to_string()),
            g.nlink.map(|v| v.to_string()),
        );
        if let (Some(ex), Some(gx)) = (&e.xattrs, &g.xattrs) {
            if ex != gx {
                out.push(format!(
                    "{reader}: {path}: xattrs are {gx:?}, expected {ex:?}"
                ));
            }
        }
        if let (Some(ed), Some(gd)) = (&e.data, &g.data) {
            if ed != gd {
                let at = ed.iter().zip(gd.iter()).position(|(a, b)| a != b);
                out.push(format!(
                    "{reader}: {path}: contents differ (got {}, expected {}, first difference at {:?})",
                    show_data(gd),
                    show_data(ed),
                    at.or(Some(ed.len().min(gd.len())))
                ));
            }
        }
    }
    for path in got.keys() {
        if !expected.contains_key(path) {
            out.push(format!("{reader}: unexpected {path}"));
        }
    }
    // Hard links: paths of one model node share one inode, different nodes differ.
    let mut by_node: BTreeMap<usize, u64> = BTreeMap::new();
    let mut by_ino: BTreeMap<u64, usize> = BTreeMap::new();
    for (path, e) in expected {
        let (Some(node), Some(ino)) = (e.node, got.get(path).and_then(|g| g.ino)) else {
            continue;
        };
        if let Some(&prev) = by_node.get(&node) {
            if prev != ino {
                out.push(format!(
                    "{reader}: {path} should be a hard link of inode {prev}, is inode {ino}"
                ));
            }
        }
        if let Some(&prev) = by_ino.get(&ino) {
            if prev != node {
                out.push(format!(
                    "{reader}: {path} shares inode {ino} with an unrelated path"
                ));
            }
        }
        by_node.insert(node, ino);
        by_ino.insert(ino, node);
    }
    out
}
