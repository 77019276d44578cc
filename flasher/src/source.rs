//! The image bytes to write: a random-access device (a raw image file, or a
//! base image with a node delta applied on the fly) or a forward-only stream
//! (a compressed image, decompressed on its own thread by `imagegen`).
//!
//! Either way the source is read once, in offset order, over the ranges a
//! plan selects, in chunks of page-aligned buffers from a bounded [`Pool`].

use crate::aligned::AlignedBuf;
use crate::ranges::{Extent, RangeSet};
use crate::Result;
use imagegen::block::BlockDevice;
use imagegen::delta::{Delta, Patched, PatchedReader};
use imagegen::source::{Compression, ImageSource};
use std::io::Read;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// Where the image bytes come from.
pub enum Source {
    /// Positioned reads; ranges the plan skips are never read.
    Random(Arc<dyn BlockDevice>),
    /// A forward-only stream of `size` bytes; skipped ranges are read and dropped.
    Stream {
        reader: Box<dyn Read + Send>,
        size: u64,
        name: String,
        /// The first bytes of the image (partition tables), read ahead.
        head: Vec<u8>,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Random(d) => write!(f, "Source::Random({})", d.describe()),
            Source::Stream { name, size, .. } => write!(f, "Source::Stream({name}, {size})"),
        }
    }
}

impl Source {
    /// Size of the image in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Source::Random(d) => d.size(),
            Source::Stream { size, .. } => *size,
        }
    }

    /// Name for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Random(d) => d.describe(),
            Source::Stream { name, .. } => name.clone(),
        }
    }

    /// The first bytes of the image, when the source is a stream.
    pub fn head(&self) -> Option<&[u8]> {
        match self {
            Source::Random(_) => None,
            Source::Stream { head, .. } => Some(head),
        }
    }

    /// The random-access view, when there is one (for the plan's providers).
    pub fn random_access(&self) -> Option<Arc<dyn BlockDevice>> {
        match self {
            Source::Random(d) => Some(d.clone()),
            Source::Stream { .. } => None,
        }
    }

    /// Reads `pieces` (sorted, disjoint) in order, in chunks of at most `chunk`
    /// bytes (a multiple of 4096), calling `each` with every filled chunk; no
    /// chunk straddles two pieces. `each` returns false to stop early. Pieces
    /// must lie inside the image.
    pub fn read_ranges(
        &mut self,
        pieces: &[Extent],
        chunk: usize,
        pool: &Pool,
        mut each: impl FnMut(Chunk) -> bool,
    ) -> Result<()> {
        let size = self.size();
        if let Some(last) = pieces.last() {
            if last.end > size {
                return Err(imagegen::Error::OutOfBounds {
                    offset: last.start,
                    len: last.len(),
                    size,
                }
                .into());
            }
        }
        let mut pos = 0u64; // stream position
        for e in pieces {
            let mut off = e.start;
            while off < e.end {
                let n = (e.end - off).min(chunk as u64) as usize;
                let mut buf = pool.get();
                buf.set_len(n);
                match self {
                    Source::Random(dev) => dev.read_at(off, buf.as_mut_slice())?,
                    Source::Stream { reader, name, .. } => {
                        skip(reader, off.saturating_sub(pos), name)?;
                        reader.read_exact(buf.as_mut_slice()).map_err(|e| {
                            imagegen::Error::io_context(
                                format!("reading {name} at offset {off}"),
                                e,
                            )
                        })?;
                        pos = off + n as u64;
                    }
                }
                if !each(Chunk::new(off, buf, pool)) {
                    return Ok(());
                }
                off += n as u64;
            }
        }
        if let Source::Stream {
            reader, name, size, ..
        } = self
        {
            // Read to the end: a stream must be exactly as long as announced,
            // and a patched base is checked against its delta only there.
            let rest = std::io::copy(reader, &mut std::io::sink())
                .map_err(|e| imagegen::Error::io_context(format!("reading {name}"), e))?;
            if pos + rest != *size {
                return Err(imagegen::Error::corrupt(
                    name.to_string(),
                    format!("the stream holds {} bytes, not {size}", pos + rest),
                )
                .into());
            }
        }
        Ok(())
    }
}

impl Source {
    /// Reads a whole stream in order, `chunk` bytes at a time, asking
    /// `select` which bytes of each block to keep (a set inside the block);
    /// those, and the `table` bytes, widened to [`crate::plan::ALIGN`] and
    /// cut at the table's boundaries, go to `each` as chunks. The selection
    /// may depend on everything read before (see `StreamMapper`).
    pub fn read_selected(
        &mut self,
        table: &RangeSet,
        chunk: usize,
        pool: &Pool,
        mut select: impl FnMut(u64, &[u8]) -> Result<RangeSet>,
        mut each: impl FnMut(Chunk) -> bool,
    ) -> Result<()> {
        let size = self.size();
        let Source::Stream { reader, name, .. } = self else {
            return Err(
                imagegen::Error::Invalid("a learned plan needs a streamed image".into()).into(),
            );
        };
        let mut block = vec![0u8; chunk];
        let mut pos = 0u64;
        while pos < size {
            let n = (size - pos).min(chunk as u64) as usize;
            let buf = &mut block[..n];
            reader.read_exact(buf).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    imagegen::Error::corrupt(
                        name.to_string(),
                        format!(
                            "the stream ends before byte {}, not at {size}",
                            pos + n as u64
                        ),
                    )
                } else {
                    imagegen::Error::io_context(format!("reading {name} at offset {pos}"), e)
                }
            })?;
            let here = RangeSet::from_extents(vec![Extent::new(pos, pos + n as u64)]);
            let keep = select(pos, buf)?
                .union(&table.intersect(&here))
                .aligned(crate::plan::ALIGN, size)
                .intersect(&here);
            let pieces = keep
                .intersect(table)
                .extents()
                .iter()
                .chain(keep.subtract(table).extents())
                .copied()
                .collect::<Vec<_>>();
            let mut pieces = pieces;
            pieces.sort();
            for e in pieces {
                let mut b = pool.get();
                b.set_len(e.len() as usize);
                let at = (e.start - pos) as usize;
                b.as_mut_slice()
                    .copy_from_slice(&buf[at..at + e.len() as usize]);
                if !each(Chunk::new(e.start, b, pool)) {
                    return Ok(());
                }
            }
            pos += n as u64;
        }
        let rest = std::io::copy(reader, &mut std::io::sink())
            .map_err(|e| imagegen::Error::io_context(format!("reading {name}"), e))?;
        if rest != 0 {
            return Err(imagegen::Error::corrupt(
                name.to_string(),
                format!("the stream holds {} bytes, not {size}", size + rest),
            )
            .into());
        }
        Ok(())
    }
}

fn skip(reader: &mut Box<dyn Read + Send>, n: u64, name: &str) -> Result<()> {
    let copied = std::io::copy(&mut reader.by_ref().take(n), &mut std::io::sink())
        .map_err(|e| imagegen::Error::io_context(format!("reading {name}"), e))?;
    if copied < n {
        return Err(imagegen::Error::corrupt(
            name.to_string(),
            "stream ended before the image size it announced",
        )
        .into());
    }
    Ok(())
}

/// A bounded set of reusable aligned buffers: memory stays at `count × size`
/// whatever the image size, and a slow consumer slows the reader down.
pub struct Pool {
    tx: SyncSender<AlignedBuf>,
    rx: Mutex<Receiver<AlignedBuf>>,
}

impl Pool {
    /// `count` buffers of `size` bytes.
    pub fn new(count: usize, size: usize) -> Self {
        let (tx, rx) = sync_channel(count);
        for _ in 0..count {
            tx.send(AlignedBuf::new(size))
                .expect("the channel holds `count` buffers");
        }
        Pool {
            tx,
            rx: Mutex::new(rx),
        }
    }

    /// A free buffer, waiting until a chunk is dropped if none is.
    pub fn get(&self) -> AlignedBuf {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        // The pool holds a sender itself, so the channel never disconnects.
        let mut b = rx.recv().expect("pool keeps its own sender");
        let cap = b.capacity();
        b.set_len(cap);
        b
    }
}

/// A piece of the image at `offset`; its buffer goes back to the pool when
/// the last holder drops it.
pub struct Chunk {
    offset: u64,
    buf: Option<AlignedBuf>,
    home: SyncSender<AlignedBuf>,
}

impl Chunk {
    fn new(offset: u64, buf: AlignedBuf, pool: &Pool) -> Self {
        Chunk {
            offset,
            buf: Some(buf),
            home: pool.tx.clone(),
        }
    }

    /// Offset of the first byte in the image.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The bytes.
    pub fn data(&self) -> &[u8] {
        self.buf.as_ref().map(|b| b.as_slice()).unwrap_or(&[])
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            // The pool is sized for every buffer, so this never blocks.
            let _ = self.home.try_send(b);
        }
    }
}

/// How much of a stream is read ahead for its partition table: MBR, or GPT's
/// protective MBR, header and 128 entries.
const HEAD: usize = 34 * 512;

/// An opened image: the source, and for a raw file the file itself (its
/// holes are a plan provider).
#[derive(Debug)]
pub struct Image {
    pub source: Source,
    pub sparse_file: Option<std::fs::File>,
    /// Ranges a node delta replaces: always written, whatever the base's maps say.
    pub changed: RangeSet,
    /// The compression `imagegen` recognised by magic bytes.
    pub compression: Compression,
}

/// Opens an image file: a raw image for random access, a compressed one
/// (xz, zstd, gzip: recognised by `imagegen::source`) as a stream; with a
/// node delta, base ⊕ delta applied on the fly (`imagegen::delta`).
///
/// A stream's size is needed before anything is written (the device must be
/// large enough, GPT keeps a backup table in the last sectors): it comes from
/// `size_hint` (a bmap's `ImageSize`), the delta's base, the container's own
/// records (xz index, zstd frame headers), or else from a first pass that
/// decompresses the image and counts its bytes, without storing them. A
/// stream that turns out longer or shorter fails before any table is written.
///
/// The base of a delta is checked against the SHA-256 the delta records: a
/// raw base by one full read before anything is written, a compressed one as
/// it streams (a mismatch fails the read, so no card gets a partition table).
pub fn open(path: &Path, delta: Option<&Path>, size_hint: Option<u64>) -> Result<Image> {
    // Shared, because the sources built here cross threads and a stream is
    // opened more than once (to size it, then to write it).
    let delta: Option<Arc<Delta>> = match delta {
        Some(p) => Some(Arc::new(Delta::open(p)?)),
        None => None,
    };
    let changed = delta.as_ref().map_or_else(RangeSet::new, |d| {
        RangeSet::from_extents(
            d.ranges()
                .iter()
                .map(|r| Extent::new(r.offset, r.end()))
                .collect(),
        )
    });
    let compression = Compression::of_file(path)?;
    if !compression.is_compressed() {
        let dev = imagegen::block::FileDevice::open(path)?;
        let file = dev
            .file()
            .try_clone()
            .map_err(|e| imagegen::Error::io(path, e))?;
        let source: Arc<dyn BlockDevice> = match delta {
            None => Arc::new(dev),
            Some(d) => {
                let patched = Patched::new(dev, d)?;
                patched.verify_base()?;
                Arc::new(patched)
            }
        };
        return Ok(Image {
            source: Source::Random(source),
            sparse_file: Some(file),
            changed,
            compression,
        });
    }
    let open_stream = || -> Result<Box<dyn Read + Send>> {
        let base = ImageSource::open(path)?;
        Ok(match &delta {
            None => Box::new(base),
            Some(d) => Box::new(PatchedReader::new(
                base,
                Arc::clone(d),
                path.display().to_string(),
            )),
        })
    };
    let mut head = Vec::with_capacity(HEAD);
    open_stream()?
        .take(HEAD as u64)
        .read_to_end(&mut head)
        .map_err(|e| imagegen::Error::io_context("reading the image's first sectors", e))?;
    let size = match (size_hint, &delta) {
        (Some(s), _) => s,
        (None, Some(d)) => d.base().size,
        (None, None) => match imagegen::source::recorded_size(path, compression)? {
            Some(s) => s,
            // The container does not say: count once (the stream's length is
            // checked again as it is written).
            None => std::io::copy(&mut open_stream()?, &mut std::io::sink())
                .map_err(|e| imagegen::Error::io_context("sizing the image", e))?,
        },
    };
    Ok(Image {
        source: Source::Stream {
            reader: open_stream()?,
            size,
            name: path.display().to_string(),
            head,
        },
        sparse_file: None,
        changed,
        compression,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagegen::block::MemDevice;

    fn collect(mut src: Source, ranges: &RangeSet) -> Vec<(u64, Vec<u8>)> {
        let pool = Pool::new(2, 4096);
        let mut out = Vec::new();
        src.read_ranges(ranges.extents(), 4096, &pool, |c| {
            out.push((c.offset(), c.data().to_vec()));
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn random_and_stream_sources_yield_the_same_chunks() {
        let data: Vec<u8> = (0..20000u32).map(|i| (i * 7 % 251) as u8).collect();
        let ranges =
            RangeSet::from_extents(vec![Extent::new(100, 5000), Extent::new(12000, 20000)]);
        let a = collect(
            Source::Random(Arc::new(MemDevice::from_vec(data.clone()))),
            &ranges,
        );
        let b = collect(
            Source::Stream {
                reader: Box::new(std::io::Cursor::new(data.clone())),
                size: data.len() as u64,
                name: "stream".into(),
                head: Vec::new(),
            },
            &ranges,
        );
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|c| c.1.len()).sum::<usize>(), 4900 + 8000);
        assert_eq!(a[0].1[..], data[100..4196]);
    }

    #[test]
    fn short_stream_is_an_error() {
        let mut s = Source::Stream {
            reader: Box::new(std::io::Cursor::new(vec![0u8; 100])),
            size: 10000,
            name: "short".into(),
            head: Vec::new(),
        };
        let pool = Pool::new(1, 4096);
        let r = s.read_ranges(RangeSet::full(10000).extents(), 4096, &pool, |_| true);
        assert!(r.unwrap_err().to_string().contains("short"));
    }
}
