//! Applying deltas: streamed into a new image, as a `Read` over a streamed
//! base, or as a read-only device for random access (the flasher's view).

use super::{BaseId, Delta};
use crate::block::BlockDevice;
use crate::sink::{copy_stream, ImageWriter, OutputFormat};
use crate::source::{to_hex, ImageSource, Sha256Reader};
use crate::{Error, Result};
use std::borrow::Borrow;
use std::io::{self, Read};
use std::path::Path;

/// base ⊕ delta as a stream: reads the base forward, patches the changed
/// ranges in, and hashes the base as it goes. At the end of the base it
/// checks the base's size and SHA-256 against the delta and fails the read
/// (an `io::Error` wrapping [`Error::Invalid`]) when they differ, so a
/// consumer that writes to a temporary name never keeps a wrong result.
///
/// `D` is anything that lends a [`Delta`]: `&Delta`, `Arc<Delta>`, `Delta`.
pub struct PatchedReader<R: Read, D: Borrow<Delta>> {
    base: Sha256Reader<R>,
    delta: D,
    what: String,
    pos: u64,
}

impl<R: Read, D: Borrow<Delta>> PatchedReader<R, D> {
    /// `what` names the base in messages.
    pub fn new(base: R, delta: D, what: impl Into<String>) -> Self {
        PatchedReader {
            base: Sha256Reader::new(base),
            delta,
            what: what.into(),
            pos: 0,
        }
    }

    fn mismatch(&self) -> io::Error {
        let (digest, len) = self.base.digest();
        let actual = if len != self.delta.borrow().base().size {
            format!(
                "it has {len}{} bytes",
                if len > self.delta.borrow().base().size {
                    "+"
                } else {
                    ""
                }
            )
        } else {
            format!("its SHA-256 is {}", to_hex(&digest))
        };
        io::Error::other(self.delta.borrow().mismatch(&self.what, &actual))
    }
}

impl<R: Read, D: Borrow<Delta>> Read for PatchedReader<R, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.delta.borrow().base().size;
        let n = self.base.read(buf)?;
        if n == 0 {
            let (digest, len) = self.base.digest();
            if len != want || digest != self.delta.borrow().base().sha256 {
                return Err(self.mismatch());
            }
            return Ok(0);
        }
        if self.pos + n as u64 > want {
            return Err(self.mismatch());
        }
        self.delta
            .borrow()
            .patch(self.pos, &mut buf[..n])
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Writes base ⊕ delta to `out` (raw written sparsely, or `.zst`); the base
/// may be compressed. Refuses a base whose size or SHA-256 differs from the
/// delta's record, leaving no output. Returns the image size.
pub fn apply_file(base: &Path, delta: &Delta, out: &Path, format: OutputFormat) -> Result<u64> {
    let src = ImageSource::open(base)?;
    let what = base.display().to_string();
    if !src.compression().is_compressed() {
        // Cheap early refusal; the hash is still checked at the end.
        let len = std::fs::metadata(base)
            .map_err(|e| Error::io(base, e))?
            .len();
        if len != delta.base().size {
            return Err(delta.mismatch(&what, &format!("it has {len} bytes")));
        }
    }
    let mut reader = PatchedReader::new(src, delta, what);
    let mut w = ImageWriter::create(out, format, Some(delta.base().size))?;
    if let Err(e) = copy_stream(&mut reader, &mut w) {
        return Err(unwrap_io(e, &format!("writing {}", out.display())));
    }
    w.finish()
}

/// Recovers an [`Error`] carried through `io::Error`, or wraps the I/O error.
fn unwrap_io(e: io::Error, context: &str) -> Error {
    if !e.get_ref().is_some_and(|i| i.is::<Error>()) {
        return Error::io_context(context, e);
    }
    let text = e.to_string();
    match e.into_inner().map(|i| i.downcast::<Error>()) {
        Some(Ok(err)) => *err,
        _ => Error::Invalid(format!("{context}: {text}")),
    }
}

/// base ⊕ delta as a read-only device: reads come from the base, patched
/// wherever the delta has a range. The base's size is checked on creation;
/// its SHA-256 is checked only by [`Patched::verify_base`] (a full read), so
/// streaming consumers should prefer [`PatchedReader`] or hash as they read.
///
/// `D` is anything that lends a [`Delta`]: `&Delta`, `Arc<Delta>`, `Delta`.
#[derive(Debug)]
pub struct Patched<B: BlockDevice, D: Borrow<Delta>> {
    base: B,
    delta: D,
}

impl<B: BlockDevice, D: Borrow<Delta>> Patched<B, D> {
    /// Pairs a base device with its delta; refuses a base of the wrong size.
    pub fn new(base: B, delta: D) -> Result<Self> {
        let d = delta.borrow();
        if base.size() != d.base().size {
            return Err(d.mismatch(&base.describe(), &format!("it has {} bytes", base.size())));
        }
        Ok(Patched { base, delta })
    }

    /// Reads the whole base and refuses it unless its SHA-256 matches.
    pub fn verify_base(&self) -> Result<()> {
        let id = BaseId::of_device(&self.base)?;
        if id != self.delta.borrow().base() {
            return Err(self.delta.borrow().mismatch(
                &self.base.describe(),
                &format!("its SHA-256 is {}", to_hex(&id.sha256)),
            ));
        }
        Ok(())
    }

    /// The delta's changed ranges (everything else is the base's bytes).
    pub fn changed_ranges(&self) -> &[super::DeltaRange] {
        self.delta.borrow().ranges()
    }
}

impl<B: BlockDevice, D: Borrow<Delta> + Send + Sync> BlockDevice for Patched<B, D> {
    fn size(&self) -> u64 {
        self.base.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.base.read_at(offset, buf)?;
        self.delta.borrow().patch(offset, buf)
    }

    fn write_at(&self, _offset: u64, _buf: &[u8]) -> Result<()> {
        Err(Error::ReadOnly(self.describe()))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "{} patched by {}",
            self.base.describe(),
            self.delta.borrow().path().display()
        )
    }

    fn is_read_only(&self) -> bool {
        true
    }
}
