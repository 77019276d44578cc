//! Upstream-like OS images for the stage tests, made by independent tools
//! (`fixtures/make-os-image.sh`, `fixtures/make-towboot-archive.sh`: sfdisk,
//! mkfs.vfat, mtools, mke2fs -d) and cached on disk under the target
//! directory, keyed by the script's SHA-256 and the e2fsprogs version, so a
//! suite builds each once however many test processes ask. Tests copy what
//! they change; the cached files are never written.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's top directory.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Raspberry Pi OS (Trixie) arm64-like disk image: MBR `8a438930`, FAT32
/// `bootfs` at sector 16384 with the Pi 5 boot files, ext4 `rootfs`.
pub fn rpios() -> PathBuf {
    cached("make-os-image.sh", "rpios", &["rpios"], "disk.img", false)
}

/// The Raspberry Pi OS Bookworm variant of `rpios()`: first boot through
/// `init=/usr/lib/raspberrypi-sys-mods/firstboot`, no cloud-init.
pub fn rpios_bookworm() -> PathBuf {
    cached(
        "make-os-image.sh",
        "rpios-bookworm",
        &["rpios-bookworm"],
        "disk.img",
        false,
    )
}

/// The root tree `rpios()` was made from, with the boot files under
/// `/boot/firmware` (for `systemctl --root` and other tree oracles). Copy it
/// before changing it.
pub fn rpios_tree() -> PathBuf {
    cached("make-os-image.sh", "rpios-tree", &["rpios"], "tree", true)
}

/// A NixOS aarch64 sd-image-like disk image: MBR `2178694e`, FAT16
/// `FIRMWARE` at 8 MiB, ext4 `NIXOS_SD` at sector 77824 with
/// `/boot/extlinux/extlinux.conf`, no `/etc`.
pub fn nixos() -> PathBuf {
    cached("make-os-image.sh", "nixos", &["nixos"], "disk.img", false)
}

/// A Tow-Boot-like release archive for the Odroid C4 (`.tar.xz` holding
/// `shared.disk-image.img` and `binaries/Tow-Boot.noenv.bin`).
pub fn towboot_archive() -> PathBuf {
    cached(
        "make-towboot-archive.sh",
        "towboot",
        &[],
        "odroid-C4.tar.xz",
        false,
    )
}

/// Runs `fixtures/SCRIPT ARGS… OUT [TREE]` once per recipe and returns the
/// cached result (`OUT`, or with `tree` the tree directory).
fn cached(script: &str, name: &str, args: &[&str], out: &str, tree: bool) -> PathBuf {
    let script_path = repo().join("fixtures").join(script);
    let mut h = Sha256::new();
    h.update(fs::read(&script_path).expect("fixture script is readable"));
    h.update(args.join(" ").as_bytes());
    h.update(e2fsprogs_version().as_bytes());
    let key: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("os-fixtures");
    fs::create_dir_all(&root).expect("fixture cache directory");
    let dir = root.join(format!("{name}-{key}"));
    let result = dir.join(if tree { "tree" } else { out });
    if dir.join("done").exists() {
        return result;
    }
    // One builder at a time across test processes; the others wait and reuse.
    let lock = File::create(root.join(format!("{name}.lock"))).expect("fixture lock file");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("locking the fixture cache");
    if dir.join("done").exists() {
        return result;
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("fixture directory");
    let mut cmd = Command::new("bash");
    cmd.arg(&script_path).args(args);
    if tree {
        cmd.arg(dir.join("disk.img")).arg(dir.join("tree"));
    } else {
        cmd.arg(dir.join(out));
    }
    let status = cmd.status().expect("running the fixture script");
    assert!(
        status.success(),
        "fixtures/{script} {args:?} failed: {status}"
    );
    File::create(dir.join("done")).expect("marking the fixture done");
    result
}

fn e2fsprogs_version() -> String {
    Command::new("mke2fs")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default()
}

/// A private copy of a cached image in `dir`, for tests that change it.
pub fn copy_to(image: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    let status = Command::new("cp")
        .args(["--sparse=always"])
        .arg(image)
        .arg(&dst)
        .status()
        .expect("cp");
    assert!(status.success(), "copying {}", image.display());
    dst
}

/// A test that cannot run its oracle here: with `CI` set this is a failure
/// (CI installs everything, so a skip there hides breakage); elsewhere it
/// prints `SKIPPED name: why` and appends the same line to the file named by
/// `NODEIMG_SKIP_LOG`, which `.ci/test` counts and prints after the run.
pub fn skip(name: &str, why: &str) {
    let line = format!("SKIPPED {name}: {why}");
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{line} (CI is set: a skipped test is a failure)");
    }
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("NODEIMG_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{line}");
        }
    }
}
