//! One pass over a disk-image source: the bytes are decoded into the
//! output file by a [`Filler`] on threads of its own while the firmware and
//! customisation steps already work on the part decoded so far (through a
//! [`FillingDevice`](imagegen::block::FillingDevice), whose accesses wait for the decoder). The zstd copy is
//! made while decoding, one frame per chunk ([`Precompressed`]; a chunk
//! changed later gets a new frame), and the manifest's SHA-256 follows the
//! decoder as soon as the customisation is done ([`output_pass`]), reading
//! back what the decoder wrote (from the page cache; holes are not read).
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
use std::path::Path;
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
    compressor: Option<JoinHandle<Result<()>>>,
    size: u64,
}

impl Filler {
    /// Starts decoding `src`, whose first bytes `head` were already read,
    /// into `file` (already `size` bytes long, all holes).
    /// With `pre`, every chunk is also compressed into a zstd frame on a
    /// thread of its own as soon as it is written ([`Precompressed`]).
    pub fn start(
        head: Vec<u8>,
        mut src: ImageSource,
        file: File,
        size: u64,
        pre: Option<Arc<Precompressed>>,
    ) -> Result<Filler> {
        let what = src.describe().to_string();
        Self::start_with(file, size, pre, what, move |what, stop, out, empties| {
            decode(head, &mut src, what, size, stop, out, empties)
        })
    }

    /// Like [`Filler::start`] for an uncompressed image file `src`: only
    /// the extents where it holds data are read (`SEEK_DATA`, as `cp
    /// --sparse` does), so its holes cost nothing; every chunk still goes
    /// through the writer's zero detection.
    pub fn start_raw(
        src: File,
        what: String,
        file: File,
        size: u64,
        pre: Option<Arc<Precompressed>>,
    ) -> Result<Filler> {
        // Frames are indexed by chunk: with a compressor, holes are sent
        // as zero chunks too.
        let whole = pre.is_some();
        Self::start_with(file, size, pre, what, move |what, stop, out, empties| {
            copy_raw(&src, what, size, whole, stop, out, empties)
        })
    }

    fn start_with(
        file: File,
        size: u64,
        pre: Option<Arc<Precompressed>>,
        what: String,
        produce: impl FnOnce(
                &str,
                &AtomicBool,
                &SyncSender<(u64, Vec<u8>)>,
                &Receiver<Vec<u8>>,
            ) -> Result<u64>
            + Send
            + 'static,
    ) -> Result<Filler> {
        let mark = Arc::new(Watermark::new());
        let stop = Arc::new(AtomicBool::new(false));
        let (full_tx, full_rx) = sync_channel::<(u64, Vec<u8>)>(QUEUE);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(QUEUE + 2);
        let decoder = {
            let (stop, mark) = (stop.clone(), mark.clone());
            let what = what.clone();
            std::thread::Builder::new()
                .name("base-decode".into())
                .spawn(move || {
                    let r = produce(&what, &stop, &full_tx, &empty_rx);
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
        // With frames to make, the writer hands each chunk on to the
        // compressor, which gives it back to the decoder.
        let (next_tx, compressor) = match pre {
            Some(pre) => {
                let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(QUEUE);
                let empties = empty_tx.clone();
                let h = std::thread::Builder::new()
                    .name("base-frames".into())
                    .spawn(move || {
                        let r = pre.make(rx, empties);
                        if let Err(e) = &r {
                            pre.mark.fail(e.to_string());
                        }
                        r
                    })
                    .map_err(|e| Error::internal("starting the compressor", e.to_string()))?;
                (Some(tx), Some(h))
            }
            None => (None, None),
        };
        let writer = {
            let mark = mark.clone();
            std::thread::Builder::new()
                .name("base-write".into())
                .spawn(move || {
                    let r = write_sparse(&file, &what, &mark, full_rx, empty_tx, next_tx);
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
            compressor,
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
        // The frames are checked where they are used ([`ZstOut`]).
        let _ = self.compressor.take().map(|h| h.join());
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

/// The copying thread for an uncompressed source: each chunk's data
/// extents are read (the rest is zeros); a chunk that is all hole is sent
/// empty, at its end, which only moves the watermark (or as zeros when
/// `whole`).
fn copy_raw(
    src: &File,
    what: &str,
    size: u64,
    whole: bool,
    stop: &AtomicBool,
    out: &SyncSender<(u64, Vec<u8>)>,
    empties: &Receiver<Vec<u8>>,
) -> Result<u64> {
    let rerr = |e| imagegen::Error::io_context(what.to_string(), e);
    let len = src.metadata().map_err(rerr)?.len();
    if len != size {
        return Err(Error::refused(
            what,
            format!("is {len} bytes long, not the {size} bytes it had when opened"),
        ));
    }
    let mut at = 0u64;
    while at < size {
        if stop.load(Ordering::Relaxed) {
            return Ok(at);
        }
        let end = (at + CHUNK as u64).min(size);
        let parts = data_in(src, at, end).map_err(rerr)?;
        let chunk = if parts.is_empty() && !whole {
            (end, Vec::new())
        } else {
            let mut buf = empties.try_recv().unwrap_or_default();
            buf.clear();
            buf.resize((end - at) as usize, 0);
            for (from, to) in parts {
                src.read_exact_at(&mut buf[(from - at) as usize..(to - at) as usize], from)
                    .map_err(|e| {
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            Error::refused(what, "became shorter while it was being read")
                        } else {
                            rerr(e).into()
                        }
                    })?;
            }
            (at, buf)
        };
        if out.send(chunk).is_err() {
            return Ok(at);
        }
        at = end;
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
    next: Option<SyncSender<(u64, Vec<u8>)>>,
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
        // The disk works while the rest decodes, instead of in the commit's
        // fsync (or a loop device's attach) after the last chunk.
        if !buf.is_empty() {
            imagegen::sink::start_writeback(file, at, buf.len() as u64);
        }
        mark.advance(at + buf.len() as u64);
        match &next {
            // A compressor that stopped has said why (its watermark).
            Some(tx) => {
                let _ = tx.send((at, buf));
            }
            None => {
                let _ = empties.try_send(buf);
            }
        }
    }
    Ok(())
}

/// zstd frames of the chunks as the decoder wrote them, made while it
/// decodes (on a core the decoder leaves, or beside it), kept in a spill
/// file beside the output. A chunk that a later step changed gets a new
/// frame ([`ZstOut`]); all others are copied.
pub struct Precompressed {
    spill: File,
    /// Where each chunk's frame is in the spill file: (offset, length).
    frames: std::sync::Mutex<Vec<(u64, u64)>>,
    /// Bytes of the image whose frames are made.
    mark: Watermark,
    level: i32,
}

impl Precompressed {
    /// Frames at zstd `level`, spilled into an unnamed file in `dir`.
    pub fn new(dir: &Path, level: i32) -> Result<Arc<Precompressed>> {
        let spill = tempfile::tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Arc::new(Precompressed {
            spill,
            frames: std::sync::Mutex::new(Vec::new()),
            mark: Watermark::new(),
            level,
        }))
    }

    fn make(&self, chunks: Receiver<(u64, Vec<u8>)>, empties: SyncSender<Vec<u8>>) -> Result<()> {
        let err = |e| imagegen::Error::io_context("compressing the base", e);
        let mut cx = imagegen::sink::FrameCompressor::new(self.level).map_err(err)?;
        let mut pos = 0u64;
        for (at, buf) in chunks {
            let frame = cx.frame(&buf).map_err(err)?;
            self.spill.write_all_at(&frame, pos).map_err(err)?;
            self.frames
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((pos, frame.len() as u64));
            pos += frame.len() as u64;
            self.mark.advance(at + buf.len() as u64);
            let _ = empties.try_send(buf);
        }
        Ok(())
    }

    fn frame(&self, index: usize, end: u64) -> Result<Vec<u8>> {
        self.mark.wait_for(end)?;
        let (off, len) = self
            .frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(index)
            .copied()
            .ok_or_else(|| Error::internal("compressing the base", "a frame is missing"))?;
        let mut b = vec![0u8; len as usize];
        self.spill
            .read_exact_at(&mut b, off)
            .map_err(|e| imagegen::Error::io_context("compressing the base", e))?;
        Ok(b)
    }
}

/// Where the zstd copy goes: one stream through the encoder's workers, or
/// the frames made while decoding, a changed chunk's made again.
pub enum ZstOut {
    Stream(imagegen::sink::ImageWriter),
    Frames {
        out: imagegen::sink::PendingFile,
        pos: u64,
        pre: Arc<Precompressed>,
        /// What changed after the decoder wrote it.
        changed: imagegen::ranges::RangeSet,
        cx: imagegen::sink::FrameCompressor,
    },
}

impl ZstOut {
    /// The next chunk, at `at`, `CHUNK` bytes (less at the end).
    fn put(&mut self, at: u64, buf: &[u8]) -> Result<()> {
        let err = |e| imagegen::Error::io_context("compressing the base", e);
        match self {
            ZstOut::Stream(w) => std::io::Write::write_all(w, buf).map_err(err)?,
            ZstOut::Frames {
                out,
                pos,
                pre,
                changed,
                cx,
            } => {
                let end = at + buf.len() as u64;
                let span =
                    imagegen::ranges::RangeSet::from_extents(vec![imagegen::ranges::Extent::new(
                        at, end,
                    )]);
                let frame = if changed.intersect(&span).is_empty() {
                    pre.frame((at / CHUNK as u64) as usize, end)?
                } else {
                    cx.frame(buf).map_err(err)?
                };
                out.file().write_all_at(&frame, *pos).map_err(err)?;
                *pos += frame.len() as u64;
            }
        }
        Ok(())
    }

    /// Completes the copy and renames it into place.
    pub fn finish(self) -> Result<()> {
        match self {
            ZstOut::Stream(w) => {
                w.finish()?;
            }
            ZstOut::Frames { out, .. } => out.commit(0o644)?,
        }
        Ok(())
    }
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
    mut also: Option<&mut ZstOut>,
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
                    w.put(at, &buf)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse source: data, a whole-chunk hole, allocated zeros, data at
    /// the very end (not a multiple of a chunk).
    fn sparse_source(dir: &Path) -> (std::path::PathBuf, u64) {
        let p = dir.join("src.img");
        let size = 3 * CHUNK as u64 + 12_345;
        let f = File::create(&p).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&[0x5a; 10_000], 100).unwrap();
        f.write_all_at(&vec![0u8; 8192], 2 * CHUNK as u64).unwrap();
        f.write_all_at(b"tail", size - 4).unwrap();
        (p, size)
    }

    fn out_file(dir: &Path, size: u64) -> (std::path::PathBuf, File) {
        let p = dir.join("out.img");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(size).unwrap();
        (p, f)
    }

    #[test]
    fn a_raw_source_is_copied_by_extents_and_its_holes_stay_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, size) = sparse_source(dir.path());
        for frames in [false, true] {
            let (out, file) = out_file(dir.path(), size);
            let pre = frames.then(|| Precompressed::new(dir.path(), 1).unwrap());
            let f = Filler::start_raw(
                File::open(&src).unwrap(),
                "src.img".into(),
                file,
                size,
                pre.clone(),
            )
            .unwrap();
            let mark = f.mark();
            f.finish().unwrap();
            assert_eq!(mark.filled(), size);
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
            // Allocated zeros are not written: the output holds less data.
            let o = File::open(&out).unwrap();
            let data: u64 = data_in(&o, 0, size)
                .unwrap()
                .iter()
                .map(|(a, b)| b - a)
                .sum();
            assert!(
                data < 3 * ZERO_BLOCK as u64 + 16_384,
                "{data} bytes of data"
            );
            if let Some(pre) = pre {
                // Every chunk has its frame, holes included.
                let chunks = size.div_ceil(CHUNK as u64) as usize;
                for i in 0..chunks {
                    let end = ((i as u64 + 1) * CHUNK as u64).min(size);
                    let frame = pre.frame(i, end).unwrap();
                    assert!(frame.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "chunk {i}");
                }
            }
        }
    }

    #[test]
    fn a_raw_source_that_changed_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (src, size) = sparse_source(dir.path());
        let (_, file) = out_file(dir.path(), size + 1);
        let f = Filler::start_raw(
            File::open(&src).unwrap(),
            "src.img".into(),
            file,
            size + 1,
            None,
        )
        .unwrap();
        let e = f.finish().unwrap_err().to_string();
        assert!(e.contains("src.img") && e.contains("not the"), "{e}");
    }
}
