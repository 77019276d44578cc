//! SHA-256 computed while bytes stream past.

use crate::ranges::RangeSet;
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A reader that hashes everything read through it.
#[derive(Debug)]
pub struct Sha256Reader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Sha256Reader<R> {
    pub fn new(inner: R) -> Self {
        Sha256Reader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The digest of the bytes read so far, and their number, without
    /// consuming the reader.
    pub fn digest(&self) -> ([u8; 32], u64) {
        (self.hasher.clone().finalize().into(), self.len)
    }

    /// The digest and the number of bytes read so far.
    pub fn finish(self) -> ([u8; 32], u64) {
        (self.hasher.finalize().into(), self.len)
    }
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Hashes a whole stream in 1 MiB steps: (digest, length).
pub fn sha256_reader(r: impl Read) -> io::Result<([u8; 32], u64)> {
    let mut h = Sha256Reader::new(r);
    io::copy(&mut h, &mut io::sink())?;
    Ok(h.finish())
}

/// Hashes the bytes of a file as stored (no decompression): (digest, length).
pub fn sha256_file(path: &Path) -> Result<([u8; 32], u64)> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    sha256_open_file(&f).map_err(|e| Error::io(path, e))
}

/// Bytes read or hashed at a time.
const STEP: usize = 1 << 20;

/// [`sha256_file`] of a file already open. Only its data is read: each hole
/// (`SEEK_HOLE`) is hashed as the zeros it reads as, from memory, as
/// `cp --sparse` skips them. A sparse disk image is mostly holes, and
/// reading them cost a zero-filled copy per page.
pub fn sha256_open_file(file: &File) -> io::Result<([u8; 32], u64)> {
    let size = file.metadata()?.len();
    // A filesystem without SEEK_DATA: every byte is read.
    let data = crate::ranges::data_map(file, size).unwrap_or_else(|_| RangeSet::full(size));
    let zeros = vec![0u8; STEP];
    let mut buf = vec![0u8; STEP];
    let mut h = Sha256::new();
    let feed_zeros = |h: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(STEP as u64) as usize;
            h.update(&zeros[..k]);
            n -= k as u64;
        }
    };
    let mut at = 0u64;
    for e in data.extents() {
        feed_zeros(&mut h, e.start - at);
        let mut pos = e.start;
        while pos < e.end {
            let n = ((e.end - pos) as usize).min(STEP);
            file.read_exact_at(&mut buf[..n], pos)?;
            h.update(&buf[..n]);
            pos += n as u64;
        }
        at = e.end;
    }
    feed_zeros(&mut h, size.saturating_sub(at));
    Ok((h.finalize().into(), size))
}

/// Lower-case hex of a byte string.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_file_hashes_as_the_bytes_it_reads_as() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse.img");
        let f = File::create(&p).unwrap();
        let size = 5 * STEP as u64 + 777;
        f.set_len(size).unwrap();
        f.write_all_at(b"head", 3).unwrap();
        f.write_all_at(&[0xa5; 9000], 2 * STEP as u64 - 100)
            .unwrap();
        f.write_all_at(b"tail", size - 4).unwrap();
        drop(f);
        let all = std::fs::read(&p).unwrap();
        let want: [u8; 32] = Sha256::digest(&all).into();
        assert_eq!(sha256_file(&p).unwrap(), (want, size));
        // Ending in a hole, and empty.
        let q = dir.path().join("hole-end.img");
        let g = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&q)
            .unwrap();
        g.write_all_at(b"x", 0).unwrap();
        g.set_len(3 * STEP as u64).unwrap();
        let mut bytes = vec![0u8; 3 * STEP];
        bytes[0] = b'x';
        assert_eq!(
            sha256_open_file(&g).unwrap().0,
            <[u8; 32]>::from(Sha256::digest(&bytes))
        );
        let e = File::create(dir.path().join("empty")).unwrap();
        assert_eq!(
            sha256_open_file(&e).unwrap().0,
            <[u8; 32]>::from(Sha256::digest(b""))
        );
    }

    #[test]
    fn known_digest() {
        let (d, n) = sha256_reader(&b"abc"[..]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            to_hex(&d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
