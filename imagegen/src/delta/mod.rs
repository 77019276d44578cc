//! Deltas: the blocks a node changed relative to its base image, as a file
//! that rebuilds the node image bit for bit from the base.
//!
//! # File format, version 1
//!
//! All integers are little-endian. Offsets are bytes of the image (the
//! decompressed disk bytes, never of a compressed file).
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8  | magic `NIMGDLT\0` (`4e 49 4d 47 44 4c 54 00`) |
//! | 8  | 4  | format version, `1` |
//! | 12 | 4  | block size *B* in bytes: a power of two, 512 ..= 1 MiB (nodeimg writes 4096) |
//! | 16 | 8  | base size *S*: length of the base image, which is also the length of the result |
//! | 24 | 32 | SHA-256 of the base image's *S* bytes |
//! | 56 | 8  | number of ranges *N* |
//! | 64 | …  | *N* range records, in ascending offset order |
//! | end − 32 | 32 | SHA-256 of every byte of the file before it |
//!
//! A range record is a 16-byte head and its data:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8 | image offset *o*: a multiple of *B* |
//! | 8  | 8 | length *l* > 0: a multiple of *B*, except for a range ending exactly at *S* |
//! | 16 | *l* | the result's bytes `[o, o + l)` |
//!
//! Ranges do not overlap and lie inside `[0, S)`; each starts at or after
//! the end of the previous one (writers merge adjacent ranges). Bytes outside
//! every range are the base's. The file ends right after the trailing
//! checksum. A reader verifies the checksum before using any range, and an
//! applier verifies the base's size and SHA-256 before it lets a result
//! exist under its final name.
//!
//! Deltas of stamped nodes hold their secrets, so delta files are created
//! with mode 0600.

mod apply;
mod write;

pub use apply::{apply_file, Patched, PatchedReader};
pub use write::{create_from_images, save_overlay, save_overlay_pending, DeltaWriter};

use crate::block::{BlockDevice, DeviceCursor};
use crate::source::{sha256_reader, to_hex, ImageSource};
use crate::{Error, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// First 8 bytes of every delta file.
pub const MAGIC: [u8; 8] = *b"NIMGDLT\0";
/// The format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Block size nodeimg writes.
pub const DEFAULT_BLOCK: u32 = 4096;

const HEADER_LEN: u64 = 64;
const RECORD_HEAD: u64 = 16;
const TRAILER_LEN: u64 = 32;
const MAX_BLOCK: u32 = 1 << 20;

/// What identifies a base image: its length and the SHA-256 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BaseId {
    pub size: u64,
    #[serde(serialize_with = "hex_digest")]
    pub sha256: [u8; 32],
}

fn hex_digest<S: serde::Serializer>(d: &[u8; 32], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&to_hex(d))
}

impl BaseId {
    /// Identity of an image file (decompressed if compressed), by streaming it.
    pub fn of_image(path: &Path) -> Result<BaseId> {
        let mut src = ImageSource::open(path)?;
        let (sha256, size) = sha256_reader(&mut src)
            .map_err(|e| Error::io_context(format!("hashing {}", path.display()), e))?;
        Ok(BaseId { size, sha256 })
    }

    /// Identity of a device's bytes.
    pub fn of_device(dev: &dyn BlockDevice) -> Result<BaseId> {
        let (sha256, size) = sha256_reader(io::BufReader::with_capacity(
            1 << 20,
            DeviceCursor::new(dev),
        ))
        .map_err(|e| Error::io_context(format!("hashing {}", dev.describe()), e))?;
        Ok(BaseId { size, sha256 })
    }
}

impl std::fmt::Display for BaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, SHA-256 {}", self.size, to_hex(&self.sha256))
    }
}

/// One changed range of the result image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeltaRange {
    /// Offset in the image.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where the data sits in the delta file.
    #[serde(skip)]
    pub data_pos: u64,
}

impl DeltaRange {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// A delta's header and range table (the data stays in the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeltaInfo {
    pub version: u32,
    pub block_size: u32,
    pub base: BaseId,
    pub ranges: Vec<DeltaRange>,
}

impl DeltaInfo {
    /// Total bytes the delta replaces.
    pub fn changed_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }

    /// Parses and verifies a whole delta stream: header, ranges (data is
    /// skipped, but hashed), trailing checksum, end of file. Memory is
    /// bounded by the number of ranges, never by their data.
    pub fn parse(reader: impl Read, what: &str) -> Result<DeltaInfo> {
        let bad = |why: String| Error::corrupt(format!("delta {what}"), why);
        let mut r = Hashing {
            inner: reader,
            hasher: Sha256::new(),
            pos: 0,
        };
        let mut head = [0u8; HEADER_LEN as usize];
        r.exact(&mut head, what)?;
        if head[0..8] != MAGIC {
            return Err(bad("not a nodeimg delta (bad magic)".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(head[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().unwrap_or_default());
        let version = u32_at(8);
        if version != VERSION {
            return Err(Error::unsupported(
                format!("delta {what}"),
                format!("format version {version} (this nodeimg reads version {VERSION})"),
            ));
        }
        let block_size = u32_at(12);
        if !block_size.is_power_of_two() || !(512..=MAX_BLOCK).contains(&block_size) {
            return Err(bad(format!(
                "block size {block_size} is not a power of two in 512..=1 MiB"
            )));
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&head[24..56]);
        let base = BaseId {
            size: u64_at(16),
            sha256,
        };
        let count = u64_at(56);
        let mut ranges = Vec::new();
        let mut prev_end = 0u64;
        for i in 0..count {
            let mut rec = [0u8; RECORD_HEAD as usize];
            r.exact(&mut rec, what)?;
            let offset = u64::from_le_bytes(rec[0..8].try_into().unwrap_or_default());
            let len = u64::from_le_bytes(rec[8..16].try_into().unwrap_or_default());
            let range = DeltaRange {
                offset,
                len,
                data_pos: r.pos,
            };
            check_range(&range, prev_end, block_size, base.size)
                .map_err(|why| bad(format!("range {i}: {why}")))?;
            r.skip(len, what)?;
            prev_end = range.end();
            ranges.push(range);
        }
        let digest: [u8; 32] = r.hasher.clone().finalize().into();
        let mut trailer = [0u8; TRAILER_LEN as usize];
        r.exact(&mut trailer, what)?;
        if trailer != digest {
            return Err(bad("checksum mismatch: the file is damaged".into()));
        }
        let mut extra = [0u8; 1];
        if r.inner
            .read(&mut extra)
            .map_err(|e| Error::io_context(what.to_string(), e))?
            != 0
        {
            return Err(bad("trailing bytes after the checksum".into()));
        }
        Ok(DeltaInfo {
            version,
            block_size,
            base,
            ranges,
        })
    }
}

/// Checks one range against the format's rules; the reason on failure.
fn check_range(
    r: &DeltaRange,
    prev_end: u64,
    block: u32,
    size: u64,
) -> std::result::Result<(), String> {
    let block = u64::from(block);
    let end = r.offset.checked_add(r.len).filter(|&e| e <= size);
    let Some(end) = end else {
        return Err(format!(
            "{} bytes at {} run past the end of the image ({size} bytes)",
            r.len, r.offset
        ));
    };
    if r.len == 0 {
        return Err(format!("empty range at {}", r.offset));
    }
    if r.offset < prev_end {
        return Err(format!(
            "offset {} overlaps or precedes the previous range (ends at {prev_end})",
            r.offset
        ));
    }
    if !r.offset.is_multiple_of(block) || (!r.len.is_multiple_of(block) && end != size) {
        return Err(format!(
            "{} bytes at {} are not aligned to the {block}-byte blocks",
            r.len, r.offset
        ));
    }
    Ok(())
}

/// A reader that hashes and counts, with "truncated" errors.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    pos: u64,
}

impl<R: Read> Hashing<R> {
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.inner
            .read_exact(buf)
            .map_err(|e| eof(e, what, self.pos))?;
        self.hasher.update(&*buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, mut n: u64, what: &str) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.exact(&mut buf[..k], what)?;
            n -= k as u64;
        }
        Ok(())
    }
}

fn eof(e: io::Error, what: &str, pos: u64) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::corrupt(
            format!("delta {what}"),
            format!("truncated after {pos} bytes"),
        )
    } else {
        Error::io_context(format!("reading delta {what}"), e)
    }
}

/// An opened, verified delta file: its table, and positioned reads of its data.
#[derive(Debug)]
pub struct Delta {
    info: DeltaInfo,
    file: File,
    path: PathBuf,
}

impl Delta {
    /// Opens and fully verifies a delta file (one sequential read).
    pub fn open(path: impl AsRef<Path>) -> Result<Delta> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let what = path.display().to_string();
        let info = DeltaInfo::parse(BufReader::with_capacity(1 << 20, &file), &what)?;
        Ok(Delta {
            info,
            file,
            path: path.to_path_buf(),
        })
    }

    /// Header and range table.
    pub fn info(&self) -> &DeltaInfo {
        &self.info
    }

    /// The changed ranges, ascending.
    pub fn ranges(&self) -> &[DeltaRange] {
        &self.info.ranges
    }

    /// The base this delta applies to.
    pub fn base(&self) -> BaseId {
        self.info.base
    }

    /// The delta file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `buf.len()` bytes of `range`'s data from `within` it.
    pub fn read_range(&self, range: &DeltaRange, within: u64, buf: &mut [u8]) -> Result<()> {
        if within + buf.len() as u64 > range.len {
            return Err(Error::OutOfBounds {
                offset: within,
                len: buf.len() as u64,
                size: range.len,
            });
        }
        self.file
            .read_exact_at(buf, range.data_pos + within)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Overwrites `buf`, which holds image bytes from `offset`, with the
    /// delta's bytes wherever a range covers it.
    pub fn patch(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset + buf.len() as u64;
        let first = self.info.ranges.partition_point(|r| r.end() <= offset);
        for r in self.info.ranges[first..]
            .iter()
            .take_while(|r| r.offset < end)
        {
            let from = r.offset.max(offset);
            let to = r.end().min(end);
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            self.read_range(r, from - r.offset, dst)?;
        }
        Ok(())
    }

    /// The one-line refusal for a base that is not this delta's.
    pub fn mismatch(&self, base_what: &str, actual: &str) -> Error {
        Error::Invalid(format!(
            "{base_what}: is not the base of delta {} ({actual}; the delta needs {})",
            self.path.display(),
            self.info.base
        ))
    }
}

#[cfg(test)]
mod tests;
