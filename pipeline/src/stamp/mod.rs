//! Stage 2: `nodeimg stamp` — a node's identity, keys, secrets and role
//! bootstrap, written through a copy-on-write overlay of the base and saved
//! as a delta (or a full sparse image).
//!
//! The base is opened read-only once per run ([`Stamper::open`]); each node
//! gets a fresh [`Overlay`], its OS is opened with `scrub` (so no block a
//! change frees or rewrites keeps an earlier secret), its operations — the
//! node's own files ([`files`]) and the role's rendered templates — are
//! executed by one `OsImage::apply`, and what changed is saved. Memory
//! holds the overlay's block index, not the image. The base's SHA-256
//! comes from its manifest when that still matches the image's size and
//! mtime; otherwise it is hashed once per run, however many nodes.
//!
//! Same base, cluster file, state and `SOURCE_DATE_EPOCH` give
//! bit-identical deltas: operations are produced in a fixed order and every
//! time written comes from the one `now` of the run.

pub mod files;
pub mod tools;
pub mod vars;

pub use files::{cluster_nix, node_ops, NodeContext, NIXOS_STATE};
pub use vars::{env_file, node_vars, Shared, CLUSTER_ENV};

use crate::base::manifest::{manifest_path, BaseManifest};
use crate::cluster::{Cluster, Node};
use crate::customise::{Applied, Op};
use crate::flavour::Role;
use crate::os::OsProfile;
use crate::osimage::OsImage;
use crate::secrets::State;
use crate::templates::{render_node, ProfileKind, RenderRequest};
use crate::{Error, Result};
use imagegen::block::{BlockDevice, CachedDevice, FileDevice, Overlay};
use imagegen::delta::{save_overlay_pending, BaseId};
use imagegen::fs::{OpenOptions, Timestamp};
use imagegen::sink::PendingFile;
use serde::Serialize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Where a stamped node goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A delta over the base.
    Delta(PathBuf),
    /// A full node image (reflinked or sparse copy of the base, then the
    /// node's blocks).
    Image(PathBuf),
}

impl Output {
    pub fn path(&self) -> &Path {
        match self {
            Output::Delta(p) | Output::Image(p) => p,
        }
    }
}

/// What stamping one node did (never a secret value).
#[derive(Debug, Clone, Serialize)]
pub struct NodeStamp {
    pub node: String,
    pub role: Role,
    /// `delta` or `image`.
    pub kind: &'static str,
    pub output: PathBuf,
    /// Bytes of the output file.
    pub size: u64,
    /// Bytes of the image that differ from the base.
    pub changed_bytes: u64,
    /// Every operation executed, with mode and owner (no content).
    pub files: Vec<Applied>,
}

/// Memory the base's block cache may hold: far more than the metadata a
/// node reads (a few MiB on a Debian base), far less than an image.
const BASE_CACHE_BYTES: usize = 64 << 20;

/// The base as every node reads it: through one block cache for the run.
type Base = Arc<CachedDevice<FileDevice>>;

/// A base image opened once for stamping many nodes.
pub struct Stamper {
    path: PathBuf,
    base: Base,
    base_id: OnceLock<BaseId>,
    /// The base's OS, detected for the first node and reused for the rest.
    profile: OnceLock<OsProfile>,
    now: Timestamp,
}

impl Stamper {
    /// Opens `base` read-only; `now` stamps every time written.
    pub fn open(base: &Path, now: Timestamp) -> Result<Stamper> {
        let dev = FileDevice::open(base)?;
        Ok(Stamper {
            path: base.to_path_buf(),
            base: Arc::new(CachedDevice::new(dev, BASE_CACHE_BYTES)),
            base_id: OnceLock::new(),
            profile: OnceLock::new(),
            now,
        })
    }

    /// The base's identity: from `base.img.json` when it still describes
    /// the file, else by hashing it (once).
    pub fn base_id(&self) -> Result<BaseId> {
        if let Some(id) = self.base_id.get() {
            return Ok(*id);
        }
        let size = self.base.size();
        let trusted = BaseManifest::load(&manifest_path(&self.path))
            .ok()
            .and_then(|m| m.trusted_sha256(&self.path));
        let id = match trusted {
            Some(sha256) => BaseId { size, sha256 },
            None => BaseId::of_device(&*self.base)?,
        };
        Ok(*self.base_id.get_or_init(|| id))
    }

    /// Refuses a base that lacks what the bootstraps of `nodes` run (see
    /// [`tools`]).
    pub fn check_tools(&self, cluster: &Cluster, nodes: &[&Node]) -> Result<()> {
        let image = OsImage::open(self.base.clone(), OpenOptions::read_only())?;
        tools::check_tools(&image, cluster, nodes, &self.path.display().to_string())
    }

    /// Every operation for `node`, in execution order: its own files, then
    /// its role's rendered templates.
    pub fn ops(
        &self,
        cluster: &Cluster,
        node: &Node,
        state: &State,
        shared: &Shared,
        image: &OsImage,
    ) -> Result<Vec<Op>> {
        let vars = node_vars(cluster, node, state, shared);
        let cx = NodeContext {
            cluster,
            node,
            state,
            shared,
            vars: &vars,
        };
        let mut ops = node_ops(&cx, image)?;
        let profile = match image.profile() {
            OsProfile::NixOs { .. } => ProfileKind::NixOs,
            OsProfile::Debian { .. } => ProfileKind::Debian,
        };
        ops.extend(render_node(&RenderRequest {
            flavour: cluster.flavour,
            role: node.role,
            profile,
            vars: &vars,
            overrides: cluster.templates_dir.as_deref(),
        })?);
        drop_rewritten_files(&mut ops);
        Ok(ops)
    }

    /// Stamps `node` and writes it to `out`. An existing output is refused
    /// unless `force`; a failure leaves nothing under the output's name.
    pub fn stamp(
        &self,
        cluster: &Cluster,
        node: &Node,
        state: &State,
        shared: &Shared,
        out: &Output,
        force: bool,
    ) -> Result<NodeStamp> {
        let (stamp, pending) = self.stamp_pending(cluster, node, state, shared, out, force)?;
        if let Some(p) = pending {
            p.commit(0o600)?;
        }
        Ok(stamp)
    }

    /// [`stamp`](Self::stamp), except that a delta is left under its
    /// temporary name for the caller to commit — with the other nodes' in
    /// one batch ([`PendingFile::commit_all`]), so a run of many nodes does
    /// not wait for two fsyncs per node. A full image is committed here.
    pub fn stamp_pending(
        &self,
        cluster: &Cluster,
        node: &Node,
        state: &State,
        shared: &Shared,
        out: &Output,
        force: bool,
    ) -> Result<(NodeStamp, Option<PendingFile>)> {
        if !force && out.path().exists() {
            return Err(Error::refused(
                out.path().display().to_string(),
                "exists; give --force to replace it",
            ));
        }
        let overlay = Arc::new(Overlay::new(self.base.clone())?);
        let opts = OpenOptions {
            writable: true,
            now: self.now,
            scrub: true,
        };
        let mut image = match self.profile.get() {
            Some(p) => OsImage::open_as(overlay.clone(), opts, p.clone())?,
            None => {
                let image = OsImage::open(overlay.clone(), opts)?;
                let _ = self.profile.set(image.profile().clone());
                image
            }
        };
        let ops = self.ops(cluster, node, state, shared, &image)?;
        let files = image.apply(&ops)?;
        image.flush()?;
        drop(image);
        let (kind, changed_bytes, pending) = match out {
            Output::Delta(p) => {
                let (info, pending) = save_overlay_pending(&overlay, self.base_id()?, p)?;
                ("delta", info.changed_bytes(), Some(pending))
            }
            Output::Image(p) => ("image", self.write_image(&overlay, p)?, None),
        };
        let size = match &pending {
            Some(f) => f.file().metadata(),
            None => std::fs::metadata(out.path()),
        }
        .map_err(|e| Error::io(out.path(), e))?
        .len();
        let stamp = NodeStamp {
            node: node.hostname.clone(),
            role: node.role,
            kind,
            output: out.path().to_path_buf(),
            size,
            changed_bytes,
            files,
        };
        Ok((stamp, pending))
    }

    /// Base ⊕ overlay as a full image at `path` (0600: it holds secrets):
    /// the base's data extents copied (holes stay holes; on Linux through
    /// `copy_file_range`, which shares the extents — a reflink — on
    /// filesystems that can, btrfs and XFS), then the changed blocks.
    /// Returns the changed bytes.
    fn write_image(&self, overlay: &Overlay<Base>, path: &Path) -> Result<u64> {
        let pending = PendingFile::create(path)?;
        let out = pending.file();
        let src = self.base.inner().file();
        let size = self.base.size();
        out.set_len(size).map_err(|e| Error::io(path, e))?;
        clone_sparse(src, out, size).map_err(|e| Error::io(path, e))?;
        let mut changed = 0;
        let mut buf = vec![0u8; 1 << 20];
        for (off, len) in overlay.changed_ranges()? {
            let mut done = 0;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                overlay.read_at(off + done, &mut buf[..n])?;
                out.write_all_at(&buf[..n], off + done)
                    .map_err(|e| Error::io(path, e))?;
                done += n as u64;
            }
            changed += len;
        }
        pending.commit(0o600)?;
        Ok(changed)
    }
}

/// Copies the first `size` bytes of `src` into `dst` (already `size` long)
/// sparsely: only the data extents, through `copy_file_range` where the
/// kernel can (sharing extents on btrfs and XFS); holes stay holes.
pub fn clone_sparse(src: &std::fs::File, dst: &std::fs::File, size: u64) -> std::io::Result<()> {
    let data = imagegen::ranges::data_map(src, size)?;
    for ext in data.extents() {
        if kernel_copy(src, dst, ext.start, ext.end - ext.start) {
            continue;
        }
        sparse_copy(src, dst, ext.start, ext.end)?;
    }
    Ok(())
}

/// Drops a file op whose path a later file op writes again: the first-boot
/// check and the role bootstrap both bring the library they share.
fn drop_rewritten_files(ops: &mut Vec<Op>) {
    let path_of = |op: &Op| match op {
        Op::File { path, .. } => Some(path.clone()),
        _ => None,
    };
    let mut later = std::collections::HashSet::new();
    let mut keep = vec![true; ops.len()];
    for (i, op) in ops.iter().enumerate().rev() {
        if let Some(p) = path_of(op) {
            keep[i] = later.insert(p);
        }
    }
    let mut k = keep.into_iter();
    ops.retain(|_| k.next().unwrap_or(true));
}

/// Copies `[start, end)` of `src` to the same place in `dst`, leaving
/// all-zero 4 KiB blocks as holes.
fn sparse_copy(
    src: &std::fs::File,
    dst: &std::fs::File,
    start: u64,
    end: u64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = start;
    while at < end {
        let n = (end - at).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], at)?;
        for (i, block) in buf[..n].chunks(4096).enumerate() {
            if block.iter().any(|&b| b != 0) {
                dst.write_all_at(block, at + (i * 4096) as u64)?;
            }
        }
        at += n as u64;
    }
    Ok(())
}

/// `copy_file_range` of one range (shares extents where the filesystem
/// can); false when the kernel cannot, so the caller copies by hand.
#[cfg(target_os = "linux")]
fn kernel_copy(src: &std::fs::File, dst: &std::fs::File, start: u64, len: u64) -> bool {
    use std::os::unix::io::AsRawFd;
    let mut done = 0u64;
    while done < len {
        let mut i = (start + done) as libc::loff_t;
        let mut o = i;
        let want = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open; the offsets are our own locals.
        let n = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut i, dst.as_raw_fd(), &mut o, want, 0)
        };
        if n <= 0 {
            // Nothing copied yet: fall back for the whole range; part
            // copied: the fallback rewrites the same bytes.
            return false;
        }
        done += n as u64;
    }
    true
}

#[cfg(not(target_os = "linux"))]
fn kernel_copy(_: &std::fs::File, _: &std::fs::File, _: u64, _: u64) -> bool {
    false
}
