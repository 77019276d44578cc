//! A device over a streamed (compressed) image, so that `inspect` can read
//! tables and filesystem metadata without a temporary copy. Reads are meant
//! to move forward; recently read chunks are kept in a bounded cache, and a
//! read behind both the stream and the cache restarts the stream from the
//! beginning (slow, but correct: an EBR chain far into the disk can be read
//! before the first partition is probed).

use crate::block::BlockDevice;
use crate::source::ImageSource;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;

const CHUNK: u64 = 64 * 1024;
/// Bytes of read chunks kept for re-reading (FATs, directory blocks).
const CACHE_BUDGET: usize = 64 << 20;

/// A [`BlockDevice`] over an [`ImageSource`] read forward. Its size
/// is unknown (reported as `u64::MAX`) until the end of the stream has
/// been reached; [`StreamDevice::finish`] reads to the end to learn it.
pub struct StreamDevice {
    inner: Mutex<Inner>,
    what: String,
}

/// Opens the stream again from its first byte.
type Reopen = Box<dyn Fn() -> Result<ImageSource> + Send + Sync>;

struct Inner {
    src: ImageSource,
    reopen: Reopen,
    /// How many times the stream was restarted.
    restarts: u32,
    /// Stream position: always a multiple of `CHUNK`, or the end.
    pos: u64,
    /// Set once the end of the stream is seen.
    size: Option<u64>,
    cache: BTreeMap<u64, Vec<u8>>,
    cached: usize,
}

impl StreamDevice {
    /// A device over the stream `open` returns; `open` is called again if a
    /// read needs bytes the stream has passed.
    pub fn new(open: impl Fn() -> Result<ImageSource> + Send + Sync + 'static) -> Result<Self> {
        let src = open()?;
        let what = src.describe().to_string();
        Ok(StreamDevice {
            inner: Mutex::new(Inner {
                src,
                reopen: Box::new(open),
                restarts: 0,
                pos: 0,
                size: None,
                cache: BTreeMap::new(),
                cached: 0,
            }),
            what,
        })
    }

    /// How many times the stream had to be restarted to go back.
    pub fn restarts(&self) -> u32 {
        self.lock().restarts
    }

    /// The image size, if the end has been reached.
    pub fn known_size(&self) -> Option<u64> {
        self.lock().size
    }

    /// Reads the rest of the stream (checking it decompresses cleanly) and
    /// returns the image size.
    pub fn finish(&self) -> Result<u64> {
        let mut inner = self.lock();
        if let Some(size) = inner.size {
            return Ok(size);
        }
        let pos = inner.pos;
        let rest = std::io::copy(&mut inner.src, &mut std::io::sink())
            .map_err(|e| Error::io_context(format!("reading {}", self.what), e))?;
        inner.size = Some(pos + rest);
        Ok(pos + rest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Makes chunk `c` available in the cache, reading forward to it.
    fn load(&mut self, c: u64, what: &str) -> Result<()> {
        if self.cache.contains_key(&c) {
            return Ok(());
        }
        let start = c * CHUNK;
        if start < self.pos {
            tracing::debug!("{what}: restarting the stream to read byte {start} again");
            self.src = (self.reopen)()?;
            self.pos = 0;
            self.restarts += 1;
        }
        if self.size.is_some_and(|s| start >= s) {
            return Ok(());
        }
        let rerr = |e| Error::io_context(format!("reading {what}"), e);
        let skipped = std::io::copy(
            &mut (&mut self.src).take(start - self.pos),
            &mut std::io::sink(),
        )
        .map_err(rerr)?;
        self.pos += skipped;
        if self.pos < start {
            self.size = Some(self.pos);
            return Ok(());
        }
        let mut chunk = Vec::with_capacity(CHUNK as usize);
        (&mut self.src)
            .take(CHUNK)
            .read_to_end(&mut chunk)
            .map_err(rerr)?;
        self.pos += chunk.len() as u64;
        if (chunk.len() as u64) < CHUNK {
            self.size = Some(self.pos);
        }
        self.cached += chunk.len();
        self.cache.insert(c, chunk);
        while self.cached > CACHE_BUDGET {
            match self.cache.pop_first() {
                Some((_, old)) => self.cached -= old.len(),
                None => break,
            }
        }
        Ok(())
    }
}

impl BlockDevice for StreamDevice {
    fn size(&self) -> u64 {
        self.lock().size.unwrap_or(u64::MAX)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut inner = self.lock();
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(Error::OutOfBounds {
                offset,
                len: buf.len() as u64,
                size: u64::MAX,
            })?;
        let mut at = offset;
        while at < end {
            let c = at / CHUNK;
            inner.load(c, &self.what)?;
            let chunk = inner.cache.get(&c).map(Vec::as_slice).unwrap_or(&[]);
            let within = (at - c * CHUNK) as usize;
            let n = ((end - at) as usize).min(chunk.len().saturating_sub(within));
            if n == 0 {
                return Err(Error::OutOfBounds {
                    offset,
                    len: buf.len() as u64,
                    size: inner.size.unwrap_or(at),
                });
            }
            let dst = (at - offset) as usize;
            buf[dst..dst + n].copy_from_slice(&chunk[within..within + n]);
            at += n as u64;
        }
        Ok(())
    }

    fn write_at(&self, _offset: u64, _buf: &[u8]) -> Result<()> {
        Err(Error::ReadOnly(self.what.clone()))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        self.what.clone()
    }

    fn is_read_only(&self) -> bool {
        true
    }
}
