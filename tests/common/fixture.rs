//! Fixture images made by `mkfs.ext4` itself (never by our code), one per
//! feature-matrix entry, in a temporary directory. Images are sparse files
//! of 32–64 MiB; UUID, hash seed and mkfs time are fixed so a fixture is the
//! same on every run.

use super::model::Model;
use super::oracle::{self, run};
use super::rng::Rng;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Entries in the htree fixture's big directory.
pub const HTREE_ENTRIES: usize = 5000;

/// The feature-matrix entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `mkfs.ext4 -T default`: 4 KiB blocks, 256-byte inodes, metadata_csum,
    /// 64bit, flex_bg, orphan_file — what a current mkfs makes of a real
    /// card (below 512 MiB plain `mkfs.ext4` would pick the "small" type).
    Defaults,
    /// `-O ^metadata_csum,^64bit`: the gdt_csum (crc16) era, 32-byte descriptors.
    GdtCsum,
    /// `-b 1024`.
    Block1k,
    /// `-b 2048`.
    Block2k,
    /// `-O ^has_journal`.
    NoJournal,
    /// `-I 128`: no extra inode fields, no in-inode xattrs.
    Inode128,
    /// A directory of 5,000 entries made by `mke2fs -d`, indexed by `e2fsck -fD`.
    Htree,
    /// A few dozen free blocks and a handful of free inodes.
    NearlyFull,
    /// 1 KiB blocks whose free space is hundreds of one-block holes, so a
    /// new file needs an extent tree of depth 2.
    Fragmented,
    /// `-O inline_data` with small inline files and an inline directory.
    InlineData,
}

impl Variant {
    /// The matrix the tests walk.
    pub const ALL: [Variant; 10] = [
        Variant::Defaults,
        Variant::GdtCsum,
        Variant::Block1k,
        Variant::Block2k,
        Variant::NoJournal,
        Variant::Inode128,
        Variant::Htree,
        Variant::NearlyFull,
        Variant::Fragmented,
        Variant::InlineData,
    ];

    fn mkfs_args(self) -> Vec<&'static str> {
        match self {
            Variant::Defaults => vec!["-T", "default"],
            Variant::GdtCsum => vec!["-T", "default", "-O", "^metadata_csum,^64bit,uninit_bg"],
            Variant::Block1k => vec!["-b", "1024"],
            Variant::Block2k => vec!["-b", "2048"],
            Variant::NoJournal => vec!["-T", "default", "-O", "^has_journal"],
            Variant::Inode128 => vec!["-T", "default", "-I", "128"],
            Variant::Htree => vec!["-T", "default", "-N", "8192"],
            Variant::NearlyFull => vec!["-T", "default", "-N", "64"],
            Variant::Fragmented => vec!["-b", "1024", "-N", "4096"],
            Variant::InlineData => vec!["-T", "default", "-O", "inline_data"],
        }
    }

    fn size_mib(self) -> u64 {
        match self {
            Variant::Block1k | Variant::Block2k | Variant::NearlyFull => 32,
            Variant::Fragmented | Variant::InlineData => 32,
            _ => 64,
        }
    }
}

/// A fresh image of one variant and the model of what it holds.
pub struct Fixture {
    dir: tempfile::TempDir,
    pub image: PathBuf,
    pub variant: Variant,
    pub model: Model,
}

const UUID: &str = "6e6f6465-696d-4720-6578-7434746573ff";
const HASH_SEED: &str = "68617368-7365-6564-2066-6f7220746573";
/// 2026-11-22 00:00:00 UTC, for mkfs's own timestamps.
const FAKE_TIME: &str = "1795305600";

/// Runs `mkfs.ext4` on a new sparse file; `Err` carries mkfs's complaint.
pub fn mkfs(
    image: &Path,
    size_mib: u64,
    args: &[&str],
    source: Option<&Path>,
) -> Result<(), String> {
    let _ = std::fs::remove_file(image);
    let f = std::fs::File::create(image).map_err(|e| e.to_string())?;
    f.set_len(size_mib << 20).map_err(|e| e.to_string())?;
    drop(f);
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-F", "-q", "-U", UUID, "-E"])
        .arg(format!("hash_seed={HASH_SEED},root_owner=0:0"))
        .args(args)
        .env("E2FSPROGS_FAKE_TIME", FAKE_TIME)
        .env("SOURCE_DATE_EPOCH", FAKE_TIME);
    if let Some(src) = source {
        cmd.arg("-d").arg(src);
    }
    let out = run(cmd.arg(image));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mkfs.ext4 {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn write(path: &Path, data: &[u8], mode: u32, uid: u32, gid: u32) {
    std::fs::write(path, data).expect("write fixture source");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    chown(path, Some(uid), Some(gid)).expect("chown fixture source (tests run as root)");
}

fn dir(path: &Path, mode: u32, uid: u32, gid: u32) {
    std::fs::create_dir_all(path).expect("mkdir fixture source");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    chown(path, Some(uid), Some(gid)).expect("chown fixture source (tests run as root)");
}

/// The tree every fixture starts with: a small Raspberry-Pi-OS-like root.
fn common_source(src: &Path) {
    let mut rng = Rng::new(0x5eed);
    dir(src, 0o755, 0, 0);
    dir(&src.join("etc"), 0o755, 0, 0);
    write(&src.join("etc/hostname"), b"seed-node\n", 0o644, 0, 0);
    write(
        &src.join("etc/hosts"),
        b"127.0.0.1\tlocalhost\n127.0.1.1\tseed-node\n",
        0o644,
        0,
        0,
    );
    write(
        &src.join("etc/shadow"),
        b"root:*:20000:0:99999:7:::\n",
        0o640,
        0,
        42,
    );
    dir(&src.join("home/pi/.ssh"), 0o700, 1000, 1000);
    dir(&src.join("home/pi"), 0o755, 1000, 1000);
    write(
        &src.join("home/pi/.ssh/authorized_keys"),
        b"ssh-ed25519 AAAA seed\n",
        0o600,
        1000,
        1000,
    );
    dir(&src.join("usr/bin"), 0o755, 0, 0);
    write(&src.join("usr/bin/tool"), &rng.bytes(40_000), 0o755, 0, 0);
    dir(&src.join("var/log"), 0o755, 0, 0);
    symlink("etc/hostname", src.join("link-to-hostname")).expect("symlink");
}

/// A built variant: its image and the model of what it holds.
struct Template {
    image: PathBuf,
    model: Model,
}

/// Templates loaded in this test binary, one per variant.
static TEMPLATES: Mutex<Vec<(Variant, Arc<Template>)>> = Mutex::new(Vec::new());

impl Fixture {
    /// A fresh copy of the variant's image (the copy stays sparse). The
    /// template comes from the on-disk cache ([`cached`]), built at most
    /// once per recipe and e2fsprogs version, whatever the number of test
    /// processes.
    pub fn new(variant: Variant) -> Fixture {
        let template = {
            let mut loaded = TEMPLATES.lock().unwrap_or_else(|e| e.into_inner());
            match loaded.iter().find(|(v, _)| *v == variant) {
                Some((_, t)) => Arc::clone(t),
                None => {
                    let t = Arc::new(cached(variant));
                    loaded.push((variant, Arc::clone(&t)));
                    t
                }
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir
            .path()
            .join(template.image.file_name().expect("image name"));
        let out = run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&template.image)
            .arg(&image));
        assert!(
            out.status.success(),
            "cp fixture: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Fixture {
            dir,
            image,
            variant,
            model: template.model.clone(),
        }
    }

    /// Makes the variant's image with mkfs.ext4 (and e2fsprogs' tools) in
    /// `dir`: `NAME.img` and the `source` tree it was made from.
    fn build(variant: Variant, dir: &Path) {
        let image = dir.join(image_name(variant));
        let src = dir.join("source");
        common_source(&src);
        let args = variant.mkfs_args();
        let size = variant.size_mib();
        match variant {
            Variant::Htree => {
                let big = src.join("big");
                std::fs::create_dir(&big).expect("mkdir big");
                for i in 0..HTREE_ENTRIES {
                    let data = if i % 500 == 0 {
                        format!("entry {i}\n")
                    } else {
                        String::new()
                    };
                    std::fs::write(big.join(format!("entry-{i:05}")), data).expect("write");
                }
                mkfs(&image, size, &args, Some(&src)).expect("mkfs htree");
                // mke2fs -d leaves directories linear; e2fsck -D indexes them.
                let out = run(Command::new("e2fsck").arg("-fyD").arg(&image));
                assert!(
                    out.status.code().unwrap_or(8) < 4,
                    "e2fsck -fyD: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
                let st = oracle::stat(&image, "/big").expect("stat /big");
                assert!(st.flags & 0x1000 != 0, "/big is not indexed: {}", st.raw);
            }
            Variant::NearlyFull => fill(&image, size, &args, &src, 24),
            Variant::Fragmented => {
                let frag = src.join("frag");
                std::fs::create_dir(&frag).expect("mkdir frag");
                for i in 0..1600 {
                    std::fs::write(frag.join(format!("f{i:04}")), [b'f'; 1024]).expect("write");
                }
                fill(&image, size, &args, &src, 8);
                // Free every other one-block file: hundreds of one-block holes.
                let script: String = (0..1600)
                    .step_by(2)
                    .map(|i| format!("rm /frag/f{i:04}\n"))
                    .collect();
                let script_path = dir.join("punch.debugfs");
                std::fs::write(&script_path, script).expect("write script");
                let out = run(Command::new("debugfs")
                    .arg("-w")
                    .arg("-f")
                    .arg(&script_path)
                    .arg(&image));
                assert!(out.status.success(), "debugfs punch holes failed");
                for i in (0..1600).step_by(2) {
                    std::fs::remove_file(frag.join(format!("f{i:04}"))).expect("rm");
                }
            }
            Variant::InlineData => {
                dir_(&src.join("inline"));
                write(&src.join("inline/tiny.txt"), b"inline data\n", 0o644, 0, 0);
                write(&src.join("inline/small.txt"), &[b's'; 100], 0o644, 0, 0);
                mkfs(&image, size, &args, Some(&src)).expect("mkfs inline_data");
            }
            _ => mkfs(&image, size, &args, Some(&src)).expect("mkfs"),
        }
        if let Err(e) = oracle::fsck_clean(&image) {
            panic!("fixture {variant:?} is not clean before any change: {e}");
        }
    }

    /// A scratch directory next to the image (local files for the CLI).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

fn dir_(path: &Path) {
    dir(path, 0o755, 0, 0);
}

/// Makes `image` from `src` plus a `/filler` file that leaves about `spare`
/// free blocks. The filler's size comes from a probe mkfs of the same tree.
fn fill(image: &Path, size_mib: u64, args: &[&str], src: &Path, spare: u64) {
    mkfs(image, size_mib, args, Some(src)).expect("probe mkfs");
    let (free, _) = oracle::free_counts(image);
    let bs: u64 = oracle::superblock_field(image, "Block size:")
        .and_then(|v| v.parse().ok())
        .expect("block size");
    let filler = src.join("filler");
    let mut blocks = free.saturating_sub(spare);
    loop {
        let f = std::fs::File::create(&filler).expect("filler");
        // Real bytes, not a hole: mke2fs -d keeps holes sparse.
        let chunk = vec![0xa5u8; 1 << 20];
        let total = blocks * bs;
        let mut left = total;
        let mut w = std::io::BufWriter::new(f);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut w, &chunk[..n]).expect("write filler");
            left -= n as u64;
        }
        drop(w);
        if mkfs(image, size_mib, args, Some(src)).is_ok() {
            return;
        }
        assert!(
            blocks > 64,
            "cannot size the filler for {}",
            image.display()
        );
        blocks -= 16;
    }
}

fn image_name(variant: Variant) -> String {
    format!("{variant:?}.img").to_lowercase()
}

/// Where built fixtures are kept: `$NODEIMG_FIXTURE_CACHE`, else
/// `target/fixture-cache`.
pub fn cache_root() -> PathBuf {
    match std::env::var_os("NODEIMG_FIXTURE_CACHE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target/tmp has a parent")
            .join("fixture-cache"),
    }
}

/// The version line of the installed e2fsprogs: its mke2fs decides the bytes.
fn e2fsprogs_version() -> String {
    let out = run(Command::new("mke2fs").arg("-V"));
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .next()
        .unwrap_or("unknown")
        .to_string()
}

/// The key of a recipe: the variant, the code that builds it (this file and
/// the generator it uses) and the e2fsprogs version. Any change to one of
/// them builds anew.
fn recipe_key(variant: Variant) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(format!("{variant:?}\0"))
        .chain_update(include_str!("fixture.rs"))
        .chain_update(include_str!("rng.rs"))
        .chain_update(e2fsprogs_version())
        .finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The variant's template from the cache, building it under an exclusive
/// `flock` when missing, so parallel test processes build it once. A build
/// happens in a scratch directory renamed into place only when complete.
fn cached(variant: Variant) -> Template {
    use std::os::fd::AsRawFd;
    let root = cache_root();
    std::fs::create_dir_all(&root).expect("create the fixture cache");
    let entry = root.join(format!("{variant:?}-{}", recipe_key(variant)).to_lowercase());
    if !entry.is_dir() {
        let lock = std::fs::File::create(root.join(".lock")).expect("fixture cache lock");
        // SAFETY: flock(2) on a descriptor we own; released when it closes.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "locking the fixture cache");
        if !entry.is_dir() {
            let scratch = tempfile::Builder::new()
                .prefix(".building-")
                .tempdir_in(&root)
                .expect("fixture scratch dir");
            Fixture::build(variant, scratch.path());
            std::fs::rename(scratch.path(), &entry).expect("fixture into the cache");
            // The scratch dir is gone: TempDir's cleanup finds nothing.
            drop(scratch);
        }
    }
    Template {
        image: entry.join(image_name(variant)),
        model: Model::from_source(&entry.join("source")),
    }
}
