//! The image as it will be after the operations planned so far: the
//! executor's checks run against this view, so every refusal happens before
//! the first byte is written, and later operations see earlier ones (a unit
//! file written by one op can be enabled by the next).

use crate::osimage::{resolve, Lookup, Node, OsImage};
use crate::{Error, Result};
use imagegen::fs::{DirEntry, FileKind, NewAttrs};
use std::collections::BTreeMap;

/// A planned state of one path.
#[derive(Debug, Clone)]
enum Change {
    File {
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// `fresh`: created by the plan (nothing of the image is below it);
    /// otherwise an existing directory whose attributes change.
    Dir {
        fresh: bool,
    },
    Symlink(String),
    Absent,
}

/// One primitive change, executed in order after planning.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Write {
        path: String,
        data: Vec<u8>,
        attrs: NewAttrs,
    },
    Mkdir {
        path: String,
        attrs: NewAttrs,
    },
    SetAttrs {
        path: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Remove {
        path: String,
    },
}

/// The image plus the planned changes.
pub(crate) struct Staged<'a> {
    pub(crate) image: &'a OsImage,
    changes: BTreeMap<String, Change>,
    pub(crate) actions: Vec<Action>,
}

impl Lookup for Staged<'_> {
    fn lstat_node(&self, path: &str) -> Result<Option<Node>> {
        // The deepest planned change at or above `path` decides.
        let mut probe = path.to_string();
        loop {
            if let Some(c) = self.changes.get(&probe) {
                if probe == path {
                    return Ok(match c {
                        Change::File { data, .. } => Some(Node::File {
                            size: data.len() as u64,
                        }),
                        Change::Dir { .. } => Some(Node::Dir),
                        Change::Symlink(t) => Some(Node::Symlink(t.clone())),
                        Change::Absent => None,
                    });
                }
                match c {
                    Change::Dir { fresh: false } => {}
                    _ => return Ok(None),
                }
            }
            // Changes above a mount point do not reach into the mount.
            if probe == "/" || self.image.is_mount_point(&probe) {
                break;
            }
            probe = parent(&probe).to_string();
        }
        self.image.lstat_node(path)
    }
}

impl<'a> Staged<'a> {
    pub(crate) fn new(image: &'a OsImage) -> Staged<'a> {
        Staged {
            image,
            changes: BTreeMap::new(),
            actions: Vec::new(),
        }
    }

    /// Resolves `path` in the planned state (see [`resolve`]).
    pub(crate) fn resolve(&self, path: &str, follow_last: bool) -> Result<String> {
        resolve(self, path, follow_last)
    }

    /// `lstat` of a canonical path in the planned state.
    pub(crate) fn node(&self, canon: &str) -> Result<Option<Node>> {
        self.lstat_node(canon)
    }

    /// The planned contents of the regular file at the canonical `canon`.
    pub(crate) fn read(&self, canon: &str) -> Result<Option<Vec<u8>>> {
        match self.node(canon)? {
            Some(Node::File { .. }) => {}
            None => return Ok(None),
            Some(_) => return Err(Error::refused(canon, "not a regular file")),
        }
        if let Some(Change::File { data, .. }) = self.changes.get(canon) {
            return Ok(Some(data.clone()));
        }
        self.image.read(canon)
    }

    /// Mode, owner and group of the regular file at `canon` as planned.
    pub(crate) fn file_attrs(&self, canon: &str) -> Result<(u32, u32, u32)> {
        if let Some(Change::File { mode, uid, gid, .. }) = self.changes.get(canon) {
            return Ok((*mode, *uid, *gid));
        }
        let st = self.image.stat(canon)?;
        Ok(match st {
            Some(st) => (
                st.mode.unwrap_or(0o644),
                st.uid.unwrap_or(0),
                st.gid.unwrap_or(0),
            ),
            None => (0o644, 0, 0),
        })
    }

    /// The planned entries of the directory at the canonical `canon`
    /// (empty when it is absent), sorted by name.
    pub(crate) fn list(&self, canon: &str) -> Result<Vec<DirEntry>> {
        if self.node(canon)? != Some(Node::Dir) {
            return Ok(Vec::new());
        }
        let fresh = self.is_fresh(canon);
        let mut out: BTreeMap<String, DirEntry> = BTreeMap::new();
        if !fresh {
            for e in self.image.list(canon)? {
                out.insert(e.name.clone(), e);
            }
        }
        let prefix = if canon == "/" {
            "/".to_string()
        } else {
            format!("{canon}/")
        };
        for (p, c) in self.changes.range(prefix.clone()..) {
            let Some(name) = p.strip_prefix(&prefix) else {
                break;
            };
            if name.contains('/') || name.is_empty() {
                continue;
            }
            let (kind, size) = match c {
                Change::Absent => {
                    out.remove(name);
                    continue;
                }
                Change::File { data, .. } => (FileKind::File, data.len() as u64),
                Change::Dir { .. } => (FileKind::Dir, 0),
                Change::Symlink(t) => (FileKind::Symlink, t.len() as u64),
            };
            out.insert(
                name.to_string(),
                DirEntry {
                    name: name.to_string(),
                    kind,
                    size,
                },
            );
        }
        Ok(out.into_values().collect())
    }

    /// Whether `canon` or one of its ancestors was created by the plan or
    /// removed by it (so the image has nothing below it that counts).
    fn is_fresh(&self, canon: &str) -> bool {
        let mut probe = canon.to_string();
        loop {
            match self.changes.get(&probe) {
                Some(Change::Dir { fresh: false }) | None => {}
                Some(_) => return true,
            }
            if probe == "/" || self.image.is_mount_point(&probe) {
                return false;
            }
            probe = parent(&probe).to_string();
        }
    }

    /// Creates the missing ancestors of the canonical `canon`, root 0755.
    pub(crate) fn ensure_parents(&mut self, canon: &str) -> Result<()> {
        let parts: Vec<&str> = canon.split('/').filter(|p| !p.is_empty()).collect();
        let mut here = String::new();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            here.push('/');
            here.push_str(part);
            match self.node(&here)? {
                Some(Node::Dir) => {}
                None => self.mkdir(&here, 0o755, 0, 0)?,
                Some(_) => {
                    return Err(Error::refused(canon, format!("{here} is not a directory")));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn write(
        &mut self,
        canon: &str,
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        match self.node(canon)? {
            Some(Node::Dir) => return Err(Error::refused(canon, "is a directory")),
            Some(Node::Symlink(_)) | Some(Node::Other(_)) => self.remove(canon)?,
            _ => {}
        }
        self.check_unix_name(canon)?;
        let attrs = self.attrs(canon, mode, uid, gid);
        self.changes.insert(
            canon.to_string(),
            Change::File {
                data: data.clone(),
                mode,
                uid,
                gid,
            },
        );
        self.actions.push(Action::Write {
            path: canon.to_string(),
            data,
            attrs,
        });
        Ok(())
    }

    pub(crate) fn mkdir(&mut self, canon: &str, mode: u32, uid: u32, gid: u32) -> Result<()> {
        let attrs = self.attrs(canon, mode, uid, gid);
        self.changes
            .insert(canon.to_string(), Change::Dir { fresh: true });
        self.actions.push(Action::Mkdir {
            path: canon.to_string(),
            attrs,
        });
        Ok(())
    }

    /// New mode and owner for an existing directory (ignored on FAT).
    pub(crate) fn set_dir_attrs(&mut self, canon: &str, mode: u32, uid: u32, gid: u32) {
        if !self.image.is_unix_fs(canon) {
            return;
        }
        self.changes
            .entry(canon.to_string())
            .or_insert(Change::Dir { fresh: false });
        self.actions.push(Action::SetAttrs {
            path: canon.to_string(),
            mode,
            uid,
            gid,
        });
    }

    pub(crate) fn symlink(&mut self, canon: &str, target: &str) -> Result<()> {
        if !self.image.is_unix_fs(canon) {
            return Err(Error::refused(
                canon,
                "a symlink cannot be stored on a FAT filesystem",
            ));
        }
        match self.node(canon)? {
            Some(Node::Dir) => return Err(Error::refused(canon, "is a directory")),
            Some(_) => self.remove(canon)?,
            None => {}
        }
        self.changes
            .insert(canon.to_string(), Change::Symlink(target.to_string()));
        self.actions.push(Action::Symlink {
            path: canon.to_string(),
            target: target.to_string(),
        });
        Ok(())
    }

    /// Removes whatever is at `canon` (a directory with its contents).
    pub(crate) fn remove(&mut self, canon: &str) -> Result<()> {
        if canon == "/" || self.image.is_mount_point(canon) {
            return Err(Error::refused(
                canon,
                "is a mount point; it cannot be removed",
            ));
        }
        let below = format!("{canon}/");
        if let Some(m) = self
            .image
            .mounts()
            .iter()
            .find(|m| m.point.starts_with(&below))
        {
            return Err(Error::refused(
                canon,
                format!("holds the mount point {}; it cannot be removed", m.point),
            ));
        }
        let doomed: Vec<String> = self
            .changes
            .range(below.clone()..)
            .take_while(|(k, _)| k.starts_with(&below))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.changes.remove(&k);
        }
        self.changes.insert(canon.to_string(), Change::Absent);
        self.actions.push(Action::Remove {
            path: canon.to_string(),
        });
        Ok(())
    }

    fn attrs(&self, canon: &str, mode: u32, uid: u32, gid: u32) -> NewAttrs {
        if self.image.is_unix_fs(canon) {
            NewAttrs {
                mode: Some(mode & 0o7777),
                uid: Some(uid),
                gid: Some(gid),
                mtime: Some(self.image.now),
            }
        } else {
            // FAT keeps no mode or owner; its times come from the open
            // options too, so the same ops at the same time give the same
            // bytes.
            NewAttrs {
                mtime: Some(self.image.now),
                ..NewAttrs::default()
            }
        }
    }

    /// Names that FAT cannot hold are refused at plan time, not halfway.
    fn check_unix_name(&self, canon: &str) -> Result<()> {
        if self.image.is_unix_fs(canon) {
            return Ok(());
        }
        let name = canon.rsplit('/').next().unwrap_or("");
        if name.chars().any(|c| c < ' ' || "\"*/:<>?\\|".contains(c)) {
            return Err(Error::refused(
                canon,
                "a FAT filesystem cannot hold this name",
            ));
        }
        Ok(())
    }
}

/// The parent of a canonical path (`/` for top-level names and `/`).
pub(crate) fn parent(canon: &str) -> &str {
    match canon.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &canon[..i],
    }
}
