//! What vouches for an image before a byte of it is written: a published
//! SHA-256 of the file (`--sha256 HEX` or a `SHA256SUMS` file), and the bmap
//! published beside it (found as bmaptool finds it).

use crate::Result;
use imagegen::source::{sha256_file, to_hex};
use imagegen::Error;
use std::path::{Path, PathBuf};

/// Suffixes of compressed images, stripped to find `NAME.img.bmap` beside
/// `NAME.img.xz`.
const COMPRESSED: &[&str] = &["xz", "zst", "zstd", "gz", "bz2", "lz4"];

/// The bmap beside `image`, if there is one: `IMAGE.bmap`, else the image's
/// name without its compression suffix plus `.bmap`.
pub fn bmap_beside(image: &Path) -> Option<PathBuf> {
    let name = image.file_name()?.to_str()?;
    let mut candidates = vec![format!("{name}.bmap")];
    if let Some((stem, ext)) = name.rsplit_once('.') {
        if COMPRESSED.contains(&ext) {
            candidates.push(format!("{stem}.bmap"));
        }
    }
    candidates
        .into_iter()
        .map(|c| image.with_file_name(c))
        .find(|p| p.is_file())
}

/// Checks the SHA-256 of `image` as stored against `want`: 64 hex digits,
/// or the path of a `SHA256SUMS`-style file (GNU `HEX  NAME` / `HEX *NAME`,
/// or BSD `SHA256 (NAME) = HEX`) that lists the image's file name.
pub fn check_sha256(image: &Path, want: &str) -> Result<()> {
    let want = want.trim();
    let expected = if is_hex64(want) {
        want.to_ascii_lowercase()
    } else {
        let list = Path::new(want);
        if !list.is_file() {
            return Err(Error::Invalid(format!(
                "--sha256 {want}: neither 64 hex digits nor a checksum file"
            ))
            .into());
        }
        let text = std::fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
        let name = image
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        listed(&text, name).ok_or_else(|| {
            Error::Invalid(format!("{}: lists no SHA-256 for {name}", list.display()))
        })?
    };
    let (got, _) = sha256_file(image)?;
    let got = to_hex(&got);
    if got != expected {
        return Err(Error::corrupt(
            format!("image {}", image.display()),
            format!("its SHA-256 is {got}, not {expected}: damaged or not the published file; nothing was written"),
        )
        .into());
    }
    Ok(())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The digest listed for `name` (compared by file name, as published lists
/// name files relative to themselves).
fn listed(text: &str, name: &str) -> Option<String> {
    let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_string();
    for line in text.lines() {
        let line = line.trim();
        // BSD: SHA256 (name) = hex
        if let Some(rest) = line.strip_prefix("SHA256 (") {
            if let Some((n, hex)) = rest.split_once(") = ") {
                if base(n) == name && is_hex64(hex.trim()) {
                    return Some(hex.trim().to_ascii_lowercase());
                }
            }
            continue;
        }
        // GNU: hex, two spaces or " *", name
        if let Some((hex, n)) = line.split_once(char::is_whitespace) {
            let n = n.trim_start().trim_start_matches('*');
            if is_hex64(hex) && base(n) == name {
                return Some(hex.to_ascii_lowercase());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_lists_in_both_styles() {
        let h = "ab".repeat(32);
        let gnu = format!("{}  other.img\n{h} *dir/raspios.img.xz\n", "cd".repeat(32));
        assert_eq!(listed(&gnu, "raspios.img.xz"), Some(h.clone()));
        assert_eq!(listed(&gnu, "missing.img"), None);
        let bsd = format!("SHA256 (raspios.img.xz) = {}\n", h.to_uppercase());
        assert_eq!(listed(&bsd, "raspios.img.xz"), Some(h));
    }

    #[test]
    fn sha256_is_checked_and_bmaps_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("os.img.xz");
        std::fs::write(&img, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        check_sha256(&img, abc).unwrap();
        check_sha256(&img, &abc.to_uppercase()).unwrap();
        let err = check_sha256(&img, &"0".repeat(64)).unwrap_err().to_string();
        assert!(
            err.contains("not 000") && err.contains("os.img.xz"),
            "{err}"
        );
        let sums = dir.path().join("SHA256SUMS");
        std::fs::write(&sums, format!("{abc}  os.img.xz\n")).unwrap();
        check_sha256(&img, sums.to_str().unwrap()).unwrap();
        std::fs::write(&sums, format!("{abc}  other.img.xz\n")).unwrap();
        let err = check_sha256(&img, sums.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("lists no SHA-256 for os.img.xz"), "{err}");
        assert!(check_sha256(&img, "nope").is_err());
        assert_eq!(bmap_beside(&img), None);
        std::fs::write(dir.path().join("os.img.bmap"), "").unwrap();
        assert_eq!(bmap_beside(&img), Some(dir.path().join("os.img.bmap")));
        std::fs::write(dir.path().join("os.img.xz.bmap"), "").unwrap();
        assert_eq!(bmap_beside(&img), Some(dir.path().join("os.img.xz.bmap")));
    }
}
