//! zstd frames made one chunk at a time: a `.zst` written as independent
//! frames, one per fixed-size chunk of the image, each with its content
//! size and checksum. Any zstd decoder reads the concatenation as the whole
//! image (`zstd -d` and [`crate::source::ImageSource`] do), and a frame can
//! be made before the bytes after it are known, or made again for a chunk
//! that changed, which a single stream cannot.

use std::io;

/// Compresses chunks into self-contained frames, all with the same
/// parameters, so the same bytes always give the same frame.
pub struct FrameCompressor {
    cx: zstd::bulk::Compressor<'static>,
}

impl FrameCompressor {
    /// A compressor at zstd `level` (3 is the CLI's default).
    pub fn new(level: i32) -> io::Result<Self> {
        let mut cx = zstd::bulk::Compressor::new(level)?;
        cx.include_checksum(true)?;
        cx.include_contentsize(true)?;
        Ok(FrameCompressor { cx })
    }

    /// One frame holding exactly `data`.
    pub fn frame(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.cx.compress(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_frames_decode_as_the_whole() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut fc = FrameCompressor::new(3).unwrap();
        let mut out = Vec::new();
        for c in data.chunks(1 << 20) {
            out.extend(fc.frame(c).unwrap());
        }
        assert_eq!(zstd::decode_all(&out[..]).unwrap(), data);
        // The same bytes give the same frame.
        assert_eq!(
            fc.frame(&data[..10]).unwrap(),
            fc.frame(&data[..10]).unwrap()
        );
    }
}
