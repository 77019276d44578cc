//! Image sources: raw, xz, zstd, gzip, bzip2 and lz4 images opened as one streaming
//! `Read` of the disk bytes, recognised by their magic bytes (never by their
//! names), with bounded memory; and SHA-256 computed while streaming.

mod hash;
mod size;
mod xz;

pub use hash::{sha256_file, sha256_open_file, sha256_reader, to_hex, Sha256Reader};
pub use size::recorded_size;
pub use xz::XzReader;

use crate::{Error, Result};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::Path;

/// How an image file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Not compressed: the file is the disk image itself.
    Raw,
    Xz,
    Zstd,
    Gzip,
    Bzip2,
    /// The LZ4 frame format (`lz4` CLI), not the legacy one.
    Lz4,
}

/// Containers and compressors that are recognised by magic but not decoded:
/// writing one of them raw would put its header, not a disk, on a card.
const REFUSED: &[(&[u8], &str)] = &[
    (&[0x89, b'L', b'Z', b'O', 0x00, 0x0d], "lzop"),
    (b"LZIP", "lzip"),
    (&[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c], "7-Zip"),
    (b"PK\x03\x04", "zip"),
    (b"Rar!\x1a\x07", "RAR"),
    (&[0x1f, 0x9d], "compress (.Z)"),
    (&[0x02, 0x21, 0x4c, 0x18], "legacy lz4"),
    (b"QFI\xfb", "qcow2 disk image"),
    (&[0x3a, 0xff, 0x26, 0xed], "Android sparse image"),
];

impl Compression {
    /// How many leading bytes [`Compression::detect`] looks at.
    pub const MAGIC_LEN: usize = 6;

    /// Recognises a compression format from the first bytes of a file.
    /// Anything unrecognised is [`Compression::Raw`]; see
    /// [`Compression::check`] for the formats recognised only to be refused.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            // A skippable frame (0x184D2A50..5F, little-endian) can lead a zstd file.
            || (head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18])
        {
            Compression::Zstd
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
            Compression::Bzip2
        } else if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
            Compression::Lz4
        } else {
            Compression::Raw
        }
    }

    /// Like [`Compression::detect`], but a format recognised and not
    /// supported (lzop, lzip, 7-Zip, zip, …) is an error naming it.
    pub fn check(head: &[u8], what: &str) -> Result<Compression> {
        match REFUSED.iter().find(|(magic, _)| head.starts_with(magic)) {
            Some((_, name)) => Err(Error::unsupported(
                what.to_string(),
                format!(
                    "it is a {name} file, which nodeimg does not decode; \
                     unpack it to a raw image (or recompress it with xz or zstd) first"
                ),
            )),
            None => Ok(Compression::detect(head)),
        }
    }

    /// The compression of the file at `path`, from its first bytes.
    pub fn of_file(path: &Path) -> Result<Compression> {
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let head = read_head(&mut f).map_err(|e| Error::io(path, e))?;
        Compression::check(&head, &path.display().to_string())
    }

    /// Whether the bytes must be decompressed to get the image.
    pub fn is_compressed(self) -> bool {
        self != Compression::Raw
    }

    /// Short lower-case name: `raw`, `xz`, `zstd`, `gzip`, `bzip2`, `lz4`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Raw => "raw",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Lz4 => "lz4",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Refuses to modify a compressed image in place, with a one-line reason.
pub fn ensure_writable_image(path: &Path) -> Result<()> {
    let c = Compression::of_file(path)?;
    if c.is_compressed() {
        return Err(Error::Invalid(format!(
            "{}: is a {c}-compressed image, which cannot be changed in place; decompress it first",
            path.display()
        )));
    }
    Ok(())
}

/// Reads up to [`Compression::MAGIC_LEN`] bytes (fewer only at end of file).
fn read_head(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(Compression::MAGIC_LEN);
    r.by_ref()
        .take(Compression::MAGIC_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// The decompressed bytes of an image, read forward once.
///
/// Read errors carry the image's name and, for compressed images, say that
/// the compressed data is corrupt or truncated.
pub struct ImageSource {
    reader: Box<dyn Read + Send>,
    compression: Compression,
    what: String,
    pos: u64,
}

impl std::fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageSource")
            .field("what", &self.what)
            .field("compression", &self.compression)
            .field("pos", &self.pos)
            .finish()
    }
}

impl ImageSource {
    /// Opens the image file at `path`, whatever its compression.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        if file.metadata().map_err(|e| Error::io(path, e))?.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: is a directory, not an image",
                path.display()
            )));
        }
        Self::from_reader(file, path.display().to_string())
    }

    /// Wraps any byte stream (a download, a pipe); `what` names it in errors.
    pub fn from_reader(mut reader: impl Read + Send + 'static, what: String) -> Result<Self> {
        let head = read_head(&mut reader).map_err(|e| Error::io_context(what.clone(), e))?;
        let compression = Compression::check(&head, &what)?;
        let whole = Cursor::new(head).chain(reader);
        let reader: Box<dyn Read + Send> = match compression {
            Compression::Raw => Box::new(whole),
            Compression::Xz => Box::new(
                XzReader::new(io::BufReader::with_capacity(1 << 20, whole))
                    .map_err(|e| Error::io_context(what.clone(), e))?,
            ),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(whole)),
            Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(whole)),
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(whole)
                    .map_err(|e| Error::io_context(what.clone(), e))?;
                // Accept the large windows `zstd --long` produces; memory
                // grows only when a stream actually asks for it.
                d.window_log_max(31)
                    .map_err(|e| Error::io_context(what.clone(), e))?;
                Box::new(d)
            }
        };
        Ok(ImageSource {
            reader,
            compression,
            what,
            pos: 0,
        })
    }

    /// The compression detected.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// How many image bytes have been read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The name used in messages (usually the path).
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Reads exactly `buf.len()` bytes; end of data is a "truncated" error.
    pub fn read_exact_image(&mut self, buf: &mut [u8]) -> Result<()> {
        let at = self.pos;
        self.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::corrupt(
                    format!("image {}", self.what),
                    format!(
                        "truncated: ends before byte {} (needed {} bytes at {at})",
                        at + buf.len() as u64,
                        buf.len()
                    ),
                )
            } else {
                Error::io_context(format!("reading {}", self.what), e)
            }
        })
    }

    /// Skips `n` bytes forward; end of data is a "truncated" error.
    pub fn skip(&mut self, n: u64) -> Result<()> {
        let at = self.pos;
        let copied = io::copy(&mut self.by_ref().take(n), &mut io::sink())
            .map_err(|e| Error::io_context(format!("reading {}", self.what), e))?;
        if copied < n {
            return Err(Error::corrupt(
                format!("image {}", self.what),
                format!(
                    "truncated: ends at byte {}, expected at least {}",
                    at + copied,
                    at + n
                ),
            ));
        }
        Ok(())
    }
}

impl Read for ImageSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.reader.read(buf) {
            Ok(n) => {
                self.pos += n as u64;
                Ok(n)
            }
            Err(e) if self.compression.is_compressed() => Err(io::Error::new(
                e.kind(),
                format!(
                    "{}: corrupt or truncated {} data after {} image bytes: {e}",
                    self.what, self.compression, self.pos
                ),
            )),
            Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", self.what))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Vec<u8> {
        (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        match c {
            Compression::Raw => data.to_vec(),
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    const ALL: [Compression; 6] = [
        Compression::Raw,
        Compression::Xz,
        Compression::Zstd,
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Lz4,
    ];

    #[test]
    fn every_format_is_detected_by_magic_and_round_trips() {
        let data = sample();
        for c in ALL {
            let packed = compress(c, &data);
            assert_eq!(Compression::detect(&packed), c);
            let mut src = ImageSource::from_reader(Cursor::new(packed), "mem".into()).unwrap();
            assert_eq!(src.compression(), c);
            let mut out = Vec::new();
            src.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{c}");
            assert_eq!(src.position(), data.len() as u64);
        }
    }

    #[test]
    fn truncated_compressed_streams_are_errors() {
        let data = sample();
        for c in &ALL[1..] {
            let c = *c;
            let mut packed = compress(c, &data);
            packed.truncate(packed.len() / 2);
            let mut src = ImageSource::from_reader(Cursor::new(packed), "half.img".into()).unwrap();
            let err = src.read_to_end(&mut Vec::new()).unwrap_err().to_string();
            assert!(
                err.contains("half.img") && err.contains("corrupt or truncated"),
                "{c}: {err}"
            );
        }
    }

    #[test]
    fn the_command_line_tools_output_is_understood() {
        // The files users have come from the CLI tools, not from our encoders.
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.img");
        let data = sample();
        std::fs::write(&raw, &data).unwrap();
        for (tool, ext) in [("bzip2", "bz2"), ("lz4", "lz4")] {
            let packed = dir.path().join(format!("d.img.{ext}"));
            let out = std::process::Command::new(tool)
                .arg("-c")
                .arg(&raw)
                .output()
                .unwrap();
            assert!(out.status.success(), "{tool}");
            std::fs::write(&packed, out.stdout).unwrap();
            let mut out = Vec::new();
            ImageSource::open(&packed)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert!(out == data, "{tool}");
        }
    }

    #[test]
    fn unsupported_formats_are_refused_by_name() {
        for (head, name) in [
            (&b"\x89LZO\x00\x0d\x0a\x1a\x0a"[..], "lzop"),
            (b"LZIP\x01", "lzip"),
            (b"PK\x03\x04\x14\x00", "zip"),
            (&[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c][..], "7-Zip"),
        ] {
            let err = ImageSource::from_reader(Cursor::new(head.to_vec()), "x.img".into())
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains("x.img"), "{err}");
        }
    }

    #[test]
    fn short_files_are_raw() {
        assert_eq!(Compression::detect(&[]), Compression::Raw);
        assert_eq!(Compression::detect(&[0x1f]), Compression::Raw);
        let mut src = ImageSource::from_reader(Cursor::new(vec![1, 2]), "tiny".into()).unwrap();
        let mut buf = [0u8; 4];
        let err = src.read_exact_image(&mut buf).unwrap_err().to_string();
        assert!(err.contains("tiny") && err.contains("truncated"), "{err}");
    }
}
