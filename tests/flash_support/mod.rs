//! Shared helpers of the flash integration tests: loop devices and tmpfs
//! mounts that clean up after themselves even when a test fails, fixture
//! images, and running the `nodeimg` binary. Tests run as root (CI does) and
//! write only to loop devices they created here.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs a command, panicking with its stderr when it fails.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over a file; detached on drop.
pub struct Loop {
    pub dev: String,
}

impl Loop {
    /// Attaches `file` to a free loop device.
    pub fn new(file: &Path) -> Loop {
        let dev = sh("losetup", &["--find", "--show", file.to_str().unwrap()])
            .trim()
            .to_string();
        Loop { dev }
    }

    /// A loop device over a new sparse file of `size` bytes filled with `fill`
    /// in its first `filled` bytes (so unwritten ranges are recognisable).
    pub fn over_new_file(dir: &Path, name: &str, size: u64, fill: u8, filled: u64) -> Loop {
        let p = dir.join(name);
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        let chunk = vec![fill; 1 << 20];
        let mut left = filled;
        let mut w = std::io::BufWriter::new(&f);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        w.flush().unwrap();
        drop(w);
        f.sync_all().unwrap();
        Loop::new(&p)
    }

    /// `len` bytes of the device at `offset`.
    pub fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&self.dev).unwrap();
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, offset).unwrap();
        buf
    }

    /// `major:minor` of the device.
    pub fn devnum(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        format!("{}:{}", libc_major(rdev), libc_minor(rdev))
    }
}

fn libc_major(d: u64) -> u64 {
    ((d >> 32) & 0xffff_f000) | ((d >> 8) & 0xfff)
}

fn libc_minor(d: u64) -> u64 {
    ((d >> 12) & 0xffff_ff00) | (d & 0xff)
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A mounted filesystem (tmpfs or a device); unmounted on drop.
pub struct Mounted {
    pub dir: PathBuf,
}

impl Mounted {
    /// A tmpfs of `size` bytes at `dir`.
    pub fn tmpfs(dir: &Path, size: u64) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        );
        Mounted {
            dir: dir.to_path_buf(),
        }
    }

    /// `dev` mounted at `dir` with `opts`.
    pub fn device(dev: &str, dir: &Path, opts: &str) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        sh("mount", &["-o", opts, dev, dir.to_str().unwrap()]);
        Mounted {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // The flash under test may already have unmounted it.
        let _ = Command::new("umount")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Runs `nodeimg` with `args`, stdin closed (no terminal).
pub fn nodeimg(args: &[&str]) -> Output {
    nodeimg_env(args, &[])
}

/// Runs `nodeimg` with extra environment variables.
pub fn nodeimg_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Offset of partition 2 of the fixture image.
pub const P2: u64 = 12 << 20;

/// A 40 MiB fixture: MBR, a FAT partition (1–12 MiB) and an ext4 partition
/// (12–40 MiB) holding a few files, as a sparse file.
pub fn fixture_image(dir: &Path) -> PathBuf {
    let img = dir.join("fixture.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(40 << 20).unwrap();
    drop(f);
    let mut child = Command::new("sfdisk")
        .args(["-q", img.to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nlabel-id: 0x4e6f6465\n2048,22528,c\n24576,,83\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    sh(
        "mkfs.fat",
        &[
            "--offset",
            "2048",
            "-n",
            "BOOT",
            img.to_str().unwrap(),
            "11264",
        ],
    );
    let cfg = dir.join("config.txt");
    std::fs::write(&cfg, "arm_64bit=1\n").unwrap();
    let out = Command::new("mcopy")
        .args(["-i", &format!("{}@@{}", img.display(), 1u64 << 20)])
        .arg(&cfg)
        .arg("::config.txt")
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mcopy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), "node7\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(tree.join("blob"), &big).unwrap();
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            &format!("offset={P2}"),
            "-d",
            tree.to_str().unwrap(),
            img.to_str().unwrap(),
            "28M",
        ],
    );
    img
}

/// Parses the `--dry-run --json` plan: (image size, [(start, end)] written incl. table).
pub fn planned_ranges(image: &str, extra: &[&str], dev: &str) -> (u64, Vec<(u64, u64)>) {
    let mut args = vec![
        "flash",
        image,
        "--device",
        dev,
        "--allow-fixed",
        "--dry-run",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = nodeimg(&args);
    assert!(out.status.success(), "dry run failed: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let plan = &v["plan"];
    let mut ranges: Vec<(u64, u64)> = plan["write"]
        .as_array()
        .unwrap()
        .iter()
        .chain(plan["table"].as_array().unwrap())
        .map(|e| (e["start"].as_u64().unwrap(), e["end"].as_u64().unwrap()))
        .collect();
    ranges.sort();
    (plan["image_size"].as_u64().unwrap(), ranges)
}

/// `cmp` of `len` bytes at `offset` of two files or devices.
pub fn cmp_range(a: &str, b: &str, offset: u64, len: u64) -> bool {
    Command::new("cmp")
        .args([
            "-s",
            "-i",
            &format!("{offset}:{offset}"),
            "-n",
            &len.to_string(),
            a,
            b,
        ])
        .status()
        .unwrap()
        .success()
}

/// A read-only loop device over `len` bytes at `offset` of `dev` (a partition,
/// since there is no udev to make `/dev/loopNpM`).
pub fn partition(dev: &str, offset: u64, len: u64) -> Loop {
    let out = sh(
        "losetup",
        &[
            "--find",
            "--show",
            "--read-only",
            "--offset",
            &offset.to_string(),
            "--sizelimit",
            &len.to_string(),
            dev,
        ],
    );
    Loop {
        dev: out.trim().to_string(),
    }
}

/// Read-only checks of the fixture's table and filesystems on a written device:
/// `sfdisk`, `e2fsck -fn` + `debugfs`, `fsck.vfat -n` + `mdir`.
pub fn check_filesystems(dev: &str) {
    let table = sh("sfdisk", &["--json", dev]);
    assert!(table.contains("\"id\": \"0x4e6f6465\""), "{table}");
    let ext4 = partition(dev, P2, 28 << 20);
    let fsck = Command::new("e2fsck")
        .args(["-fn", &ext4.dev])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck on the card: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let host = sh("debugfs", &["-R", "cat /etc/hostname", &ext4.dev]);
    assert_eq!(host, "node7\n");
    let fat = partition(dev, 1 << 20, 11 << 20);
    sh("fsck.vfat", &["-n", &fat.dev]);
    // mtools wants a floppy geometry from block devices unless told not to check.
    let mtype = Command::new("mtype")
        .args(["-i", &fat.dev, "::config.txt"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&mtype.stdout), "arm_64bit=1\n");
}
