//! Image outputs: raw images written sparsely (all-zero 4 KiB blocks become
//! holes) or `.zst` through zstd's multithreaded encoder. Output goes to a
//! temporary file next to the final path and is renamed into place only when
//! complete, so nothing half-written ever carries the final name.

mod frames;
mod pending;

pub use frames::FrameCompressor;
pub use pending::{
    check_distinct, check_output, discard_all_pending, pending_paths, same_file, start_writeback,
    write_atomic, PendingDir, PendingFile,
};

use crate::{Error, Result};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Granularity of hole detection.
pub const SPARSE_BLOCK: usize = 4096;

/// Bytes buffered before blocks are checked and written.
const BUFFER: usize = 1 << 20;

/// The encoding of an output image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The disk bytes, written sparsely.
    Raw,
    /// A zstd stream (with content checksum) at this level.
    Zstd { level: i32 },
}

impl OutputFormat {
    /// `Zstd { level: 3 }` for names ending in `.zst`, else `Raw`.
    pub fn from_path(path: &Path) -> Self {
        if path.extension().is_some_and(|e| e == "zst") {
            OutputFormat::Zstd { level: 3 }
        } else {
            OutputFormat::Raw
        }
    }
}

enum Encoder {
    Raw(SparseWriter),
    Zstd(ZstdPipe),
}

/// A `Write` that becomes an image file at `path` when [`finish`]ed.
/// Dropped unfinished, it leaves nothing behind.
///
/// [`finish`]: ImageWriter::finish
pub struct ImageWriter {
    encoder: Encoder,
    out: PendingFile,
    path: PathBuf,
    expected: Option<u64>,
    written: u64,
    mode: u32,
}

impl ImageWriter {
    /// Starts an image at `path` (mode 0644). `size`, when known, is checked
    /// at [`finish`](Self::finish) and recorded in the zstd frame header.
    pub fn create(path: &Path, format: OutputFormat, size: Option<u64>) -> Result<Self> {
        Self::create_with_mode(path, format, size, 0o644)
    }

    /// Like [`create`](Self::create) with an explicit file mode (0600 for
    /// images that hold secrets).
    pub fn create_with_mode(
        path: &Path,
        format: OutputFormat,
        size: Option<u64>,
        mode: u32,
    ) -> Result<Self> {
        let out = PendingFile::create(path)?;
        let file = out.file().try_clone().map_err(|e| Error::io(path, e))?;
        let encoder = match format {
            OutputFormat::Raw => Encoder::Raw(SparseWriter::new(file)),
            OutputFormat::Zstd { level } => {
                let zerr = |e| Error::io(path, e);
                let mut enc = zstd::stream::write::Encoder::new(file, level).map_err(zerr)?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                enc.multithread(threads as u32).map_err(zerr)?;
                enc.include_checksum(true).map_err(zerr)?;
                if let Some(n) = size {
                    enc.set_pledged_src_size(Some(n)).map_err(zerr)?;
                }
                Encoder::Zstd(ZstdPipe::start(enc))
            }
        };
        Ok(ImageWriter {
            encoder,
            out,
            path: path.to_path_buf(),
            expected: size,
            written: 0,
            mode,
        })
    }

    /// Completes the image and renames it into place; returns its size.
    pub fn finish(self) -> Result<u64> {
        let path = &self.path;
        if let Some(n) = self.expected {
            if n != self.written {
                return Err(Error::Invalid(format!(
                    "{}: {} bytes were written but the image should have {n}; nothing was saved",
                    path.display(),
                    self.written
                )));
            }
        }
        match self.encoder {
            Encoder::Raw(w) => w.finish(),
            Encoder::Zstd(enc) => enc.finish(),
        }
        .map_err(|e| Error::io(path, e))?;
        self.out.commit(self.mode)?;
        Ok(self.written)
    }
}

impl Write for ImageWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.encoder {
            Encoder::Raw(w) => w.write(buf)?,
            Encoder::Zstd(p) => p.write(buf)?,
        };
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.encoder {
            Encoder::Raw(_) => Ok(()),
            Encoder::Zstd(_) => Ok(()),
        }
    }
}

/// Copies a whole stream into a new image at `path`; returns its size.
pub fn write_image(
    mut reader: impl Read,
    path: &Path,
    format: OutputFormat,
    size: Option<u64>,
) -> Result<u64> {
    let mut w = ImageWriter::create(path, format, size)?;
    copy_stream(&mut reader, &mut w)
        .map_err(|e| Error::io_context(format!("writing {}", path.display()), e))?;
    w.finish()
}

/// `io::copy` with a 1 MiB buffer (std's 8 KiB is slow for images).
pub fn copy_stream(r: &mut impl Read, w: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Feeds a zstd encoder on its own thread through a short queue of 1 MiB
/// buffers, so the producer (reading, decompressing, patching) overlaps
/// with compression and file output, as the zstd CLI's asynchronous I/O
/// does. Memory: at most `QUEUE` + 2 buffers.
struct ZstdPipe {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<io::Result<File>>>,
    buf: Vec<u8>,
}

const QUEUE: usize = 4;

impl ZstdPipe {
    fn start(mut enc: zstd::stream::write::Encoder<'static, File>) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let worker = std::thread::spawn(move || {
            for chunk in rx {
                enc.write_all(&chunk)?;
            }
            enc.finish()
        });
        ZstdPipe {
            tx: Some(tx),
            worker: Some(worker),
            buf: Vec::with_capacity(BUFFER),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(BUFFER));
        let sent = self.tx.as_ref().map(|tx| tx.send(full));
        match sent {
            Some(Ok(())) => Ok(()),
            // The worker stopped: its error says why.
            _ => Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("zstd encoder stopped early"))),
        }
    }

    fn join(&mut self) -> io::Result<File> {
        self.tx = None;
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("zstd encoder thread panicked")),
            None => Err(io::Error::other("zstd encoder already finished")),
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BUFFER - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BUFFER {
            self.send()?;
        }
        Ok(n)
    }

    fn finish(mut self) -> io::Result<File> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

/// Writes a stream into a file, skipping all-zero blocks (leaving holes).
struct SparseWriter {
    file: File,
    /// File offset of `buf[0]`.
    pos: u64,
    buf: Vec<u8>,
}

impl SparseWriter {
    fn new(file: File) -> Self {
        SparseWriter {
            file,
            pos: 0,
            buf: Vec::with_capacity(BUFFER),
        }
    }

    /// Writes the buffered whole blocks (all of the buffer when `all`).
    fn drain(&mut self, all: bool) -> io::Result<()> {
        let n = if all {
            self.buf.len()
        } else {
            self.buf.len() / SPARSE_BLOCK * SPARSE_BLOCK
        };
        let mut run_start = None;
        let mut off = 0;
        for block in self.buf[..n].chunks(SPARSE_BLOCK) {
            match (is_zero(block), run_start) {
                (false, None) => run_start = Some(off),
                (true, Some(s)) => {
                    self.file
                        .write_all_at(&self.buf[s..off], self.pos + s as u64)?;
                    run_start = None;
                }
                _ => {}
            }
            off += block.len();
        }
        if let Some(s) = run_start {
            self.file
                .write_all_at(&self.buf[s..n], self.pos + s as u64)?;
        }
        self.pos += n as u64;
        self.buf.drain(..n);
        Ok(())
    }

    fn finish(mut self) -> io::Result<File> {
        self.drain(true)?;
        // Trailing holes exist only once the length is set.
        self.file.set_len(self.pos)?;
        Ok(self.file)
    }
}

impl Write for SparseWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BUFFER - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BUFFER {
            self.drain(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether every byte is zero. OR-folding 64-byte chunks vectorises, and
/// data blocks still exit early.
pub fn is_zero(block: &[u8]) -> bool {
    block
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn image(mib: usize) -> Vec<u8> {
        let mut data = vec![0u8; mib << 20];
        // Data at the start, in the middle (unaligned) and at the very end.
        data[..10_000].fill(0xaa);
        data[(mib << 19) + 100..(mib << 19) + 9000].fill(0x55);
        let n = data.len();
        data[n - 3..].fill(1);
        data
    }

    #[test]
    fn raw_output_is_sparse_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.img");
        let data = image(8);
        let n = write_image(&data[..], &path, OutputFormat::Raw, Some(data.len() as u64)).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let meta = std::fs::metadata(&path).unwrap();
        assert!(
            meta.blocks() * 512 < 100_000,
            "{} blocks allocated",
            meta.blocks()
        );
        assert_eq!(meta.mode() & 0o777, 0o644);
        // Only the final file is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn trailing_zeros_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.img");
        let mut data = vec![7u8; 5000];
        data.resize(3 << 20, 0);
        write_image(&data[..], &path, OutputFormat::Raw, None).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn zstd_output_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.img.zst");
        let data = image(4);
        let format = OutputFormat::from_path(&path);
        assert_eq!(format, OutputFormat::Zstd { level: 3 });
        write_image(&data[..], &path, format, Some(data.len() as u64)).unwrap();
        let back = zstd::decode_all(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn wrong_size_or_drop_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.img");
        let err = write_image(&[1u8; 100][..], &path, OutputFormat::Raw, Some(200)).unwrap_err();
        assert!(err.to_string().contains("nothing was saved"), "{err}");
        let mut w = ImageWriter::create(&path, OutputFormat::Raw, None).unwrap();
        w.write_all(&[1; 10]).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
