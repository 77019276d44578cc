//! The oracle checks run after operations: a fast targeted one after each
//! operation and a full comparison of every reader with the model.

use super::engine;
use super::fixture::Variant;
use super::model::{base, parent, Content, Model};
use super::mount::RoMount;
use super::ops::Op;
use super::{oracle, tree};
use std::path::Path;

/// ext4-view 1.0 reads neither inline-data inodes nor 128-byte inodes.
pub fn ext4_view_reads(variant: Variant) -> bool {
    !matches!(variant, Variant::InlineData | Variant::Inode128)
}

/// After one operation: `e2fsck -fn` is silent, and debugfs shows exactly
/// what the model holds for the path the operation touched (kind, mode,
/// owner, size, link count, bytes or target, xattrs, one entry of the name).
pub fn after_op(image: &Path, model: &Model, op: &Op) -> Result<(), String> {
    oracle::fsck_clean(image)?;
    let mut paths = vec![op.path().to_string()];
    if let Op::Link { existing, .. } = op {
        paths.push(existing.clone());
    }
    for path in &paths {
        check_path(image, model, path)?;
    }
    engine_sees(image, model, &paths)
}

/// Our engine's own view of some paths (stat, bytes, xattrs) against the model.
pub fn engine_sees(image: &Path, model: &Model, paths: &[String]) -> Result<(), String> {
    let fs = engine::open(image, false).map_err(|e| format!("engine open: {e}"))?;
    let expected = model.tree();
    for path in paths {
        match (expected.get(path), fs.stat(path)) {
            (None, Err(_)) => {}
            (None, Ok(_)) => return Err(format!("engine: {path} should be gone")),
            (Some(_), Err(e)) => return Err(format!("engine stat {path}: {e}")),
            (Some(want), Ok(_)) => {
                let got = tree::from_fs_paths(&*fs, std::slice::from_ref(path))?;
                let one: tree::Tree = [(path.clone(), want.clone())].into_iter().collect();
                let problems = tree::diff(&one, &got, "engine");
                if !problems.is_empty() {
                    return Err(problems.join("\n"));
                }
            }
        }
    }
    Ok(())
}

/// debugfs's view of one path against the model.
pub fn check_path(image: &Path, model: &Model, path: &str) -> Result<(), String> {
    if path == "/" {
        return Ok(());
    }
    let count = oracle::count_entries(image, parent(path), base(path)).or_else(|e| {
        // The parent may be gone (rm -r of an ancestor) or not a directory.
        if model.is_dir(parent(path)) {
            Err(e)
        } else {
            Ok(0)
        }
    })?;
    let Some(node) = model.node(path) else {
        if count != 0 {
            return Err(format!(
                "debugfs: {path} should be gone, found {count} entries"
            ));
        }
        return Ok(());
    };
    if count != 1 {
        return Err(format!(
            "debugfs ls {}: {count} entries named {:?}, expected 1",
            parent(path),
            base(path)
        ));
    }
    let st = oracle::stat(image, path)?;
    let want_kind = match node.content {
        Content::File(_) => "regular",
        Content::Dir => "directory",
        Content::Symlink(_) => "symlink",
    };
    let mut problems = Vec::new();
    if st.kind != want_kind {
        problems.push(format!("type {} (want {want_kind})", st.kind));
    }
    if st.mode != node.mode {
        problems.push(format!("mode {:o} (want {:o})", st.mode, node.mode));
    }
    if (st.uid, st.gid) != (node.uid, node.gid) {
        problems.push(format!(
            "owner {}:{} (want {}:{})",
            st.uid, st.gid, node.uid, node.gid
        ));
    }
    let want_links = model.link_count(path);
    if st.links != want_links {
        problems.push(format!("links {} (want {want_links})", st.links));
    }
    match &node.content {
        Content::File(data) => {
            if st.size != data.len() as u64 {
                problems.push(format!("size {} (want {})", st.size, data.len()));
            }
            let got = oracle::cat(image, path)?;
            if &got != data {
                problems.push(format!(
                    "debugfs cat gives {} bytes that differ from the {} written",
                    got.len(),
                    data.len()
                ));
            }
        }
        Content::Symlink(target) => {
            if st.size != target.len() as u64 {
                problems.push(format!("size {} (want {})", st.size, target.len()));
            }
            let got = oracle::link_target(image, path)?;
            if &got != target {
                problems.push(format!("target {got:?} (want {target:?})"));
            }
        }
        Content::Dir => {}
    }
    let names = oracle::xattr_names(image, path)?;
    let want: Vec<String> = node.xattrs.keys().cloned().collect();
    // Other namespaces (system.data of inline files) are not ours to judge.
    let ours: Vec<String> = names
        .into_iter()
        .filter(|n| !n.starts_with("system."))
        .collect();
    if ours != want {
        problems.push(format!("xattrs {ours:?} (want {want:?})"));
    }
    for (name, value) in &node.xattrs {
        let got = oracle::xattr(image, path, name)?;
        if got.as_ref() != Some(value) {
            problems.push(format!("xattr {name} = {got:?} (want {value:?})"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "debugfs stat {path}: {}\n{}",
            problems.join(", "),
            st.raw
        ))
    }
}

/// Every reader against the model: our engine (read-only), the kernel's
/// read-only loop mount (inode numbers too, so hard links are checked),
/// `debugfs rdump` and `ext4-view`. Empty when they all agree.
pub fn full(image: &Path, model: &Model, variant: Variant) -> Vec<String> {
    readers(image, model, variant, true, true)
}

/// [`full`], optionally without our engine or without `debugfs rdump`
/// (seconds for the 5,000-entry fixture, so the random test skips it there).
pub fn readers(
    image: &Path,
    model: &Model,
    variant: Variant,
    with_engine: bool,
    with_rdump: bool,
) -> Vec<String> {
    let expected = model.tree();
    let mut problems = Vec::new();
    if with_engine {
        match engine::open(image, false) {
            Ok(fs) => match tree::from_fs(&*fs) {
                Ok(got) => problems.extend(tree::diff(&expected, &got, "engine")),
                Err(e) => problems.push(e),
            },
            Err(e) => problems.push(format!("engine open: {e}")),
        }
    }
    match RoMount::new(image) {
        Ok(mount) => match tree::from_host(mount.root(), true) {
            Ok(got) => problems.extend(tree::diff(&expected, &got, "kernel")),
            Err(e) => problems.push(format!("kernel: {e}")),
        },
        Err(e) => problems.push(e),
    }
    // debugfs 1.47.0 rdump pads inline-data files to 60 bytes.
    if with_rdump && variant != Variant::InlineData {
        let out = tempfile::tempdir().expect("tempdir");
        let (_, err) = oracle::debugfs(image, &format!("rdump / {}", out.path().display()));
        if !err.trim().is_empty() {
            problems.push(format!("debugfs rdump: {}", err.trim()));
        }
        match tree::from_host(out.path(), false) {
            Ok(got) => problems.extend(tree::diff(&rdump_view(&expected), &got, "debugfs")),
            Err(e) => problems.push(format!("debugfs rdump: {e}")),
        }
    }
    if ext4_view_reads(variant) {
        match tree::from_ext4_view(image) {
            Ok(got) => problems.extend(tree::diff(&expected, &got, "ext4-view")),
            Err(e) => problems.push(e),
        }
    }
    problems
}

/// What `debugfs rdump` can reproduce on the host: it keeps the 0777
/// permission bits only and does not chown symlinks.
fn rdump_view(expected: &tree::Tree) -> tree::Tree {
    let mut out = expected.clone();
    for obs in out.values_mut() {
        obs.mode = obs.mode.map(|m| m & 0o777);
        if obs.kind == tree::Kind::Symlink {
            obs.uid = None;
            obs.gid = None;
        }
    }
    out
}

/// Panics with the problems of [`full`], if any.
pub fn assert_full(image: &Path, model: &Model, variant: Variant, context: &str) {
    let problems = full(image, model, variant);
    assert!(problems.is_empty(), "{context}:\n{}", problems.join("\n"));
}
