//! Parser for bmaptool's block-map files (XML, format versions 1.x and 2.0).
//!
//! A bmap names the blocks of an image that hold data: `<ImageSize>`,
//! `<BlockSize>`, `<BlocksCount>`, `<MappedBlocksCount>` and a `<BlockMap>` of
//! `<Range>` elements whose text is `FIRST-LAST` or `BLOCK` (inclusive block
//! numbers). Versions 1.0–1.3 carry SHA-1 checksums (`sha1=` attributes,
//! `<BmapFileSHA1>`), 1.4 and 2.0 a `<ChecksumType>` and `chksum=` attributes.
//!
//! Integrity, as bmaptool checks it: the file's own checksum
//! (`<BmapFileChecksum>` / `<BmapFileSHA1>`: the digest of the file with that
//! value replaced by as many ASCII `0`s) is verified when the file is parsed,
//! and each range's checksum (over the range's bytes, the last block clipped
//! to the image size) by a [`RangeVerifier`] as the image streams past. A
//! GPG-clearsigned bmap is accepted: the signed text is extracted and used;
//! the signature itself is not verified (nodeimg has no keyring to trust).

mod verify;

pub use verify::RangeVerifier;

mod write;
pub use write::{write_bmap, BMAP_BLOCK};

use crate::ranges::{Extent, RangeSet};
use crate::{Error, Result};
use sha2::Digest;

/// The digest a bmap uses for itself and its ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    /// Format 1.3.
    Sha1,
    /// Format 1.4 and 2.0 as bmaptool writes them.
    Sha256,
}

impl ChecksumType {
    fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Ok(ChecksumType::Sha1),
            "sha256" => Ok(ChecksumType::Sha256),
            other => Err(Error::unsupported(
                "bmap file",
                format!("checksum type {other:?} (sha1 and sha256 are understood)"),
            )),
        }
    }

    /// Length of a digest in bytes.
    pub fn len(self) -> usize {
        match self {
            ChecksumType::Sha1 => 20,
            ChecksumType::Sha256 => 32,
        }
    }

    /// Never true; for clippy's `len` rule.
    pub fn is_empty(self) -> bool {
        false
    }

    /// `SHA-1` or `SHA-256`.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumType::Sha1 => "SHA-1",
            ChecksumType::Sha256 => "SHA-256",
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ChecksumType::Sha1 => sha1::Sha1::digest(data).to_vec(),
            ChecksumType::Sha256 => sha2::Sha256::digest(data).to_vec(),
        }
    }
}

/// One `<Range>` of the map with the checksum of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeChecksum {
    /// First and last block, as written in the file (for messages).
    pub blocks: (u64, u64),
    /// The range's bytes in the image, clipped to the image size.
    pub extent: Extent,
    /// The digest the bmap records for them.
    pub digest: Vec<u8>,
}

/// How the bmap file was protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Format 1.0–1.2: no checksums at all.
    None,
    /// The file's own checksum matched.
    Checksum,
    /// Clearsigned (signature not verified) and its checksum matched.
    ClearsignedUnverified,
}

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
    /// The digest of the ranges and of the file, when the format has one.
    pub checksum_type: Option<ChecksumType>,
    /// Every range that carries a checksum, in file order.
    pub checksums: Vec<RangeChecksum>,
    /// What vouched for the file itself.
    pub protection: Protection,
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
    /// Parses the text of a bmap file, plain or clearsigned, and verifies
    /// its own checksum.
    pub fn parse(text: &str) -> Result<Bmap> {
        match clearsigned_text(text)? {
            Some(inner) => {
                let mut b = Self::parse_xml(&inner)?;
                if b.protection == Protection::Checksum {
                    b.protection = Protection::ClearsignedUnverified;
                }
                Ok(b)
            }
            None => Self::parse_xml(text),
        }
    }

    /// How the map was protected, for the plan's summary.
    pub fn describe_protection(&self) -> &'static str {
        match self.protection {
            Protection::None => "no checksums",
            Protection::Checksum => "checksums verified",
            Protection::ClearsignedUnverified => {
                "clearsigned (signature not verified), checksums verified"
            }
        }
    }

    fn parse_xml(xml: &str) -> Result<Bmap> {
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
        let minor = version.split('.').nth(1).unwrap_or("");
        // 1.3 was SHA-1 only; 1.4 is 2.0 issued under the wrong number.
        let (checksum_type, attr, file_tag) = if major == "2" || minor == "4" {
            let name = text_of(root, "ChecksumType")?;
            (
                Some(ChecksumType::from_name(&name)?),
                "chksum",
                "BmapFileChecksum",
            )
        } else if minor == "3" {
            (Some(ChecksumType::Sha1), "sha1", "BmapFileSHA1")
        } else {
            (None, "", "")
        };
        if let Some(kind) = checksum_type {
            verify_file_checksum(xml, &text_of(root, file_tag)?, file_tag, kind)?;
        }
        let map = root
            .children()
            .find(|c| c.has_tag_name("BlockMap"))
            .ok_or_else(|| bad("missing <BlockMap>"))?;
        let mut extents = Vec::new();
        let mut checksums = Vec::new();
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
            let extent = Extent::new(first * block_size, end);
            extents.push(extent);
            if let (Some(kind), Some(hex)) = (checksum_type, r.attribute(attr)) {
                let digest = from_hex(hex.trim())
                    .filter(|d| d.len() == kind.len())
                    .ok_or_else(|| {
                        bad(format!(
                            "range {text} has {attr}={hex:?}, not a {}",
                            kind.name()
                        ))
                    })?;
                checksums.push(RangeChecksum {
                    blocks: (first, last),
                    extent,
                    digest,
                });
            }
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
            checksum_type,
            checksums,
            protection: if checksum_type.is_some() {
                Protection::Checksum
            } else {
                Protection::None
            },
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

fn text_of(node: roxmltree::Node, name: &str) -> Result<String> {
    node.children()
        .find(|c| c.has_tag_name(name))
        .map(|e| e.text().unwrap_or("").trim().to_string())
        .ok_or_else(|| bad(format!("missing <{name}>")))
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// bmaptool's rule: the digest of the file in which the first occurrence of
/// the recorded value is replaced by ASCII zeros.
fn verify_file_checksum(xml: &str, recorded: &str, tag: &str, kind: ChecksumType) -> Result<()> {
    let hex_len = kind.len() * 2;
    if recorded.len() != hex_len || from_hex(recorded).is_none() {
        return Err(bad(format!(
            "<{tag}> is {recorded:?}, not a {}",
            kind.name()
        )));
    }
    let at = xml
        .find(recorded)
        .ok_or_else(|| bad(format!("<{tag}> value not found in the file")))?;
    let mut zeroed = xml.as_bytes().to_vec();
    zeroed[at..at + hex_len].fill(b'0');
    let got = crate::source::to_hex(&kind.digest(&zeroed));
    if !got.eq_ignore_ascii_case(recorded) {
        return Err(bad(format!(
            "its {} is {got} but <{tag}> says {recorded}: the file was changed after it was made",
            kind.name()
        )));
    }
    Ok(())
}

/// The signed text of a GPG clearsigned message (RFC 4880 §7), or `None`
/// when `text` is not one. Dash-escaped lines are unescaped. The text is
/// kept with its last line break, as it was before signing (and as `gpg
/// --decrypt` gives it back), because that is what the checksum covers.
fn clearsigned_text(text: &str) -> Result<Option<String>> {
    const BEGIN: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
    if !text.starts_with(BEGIN) {
        return Ok(None);
    }
    let mut lines = text.split_inclusive('\n').skip(1);
    // Armour headers ("Hash: SHA256") up to the first empty line.
    for line in lines.by_ref() {
        if line.trim_end_matches(['\r', '\n']).is_empty() {
            break;
        }
    }
    let mut out = String::new();
    let mut signed = false;
    for line in lines {
        if line.starts_with("-----BEGIN PGP SIGNATURE-----") {
            signed = true;
            break;
        }
        out.push_str(line.strip_prefix("- ").unwrap_or(line));
    }
    if !signed {
        return Err(bad("clearsigned, but the signature block is missing"));
    }
    Ok(Some(out))
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

    /// A bmap of `version` whose own checksum is right.
    fn doc(version: &str, size: u64, ranges: &[&str], mapped: u64, attr: &str) -> String {
        let blocks = size.div_ceil(4096);
        let body: String = ranges
            .iter()
            .map(|r| format!("  <Range {attr}> {r} </Range>\n"))
            .collect();
        let (kind, head) = match version {
            "2.0" => (
                Some(ChecksumType::Sha256),
                format!(
                    "<ChecksumType> sha256 </ChecksumType>\n<BmapFileChecksum> {} </BmapFileChecksum>\n",
                    "0".repeat(64)
                ),
            ),
            "1.3" => (
                Some(ChecksumType::Sha1),
                format!("<BmapFileSHA1> {} </BmapFileSHA1>\n", "0".repeat(40)),
            ),
            _ => (None, String::new()),
        };
        let xml = format!(
            "<?xml version=\"1.0\" ?>\n<!-- c -->\n<bmap version=\"{version}\">\n<ImageSize> {size} </ImageSize>\n\
             <BlockSize> 4096 </BlockSize>\n<BlocksCount> {blocks} </BlocksCount>\n\
             <MappedBlocksCount> {mapped} </MappedBlocksCount>\n{head}<BlockMap>\n{body}</BlockMap>\n</bmap>\n"
        );
        match kind {
            Some(k) => {
                let zeros = "0".repeat(k.len() * 2);
                let sum = crate::source::to_hex(&k.digest(xml.as_bytes()));
                xml.replacen(&zeros, &sum, 1)
            }
            None => xml,
        }
    }

    const SHA256_AB: &str = "abababababababababababababababababababababababababababababababab";
    const SHA1_AB: &str = "abababababababababababababababababababab";

    #[test]
    fn parses_version_2_and_1() {
        let attr = format!("chksum=\"{SHA256_AB}\"");
        let b = Bmap::parse(&doc("2.0", 10000, &["0-1", "2"], 3, &attr)).unwrap();
        assert_eq!(b.mapped.extents(), &[Extent::new(0, 10000)]);
        assert_eq!(b.checksums.len(), 2);
        assert_eq!(b.checksums[1].extent, Extent::new(8192, 10000));
        assert_eq!(b.protection, Protection::Checksum);
        let attr = format!("sha1=\"{SHA1_AB}\"");
        let b = Bmap::parse(&doc("1.3", 1 << 20, &["5", "7-8"], 3, &attr)).unwrap();
        assert_eq!(b.checksum_type, Some(ChecksumType::Sha1));
        let b = Bmap::parse(&doc("1.2", 1 << 20, &["5", "7-8"], 3, "")).unwrap();
        assert_eq!(b.protection, Protection::None);
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
            (
                doc("2.0", 8192, &["0"], 1, "chksum=\"ab\""),
                "not a SHA-256",
            ),
            (
                doc("2.0", 8192, &["0"], 1, "").replace("sha256", "md5"),
                "checksum type",
            ),
        ] {
            let err = Bmap::parse(&xml).unwrap_err().to_string();
            assert!(err.contains(what), "{err} should mention {what}");
        }
    }

    #[test]
    fn a_changed_bmap_fails_its_own_checksum() {
        let attr = format!("chksum=\"{SHA256_AB}\"");
        let good = doc("2.0", 1 << 20, &["0-1", "5-7"], 5, &attr);
        // A range deleted and the count adjusted: the map parses, the checksum does not.
        let cut = good
            .replace(&format!("  <Range {attr}> 5-7 </Range>\n"), "")
            .replace("<MappedBlocksCount> 5 <", "<MappedBlocksCount> 2 <");
        let err = Bmap::parse(&cut).unwrap_err().to_string();
        assert!(err.contains("BmapFileChecksum"), "{err}");
        // A shifted range.
        let err = Bmap::parse(&good.replace("> 5-7 <", "> 6-8 <"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("changed after it was made"), "{err}");
        let sha1 = doc("1.3", 1 << 20, &["0"], 1, "");
        let err = Bmap::parse(&sha1.replace("> 0 <", "> 1 <"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("BmapFileSHA1"), "{err}");
    }

    #[test]
    fn clearsigned_bmaps_are_unwrapped() {
        let attr = format!("chksum=\"{SHA256_AB}\"");
        let inner = doc("2.0", 1 << 20, &["0-1"], 2, &attr);
        // Dash-escaping as gpg does it for lines that begin with a dash.
        let escaped: String = inner
            .split_inclusive('\n')
            .map(|l| {
                if l.starts_with('-') {
                    format!("- {l}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        let signed = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{escaped}-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"
        );
        let b = Bmap::parse(&signed).unwrap();
        assert_eq!(b.protection, Protection::ClearsignedUnverified);
        assert_eq!(b.mapped.bytes(), 8192);
        let err = Bmap::parse(
            &signed
                .replace("> 0-1 <", "> 0-2 <")
                .replace("> 2 <", "> 3 <"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("changed after"), "{err}");
        let err = Bmap::parse(&signed[..signed.find("-----BEGIN PGP SIGNATURE").unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("signature block is missing"), "{err}");
    }

    #[test]
    fn range_checksums_are_checked_as_the_image_streams() {
        let image: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let sum =
            |a: usize, b: usize| crate::source::to_hex(&ChecksumType::Sha256.digest(&image[a..b]));
        // The last range is clipped to the image size (40000 bytes).
        let mut xml = doc("2.0", 40_000, &["1-2", "9"], 3, "chksum=\"X\"");
        xml = xml.replacen(
            "chksum=\"X\"",
            &format!("chksum=\"{}\"", sum(4096, 12288)),
            1,
        );
        xml = xml.replacen(
            "chksum=\"X\"",
            &format!("chksum=\"{}\"", sum(36864, 40000)),
            1,
        );
        // Re-seal: the attributes changed the file.
        let zeroed = {
            let at = xml.find("<BmapFileChecksum> ").unwrap() + 19;
            let mut z = xml.clone();
            z.replace_range(at..at + 64, &"0".repeat(64));
            z
        };
        let sealed = zeroed.replacen(
            &"0".repeat(64),
            &crate::source::to_hex(&ChecksumType::Sha256.digest(zeroed.as_bytes())),
            1,
        );
        let b = Bmap::parse(&sealed).unwrap();
        // Fed in odd pieces that straddle ranges and cover unmapped bytes.
        let feed = |data: &[u8], exempt: &RangeSet| -> Result<u64> {
            let mut v = RangeVerifier::new(&b, exempt).unwrap();
            let mut off = 0;
            for n in [1000usize, 5000, 7000, 3, 27_000] {
                let end = (off + n).min(data.len());
                v.feed(off as u64, &data[off..end])?;
                off = end;
            }
            v.finish()?;
            Ok(v.verified())
        };
        assert_eq!(feed(&image, &RangeSet::new()).unwrap(), 8192 + 3136);
        let mut bad = image.clone();
        bad[39_999] ^= 1;
        let err = feed(&bad, &RangeSet::new()).unwrap_err().to_string();
        assert!(
            err.contains("bmap range block 9 (bytes 36864..40000)"),
            "{err}"
        );
        // A range a delta replaced is not held against the image.
        let exempt = RangeSet::from_extents(vec![Extent::new(39_000, 39_001)]);
        assert_eq!(feed(&bad, &exempt).unwrap(), 8192);
        let err = feed(&vec![0; 40_000], &RangeSet::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("blocks 1-2"), "{err}");
        // A piece that skips part of a range is an error, not a pass.
        let mut v = RangeVerifier::new(&b, &RangeSet::new()).unwrap();
        v.feed(0, &image[..5000]).unwrap();
        let err = v.feed(6000, &image[6000..7000]).unwrap_err().to_string();
        assert!(err.contains("not read in full"), "{err}");
        let v = RangeVerifier::new(&b, &RangeSet::new()).unwrap();
        assert!(v.finish().is_err());
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
        assert_eq!(b.checksums.len(), 1);
        assert_eq!(b.protection, Protection::Checksum);
        // The same file clearsigned by `gpg --clearsign` (a throw-away key).
        let signed = include_str!("../../tests/data/bmaptool-3.6-clearsigned.bmap");
        let s = Bmap::parse(signed).unwrap();
        assert_eq!(s.protection, Protection::ClearsignedUnverified);
        assert_eq!((s.mapped, s.checksums), (b.mapped, b.checksums));
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
