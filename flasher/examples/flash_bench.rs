//! Benchmark of `nodeimg flash` against `dd` and `bmaptool copy`, on the same
//! loop device, for an image of which about a quarter is used (a real ext4
//! filesystem with files in it), raw and compressed (`.xz`, `.zst`: nodeimg
//! without a bmap against `xz -dc | dd` and `bmaptool copy` with one), and
//! the physical floor: the used bytes divided by the device's sequential
//! write rate, measured in the same run. Not a test: run it by hand, as root:
//!
//! ```text
//! cargo build --release --bin nodeimg
//! cargo run --release -p flasher --example flash_bench -- [SIZE_GIB] [WORK_DIR]
//! ```
//!
//! SIZE_GIB defaults to 4, WORK_DIR to /var/tmp (it must be a real disk, not
//! tmpfs: it holds the image and the loop device's backing file). Every run
//! gets a fresh sparse backing file and loop device, the image is in the page
//! cache for all of them (read once before the first run), and each tool is
//! timed until its data is flushed to the loop device. Each command runs
//! twice; the best time counts.
//!
//! A loop device over the page cache is as fast as memory, so its "floor"
//! says little. A second table repeats the verified flashes on a loop device
//! throttled to an SD card's rates (write 50 MB/s, read 90 MB/s) by the
//! block-I/O controller (cgroup v1 `blkio.throttle.*` of the root group,
//! where this process runs), with the floor measured on that device: there
//! the write (and read-back) rate, not the CPU, bounds every tool. Where that
//! controller is not available (cgroup v2 only, or a non-root blkio group)
//! the table is skipped, and the bench says why.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic incompressible bytes (xorshift), so nothing is sparse by accident.
fn fill(buf: &mut [u8], seed: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let b = seed.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn make_image(dir: &Path, size_gib: u64) -> PathBuf {
    let img = dir.join("bench.img");
    let size = size_gib << 30;
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", img.to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\n2048,,83\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    // A quarter of the image in files: big ones, and a tree of small ones.
    let tree = dir.join("tree");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 8 << 20];
    let target = size / 4 - (64 << 20);
    let mut written = 0u64;
    let mut i = 0;
    while written < target {
        let sub = tree.join(format!("d{:02}", i % 16));
        std::fs::create_dir_all(&sub).unwrap();
        let len = if i % 4 == 0 { 64 << 10 } else { buf.len() };
        fill(&mut buf[..len], &mut seed);
        std::fs::write(sub.join(format!("f{i:05}")), &buf[..len]).unwrap();
        written += len as u64;
        i += 1;
    }
    let part_size = format!("{}k", (size - (1 << 20)) >> 10);
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "offset=1048576",
            "-d",
            tree.to_str().unwrap(),
            img.to_str().unwrap(),
            &part_size,
        ],
    );
    std::fs::remove_dir_all(&tree).unwrap();
    img
}

struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Bytes per second a throttled device accepts: write, read (an SD card's).
const CARD_RATES: (u64, u64) = (50_000_000, 90_000_000);
/// cgroup v1 throttle files of the root blkio group.
const BLKIO: &str = "/sys/fs/cgroup/blkio";

/// Why devices cannot be throttled here, or None when they can.
fn throttle_unavailable() -> Option<String> {
    let file = Path::new(BLKIO).join("blkio.throttle.write_bps_device");
    if !file.exists() {
        return Some(format!(
            "{} does not exist (no cgroup v1 blkio controller; cgroup v2 io.max is not used by this bench)",
            file.display()
        ));
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let in_root = own
        .lines()
        .any(|l| l.split(':').nth(1) == Some("blkio") && l.ends_with(":/"));
    if !in_root {
        return Some("this process is not in the root blkio cgroup".into());
    }
    None
}

/// A write/read limit on one device; removed on drop (even on panic), before
/// the loop device is detached and its number reused.
struct Throttle(String);

impl Throttle {
    fn set(dev: &str, (write, read): (u64, u64)) -> Throttle {
        let majmin = run("lsblk", &["-dno", "MAJ:MIN", dev]).trim().to_string();
        let t = Throttle(majmin);
        t.write("write", write);
        t.write("read", read);
        t
    }

    fn write(&self, dir: &str, bps: u64) {
        let file = Path::new(BLKIO).join(format!("blkio.throttle.{dir}_bps_device"));
        std::fs::write(&file, format!("{} {bps}", self.0))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        for dir in ["write", "read"] {
            let file = Path::new(BLKIO).join(format!("blkio.throttle.{dir}_bps_device"));
            let _ = std::fs::write(file, format!("{} 0", self.0));
        }
    }
}

/// Times `cmd` (with `{dev}` replaced) against a fresh loop device.
fn time_on_fresh_device(dir: &Path, size: u64, cmd: &[String]) -> f64 {
    time_on_device(dir, size, cmd, None)
}

/// Times `cmd` against a fresh loop device, limited to `rates` if given.
fn time_on_device(dir: &Path, size: u64, cmd: &[String], rates: Option<(u64, u64)>) -> f64 {
    let backing = dir.join("card");
    let _ = std::fs::remove_file(&backing);
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(size)
        .unwrap();
    let dev = Loop(
        run("losetup", &["--find", "--show", backing.to_str().unwrap()])
            .trim()
            .to_string(),
    );
    let throttle = rates.map(|r| Throttle::set(&dev.0, r));
    let args: Vec<String> = cmd[1..]
        .iter()
        .map(|a| a.replace("{dev}", &dev.0))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    run(&cmd[0], &args);
    let secs = t0.elapsed().as_secs_f64();
    drop(throttle);
    drop(dev);
    std::fs::remove_file(&backing).unwrap();
    secs
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let size_gib: u64 = argv
        .next()
        .map_or(4, |s| s.parse().expect("SIZE_GIB is a number"));
    let base = PathBuf::from(argv.next().unwrap_or_else(|| "/var/tmp".into()));
    let nodeimg = std::env::var("NODEIMG").unwrap_or_else(|_| {
        let exe = std::env::current_exe().unwrap();
        // target/release/examples/flash_bench → target/release/nodeimg
        exe.parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("nodeimg")
            .display()
            .to_string()
    });
    assert!(
        Path::new(&nodeimg).exists(),
        "build nodeimg first: cargo build --release --bin nodeimg"
    );
    let dir = tempfile::Builder::new()
        .prefix("flash-bench")
        .tempdir_in(&base)
        .unwrap();
    let d = dir.path();
    eprintln!(
        "building a {size_gib} GiB image with ~{} GiB of files in {}",
        size_gib as f64 / 4.0,
        d.display()
    );
    let img = make_image(d, size_gib);
    let img_s = img.to_str().unwrap().to_string();
    let t0 = Instant::now();
    let bmap = d.join("bench.bmap");
    run(
        "bmaptool",
        &["create", "-o", bmap.to_str().unwrap(), &img_s],
    );
    let bmap_create = t0.elapsed().as_secs_f64();
    let bmap_s = bmap.to_str().unwrap().to_string();
    // Warm the page cache with the image for every contender alike.
    run("cat", &[&img_s, "/dev/null"]);
    let size = size_gib << 30;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let contenders: Vec<(&str, Vec<String>)> = vec![
        (
            "nodeimg flash (verify)",
            s(&[
                &nodeimg,
                "flash",
                &img_s,
                "--device",
                "{dev}",
                "--allow-fixed",
                "--yes",
                "--json",
            ]),
        ),
        (
            "nodeimg flash --no-verify",
            s(&[
                &nodeimg,
                "flash",
                &img_s,
                "--device",
                "{dev}",
                "--allow-fixed",
                "--yes",
                "--json",
                "--no-verify",
            ]),
        ),
        (
            "dd bs=4M oflag=direct conv=fsync",
            s(&[
                "dd",
                &format!("if={img_s}"),
                "of={dev}",
                "bs=4M",
                "oflag=direct",
                "conv=fsync",
                "status=none",
            ]),
        ),
        (
            "bmaptool copy --bmap",
            s(&["bmaptool", "-q", "copy", "--bmap", &bmap_s, &img_s, "{dev}"]),
        ),
        (
            "bmaptool copy --bmap --no-verify",
            s(&[
                "bmaptool",
                "-q",
                "copy",
                "--no-verify",
                "--bmap",
                &bmap_s,
                &img_s,
                "{dev}",
            ]),
        ),
    ];
    // Compressed copies of the same image, as they are published.
    let xz = format!("{img_s}.xz");
    let zst = format!("{img_s}.zst");
    let t0 = Instant::now();
    run("xz", &["-T2", "-0", "-k", &img_s]);
    run("zstd", &["-q", "-T2", "-k", &img_s, "-o", &zst]);
    eprintln!(
        "compressing took {:.1} s (not counted)",
        t0.elapsed().as_secs_f64()
    );
    run("cat", &[&xz, &zst, "/dev/null"]);
    let mut compressed: Vec<(String, Vec<String>)> = Vec::new();
    for (file, decompress) in [(&xz, "xz -dc"), (&zst, "zstd -dc")] {
        let ext = file.rsplit('.').next().unwrap();
        compressed.push((
            format!("nodeimg flash .{ext} (verify)"),
            s(&[
                &nodeimg,
                "flash",
                file,
                "--device",
                "{dev}",
                "--allow-fixed",
                "--yes",
                "--json",
                "--no-bmap",
            ]),
        ));
        compressed.push((
            format!("nodeimg flash .{ext} --bmap (verify)"),
            s(&[
                &nodeimg,
                "flash",
                file,
                "--bmap",
                &bmap_s,
                "--device",
                "{dev}",
                "--allow-fixed",
                "--yes",
                "--json",
            ]),
        ));
        compressed.push((
            format!("{decompress} | dd"),
            s(&[
                "sh",
                "-c",
                &format!(
                    "{decompress} {file} | dd of={{dev}} bs=4M iflag=fullblock oflag=direct conv=fsync status=none"
                ),
            ]),
        ));
        compressed.push((
            format!("bmaptool copy --bmap .{ext}"),
            s(&["bmaptool", "-q", "copy", "--bmap", &bmap_s, file, "{dev}"]),
        ));
    }
    let mut results = Vec::new();
    for (name, cmd) in &contenders {
        let best = (0..2)
            .map(|_| time_on_fresh_device(d, size, cmd))
            .fold(f64::INFINITY, f64::min);
        eprintln!("{name}: {best:.2} s");
        results.push((name.to_string(), best));
    }
    let mut zresults = Vec::new();
    for (name, cmd) in &compressed {
        let best = (0..2)
            .map(|_| time_on_fresh_device(d, size, cmd))
            .fold(f64::INFINITY, f64::min);
        eprintln!("{name}: {best:.2} s");
        zresults.push((name.clone(), best));
    }
    // The floor: the device's sequential write rate, from 1 GiB (or the
    // whole image if smaller) of the image's cached bytes written direct.
    let probe_mib = (size >> 20).min(1024);
    let floor_cmd = s(&[
        "dd",
        &format!("if={img_s}"),
        "of={dev}",
        "bs=4M",
        &format!("count={}", probe_mib / 4),
        "oflag=direct",
        "conv=fsync",
        "status=none",
    ]);
    let rate_secs = (0..2)
        .map(|_| time_on_fresh_device(d, size, &floor_cmd))
        .fold(f64::INFINITY, f64::min);
    let rate = (probe_mib << 20) as f64 / rate_secs;
    let used = mapped_bytes(&bmap);
    let floor = used as f64 / rate;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let dd = results[2].1;
    let bmaptool = results[3].1;
    println!(
        "image: {size_gib} GiB, ext4 ~25% used ({:.0} MiB mapped); bmaptool create took {bmap_create:.2} s (not counted)",
        used as f64 / 1048576.0
    );
    println!(
        "device sequential write rate: {:.0} MB/s; floor (mapped bytes / rate): {floor:.2} s",
        rate / 1e6
    );
    println!("load average at the end: {}", load.trim());
    println!(
        "{:<40} {:>9} {:>10} {:>14} {:>10}",
        "raw image", "seconds", "vs dd", "vs bmaptool", "/ floor"
    );
    for (name, secs) in &results {
        println!(
            "{name:<40} {secs:>9.2} {:>9.2}x {:>13.2}x {:>9.2}x",
            dd / secs,
            bmaptool / secs,
            secs / floor
        );
    }
    println!(
        "{:<40} {:>9} {:>10} {:>14} {:>10}",
        "compressed image", "seconds", "vs … | dd", "vs bmaptool", "/ floor"
    );
    for chunk in zresults.chunks(4) {
        let (pipe, bmaptool) = (chunk[2].1, chunk[3].1);
        for (name, secs) in chunk {
            println!(
                "{name:<40} {secs:>9.2} {:>9.2}x {:>13.2}x {:>9.2}x",
                pipe / secs,
                bmaptool / secs,
                secs / floor
            );
        }
    }
    println!("(vs columns > 1: faster than the reference; / floor: times the physical floor)");
    match throttle_unavailable() {
        Some(why) => println!("SD-card-like device: skipped: {why}"),
        None => card_table(d, size, used, &nodeimg, &bmap_s, [&img_s, &xz, &zst]),
    }
}

/// The flashes again, on a device throttled to [`CARD_RATES`], once each
/// (the device, not the CPU, sets the pace there), against the floor
/// measured on the same throttled device: the write alone, and the write
/// plus the read-back that nodeimg's verification adds (bmaptool never reads
/// the card back, so its match is `nodeimg flash --bmap --no-verify`, which
/// still checks every bmap checksum as the data streams).
fn card_table(d: &Path, size: u64, used: u64, nodeimg: &str, bmap: &str, images: [&str; 3]) {
    let rates = Some(CARD_RATES);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let probe: u64 = 256 << 20;
    let count = format!("count={}", probe >> 22);
    let wsecs = time_on_device(
        d,
        size,
        &s(&[
            "dd",
            &format!("if={}", images[0]),
            "of={dev}",
            "bs=4M",
            &count,
            "oflag=direct",
            "conv=fsync",
            "status=none",
        ]),
        rates,
    );
    let rsecs = time_on_device(
        d,
        size,
        &s(&[
            "dd",
            "if={dev}",
            "of=/dev/null",
            "bs=4M",
            &count,
            "iflag=direct",
            "status=none",
        ]),
        rates,
    );
    let (wrate, rrate) = (probe as f64 / wsecs, probe as f64 / rsecs);
    let floor = used as f64 / wrate;
    let floor_rb = floor + used as f64 / rrate;
    println!(
        "SD-card-like device: loop device throttled to write {} MB/s, read {} MB/s (cgroup v1 blkio); measured: write {:.0} MB/s, read {:.0} MB/s",
        CARD_RATES.0 / 1_000_000,
        CARD_RATES.1 / 1_000_000,
        wrate / 1e6,
        rrate / 1e6
    );
    println!(
        "floor: mapped bytes / write rate = {floor:.2} s; with the read-back of verification (+ mapped / read rate) = {floor_rb:.2} s"
    );
    println!(
        "{:<40} {:>9} {:>14} {:>10} {:>16}",
        "card-like device, one run each", "seconds", "vs bmaptool", "/ floor", "/ floor+readback"
    );
    for (ext, image) in ["raw", ".xz", ".zst"].iter().zip(images) {
        let mut ours = s(&[
            nodeimg,
            "flash",
            image,
            "--device",
            "{dev}",
            "--allow-fixed",
            "--yes",
            "--json",
        ]);
        if *ext != "raw" {
            ours.push("--no-bmap".into());
        }
        // bmaptool's verification checks the image against the bmap's
        // checksums and never reads the card back: this is the same work.
        let same_checks = s(&[
            nodeimg,
            "flash",
            image,
            "--bmap",
            bmap,
            "--device",
            "{dev}",
            "--allow-fixed",
            "--yes",
            "--json",
            "--no-verify",
        ]);
        let theirs = s(&["bmaptool", "-q", "copy", "--bmap", bmap, image, "{dev}"]);
        let t_ours = time_on_device(d, size, &ours, rates);
        let t_same = time_on_device(d, size, &same_checks, rates);
        let t_theirs = time_on_device(d, size, &theirs, rates);
        for (name, secs) in [
            (format!("nodeimg flash {ext} (verify)"), t_ours),
            (format!("nodeimg flash {ext} --bmap --no-verify"), t_same),
            (format!("bmaptool copy --bmap {ext}"), t_theirs),
        ] {
            println!(
                "{name:<40} {secs:>9.2} {:>13.2}x {:>9.2}x {:>15.2}x",
                t_theirs / secs,
                secs / floor,
                secs / floor_rb
            );
        }
    }
}

/// `MappedBlocksCount × BlockSize` of a bmap file.
fn mapped_bytes(bmap: &Path) -> u64 {
    let text = std::fs::read_to_string(bmap).unwrap();
    let field = |tag: &str| -> u64 {
        // The last occurrence: bmaptool's header comment names the tags too.
        text.rsplit(&format!("<{tag}>"))
            .next()
            .and_then(|r| r.split('<').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{tag} in {}", bmap.display()))
    };
    field("MappedBlocksCount") * field("BlockSize")
}
