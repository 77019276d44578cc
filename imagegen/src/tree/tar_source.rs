//! A tarball as a tree source.
//!
//! Everything comes from the headers: mode, numeric owner (user and group
//! names are ignored), times (PAX `mtime`/`atime`/`ctime` with their
//! fractions, else the header's mtime), symlinks, hard links, device
//! nodes, FIFOs, and extended attributes from PAX `SCHILY.xattr.NAME`
//! records (what GNU tar `--xattrs` and `mmdebstrap` write); PAX
//! `SCHILY.fflags` gives inode flags. Each walk reads the archive again
//! from the start through the opener — a compressed archive is
//! decompressed twice rather than spooled to disk.

use super::{normalize_path, DataMap, Entry, EntryKind, InodeFlags, TreeSource, Visitor};
use crate::fs::Timestamp;
use crate::source::ImageSource;
use crate::{Error, Result};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Opens the archive's (decompressed) byte stream from its start.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn Read>>>;

/// A tarball read as a tree; see the module documentation.
pub struct TarSource {
    name: String,
    opener: Opener,
}

impl std::fmt::Debug for TarSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarSource")
            .field("name", &self.name)
            .finish()
    }
}

impl TarSource {
    /// A tarball whose uncompressed bytes `opener` yields, from the start,
    /// each time it is called; `name` is used in messages.
    pub fn from_opener(name: impl Into<String>, opener: Opener) -> TarSource {
        TarSource {
            name: name.into(),
            opener,
        }
    }

    /// A tarball file, plain or gzip-, xz- or zstd-compressed (recognised
    /// by its magic bytes through [`ImageSource`]).
    pub fn open(path: &Path) -> Result<TarSource> {
        let path: PathBuf = path.to_path_buf();
        // Open once now so a missing file is reported before any work.
        ImageSource::open(&path)?;
        let opener_path = path.clone();
        Ok(TarSource::from_opener(
            path.display().to_string(),
            Box::new(move || {
                let stream = ImageSource::open(&opener_path)?;
                Ok(Box::new(io::BufReader::with_capacity(1 << 20, stream)) as Box<dyn Read>)
            }),
        ))
    }
}

/// Parses a PAX time (`1700000000.123456789`, possibly negative).
fn pax_time(value: &[u8]) -> Option<Timestamp> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: u32 = digits.parse().ok()?;
    if secs < 0 && nanos > 0 {
        // -1.5 means 1.5 s before the epoch.
        return Some(Timestamp {
            secs: secs - 1,
            nanos: 1_000_000_000 - nanos,
        });
    }
    Some(Timestamp { secs, nanos })
}

fn io_err(name: &str, e: io::Error) -> Error {
    Error::io_context(format!("tarball {name}"), e)
}

impl TarSource {
    fn entry<R: Read>(&self, tar_entry: &mut tar::Entry<'_, R>) -> Result<Option<Entry>> {
        let name = &self.name;
        let raw_path = tar_entry.path_bytes().into_owned();
        let raw_path = String::from_utf8(raw_path).map_err(|e| {
            Error::unsupported(
                "file name",
                format!("tarball {name}: entry {:?} is not UTF-8", e.as_bytes()),
            )
        })?;
        let header = tar_entry.header().clone();
        let kind_byte = header.entry_type();
        use tar::EntryType as T;
        let link = |entry: &tar::Entry<'_, R>| -> Result<String> {
            let bytes = entry.link_name_bytes().ok_or_else(|| {
                Error::corrupt(
                    format!("tarball {name}"),
                    format!("link {raw_path:?} has no target"),
                )
            })?;
            String::from_utf8(bytes.into_owned()).map_err(|_| {
                Error::unsupported(
                    "link target",
                    format!("tarball {name}: target of {raw_path:?} is not UTF-8"),
                )
            })
        };
        let device = |h: &tar::Header| -> Result<(u32, u32)> {
            let major = h.device_major().map_err(|e| io_err(name, e))?.unwrap_or(0);
            let minor = h.device_minor().map_err(|e| io_err(name, e))?.unwrap_or(0);
            Ok((major, minor))
        };
        let kind = match kind_byte {
            T::Regular | T::Continuous | T::GNUSparse => EntryKind::File {
                size: tar_entry.size(),
                data: DataMap::Dense,
            },
            T::Directory => EntryKind::Dir,
            T::Symlink => EntryKind::Symlink {
                target: link(tar_entry)?,
            },
            T::Link => EntryKind::HardLink {
                target: normalize_path(&link(tar_entry)?, &format!("tarball {name}"))?,
            },
            T::Char => {
                let (major, minor) = device(&header)?;
                EntryKind::CharDevice { major, minor }
            }
            T::Block => {
                let (major, minor) = device(&header)?;
                EntryKind::BlockDevice { major, minor }
            }
            T::Fifo => EntryKind::Fifo,
            // Global PAX headers carry defaults for later entries; the
            // records we use (times, xattrs) are per file in practice.
            T::XGlobalHeader => return Ok(None),
            other => {
                return Err(Error::unsupported(
                    "tar entry type",
                    format!(
                        "tarball {name}: entry {raw_path:?} has type {:?}",
                        other.as_byte() as char
                    ),
                ))
            }
        };
        let path = normalize_path(&raw_path, &format!("tarball {name}"))?;
        let mode = header.mode().map_err(|e| io_err(name, e))? & 0o7777;
        let id = |v: u64, what: &str| -> Result<u32> {
            u32::try_from(v).map_err(|_| {
                Error::corrupt(
                    format!("tarball {name}"),
                    format!("{raw_path:?}: {what} {v} does not fit 32 bits"),
                )
            })
        };
        let mut uid = id(header.uid().map_err(|e| io_err(name, e))?, "uid")?;
        let mut gid = id(header.gid().map_err(|e| io_err(name, e))?, "gid")?;
        let mtime_secs = header.mtime().map_err(|e| io_err(name, e))?;
        let mut mtime = Timestamp {
            secs: i64::try_from(mtime_secs).unwrap_or(i64::MAX),
            nanos: 0,
        };
        let mut atime = None;
        let mut ctime = None;
        let mut xattrs = Vec::new();
        let mut flags = InodeFlags::default();
        if let Some(pax) = tar_entry.pax_extensions().map_err(|e| io_err(name, e))? {
            for record in pax {
                let record = record.map_err(|e| io_err(name, e))?;
                let key = record.key().map_err(|_| {
                    Error::corrupt(format!("tarball {name}"), "PAX key is not UTF-8")
                })?;
                let value = record.value_bytes();
                let bad = || {
                    Error::corrupt(
                        format!("tarball {name}"),
                        format!("{raw_path:?}: bad PAX {key} value"),
                    )
                };
                let number = || -> Result<u64> {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(bad)
                };
                match key {
                    "mtime" => mtime = pax_time(value).ok_or_else(bad)?,
                    "atime" => atime = Some(pax_time(value).ok_or_else(bad)?),
                    "ctime" => ctime = Some(pax_time(value).ok_or_else(bad)?),
                    "uid" => uid = id(number()?, "uid")?,
                    "gid" => gid = id(number()?, "gid")?,
                    "SCHILY.fflags" => {
                        let words = String::from_utf8_lossy(value);
                        let words: Vec<&str> = words.split(',').map(str::trim).collect();
                        flags = InodeFlags::from_words(&words);
                    }
                    _ => {
                        if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                            xattrs.push((attr.to_string(), value.to_vec()));
                        }
                    }
                }
            }
        }
        xattrs.sort();
        Ok(Some(Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            atime: atime.unwrap_or(mtime),
            mtime,
            ctime: ctime.unwrap_or(mtime),
            crtime: None,
            xattrs,
            flags,
            nlink: None,
        }))
    }
}

impl TreeSource for TarSource {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn walk(&mut self, with_data: bool, visit: &mut Visitor<'_>) -> Result<()> {
        let stream = (self.opener)()?;
        let mut archive = tar::Archive::new(stream);
        let name = self.name.clone();
        for tar_entry in archive.entries().map_err(|e| io_err(&name, e))? {
            let mut tar_entry = tar_entry.map_err(|e| truncated(&name, e))?;
            let Some(entry) = self.entry(&mut tar_entry)? else {
                continue;
            };
            if with_data && entry.data_bytes() > 0 {
                visit(&entry, Some(&mut tar_entry)).map_err(|e| match e {
                    Error::IoContext { context, source } => Error::IoContext {
                        context: format!("tarball {name}: {}: {context}", entry.path),
                        source,
                    },
                    other => other,
                })?;
            } else {
                visit(&entry, None)?;
            }
        }
        Ok(())
    }
}

fn truncated(name: &str, e: io::Error) -> Error {
    // The tar crate reports a short archive as UnexpectedEof or as an
    // "unexpected EOF" message of another kind.
    if e.kind() == io::ErrorKind::UnexpectedEof || e.to_string().contains("unexpected EOF") {
        Error::corrupt(
            format!("tarball {name}"),
            format!("truncated (ends inside an entry): {e}"),
        )
    } else {
        io_err(name, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;
    use crate::mkfs::ext4::{build, Ext4Options, InodePolicy};
    use proptest::prelude::*;

    /// A small valid tarball: a directory, files, a symlink, a hard link,
    /// a FIFO and PAX records.
    fn sample() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h.clone(), "etc/", &b""[..]).unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(5);
        b.append_pax_extensions([
            ("SCHILY.xattr.user.a", &b"v"[..]),
            ("mtime", &b"1700000000.25"[..]),
        ])
        .unwrap();
        b.append_data(&mut h.clone(), "etc/hostname", &b"node1"[..])
            .unwrap();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h.clone(), "etc/link", "hostname")
            .unwrap();
        h.set_entry_type(tar::EntryType::Link);
        b.append_link(&mut h.clone(), "etc/hard", "etc/hostname")
            .unwrap();
        h.set_entry_type(tar::EntryType::Fifo);
        b.append_data(&mut h, "run-fifo", &b""[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn source(bytes: Vec<u8>) -> TarSource {
        TarSource::from_opener(
            "test",
            Box::new(move || Ok(Box::new(io::Cursor::new(bytes.clone())) as Box<dyn Read>)),
        )
    }

    fn opts() -> Ext4Options {
        Ext4Options {
            size: 16 << 20,
            label: None,
            uuid: [3; 16],
            hash_seed: None,
            inodes: InodePolicy::Auto,
            epoch: 1_700_000_000,
            clamp: None,
            owner_map: None,
        }
    }

    #[test]
    fn headers_give_kinds_times_and_xattrs() {
        let mut entries = Vec::new();
        source(sample())
            .walk(false, &mut |e, _| {
                entries.push(e.clone());
                Ok(())
            })
            .unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["etc", "etc/hostname", "etc/link", "etc/hard", "run-fifo"]
        );
        assert_eq!(
            entries[1].xattrs,
            vec![("user.a".to_string(), b"v".to_vec())]
        );
        assert_eq!(
            entries[1].mtime,
            Timestamp {
                secs: 1_700_000_000,
                nanos: 250_000_000
            }
        );
        assert_eq!(
            entries[3].kind,
            EntryKind::HardLink {
                target: "etc/hostname".into()
            }
        );
        assert_eq!(entries[4].kind, EntryKind::Fifo);
        build(
            &mut source(sample()),
            &opts(),
            &MemDevice::zeroed(16 << 20),
            true,
        )
        .unwrap();
    }

    #[test]
    fn pax_times_parse() {
        assert_eq!(pax_time(b"12"), Some(Timestamp { secs: 12, nanos: 0 }));
        assert_eq!(
            pax_time(b"-1.5"),
            Some(Timestamp {
                secs: -2,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            pax_time(b"1.1234567899"),
            Some(Timestamp {
                secs: 1,
                nanos: 123_456_789
            })
        );
        assert_eq!(pax_time(b"x"), None);
        assert_eq!(pax_time(b"1.x"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Damaged tarballs give entries or an error, never a panic, and
        /// ext4 creation accepts or refuses what they give.
        #[test]
        fn damaged_tarballs_never_panic(
            flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8),
            cut in 0usize..5120,
        ) {
            let mut bytes = sample();
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            bytes.truncate(cut.max(1).min(bytes.len()));
            let _ = build(&mut source(bytes), &opts(), &MemDevice::zeroed(16 << 20), true);
        }

        #[test]
        fn pax_time_never_panics(text in "[-0-9.]{0,30}") {
            let _ = pax_time(text.as_bytes());
        }
    }
}
