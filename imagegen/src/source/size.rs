//! The decompressed size of an image from its container's own records,
//! without decompressing it: the xz index at the end of each stream, the
//! content size in each zstd frame header. `None` when the container does
//! not record it (a zstd frame written from a pipe, gzip, bzip2, lz4).

use super::Compression;
use crate::{Error, Result};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The size of the image in the compressed file at `path`, when its
/// container records it.
pub fn recorded_size(path: &Path, compression: Compression) -> Result<Option<u64>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let found = match compression {
        Compression::Xz => xz_size(&f),
        Compression::Zstd => zstd_size(&f),
        _ => Ok(None),
    };
    match found {
        // A truncated container records nothing trustworthy; decoding it
        // says what is wrong.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(None),
        other => other.map_err(|e| Error::io(path, e)),
    }
}

fn bad() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed container")
}

fn varint(buf: &[u8], at: &mut usize) -> std::io::Result<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let b = *buf.get(*at).ok_or_else(bad)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad())
}

/// Sums the uncompressed sizes in the index of every stream, walking back
/// from the end (streams may be concatenated and padded).
fn xz_size(f: &File) -> std::io::Result<Option<u64>> {
    let mut end = f.metadata()?.len();
    let mut total = 0u64;
    while end > 0 {
        let mut footer = [0u8; 12];
        if end < 24 {
            return Ok(None);
        }
        f.read_exact_at(&mut footer, end - 12)?;
        if footer[8..] == [0; 4] {
            end -= 4; // stream padding comes in 4-byte units
            continue;
        }
        if &footer[10..12] != b"YZ" {
            return Ok(None);
        }
        let backward = (u64::from(u32::from_le_bytes([
            footer[4], footer[5], footer[6], footer[7],
        ])) + 1)
            * 4;
        if backward + 24 > end || backward > 1 << 30 {
            return Ok(None);
        }
        let mut index = vec![0u8; backward as usize];
        f.read_exact_at(&mut index, end - 12 - backward)?;
        if index[0] != 0 {
            return Ok(None);
        }
        let mut at = 1;
        let records = varint(&index, &mut at)?;
        let mut blocks = 0u64;
        for _ in 0..records {
            let unpadded = varint(&index, &mut at)?;
            let size = varint(&index, &mut at)?;
            blocks = blocks
                .checked_add(unpadded.checked_next_multiple_of(4).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            total = total.checked_add(size).ok_or_else(bad)?;
        }
        let stream = blocks.saturating_add(backward + 24);
        if stream > end {
            return Ok(None);
        }
        end -= stream;
    }
    Ok(Some(total))
}

/// Adds up the content size of every zstd frame, skipping each frame by its
/// block headers; `None` as soon as one frame does not record its size.
fn zstd_size(f: &File) -> std::io::Result<Option<u64>> {
    let len = f.metadata()?.len();
    let mut r = BufReader::with_capacity(64 << 10, f);
    let mut pos = 0u64;
    let mut total = 0u64;
    let u32le = |r: &mut BufReader<&File>| -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    };
    while pos < len {
        r.seek(SeekFrom::Start(pos))?;
        let magic = u32le(&mut r)?;
        if magic & 0xffff_fff0 == 0x184d_2a50 {
            let n = u32le(&mut r)?;
            pos += 8 + u64::from(n);
            continue;
        }
        if magic != 0xfd2f_b528 {
            return Ok(None);
        }
        let mut fhd = [0u8; 1];
        r.read_exact(&mut fhd)?;
        let fhd = fhd[0];
        let single = fhd & 0x20 != 0;
        let dict = [0u64, 1, 2, 4][(fhd & 3) as usize];
        let fcs = match fhd >> 6 {
            0 if single => 1,
            0 => 0,
            1 => 2,
            2 => 4,
            _ => 8,
        };
        if fcs == 0 {
            return Ok(None);
        }
        let skip = u64::from(!single) + dict;
        r.seek_relative(skip as i64)?;
        let mut b = [0u8; 8];
        r.read_exact(&mut b[..fcs])?;
        let mut size = u64::from_le_bytes(b);
        if fcs == 2 {
            size += 256;
        }
        total = total.checked_add(size).ok_or_else(bad)?;
        pos += 4 + 1 + skip + fcs as u64;
        // Blocks: 3-byte headers, the last one flagged.
        loop {
            r.seek(SeekFrom::Start(pos))?;
            let mut h = [0u8; 3];
            r.read_exact(&mut h)?;
            let h = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
            let last = h & 1 != 0;
            let kind = (h >> 1) & 3;
            let size = u64::from(h >> 3);
            pos += 3 + match kind {
                1 => 1, // RLE: one byte repeated
                3 => return Err(bad()),
                _ => size,
            };
            if last {
                break;
            }
        }
        if fhd & 0x04 != 0 {
            pos += 4; // content checksum
        }
    }
    if pos != len {
        return Ok(None);
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_recorded_by_the_cli_tools_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.img");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 13) as u8).collect();
        std::fs::write(&raw, &data).unwrap();
        let run = |args: &[&str], out: &str| {
            let o = std::process::Command::new(args[0])
                .args(&args[1..])
                .arg(&raw)
                .output()
                .unwrap();
            assert!(o.status.success(), "{args:?}");
            let p = dir.path().join(out);
            std::fs::write(&p, o.stdout).unwrap();
            p
        };
        let xz = run(&["xz", "-c", "-T2", "--block-size=1MiB"], "a.xz");
        assert_eq!(
            recorded_size(&xz, Compression::Xz).unwrap(),
            Some(3_000_000)
        );
        // Two streams concatenated.
        let mut two = std::fs::read(&xz).unwrap();
        two.extend(std::fs::read(&xz).unwrap());
        let xz2 = dir.path().join("b.xz");
        std::fs::write(&xz2, two).unwrap();
        assert_eq!(
            recorded_size(&xz2, Compression::Xz).unwrap(),
            Some(6_000_000)
        );
        let zst = run(&["zstd", "-q", "-c"], "a.zst");
        assert_eq!(
            recorded_size(&zst, Compression::Zstd).unwrap(),
            Some(3_000_000)
        );
        let zst = run(
            &["zstd", "-q", "-c", "--no-check", "-B1MiB", "-T2"],
            "b.zst",
        );
        assert_eq!(
            recorded_size(&zst, Compression::Zstd).unwrap(),
            Some(3_000_000)
        );
        // From a pipe zstd cannot know the size: not recorded, not guessed.
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cat {} | zstd -q -c", raw.display()))
            .output()
            .unwrap();
        let piped = dir.path().join("c.zst");
        std::fs::write(&piped, o.stdout).unwrap();
        assert_eq!(recorded_size(&piped, Compression::Zstd).unwrap(), None);
        // Garbage is "not recorded" or an error, never a wrong size.
        let junk = dir.path().join("junk.xz");
        std::fs::write(&junk, b"\xfd7zXZ\x00 this is not an xz file at all YZ").unwrap();
        assert!(!matches!(
            recorded_size(&junk, Compression::Xz),
            Ok(Some(_))
        ));
    }
}
