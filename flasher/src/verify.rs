//! Read-back verification: a 128-bit XXH3 of every written block of the
//! image, compared with the same block read back from the device past the
//! page cache.
//!
//! XXH3 and not SHA-256, because this compares a card with the bytes just
//! written to it: the errors to find are a card's (lost writes, flipped bits,
//! blocks read from the wrong address, fake capacity), which a 128-bit hash
//! misses with odds of 2⁻¹²⁸, and no adversary chooses them — a card that
//! lies can lie about anything. XXH3 runs at memory speed where SHA-256 took
//! a fifth of a compressed flash's CPU, hashed twice. Whether the image is
//! what its author made is a separate check, with the author's SHA-256 (bmap
//! range checksums, `--sha256`), done as the data streams.

use crate::aligned::AlignedBuf;
use crate::progress::{Observer, Phase};
use crate::target::Target;
use crate::{Error, Result};
use imagegen::block::BlockDevice;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use twox_hash::XxHash3_128;

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
    /// XXH3-128 of the block.
    pub digest: u128,
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
                digest: XxHash3_128::oneshot(block),
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
/// differing byte; otherwise the block is named. Reading and hashing overlap:
/// one thread reads the next run of blocks while this one hashes.
pub fn verify_target(
    target: &dyn Target,
    hashes: &[BlockHash],
    source: Option<&dyn BlockDevice>,
    index: usize,
    observer: &dyn Observer,
    cancel: &AtomicBool,
) -> Result<()> {
    let total: u64 = hashes.iter().map(|h| h.len as u64).sum();
    let dev = target.describe();
    observer.progress(index, Phase::Verify, 0, total);
    let runs = runs(hashes, crate::writer::CHUNK as u64);
    let (tx, rx) = sync_channel::<Result<(Range<usize>, AlignedBuf)>>(2);
    let (back_tx, back_rx) = channel::<AlignedBuf>();
    for _ in 0..3 {
        let _ = back_tx.send(AlignedBuf::new(crate::writer::CHUNK));
    }
    std::thread::scope(|s| {
        let dev_name = dev.clone();
        s.spawn(move || {
            for run in runs {
                if cancel.load(Ordering::Relaxed) {
                    let _ = tx.send(Err(Error::Interrupted {
                        device: dev_name.clone(),
                        written: 0,
                    }));
                    return;
                }
                let Ok(mut buf) = back_rx.recv() else { return };
                let start = hashes[run.start].offset;
                let last = &hashes[run.end - 1];
                buf.set_len((last.offset + last.len as u64 - start) as usize);
                let msg = target
                    .read_at(start, buf.as_mut_slice())
                    .map(|()| (run, buf))
                    .map_err(|source| Error::Device {
                        device: dev_name.clone(),
                        what: "read-back",
                        offset: start,
                        source,
                    });
                let failed = msg.is_err();
                // The checker hung up (a mismatch) or the read failed: stop.
                if tx.send(msg).is_err() || failed {
                    return;
                }
            }
        });
        // Owned here so that returning early hangs up on a reader waiting for a buffer.
        let back_tx = back_tx;
        let mut done = 0;
        for msg in rx {
            let (run, buf) = msg?;
            let start = hashes[run.start].offset;
            for h in &hashes[run] {
                let at = (h.offset - start) as usize;
                let got = &buf.as_slice()[at..at + h.len as usize];
                if XxHash3_128::oneshot(got) != h.digest {
                    return Err(locate(&dev, h, got, source));
                }
                done += h.len as u64;
            }
            observer.progress(index, Phase::Verify, done, total);
            let _ = back_tx.send(buf);
        }
        if done != total {
            // The reader stopped early without an error: only Ctrl-C does that.
            return Err(Error::Interrupted {
                device: dev.clone(),
                written: done,
            });
        }
        Ok(())
    })
}

/// Groups `hashes` into runs of contiguous blocks of at most `max` bytes.
fn runs(hashes: &[BlockHash], max: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < hashes.len() {
        let start = hashes[i].offset;
        let mut end = start + hashes[i].len as u64;
        let mut j = i + 1;
        while j < hashes.len()
            && hashes[j].offset == end
            && end + hashes[j].len as u64 - start <= max
        {
            end += hashes[j].len as u64;
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
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
            detail: format!(
                " (within the {} bytes from there: their checksum differs)",
                h.len
            ),
        },
    }
}
