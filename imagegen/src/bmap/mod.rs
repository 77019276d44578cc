//! Parser for bmaptool's block-map files (XML, format versions 1.x and 2.0).
//!
//! A bmap names the blocks of an image that hold data: `<ImageSize>`,
//! `<BlockSize>`, `<BlocksCount>`, `<MappedBlocksCount>` and a `<BlockMap>` of
//! `<Range>` elements whose text is `FIRST-LAST` or `BLOCK` (inclusive block
//! numbers). Versions 1.0–1.3 carry SHA-1 checksums (`sha1=` attributes,
//! `<BmapFileSHA1>`), 1.4 and 2.0 a `<ChecksumType>` and `chksum=` attributes.
//! We read the map only: the written card is checked by our own read-back.

mod write;
pub use write::{write_bmap, BMAP_BLOCK};

use crate::ranges::{Extent, RangeSet};
use crate::{Error, Result};

/// The parts of a bmap that decide what is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    /// Format version as written, e.g. `"2.0"`.
    pub version: String,
    /// Size of the image in bytes.
    pub image_size: u64,
    /// Size of a block in bytes.
    pub block_size: u64,
    /// Number of blocks in the image.
    pub blocks_count: u64,
    /// Number of blocks the map declares as mapped.
    pub mapped_blocks_count: u64,
    /// The mapped bytes, clipped to the image size.
    pub mapped: RangeSet,
}

fn bad(why: impl Into<String>) -> Error {
    Error::corrupt("bmap file", why)
}

fn number(node: roxmltree::Node, name: &str) -> Result<u64> {
    let el = node
        .children()
        .find(|c| c.has_tag_name(name))
        .ok_or_else(|| bad(format!("missing <{name}>")))?;
    let text = el.text().unwrap_or("").trim();
    text.parse()
        .map_err(|_| bad(format!("<{name}> is {text:?}, not a number")))
}

impl Bmap {
    /// Parses the text of a bmap file.
    pub fn parse(xml: &str) -> Result<Bmap> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| bad(e.to_string()))?;
        let root = doc.root_element();
        if !root.has_tag_name("bmap") {
            return Err(bad(format!(
                "root element is <{}>, not <bmap>",
                root.tag_name().name()
            )));
        }
        let version = root
            .attribute("version")
            .ok_or_else(|| bad("no version attribute"))?
            .trim()
            .to_string();
        let major = version.split('.').next().unwrap_or("");
        if major != "1" && major != "2" {
            return Err(Error::unsupported(
                "bmap file",
                format!("format version {version} (1.x and 2.x are understood)"),
            ));
        }
        let image_size = number(root, "ImageSize")?;
        let block_size = number(root, "BlockSize")?;
        let blocks_count = number(root, "BlocksCount")?;
        let mapped_blocks_count = number(root, "MappedBlocksCount")?;
        if block_size == 0 || block_size > 1 << 30 {
            return Err(bad(format!("block size {block_size} is not usable")));
        }
        if image_size.div_ceil(block_size) != blocks_count {
            return Err(bad(format!(
                "{blocks_count} blocks of {block_size} bytes do not make an image of {image_size} bytes"
            )));
        }
        let map = root
            .children()
            .find(|c| c.has_tag_name("BlockMap"))
            .ok_or_else(|| bad("missing <BlockMap>"))?;
        let mut extents = Vec::new();
        let mut counted = 0u64;
        for r in map.children().filter(|c| c.is_element()) {
            if !r.has_tag_name("Range") {
                return Err(bad(format!(
                    "unexpected <{}> in <BlockMap>",
                    r.tag_name().name()
                )));
            }
            let text = r.text().unwrap_or("").trim();
            let (first, last) = parse_range(text)?;
            if last >= blocks_count {
                return Err(bad(format!(
                    "range {text} goes past the last block ({})",
                    blocks_count.saturating_sub(1)
                )));
            }
            counted = counted.saturating_add(last - first + 1);
            let end = (last + 1).saturating_mul(block_size).min(image_size);
            extents.push(Extent::new(first * block_size, end));
        }
        if counted != mapped_blocks_count {
            return Err(bad(format!(
                "<MappedBlocksCount> says {mapped_blocks_count} but the ranges hold {counted} blocks"
            )));
        }
        Ok(Bmap {
            version,
            image_size,
            block_size,
            blocks_count,
            mapped_blocks_count,
            mapped: RangeSet::from_extents(extents),
        })
    }

    /// Reads and parses a bmap file.
    pub fn load(path: &std::path::Path) -> Result<Bmap> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Corrupt { why, .. } => {
                Error::corrupt(format!("bmap file {}", path.display()), why)
            }
            other => other,
        })
    }
}

fn parse_range(text: &str) -> Result<(u64, u64)> {
    let num = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| bad(format!("range {text:?} is not FIRST-LAST or BLOCK")))
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(text)?;
            (n, n)
        }
    };
    if first > last {
        return Err(bad(format!("range {text} runs backwards")));
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn doc(version: &str, size: u64, ranges: &[&str], mapped: u64, attr: &str) -> String {
        let blocks = size.div_ceil(4096);
        let body: String = ranges
            .iter()
            .map(|r| format!("  <Range {attr}> {r} </Range>\n"))
            .collect();
        format!(
            "<?xml version=\"1.0\" ?>\n<!-- c -->\n<bmap version=\"{version}\">\n<ImageSize> {size} </ImageSize>\n\
             <BlockSize> 4096 </BlockSize>\n<BlocksCount> {blocks} </BlocksCount>\n\
             <MappedBlocksCount> {mapped} </MappedBlocksCount>\n<BlockMap>\n{body}</BlockMap>\n</bmap>\n"
        )
    }

    #[test]
    fn parses_version_2_and_1() {
        let b = Bmap::parse(&doc("2.0", 10000, &["0-1", "2"], 3, "chksum=\"ab\"")).unwrap();
        assert_eq!(b.mapped.extents(), &[Extent::new(0, 10000)]);
        let b = Bmap::parse(&doc("1.3", 1 << 20, &["5", "7-8"], 3, "sha1=\"ab\"")).unwrap();
        assert_eq!(
            b.mapped.extents(),
            &[
                Extent::new(5 * 4096, 6 * 4096),
                Extent::new(7 * 4096, 9 * 4096)
            ]
        );
    }

    #[test]
    fn refuses_bad_maps() {
        for (xml, what) in [
            (doc("3.0", 4096, &["0"], 1, ""), "version"),
            (doc("2.0", 4096, &["0-1"], 2, ""), "past the last block"),
            (doc("2.0", 8192, &["1-0"], 2, ""), "backwards"),
            (doc("2.0", 8192, &["0"], 2, ""), "MappedBlocksCount"),
            (doc("2.0", 8192, &["x"], 1, ""), "not FIRST-LAST"),
            ("<bmap version=\"2.0\">".to_string(), "bmap"),
        ] {
            let err = Bmap::parse(&xml).unwrap_err().to_string();
            assert!(err.contains(what), "{err} should mention {what}");
        }
    }

    #[test]
    fn reads_bmaptool_output() {
        let xml = include_str!("../../tests/data/bmaptool-3.6.bmap");
        let b = Bmap::parse(xml).unwrap();
        assert_eq!(
            (b.image_size, b.block_size, b.blocks_count),
            (1048576, 4096, 256)
        );
        assert_eq!(b.mapped.extents(), &[Extent::new(8192, 12288)]);
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,400}") {
            let _ = Bmap::parse(&s);
        }

        #[test]
        fn never_panics_on_mangled_maps(
            size in 0u64..1 << 40,
            a in any::<u64>(),
            b in any::<u64>(),
            mapped in any::<u64>(),
        ) {
            let r = format!("{a}-{b}");
            let _ = Bmap::parse(&doc("2.0", size, &[&r, &a.to_string()], mapped, ""));
        }
    }
}
