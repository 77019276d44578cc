//! The initramfs for a kernel taken from a Debian package: a gzip
//! compressed `newc` cpio archive (the format the kernel unpacks,
//! Documentation/driver-api/early-userspace/buffer-format.rst) with the
//! package's modules for a virt guest's disk, root and network, and a
//! userland of klibc-utils taken from the image being booted.
//!
//! klibc-utils is what Debian's own initramfs-tools builds its images
//! from when busybox is absent: initramfs-tools-core `Depends:
//! klibc-utils` (Debian's initramfs-tools `debian/control`), and pi-gen
//! installs initramfs-tools into every Raspberry Pi OS image
//! (`stage0/02-firmware/01-packages-nr`). Its binaries live in
//! `/usr/lib/klibc/bin` and are linked against `/lib/klibc-HASH.so`,
//! which is the path their ELF interpreter names, so both are copied to
//! `/bin` and `/lib` of the archive.
//!
//! `/init` does what initramfs-tools' `init` does for a plain ext4 root:
//! mounts /proc, /sys and devtmpfs, loads the modules in order, waits for
//! the partition that `root=PARTUUID=…-NN` names (on the guest's virtio
//! disk, `/dev/vdaN`; `root=/dev/…` is taken as is), mounts it read-only
//! (read-write with `rw`), and hands over with klibc's `run-init`, which
//! empties the initramfs, moves the new root over `/`, chroots and execs
//! the init (`init=` of the command line, else `/sbin/init`; klibc
//! `usr/kinit/run-init/run-init.c`).

use anyhow::{anyhow, bail, Context, Result};
use pipeline::osimage::OsImage;
use std::io::Write;
use std::path::Path;

/// Where klibc-utils keeps its programs.
const KLIBC_BIN: &str = "/usr/lib/klibc/bin";
/// What `/init` runs.
const NEEDED: &[&str] = &[
    "sh", "insmod", "mount", "run-init", "sleep", "cat", "poweroff",
];

/// The userland taken from the image: (path in the archive, bytes).
#[derive(Debug, Default)]
pub struct Userland {
    files: Vec<(String, Vec<u8>)>,
}

/// The refusal when the image has no klibc-utils.
pub const NO_KLIBC: &str = "not in the image (/usr/lib/klibc/bin): the initramfs for a --kernel package is made from it; install klibc-utils in the base, or give --initrd";

/// klibc-utils' programs and shared library, read from `image` with
/// nodeimg's filesystem code.
pub fn klibc(image: &OsImage) -> Result<Userland> {
    if !image.is_dir(KLIBC_BIN)? {
        bail!(pipeline::Error::refused("klibc-utils", NO_KLIBC));
    }
    let mut files = Vec::new();
    for e in image.list(KLIBC_BIN)? {
        let p = format!("{KLIBC_BIN}/{}", e.name);
        // `read` follows symlinks; directories and the like are skipped.
        if let Ok(Some(b)) = image.read(&p) {
            files.push((format!("bin/{}", e.name), b));
        }
    }
    for n in NEEDED {
        if !files.iter().any(|(p, _)| p.strip_prefix("bin/") == Some(n)) {
            bail!(pipeline::Error::refused(
                "klibc-utils",
                format!("{KLIBC_BIN}/{n} is missing from the image: reinstall klibc-utils in the base, or give --initrd")
            ));
        }
    }
    let mut lib = None;
    for dir in ["/usr/lib", "/lib"] {
        if !image.is_dir(dir)? {
            continue;
        }
        if let Some(e) = image
            .list(dir)?
            .into_iter()
            .find(|e| e.name.starts_with("klibc-") && e.name.ends_with(".so"))
        {
            let p = format!("{dir}/{}", e.name);
            let b = image
                .read(&p)?
                .ok_or_else(|| anyhow!("{p} vanished while reading"))?;
            lib = Some((format!("lib/{}", e.name), b));
            break;
        }
    }
    let lib = lib.ok_or_else(|| {
        pipeline::Error::refused(
            "klibc-utils",
            "its library (/usr/lib/klibc-*.so, package libklibc) is not: install libklibc in the base, or give --initrd",
        )
    })?;
    files.push(lib);
    Ok(Userland { files })
}

/// The `/init` script (klibc's `sh`, a dash).
pub const INIT: &str = r#"#!/bin/sh
# nodeimg's initramfs for a kernel from a Debian package (docs/boot.md).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do
	insmod "/modules/$m.ko" || echo "nodeimg-initramfs: insmod $m failed"
done </modules/order
root='' fstype=ext4 mode=ro init=/sbin/init
# The command line's words, split as the kernel splits them.
# shellcheck disable=SC2013
for w in $(cat /proc/cmdline); do
	case $w in
	root=*) root=${w#root=} ;;
	rootfstype=*) fstype=${w#rootfstype=} ;;
	init=*) init=${w#init=} ;;
	rw) mode=rw ;;
	ro) mode=ro ;;
	esac
done
case $root in
# An MBR partition's PARTUUID: the disk id, then the partition number in
# hex (the boards' cards are MBR only).
PARTUUID=????????-??) dev=/dev/vda$((0x${root##*-})) ;;
/dev/*) dev=$root ;;
*) dev= ;;
esac
if [ -z "$dev" ]; then
	echo "nodeimg-initramfs: cannot find root=$root: give root=PARTUUID=DISKID-NN (MBR) or root=/dev/vdaN"
	sleep 5
	poweroff -f
fi
i=0
while [ ! -b "$dev" ] && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
if ! mount -t "$fstype" -o "$mode" "$dev" /root; then
	echo "nodeimg-initramfs: cannot mount $dev ($fstype) on /root"
	sleep 5
	poweroff -f
fi
exec run-init /root "$init"
"#;

/// Writes the gzip newc initramfs to `out`: `modules` (name, ELF bytes)
/// are loaded in the given order.
pub fn write(userland: &Userland, modules: &[(String, Vec<u8>)], out: &Path) -> Result<()> {
    let f = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut gz =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::fast());
    let mut order = String::new();
    for (name, _) in modules {
        order.push_str(name);
        order.push('\n');
    }
    let mut ino = 1u32;
    let mut entry = |w: &mut dyn Write,
                     name: &str,
                     mode: u32,
                     data: &[u8],
                     dev: Option<(u32, u32)>|
     -> Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| anyhow!("{name}: too large for cpio"))?;
        let mut b = cpio::newc::Builder::new(name).ino(ino).mode(mode).nlink(1);
        if let Some((maj, min)) = dev {
            b = b.rdev_major(maj).rdev_minor(min);
        }
        ino += 1;
        let mut wr = b.write(w, size);
        wr.write_all(data)?;
        wr.finish()?;
        Ok(())
    };
    const DIR: u32 = 0o040755;
    const FILE: u32 = 0o100644;
    const EXEC: u32 = 0o100755;
    for d in ["bin", "lib", "dev", "proc", "sys", "root", "modules"] {
        entry(&mut gz, d, DIR, b"", None)?;
    }
    // The console exists before /init runs (the kernel opens it for
    // init's stdio), whatever the kernel's built-in initramfs holds.
    entry(&mut gz, "dev/console", 0o020600, b"", Some((5, 1)))?;
    for (p, b) in &userland.files {
        entry(&mut gz, p, EXEC, b, None)?;
    }
    for (name, b) in modules {
        entry(&mut gz, &format!("modules/{name}.ko"), FILE, b, None)?;
    }
    entry(&mut gz, "modules/order", FILE, order.as_bytes(), None)?;
    entry(&mut gz, "init", EXEC, INIT.as_bytes(), None)?;
    cpio::newc::trailer(&mut gz)?;
    let mut w = gz.finish()?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_clean_posix_sh() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("init");
        std::fs::write(&p, INIT).unwrap();
        let o = std::process::Command::new("shellcheck")
            .args(["-s", "sh"])
            .arg(&p)
            .output()
            .expect("shellcheck is missing: apt-get install shellcheck");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }

    #[test]
    fn the_archive_is_newc_that_cpio_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("initrd");
        let u = Userland {
            files: vec![
                ("bin/sh".into(), b"#!sh".to_vec()),
                ("lib/klibc-x.so".into(), b"so".to_vec()),
            ],
        };
        write(&u, &[("virtio_blk".into(), b"\x7fELF..".to_vec())], &out).unwrap();
        let gz = std::fs::read(&out).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let mut names = Vec::new();
        let mut r: &[u8] = &raw;
        loop {
            let rd = cpio::newc::Reader::new(r).unwrap();
            if rd.entry().is_trailer() {
                break;
            }
            names.push((rd.entry().name().to_string(), rd.entry().mode()));
            r = rd.finish().unwrap();
        }
        assert!(names.contains(&("init".into(), 0o100755)));
        assert!(names.contains(&("modules/virtio_blk.ko".into(), 0o100644)));
        assert!(names.contains(&("dev/console".into(), 0o020600)));
        assert!(names.contains(&("modules/order".into(), 0o100644)));
        // An independent reader: GNU cpio lists the same archive.
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg("gzip -dc \"$1\" | cpio -it --quiet")
            .arg("sh")
            .arg(&out)
            .output()
            .expect("sh");
        assert!(
            o.status.success(),
            "gzip/cpio failed (apt-get install cpio gzip): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let listed = String::from_utf8_lossy(&o.stdout);
        for n in [
            "init",
            "bin/sh",
            "lib/klibc-x.so",
            "modules/virtio_blk.ko",
            "dev/console",
        ] {
            assert!(listed.lines().any(|l| l == n), "{n} not in {listed}");
        }
    }
}
