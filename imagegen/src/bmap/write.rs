//! Writing bmaptool block maps, format 2.0 with SHA-256 checksums.
//!
//! The map lists the 4 KiB blocks of the image that hold data as inclusive
//! `FIRST-LAST` ranges, each with the SHA-256 of its bytes. The file's own
//! checksum (`<BmapFileChecksum>`) is the SHA-256 of the file as written
//! with that field set to 64 zeros, as bmaptool verifies it. The output is
//! a function of the image bytes and the range set only, so the same image
//! gives the same bmap.

use crate::block::BlockDevice;
use crate::ranges::RangeSet;
use crate::source::to_hex;
use crate::Result;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Block size of the maps we write (bmaptool's default).
pub const BMAP_BLOCK: u64 = 4096;

/// The text of a format-2.0 bmap of `image`, mapping the blocks that
/// `mapped` touches (rounded out to whole blocks, clipped to the image).
pub fn write_bmap(image: &dyn BlockDevice, mapped: &RangeSet) -> Result<String> {
    let size = image.size();
    let blocks = size.div_ceil(BMAP_BLOCK);
    let ranges = mapped.aligned(BMAP_BLOCK, size);
    let mapped_blocks: u64 = ranges
        .extents()
        .iter()
        .map(|e| e.end.div_ceil(BMAP_BLOCK) - e.start / BMAP_BLOCK)
        .sum();
    let mut body = String::new();
    let mut buf = vec![0u8; 1 << 20];
    for e in ranges.extents() {
        let (first, last) = (e.start / BMAP_BLOCK, e.end.div_ceil(BMAP_BLOCK) - 1);
        let mut h = Sha256::new();
        let mut at = e.start;
        while at < e.end {
            let n = (e.end - at).min(buf.len() as u64) as usize;
            image.read_at(at, &mut buf[..n])?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        let range = if first == last {
            format!("{first}")
        } else {
            format!("{first}-{last}")
        };
        let _ = writeln!(
            body,
            "        <Range chksum=\"{}\"> {range} </Range>",
            to_hex(&h.finalize())
        );
    }
    let zeros = "0".repeat(64);
    let text = |sum: &str| {
        format!(
            "<?xml version=\"1.0\" ?>\n\
             <!-- Block map of an image made by nodeimg: the blocks listed hold\n     \
             data; the others may be skipped when writing the image. -->\n\
             <bmap version=\"2.0\">\n    \
             <ImageSize> {size} </ImageSize>\n    \
             <BlockSize> {BMAP_BLOCK} </BlockSize>\n    \
             <BlocksCount> {blocks} </BlocksCount>\n    \
             <MappedBlocksCount> {mapped_blocks} </MappedBlocksCount>\n    \
             <ChecksumType> sha256 </ChecksumType>\n    \
             <BmapFileChecksum> {sum} </BmapFileChecksum>\n    \
             <BlockMap>\n{body}    </BlockMap>\n\
             </bmap>\n"
        )
    };
    let sum = to_hex(&Sha256::digest(text(&zeros).as_bytes()));
    Ok(text(&sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;
    use crate::bmap::Bmap;
    use crate::ranges::Extent;

    #[test]
    fn round_trips_through_the_parser() {
        let dev = MemDevice::zeroed(10 * 4096 + 100);
        dev.write_at(4096 * 3 + 5, b"data").unwrap();
        let set = RangeSet::from_extents(vec![
            Extent::new(0, 512),
            Extent::new(4096 * 3, 4096 * 5),
            Extent::new(10 * 4096, 10 * 4096 + 100),
        ]);
        let text = write_bmap(&dev, &set).unwrap();
        let b = Bmap::parse(&text).unwrap();
        assert_eq!(b.version, "2.0");
        assert_eq!(b.image_size, 10 * 4096 + 100);
        assert_eq!(b.blocks_count, 11);
        assert_eq!(b.mapped_blocks_count, 4);
        assert!(text.contains("> 0 </Range>"), "{text}");
        assert!(text.contains("> 3-4 </Range>"), "{text}");
        // The file checksum covers the text with the field zeroed.
        let sum_at = text.find("<BmapFileChecksum> ").unwrap() + 19;
        let sum = &text[sum_at..sum_at + 64];
        let zeroed = text.replace(sum, &"0".repeat(64));
        assert_eq!(sum, to_hex(&Sha256::digest(zeroed.as_bytes())));
        assert_eq!(text, write_bmap(&dev, &set).unwrap());
    }
}
