//! Writing delta files: from an overlay, or by comparing two images.

use super::{check_range, BaseId, DeltaInfo, DeltaRange, HEADER_LEN, MAGIC, RECORD_HEAD, VERSION};
use crate::block::{BlockDevice, Overlay};
use crate::sink::PendingFile;
use crate::source::{ImageSource, Sha256Reader};
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Builds a delta file range by range, in a temporary file renamed into
/// place by [`finish`](DeltaWriter::finish). Adjacent pushes merge into one
/// range. Dropped unfinished, it leaves nothing behind.
pub struct DeltaWriter {
    out: PendingFile,
    path: PathBuf,
    block_size: u32,
    ranges: Vec<DeltaRange>,
    /// Where the next record or byte goes.
    pos: u64,
}

impl DeltaWriter {
    /// Starts a delta at `path` with the given block size.
    pub fn create(path: &Path, block_size: u32) -> Result<Self> {
        // Deltas stay 0600 when committed: they may hold secrets.
        let out = PendingFile::create(path)?;
        Ok(DeltaWriter {
            out,
            path: path.to_path_buf(),
            block_size,
            ranges: Vec::new(),
            pos: HEADER_LEN,
        })
    }

    /// Appends changed bytes at image `offset`, which must not precede
    /// what was pushed before.
    pub fn push(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let ioerr = |e| Error::io(&self.path, e);
        match self.ranges.last_mut() {
            Some(last) if last.end() == offset => {
                last.len += data.len() as u64;
                self.out
                    .file()
                    .write_all_at(&last.len.to_le_bytes(), last.data_pos - 8)
                    .map_err(ioerr)?;
            }
            last => {
                if let Some(l) = last {
                    if offset < l.end() {
                        return Err(Error::Invalid(format!(
                            "delta {}: range at {offset} pushed after one ending at {}",
                            self.path.display(),
                            l.end()
                        )));
                    }
                }
                let mut rec = [0u8; RECORD_HEAD as usize];
                rec[..8].copy_from_slice(&offset.to_le_bytes());
                rec[8..].copy_from_slice(&(data.len() as u64).to_le_bytes());
                self.out
                    .file()
                    .write_all_at(&rec, self.pos)
                    .map_err(ioerr)?;
                self.pos += RECORD_HEAD;
                self.ranges.push(DeltaRange {
                    offset,
                    len: data.len() as u64,
                    data_pos: self.pos,
                });
            }
        }
        self.out
            .file()
            .write_all_at(data, self.pos)
            .map_err(ioerr)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Writes header and checksum for a delta over `base`, and renames the
    /// file into place.
    pub fn finish(self, base: BaseId) -> Result<DeltaInfo> {
        let (info, file) = self.finish_pending(base)?;
        file.commit(0o600)?;
        Ok(info)
    }

    /// Writes header and checksum, leaving the file under its temporary
    /// name for the caller to commit (0600: deltas may hold secrets), alone
    /// or with others ([`PendingFile::commit_all`]).
    pub fn finish_pending(self, base: BaseId) -> Result<(DeltaInfo, PendingFile)> {
        let ioerr = |e| Error::io(&self.path, e);
        let mut prev_end = 0;
        for (i, r) in self.ranges.iter().enumerate() {
            check_range(r, prev_end, self.block_size, base.size).map_err(|why| {
                Error::Invalid(format!("delta {}: range {i}: {why}", self.path.display()))
            })?;
            prev_end = r.end();
        }
        let mut head = [0u8; HEADER_LEN as usize];
        head[..8].copy_from_slice(&MAGIC);
        head[8..12].copy_from_slice(&VERSION.to_le_bytes());
        head[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        head[16..24].copy_from_slice(&base.size.to_le_bytes());
        head[24..56].copy_from_slice(&base.sha256);
        head[56..64].copy_from_slice(&(self.ranges.len() as u64).to_le_bytes());
        self.out.file().write_all_at(&head, 0).map_err(ioerr)?;
        // The checksum covers what is on disk, read back in one pass.
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; self.pos.min(1 << 20) as usize];
        let mut at = 0;
        while at < self.pos {
            let n = (self.pos - at).min(buf.len() as u64) as usize;
            self.out
                .file()
                .read_exact_at(&mut buf[..n], at)
                .map_err(ioerr)?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        let digest: [u8; 32] = hasher.finalize().into();
        self.out
            .file()
            .write_all_at(&digest, self.pos)
            .map_err(ioerr)?;
        let info = DeltaInfo {
            version: VERSION,
            block_size: self.block_size,
            base,
            ranges: self.ranges,
        };
        Ok((info, self.out))
    }
}

/// Saves what `overlay` changed relative to its base as a delta at `path`.
/// `base` is the base's identity (see [`BaseId::of_device`]); blocks written
/// back to their original bytes are left out.
pub fn save_overlay<B: BlockDevice>(
    overlay: &Overlay<B>,
    base: BaseId,
    path: &Path,
) -> Result<DeltaInfo> {
    let (info, file) = save_overlay_pending(overlay, base, path)?;
    file.commit(0o600)?;
    Ok(info)
}

/// [`save_overlay`], leaving the delta under its temporary name for the
/// caller to commit (0600), alone or with others.
pub fn save_overlay_pending<B: BlockDevice>(
    overlay: &Overlay<B>,
    base: BaseId,
    path: &Path,
) -> Result<(DeltaInfo, PendingFile)> {
    if base.size != overlay.size() {
        return Err(Error::Invalid(format!(
            "delta {}: base identity says {} bytes but the overlay has {}",
            path.display(),
            base.size,
            overlay.size()
        )));
    }
    let mut w = DeltaWriter::create(path, crate::block::OVERLAY_BLOCK as u32)?;
    let mut buf = vec![0u8; 1 << 18];
    for (off, len) in overlay.changed_ranges()? {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            overlay.read_at(off + done, &mut buf[..n])?;
            w.push(off + done, &buf[..n])?;
            done += n as u64;
        }
    }
    w.finish_pending(base)
}

/// Compares `modified` with `base` (either may be compressed) block by
/// block and writes their difference as a delta at `path`. Both are read
/// once, forward; they must have the same size.
pub fn create_from_images(
    base: &Path,
    modified: &Path,
    path: &Path,
    block_size: u32,
) -> Result<DeltaInfo> {
    let mut b = Sha256Reader::new(ImageSource::open(base)?);
    let mut m = ImageSource::open(modified)?;
    let mut w = DeltaWriter::create(path, block_size)?;
    let chunk = (1usize << 20).max(block_size as usize);
    let (mut bb, mut mb) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut offset = 0u64;
    loop {
        let nb = fill(&mut b, &mut bb)
            .map_err(|e| Error::io_context(format!("reading {}", base.display()), e))?;
        let nm = fill(&mut m, &mut mb)
            .map_err(|e| Error::io_context(format!("reading {}", modified.display()), e))?;
        if nb != nm {
            let (sb, sm) = (offset + nb as u64, offset + nm as u64);
            return Err(Error::Invalid(format!(
                "{} has {}{} bytes but {} has {}{}; a delta keeps the image size",
                modified.display(),
                if nm < chunk { "" } else { "at least " },
                sm,
                base.display(),
                if nb < chunk { "" } else { "at least " },
                sb
            )));
        }
        for (i, (x, y)) in bb[..nb]
            .chunks(block_size as usize)
            .zip(mb[..nm].chunks(block_size as usize))
            .enumerate()
        {
            if x != y {
                w.push(offset + (i * block_size as usize) as u64, y)?;
            }
        }
        offset += nb as u64;
        if nb < chunk {
            break;
        }
    }
    let (sha256, size) = b.finish();
    w.finish(BaseId { size, sha256 })
}

/// Reads until `buf` is full or the stream ends; returns the count.
pub(super) fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
