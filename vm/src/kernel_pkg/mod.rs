//! `--kernel` given as a Debian kernel package (`linux-image-VERSION-arm64`,
//! a `.deb` by path, or downloaded by URL with its SHA-256 by the binary):
//! unpacked for the user into the run's temporary directory — the kernel
//! (`/boot/vmlinuz-VERSION`) and the modules a virt guest needs to reach
//! its root and network — and given an initramfs made from the booted
//! image's klibc-utils.
//!
//! | module | job |
//! |---|---|
//! | [`deb`] | the package: ar members, the data.tar stream |
//! | [`modules`] | `.modinfo` of each module, decompression, load order |
//! | [`initramfs`] | the klibc userland, `/init`, the gzip newc cpio |

pub mod deb;
pub mod initramfs;
pub mod modules;

use crate::bootspec::Override;
use anyhow::{anyhow, bail, Context, Result};
use modules::Graph;
use pipeline::osimage::OsImage;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use deb::is_deb;

/// What a virt guest's initramfs loads, when the kernel has them as
/// modules: PCI transport and disk, the root's filesystem (with crc32c,
/// which ext4 wants for its metadata checksums), the NIC and the RNG
/// (entropy for a systemd boot that would otherwise wait for it).
///
/// The guest's root has no modules of this kernel (they stay in the
/// initramfs), so what its first boot mounts or loads by name is loaded
/// here too and stays loaded after `run-init`: `vfat` with the code pages
/// its defaults use for the boot partition in `/etc/fstab`
/// (`/boot/firmware` on Raspberry Pi OS), and `overlay` and
/// `br_netfilter`, which the kubeadm and k3s bases load for the container
/// runtime and bridged pod traffic.
pub const ROOTS: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "virtio_net",
    "virtio_rng",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "overlay",
    "br_netfilter",
];
/// Without these the guest cannot mount its root.
pub const REQUIRED: &[&str] = &["virtio_pci", "virtio_blk", "ext4"];

/// A kernel package, unpacked.
#[derive(Debug)]
pub struct KernelPackage {
    /// The package as the user gave it.
    pub source: PathBuf,
    /// `VERSION` of `/boot/vmlinuz-VERSION`.
    pub version: String,
    /// The kernel, written into the run's temporary directory.
    pub kernel: PathBuf,
    /// The modules to load, in order: (name, plain ELF bytes).
    pub modules: Vec<(String, Vec<u8>)>,
}

/// Besides [`ROOTS`], the modules whose bytes the first pass keeps: their
/// usual dependencies on Debian's arm64 kernels. Anything else the load
/// order needs is fetched by a second pass over the package.
const LIKELY_DEPS: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "net_failover",
    "failover",
    "rng_core",
    "jbd2",
    "mbcache",
    "crc16",
    "libcrc32c",
    "fat",
    "bridge",
    "stp",
    "llc",
];

/// Unpacks the package at `deb` into `dir` (created).
pub fn unpack(deb: &Path, dir: &Path) -> Result<KernelPackage> {
    unpack_inner(deb, dir).map_err(|e| {
        anyhow!(pipeline::Error::refused(
            deb.display().to_string(),
            format!("{e:#}")
        ))
    })
}

fn unpack_inner(deb: &Path, dir: &Path) -> Result<KernelPackage> {
    if !deb::is_deb(deb) {
        bail!("not a Debian package (no ar archive starting with debian-binary)");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let open = || -> Result<std::io::BufReader<std::fs::File>> {
        Ok(std::io::BufReader::new(
            std::fs::File::open(deb).context("opening the package")?,
        ))
    };
    let mut kernel: Option<(String, PathBuf)> = None;
    let mut graph = Graph::default();
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    let mut kept: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    deb::for_each_data_file(open()?, &mut |f| {
        if let Some(v) = f.path.strip_prefix("boot/vmlinuz-") {
            if v.is_empty() || v.contains('/') {
                return Ok(());
            }
            let out = dir.join(format!("vmlinuz-{v}"));
            let mut w = std::fs::File::create(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            std::io::copy(f.reader, &mut w).with_context(|| format!("unpacking {}", f.path))?;
            kernel = Some((v.to_string(), out));
        } else if f.path.ends_with("/modules.builtin") && f.path.contains("lib/modules/") {
            let mut t = String::new();
            f.reader
                .take(16 << 20)
                .read_to_string(&mut t)
                .with_context(|| format!("reading {}", f.path))?;
            graph.builtin = modules::parse_builtin(&t);
        } else if f.path.contains("lib/modules/") {
            let Some(name) = modules::name_of_path(&f.path) else {
                return Ok(());
            };
            let elf = modules::decompress(&f.path, f.reader)?;
            let info = modules::modinfo(&elf, &name).with_context(|| f.path.clone())?;
            let n = info.name.as_str();
            if ROOTS.contains(&n) || LIKELY_DEPS.contains(&n) {
                kept.insert(info.name.clone(), elf);
            }
            paths.insert(info.name.clone(), f.path.clone());
            graph.modules.insert(info.name.clone(), info);
        }
        Ok(())
    })?;
    let (version, kernel) = kernel.ok_or_else(|| {
        anyhow!("no /boot/vmlinuz-VERSION in the package: give a kernel image package (linux-image-VERSION-arm64), not a metapackage such as linux-image-arm64")
    })?;
    let order = graph.load_order(ROOTS, REQUIRED)?;
    let missing: BTreeMap<String, String> = order
        .iter()
        .filter(|n| !kept.contains_key(*n))
        .filter_map(|n| paths.get(n).map(|p| (p.clone(), n.clone())))
        .collect();
    if !missing.is_empty() {
        deb::for_each_data_file(open()?, &mut |f| {
            if let Some(n) = missing.get(&f.path) {
                kept.insert(n.clone(), modules::decompress(&f.path, f.reader)?);
            }
            Ok(())
        })?;
    }
    let modules = order
        .into_iter()
        .map(|n| {
            let b = kept
                .remove(&n)
                .ok_or_else(|| anyhow!("module {n} vanished between two reads of the package"))?;
            Ok((n, b))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(KernelPackage {
        source: deb.to_path_buf(),
        version,
        kernel,
        modules,
    })
}

impl KernelPackage {
    /// The kernel and initrd to boot `image` with: the user's `--initrd`
    /// when given, else an initramfs made into `dir` from the image's
    /// klibc-utils and this package's modules.
    pub fn boot_override(&self, image: &OsImage, user: &Override, dir: &Path) -> Result<Override> {
        let initrd = match &user.initrd {
            Some(i) => i.clone(),
            None => {
                let userland = initramfs::klibc(image)?;
                let out = dir.join(format!("initrd.img-{}", self.version));
                initramfs::write(&userland, &self.modules, &out)?;
                out
            }
        };
        Ok(Override {
            kernel: Some(self.kernel.clone()),
            initrd: Some(initrd),
            package: None,
        })
    }

    /// For the user: `linux-image-….deb (kernel 6.1.0-50-arm64, 12 modules)`.
    pub fn describe(&self) -> String {
        format!(
            "{} (kernel {}, {} modules in the initramfs)",
            self.source
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            self.version,
            self.modules.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_deb(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
        let p = dir.join("pkg.deb");
        std::fs::write(&p, deb::tests::make_deb(files, "xz")).unwrap();
        p
    }

    #[test]
    fn a_kernel_with_everything_built_in_needs_no_module() {
        let t = tempfile::tempdir().unwrap();
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/block/virtio_blk.ko\nkernel/fs/ext4/ext4.ko\n";
        let deb = write_deb(
            t.path(),
            &[
                ("boot/vmlinuz-6.12.0-1-arm64", b"MZkernel"),
                (
                    "usr/lib/modules/6.12.0-1-arm64/modules.builtin",
                    builtin.as_bytes(),
                ),
            ],
        );
        let p = unpack(&deb, &t.path().join("out")).unwrap();
        assert_eq!(p.version, "6.12.0-1-arm64");
        assert!(p.modules.is_empty());
        assert_eq!(std::fs::read(&p.kernel).unwrap(), b"MZkernel");
    }

    #[test]
    fn refusals_say_why() {
        let t = tempfile::tempdir().unwrap();
        // The metapackage: no kernel in it.
        let deb = write_deb(
            t.path(),
            &[("usr/share/doc/linux-image-arm64/copyright", b"x")],
        );
        let e = format!("{:#}", unpack(&deb, &t.path().join("a")).unwrap_err());
        assert!(e.contains("metapackage"), "{e}");
        // A kernel without virtio_blk, as a module or built in.
        let deb = write_deb(t.path(), &[("boot/vmlinuz-1", b"k")]);
        let e = format!("{:#}", unpack(&deb, &t.path().join("b")).unwrap_err());
        assert!(e.contains("no virtio_pci module"), "{e}");
        // A module that is not ELF.
        let deb = write_deb(
            t.path(),
            &[
                ("boot/vmlinuz-1", b"k"),
                ("lib/modules/1/kernel/fs/ext4/ext4.ko", b"not elf"),
            ],
        );
        let e = format!("{:#}", unpack(&deb, &t.path().join("c")).unwrap_err());
        assert!(
            e.contains("ext4.ko") && e.contains("not an ELF module"),
            "{e}"
        );
        let not_deb = t.path().join("vmlinuz");
        std::fs::write(&not_deb, b"MZ").unwrap();
        assert!(!is_deb(&not_deb));
    }
}
