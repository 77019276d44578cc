//! `nodeimg build`: stage 1 and stage 2 for a whole cluster, as a directory
//! of reproducible artefacts.
//!
//! # The output directory
//!
//! | file | what |
//! |---|---|
//! | `base.img.zst` | the base image (stage 1), zstd |
//! | `base.img.bmap` | its block map, bmaptool format 2.0 |
//! | `nodes/<hostname>.delta` | each node over the base (stage 2); `--full-images`: `nodes/<hostname>.img.zst` |
//! | `nodes/<hostname>.secrets` | `--secrets defer` only: the node's secret files, sealed ([`deferred`]) |
//! | `known_hosts` | every node's SSH host key, when nodeimg generated them |
//! | `cluster.nix` | NixOS clusters: seed 003's cluster description for flakes |
//! | `manifest.json` | what was built from what ([`manifest`]) |
//! | `SHA256SUMS` | every other file, in the format `sha256sum -c` reads |
//!
//! Everything is written into a temporary directory beside the output
//! (`.<name>.build-<pid>`) and swapped into place in one rename at the end:
//! a build killed at any point leaves the output directory as it was (a
//! stale temporary directory is removed by the next build).
//!
//! # Incremental builds
//!
//! The base is rebuilt only when its key changes: a SHA-256 over the tool
//! version, the board, `[base]`, `[firmware]`, the hashes of every local
//! input (source image or tree, overlay, owner map, Tow-Boot, boot files,
//! provisioning scripts) and `SOURCE_DATE_EPOCH`. A node is stamped again
//! only when its key changes: the base's SHA-256 and a hash of the exact
//! operations its stamp would execute, so adding a node stamps only that
//! node (on NixOS, where every node carries `cluster.nix`, all of them).
//! Everything else is carried over from the earlier build. `force`
//! rebuilds everything.
//!
//! # Reproducible
//!
//! Same inputs, same state file and the same `SOURCE_DATE_EPOCH` give
//! bit-identical artefacts, `SHA256SUMS` and `manifest.json` included: the
//! manifest holds no absolute path, no host name and no time but the
//! epoch's.

pub mod deferred;
pub mod hash_cache;
pub mod manifest;

use crate::base::manifest::{manifest_path, ImageRecord};
use crate::base::{build_base, BaseRequest, Progress};
use crate::board::Board;
use crate::cluster::Cluster;
use crate::customise::Op;
use crate::file_hashes::HashCache;
use crate::os::OsProfile;
use crate::osimage::OsImage;
use crate::secrets::State;
use crate::stamp::{cluster_nix, Shared, Stamper};
use crate::{Error, Result};
use imagegen::block::{BlockDevice, DeviceCursor, FileDevice, Overlay};
use imagegen::delta::{save_overlay, BaseId};
use imagegen::fs::{OpenOptions, Timestamp};
use imagegen::sink::{write_image, OutputFormat};
use imagegen::source::{to_hex, ImageSource};
use manifest::{BaseEntry, BuildManifest, InputRecord, NodeEntry};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use manifest::{MANIFEST, SUMS};

/// Where the secret files of each node go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretsMode {
    /// Into the node's delta or image (a local build).
    Embed,
    /// Sealed apart (`nodes/<hostname>.secrets`); injected by `nodeimg flash
    /// --secrets STATE` while it writes.
    Defer,
}

/// Everything `nodeimg build` was asked.
pub struct BuildRequest<'a> {
    pub cluster: &'a Cluster,
    pub board: Board,
    /// `[base]` with paths resolved against the cluster file's directory.
    pub base: crate::base::spec::BaseSpec,
    pub firmware: crate::base::spec::FirmwareSpec,
    pub out: PathBuf,
    pub state: &'a State,
    pub secrets: SecretsMode,
    pub full_images: bool,
    pub force: bool,
    /// Hash every input and artefact again instead of trusting what the
    /// earlier build remembered ([`hash_cache`]).
    pub rehash: bool,
    pub cache_dir: Option<PathBuf>,
    pub now: Timestamp,
    /// `SOURCE_DATE_EPOCH`, recorded and part of every key.
    pub epoch: Option<i64>,
    /// `[base] provision`, ready to run (root, Linux) when the base is
    /// built; `None` when there is none.
    pub provision: Option<&'a crate::provision::Provision>,
    /// Refuse a base that lacks the flavour's tools (`--no-tool-check`
    /// turns it off).
    pub tool_check: bool,
}

/// What a build did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildOutcome {
    pub out: PathBuf,
    pub base_rebuilt: bool,
    pub stamped: Vec<String>,
    pub reused: Vec<String>,
    /// Bytes of local inputs read to hash them (what the hash cache did
    /// not spare).
    pub input_bytes_hashed: u64,
    pub manifest: BuildManifest,
}

/// Runs the build; see the module documentation.
pub fn build(req: &BuildRequest, progress: &dyn Progress) -> Result<BuildOutcome> {
    let previous = previous_build(&req.out, req.force)?;
    let staging = Staging::new(&req.out)?;
    let work = staging.path.join(".work");
    std::fs::create_dir_all(work.join("x")).map_err(|e| Error::io(&work, e))?;
    std::fs::create_dir_all(staging.path.join("nodes")).map_err(|e| Error::io(&staging.path, e))?;

    // Stage 1, or the earlier build's base when nothing it depends on changed.
    progress.step("hashing the base's inputs");
    let cache = hash_cache::cache_dir(&req.out);
    let mut hashes = HashCache::open(cache.as_deref(), req.rehash || req.force);
    let (base_key, inputs) = base_key(req, &mut hashes)?;
    hashes.save();
    let reuse = previous
        .as_ref()
        .filter(|p| !req.force && p.manifest.base.key == base_key);
    // Sums of the artefacts carried over, from the earlier SHA256SUMS.
    let earlier_sums = match (&previous, req.rehash) {
        (Some(p), false) => std::fs::read_to_string(p.dir.join(SUMS))
            .ok()
            .and_then(|t| manifest::parse_sums(&t).ok())
            .unwrap_or_default(),
        _ => BTreeMap::new(),
    };
    let mut known_sums = BTreeMap::new();
    let mut carry_known = |from: &Path, rel: &str| -> Result<()> {
        carry(&from.join(rel), &staging.path.join(rel))?;
        if let Some(h) = earlier_sums.get(rel) {
            known_sums.insert(rel.to_string(), h.clone());
        }
        Ok(())
    };
    let mut base_img = work.join("base.img");
    let mut base_kept = false;
    let (base_manifest, base_rebuilt) = match reuse {
        Some(p) => {
            progress.step("reusing the earlier build's base");
            for f in ["base.img.zst", "base.img.bmap"] {
                carry_known(&p.dir, f)?;
            }
            let m = p.manifest.base.manifest.clone();
            // The raw base kept by the earlier build, else decompressed.
            let kept = cache
                .as_deref()
                .filter(|_| !req.rehash)
                .and_then(|d| hash_cache::cached_base(d, &base_key));
            match kept {
                Some(img) => {
                    base_img = img;
                    base_kept = true;
                }
                None => {
                    write_image(
                        ImageSource::open(staging.path.join("base.img.zst"))?,
                        &base_img,
                        OutputFormat::Raw,
                        Some(m.image.size),
                    )?;
                }
            }
            (m, false)
        }
        None => {
            let run =
                |image: &Path, board: &Board, _: &crate::base::spec::BaseSpec| -> Result<()> {
                    match req.provision {
                        Some(p) => crate::provision::run(image, board, p),
                        None => Ok(()),
                    }
                };
            let hook = req.provision.map(|_| run);
            let out = build_base(
                &BaseRequest {
                    board: req.board.clone(),
                    spec: req.base.clone(),
                    firmware: req.firmware.clone(),
                    out: base_img.clone(),
                    bmap: true,
                    zstd: true,
                    force: true,
                    cache_dir: req.cache_dir.clone(),
                    now: req.now,
                    provision: hook.as_ref().map(|h| h as crate::base::ProvisionHook),
                    fetch: crate::base::fetch::FetchOptions {
                        rehash: req.rehash,
                        ..Default::default()
                    },
                },
                progress,
            )?;
            for (from, to) in [
                (out.zstd.clone(), "base.img.zst"),
                (out.bmap.clone(), "base.img.bmap"),
            ] {
                let from = from.ok_or_else(|| Error::refused("base", "no zstd or bmap made"))?;
                std::fs::rename(&from, staging.path.join(to)).map_err(|e| Error::io(&from, e))?;
            }
            (out.manifest, true)
        }
    };
    let sha = crate::base::manifest::from_hex32(&base_manifest.image.sha256)
        .ok_or_else(|| Error::refused("base manifest", "bad image SHA-256"))?;
    // The stamper trusts a manifest that matches the file, so the base is
    // not hashed again.
    let mut bm = base_manifest.clone();
    bm.image = ImageRecord::of(&base_img, &sha)?;
    bm.save(&manifest_path(&base_img))?;
    let base_id = BaseId {
        size: base_manifest.image.size,
        sha256: sha,
    };

    // Stage 2: every node.
    let cluster = req.cluster;
    let state = req.state;
    let shared = Shared::new(cluster, state)?;
    let stamper = Stamper::open(&base_img, req.now)?;
    let base_dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&base_img)?);
    let reader = OsImage::open(base_dev.clone(), OpenOptions::read_only())?;
    if req.tool_check {
        let nodes: Vec<&crate::cluster::Node> = cluster.nodes.iter().collect();
        crate::stamp::tools::check_tools(&reader, cluster, &nodes, "of this build")?;
    }
    let mut nodes = Vec::new();
    let (mut stamped, mut reused) = (Vec::new(), Vec::new());
    for node in &cluster.nodes {
        let ops = stamper.ops(cluster, node, state, &shared, &reader)?;
        let key = node_key(req, &base_manifest.image.sha256, &node.hostname, &ops);
        let (kept, secret) = match req.secrets {
            SecretsMode::Embed => (ops, Vec::new()),
            SecretsMode::Defer => deferred::split(ops),
        };
        let name = &node.hostname;
        let artefact = if req.full_images {
            format!("nodes/{name}.img.zst")
        } else {
            format!("nodes/{name}.delta")
        };
        let sealed = (!secret.is_empty()).then(|| format!("nodes/{name}.secrets"));
        let earlier = previous.as_ref().and_then(|p| {
            p.manifest
                .nodes
                .iter()
                .find(|n| n.hostname == *name && n.key == key && n.artefact == artefact)
                .map(|n| (p, n))
        });
        let files = match earlier {
            Some((p, n)) => {
                progress.step(&format!("{name}: unchanged, carried over"));
                carry_known(&p.dir, &artefact)?;
                if let Some(s) = &sealed {
                    carry_known(&p.dir, s)?;
                }
                reused.push(name.clone());
                n.files.clone()
            }
            None => {
                progress.step(&format!("stamping {name}"));
                let overlay = Arc::new(Overlay::new(base_dev.clone())?);
                let mut image = OsImage::open(
                    overlay.clone(),
                    OpenOptions {
                        writable: true,
                        now: req.now,
                        scrub: true,
                    },
                )?;
                let applied = image.apply(&kept)?;
                image.flush()?;
                drop(image);
                let dest = staging.path.join(&artefact);
                if req.full_images {
                    write_image(
                        DeviceCursor::new(overlay.clone()),
                        &dest,
                        OutputFormat::Zstd { level: 3 },
                        Some(base_id.size),
                    )?;
                } else {
                    save_overlay(&overlay, base_id, &dest)?;
                }
                if let Some(s) = &sealed {
                    let bytes = deferred::seal(state, name, &secret)?;
                    write_file(&staging.path.join(s), &bytes, 0o644)?;
                }
                stamped.push(name.clone());
                let mut files: Vec<_> = applied.into_iter().map(Into::into).collect();
                files.extend(secret.iter().map(manifest::FileRecord::deferred));
                files
            }
        };
        nodes.push(NodeEntry {
            hostname: name.clone(),
            role: node.role.to_string(),
            address: node.address.map(|a| a.to_string()),
            artefact,
            secrets: sealed,
            key,
            files,
        });
    }
    drop(reader);
    drop(stamper);
    drop(base_dev);
    // The raw base stays for the next build (a failure only costs time then).
    if let (Some(dir), false) = (&cache, base_kept) {
        let _ = hash_cache::keep_base(dir, &base_key, &base_img);
    }

    let mut extra = Vec::new();
    let known = state.known_hosts(cluster);
    if !known.is_empty() {
        write_file(&staging.path.join("known_hosts"), known.as_bytes(), 0o644)?;
        extra.push("known_hosts".to_string());
    }
    if matches!(base_manifest.os, OsProfile::NixOs { .. }) {
        write_file(
            &staging.path.join("cluster.nix"),
            cluster_nix(cluster).as_bytes(),
            0o644,
        )?;
        extra.push("cluster.nix".to_string());
    }
    std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;

    let mut manifest = BuildManifest {
        format: manifest::FORMAT,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        cluster: cluster.name.clone(),
        flavour: cluster.flavour.to_string(),
        board: req.board.name.clone(),
        source_date_epoch: req.epoch,
        stamped_at: (matches!(req.secrets, SecretsMode::Defer) && req.epoch.is_none())
            .then_some(req.now.secs),
        secrets: req.secrets,
        full_images: req.full_images,
        state_fingerprint: state.fingerprint(),
        inputs,
        base: BaseEntry {
            key: base_key,
            image: "base.img.zst".into(),
            bmap: "base.img.bmap".into(),
            manifest: bm,
        },
        nodes,
        files: extra,
    };
    // The local image record (mtime) means nothing in an artefact.
    manifest.base.manifest.image.mtime_ns = 0;
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::internal("manifest.json", e.to_string()))?;
    write_file(&staging.path.join(MANIFEST), &json, 0o644)?;
    progress.step("hashing the artefacts");
    let sums = manifest::sha256sums(&staging.path, &known_sums)?;
    write_file(&staging.path.join(SUMS), sums.as_bytes(), 0o644)?;
    staging.commit()?;
    Ok(BuildOutcome {
        out: req.out.clone(),
        base_rebuilt,
        stamped,
        reused,
        input_bytes_hashed: hashes.hashed_bytes,
        manifest,
    })
}

/// An earlier build in the output directory.
struct Previous {
    dir: PathBuf,
    manifest: BuildManifest,
}

/// The output directory must be absent, empty or an earlier build; anything
/// else is refused unless `force` (which then replaces it whole).
fn previous_build(out: &Path, force: bool) -> Result<Option<Previous>> {
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(out, e)),
    };
    if entries.count() == 0 {
        return Ok(None);
    }
    match BuildManifest::load(&out.join(MANIFEST)) {
        Ok(m) => Ok(Some(Previous {
            dir: out.to_path_buf(),
            manifest: m,
        })),
        Err(_) if force => Ok(None),
        Err(e) => Err(Error::refused(
            out.display().to_string(),
            format!("holds something other than an earlier nodeimg build ({e}); give --force to replace it"),
        )),
    }
}

/// A temporary directory beside the output, swapped into place at the end;
/// registered with `imagegen::sink`'s pending outputs, so an interrupted
/// build leaves no `.NAME.build-PID` behind.
struct Staging {
    path: PathBuf,
    out: PathBuf,
    dir: imagegen::sink::PendingDir,
}

impl Staging {
    fn new(out: &Path) -> Result<Staging> {
        let name = out
            .file_name()
            .ok_or_else(|| Error::refused(out.display().to_string(), "is not a directory name"))?
            .to_string_lossy()
            .into_owned();
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let prefix = format!(".{name}.build-");
        // Stale directories of killed builds (no process with that id).
        if let Ok(rd) = std::fs::read_dir(&parent) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = n.strip_prefix(&prefix).and_then(|p| p.parse::<i32>().ok()) {
                    if pid != std::process::id() as i32 && !process_alive(pid) {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let path = parent.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let dir = imagegen::sink::PendingDir::create(&path)?;
        Ok(Staging {
            path,
            out: out.to_path_buf(),
            dir,
        })
    }

    /// Puts the staged build where the output was, in one step: a rename
    /// when there was none, an atomic exchange (Linux) when there was.
    fn commit(self) -> Result<()> {
        sync_dir(&self.path)?;
        let out = self.out;
        let exchanged = self.dir.commit(|path| -> Result<bool> {
            if out.symlink_metadata().is_err() {
                std::fs::rename(path, &out).map_err(|e| Error::io(&out, e))?;
                Ok(false)
            } else {
                exchange(path, &out)?;
                Ok(true)
            }
        })?;
        if exchanged {
            // `path` now holds the earlier build.
            let _ = std::fs::remove_dir_all(&self.path);
        }
        if let Some(p) = out.parent() {
            let _ = sync_dir(if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            });
        }
        Ok(())
    }
}

/// Whether process `pid` exists. EPERM (another user's process) is alive:
/// only ESRCH says it is gone.
fn process_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE)
        .map_err(|e| Error::io(b, std::io::Error::from(e)))
}

/// Without an atomic exchange: the earlier output is moved aside first (a
/// kill between the two renames leaves it under `.<name>.build-<pid>.old`).
#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> Result<()> {
    let old = a.with_extension("old");
    std::fs::rename(b, &old).map_err(|e| Error::io(b, e))?;
    std::fs::rename(a, b).map_err(|e| Error::io(b, e))?;
    std::fs::rename(&old, a).map_err(|e| Error::io(a, e))
}

/// Flushes every file of a directory tree and the directories themselves.
fn sync_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            sync_dir(&p)?;
        } else if let Ok(f) = std::fs::File::open(&p) {
            f.sync_all().map_err(|e| Error::io(&p, e))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// An artefact of the earlier build, hard-linked (or copied) into the new one.
fn carry(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).map_err(|e| Error::io(from, e))?;
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data).map_err(|e| Error::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(path, e))
}

/// The base's key and the inputs it covers (each with its hash).
fn base_key(req: &BuildRequest, cache: &mut HashCache) -> Result<(String, Vec<InputRecord>)> {
    let mut inputs = vec![InputRecord::path("cluster file", &req.cluster.file, cache)?];
    let mut local = |inputs: &mut Vec<InputRecord>, what: &str, p: &Path| -> Result<()> {
        inputs.push(InputRecord::path(what, p, cache)?);
        Ok(())
    };
    if let Some(s) = &req.base.source {
        if crate::base::fetch::is_url(s) {
            inputs.push(InputRecord {
                what: "base source".into(),
                name: s.clone(),
                sha256: req.base.sha256.clone().unwrap_or_default(),
            });
        } else {
            local(&mut inputs, "base source", Path::new(s))?;
        }
    }
    for (what, p) in [
        ("overlay", req.base.overlay.as_deref()),
        ("owner map", req.base.owner_map.as_deref()),
        ("provision files", req.base.provision_files.as_deref()),
        ("boot files", req.firmware.boot_files.as_deref()),
    ] {
        if let Some(p) = p {
            local(&mut inputs, what, p)?;
        }
    }
    for p in &req.base.provision {
        match crate::provision::recipes::find(p) {
            Some(r) => inputs.push(InputRecord {
                what: "provision recipe".into(),
                name: r.name.into(),
                sha256: r.fingerprint(&req.cluster.versions)?,
            }),
            None => local(&mut inputs, "provision script", p)?,
        }
    }
    if let Some(t) = &req.firmware.towboot {
        if crate::base::fetch::is_url(t) {
            inputs.push(InputRecord {
                what: "towboot".into(),
                name: t.clone(),
                sha256: req.firmware.sha256.clone().unwrap_or_default(),
            });
        } else {
            local(&mut inputs, "towboot", Path::new(t))?;
        }
    }
    let mut h = Sha256::new();
    let spec = serde_json::to_string(&(&req.base, &req.firmware))
        .map_err(|e| Error::internal("[base]", e.to_string()))?;
    for part in [
        env!("CARGO_PKG_VERSION"),
        &req.board.name,
        &format!("{:?}", req.board),
        &spec,
        &format!("{:?}", req.epoch),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for i in inputs.iter().skip(1) {
        h.update(i.sha256.as_bytes());
    }
    Ok((format!("sha256:{}", to_hex(&h.finalize())), inputs))
}

/// A node's key: everything its artefact depends on.
fn node_key(req: &BuildRequest, base_sha: &str, node: &str, ops: &[Op]) -> String {
    let mut h = Sha256::new();
    for part in [
        env!("CARGO_PKG_VERSION"),
        base_sha,
        node,
        &format!("{:?} {:?}", req.secrets, req.epoch),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    // The operations' full contents (secrets included) go into the hash,
    // never into the manifest.
    let text = format!("{ops:?}");
    h.update(text.as_bytes());
    format!("sha256:{}", to_hex(&h.finalize()))
}
