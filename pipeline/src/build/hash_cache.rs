//! What an incremental build remembers between runs, beside the output
//! directory (`.<name>.cache/`), so that a build with nothing changed reads
//! metadata instead of gigabytes.
//!
//! - `hashes.json`: the SHA-256 of every local input file
//!   ([`crate::file_hashes`]: keyed by identity and status, racy entries
//!   never trusted).
//! - `base.img` + `base.json`: the raw base image of the last build and the
//!   base key it was built for, so that neither a rebuild with nothing
//!   changed nor one that adds a node has to decompress `base.img.zst`.
//!
//! The cache is only ever an optimisation: a missing, damaged or foreign
//! cache file is ignored, and `--rehash` ignores it on purpose.

use crate::file_hashes::FileStat;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const FORMAT: u32 = 1;
const BASE: &str = "base.img";
const BASE_KEY: &str = "base.json";

/// Where an incremental build keeps what it remembers: `.<name>.cache/`
/// beside the output directory `<name>`.
pub fn cache_dir(out: &Path) -> Option<PathBuf> {
    let name = out.file_name()?.to_string_lossy().into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Some(parent.join(format!(".{name}.cache")))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseRecord {
    format: u32,
    key: String,
    stat: FileStat,
}

/// The raw base kept from the last build, when it was built for `key` and
/// nothing has touched it since (its status is the recorded one).
pub fn cached_base(dir: &Path, key: &str) -> Option<PathBuf> {
    let rec: BaseRecord = serde_json::from_slice(&std::fs::read(dir.join(BASE_KEY)).ok()?).ok()?;
    let img = dir.join(BASE);
    let stat = FileStat::of_path(&img).ok()?;
    (rec.format == FORMAT && rec.key == key && rec.stat == stat).then_some(img)
}

/// Keeps the raw base `img` (moved, not copied: the same filesystem) as the
/// one built for `key`; whatever was kept before goes.
pub fn keep_base(dir: &Path, key: &str, img: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let record = dir.join(BASE_KEY);
    // The record goes first: a kill in between leaves no record, never a
    // record naming the wrong image.
    if let Err(e) = std::fs::remove_file(&record) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(Error::io(&record, e));
        }
    }
    let dest = dir.join(BASE);
    std::fs::rename(img, &dest).map_err(|e| Error::io(&dest, e))?;
    let rec = BaseRecord {
        format: FORMAT,
        key: key.to_string(),
        stat: FileStat::of_path(&dest)?,
    };
    let json = serde_json::to_vec(&rec).map_err(|e| Error::refused("base cache", e.to_string()))?;
    let tmp = dir.join(format!(".{BASE_KEY}.{}", std::process::id()));
    std::fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &record).map_err(|e| Error::io(&record, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_base_is_used_only_for_its_key_and_untouched() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cache");
        let img = t.path().join("base.img");
        std::fs::write(&img, b"raw base").unwrap();
        keep_base(&dir, "sha256:k1", &img).unwrap();
        let kept = cached_base(&dir, "sha256:k1").unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"raw base");
        assert!(cached_base(&dir, "sha256:k2").is_none());
        // Written to after it was kept: no longer trusted.
        std::fs::write(&kept, b"RAW BASE").unwrap();
        assert!(cached_base(&dir, "sha256:k1").is_none());
    }
}
