//! `.xz` decoding on every core: liblzma's threaded decoder works on the
//! stream's blocks in parallel when their headers record their sizes (as
//! multi-threaded `xz`, `pixz` and every OS image built with `xz -T` write
//! them), and decodes in one thread otherwise. Concatenated streams
//! (`cat a.xz b.xz`, with optional stream padding between them) are decoded
//! one after the other, as `xz -d` does.

use liblzma::bufread::XzDecoder;
use liblzma::stream::{MtStreamBuilder, Stream};
use std::io::{self, BufRead, Read};

/// Memory the decoder may use for its threads, at most; a stream whose
/// blocks need more is decoded in fewer threads, down to one (in bounded
/// memory). A quarter of the RAM where that is less, as `xz` does, so a
/// small board flashing a card keeps its memory.
const THREADING_MEMLIMIT: u64 = 512 << 20;

fn threading_memlimit() -> u64 {
    // SAFETY: sysconf only reads system configuration.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    match (u64::try_from(pages), u64::try_from(size)) {
        (Ok(p), Ok(s)) if p > 0 && s > 0 => (p.saturating_mul(s) / 4).min(THREADING_MEMLIMIT),
        _ => THREADING_MEMLIMIT,
    }
}

/// A reader of the decompressed bytes of one or more concatenated xz streams.
pub struct XzReader<R: BufRead> {
    decoder: Option<XzDecoder<R>>,
    threads: u32,
}

impl<R: BufRead> XzReader<R> {
    /// Decodes with as many threads as there are cores.
    pub fn new(inner: R) -> io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_threads(inner, threads as u32)
    }

    /// Decodes with at most `threads` threads (1 decodes in the caller's thread only).
    pub fn with_threads(inner: R, threads: u32) -> io::Result<Self> {
        let threads = threads.max(1);
        Ok(XzReader {
            decoder: Some(XzDecoder::new_stream(inner, decoder(threads)?)),
            threads,
        })
    }

    /// After a stream's end: skips stream padding (NUL bytes, a multiple of
    /// four) and starts a decoder on the next stream, or reports the end.
    fn next_stream(&mut self, mut inner: R) -> io::Result<bool> {
        let mut padding = 0u64;
        loop {
            let buf = inner.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let zeros = buf.iter().take_while(|&&b| b == 0).count();
            let more = zeros < buf.len();
            inner.consume(zeros);
            padding += zeros as u64;
            if more {
                break;
            }
        }
        if !padding.is_multiple_of(4) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("xz stream padding of {padding} bytes is not a multiple of four"),
            ));
        }
        let at_end = inner.fill_buf()?.is_empty();
        if !at_end {
            self.decoder = Some(XzDecoder::new_stream(inner, decoder(self.threads)?));
        }
        Ok(!at_end)
    }
}

fn decoder(threads: u32) -> io::Result<Stream> {
    MtStreamBuilder::new()
        .threads(threads)
        .memlimit_threading(threading_memlimit())
        .memlimit_stop(u64::MAX)
        .decoder()
        .map_err(io::Error::other)
}

impl<R: BufRead> Read for XzReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(d) = &mut self.decoder else {
                return Ok(0);
            };
            let n = d.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // The decoder returns 0 only at its stream's end (a cut-off
            // stream is an error): look for another stream behind it.
            let inner = self
                .decoder
                .take()
                .map(XzDecoder::into_inner)
                .expect("the decoder was just used");
            if !self.next_stream(inner)? {
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor, Write};

    fn sample(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|i| {
                // Half compressible, half not, so blocks differ.
                if (i >> 16) % 2 == 0 {
                    (i % 7) as u8
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    /// A stream of several blocks with their sizes in the headers, as `xz -T` writes.
    fn multi_block(data: &[u8]) -> Vec<u8> {
        let stream = MtStreamBuilder::new()
            .threads(2)
            .block_size(256 << 10)
            .preset(0)
            .encoder()
            .unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn single_block(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(packed: Vec<u8>, threads: u32) -> io::Result<Vec<u8>> {
        let mut r = XzReader::with_threads(BufReader::new(Cursor::new(packed)), threads)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn single_and_multi_block_streams_decode_with_any_thread_count() {
        let data = sample(3 << 20);
        for packed in [multi_block(&data), single_block(&data)] {
            for threads in [1, 2, 4] {
                assert!(
                    decode(packed.clone(), threads).unwrap() == data,
                    "{threads}"
                );
            }
        }
    }

    #[test]
    fn concatenated_streams_with_padding_decode_in_order() {
        let (a, b) = (sample(1 << 20), sample(700_000));
        let mut packed = multi_block(&a);
        packed.extend_from_slice(&[0; 8]);
        packed.extend(single_block(&b));
        packed.extend_from_slice(&[0; 4]);
        let out = decode(packed, 2).unwrap();
        assert!(out[..a.len()] == a[..] && out[a.len()..] == b[..]);
    }

    #[test]
    fn damage_is_an_error_not_short_data() {
        let data = sample(2 << 20);
        let good = multi_block(&data);
        // A flipped byte in the middle, a cut-off stream, odd padding, trailing garbage.
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x10;
        let cut = good[..good.len() - 100].to_vec();
        let mut odd = good.clone();
        odd.extend_from_slice(&[0; 3]);
        let mut junk = good.clone();
        junk.extend_from_slice(b"not an xz stream");
        for (name, packed) in [
            ("flipped", flipped),
            ("cut", cut),
            ("odd", odd),
            ("junk", junk),
        ] {
            assert!(decode(packed, 2).is_err(), "{name}");
        }
    }
}
