//! Creates ext4 filesystems from a file tree with the `mkext4` crate
//! (pinned: its bytes are stable within one version only).
//!
//! Two walks of the [`TreeSource`]: the first declares every entry to
//! `mkext4` (sizes included), which then freezes the complete layout and
//! emits all metadata; the second streams file contents into their final
//! places. Nothing is written before the layout is known to fit, and
//! blocks never written stay holes when the output starts out zeroed.
//!
//! Determinism: the same tree (same entries in the same order), size,
//! UUID, hash seed, inode policy, label and clamp give the same bytes.
//! With a clamp (`SOURCE_DATE_EPOCH`), every timestamp later than it
//! becomes it, and the filesystem's own times (superblock, lost+found)
//! are it.
//!
//! What `mkext4` 0.0.3 fixes, and we therefore refuse or note: 4 KiB
//! blocks and 256-byte inodes only; sizes from 16 MiB to just under
//! 16 TiB, multiples of 4 KiB; one feature set (`has_journal ext_attr
//! dir_index filetype extent flex_bg sparse_super large_file huge_file
//! dir_nlink extra_isize metadata_csum`); UTF-8 names; no API for inode
//! flags — we set the ones that matter (immutable, append-only, …) in a
//! short pass over the finished image, recomputing each inode's checksum.

use crate::block::BlockDevice;
use crate::fs::Timestamp;
use crate::tree::{clamp_time, DataMap, Entry, EntryKind, OwnerMap, TreeSource};
use crate::{Error, Result};
use mkext4::{FsBuilder, InodeCount, InodeHandle, Meta, Options, SparseSeg, SpecialKind, ROOT};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;

/// ext4 block size `mkext4` writes.
pub const BLOCK_SIZE: u64 = 4096;
/// Smallest filesystem `mkext4` makes: its smallest journal (1024
/// blocks) may take at most a quarter of the blocks.
pub const MIN_SIZE: u64 = 4096 * BLOCK_SIZE;
/// Largest filesystem `mkext4` makes (it writes no 64bit feature).
pub const MAX_SIZE: u64 = (u32::MAX as u64 - 1) * BLOCK_SIZE;

/// How many inodes the filesystem gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InodePolicy {
    /// One per 16 KiB, like `mke2fs`.
    #[default]
    Auto,
    /// This many (rounded up to fill inode-table blocks).
    Count(u32),
    /// One per this many bytes of filesystem.
    BytesPerInode(u64),
}

/// Everything that decides the bytes of the filesystem besides the tree.
#[derive(Debug, Clone)]
pub struct Ext4Options {
    /// Size in bytes: a multiple of 4096, from [`MIN_SIZE`] to [`MAX_SIZE`].
    pub size: u64,
    /// Volume label, at most 16 bytes.
    pub label: Option<String>,
    /// Filesystem UUID.
    pub uuid: [u8; 16],
    /// Directory-hash seed, as a UUID; `None` derives it from `uuid`.
    pub hash_seed: Option<[u8; 16]>,
    pub inodes: InodePolicy,
    /// Time of the superblock and of the objects the filesystem creates
    /// itself (lost+found, directories a tarball only implies).
    pub epoch: i64,
    /// `SOURCE_DATE_EPOCH`: timestamps later than this are clamped to it.
    pub clamp: Option<i64>,
    /// Owner rewrites applied to every entry of the source.
    pub owner_map: Option<OwnerMap>,
}

impl Ext4Options {
    /// Options for a filesystem of `size` bytes with the given UUID, made at
    /// `epoch` (seconds), entries later than `clamp` clamped to it. The
    /// caller passes its one time source: nothing below the command line
    /// reads the clock or `SOURCE_DATE_EPOCH`.
    pub fn new(size: u64, uuid: [u8; 16], epoch: i64, clamp: Option<i64>) -> Ext4Options {
        Ext4Options {
            size,
            label: None,
            uuid,
            hash_seed: None,
            inodes: InodePolicy::Auto,
            epoch,
            clamp,
            owner_map: None,
        }
    }

    fn check(&self) -> Result<()> {
        if !self.size.is_multiple_of(BLOCK_SIZE) {
            return Err(Error::Invalid(format!(
                "ext4 size {} is not a multiple of 4 KiB (mkext4 writes 4 KiB blocks only)",
                self.size
            )));
        }
        if self.size < MIN_SIZE || self.size > MAX_SIZE {
            return Err(Error::Invalid(format!(
                "ext4 size {} is outside what mkext4 makes ({} MiB to {} GiB)",
                self.size,
                MIN_SIZE >> 20,
                MAX_SIZE >> 30
            )));
        }
        if let Some(label) = &self.label {
            if label.len() > 16 {
                return Err(Error::Invalid(format!(
                    "ext4 label {label:?} is {} bytes; the limit is 16",
                    label.len()
                )));
            }
        }
        if !(0..=i64::from(u32::MAX)).contains(&self.epoch) {
            return Err(Error::Invalid(format!(
                "epoch {} is outside the superblock's range (1970 to 2106)",
                self.epoch
            )));
        }
        if let InodePolicy::BytesPerInode(0) = self.inodes {
            return Err(Error::Invalid("inode ratio must be positive".into()));
        }
        Ok(())
    }

    fn inode_count(&self) -> InodeCount {
        match self.inodes {
            InodePolicy::Auto => InodeCount::Auto,
            InodePolicy::Count(n) => InodeCount::Exact(n),
            InodePolicy::BytesPerInode(ratio) => {
                InodeCount::Exact(u32::try_from(self.size / ratio).unwrap_or(u32::MAX).max(1))
            }
        }
    }

    fn mkext4_options(&self) -> Options {
        let mut opts = Options::new(self.size, self.uuid, self.epoch);
        if let Some(seed) = &self.hash_seed {
            opts.hash_seed = mkext4::dirhash::seed_from_uuid(seed);
        }
        opts.label = self.label.clone();
        opts.inodes = self.inode_count();
        opts
    }
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Inodes used, the filesystem's own (1–11) included.
    pub inodes: u64,
    /// Regular-file bytes stored.
    pub data_bytes: u64,
    /// Size of the filesystem in bytes.
    pub size: u64,
}

/// Builds the filesystem described by `source` on `out`, which must be
/// exactly `opts.size` bytes. `zeroed` says the device already reads as
/// zeros (a freshly created file), so zero regions are skipped — they stay
/// holes; otherwise they are written.
///
/// Everything that can be refused (a tree that does not fit, bad names,
/// escaping paths) is refused before the first byte is written; an error
/// during the second walk (the source changed, an I/O error) leaves `out`
/// partly written.
pub fn build(
    source: &mut dyn TreeSource,
    opts: &Ext4Options,
    out: &dyn BlockDevice,
    zeroed: bool,
) -> Result<Summary> {
    build_with(source, opts, out, &mut || Ok(zeroed))
}

/// [`build`], calling `prepare` once the layout is known to fit and just
/// before the first write; it returns whether `out` now reads as zeros.
fn build_with(
    source: &mut dyn TreeSource,
    opts: &Ext4Options,
    out: &dyn BlockDevice,
    prepare: &mut dyn FnMut() -> Result<bool>,
) -> Result<Summary> {
    opts.check()?;
    if out.size() != opts.size {
        return Err(Error::Invalid(format!(
            "{}: is {} bytes but the filesystem is {}",
            out.describe(),
            out.size(),
            opts.size
        )));
    }
    let what = source.describe();
    let mut decl = Declarer::new(opts)?;
    source.walk(false, &mut |entry, _| decl.declare(entry))?;
    let Declarer {
        builder,
        fills,
        dead,
        flagged,
        need,
        ..
    } = decl;
    let inodes = need.inodes;
    let layout = builder.seal().map_err(|e| seal_error(e, opts, &need))?;

    let zeroed = prepare()?;
    let mut sink = DeviceSink::new(out, !zeroed);
    let mut writer = layout.writer(&mut sink).map_err(|e| mk_err(e, &what))?;
    let mut index: u64 = 0;
    let mut next = 0usize;
    source.walk(true, &mut |entry, data| {
        let this = index;
        index += 1;
        let Some(reader) = data else { return Ok(()) };
        while next < fills.len() && fills[next].0 < this {
            next += 1;
        }
        match fills.get(next) {
            Some(&(i, handle)) if i == this => {
                next += 1;
                if dead.contains(&i) {
                    // A later entry of the same path replaced this one.
                    return io::copy(reader, &mut io::sink())
                        .map(drop)
                        .map_err(|e| Error::io_context(entry.path.clone(), e));
                }
                writer.fill(handle, &mut &mut *reader).map_err(|e| match e {
                    mkext4::Error::Io(e) => Error::io_context(format!("{what}: {}", entry.path), e),
                    other => mk_err(other, &entry.path),
                })
            }
            _ => Err(changed(&what, &entry.path)),
        }
    })?;
    let summary = writer.finish().map_err(|e| match e {
        mkext4::Error::Invalid(why) => {
            Error::Invalid(format!("{what}: changed between the two reads ({why})"))
        }
        other => mk_err(other, &what),
    })?;
    drop(sink);
    set_inode_flags(out, &flagged)?;
    out.flush()?;
    Ok(Summary {
        inodes,
        data_bytes: summary.data_bytes,
        size: summary.image_len,
    })
}

/// Builds into a new file at `path` of `opts.size` bytes: written under a
/// temporary name in the same directory and renamed when complete, so
/// nothing half-written ever carries the final name.
pub fn build_file(source: &mut dyn TreeSource, opts: &Ext4Options, path: &Path) -> Result<Summary> {
    opts.check()?;
    let out = crate::sink::PendingFile::create(path)?;
    let dev = out.device(opts.size)?;
    let summary = build(source, opts, &dev, true)?;
    drop(dev);
    out.commit(0o644)?;
    Ok(summary)
}

/// Builds into partition `part` of the existing disk image `image`, whose
/// table is left as it is. The filesystem is `opts.size` bytes, at most
/// the partition's size (use [`partition_size`] to fill it). The source is
/// read and the layout checked before anything is written; the partition's
/// old contents are then discarded (holes punched in the image file where
/// the system allows it, zeros written otherwise).
pub fn build_in_partition(
    source: &mut dyn TreeSource,
    opts: &Ext4Options,
    image: &Path,
    part: u32,
) -> Result<Summary> {
    opts.check()?;
    crate::source::ensure_writable_image(image)?;
    let (file, start, len) = open_partition(image, part)?;
    if opts.size > len {
        return Err(Error::NoSpace(format!(
            "{}: partition {part} is {len} bytes, smaller than the {} byte filesystem asked for",
            image.display(),
            opts.size
        )));
    }
    let window = crate::block::Window::new(file.clone(), start, opts.size)?;
    build_with(source, opts, &window, &mut || {
        Ok(punch_hole(&file, start, opts.size))
    })
}

/// The size of partition `part` of `image`, rounded down to whole 4 KiB
/// blocks: the largest filesystem [`build_in_partition`] can make there.
pub fn partition_size(image: &Path, part: u32) -> Result<u64> {
    let (_, _, len) = open_partition(image, part)?;
    Ok(len / BLOCK_SIZE * BLOCK_SIZE)
}

fn open_partition(
    image: &Path,
    part: u32,
) -> Result<(std::sync::Arc<crate::block::FileDevice>, u64, u64)> {
    let file = std::sync::Arc::new(crate::block::FileDevice::open_rw(image)?);
    // `select` refuses missing, extended and table-less cases clearly.
    crate::layout::select(file.clone(), Some(part))?;
    let table = crate::layout::read_table(&*file)?;
    let p = table
        .get(part)
        .ok_or_else(|| Error::Invalid(format!("{} has no partition {part}", image.display())))?;
    Ok((file, p.start, p.size))
}

/// Discards `len` bytes at `start` of a regular image file so they read as
/// zeros and take no space; `false` when the file system or platform
/// cannot, so the caller writes zeros instead.
fn punch_hole(file: &crate::block::FileDevice, start: u64, len: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{fallocate, FallocateFlags};
        let is_file = file.file().metadata().map(|m| m.is_file()).unwrap_or(false);
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        is_file && fallocate(file.file(), flags, start as i64, len as i64).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, start, len);
        false
    }
}

fn changed(what: &str, path: &str) -> Error {
    Error::Invalid(format!(
        "{what}: {path}: the source changed between the two reads"
    ))
}

/// Converts a `mkext4` error, naming what was being done.
fn mk_err(e: mkext4::Error, context: &str) -> Error {
    match e {
        mkext4::Error::Io(e) => Error::io_context(context.to_string(), e),
        mkext4::Error::Corrupt { what, why } => Error::corrupt(what, why),
        mkext4::Error::Unsupported(why) => Error::unsupported("ext4 layout", why),
        mkext4::Error::Invalid(why) => Error::Invalid(format!("{context}: {why}")),
        other => Error::Invalid(format!("{context}: {other}")),
    }
}

fn seal_error(e: mkext4::Error, opts: &Ext4Options, need: &Need) -> Error {
    let text = e.to_string();
    if text.contains("too small") || text.contains("image full") || text.contains("inodes needed") {
        let min = need.min_size(opts.inodes);
        return Error::NoSpace(format!(
            "the tree does not fit in {} MiB ({} inodes, {} MiB of data and metadata); \
             it needs about {} MiB{}",
            opts.size >> 20,
            need.inodes,
            (need.content_blocks() * BLOCK_SIZE) >> 20,
            min.div_ceil(1 << 20),
            match opts.inodes {
                InodePolicy::Count(_) | InodePolicy::BytesPerInode(_)
                    if text.contains("inodes needed") =>
                    " or more inodes",
                _ => "",
            }
        ));
    }
    mk_err(e, "sealing the ext4 layout")
}

/// Running totals of what the tree needs, for the "does not fit" message.
#[derive(Debug, Default)]
struct Need {
    /// Inodes including the reserved first 11.
    inodes: u64,
    data_blocks: u64,
    extent_blocks: u64,
    dirs: u64,
    dirent_bytes: u64,
    other_blocks: u64,
}

impl Need {
    fn content_blocks(&self) -> u64 {
        // Directory blocks: every directory has one, names fill the rest
        // at about three quarters (htree leaves split half full), plus
        // index blocks; lost+found has 4.
        let dir_blocks = self.dirs + self.dirent_bytes.div_ceil(3072) + 4;
        self.data_blocks + self.extent_blocks + dir_blocks + self.other_blocks
    }

    /// Smallest size (whole MiB) whose free blocks after metadata hold the
    /// content and whose inode count holds the inodes — an estimate from
    /// mke2fs's (and mkext4's) geometry rules, rounded up generously.
    fn min_size(&self, policy: InodePolicy) -> u64 {
        let content = self.content_blocks() + self.content_blocks() / 50 + 64;
        let fits = |size: u64| {
            let inodes = match policy {
                InodePolicy::Auto => size / 16384,
                InodePolicy::Count(n) => u64::from(n),
                InodePolicy::BytesPerInode(r) => size / r.max(1),
            };
            let blocks = size / BLOCK_SIZE;
            inodes >= self.inodes && blocks > overhead_blocks(blocks, inodes) + content
        };
        let mut size = MIN_SIZE;
        while !fits(size) && size < MAX_SIZE {
            size = (size * 2).min(MAX_SIZE / (1 << 20) * (1 << 20));
        }
        let (mut lo, mut hi) = (size / 2, size);
        while hi - lo > 1 << 20 {
            let mid = (lo + hi) / 2 / (1 << 20) * (1 << 20);
            if fits(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi.max(MIN_SIZE)
    }
}

/// Metadata blocks of an ext4 of `blocks` blocks and about `inodes`
/// inodes: superblocks and descriptor tables (sparse_super backups),
/// bitmaps, inode tables and the journal (mke2fs's size tiers).
fn overhead_blocks(blocks: u64, inodes: u64) -> u64 {
    let groups = blocks.div_ceil(32768);
    let per_group = inodes
        .div_ceil(groups)
        .next_multiple_of(16)
        .clamp(16, 32768);
    let gdt = (groups * 32).div_ceil(BLOCK_SIZE);
    let backups = (1..groups)
        .filter(|&g| {
            let power = |mut n: u64, b: u64| {
                while n.is_multiple_of(b) {
                    n /= b;
                }
                n == 1
            };
            g == 1 || power(g, 3) || power(g, 5) || power(g, 7)
        })
        .count() as u64;
    let journal = match blocks {
        0..=32767 => 1024,
        32768..=262143 => 4096,
        262144..=524287 => 8192,
        524288..=4194303 => 16384,
        4194304..=8388607 => 32768,
        8388608..=16777215 => 65536,
        16777216..=33554431 => 131072,
        _ => 262144,
    };
    1 + gdt + backups * (1 + gdt) + 2 * groups + groups * per_group / 16 + journal
}

/// The first walk: declares every entry to the builder.
struct Declarer<'o> {
    opts: &'o Ext4Options,
    builder: FsBuilder,
    /// Tree path → handle of every directory declared so far.
    dirs: HashMap<String, InodeHandle>,
    /// Tree path → handle of regular files later entries may link to.
    files: HashMap<String, (InodeHandle, Option<u64>)>,
    /// (entry index, handle) of every file with data, ascending.
    fills: Vec<(u64, InodeHandle)>,
    /// Entry indexes whose file a later entry replaced.
    dead: HashSet<u64>,
    /// Tree path and flag bits of entries with inode flags.
    flagged: Vec<(String, u32)>,
    index: u64,
    need: Need,
}

impl<'o> Declarer<'o> {
    fn new(opts: &'o Ext4Options) -> Result<Self> {
        let builder =
            FsBuilder::new(opts.mkext4_options()).map_err(|e| mk_err(e, "ext4 options"))?;
        Ok(Declarer {
            opts,
            builder,
            dirs: HashMap::from([(String::new(), ROOT)]),
            files: HashMap::new(),
            fills: Vec::new(),
            dead: HashSet::new(),
            flagged: Vec::new(),
            index: 0,
            need: Need {
                inodes: 11,
                dirs: 1,
                ..Need::default()
            },
        })
    }

    fn time(&self, t: Timestamp) -> (i64, u32) {
        let t = clamp_time(t, self.opts.clamp);
        (t.secs, t.nanos)
    }

    fn meta(&self, entry: &Entry) -> Meta {
        let (uid, gid) = self
            .opts
            .owner_map
            .as_ref()
            .and_then(|m| m.lookup(&entry.path))
            .unwrap_or((entry.uid, entry.gid));
        let mut meta = Meta::new(entry.mode as u16 & 0o7777, uid, gid, self.time(entry.mtime));
        meta.atime = Some(self.time(entry.atime));
        meta.ctime = Some(self.time(entry.ctime));
        meta.crtime = entry.crtime.map(|t| self.time(t));
        meta
    }

    /// The handle of directory `path`, declaring it and its missing
    /// ancestors with default metadata when the source has not (yet).
    fn dir(&mut self, path: &str) -> Result<InodeHandle> {
        if let Some(&h) = self.dirs.get(path) {
            return Ok(h);
        }
        if self.files.contains_key(path) {
            return Err(Error::Invalid(format!(
                "{path}: used as a directory but is a file"
            )));
        }
        let (parent, name) = split(path);
        let parent = self.dir(parent)?;
        let owner = self.opts.owner_map.as_ref().and_then(|m| m.lookup(path));
        let (uid, gid) = owner.unwrap_or((0, 0));
        let meta = Meta::new(0o755, uid, gid, (self.opts.epoch, 0));
        let h = self
            .builder
            .mkdir(parent, name, meta)
            .map_err(|e| mk_err(e, path))?;
        self.count_dir(name);
        self.dirs.insert(path.to_string(), h);
        Ok(h)
    }

    fn count_dir(&mut self, name: &str) {
        self.need.inodes += 1;
        self.need.dirs += 1;
        self.need.dirent_bytes += dirent_len(name);
    }

    fn declare(&mut self, entry: &Entry) -> Result<()> {
        let this = self.index;
        self.index += 1;
        let meta = self.meta(entry);
        let path = entry.path.as_str();
        if path.is_empty() {
            if entry.kind != EntryKind::Dir {
                return Err(Error::Invalid(
                    "the root of the tree is not a directory".into(),
                ));
            }
            self.builder
                .set_meta(ROOT, meta)
                .map_err(|e| mk_err(e, "/"))?;
            return self.finish(entry, ROOT);
        }
        if path == "lost+found" || path.starts_with("lost+found/") {
            return lost_and_found(entry);
        }
        let (parent_path, name) = split(path);
        let parent = self.dir(parent_path)?;
        self.replace_existing(entry, parent, name)?;
        if let Some(&h) = self.dirs.get(path) {
            // A directory declared again (or implied earlier): update it.
            self.builder
                .set_meta(h, meta)
                .map_err(|e| mk_err(e, path))?;
            return self.finish(entry, h);
        }
        let ctx = |e| mk_err(e, path);
        let handle = match &entry.kind {
            EntryKind::Dir => {
                let h = self.builder.mkdir(parent, name, meta).map_err(ctx)?;
                self.count_dir(name);
                self.dirs.insert(path.to_string(), h);
                return self.finish(entry, h);
            }
            EntryKind::File { size, data } => {
                let h = match data {
                    DataMap::Dense => self.builder.file(parent, name, meta, *size),
                    DataMap::Sparse(ranges) => {
                        let segments = segments(*size, ranges);
                        self.builder.file_sparse(parent, name, meta, &segments)
                    }
                }
                .map_err(ctx)?;
                self.count_file(entry);
                if entry.data_bytes() > 0 {
                    self.fills.push((this, h));
                }
                if entry.nlink != Some(1) {
                    let fill = (entry.data_bytes() > 0).then_some(this);
                    self.files.insert(path.to_string(), (h, fill));
                }
                h
            }
            EntryKind::HardLink { target } => {
                let Some(&(h, _)) = self.files.get(target.as_str()) else {
                    return Err(Error::Invalid(format!(
                        "{path}: hard link to {target:?}, which is not a regular file seen before it"
                    )));
                };
                self.builder.hardlink(parent, name, h).map_err(ctx)?;
                self.need.dirent_bytes += dirent_len(name);
                // Metadata and xattrs belong to the inode, set by its
                // first name.
                return Ok(());
            }
            EntryKind::Symlink { target } => {
                if target.len() > 59 {
                    self.need.other_blocks += 1;
                }
                self.builder
                    .symlink(parent, name, target, meta)
                    .map_err(ctx)?
            }
            EntryKind::CharDevice { major, minor } => {
                let kind = SpecialKind::Char {
                    major: *major,
                    minor: *minor,
                };
                self.builder.mknod(parent, name, meta, kind).map_err(ctx)?
            }
            EntryKind::BlockDevice { major, minor } => {
                let kind = SpecialKind::Block {
                    major: *major,
                    minor: *minor,
                };
                self.builder.mknod(parent, name, meta, kind).map_err(ctx)?
            }
            EntryKind::Fifo => self
                .builder
                .mknod(parent, name, meta, SpecialKind::Fifo)
                .map_err(ctx)?,
            EntryKind::Socket => self
                .builder
                .mknod(parent, name, meta, SpecialKind::Socket)
                .map_err(ctx)?,
        };
        if !matches!(entry.kind, EntryKind::File { .. }) {
            self.need.inodes += 1;
            self.need.dirent_bytes += dirent_len(name);
        }
        self.finish(entry, handle)
    }

    /// A later tarball entry replaces an earlier one of the same path
    /// (what extraction does); a directory replaced by a directory is
    /// updated in place instead.
    fn replace_existing(&mut self, entry: &Entry, parent: InodeHandle, name: &str) -> Result<()> {
        let path = entry.path.as_str();
        let was_dir = self.dirs.contains_key(path);
        if was_dir && entry.kind == EntryKind::Dir {
            return Ok(());
        }
        let old_file = self.files.get(path).copied();
        if !was_dir && old_file.is_none() {
            return Ok(());
        }
        self.builder
            .remove(parent, name)
            .map_err(|e| mk_err(e, path))?;
        if was_dir {
            let prefix = format!("{path}/");
            self.dirs
                .retain(|p, _| p != path && !p.starts_with(&prefix));
            self.files.retain(|p, _| !p.starts_with(&prefix));
        }
        if let Some((_, Some(fill))) = self.files.remove(path) {
            self.dead.insert(fill);
        }
        Ok(())
    }

    fn count_file(&mut self, entry: &Entry) {
        self.need.inodes += 1;
        self.need.dirent_bytes += dirent_len(split(&entry.path).1);
        if let EntryKind::File { size, data } = &entry.kind {
            let (blocks, runs) = match data {
                DataMap::Dense => (size.div_ceil(BLOCK_SIZE), 1),
                DataMap::Sparse(r) => (
                    r.iter().map(|(_, l)| l.div_ceil(BLOCK_SIZE)).sum(),
                    r.len() as u64,
                ),
            };
            self.need.data_blocks += blocks;
            let extents = runs + blocks / 32768;
            if extents > 4 {
                self.need.extent_blocks += extents.div_ceil(340) + 1;
            }
        }
    }

    /// Extended attributes and flags, on the entry's inode.
    fn finish(&mut self, entry: &Entry, handle: InodeHandle) -> Result<()> {
        let mut xattr_bytes = 0;
        for (name, value) in &entry.xattrs {
            self.builder
                .set_xattr(handle, name, value)
                .map_err(|e| mk_err(e, &format!("{}: xattr {name}", entry.path)))?;
            xattr_bytes += 16 + name.len() + value.len();
        }
        // What does not fit the inode's 96 spare bytes takes a block.
        if xattr_bytes > 80 {
            self.need.other_blocks += 1;
        }
        if !entry.flags.is_empty() {
            self.flagged.push((entry.path.clone(), entry.flags.0));
        }
        Ok(())
    }
}

/// `mkext4` always makes `/lost+found` itself: the source's own is
/// skipped when it is an empty directory (what every ext4 and most root
/// trees have) and refused otherwise, since its contents would need a
/// directory we cannot declare.
fn lost_and_found(entry: &Entry) -> Result<()> {
    match (&entry.kind, entry.path.as_str()) {
        (EntryKind::Dir, "lost+found") => Ok(()),
        (_, "lost+found") => Err(Error::Invalid(
            "/lost+found in the source is not a directory; ext4 needs that name for its own".into(),
        )),
        (_, path) => Err(Error::Invalid(format!(
            "/{path}: the source's lost+found is not empty; ext4 makes its own lost+found, \
             so move recovered files elsewhere first"
        ))),
    }
}

/// Splits a tree path into parent and last name (`"a/b"` → `("a", "b")`).
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// Bytes a directory entry of `name` takes.
fn dirent_len(name: &str) -> u64 {
    (8 + name.len() as u64).next_multiple_of(4)
}

/// The data ranges of a sparse file as `mkext4` segments.
fn segments(size: u64, ranges: &[(u64, u64)]) -> Vec<SparseSeg> {
    let mut out = Vec::with_capacity(ranges.len() * 2 + 1);
    let mut pos = 0;
    for &(offset, len) in ranges {
        if offset > pos {
            out.push(SparseSeg::Hole(offset - pos));
        }
        if len > 0 {
            out.push(SparseSeg::Data(len));
        }
        pos = offset + len;
    }
    if size > pos {
        out.push(SparseSeg::Hole(size - pos));
    }
    out
}

/// `mkext4`'s output contract over a [`BlockDevice`].
struct DeviceSink<'d> {
    dev: &'d dyn BlockDevice,
    write_zeros: bool,
    zeros: Vec<u8>,
}

impl<'d> DeviceSink<'d> {
    fn new(dev: &'d dyn BlockDevice, write_zeros: bool) -> Self {
        DeviceSink {
            dev,
            write_zeros,
            zeros: if write_zeros {
                vec![0; 1 << 20]
            } else {
                Vec::new()
            },
        }
    }
}

fn to_io(e: Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl mkext4::RegionSink for DeviceSink<'_> {
    fn data(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.dev.write_at(offset, bytes).map_err(to_io)
    }

    fn zeros(&mut self, mut offset: u64, mut len: u64) -> io::Result<()> {
        if !self.write_zeros {
            return crate::block::check_bounds(offset, len as usize, self.dev.size())
                .map_err(to_io);
        }
        while len > 0 {
            let n = len.min(self.zeros.len() as u64) as usize;
            self.dev.write_at(offset, &self.zeros[..n]).map_err(to_io)?;
            offset += n as u64;
            len -= n as u64;
        }
        Ok(())
    }
}

/// Positioned reads over a [`BlockDevice`] for `mkext4`'s reader.
struct DeviceReader<'d>(&'d dyn BlockDevice);

impl mkext4::reader::ReadAt for DeviceReader<'_> {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_at(offset, buf).map_err(to_io)
    }
}

/// Sets inode flags `mkext4` has no API for: finds each inode through the
/// finished image, ORs the bits into `i_flags` and rewrites its checksum.
fn set_inode_flags(dev: &dyn BlockDevice, flagged: &[(String, u32)]) -> Result<()> {
    if flagged.is_empty() {
        return Ok(());
    }
    let fs = mkext4::reader::Fs::open(DeviceReader(dev))
        .map_err(|e| mk_err(e, "reading back the new filesystem"))?;
    let sb = fs.superblock();
    let (ipg, isize) = (u64::from(sb.inodes_per_group), u64::from(sb.inode_size));
    for (path, bits) in flagged {
        let ino = fs
            .resolve(&format!("/{path}"))
            .map_err(|e| mk_err(e, path))?;
        let mut raw = fs.inode_raw(ino).map_err(|e| mk_err(e, path))?;
        let (group, slot) = ((u64::from(ino) - 1) / ipg, (u64::from(ino) - 1) % ipg);
        let table = fs
            .group_desc(group)
            .map_err(|e| mk_err(e, path))?
            .inode_table;
        let flags = u32::from_le_bytes([raw[0x20], raw[0x21], raw[0x22], raw[0x23]]) | bits;
        raw[0x20..0x24].copy_from_slice(&flags.to_le_bytes());
        let generation = u32::from_le_bytes([raw[0x64], raw[0x65], raw[0x66], raw[0x67]]);
        let sum = mkext4::csum::inode(fs.fs_seed(), ino, generation, &raw);
        raw[0x7C..0x7E].copy_from_slice(&(sum as u16).to_le_bytes());
        raw[0x82..0x84].copy_from_slice(&((sum >> 16) as u16).to_le_bytes());
        dev.write_at(table * BLOCK_SIZE + slot * isize, &raw)?;
        // The reader re-verifies the checksum we just wrote.
        fs.inode(ino).map_err(|e| mk_err(e, path))?;
    }
    Ok(())
}

/// A random UUID (version 4) from the system's random source.
pub fn random_uuid() -> Result<[u8; 16]> {
    Ok(*uuid::Uuid::new_v4().as_bytes())
}

/// Parses a UUID in its usual text form (`8-4-4-4-12` hex digits).
pub fn parse_uuid(text: &str) -> Result<[u8; 16]> {
    uuid::Uuid::try_parse(text)
        .map(|u| *u.as_bytes())
        .map_err(|e| Error::Invalid(format!("{text:?} is not a UUID: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;
    use crate::tree::{TreeSource, Visitor};

    /// A tree held in memory: entries plus file contents.
    struct ListSource(Vec<(Entry, Vec<u8>)>);

    impl TreeSource for ListSource {
        fn describe(&self) -> String {
            "list".into()
        }
        fn walk(&mut self, with_data: bool, visit: &mut Visitor<'_>) -> Result<()> {
            for (entry, data) in &self.0 {
                if with_data && entry.data_bytes() > 0 {
                    visit(entry, Some(&mut &data[..]))?;
                } else {
                    visit(entry, None)?;
                }
            }
            Ok(())
        }
    }

    fn entry(path: &str, kind: EntryKind) -> Entry {
        let t = Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        };
        Entry::new(path, kind, 0o644, t)
    }

    fn opts(size: u64) -> Ext4Options {
        Ext4Options {
            size,
            label: Some("t".into()),
            uuid: [7; 16],
            hash_seed: None,
            inodes: InodePolicy::Auto,
            epoch: 1_700_000_000,
            clamp: Some(1_700_000_000),
            owner_map: None,
        }
    }

    fn file(path: &str, data: &[u8]) -> (Entry, Vec<u8>) {
        let kind = EntryKind::File {
            size: data.len() as u64,
            data: DataMap::Dense,
        };
        (entry(path, kind), data.to_vec())
    }

    fn read_back(dev: &MemDevice, path: &str) -> Vec<u8> {
        let image = dev.to_vec();
        let fs = mkext4::reader::Fs::open(&image[..]).unwrap();
        fs.read_file(fs.resolve(path).unwrap()).unwrap()
    }

    #[test]
    fn later_tar_entries_replace_earlier_ones_and_parents_are_implied() {
        let mut src = ListSource(vec![
            file("a/b/c", b"first"),
            file("a/b/c", b"second!"),
            (entry("a", EntryKind::Dir), Vec::new()),
        ]);
        let dev = MemDevice::zeroed(16 << 20);
        build(&mut src, &opts(16 << 20), &dev, true).unwrap();
        assert_eq!(read_back(&dev, "/a/b/c"), b"second!");
    }

    #[test]
    fn too_small_says_how_much_is_needed_and_writes_nothing() {
        let big = vec![1u8; 20 << 20];
        let mut src = ListSource(vec![file("big", &big)]);
        let dev = MemDevice::zeroed(16 << 20);
        let err = build(&mut src, &opts(16 << 20), &dev, true).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("does not fit in 16 MiB"), "{text}");
        assert!(dev.to_vec().iter().all(|&b| b == 0), "nothing written");
        // The estimate is enough.
        let needed: u64 = text
            .split("needs about ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let dev = MemDevice::zeroed((needed << 20) as usize);
        build(&mut src, &opts(needed << 20), &dev, true).unwrap();
        assert_eq!(read_back(&dev, "/big"), big);
    }

    #[test]
    fn the_sources_lost_and_found_is_skipped_when_empty_and_refused_otherwise() {
        let dev = MemDevice::zeroed(16 << 20);
        let mut empty = ListSource(vec![(entry("lost+found", EntryKind::Dir), Vec::new())]);
        build(&mut empty, &opts(16 << 20), &dev, true).unwrap();
        let mut full = ListSource(vec![
            (entry("lost+found", EntryKind::Dir), Vec::new()),
            file("lost+found/#1234", b"recovered"),
        ]);
        let err = build(&mut full, &opts(16 << 20), &dev, true).unwrap_err();
        assert!(err.to_string().contains("lost+found is not empty"), "{err}");
    }

    #[test]
    fn hard_link_to_unknown_target_is_refused() {
        let mut src = ListSource(vec![(
            entry(
                "x",
                EntryKind::HardLink {
                    target: "nope".into(),
                },
            ),
            Vec::new(),
        )]);
        let dev = MemDevice::zeroed(16 << 20);
        let err = build(&mut src, &opts(16 << 20), &dev, true).unwrap_err();
        assert!(
            err.to_string().contains("not a regular file seen before"),
            "{err}"
        );
    }

    #[test]
    fn sparse_segments_cover_the_file() {
        use SparseSeg::*;
        assert_eq!(
            segments(20000, &[(4096, 4096), (12288, 7712)]),
            vec![Hole(4096), Data(4096), Hole(4096), Data(7712)]
        );
        assert_eq!(segments(10000, &[]), vec![Hole(10000)]);
        assert_eq!(
            segments(3 * 4096, &[(0, 4096)]),
            vec![Data(4096), Hole(8192)]
        );
    }

    #[test]
    fn uuids_parse() {
        let u = parse_uuid("01234567-89ab-cdef-0123-456789abcdef").unwrap();
        assert_eq!(u[0], 0x01);
        assert_eq!(u[15], 0xef);
        assert!(parse_uuid("zz234567-89ab-cdef-0123-456789abcdef").is_err());
        let r = random_uuid().unwrap();
        assert_eq!(r[6] >> 4, 4);
    }
}
