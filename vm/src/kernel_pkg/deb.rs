//! A Debian binary package, read as deb(5) describes it: an `ar` archive
//! whose first member is `debian-binary` (`2.0\n`), then `control.tar.*`,
//! then `data.tar` compressed with xz, zstd or gzip (or not at all) —
//! the compressions dpkg-deb(1) builds with. Only the data member is read,
//! as a stream: a kernel package is tens of MiB compressed and hundreds
//! uncompressed, so nothing but what the caller keeps is held in memory.

use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::path::Path;

const AR_MAGIC: &[u8] = b"!<arch>\n";
const DEBIAN_BINARY: &[u8] = b"debian-binary";

/// Whether `head` (the first bytes of a file, 80 are enough) starts a
/// Debian package: the ar magic and a first member named `debian-binary`.
pub fn looks_like_deb(head: &[u8]) -> bool {
    head.starts_with(AR_MAGIC)
        && head
            .get(AR_MAGIC.len()..AR_MAGIC.len() + DEBIAN_BINARY.len())
            .is_some_and(|n| n == DEBIAN_BINARY)
}

/// Whether the file at `path` is a Debian package (by content, not name).
pub fn is_deb(path: &Path) -> bool {
    let mut head = [0u8; 80];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    looks_like_deb(&head[..n])
}

/// A regular file of the package's data archive, handed to the caller.
pub struct DataFile<'a> {
    /// Its path without the leading `./` (`boot/vmlinuz-6.1.0-50-arm64`).
    pub path: String,
    pub size: u64,
    pub reader: &'a mut dyn Read,
}

/// Streams every regular file of the data member of the package read
/// from `r` to `each`. Errors name the member and what was wrong; a
/// truncated package fails in the decompressor or the archive reader.
pub fn for_each_data_file<R: Read>(
    r: R,
    each: &mut dyn FnMut(DataFile<'_>) -> Result<()>,
) -> Result<()> {
    let mut ar = ar::Archive::new(r);
    let first = ar
        .next_entry()
        .ok_or_else(|| anyhow!("an empty ar archive, not a Debian package"))?
        .context("reading the ar archive")?;
    if member_name(first.header().identifier()) != "debian-binary" {
        bail!("the first ar member is not debian-binary: not a Debian package");
    }
    drop(first);
    while let Some(entry) = ar.next_entry() {
        let entry = entry.context("reading the ar archive")?;
        let name = member_name(entry.header().identifier());
        let Some(comp) = name.strip_prefix("data.tar") else {
            continue;
        };
        let decoded: Box<dyn Read + '_> = match comp {
            ".xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
            ".zst" => Box::new(
                zstd::stream::read::Decoder::new(entry).context("data.tar.zst: zstd header")?,
            ),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "" => Box::new(entry),
            other => bail!("data.tar{other}: a compression dpkg-deb does not make"),
        };
        let broken = || format!("{name} is damaged or truncated");
        let mut tar = tar::Archive::new(decoded);
        for e in tar.entries().with_context(broken)? {
            let mut e = e.with_context(broken)?;
            if e.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = e
                .path()
                .with_context(|| format!("{name}: a file name"))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let size = e.size();
            each(DataFile {
                path,
                size,
                reader: &mut e,
            })
            .with_context(broken)?;
        }
        // The archive's end blocks can come before the end of the
        // compressed stream: read it to its end, so that a package cut
        // short there is found too.
        std::io::copy(&mut tar.into_inner(), &mut std::io::sink()).with_context(broken)?;
        return Ok(());
    }
    bail!("no data.tar member: not a complete Debian package")
}

/// An ar member's name: GNU ar ends names with `/`, dpkg-deb pads with
/// spaces.
fn member_name(id: &[u8]) -> String {
    String::from_utf8_lossy(id)
        .trim_end()
        .trim_end_matches('/')
        .to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A package with the given data files, its data member compressed as
    /// `comp` (`xz`, `zst`, `gz` or ``).
    pub(crate) fn make_deb(files: &[(&str, &[u8])], comp: &str) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            t.append_data(&mut h, format!("./{p}"), *data).unwrap();
        }
        let tar = t.into_inner().unwrap();
        let data = match comp {
            "xz" => {
                let mut out = Vec::new();
                liblzma::read::XzEncoder::new(&tar[..], 1)
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            "zst" => zstd::encode_all(&tar[..], 1).unwrap(),
            "gz" => {
                let mut out = Vec::new();
                flate2::read::GzEncoder::new(&tar[..], flate2::Compression::fast())
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            _ => tar,
        };
        let mut ar = ar::Builder::new(Vec::new());
        for (name, body) in [
            ("debian-binary".to_string(), b"2.0\n".to_vec()),
            ("control.tar.xz".to_string(), b"not read".to_vec()),
            (
                if comp.is_empty() {
                    "data.tar".to_string()
                } else {
                    format!("data.tar.{comp}")
                },
                data,
            ),
        ] {
            let h = ar::Header::new(name.into_bytes(), body.len() as u64);
            ar.append(&h, &body[..]).unwrap();
        }
        ar.into_inner().unwrap()
    }

    fn files(deb: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for_each_data_file(deb, &mut |f| {
            let mut b = Vec::new();
            f.reader.read_to_end(&mut b)?;
            out.push((f.path, b));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn every_compression_dpkg_makes_is_read() {
        for comp in ["xz", "zst", "gz", ""] {
            let deb = make_deb(&[("boot/vmlinuz-1", b"kernel"), ("a/b", b"x")], comp);
            assert!(looks_like_deb(&deb), "{comp}");
            let f = files(&deb).unwrap();
            assert_eq!(f[0], ("boot/vmlinuz-1".to_string(), b"kernel".to_vec()));
            assert_eq!(f.len(), 2);
        }
    }

    #[test]
    fn a_truncated_package_is_an_error() {
        let deb = make_deb(&[("boot/vmlinuz-1", &[7u8; 50_000])], "xz");
        for cut in [deb.len() / 2, deb.len() - 10, 70, 8] {
            assert!(files(&deb[..cut]).is_err(), "cut at {cut}");
        }
        assert!(!looks_like_deb(b"!<arch>\nfoo"));
        assert!(!looks_like_deb(b"\x7fELF"));
        let mut other = make_deb(&[], "xz");
        other[8] = b'x';
        assert!(files(&other).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::tests::make_deb;
    use super::*;
    use crate::kernel_pkg::modules;
    use proptest::prelude::*;

    /// What the fuzz target `kernel_deb` does, on one input.
    fn read_all(data: &[u8]) {
        let _ = for_each_data_file(data, &mut |f| {
            if let Some(name) = modules::name_of_path(&f.path) {
                let elf = modules::decompress(&f.path, f.reader)?;
                let _ = modules::modinfo(&elf, &name);
            } else {
                std::io::copy(f.reader, &mut std::io::sink())?;
            }
            Ok(())
        });
        let _ = modules::modinfo(data, "x");
        let _ = modules::parse_modinfo(data, "x");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            read_all(&data);
        }

        #[test]
        fn damaged_packages_never_panic(
            comp in prop_oneof![Just("xz"), Just("zst"), Just("gz"), Just("")],
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut deb = make_deb(
                &[
                    ("boot/vmlinuz-1", b"kernel"),
                    ("lib/modules/1/kernel/fs/ext4/ext4.ko.xz", b"\xfd7zXZ\0junk"),
                    ("lib/modules/1/kernel/a.ko", b"\x7fELF\x02\x01\x01\0"),
                ],
                comp,
            );
            for (i, b) in edits {
                let at = i.index(deb.len());
                deb[at] = b;
            }
            let keep = cut.index(deb.len() + 1);
            read_all(&deb[..keep]);
        }
    }
}
