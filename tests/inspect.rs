//! `nodeimg inspect` against independent oracles: `sfdisk --json` for the
//! tables, mtools for FAT, `dumpe2fs -h` for ext4; on raw, compressed and
//! bare images; and bad input (truncated, overlapping, lying boot sectors).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/demo-rpi5.img.zst");
const MIB: u64 = 1 << 20;

fn nodeimg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .output()
        .unwrap()
}

fn inspect_json(path: &Path) -> Value {
    let out = nodeimg(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "inspect {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `inspect` expecting failure: exit 1, one stderr line, no panic.
fn inspect_fails(path: &Path) -> String {
    let out = nodeimg(&["inspect", path.to_str().unwrap()]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        matches!(out.status.code(), Some(1 | 3 | 4 | 5)),
        "a failure exit (1, 3, 4, 5; src/exit.rs), got {:?}: {}",
        out.status.code(),
        err
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    err
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

fn unpack_demo(dir: &Path) -> PathBuf {
    let img = dir.join("demo.img");
    sh(Command::new("zstd")
        .args(["-q", "-d", "-f", DEMO, "-o"])
        .arg(&img));
    img
}

/// Copies `len` bytes at `off` of `img` into a new file (for tools without
/// an offset option).
fn extract(img: &Path, off: u64, len: u64, to: &Path) {
    let data = std::fs::read(img).unwrap();
    std::fs::write(to, &data[off as usize..(off + len) as usize]).unwrap();
}

fn dumpe2fs(dev: &Path) -> std::collections::HashMap<String, String> {
    sh(Command::new("dumpe2fs").arg("-h").arg(dev))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn demo_image_agrees_with_sfdisk_mtools_and_dumpe2fs() {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_demo(dir.path());
    let r = inspect_json(&img);

    let sf: Value =
        serde_json::from_str(&sh(Command::new("sfdisk").arg("--json").arg(&img))).unwrap();
    let sf = &sf["partitiontable"];
    assert_eq!(r["scheme"], "mbr");
    assert_eq!(sf["label"], "dos");
    assert_eq!(
        format!("0x{}", r["disk_id"].as_str().unwrap()),
        sf["id"].as_str().unwrap()
    );
    let parts = r["partitions"].as_array().unwrap();
    let sparts = sf["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), sparts.len());
    for (p, s) in parts.iter().zip(sparts) {
        assert_eq!(
            p["start"].as_u64().unwrap(),
            s["start"].as_u64().unwrap() * 512
        );
        assert_eq!(
            p["size"].as_u64().unwrap(),
            s["size"].as_u64().unwrap() * 512
        );
        assert_eq!(
            p["type"].as_str().unwrap(),
            format!("0x{:0>2}", s["type"].as_str().unwrap())
        );
        assert_eq!(
            p["bootable"].as_bool().unwrap(),
            s["bootable"].as_bool().unwrap_or(false)
        );
    }
    assert_eq!(r["gap"]["nonzero"], false);
    assert_eq!(r["gap"]["start"], 512);
    assert_eq!(r["gap"]["end"], 4 * MIB);

    // FAT: label, serial and free bytes as mtools sees them.
    let fat = &parts[0]["filesystem"];
    assert_eq!(fat["type"], "fat");
    assert_eq!(fat["fat_type"], "fat32");
    assert_eq!(fat["label"], "bootfs");
    let mdir = sh(Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", img.display(), 4 * MIB))
        .arg("::/"));
    assert!(mdir.contains("Volume in drive : is bootfs"), "{mdir}");
    assert!(
        mdir.contains(&format!(
            "Serial Number is {}",
            fat["volume_id"].as_str().unwrap()
        )),
        "{mdir}"
    );
    let free: String = mdir
        .lines()
        .find(|l| l.contains("bytes free"))
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert_eq!(
        fat["free"].as_u64().unwrap(),
        free.parse::<u64>().unwrap(),
        "{mdir}"
    );

    // ext4: the superblock as dumpe2fs reads it.
    let ext = &parts[1]["filesystem"];
    let part2 = dir.path().join("p2.img");
    extract(
        &img,
        parts[1]["start"].as_u64().unwrap(),
        parts[1]["size"].as_u64().unwrap(),
        &part2,
    );
    let d = dumpe2fs(&part2);
    assert_eq!(ext["type"], "ext");
    assert_eq!(ext["version"], "ext4");
    assert_eq!(ext["uuid"].as_str().unwrap(), d["Filesystem UUID"]);
    assert_eq!(ext["label"].as_str().unwrap(), d["Filesystem volume name"]);
    assert_eq!(ext["block_size"].to_string(), d["Block size"]);
    assert_eq!(ext["blocks"].to_string(), d["Block count"]);
    assert_eq!(ext["free_blocks"].to_string(), d["Free blocks"]);
    assert_eq!(ext["free_inodes"].to_string(), d["Free inodes"]);
    let mut ours: Vec<&str> = ext["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let mut theirs: Vec<&str> = d["Filesystem features"].split_whitespace().collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
    assert_eq!(ext["clean"], d["Filesystem state"] == "clean");
}

#[test]
fn compressed_images_report_the_same_without_a_temp_copy() {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_demo(dir.path());
    let mut raw = inspect_json(&img);
    let mut zst = inspect_json(Path::new(DEMO));
    assert_eq!(zst["compression"], "zstd");
    assert_eq!(zst["size"], raw["size"]);
    sh(Command::new("xz").args(["-1", "-T1", "-k", "-f"]).arg(&img));
    sh(Command::new("gzip").args(["-1", "-k", "-f"]).arg(&img));
    let mut xz = inspect_json(&dir.path().join("demo.img.xz"));
    let mut gz = inspect_json(&dir.path().join("demo.img.gz"));
    assert_eq!(xz["compression"], "xz");
    assert_eq!(gz["compression"], "gzip");
    for r in [&mut raw, &mut zst, &mut xz, &mut gz] {
        let o = r.as_object_mut().unwrap();
        for k in ["image", "compression", "file_size"] {
            o.remove(k);
        }
    }
    assert_eq!(zst, raw);
    assert_eq!(xz, raw);
    assert_eq!(gz, raw);
    // Nothing was unpacked next to the inputs.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn bare_filesystem_images() {
    let dir = tempfile::tempdir().unwrap();
    let fat = dir.path().join("fat16.img");
    sh(Command::new("truncate").args(["-s", "20M"]).arg(&fat));
    sh(Command::new("mkfs.vfat")
        .args(["-F", "16", "-n", "SPARE", "-i", "0badcafe"])
        .arg(&fat));
    let r = inspect_json(&fat);
    assert_eq!(r["scheme"], "none");
    assert_eq!(r["partitions"].as_array().unwrap().len(), 0);
    assert_eq!(r["filesystem"]["fat_type"], "fat16");
    assert_eq!(r["filesystem"]["label"], "SPARE");
    assert_eq!(r["filesystem"]["volume_id"], "0BAD-CAFE");

    let ext = dir.path().join("ext2.img");
    sh(Command::new("truncate").args(["-s", "8M"]).arg(&ext));
    sh(Command::new("mkfs.ext2")
        .args([
            "-q",
            "-L",
            "data",
            "-U",
            "01234567-89ab-cdef-0123-456789abcdef",
        ])
        .arg(&ext));
    let r = inspect_json(&ext);
    assert_eq!(r["filesystem"]["version"], "ext2");
    assert_eq!(
        r["filesystem"]["uuid"],
        "01234567-89ab-cdef-0123-456789abcdef"
    );
    let d = dumpe2fs(&ext);
    assert_eq!(r["filesystem"]["blocks"].to_string(), d["Block count"]);
    sh(Command::new("zstd").args(["-q", "-k"]).arg(&ext));
    let z = inspect_json(&dir.path().join("ext2.img.zst"));
    assert_eq!(z["filesystem"], r["filesystem"]);
}

#[test]
fn gpt_names_guids_and_firmware_in_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("gpt.img");
    sh(Command::new("truncate").args(["-s", "16M"]).arg(&img));
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread"])
        .arg(&img)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\nstart=8M, size=4M, type=U, name=\"esp\", uuid=11111111-2222-4333-8444-555555555555\nstart=12M, type=L, name=\"root\"\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    // Firmware-like bytes at 1 MiB, inside the gap.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"TOW-BOOT", MIB).unwrap();
    let r = inspect_json(&img);
    assert_eq!(r["scheme"], "gpt");
    let p1 = &r["partitions"][0];
    assert_eq!(p1["name"], "esp");
    assert_eq!(p1["guid"], "11111111-2222-4333-8444-555555555555");
    assert_eq!(p1["type_name"], "EFI System");
    assert_eq!(p1["filesystem"]["type"], "unknown");
    assert_eq!(r["partitions"][1]["name"], "root");
    assert_eq!(r["gap"]["start"], 512 * 34);
    assert_eq!(r["gap"]["end"], 8 * MIB);
    assert_eq!(r["gap"]["nonzero"], true);
    assert_eq!(r["gap"]["first_nonzero"], MIB);
}

#[test]
fn bad_images_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_demo(dir.path());

    let missing = dir.path().join("missing.img");
    let err = inspect_fails(&missing);
    assert!(err.contains("No such file"), "{err}");

    // Truncated raw: partition 2 now ends past the end.
    let cut = dir.path().join("cut.img");
    extract(&img, 0, 50 * MIB, &cut);
    let err = inspect_fails(&cut);
    assert!(
        err.contains("MBR partition 2") && err.contains("past the end"),
        "{err}"
    );
    // The same truncation, compressed: found while streaming.
    sh(Command::new("zstd").args(["-q", "-k"]).arg(&cut));
    let err = inspect_fails(&dir.path().join("cut.img.zst"));
    assert!(
        err.contains("MBR partition 2") && err.contains("past the end"),
        "{err}"
    );
    // A damaged compressed stream.
    let mut z = std::fs::read(DEMO).unwrap();
    let n = z.len();
    z.truncate(n - 100);
    let bad = dir.path().join("bad.img.zst");
    std::fs::write(&bad, &z).unwrap();
    let err = inspect_fails(&bad);
    assert!(err.contains("corrupt or truncated zstd data"), "{err}");

    // Overlapping partitions.
    let ovl = dir.path().join("ovl.img");
    std::fs::copy(&img, &ovl).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&ovl).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&(20 * 2048u32).to_le_bytes(), 446 + 16 + 8)
        .unwrap();
    let err = inspect_fails(&ovl);
    assert!(
        err.contains("partitions 1 and 2") && err.contains("overlap"),
        "{err}"
    );

    // A FAT boot sector that claims more sectors than its partition has.
    let liar = dir.path().join("liar.img");
    std::fs::copy(&img, &liar).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&liar).unwrap();
    f.write_all_at(&(1u32 << 24).to_le_bytes(), 4 * MIB + 32)
        .unwrap();
    let err = inspect_fails(&liar);
    assert!(
        err.contains("FAT filesystem in partition 1") && err.contains("claims"),
        "{err}"
    );

    // A GPT whose header CRC no longer matches.
    let gpt = dir.path().join("gpt.img");
    sh(Command::new("truncate").args(["-s", "8M"]).arg(&gpt));
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread"])
        .arg(&gpt)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"label: gpt\ntype=L\n").unwrap();
    assert!(child.wait().unwrap().success());
    let f = std::fs::OpenOptions::new().write(true).open(&gpt).unwrap();
    f.write_all_at(b"\xff", 512 + 60).unwrap();
    let err = inspect_fails(&gpt);
    assert!(
        err.contains("GPT header") && err.contains("CRC32 mismatch"),
        "{err}"
    );

    // A bare ext4 image cut short.
    let ext = dir.path().join("short-ext.img");
    extract(&img, 40 * MIB, 8 * MIB, &ext);
    let err = inspect_fails(&ext);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn logical_partitions_in_a_compressed_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dos.img");
    sh(Command::new("truncate").args(["-s", "24M"]).arg(&img));
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread"])
        .arg(&img)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // The EBRs lie beyond partition 1, so a forward reader must go back.
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"label: dos\nstart=1M, size=8M, type=e\nstart=9M, type=5\nstart=10M, size=4M, type=83\nstart=15M, type=6\n",
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let put = |fs: &Path, at_mib: u64| {
        let data = std::fs::read(fs).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &data, at_mib * MIB).unwrap();
    };
    let p1 = dir.path().join("p1");
    sh(Command::new("truncate").args(["-s", "8M"]).arg(&p1));
    sh(Command::new("mkfs.vfat").args(["-n", "FIRST"]).arg(&p1));
    put(&p1, 1);
    let p5 = dir.path().join("p5");
    sh(Command::new("truncate").args(["-s", "4M"]).arg(&p5));
    sh(Command::new("mkfs.ext2")
        .args(["-q", "-L", "logical"])
        .arg(&p5));
    put(&p5, 10);
    let raw = inspect_json(&img);
    let kinds: Vec<(u64, &str)> = raw["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["number"].as_u64().unwrap(),
                p["filesystem"]["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [(1, "fat"), (2, "extended"), (5, "ext"), (6, "unknown")]
    );
    sh(Command::new("zstd").args(["-q", "-k"]).arg(&img));
    let mut z = inspect_json(&dir.path().join("dos.img.zst"));
    let mut raw = raw;
    for r in [&mut raw, &mut z] {
        let o = r.as_object_mut().unwrap();
        for k in ["image", "compression", "file_size"] {
            o.remove(k);
        }
    }
    assert_eq!(z, raw);
}
