//! An in-memory model of what an image should hold, updated by the same
//! operations the engine performs; the readers' trees are compared with it.
//!
//! Semantics modelled (the `Filesystem` trait's and the engine's documented
//! ones): a missing attribute takes the default (root-owned, files 0644,
//! directories 0755, symlinks 0777), except when a file is replaced: that
//! rewrites its inode, so hard links see the new bytes and attributes not
//! given stay, xattrs too; a symlink in the way is replaced by a new file,
//! not followed;
//! `mkdir -p` gives every directory it creates the attributes (like
//! `install -d`); an operation that fails changes nothing.

use super::ops::Op;
use super::tree::{Kind, Obs, Tree};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    File(Vec<u8>),
    Dir,
    Symlink(String),
}

/// An inode: contents and attributes shared by all its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub content: Content,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Path → node id, plus the nodes.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub entries: BTreeMap<String, usize>,
    pub nodes: Vec<Node>,
}

/// The parent directory of an absolute path (`/` for top-level names).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of an absolute path.
pub fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Model {
    /// A model of what `mke2fs -d SOURCE` puts in a fresh filesystem:
    /// the source tree with its modes and owners, plus `lost+found`.
    pub fn from_source(source: &Path) -> Model {
        let mut m = Model::default();
        m.add("/lost+found", Content::Dir, 0o700, 0, 0);
        m.scan(source, "");
        m
    }

    fn scan(&mut self, host: &Path, prefix: &str) {
        let mut names: Vec<_> = std::fs::read_dir(host)
            .expect("fixture source dir")
            .map(|e| e.expect("fixture source entry").file_name())
            .collect();
        names.sort();
        for name in names {
            let host_path = host.join(&name);
            let path = format!("{prefix}/{}", name.to_string_lossy());
            let meta = std::fs::symlink_metadata(&host_path).expect("fixture source stat");
            let (mode, uid, gid) = (meta.mode() & 0o7777, meta.uid(), meta.gid());
            if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&host_path).expect("fixture source link");
                self.add(
                    &path,
                    Content::Symlink(t.to_string_lossy().into_owned()),
                    0o777,
                    uid,
                    gid,
                );
            } else if meta.is_dir() {
                self.add(&path, Content::Dir, mode, uid, gid);
                self.scan(&host_path, &path);
            } else {
                let data = std::fs::read(&host_path).expect("fixture source file");
                self.add(&path, Content::File(data), mode, uid, gid);
            }
        }
    }

    fn add(&mut self, path: &str, content: Content, mode: u32, uid: u32, gid: u32) -> usize {
        self.nodes.push(Node {
            content,
            mode,
            uid,
            gid,
            xattrs: BTreeMap::new(),
        });
        let id = self.nodes.len() - 1;
        self.entries.insert(path.to_string(), id);
        id
    }

    pub fn node(&self, path: &str) -> Option<&Node> {
        self.entries.get(path).map(|&id| &self.nodes[id])
    }

    fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        let id = *self.entries.get(path)?;
        Some(&mut self.nodes[id])
    }

    /// Whether `path` is a directory (the root always is).
    pub fn is_dir(&self, path: &str) -> bool {
        path == "/" || matches!(self.node(path).map(|n| &n.content), Some(Content::Dir))
    }

    pub fn exists(&self, path: &str) -> bool {
        path == "/" || self.entries.contains_key(path)
    }

    /// Paths strictly below `dir`.
    pub fn below(&self, dir: &str) -> Vec<String> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// How many names the node at `path` has.
    pub fn names_of(&self, id: usize) -> usize {
        self.entries.values().filter(|&&v| v == id).count()
    }

    /// The link count the inode at `path` should have (0 when absent).
    pub fn link_count(&self, path: &str) -> u32 {
        let Some(&id) = self.entries.get(path) else {
            return 0;
        };
        match self.nodes[id].content {
            Content::File(_) => self.names_of(id) as u32,
            Content::Symlink(_) => 1,
            Content::Dir => {
                let prefix = format!("{path}/");
                2 + self
                    .entries
                    .range(prefix.clone()..)
                    .take_while(|(p, _)| p.starts_with(&prefix))
                    .filter(|(p, &c)| {
                        parent(p) == path && matches!(self.nodes[c].content, Content::Dir)
                    })
                    .count() as u32
            }
        }
    }

    /// Paths by kind, for generators.
    pub fn paths_where(&self, pred: impl Fn(&Node) -> bool) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, &id)| pred(&self.nodes[id]))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Applies `op` if it should succeed; returns whether it should.
    /// A failing operation leaves the model unchanged.
    pub fn apply(&mut self, op: &Op) -> bool {
        match op {
            Op::Put {
                path,
                data,
                mode,
                uid,
                gid,
            } => {
                if !self.is_dir(parent(path)) {
                    return false;
                }
                let new = Node {
                    content: Content::File(data.clone()),
                    mode: mode.unwrap_or(0o644),
                    uid: uid.unwrap_or(0),
                    gid: gid.unwrap_or(0),
                    xattrs: BTreeMap::new(),
                };
                match self.node(path).map(|n| &n.content) {
                    None => {
                        self.nodes.push(new);
                        let id = self.nodes.len() - 1;
                        self.entries.insert(path.clone(), id);
                        true
                    }
                    // Replacing rewrites the inode the name points to (hard
                    // links see the new bytes); attributes not given stay.
                    Some(Content::File(_)) => {
                        let node = self.node_mut(path).expect("exists");
                        node.content = new.content;
                        node.mode = mode.unwrap_or(node.mode);
                        node.uid = uid.unwrap_or(node.uid);
                        node.gid = gid.unwrap_or(node.gid);
                        true
                    }
                    // A symlink's name is taken over by a new regular file
                    // (the link is not followed).
                    Some(Content::Symlink(_)) => {
                        self.nodes.push(new);
                        let id = self.nodes.len() - 1;
                        self.entries.insert(path.clone(), id);
                        true
                    }
                    Some(Content::Dir) => false,
                }
            }
            Op::Mkdir {
                path,
                parents,
                mode,
                uid,
                gid,
            } => {
                let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
                if comps.is_empty() {
                    return *parents;
                }
                let mut prefixes = Vec::new();
                let mut cur = String::new();
                for c in &comps {
                    cur.push('/');
                    cur.push_str(c);
                    prefixes.push(cur.clone());
                }
                if !*parents {
                    if self.exists(path) || !self.is_dir(parent(path)) {
                        return false;
                    }
                } else if prefixes.iter().any(|p| self.exists(p) && !self.is_dir(p)) {
                    return false;
                }
                for p in &prefixes {
                    if self.exists(p) {
                        continue;
                    }
                    let (m, u, g) = (mode.unwrap_or(0o755), uid.unwrap_or(0), gid.unwrap_or(0));
                    self.add(p, Content::Dir, m, u, g);
                }
                true
            }
            Op::Symlink {
                target,
                path,
                uid,
                gid,
            } => {
                if self.exists(path) || !self.is_dir(parent(path)) {
                    return false;
                }
                self.add(
                    path,
                    Content::Symlink(target.clone()),
                    0o777,
                    uid.unwrap_or(0),
                    gid.unwrap_or(0),
                );
                true
            }
            Op::Link { existing, new } => {
                let Some(&id) = self.entries.get(existing) else {
                    return false;
                };
                if !matches!(self.nodes[id].content, Content::File(_))
                    || self.exists(new)
                    || !self.is_dir(parent(new))
                {
                    return false;
                }
                self.entries.insert(new.clone(), id);
                true
            }
            Op::Rm { path, recursive } => {
                if path == "/" || !self.exists(path) {
                    return false;
                }
                let below = self.below(path);
                if self.is_dir(path) && !below.is_empty() && !*recursive {
                    return false;
                }
                for p in below {
                    self.entries.remove(&p);
                }
                self.entries.remove(path);
                true
            }
            Op::Chmod { path, mode } => match self.node_mut(path) {
                Some(n) => {
                    n.mode = mode & 0o7777;
                    true
                }
                None => false,
            },
            Op::Chown { path, uid, gid } => match self.node_mut(path) {
                Some(n) => {
                    if let Some(u) = uid {
                        n.uid = *u;
                    }
                    if let Some(g) = gid {
                        n.gid = *g;
                    }
                    true
                }
                None => false,
            },
            Op::SetXattr { path, name, value } => match self.node_mut(path) {
                Some(n) => {
                    n.xattrs.insert(name.clone(), value.clone());
                    true
                }
                None => false,
            },
            Op::RmXattr { path, name } => match self.node_mut(path) {
                Some(n) => n.xattrs.remove(name).is_some(),
                None => false,
            },
        }
    }

    /// What every reader should see.
    pub fn tree(&self) -> Tree {
        let mut names: BTreeMap<usize, u32> = BTreeMap::new();
        let mut subdirs: BTreeMap<&str, u32> = BTreeMap::new();
        for (path, &id) in &self.entries {
            *names.entry(id).or_default() += 1;
            if matches!(self.nodes[id].content, Content::Dir) {
                *subdirs.entry(parent(path)).or_default() += 1;
            }
        }
        let mut tree = Tree::new();
        for (path, &id) in &self.entries {
            let node = &self.nodes[id];
            let mut obs = Obs::new(match node.content {
                Content::File(_) => Kind::File,
                Content::Dir => Kind::Dir,
                Content::Symlink(_) => Kind::Symlink,
            });
            obs.mode = Some(node.mode);
            obs.uid = Some(node.uid);
            obs.gid = Some(node.gid);
            obs.node = Some(id);
            obs.xattrs = Some(node.xattrs.clone());
            match &node.content {
                Content::File(d) => {
                    obs.size = Some(d.len() as u64);
                    obs.data = Some(d.clone());
                    obs.nlink = Some(names[&id]);
                }
                Content::Symlink(t) => {
                    obs.size = Some(t.len() as u64);
                    obs.target = Some(t.clone());
                    obs.nlink = Some(1);
                }
                Content::Dir => {
                    obs.nlink = Some(2 + subdirs.get(path.as_str()).copied().unwrap_or(0));
                }
            }
            tree.insert(path.clone(), obs);
        }
        tree
    }

    /// Paths that should carry extended attributes, with them.
    pub fn xattrs(&self) -> Vec<(String, BTreeMap<String, Vec<u8>>)> {
        self.entries
            .iter()
            .filter(|(_, &id)| !self.nodes[id].xattrs.is_empty())
            .map(|(p, &id)| (p.clone(), self.nodes[id].xattrs.clone()))
            .collect()
    }
}
