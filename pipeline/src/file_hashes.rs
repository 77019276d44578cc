//! SHA-256 of local files, remembered between runs by each file's identity
//! and status — device, inode, size, mtime and ctime, each to the
//! nanosecond — as git's index and cargo's fingerprints do, so that an
//! unchanged multi-GB input is not read again. A file whose status differs
//! in any of them is hashed again. ctime is the one the kernel sets on every
//! change (a write, `touch -d`, a rename over it) and no program can set
//! back, so an edit that keeps size and mtime is still seen.
//!
//! **Racy entries.** Timestamps have a granularity (a kernel tick for ctime),
//! so a file changed within the same tick as the hash was taken could keep
//! its status. As git does ("racy git"), an entry whose mtime or ctime is
//! not clearly older than the moment its hashing began is never trusted:
//! such a file is hashed again next time, and then remembered for good.
//!
//! The cache (`hashes.json` in a directory of its own) is only ever an
//! optimisation: a missing, damaged or foreign cache file is ignored, and
//! `--rehash` ignores it on purpose. `nodeimg build` keeps one beside its
//! output directory; `nodeimg base` one in the user's cache for its sources.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const FORMAT: u32 = 1;
const HASHES: &str = "hashes.json";

/// How much older than the start of its hashing a file's timestamps must be
/// for its entry to be trusted: far more than any timestamp granularity of
/// local filesystems (a kernel tick; FAT's 2 s mtime).
const RACY_NS: i128 = 3_000_000_000;

/// A file's identity and status, as `stat` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileStat {
    pub fn of(md: &Metadata) -> FileStat {
        FileStat {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            ctime_ns: md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128,
        }
    }

    pub fn of_path(p: &Path) -> Result<FileStat> {
        Ok(FileStat::of(&p.metadata().map_err(|e| Error::io(p, e))?))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    stat: FileStat,
    /// When reading the file began (ns since the epoch, this host's clock).
    hashed_at_ns: i128,
    sha256: String,
}

impl Entry {
    fn trusted(&self) -> bool {
        let limit = self.hashed_at_ns - RACY_NS;
        self.stat.mtime_ns < limit && self.stat.ctime_ns < limit
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HashesFile {
    format: u32,
    entries: Vec<Entry>,
}

/// SHA-256 of files, remembered by their status (the default: nothing
/// remembered, nothing saved).
#[derive(Default)]
pub struct HashCache {
    dir: Option<PathBuf>,
    old: BTreeMap<(u64, u64), Entry>,
    new: BTreeMap<(u64, u64), Entry>,
    /// Bytes read to hash files in this run (what the cache did not spare).
    pub hashed_bytes: u64,
}

impl HashCache {
    /// The cache in `dir`; with `rehash`, earlier entries are not used (but
    /// the ones made now are saved).
    pub fn open(dir: Option<&Path>, rehash: bool) -> HashCache {
        let old = match dir {
            Some(d) if !rehash => std::fs::read(d.join(HASHES))
                .ok()
                .and_then(|b| serde_json::from_slice::<HashesFile>(&b).ok())
                .filter(|f| f.format == FORMAT)
                .map(|f| {
                    f.entries
                        .into_iter()
                        .map(|e| ((e.stat.dev, e.stat.ino), e))
                        .collect()
                })
                .unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        HashCache {
            dir: dir.map(Path::to_path_buf),
            old,
            new: BTreeMap::new(),
            hashed_bytes: 0,
        }
    }

    /// The remembered SHA-256 of the file at `p`, if its status is exactly
    /// the one recorded (and the entry not racy); reads only its status.
    pub fn remembered(&mut self, p: &Path) -> Option<[u8; 32]> {
        let stat = FileStat::of_path(p).ok()?;
        self.lookup(stat)
    }

    fn lookup(&mut self, stat: FileStat) -> Option<[u8; 32]> {
        let key = (stat.dev, stat.ino);
        let e = self.old.get(&key)?;
        if e.stat != stat || !e.trusted() {
            return None;
        }
        let sum = crate::base::manifest::from_hex32(&e.sha256)?;
        self.new.insert(key, e.clone());
        Some(sum)
    }

    /// The SHA-256 of the regular file at `p`: remembered when its status
    /// is exactly the one recorded (and not racy), else read and hashed.
    pub fn sha256(&mut self, p: &Path) -> Result<[u8; 32]> {
        let f = File::open(p).map_err(|e| Error::io(p, e))?;
        let before = FileStat::of(&f.metadata().map_err(|e| Error::io(p, e))?);
        let key = (before.dev, before.ino);
        if let Some(sum) = self.lookup(before) {
            return Ok(sum);
        }
        let started = now_ns();
        let (sum, n) = imagegen::source::sha256_open_file(&f).map_err(|e| Error::io(p, e))?;
        self.hashed_bytes += n;
        // A file that changed while it was read is not remembered.
        let after = FileStat::of(&f.metadata().map_err(|e| Error::io(p, e))?);
        if after == before {
            self.new.insert(
                key,
                Entry {
                    stat: before,
                    hashed_at_ns: started,
                    sha256: imagegen::source::to_hex(&sum),
                },
            );
        }
        Ok(sum)
    }

    /// Writes the entries used in this run (others are dropped), replacing
    /// the file in one rename. A cache that cannot be written only costs
    /// time next run, so failures are ignored.
    pub fn save(&self) {
        self.write(self.new.values().cloned().collect());
    }

    /// Like [`save`](Self::save), but entries not used in this run are kept
    /// too, up to `limit` entries in all, the most recently hashed first: a
    /// cache shared by runs on different inputs (`base`'s sources).
    pub fn save_keeping(&self, limit: usize) {
        let mut all = self.old.clone();
        all.extend(self.new.iter().map(|(k, e)| (*k, e.clone())));
        let mut entries: Vec<Entry> = all.into_values().collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.hashed_at_ns));
        entries.truncate(limit);
        self.write(entries);
    }

    fn write(&self, entries: Vec<Entry>) {
        let Some(dir) = &self.dir else { return };
        let file = HashesFile {
            format: FORMAT,
            entries,
        };
        let Ok(json) = serde_json::to_vec(&file) else {
            return;
        };
        let _ = std::fs::create_dir_all(dir);
        let tmp = dir.join(format!(".{HASHES}.{}", std::process::id()));
        if std::fs::write(&tmp, json).is_ok() && std::fs::rename(&tmp, dir.join(HASHES)).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn now_ns() -> i128 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::time::{Duration, SystemTime};

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    /// A file whose timestamps are old enough to be trusted: its mtime is
    /// set back, and its ctime (which only the kernel sets) is made old by
    /// waiting.
    fn settled(p: &Path, data: &[u8]) {
        std::fs::write(p, data).unwrap();
        std::thread::sleep(Duration::from_nanos(RACY_NS as u64 + 200_000_000));
    }

    fn set_mtime(p: &Path, t: SystemTime) {
        File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn an_unchanged_file_is_not_read_again_and_any_edit_is_seen() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("input.img");
        settled(&f, b"aaaa-original");
        let dir = t.path().join("cache");

        let mut c = HashCache::open(Some(&dir), false);
        assert_eq!(c.sha256(&f).unwrap(), sha(b"aaaa-original"));
        assert_eq!(c.hashed_bytes, 13);
        c.save();

        // Nothing changed: nothing read.
        let mut c = HashCache::open(Some(&dir), false);
        assert_eq!(c.sha256(&f).unwrap(), sha(b"aaaa-original"));
        assert_eq!(c.hashed_bytes, 0);
        c.save();

        // --rehash reads it anyway.
        let mut r = HashCache::open(Some(&dir), true);
        assert_eq!(r.sha256(&f).unwrap(), sha(b"aaaa-original"));
        assert_eq!(r.hashed_bytes, 13);

        // Same size, mtime put back as it was: only ctime tells, and it does.
        let mtime = f.metadata().unwrap().modified().unwrap();
        std::fs::write(&f, b"bbbb-original").unwrap();
        set_mtime(&f, mtime);
        assert_eq!(f.metadata().unwrap().modified().unwrap(), mtime);
        let mut c = HashCache::open(Some(&dir), false);
        assert_eq!(c.sha256(&f).unwrap(), sha(b"bbbb-original"));
        assert_eq!(c.hashed_bytes, 13);
    }

    #[test]
    fn a_file_changed_right_after_hashing_is_hashed_again() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("input");
        let dir = t.path().join("cache");
        std::fs::write(&f, b"one").unwrap();
        let mut c = HashCache::open(Some(&dir), false);
        assert_eq!(c.sha256(&f).unwrap(), sha(b"one"));
        c.save();
        // Within the same timestamp tick a same-size write can keep every
        // timestamp; the fresh entry is racy, so it is not trusted.
        std::fs::write(&f, b"two").unwrap();
        let mut c = HashCache::open(Some(&dir), false);
        assert_eq!(c.sha256(&f).unwrap(), sha(b"two"));
        assert_eq!(c.hashed_bytes, 3);
    }

    #[test]
    fn a_file_replaced_by_another_is_hashed_again() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("input");
        let dir = t.path().join("cache");
        settled(&f, b"first");
        let mut c = HashCache::open(Some(&dir), false);
        c.sha256(&f).unwrap();
        c.save();
        // A new inode with the same size and mtime (mv over it).
        let mtime = f.metadata().unwrap().modified().unwrap();
        let g = t.path().join("other");
        std::fs::write(&g, b"secnd").unwrap();
        set_mtime(&g, mtime);
        std::fs::rename(&g, &f).unwrap();
        let mut c = HashCache::open(Some(&dir), false);
        assert_eq!(c.sha256(&f).unwrap(), sha(b"secnd"));
    }

    #[test]
    fn a_shared_cache_keeps_other_inputs_up_to_its_limit() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
        std::fs::write(&a, b"aa").unwrap();
        std::fs::write(&b, b"bb").unwrap();
        settled(&c, b"cc");
        let dir = t.path().join("cache");
        for f in [&a, &b, &c] {
            let mut k = HashCache::open(Some(&dir), false);
            k.sha256(f).unwrap();
            k.save_keeping(2);
        }
        // a was hashed first, so it went; b and c stay.
        let file: HashesFile =
            serde_json::from_slice(&std::fs::read(dir.join(HASHES)).unwrap()).unwrap();
        assert_eq!(file.entries.len(), 2);
        let mut k = HashCache::open(Some(&dir), false);
        assert_eq!(k.remembered(&c), Some(sha(b"cc")));
        assert_eq!(k.remembered(&b), Some(sha(b"bb")));
        assert_eq!(k.remembered(&a), None);
        assert_eq!(k.hashed_bytes, 0);
    }

    #[test]
    fn a_damaged_cache_is_ignored() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("input");
        std::fs::write(&f, b"data").unwrap();
        let dir = t.path().join("cache");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(HASHES), b"{not json").unwrap();
        let mut c = HashCache::open(Some(&dir), false);
        assert_eq!(c.sha256(&f).unwrap(), sha(b"data"));
    }
}
