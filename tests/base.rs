//! `nodeimg base` end to end, judged by independent tools: sfdisk, e2fsck,
//! fsck.vfat, debugfs, mtools, cmp, bmaptool, and a local HTTP server.

mod os_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const SDE: &str = "1767225600";

fn nodeimg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", SDE)
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("nodeimg-test-no-cache"),
        )
        .output()
        .expect("running nodeimg")
}

fn ok(args: &[&str]) -> String {
    let o = nodeimg(args);
    assert!(
        o.status.success(),
        "nodeimg {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A refusal: non-zero, one line on stderr containing `needle`, nothing
/// under the output name.
fn refused(args: &[&str], out: &Path, needle: &str) {
    let o = nodeimg(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("nodeimg: error: "), "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert!(!out.exists(), "{} exists after a refusal", out.display());
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sfdisk(img: &Path) -> serde_json::Value {
    let j: serde_json::Value =
        serde_json::from_str(&tool("sfdisk", &["--json", img.to_str().unwrap()])).unwrap();
    j["partitiontable"].clone()
}

/// Extracts partition `n` (1-based, per sfdisk) to a file and returns it.
fn part_file(img: &Path, n: usize, dir: &Path) -> PathBuf {
    let t = sfdisk(img);
    let p = &t["partitions"][n - 1];
    let (start, size) = (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap());
    let out = dir.join(format!("p{n}.img"));
    tool(
        "dd",
        &[
            &format!("if={}", img.display()),
            &format!("of={}", out.display()),
            "bs=512",
            &format!("skip={start}"),
            &format!("count={size}"),
            "conv=sparse",
            "status=none",
        ],
    );
    out
}

fn e2fsck_clean(fs: &Path) {
    tool("e2fsck", &["-fn", fs.to_str().unwrap()]);
}

fn fat_clean(fs: &Path) {
    tool("fsck.vfat", &["-n", fs.to_str().unwrap()]);
}

fn debugfs(fs: &Path, req: &str) -> String {
    tool("debugfs", &["-R", req, fs.to_str().unwrap()])
}

fn mtype(fat: &Path, path: &str) -> String {
    let o = Command::new("mtype")
        .args(["-i", fat.to_str().unwrap(), &format!("::{path}")])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "mtype {path}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn manifest(img: &Path) -> serde_json::Value {
    let p = format!("{}.json", img.display());
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn rpios_image_becomes_a_base() {
    let dir = tempfile::tempdir().unwrap();
    let src = os_support::rpios();
    let out = dir.path().join("base.img");
    let o = out.to_str().unwrap();
    ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        src.to_str().unwrap(),
        "-o",
        o,
    ]);
    let t = sfdisk(&out);
    assert_eq!(t["label"], "dos");
    assert_eq!(t["id"], "0x8a438930");
    assert_eq!(t["partitions"][0]["start"], 16384);
    assert_eq!(t["partitions"][0]["type"], "c");
    assert_eq!(t["partitions"][1]["type"], "83");
    let boot = part_file(&out, 1, dir.path());
    let root = part_file(&out, 2, dir.path());
    fat_clean(&boot);
    e2fsck_clean(&root);
    assert!(mtype(&boot, "/cmdline.txt").contains("root=PARTUUID=8a438930-02"));
    // No host key survives.
    let ls = debugfs(&root, "ls -l /etc/ssh");
    assert!(!ls.contains("ssh_host_"), "{ls}");
    let m = manifest(&out);
    assert_eq!(m["board"], "rpi5");
    assert_eq!(m["layout"]["disk_id"], "8a438930");
    assert_eq!(m["layout"]["partitions"][1]["mount"], "/");
    assert_eq!(m["layout"]["partitions"][1]["partuuid"], "8a438930-02");
    assert_eq!(m["os"]["name"], "debian");
    assert!(m["customisations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["path"]
            .as_str()
            .unwrap()
            .starts_with("/etc/ssh/ssh_host_")));
    let sha = tool("sha256sum", &[o]);
    assert_eq!(m["image"]["sha256"].as_str().unwrap(), &sha[..64]);
    // Bit-identical in the same run, so the source is the only input.
    let out2 = dir.path().join("again.img");
    ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        src.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
    ]);
    tool("cmp", &[o, out2.to_str().unwrap()]);
}

#[test]
fn size_grows_root_keeping_ids_and_bmap_is_reproducible_and_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let src = os_support::rpios();
    let src_size = std::fs::metadata(&src).unwrap().len();
    let target = (src_size + (96 << 20)).to_string();
    let mk = |name: &str| {
        let out = dir.path().join(name);
        ok(&[
            "base",
            "--board",
            "rpi5",
            "--from",
            src.to_str().unwrap(),
            "--size",
            &target,
            "--bmap",
            "--zstd",
            "-o",
            out.to_str().unwrap(),
        ]);
        out
    };
    let a = mk("a.img");
    let b = mk("b.img");
    assert_eq!(std::fs::metadata(&a).unwrap().len(), src_size + (96 << 20));
    tool("cmp", &[a.to_str().unwrap(), b.to_str().unwrap()]);
    let (ab, bb) = (
        format!("{}.bmap", a.display()),
        format!("{}.bmap", b.display()),
    );
    tool("cmp", &[&ab, &bb]);
    let t = sfdisk(&a);
    assert_eq!(t["id"], "0x8a438930");
    let p2 = &t["partitions"][1];
    assert_eq!(
        (p2["start"].as_u64().unwrap() + p2["size"].as_u64().unwrap()) * 512,
        src_size + (96 << 20)
    );
    let root = part_file(&a, 2, dir.path());
    e2fsck_clean(&root);
    let stats = debugfs(&root, "stats");
    assert!(
        stats.contains("Filesystem volume name:   rootfs"),
        "{stats}"
    );
    let fstab = debugfs(&root, "cat /etc/fstab");
    assert!(fstab.contains("PARTUUID=8a438930-02"), "{fstab}");
    // bmaptool accepts the map (checking every range's SHA-256), and what it
    // writes holds both filesystems intact: unmapped blocks are free space.
    let target_file = dir.path().join("card.img");
    tool(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            &ab,
            a.to_str().unwrap(),
            target_file.to_str().unwrap(),
        ],
    );
    let card = dir.path().join("card");
    std::fs::create_dir(&card).unwrap();
    e2fsck_clean(&part_file(&target_file, 2, &card));
    fat_clean(&part_file(&target_file, 1, &card));
    assert_eq!(
        debugfs(&part_file(&target_file, 2, &card), "cat /etc/fstab"),
        fstab
    );
    // The zstd copy decompresses to the image.
    let z = format!("{}.zst", a.display());
    let unz = dir.path().join("unz.img");
    tool("zstd", &["-dq", &z, "-o", unz.to_str().unwrap()]);
    tool("cmp", &[a.to_str().unwrap(), unz.to_str().unwrap()]);
    // Smaller than the content: refused, nothing written.
    let small = dir.path().join("small.img");
    refused(
        &[
            "base",
            "--board",
            "rpi5",
            "--from",
            src.to_str().unwrap(),
            "--size",
            "20MiB",
            "-o",
            small.to_str().unwrap(),
        ],
        &small,
        "--size",
    );
}

#[test]
fn nixos_with_towboot_matches_the_seed_dd() {
    let dir = tempfile::tempdir().unwrap();
    let src = os_support::nixos();
    let arch = os_support::towboot_archive();
    let out = dir.path().join("c4.img");
    ok(&[
        "base",
        "--board",
        "odroid-c4",
        "--from",
        src.to_str().unwrap(),
        "--towboot",
        arch.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    // The seed: the OS image, then dd of shared.disk-image.img after sector 0.
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    tool(
        "tar",
        &["-xJf", arch.to_str().unwrap(), "-C", x.to_str().unwrap()],
    );
    let shared = tool(
        "find",
        &[x.to_str().unwrap(), "-name", "shared.disk-image.img"],
    );
    let shared = shared.trim();
    let seed = os_support::copy_to(&src, dir.path(), "seed.img");
    tool(
        "dd",
        &[
            &format!("if={shared}"),
            &format!("of={}", seed.display()),
            "bs=512",
            "skip=1",
            "seek=1",
            "conv=notrunc",
            "status=none",
        ],
    );
    let fw_end = std::fs::metadata(shared).unwrap().len();
    tool(
        "cmp",
        &[
            "-i",
            "512",
            "-n",
            &(fw_end - 512).to_string(),
            out.to_str().unwrap(),
            seed.to_str().unwrap(),
        ],
    );
    let t = sfdisk(&out);
    let before = sfdisk(&src);
    assert_eq!(t["id"], "0x2178694e");
    let parts = t["partitions"].as_array().unwrap();
    let f8 = parts
        .iter()
        .find(|p| p["type"] == "f8")
        .expect("0xF8 entry");
    // Tow-Boot's region, read from the archive's own table: 8192 sectors
    // from sector 1 (modules/hardware/amlogic/default.nix: offset 512,
    // length 4 MiB).
    assert_eq!(
        (f8["start"].as_u64(), f8["size"].as_u64()),
        (Some(1), Some(8192))
    );
    // Same number (the device-name suffix), start, size, type and flags.
    let key = |p: &serde_json::Value, img: &Path| {
        let mut p = p.clone();
        let node = p["node"].as_str().unwrap().to_string();
        p["node"] = node.trim_start_matches(img.to_str().unwrap()).into();
        p
    };
    for p in before["partitions"].as_array().unwrap() {
        let p = key(p, &src);
        assert!(
            parts.iter().any(|q| key(q, &out) == p),
            "OS partition {p} kept"
        );
    }
    // Partition contents unchanged, and clean for the independent checkers.
    for n in 1..=2 {
        let a = part_file(&src, n, &dir.path().join("x"));
        let b = part_file(&out, n, dir.path());
        tool("cmp", &[a.to_str().unwrap(), b.to_str().unwrap()]);
    }
    fat_clean(&part_file(&out, 1, dir.path()));
    e2fsck_clean(&part_file(&out, 2, dir.path()));
    // Every OS partition starts after the firmware region.
    for p in parts.iter().filter(|p| p["type"] != "f8") {
        assert!(p["start"].as_u64().unwrap() >= 8193, "{p}");
    }
    // A raw .bin gives the same firmware bytes.
    let bin = tool(
        "find",
        &[x.to_str().unwrap(), "-name", "Tow-Boot.mmcboot.bin"],
    );
    let out2 = dir.path().join("c4-bin.img");
    ok(&[
        "base",
        "--board",
        "odroid-c4",
        "--from",
        src.to_str().unwrap(),
        "--towboot",
        bin.trim(),
        "-o",
        out2.to_str().unwrap(),
    ]);
    tool(
        "cmp",
        &[
            "-i",
            "512",
            "-n",
            &(fw_end - 512).to_string(),
            out.to_str().unwrap(),
            out2.to_str().unwrap(),
        ],
    );
}

/// Tow-Boot's binaries are told apart by name: the card variants (noenv,
/// mmcboot) are written, the SPI variant, other variants and the installer
/// images are refused by name; damaged inputs are refused.
#[test]
fn towboot_variants_are_taken_or_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let src = os_support::nixos();
    let arch = os_support::towboot_archive();
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    tool(
        "tar",
        &["-xJf", arch.to_str().unwrap(), "-C", x.to_str().unwrap()],
    );
    let top = x.join("odroid-C4-2023.07-007");
    let shared = top.join("shared.disk-image.img");
    let noenv = top.join("binaries/Tow-Boot.noenv.bin");
    let base = |fw: &Path, out: &Path| -> Vec<String> {
        [
            "base",
            "--board",
            "odroid-c4",
            "--from",
            src.to_str().unwrap(),
            "--towboot",
            fw.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run_ok = |fw: &Path, out: &Path| {
        let a = base(fw, out);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    };
    let run_refused = |fw: &Path, needle: &str| {
        let out = dir.path().join("refused.img");
        let a = base(fw, &out);
        refused(
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            &out,
            needle,
        );
    };
    // The archive and binaries/Tow-Boot.noenv.bin give the same card.
    let from_arch = dir.path().join("arch.img");
    run_ok(&arch, &from_arch);
    let from_bin = dir.path().join("bin.img");
    run_ok(&noenv, &from_bin);
    tool(
        "cmp",
        &[from_arch.to_str().unwrap(), from_bin.to_str().unwrap()],
    );
    // Variants Tow-Boot ships that do not go onto the card, by name.
    let spi = dir.path().join("Tow-Boot.spi.bin");
    std::fs::copy(&noenv, &spi).unwrap();
    run_refused(&spi, "SPI flash variant");
    let other = dir.path().join("Tow-Boot.boot-installer.bin");
    std::fs::copy(&noenv, &other).unwrap();
    run_refused(&other, "\"boot-installer\" variant");
    let inst = dir.path().join("spi.installer.img");
    std::fs::copy(&shared, &inst).unwrap();
    run_refused(&inst, "installer images");
    // An mmcboot binary without its 512 zero bytes.
    let mut bad = std::fs::read(top.join("binaries/Tow-Boot.mmcboot.bin")).unwrap();
    bad[7] = 1;
    let badp = dir.path().join("Tow-Boot.mmcboot.bin");
    std::fs::write(&badp, &bad).unwrap();
    run_refused(&badp, "512 zero bytes");
    // A disk image with data after its firmware partition, and one whose
    // firmware partition does not start at sector 1.
    let mut img = std::fs::read(&shared).unwrap();
    let end = (4 << 20) + 512;
    img[end + 100] = 0x5a;
    let damaged = dir.path().join("shared.disk-image.img");
    std::fs::write(&damaged, &img).unwrap();
    run_refused(&damaged, &format!("holds data at byte {}", end + 100));
    let mut img = std::fs::read(&shared).unwrap();
    img[446 + 8] = 2;
    std::fs::write(&damaged, &img).unwrap();
    run_refused(&damaged, "firmware partition at byte 1024");
}

#[test]
fn partition_inside_firmware_region_is_refused_or_relocated() {
    let dir = tempfile::tempdir().unwrap();
    // An OS image whose first partition starts at 2 MiB.
    let img = dir.path().join("low.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut c = Command::new("sfdisk")
        .args(["-q", "--no-reread", img.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nlabel-id: 0x11223344\nstart=4096, size=40960, type=83\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    let p1 = dir.path().join("p1.img");
    let rootdir = dir.path().join("rootdir");
    std::fs::create_dir_all(rootdir.join("etc")).unwrap();
    std::fs::write(
        rootdir.join("etc/os-release"),
        "ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nVERSION_CODENAME=trixie\n",
    )
    .unwrap();
    tool(
        "mke2fs",
        &[
            "-q",
            "-t",
            "ext4",
            "-L",
            "root",
            "-d",
            rootdir.to_str().unwrap(),
            p1.to_str().unwrap(),
            "20M",
        ],
    );
    tool(
        "dd",
        &[
            &format!("if={}", p1.display()),
            &format!("of={}", img.display()),
            "bs=512",
            "seek=4096",
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
    let arch = os_support::towboot_archive();
    let out = dir.path().join("c4.img");
    refused(
        &[
            "base",
            "--board",
            "odroid-c4",
            "--from",
            img.to_str().unwrap(),
            "--towboot",
            arch.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        &out,
        "partition 1 starts at byte 2097152 inside the firmware region",
    );
    let s = ok(&[
        "base",
        "--board",
        "odroid-c4",
        "--from",
        img.to_str().unwrap(),
        "--towboot",
        arch.to_str().unwrap(),
        "--relocate",
        "-o",
        out.to_str().unwrap(),
    ]);
    let _ = s;
    let t = sfdisk(&out);
    let p = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "83")
        .unwrap()
        .clone();
    assert!(p["start"].as_u64().unwrap() * 512 >= 4 << 20);
    let moved = part_file(&out, 1, dir.path());
    e2fsck_clean(&moved);
}

#[test]
fn rpios_tree_is_laid_out() {
    let dir = tempfile::tempdir().unwrap();
    let tree = os_support::rpios_tree();
    let out = dir.path().join("tree.img");
    ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        tree.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let t = sfdisk(&out);
    let id = t["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x")
        .to_string();
    assert_eq!(t["partitions"][0]["start"], 16384);
    let boot = part_file(&out, 1, dir.path());
    let root = part_file(&out, 2, dir.path());
    fat_clean(&boot);
    e2fsck_clean(&root);
    assert!(!mtype(&boot, "/config.txt").is_empty());
    assert!(mtype(&boot, "/cmdline.txt").contains(&format!("root=PARTUUID={id}-02")));
    let fstab = debugfs(&root, "cat /etc/fstab");
    assert!(
        fstab.contains(&format!("PARTUUID={id}-02  /  ext4")),
        "{fstab}"
    );
    assert!(
        fstab.contains(&format!("PARTUUID={id}-01  /boot/firmware  vfat")),
        "{fstab}"
    );
    let label = tool("e2label", &[root.to_str().unwrap()]);
    assert_eq!(label.trim(), "rootfs");
    // The boot files live on FAT, not on the root.
    let ls = debugfs(&root, "ls /boot/firmware");
    assert!(!ls.contains("config.txt"), "{ls}");
    // Reproducible: the same tree twice gives the same bytes.
    let again = dir.path().join("again.img");
    ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        tree.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    tool("cmp", &[out.to_str().unwrap(), again.to_str().unwrap()]);
    // A tarball of the same tree gives the same layout.
    let tar = dir.path().join("tree.tar");
    tool(
        "tar",
        &[
            "-C",
            tree.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    let out2 = dir.path().join("tar.img");
    ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        tar.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
    ]);
    e2fsck_clean(&part_file(&out2, 2, dir.path()));
}

#[test]
fn bad_inputs_are_one_line_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let src = os_support::rpios();
    let s = src.to_str().unwrap();
    let out = dir.path().join("o.img");
    let o = out.to_str().unwrap();
    refused(
        &["base", "--board", "rpi9", "--from", s, "-o", o],
        &out,
        "rpi9",
    );
    refused(
        &[
            "base",
            "--board",
            "rpi5",
            "--from",
            "http://127.0.0.1:1/x.img",
            "-o",
            o,
        ],
        &out,
        "--sha256",
    );
    refused(
        &[
            "base",
            "--board",
            "rpi5",
            "--from",
            s,
            "--sha256",
            &"0".repeat(64),
            "-o",
            o,
        ],
        &out,
        "SHA-256",
    );
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    refused(
        &[
            "base",
            "--board",
            "rpi5",
            "--from",
            junk.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        "neither a disk image",
    );
    // An output equal to the input.
    let copy = os_support::copy_to(&src, dir.path(), "in.img");
    let c = copy.to_str().unwrap();
    let o2 = nodeimg(&["base", "--board", "rpi5", "--from", c, "-o", c, "--force"]);
    assert!(!o2.status.success());
    assert!(String::from_utf8_lossy(&o2.stderr).contains("is also an input"));
    // An existing output without --force.
    std::fs::write(&out, b"keep").unwrap();
    let o3 = nodeimg(&["base", "--board", "rpi5", "--from", s, "-o", o]);
    assert!(!o3.status.success());
    assert!(String::from_utf8_lossy(&o3.stderr).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    std::fs::remove_file(&out).unwrap();
    // A boot partition without the Pi 5 files.
    let nix = os_support::nixos();
    refused(
        &[
            "base",
            "--board",
            "rpi5",
            "--from",
            nix.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        "kernel_2712.img",
    );
    // A Tow-Boot archive without firmware.
    let empty = dir.path().join("e");
    std::fs::create_dir_all(empty.join("odroid/config")).unwrap();
    std::fs::write(empty.join("odroid/config/x"), b"x").unwrap();
    let tarx = dir.path().join("notb.tar.xz");
    tool(
        "tar",
        &[
            "-C",
            empty.to_str().unwrap(),
            "-cJf",
            tarx.to_str().unwrap(),
            "odroid",
        ],
    );
    refused(
        &[
            "base",
            "--board",
            "odroid-c4",
            "--from",
            nix.to_str().unwrap(),
            "--towboot",
            tarx.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        "not a Tow-Boot release",
    );
    // A board file with an unknown key names file and line.
    let bf = dir.path().join("b.toml");
    std::fs::write(&bf, "name = \"x\"\ncolour = 1\n").unwrap();
    refused(
        &[
            "base",
            "--board",
            bf.to_str().unwrap(),
            "--from",
            s,
            "-o",
            o,
        ],
        &out,
        "b.toml:2",
    );
}

/// A one-shot-per-connection HTTP/1.1 server on 127.0.0.1 that serves
/// `body` at `/img`, honours `Range`, counts requests, and on the first
/// request drops the connection halfway through the body.
struct Server {
    port: u16,
    hits: Arc<AtomicUsize>,
}

fn serve(body: Vec<u8>, drop_first: bool) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { return };
            let n = h.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut from = 0usize;
            loop {
                let mut hl = String::new();
                if r.read_line(&mut hl).unwrap_or(0) == 0 || hl == "\r\n" {
                    break;
                }
                if let Some(v) = hl.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
                }
            }
            if path != "/img" {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let rest = &body[from..];
            let head = if from > 0 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                    rest.len(), body.len() - 1, body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    rest.len()
                )
            };
            let _ = s.write_all(head.as_bytes());
            if drop_first && n == 0 {
                let _ = s.write_all(&rest[..rest.len() / 2]);
                let _ = s.shutdown(std::net::Shutdown::Both);
                continue;
            }
            let _ = s.write_all(rest);
        }
    });
    Server { port, hits }
}

#[test]
fn downloads_resume_verify_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let src = os_support::rpios();
    let xz = dir.path().join("src.img.xz");
    tool(
        "sh",
        &[
            "-c",
            &format!("xz -T2 -1 -c {} > {}", src.display(), xz.display()),
        ],
    );
    let body = std::fs::read(&xz).unwrap();
    let sha = tool("sha256sum", &[xz.to_str().unwrap()])[..64].to_string();
    let cache = dir.path().join("cache");
    let c = cache.to_str().unwrap();
    let srv = serve(body.clone(), true);
    let url = format!("http://127.0.0.1:{}/img", srv.port);
    let out = dir.path().join("dl.img");
    ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        &url,
        "--sha256",
        &sha,
        "--cache-dir",
        c,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        srv.hits.load(Ordering::SeqCst) >= 2,
        "resumed after the dropped connection"
    );
    let direct = dir.path().join("direct.img");
    ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        xz.to_str().unwrap(),
        "-o",
        direct.to_str().unwrap(),
    ]);
    tool("cmp", &[out.to_str().unwrap(), direct.to_str().unwrap()]);
    // Cache hit: no request at all.
    let before = srv.hits.load(Ordering::SeqCst);
    let out2 = dir.path().join("dl2.img");
    let j = ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        &url,
        "--sha256",
        &sha,
        "--cache-dir",
        c,
        "--json",
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(srv.hits.load(Ordering::SeqCst), before);
    assert!(j.contains("cached copy"), "{j}");
    // Wrong hash: the download is deleted, nothing written.
    let out3 = dir.path().join("dl3.img");
    let wrong = "1".repeat(64);
    refused(
        &[
            "base",
            "--board",
            "rpi5",
            "--from",
            &url,
            "--sha256",
            &wrong,
            "--cache-dir",
            c,
            "-o",
            out3.to_str().unwrap(),
        ],
        &out3,
        "not the expected",
    );
    // Nothing is kept for the refused hash: no file, and no empty directory.
    let kept = Path::new(c).join(&wrong);
    assert!(!kept.exists(), "{} was left behind", kept.display());
    // 404.
    let url404 = format!("http://127.0.0.1:{}/missing", srv.port);
    refused(
        &[
            "base",
            "--board",
            "rpi5",
            "--from",
            &url404,
            "--sha256",
            &sha,
            "--cache-dir",
            c,
            "-o",
            out3.to_str().unwrap(),
        ],
        &out3,
        "404",
    );
    // A body that always stops short: given up after retries, nothing kept under the name.
    let short = serve_truncated(body);
    let urlt = format!("http://127.0.0.1:{}/img", short);
    let cache2 = dir.path().join("cache2");
    refused(
        &[
            "base",
            "--board",
            "rpi5",
            "--from",
            &urlt,
            "--sha256",
            &sha,
            "--cache-dir",
            cache2.to_str().unwrap(),
            "-o",
            out3.to_str().unwrap(),
        ],
        &out3,
        "127.0.0.1",
    );
}

/// Announces the full length but never sends the last byte, ignoring Range.
fn serve_truncated(body: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body[..body.len() - 1]);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    });
    port
}

/// `path target` of every symlink below `dir`, sorted.
fn links(dir: &Path) -> Vec<String> {
    let out = tool(
        "find",
        &[dir.to_str().unwrap(), "-type", "l", "-printf", "%P %l\n"],
    );
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn customisations_match_systemctl_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = os_support::rpios();
    let overlay = dir.path().join("overlay");
    std::fs::create_dir_all(overlay.join("etc/nodeimg")).unwrap();
    std::fs::write(overlay.join("etc/nodeimg/hello"), b"hi\n").unwrap();
    let out = dir.path().join("c.img");
    ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        src.to_str().unwrap(),
        "--enable",
        "NetworkManager.service",
        "--mask",
        "apt-daily.timer",
        "--cmdline-append",
        "cgroup_enable=memory",
        "--cmdline-append",
        "cgroup_memory=1",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--modules-load",
        "br_netfilter",
        "--ssh",
        "--overlay",
        overlay.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let boot = part_file(&out, 1, dir.path());
    let root = part_file(&out, 2, dir.path());
    fat_clean(&boot);
    e2fsck_clean(&root);
    let cmdline = mtype(&boot, "/cmdline.txt");
    assert_eq!(cmdline.trim_end().lines().count(), 1, "{cmdline}");
    assert!(cmdline.contains("root=PARTUUID=8a438930-02"), "{cmdline}");
    assert!(
        cmdline
            .trim_end()
            .ends_with("cgroup_enable=memory cgroup_memory=1"),
        "{cmdline}"
    );
    assert!(mtype(&boot, "/ssh").is_empty());
    assert!(
        debugfs(&root, "cat /etc/sysctl.d/90-nodeimg.conf").contains("net.ipv4.ip_forward = 1")
            || debugfs(&root, "cat /etc/sysctl.d/90-nodeimg.conf")
                .contains("net.ipv4.ip_forward=1")
    );
    assert!(debugfs(&root, "cat /etc/modules-load.d/nodeimg.conf").contains("br_netfilter"));
    assert_eq!(debugfs(&root, "cat /etc/nodeimg/hello"), "hi\n");
    let st = debugfs(&root, "stat /etc/nodeimg/hello");
    assert!(st.contains("User:     0   Group:     0"), "{st}");
    // The same enable/mask by systemctl on the tree the image was made from.
    let tree = dir.path().join("tree");
    tool(
        "cp",
        &[
            "-a",
            os_support::rpios_tree().to_str().unwrap(),
            tree.to_str().unwrap(),
        ],
    );
    let r = format!("--root={}", tree.display());
    tool(
        "systemctl",
        &[&r, "enable", "NetworkManager.service", "ssh.service"],
    );
    tool("systemctl", &[&r, "mask", "apt-daily.timer"]);
    let dumped = dir.path().join("dump");
    std::fs::create_dir(&dumped).unwrap();
    debugfs(
        &root,
        &format!("rdump /etc/systemd/system {}", dumped.display()),
    );
    assert_eq!(
        links(&dumped.join("system")),
        links(&tree.join("etc/systemd/system"))
    );
    // A unit that does not exist: refused by name, nothing written.
    let bad = dir.path().join("bad.img");
    refused(
        &[
            "base",
            "--board",
            "rpi5",
            "--from",
            src.to_str().unwrap(),
            "--enable",
            "nope.service",
            "-o",
            bad.to_str().unwrap(),
        ],
        &bad,
        "nope.service",
    );
}

/// The `sh` examples of docs/base.md, run as written on fixture inputs
/// named as in the page, with the page's cluster file.
#[test]
fn docs_examples_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sh = |c: &str| tool("sh", &["-c", c]);
    sh(&format!(
        "xz -T2 -1 -c {} > {}/raspios-trixie-arm64-lite.img.xz",
        os_support::rpios().display(),
        d.display()
    ));
    sh(&format!(
        "zstd -q -T2 -c {} > {}/nixos-sd-image.img.zst",
        os_support::nixos().display(),
        d.display()
    ));
    std::os::unix::fs::symlink(
        os_support::towboot_archive(),
        d.join("odroid-C4-2023.07-007.tar.xz"),
    )
    .unwrap();
    let page = std::fs::read_to_string(os_support::repo().join("docs/base.md")).unwrap();
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in page.lines() {
        match (&mut cur, line.strip_prefix("```")) {
            (None, Some(lang)) => cur = Some((lang.to_string(), String::new())),
            (Some(_), Some(_)) => blocks.push(cur.take().unwrap()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    let toml = &blocks.iter().find(|(l, _)| l == "toml").unwrap().1;
    std::fs::write(d.join("cluster.toml"), toml).unwrap();
    let mut ran = 0;
    for (_, text) in blocks.iter().filter(|(l, _)| l == "sh") {
        let cmd = text.replace("\\\n", " ");
        let words: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(words[0], "nodeimg");
        let o = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
            .args(&words[1..])
            .current_dir(d)
            .env("SOURCE_DATE_EPOCH", SDE)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = words[words.iter().position(|w| *w == "-o").unwrap() + 1];
        let img = d.join(out);
        let t = sfdisk(&img);
        let root_n = t["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .position(|p| p["type"] == "83")
            .unwrap()
            + 1;
        e2fsck_clean(&part_file(&img, root_n, d));
        assert!(d.join(format!("{out}.json")).exists());
        ran += 1;
    }
    assert_eq!(
        ran, 3,
        "the page has one example per board and the cluster file"
    );
    assert!(d.join("base.img.bmap").exists());
    assert!(d.join("cluster-base.img.zst").exists());
    assert_eq!(
        std::fs::metadata(d.join("cluster-base.img")).unwrap().len(),
        1 << 30
    );
}

/// Detaches a loop device and unmounts a mount point even when a test fails.
struct LoopMount {
    dev: String,
    dir: PathBuf,
    mounted: bool,
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A real Debian arm64 root (mmdebstrap, with linux-image-arm64), cached
/// under the target directory; `None` with the reason when it cannot be made.
fn debian_rootfs() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-c4-v2");
    let tar = dir.join("rootfs.tar");
    if tar.exists() {
        return Ok(tar);
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let o = Command::new("bash")
        .arg(os_support::repo().join("fixtures/make-debian-rootfs.sh"))
        .arg(&tar)
        .env(
            "PACKAGES",
            "base-files,base-passwd,bash,coreutils,systemd,systemd-sysv,udev,openssh-server,iproute2,sudo,ca-certificates,kmod,linux-image-arm64",
        )
        .output()
        .map_err(|e| format!("mmdebstrap: {e}"))?;
    if !o.status.success() || !tar.exists() {
        return Err(format!(
            "make-debian-rootfs.sh failed (no network to Debian's archive?): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    Ok(tar)
}

#[test]
fn debian_arm64_tree_boots_layout_on_odroid_c4() {
    let tar = match debian_rootfs() {
        Ok(t) => t,
        Err(why) => {
            os_support::skip("debian_arm64_tree_boots_layout_on_odroid_c4", &why);
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("debian.img");
    ok(&[
        "base",
        "--board",
        "odroid-c4",
        "--from",
        tar.to_str().unwrap(),
        "--towboot",
        os_support::towboot_archive().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let t = sfdisk(&out);
    let id = t["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x")
        .to_string();
    let parts = t["partitions"].as_array().unwrap();
    assert!(parts.iter().any(|p| p["type"] == "f8"));
    let root = &parts[0];
    assert_eq!(root["type"], "83");
    let root_file = part_file(&out, 1, dir.path());
    e2fsck_clean(&root_file);
    let conf = debugfs(&root_file, "cat /boot/extlinux/extlinux.conf");
    assert!(conf.contains("LINUX /boot/vmlinuz-"), "{conf}");
    assert!(conf.contains("FDTDIR /usr/lib/linux-image-"), "{conf}");
    assert!(conf.contains(&format!("root=PARTUUID={id}-01")), "{conf}");
    // The kernel mounts the root read-only and sees the tree.
    let (start, size) = (
        root["start"].as_u64().unwrap() * 512,
        root["size"].as_u64().unwrap() * 512,
    );
    let o = Command::new("losetup")
        .args([
            "--find",
            "--show",
            "--read-only",
            "--offset",
            &start.to_string(),
            "--sizelimit",
            &size.to_string(),
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    if !o.status.success() {
        os_support::skip(
            "debian_arm64_tree_boots_layout_on_odroid_c4 (kernel mount)",
            &format!("losetup: {}", String::from_utf8_lossy(&o.stderr)),
        );
        return;
    }
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut guard = LoopMount {
        dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        dir: mnt.clone(),
        mounted: false,
    };
    tool(
        "mount",
        &["-t", "ext4", "-o", "ro", &guard.dev, mnt.to_str().unwrap()],
    );
    guard.mounted = true;
    let rel = std::fs::read_to_string(mnt.join("etc/os-release")).unwrap();
    assert!(rel.contains("ID=debian"), "{rel}");
    assert!(mnt.join("usr/bin/systemctl").exists() || mnt.join("bin/systemctl").exists());
    let fstab = std::fs::read_to_string(mnt.join("etc/fstab")).unwrap();
    assert!(
        fstab.contains(&format!("PARTUUID={id}-01  /  ext4")),
        "{fstab}"
    );
    let keys: Vec<_> = std::fs::read_dir(mnt.join("etc/ssh"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !keys
            .iter()
            .any(|k| k.to_string_lossy().starts_with("ssh_host_")),
        "{keys:?}"
    );
}

#[test]
fn firmware_files_are_laid_over_the_boot_partition() {
    let dir = tempfile::tempdir().unwrap();
    let fw = dir.path().join("fw");
    std::fs::create_dir_all(fw.join("overlays")).unwrap();
    std::fs::write(fw.join("config.txt"), b"[all]\nkernel=kernel_custom.img\n").unwrap();
    std::fs::write(fw.join("kernel_custom.img"), vec![0x4bu8; 100_000]).unwrap();
    std::fs::write(fw.join("overlays/extra.dtbo"), b"dtbo").unwrap();
    let src = os_support::rpios();
    let out = dir.path().join("fw.img");
    ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        src.to_str().unwrap(),
        "--firmware",
        fw.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let boot = part_file(&out, 1, dir.path());
    fat_clean(&boot);
    assert_eq!(
        mtype(&boot, "/config.txt"),
        "[all]\nkernel=kernel_custom.img\n"
    );
    assert_eq!(mtype(&boot, "/overlays/extra.dtbo"), "dtbo");
    assert_eq!(mtype(&boot, "/kernel_custom.img").len(), 100_000);
    // A config.txt naming a kernel that is not there is refused by name.
    std::fs::remove_file(fw.join("kernel_custom.img")).unwrap();
    let bad = dir.path().join("bad.img");
    refused(
        &[
            "base",
            "--board",
            "rpi5",
            "--from",
            src.to_str().unwrap(),
            "--firmware",
            fw.to_str().unwrap(),
            "-o",
            bad.to_str().unwrap(),
        ],
        &bad,
        "kernel_custom.img",
    );
}

/// `xz` of `raw` with extra arguments, into `dir/name`.
fn xz_of(raw: &Path, dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let o = Command::new("xz")
        .args(args)
        .args(["-c", "-1"])
        .arg(raw)
        .output()
        .expect("xz (Debian package xz-utils)");
    assert!(o.status.success(), "xz {args:?}");
    std::fs::write(&out, o.stdout).unwrap();
    out
}

/// What is in `dir` besides `keep`: no temporary or half-written file.
fn leftovers(dir: &Path, keep: &[&Path]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !keep.contains(&p.as_path()))
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
fn multi_and_single_block_xz_give_the_same_base_in_one_pass() {
    // One pass decodes, customises, hashes, compresses and maps: the
    // outputs must not depend on how the source was cut into xz blocks (a
    // threaded decode for pi-gen's multi-block streams, one thread for a
    // single block), and must be what the oracles read in the files.
    let dir = tempfile::tempdir().unwrap();
    let raw = os_support::rpios();
    let multi = xz_of(
        &raw,
        dir.path(),
        "multi.img.xz",
        &["-T2", "--block-size=1MiB"],
    );
    let single = xz_of(&raw, dir.path(), "single.img.xz", &["-T1"]);
    let blocks = tool("xz", &["--robot", "-l", multi.to_str().unwrap()]);
    assert!(
        blocks
            .lines()
            .any(|l| l.starts_with("totals") && l.split('\t').nth(2).is_some_and(|b| b != "1")),
        "the multi-block source has one block: {blocks}"
    );
    let mut outs = Vec::new();
    for (src, name) in [(&multi, "m.img"), (&single, "s.img"), (&raw, "r.img")] {
        let out = dir.path().join(name);
        ok(&[
            "base",
            "--board",
            "rpi5",
            "--from",
            src.to_str().unwrap(),
            "--enable",
            "ssh.service",
            "--cmdline-append",
            "cgroup_memory=1",
            "--zstd",
            "--bmap",
            "-o",
            out.to_str().unwrap(),
        ]);
        outs.push(out);
    }
    let o = outs[0].to_str().unwrap();
    for other in &outs[1..] {
        tool("cmp", &[o, other.to_str().unwrap()]);
        let (a, b) = (
            std::fs::read(format!("{o}.bmap")).unwrap(),
            std::fs::read(format!("{}.bmap", other.display())).unwrap(),
        );
        assert!(a == b, "bmaps differ");
    }
    // The manifest's hash is sha256sum's, of the image and of the zstd
    // copy decompressed; the zstd copy is the image.
    let m = manifest(&outs[0]);
    let sha = tool("sha256sum", &[o]);
    assert_eq!(m["image"]["sha256"].as_str().unwrap(), &sha[..64]);
    let unz = dir.path().join("unz.img");
    tool(
        "zstd",
        &["-q", "-d", &format!("{o}.zst"), "-o", unz.to_str().unwrap()],
    );
    tool("cmp", &[o, unz.to_str().unwrap()]);
    // The customisations are in it, and the filesystems are clean.
    let root = part_file(&outs[0], 2, dir.path());
    e2fsck_clean(&root);
    let boot = part_file(&outs[0], 1, dir.path());
    fat_clean(&boot);
    assert!(mtype(&boot, "/cmdline.txt").contains("cgroup_memory=1"));
    let wants = debugfs(&root, "ls -l /etc/systemd/system/multi-user.target.wants");
    assert!(wants.contains("ssh.service"), "{wants}");
    // bmaptool checks every range's SHA-256 against the image.
    let card = dir.path().join("card.img");
    tool(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            &format!("{o}.bmap"),
            o,
            card.to_str().unwrap(),
        ],
    );
    // Holes stay holes: the output is sparse.
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&outs[0]).unwrap();
    assert!(md.blocks() * 512 < md.len() / 2, "not sparse");
}

#[test]
fn corrupt_or_cut_xz_mid_stream_leaves_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let raw = os_support::rpios();
    let good = xz_of(
        &raw,
        dir.path(),
        "good.img.xz",
        &["-T2", "--block-size=1MiB"],
    );
    let bytes = std::fs::read(&good).unwrap();
    // A flipped byte in the middle of the compressed data (the index at the
    // end still records the size, so the one pass starts), and a download
    // cut in the middle (no index: the size is unknown).
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    let flipped_p = dir.path().join("flipped.img.xz");
    std::fs::write(&flipped_p, &flipped).unwrap();
    let cut_p = dir.path().join("cut.img.xz");
    std::fs::write(&cut_p, &bytes[..bytes.len() / 2]).unwrap();
    let keep = [good.as_path(), flipped_p.as_path(), cut_p.as_path()];
    for src in [&flipped_p, &cut_p] {
        let out = dir.path().join("o.img");
        let o = nodeimg(&[
            "base",
            "--board",
            "rpi5",
            "--from",
            src.to_str().unwrap(),
            "--zstd",
            "--bmap",
            "-o",
            out.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{} was accepted", src.display());
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(src.file_name().unwrap().to_str().unwrap()),
            "the message names the source: {err}"
        );
        assert_eq!(leftovers(dir.path(), &keep), Vec::<String>::new());
    }
}

/// A filesystem image mounted read-write through a loop device
/// (`mount -o loop`: the device clears itself at the unmount), unmounted
/// in `Drop`, also when the test fails halfway.
struct LoopMounted(PathBuf);

impl LoopMounted {
    fn new(image: &Path, fstype: &str, at: &Path) -> LoopMounted {
        std::fs::create_dir_all(at).unwrap();
        tool(
            "mount",
            &[
                "-t",
                fstype,
                "-o",
                "loop",
                image.to_str().unwrap(),
                at.to_str().unwrap(),
            ],
        );
        LoopMounted(at.to_path_buf())
    }
}

impl Drop for LoopMounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// On a filesystem that shares blocks between files (XFS with reflink), a
/// raw source is cloned into the output instead of copied: the kernel
/// reports the output's extents as shared (`filefrag`'s FIEMAP flag), and
/// the image is byte for byte the one a copy on ext4 gives.
#[test]
fn a_raw_source_on_a_reflink_filesystem_is_cloned_not_copied() {
    let name = "a_raw_source_on_a_reflink_filesystem_is_cloned_not_copied";
    let why = if !nix::unistd::geteuid().is_root() {
        Some("needs root (a loop-mounted XFS)".to_string())
    } else if Command::new("mkfs.xfs").arg("-V").output().is_err() {
        Some("needs mkfs.xfs (apt-get install xfsprogs)".to_string())
    } else if !std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("xfs")) {
        Some("the kernel has no XFS (modprobe xfs)".to_string())
    } else {
        None
    };
    if let Some(why) = why {
        os_support::skip(name, &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = os_support::rpios();
    let reference = dir.path().join("copied.img");
    ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        src.to_str().unwrap(),
        "--timezone",
        "Europe/Berlin",
        "-o",
        reference.to_str().unwrap(),
    ]);

    let fs_image = dir.path().join("xfs.img");
    std::fs::File::create(&fs_image)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    tool(
        "mkfs.xfs",
        &["-q", "-m", "reflink=1", fs_image.to_str().unwrap()],
    );
    let mnt = LoopMounted::new(&fs_image, "xfs", &dir.path().join("mnt"));
    let on_xfs = mnt.0.join("source.img");
    tool(
        "cp",
        &[
            "--sparse=always",
            src.to_str().unwrap(),
            on_xfs.to_str().unwrap(),
        ],
    );
    let out = mnt.0.join("base.img");
    let summary = ok(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        on_xfs.to_str().unwrap(),
        "--timezone",
        "Europe/Berlin",
        "--json",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(summary.contains("shares its blocks (reflink)"), "{summary}");
    tool("cmp", &[reference.to_str().unwrap(), out.to_str().unwrap()]);
    let extents = tool("filefrag", &["-v", out.to_str().unwrap()]);
    assert!(extents.contains("shared"), "no shared extent:\n{extents}");
    // The source is untouched by the customisation written over the clone.
    tool("cmp", &[src.to_str().unwrap(), on_xfs.to_str().unwrap()]);
}
