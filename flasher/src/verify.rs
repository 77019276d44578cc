//! Read-back verification: SHA-256 of every written block of the image,
//! compared with the same block read back from the device past the page cache.

use crate::aligned::AlignedBuf;
use crate::progress::{Observer, Phase};
use crate::target::Target;
use crate::{Error, Result};
use imagegen::block::BlockDevice;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};

/// Granularity of the hashes: a mismatch is located to within this many bytes
/// (to the byte when the source can be re-read).
pub const HASH_BLOCK: usize = 256 << 10;

/// One hashed block of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHash {
    /// Offset of the block in the image (and on the device).
    pub offset: u64,
    /// Length in bytes (at most [`HASH_BLOCK`]).
    pub len: u32,
    /// SHA-256 of the block.
    pub sha256: [u8; 32],
}

/// Hashes of every written block, in offset order.
pub type HashList = Vec<BlockHash>;

/// Builds a [`HashList`] from the chunks the reader produces.
#[derive(Debug, Default)]
pub struct Hasher {
    list: HashList,
}

impl Hasher {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes `data`, which sits at `offset` in the image.
    pub fn add(&mut self, offset: u64, data: &[u8]) {
        for (i, block) in data.chunks(HASH_BLOCK).enumerate() {
            self.list.push(BlockHash {
                offset: offset + (i * HASH_BLOCK) as u64,
                len: block.len() as u32,
                sha256: Sha256::digest(block).into(),
            });
        }
    }

    /// The hashes, sorted by offset.
    pub fn finish(mut self) -> HashList {
        self.list.sort_by_key(|b| b.offset);
        self.list
    }
}

/// Reads back every block of `hashes` from `target` and compares. On a
/// difference, `source` (when the image can be re-read) pins the first
/// differing byte; otherwise the block is named.
pub fn verify_target(
    target: &dyn Target,
    hashes: &[BlockHash],
    source: Option<&dyn BlockDevice>,
    index: usize,
    observer: &dyn Observer,
    cancel: &AtomicBool,
) -> Result<()> {
    let total: u64 = hashes.iter().map(|h| h.len as u64).sum();
    let mut done = 0;
    let mut buf = AlignedBuf::new(crate::writer::CHUNK);
    let dev = target.describe();
    observer.progress(index, Phase::Verify, 0, total);
    let mut i = 0;
    while i < hashes.len() {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted {
                device: dev,
                written: done,
            });
        }
        // Read a run of contiguous blocks at once.
        let start = hashes[i].offset;
        let mut end = start + hashes[i].len as u64;
        let mut j = i + 1;
        while j < hashes.len()
            && hashes[j].offset == end
            && end + hashes[j].len as u64 - start <= buf.capacity() as u64
        {
            end += hashes[j].len as u64;
            j += 1;
        }
        buf.set_len((end - start) as usize);
        target
            .read_at(start, buf.as_mut_slice())
            .map_err(|source| Error::Device {
                device: dev.clone(),
                what: "read-back",
                offset: start,
                source,
            })?;
        for h in &hashes[i..j] {
            let at = (h.offset - start) as usize;
            let got = &buf.as_slice()[at..at + h.len as usize];
            if <[u8; 32]>::from(Sha256::digest(got)) != h.sha256 {
                return Err(locate(&dev, h, got, source));
            }
        }
        done += end - start;
        observer.progress(index, Phase::Verify, done, total);
        i = j;
    }
    Ok(())
}

fn locate(dev: &str, h: &BlockHash, got: &[u8], source: Option<&dyn BlockDevice>) -> Error {
    let mut want = vec![0u8; h.len as usize];
    match source.map(|s| s.read_at(h.offset, &mut want)) {
        Some(Ok(())) => {
            let at = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(0);
            Error::Mismatch {
                device: dev.to_string(),
                offset: h.offset + at as u64,
                detail: format!(
                    " (image has 0x{:02x}, device has 0x{:02x})",
                    want[at], got[at]
                ),
            }
        }
        _ => Error::Mismatch {
            device: dev.to_string(),
            offset: h.offset,
            detail: format!(" (within the {} bytes from there: SHA-256 differs)", h.len),
        },
    }
}
