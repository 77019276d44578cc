//! `manifest.json` and `SHA256SUMS` of a build's output directory.
//!
//! # `manifest.json` (format 1)
//!
//! ```json
//! {
//!   "format": 1,
//!   "tool_version": "0.1.0",
//!   "cluster": "pi5-lab", "flavour": "kubeadm", "board": "rpi5",
//!   "source_date_epoch": 1767225600,        // null when unset
//!   "secrets": "embed",                     // or "defer"
//!   "full_images": false,
//!   "state_fingerprint": "sha256:…",        // State::fingerprint: identifies, reveals nothing
//!   "inputs": [ { "what": "cluster file", "name": "cluster.toml", "sha256": "…" },
//!               { "what": "base source", "name": "raspios.img.xz", "sha256": "…" } ],
//!   "base": { "key": "sha256:…", "image": "base.img.zst", "bmap": "base.img.bmap",
//!             "manifest": { …the base manifest: board, source, firmware, layout
//!                           (disk id, partitions), os profile, customisations,
//!                           image sha256 and size… } },
//!   "nodes": [ { "hostname": "controlplane", "role": "init",
//!                "address": "192.168.1.10/24",         // null: DHCP
//!                "artefact": "nodes/controlplane.delta",
//!                "secrets": null,                      // defer: "nodes/controlplane.secrets"
//!                "key": "sha256:…",                    // incremental builds
//!                "files": [ { "action": "file", "path": "/etc/hostname",
//!                             "mode": 420, "uid": 0, "gid": 0,
//!                             "secret": false, "deferred": false } ] } ],
//!   "files": ["known_hosts"]                           // and cluster.nix on NixOS
//! }
//! ```
//!
//! Input names are file names, never absolute paths, so builds in
//! different directories give the same bytes. `files` lists every
//! operation a node's stamp executed, with mode and owner, and never any
//! content; `deferred: true` marks a secret file kept out of the artefact.
//!
//! `SHA256SUMS` lists every other file of the directory, sorted by path,
//! as `<hex>  <path>` lines (`sha256sum -c SHA256SUMS` checks them).

use super::SecretsMode;
use crate::base::manifest::BaseManifest;
use crate::customise::{Applied, Op};
use crate::file_hashes::HashCache;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// The manifest's format version.
pub const FORMAT: u32 = 1;
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The checksum list's file name.
pub const SUMS: &str = "SHA256SUMS";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildManifest {
    pub format: u32,
    pub tool_version: String,
    pub cluster: String,
    pub flavour: String,
    pub board: String,
    pub source_date_epoch: Option<i64>,
    /// Without `source_date_epoch`, in a deferred build: the time (seconds)
    /// the build stamped its nodes, which `flash` also gives the secret
    /// files it writes, so a card can be verified against the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamped_at: Option<i64>,
    pub secrets: SecretsMode,
    pub full_images: bool,
    pub state_fingerprint: String,
    pub inputs: Vec<InputRecord>,
    pub base: BaseEntry,
    pub nodes: Vec<NodeEntry>,
    /// Further files: `known_hosts`, `cluster.nix`.
    pub files: Vec<String>,
}

impl BuildManifest {
    /// Reads and checks a build's `manifest.json`.
    pub fn load(path: &Path) -> Result<BuildManifest> {
        crate::json_file::load(path, "build manifest", |m: &BuildManifest| m.format, FORMAT)
    }

    /// The entry of node `hostname`, if the build has it.
    pub fn node(&self, hostname: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.hostname == hostname)
    }
}

/// One input and its SHA-256 (a directory's: over its sorted paths, modes
/// and contents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    pub what: String,
    /// The file name (or URL).
    pub name: String,
    pub sha256: String,
}

impl InputRecord {
    /// A file or a directory tree, its files' hashes taken from `cache`
    /// when their status is unchanged.
    pub fn path(what: &str, p: &Path, cache: &mut HashCache) -> Result<InputRecord> {
        let mut h = Sha256::new();
        hash_path(p, Path::new(""), &mut h, cache)?;
        Ok(InputRecord {
            what: what.into(),
            name: p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: imagegen::source::to_hex(&h.finalize()),
        })
    }
}

/// Hashes names, kinds, contents and the executable bit: what a version
/// control checkout reproduces. The other mode bits follow the umask of
/// whoever copied the tree (a copy under `umask 077` must not change
/// `manifest.json`).
fn hash_path(p: &Path, rel: &Path, h: &mut Sha256, cache: &mut HashCache) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = p.symlink_metadata().map_err(|e| Error::io(p, e))?;
    h.update(rel.to_string_lossy().as_bytes());
    h.update([0]);
    let kind = if md.is_dir() {
        b'd'
    } else if md.file_type().is_symlink() {
        b'l'
    } else if md.permissions().mode() & 0o100 != 0 {
        b'x'
    } else {
        b'f'
    };
    h.update([kind]);
    if md.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p)
            .map_err(|e| Error::io(p, e))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for n in names {
            hash_path(&p.join(&n), &rel.join(&n), h, cache)?;
        }
    } else if md.file_type().is_symlink() {
        let t = std::fs::read_link(p).map_err(|e| Error::io(p, e))?;
        h.update(t.to_string_lossy().as_bytes());
    } else {
        h.update(cache.sha256(p)?);
    }
    Ok(())
}

/// SHA-256 of a file ([`imagegen::source::sha256_file`]: holes not read).
pub fn sha256_of(p: &Path) -> Result<[u8; 32]> {
    Ok(imagegen::source::sha256_file(p)?.0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseEntry {
    pub key: String,
    pub image: String,
    pub bmap: String,
    pub manifest: BaseManifest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub hostname: String,
    pub role: String,
    pub address: Option<String>,
    pub artefact: String,
    pub secrets: Option<String>,
    pub key: String,
    pub files: Vec<FileRecord>,
}

/// One operation of a node's stamp: never a content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    pub action: String,
    pub path: String,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub secret: bool,
    pub deferred: bool,
}

impl From<Applied> for FileRecord {
    fn from(a: Applied) -> FileRecord {
        FileRecord {
            action: a.action.into(),
            path: a.path,
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            secret: a.secret,
            deferred: false,
        }
    }
}

impl FileRecord {
    /// A secret file left out of the artefact (`--secrets defer`).
    pub fn deferred(op: &Op) -> FileRecord {
        let (path, mode, uid, gid) = match op {
            Op::File {
                path,
                mode,
                uid,
                gid,
                ..
            } => (path.clone(), Some(*mode), Some(*uid), Some(*gid)),
            other => (format!("{other:?}"), None, None, None),
        };
        FileRecord {
            action: "file".into(),
            path,
            mode,
            uid,
            gid,
            secret: true,
            deferred: true,
        }
    }
}

/// Every file under `dir` (but `SHA256SUMS`), sorted, as `sha256sum` lines.
/// `known` holds the sums of files carried over from the earlier build
/// (hard links to what its `SHA256SUMS` describes), which are not read
/// again: a carried file damaged since then fails `sha256sum -c`.
pub fn sha256sums(dir: &Path, known: &BTreeMap<String, String>) -> Result<String> {
    let mut files = Vec::new();
    collect(dir, Path::new(""), &mut files)?;
    files.sort();
    let mut out = String::new();
    for rel in files {
        if rel == Path::new(SUMS) {
            continue;
        }
        let name = rel.display().to_string();
        let sum = match known.get(&name) {
            Some(hex) => hex.clone(),
            None => imagegen::source::to_hex(&sha256_of(&dir.join(&rel))?),
        };
        out.push_str(&format!("{sum}  {name}\n"));
    }
    Ok(out)
}

fn collect(dir: &Path, rel: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir.join(rel))
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        let r = rel.join(e.file_name());
        if e.path().is_dir() {
            collect(dir, &r, out)?;
        } else {
            out.push(r);
        }
    }
    Ok(())
}

/// Parses `SHA256SUMS`: path → hex.
pub fn parse_sums(text: &str) -> Result<std::collections::BTreeMap<String, String>> {
    let mut m = std::collections::BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let (hex, path) = line
            .split_once("  ")
            .filter(|(h, _)| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| Error::Config {
                file: SUMS.into(),
                line: i + 1,
                key: "line".into(),
                why: "not `<sha256 hex>  <path>`".into(),
            })?;
        m.insert(path.to_string(), hex.to_ascii_lowercase());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn input_hashes_follow_content_and_the_executable_bit_not_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("overlay");
        std::fs::create_dir(&tree).unwrap();
        let f = tree.join("motd");
        std::fs::write(&f, "hello\n").unwrap();
        let chmod = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        chmod(&f, 0o644).unwrap();
        chmod(&tree, 0o755).unwrap();
        let hash = || {
            let mut cache = crate::file_hashes::HashCache::open(None, true);
            InputRecord::path("overlay", &tree, &mut cache)
                .unwrap()
                .sha256
        };
        let first = hash();
        // The same tree copied under `umask 077`.
        chmod(&f, 0o600).unwrap();
        chmod(&tree, 0o700).unwrap();
        assert_eq!(hash(), first);
        chmod(&f, 0o700).unwrap();
        assert_ne!(hash(), first, "the executable bit counts");
        chmod(&f, 0o600).unwrap();
        std::fs::write(&f, "hello!\n").unwrap();
        assert_ne!(hash(), first, "the content counts");
    }
}
