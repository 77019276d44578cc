//! SHA-256 computed while bytes stream past.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{self, Read};
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

/// Hashes the bytes of a file as stored (no decompression).
pub fn sha256_file(path: &Path) -> Result<([u8; 32], u64)> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    sha256_reader(io::BufReader::with_capacity(1 << 20, f)).map_err(|e| Error::io(path, e))
}

/// Lower-case hex of a byte string.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
