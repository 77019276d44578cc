//! Benchmark of `nodeimg flash` against `dd` and `bmaptool copy`, on the same
//! loop device, for an image of which about a quarter is used (a real ext4
//! filesystem with files in it). Not a test: run it by hand, as root:
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

/// Times `cmd` (with `{dev}` replaced) against a fresh loop device.
fn time_on_fresh_device(dir: &Path, size: u64, cmd: &[String]) -> f64 {
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
    let args: Vec<String> = cmd[1..]
        .iter()
        .map(|a| a.replace("{dev}", &dev.0))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    run(&cmd[0], &args);
    let secs = t0.elapsed().as_secs_f64();
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
    let mut results = Vec::new();
    for (name, cmd) in &contenders {
        let best = (0..2)
            .map(|_| time_on_fresh_device(d, size, cmd))
            .fold(f64::INFINITY, f64::min);
        eprintln!("{name}: {best:.2} s");
        results.push((*name, best));
    }
    let dd = results[2].1;
    let bmaptool = results[3].1;
    println!("image: {size_gib} GiB, ext4 ~25% used; bmaptool create took {bmap_create:.2} s (not counted)");
    println!(
        "{:<36} {:>9} {:>10} {:>14}",
        "command", "seconds", "vs dd", "vs bmaptool"
    );
    for (name, secs) in &results {
        println!(
            "{name:<36} {secs:>9.2} {:>9.2}x {:>13.2}x",
            dd / secs,
            bmaptool / secs
        );
    }
    println!("(ratios > 1: faster than the reference)");
}
