//! One pass over a disk-image source: the bytes are decoded into the
//! output file by a [`Filler`] on threads of its own while the firmware and
//! customisation steps already work on the part decoded so far (through a
//! [`FillingDevice`], whose accesses wait for the decoder), and the outputs
//! (the manifest's SHA-256, the zstd copy) follow the decoder as soon as the
//! customisation is done ([`output_pass`]), reading back only what the
//! decoder wrote in the last moments (from the page cache).
//!
//! Why this order and not "hash as it is decoded": customisation edits
//! filesystem metadata (superblock, bitmaps, group descriptors, inode
//! tables, directories) scattered over the partitions; the manifest's hash is
//! the SHA-256 of the finished image in order, so no byte can be hashed
//! before every edit that could touch it is done. The edits need only the
//! metadata they read, which the decoder reaches early, so the hash and the
//! zstd encoder start long before the decoder ends.
//!
//! Threads: the decoder (liblzma's threaded decoder adds one per core for a
//! multi-block `.xz`; a single-block stream decodes on one), one writer
//! (zero detection, sparse writes), the customisation (the caller), then the
//! hash and the zstd workers. Memory: `QUEUE` + 2 chunks of `CHUNK` bytes
//! in the filler, `QUEUE` + 1 in the output pass.

use super::Progress;
use crate::error::{Error, Result};
use imagegen::block::Watermark;
use imagegen::source::ImageSource;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Bytes handed from one stage to the next at a time.
pub const CHUNK: usize = 4 << 20;
/// Chunks in flight between two stages.
const QUEUE: usize = 2;
/// Granularity of hole detection: all-zero blocks of this size are not
/// written (the file's block size, and the bmap's).
const ZERO_BLOCK: usize = 4096;

/// Decodes an image source into a file of its known size, front to back,
/// moving a [`Watermark`] as it goes; all-zero blocks stay holes.
pub struct Filler {
    mark: Arc<Watermark>,
    stop: Arc<AtomicBool>,
    decoder: Option<JoinHandle<Result<u64>>>,
    writer: Option<JoinHandle<Result<()>>>,
    size: u64,
}

impl Filler {
    /// Starts decoding `src`, whose first bytes `head` were already read,
    /// into `file` (already `size` bytes long, all holes).
    pub fn start(head: Vec<u8>, mut src: ImageSource, file: File, size: u64) -> Result<Filler> {
        let mark = Arc::new(Watermark::new());
        let stop = Arc::new(AtomicBool::new(false));
        let (full_tx, full_rx) = sync_channel::<(u64, Vec<u8>)>(QUEUE);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(QUEUE + 2);
        let what = src.describe().to_string();
        let decoder = {
            let (stop, mark) = (stop.clone(), mark.clone());
            let what = what.clone();
            std::thread::Builder::new()
                .name("base-decode".into())
                .spawn(move || {
                    let r = decode(head, &mut src, &what, size, &stop, &full_tx, &empty_rx);
                    // Before the writer sees the end: waiters get this reason.
                    match &r {
                        Err(e) => mark.fail(e.to_string()),
                        Ok(n) if *n < size => mark.fail("stopped"),
                        Ok(_) => {}
                    }
                    r
                })
                .map_err(|e| Error::internal("starting the decoder", e.to_string()))?
        };
        let writer = {
            let mark = mark.clone();
            std::thread::Builder::new()
                .name("base-write".into())
                .spawn(move || {
                    let r = write_sparse(&file, &what, &mark, full_rx, empty_tx);
                    if let Err(e) = &r {
                        mark.fail(e.to_string());
                    }
                    r
                })
                .map_err(|e| Error::internal("starting the writer", e.to_string()))?
        };
        Ok(Filler {
            mark,
            stop,
            decoder: Some(decoder),
            writer: Some(writer),
            size,
        })
    }

    /// The watermark the filler moves.
    pub fn mark(&self) -> Arc<Watermark> {
        self.mark.clone()
    }

    /// Waits for the end: `Ok` when the whole image was decoded and written
    /// and its length was the expected one.
    pub fn finish(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        let dec = self.decoder.take().map(|h| h.join());
        let wr = self.writer.take().map(|h| h.join());
        let panicked = || Error::internal("decoding the image", "a thread panicked");
        // The decoder's error is the cause; the writer's follows from it.
        match dec {
            Some(Ok(Err(e))) => {
                self.mark.fail(e.to_string());
                return Err(e);
            }
            Some(Err(_)) => {
                self.mark.fail("decoding the image failed");
                return Err(panicked());
            }
            _ => {}
        }
        match wr {
            Some(Ok(Err(e))) => {
                self.mark.fail(e.to_string());
                Err(e)
            }
            Some(Err(_)) => {
                self.mark.fail("writing the image failed");
                Err(panicked())
            }
            _ => {
                if self.mark.filled() < self.size {
                    self.mark.fail("the decoder stopped early");
                    return Err(Error::internal(
                        "decoding the image",
                        "stopped before the end",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Stops early (another step failed) and returns the filler's own
    /// error if it had one first, else `other`.
    pub fn abandon(mut self, other: Error) -> Error {
        self.stop.store(true, Ordering::Relaxed);
        match self.join() {
            Err(e) if !matches!(e, Error::Internal { .. }) => e,
            _ => other,
        }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        if self.decoder.is_some() || self.writer.is_some() {
            self.stop.store(true, Ordering::Relaxed);
            let _ = self.join();
        }
    }
}

/// The decoding thread: fills chunks and hands them on in order.
fn decode(
    head: Vec<u8>,
    src: &mut ImageSource,
    what: &str,
    size: u64,
    stop: &AtomicBool,
    out: &SyncSender<(u64, Vec<u8>)>,
    empties: &Receiver<Vec<u8>>,
) -> Result<u64> {
    let mut at = 0u64;
    let mut first = Some(head);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(at);
        }
        let mut buf = empties.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        buf.resize(CHUNK, 0);
        let mut n = 0;
        if let Some(h) = first.take() {
            buf[..h.len()].copy_from_slice(&h);
            n = h.len();
        }
        while n < CHUNK {
            match src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(imagegen::Error::io_context(what.to_string(), e).into()),
            }
        }
        if n == 0 {
            break;
        }
        if at + n as u64 > size {
            return Err(Error::refused(
                what,
                format!("holds more than the {size} bytes its index records"),
            ));
        }
        buf.truncate(n);
        if out.send((at, buf)).is_err() {
            // The writer stopped; its error says why.
            return Ok(at);
        }
        at += n as u64;
    }
    if at != size {
        return Err(Error::refused(
            what,
            format!("ends after {at} bytes, but its index records {size}"),
        ));
    }
    Ok(at)
}

/// The writing thread: writes the non-zero blocks of each chunk and moves
/// the watermark past it.
fn write_sparse(
    file: &File,
    what: &str,
    mark: &Watermark,
    chunks: Receiver<(u64, Vec<u8>)>,
    empties: SyncSender<Vec<u8>>,
) -> Result<()> {
    let werr = |e| imagegen::Error::io_context(format!("writing the base decoded from {what}"), e);
    for (at, buf) in chunks {
        let mut run: Option<usize> = None;
        for (i, block) in buf.chunks(ZERO_BLOCK).enumerate() {
            let zero = is_zero(block);
            match (zero, run) {
                (false, None) => run = Some(i * ZERO_BLOCK),
                (true, Some(s)) => {
                    file.write_all_at(&buf[s..i * ZERO_BLOCK], at + s as u64)
                        .map_err(werr)?;
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(s) = run {
            file.write_all_at(&buf[s..], at + s as u64).map_err(werr)?;
        }
        mark.advance(at + buf.len() as u64);
        let _ = empties.try_send(buf);
    }
    Ok(())
}

/// Whether every byte is zero (64 bytes at a time, which vectorises).
pub fn is_zero(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(64);
    let all = blocks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |acc, &x| acc | x) == 0);
    all && blocks.remainder().iter().all(|&x| x == 0)
}

/// Where `file` holds data in `[start, end)` (`SEEK_DATA`/`SEEK_HOLE`);
/// everything else reads as zeros.
fn data_in(file: &File, start: u64, end: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        // SAFETY: lseek on a descriptor this function borrows.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            // No SEEK_DATA here: all of it is data.
            out.push((pos, end));
            break;
        }
        let data = data as u64;
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        out.push((data, hole.max(data + 1).min(end)));
        pos = hole.max(data + 1);
    }
    Ok(out)
}

/// The outputs' pass: reads the finished image `file` (`size` bytes) in
/// order, each chunk as soon as `mark` has passed it, and feeds it to the
/// SHA-256 (a thread of its own) and to `also` (the zstd encoder). Holes are
/// not read. Returns the SHA-256.
pub fn output_pass(
    file: &File,
    size: u64,
    mark: &Watermark,
    mut also: Option<&mut imagegen::sink::ImageWriter>,
    progress: &dyn Progress,
) -> Result<[u8; 32]> {
    let zeros: Arc<Vec<u8>> = Arc::new(vec![0u8; CHUNK]);
    let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(QUEUE);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut h = Sha256::new();
            for chunk in rx {
                h.update(&chunk[..]);
            }
            <[u8; 32]>::from(h.finalize())
        });
        let read = (|| -> Result<()> {
            let mut at = 0u64;
            let mut ready = mark.filled();
            while at < size {
                let n = ((size - at) as usize).min(CHUNK);
                let end = at + n as u64;
                if ready < end {
                    ready = mark.wait_past(end - 1)?;
                }
                let parts = data_in(file, at, end)
                    .map_err(|e| imagegen::Error::io_context("mapping the base", e))?;
                let buf = if parts.is_empty() {
                    if n == CHUNK {
                        zeros.clone()
                    } else {
                        Arc::new(vec![0u8; n])
                    }
                } else {
                    let mut buf = vec![0u8; n];
                    for (from, to) in parts {
                        file.read_exact_at(
                            &mut buf[(from - at) as usize..(to - at) as usize],
                            from,
                        )
                        .map_err(|e| imagegen::Error::io_context("reading the base", e))?;
                    }
                    Arc::new(buf)
                };
                if tx.send(buf.clone()).is_err() {
                    break;
                }
                if let Some(w) = also.as_deref_mut() {
                    std::io::Write::write_all(w, &buf)
                        .map_err(|e| imagegen::Error::io_context("compressing the base", e))?;
                }
                at = end;
                progress.advance(n as u64);
            }
            Ok(())
        })();
        drop(tx);
        let sum = hasher
            .join()
            .map_err(|_| Error::refused("the base", "hashing it failed (thread panicked)"))?;
        read.map(|()| sum)
    })
}
