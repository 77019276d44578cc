//! The file-tree model: a filesystem-independent description of a tree of
//! files, and the sources that produce one.
//!
//! A tree is a sequence of [`Entry`] values (path, kind, mode, owner, times,
//! extended attributes, inode flags). A [`TreeSource`] produces that
//! sequence, always in the same order, as often as asked: once for the
//! metadata (writers such as `mkext4` need every size before any data) and
//! once more with file contents. Nothing holds file contents in memory.
//!
//! Sources: a directory ([`DirSource`]), a tarball ([`TarSource`]) and an
//! existing filesystem read through [`crate::fs::Filesystem`]
//! ([`FsSource`]). [`OwnerMap`] rewrites owners on the way.

mod dir;
mod fs_source;
mod owner_map;
mod tar_source;

pub use dir::DirSource;
pub use fs_source::{DeviceNumbers, FsSource};
pub use owner_map::OwnerMap;
pub use tar_source::TarSource;

use crate::fs::{FileKind, Timestamp};
use crate::{Error, Result};
use std::io::Read;

/// Longest name of one path component, in bytes (ext4's and most
/// filesystems' limit).
pub const NAME_MAX: usize = 255;

/// What an entry is, with what only that kind carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes; `data` says which byte ranges hold
    /// data (the rest reads as zeros and need not be stored).
    File {
        size: u64,
        data: DataMap,
    },
    Dir,
    Symlink {
        target: String,
    },
    /// Another name for the regular file at `target` (a tree path), which
    /// an earlier entry of the same pass declared.
    HardLink {
        target: String,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

/// Which bytes of a regular file hold data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataMap {
    /// Every byte.
    Dense,
    /// Only these `(offset, len)` ranges, sorted and disjoint; every other
    /// byte is a hole. Offsets and lengths are multiples of
    /// [`SPARSE_ALIGN`] except where a range ends at the end of the file.
    Sparse(Vec<(u64, u64)>),
}

/// Alignment of the ranges of a [`DataMap::Sparse`]: holes are whole
/// 4 KiB blocks, the block size every writer here uses.
pub const SPARSE_ALIGN: u64 = 4096;

/// Inode flags that change how the kernel treats a file, as the bits
/// `chattr` sets (`FS_*_FL`, identical to ext4's on-disk values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct InodeFlags(pub u32);

impl InodeFlags {
    /// `S`: synchronous updates.
    pub const SYNC: u32 = 0x8;
    /// `i`: cannot be changed, renamed, linked or removed.
    pub const IMMUTABLE: u32 = 0x10;
    /// `a`: may only be appended to.
    pub const APPEND: u32 = 0x20;
    /// `d`: skipped by dump(8).
    pub const NODUMP: u32 = 0x40;
    /// `A`: access time is not updated.
    pub const NOATIME: u32 = 0x80;
    /// `D`: synchronous directory updates.
    pub const DIRSYNC: u32 = 0x1_0000;
    /// `T`: top of a directory hierarchy for the block allocator.
    pub const TOPDIR: u32 = 0x2_0000;
    /// Every flag this model carries; anything else (extents, htree,
    /// encryption, …) describes the source's on-disk layout, not the file.
    pub const ALL: u32 = Self::SYNC
        | Self::IMMUTABLE
        | Self::APPEND
        | Self::NODUMP
        | Self::NOATIME
        | Self::DIRSYNC
        | Self::TOPDIR;

    const WORDS: [(&'static str, u32); 7] = [
        ("sync", Self::SYNC),
        ("immutable", Self::IMMUTABLE),
        ("append", Self::APPEND),
        ("nodump", Self::NODUMP),
        ("noatime", Self::NOATIME),
        ("dirsync", Self::DIRSYNC),
        ("topdir", Self::TOPDIR),
    ];

    /// Whether no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags named by words such as `immutable`, `append-only`,
    /// `append`, `nodump`; unknown words (layout flags like `extents`) are
    /// ignored because they do not describe the file.
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> InodeFlags {
        let mut bits = 0;
        for word in words {
            let word = word.as_ref().to_ascii_lowercase();
            let word = match word.as_str() {
                "append-only" | "append_only" | "appendonly" | "appnd" | "uappnd" | "sappnd" => {
                    "append"
                }
                "uchg" | "schg" | "immutable" => "immutable",
                other => other,
            };
            if let Some((_, bit)) = Self::WORDS.iter().find(|(w, _)| *w == word) {
                bits |= bit;
            }
        }
        InodeFlags(bits)
    }

    /// The set flags as words (`immutable`, `append`, …).
    pub fn words(self) -> Vec<&'static str> {
        Self::WORDS
            .iter()
            .filter(|(_, bit)| self.0 & bit != 0)
            .map(|(w, _)| *w)
            .collect()
    }
}

/// One object of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the tree, relative, `/`-separated, without `.`/`..`
    /// components; `""` is the root directory itself.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits with setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// Creation time, where the source knows it.
    pub crtime: Option<Timestamp>,
    /// Extended attributes, full names (`security.capability`), sorted.
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub flags: InodeFlags,
    /// The source's link count for regular files, when it knows it: a
    /// count of 1 tells writers no later entry links to this one.
    pub nlink: Option<u32>,
}

impl Entry {
    /// A root-owned entry with `mode` whose access, change and modification
    /// times are all `time`, with no xattrs, flags or known link count:
    /// what stamping and tests add to a tree. Set other fields with struct
    /// update syntax.
    pub fn new(path: impl Into<String>, kind: EntryKind, mode: u32, time: Timestamp) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: None,
            xattrs: Vec::new(),
            flags: InodeFlags::default(),
            nlink: None,
        }
    }

    /// The [`FileKind`] this entry creates (a hard link creates a file).
    pub fn file_kind(&self) -> FileKind {
        match self.kind {
            EntryKind::File { .. } | EntryKind::HardLink { .. } => FileKind::File,
            EntryKind::Dir => FileKind::Dir,
            EntryKind::Symlink { .. } => FileKind::Symlink,
            EntryKind::CharDevice { .. } => FileKind::CharDevice,
            EntryKind::BlockDevice { .. } => FileKind::BlockDevice,
            EntryKind::Fifo => FileKind::Fifo,
            EntryKind::Socket => FileKind::Socket,
        }
    }

    /// Bytes of data a writer must store for this entry: regular files'
    /// data ranges; 0 for everything else.
    pub fn data_bytes(&self) -> u64 {
        match &self.kind {
            EntryKind::File {
                size,
                data: DataMap::Dense,
            } => *size,
            EntryKind::File {
                data: DataMap::Sparse(ranges),
                ..
            } => ranges.iter().map(|(_, len)| len).sum(),
            _ => 0,
        }
    }
}

/// A tree that can be walked more than once, in the same order each time.
pub trait TreeSource {
    /// A short name for messages (usually the source's path).
    fn describe(&self) -> String;

    /// Walks the whole tree once, calling `visit` for every entry. The
    /// root (`""`) comes first when the source has metadata for it; other
    /// directories may come after their contents (tarballs) or not at all
    /// (writers create missing parents). With `with_data`, regular files
    /// with data come with a reader of exactly their
    /// [`Entry::data_bytes`] — for sparse files the data ranges,
    /// concatenated.
    ///
    /// Data walks exist to deliver contents: in them only `path`, `kind`
    /// and sizes are meaningful, and sources may leave symlink targets and
    /// extended attributes out to save system calls.
    ///
    /// Each walk yields the same entries in the same order; a source that
    /// changed between walks is reported as an error by the data reader
    /// (short or long read) or by the writer.
    fn walk(&mut self, with_data: bool, visit: &mut Visitor<'_>) -> Result<()>;
}

/// A tree with nothing in it (a fresh, empty filesystem).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyTree;

impl TreeSource for EmptyTree {
    fn describe(&self) -> String {
        "an empty tree".into()
    }

    fn walk(&mut self, _with_data: bool, _visit: &mut Visitor<'_>) -> Result<()> {
        Ok(())
    }
}

/// The callback of [`TreeSource::walk`].
pub type Visitor<'a> = dyn FnMut(&Entry, Option<&mut dyn Read>) -> Result<()> + 'a;

/// Checks and normalises a path taken from a source into a tree path:
/// strips a leading `./` and trailing `/`, refuses absolute paths, `..`,
/// empty names and names longer than [`NAME_MAX`]. `what` names the
/// source for the message.
pub fn normalize_path(raw: &str, what: &str) -> Result<String> {
    if raw.starts_with('/') {
        return Err(Error::Invalid(format!(
            "{what}: entry {raw:?} has an absolute path; entries must stay inside the tree"
        )));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => continue,
            ".." => {
                return Err(Error::Invalid(format!(
                    "{what}: entry {raw:?} escapes the tree through '..'"
                )))
            }
            name if name.len() > NAME_MAX => {
                return Err(Error::Invalid(format!(
                    "{what}: entry {raw:?} has a name of {} bytes (the limit is {NAME_MAX})",
                    name.len()
                )))
            }
            name if name.contains('\0') => {
                return Err(Error::Invalid(format!(
                    "{what}: entry {raw:?} has a NUL byte in its name"
                )))
            }
            name => parts.push(name),
        }
    }
    Ok(parts.join("/"))
}

/// Applies `SOURCE_DATE_EPOCH`-style clamping: any time later than
/// `limit` becomes `limit` (whole seconds).
pub fn clamp_time(t: Timestamp, limit: Option<i64>) -> Timestamp {
    match limit {
        Some(limit) if t.secs > limit || (t.secs == limit && t.nanos > 0) => Timestamp {
            secs: limit,
            nanos: 0,
        },
        _ => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_escapes_refused() {
        assert_eq!(normalize_path("./etc//ssh/", "t").unwrap(), "etc/ssh");
        assert_eq!(normalize_path(".", "t").unwrap(), "");
        assert_eq!(normalize_path("./", "t").unwrap(), "");
        assert!(normalize_path("/etc", "t").is_err());
        assert!(normalize_path("a/../../b", "t").is_err());
        assert!(normalize_path(&"x".repeat(256), "t").is_err());
        assert!(normalize_path(&"x".repeat(255), "t").is_ok());
    }

    #[test]
    fn clamping_only_lowers() {
        let t = Timestamp { secs: 10, nanos: 5 };
        assert_eq!(clamp_time(t, None), t);
        assert_eq!(clamp_time(t, Some(20)), t);
        assert_eq!(clamp_time(t, Some(10)), Timestamp { secs: 10, nanos: 0 });
        assert_eq!(clamp_time(t, Some(3)), Timestamp { secs: 3, nanos: 0 });
    }

    #[test]
    fn flag_words_round_trip() {
        let f = InodeFlags::from_words(&["immutable", "append-only", "extents", "nodump"]);
        assert_eq!(
            f.0,
            InodeFlags::IMMUTABLE | InodeFlags::APPEND | InodeFlags::NODUMP
        );
        assert_eq!(f.words(), vec!["immutable", "append", "nodump"]);
    }
}
