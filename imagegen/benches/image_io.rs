//! Throughput of image output against the standard tools, same machine,
//! same file, same run:
//!
//! * `.zst` output (ImageWriter, zstd level 3, all cores) vs `zstd -T0 -3`;
//! * sparse raw output (ImageWriter) vs `cp --sparse=always`.
//!
//! Run: `cargo bench -p imagegen --bench image_io` (needs `zstd` and GNU
//! `cp`; writes ~3 GiB of scratch files under $TMPDIR, removed afterwards).
//! `NODEIMG_BENCH_MIB` sets the image size (default 1024).

use imagegen::sink::{copy_stream, ImageWriter, OutputFormat};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// A deterministic, disk-image-like mix: zero runs (unused space), text
/// (config files, scripts), low-entropy binary (executables), and a share of
/// incompressible data (already compressed files).
fn write_image(path: &Path, mib: usize) -> std::io::Result<()> {
    const WORDS: &[&str] = &[
        "kernel",
        "systemd",
        "the",
        "of",
        "usr/lib",
        "config",
        "=",
        "\n",
        "root",
        "node",
        "cluster",
        "arm64",
        "libc.so.6",
        "#",
        "ExecStart",
        "enable",
        "0x",
        "debian",
        " ",
        "    ",
        "if",
        "fi",
        "then",
        "echo",
        "/etc/",
        "{",
        "}",
        "return",
    ];
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut block = vec![0u8; 64 * 1024];
    for _ in 0..mib * 16 {
        let kind = next() % 100;
        match kind {
            0..=34 => block.fill(0),
            35..=64 => {
                let mut i = 0;
                while i < block.len() {
                    let w = WORDS[(next() % WORDS.len() as u64) as usize].as_bytes();
                    let n = w.len().min(block.len() - i);
                    block[i..i + n].copy_from_slice(&w[..n]);
                    i += n;
                }
            }
            65..=89 => {
                for b in block.iter_mut() {
                    let r = next();
                    // Mostly a few opcodes, some zeros, some spread.
                    *b = match r % 8 {
                        0..=3 => [0x48, 0x89, 0x8b, 0xe8, 0x0f, 0xff][(r >> 8) as usize % 6],
                        4 | 5 => 0,
                        _ => (r >> 16) as u8 & 0x3f,
                    };
                }
            }
            _ => {
                for c in block.chunks_mut(8) {
                    let r = next().to_le_bytes();
                    c.copy_from_slice(&r[..c.len()]);
                }
            }
        }
        out.write_all(&block)?;
    }
    out.flush()?;
    out.get_ref().sync_all()
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn drop_caches_hint(path: &Path) {
    // Read the input once so both contenders start from a warm page cache.
    let mut f = File::open(path).unwrap();
    std::io::copy(&mut f, &mut std::io::sink()).unwrap();
}

fn main() {
    let mib: usize = std::env::var("NODEIMG_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.img");
    eprintln!("generating a {mib} MiB semi-realistic image…");
    write_image(&input, mib).unwrap();
    let bytes = (mib as f64) * 1024.0 * 1024.0;
    let mbps = |secs: f64| bytes / secs / 1e6;
    drop_caches_hint(&input);

    // zstd: ours, then the CLI, alternating twice; best of each.
    let ours_zst = dir.path().join("ours.img.zst");
    let cli_zst = dir.path().join("cli.img.zst");
    let (mut t_ours, mut t_cli) = (f64::MAX, f64::MAX);
    for _ in 0..2 {
        t_ours = t_ours.min(timed(|| {
            let mut r = BufReader::with_capacity(1 << 20, File::open(&input).unwrap());
            let mut w =
                ImageWriter::create(&ours_zst, OutputFormat::Zstd { level: 3 }, None).unwrap();
            copy_stream(&mut r, &mut w).unwrap();
            w.finish().unwrap();
        }));
        t_cli = t_cli.min(timed(|| {
            let ok = Command::new("zstd")
                .args(["-T0", "-3", "-q", "-f"])
                .arg(&input)
                .arg("-o")
                .arg(&cli_zst)
                .status()
                .unwrap();
            assert!(ok.success());
        }));
    }
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / 1e6;
    println!(
        "zstd -3, {mib} MiB: nodeimg {:.0} MB/s ({:.1} MB out), zstd -T0 -3 {:.0} MB/s ({:.1} MB out); nodeimg/zstd = {:.2}",
        mbps(t_ours),
        size(&ours_zst),
        mbps(t_cli),
        size(&cli_zst),
        t_cli / t_ours
    );
    std::fs::remove_file(&ours_zst).unwrap();
    std::fs::remove_file(&cli_zst).unwrap();

    // Sparse raw output.
    let ours_raw = dir.path().join("ours.img");
    let cp_raw = dir.path().join("cp.img");
    let (mut t_ours, mut t_cp) = (f64::MAX, f64::MAX);
    for _ in 0..2 {
        t_ours = t_ours.min(timed(|| {
            let mut r = BufReader::with_capacity(1 << 20, File::open(&input).unwrap());
            let mut w = ImageWriter::create(&ours_raw, OutputFormat::Raw, None).unwrap();
            copy_stream(&mut r, &mut w).unwrap();
            w.finish().unwrap();
        }));
        t_cp = t_cp.min(timed(|| {
            let _ = std::fs::remove_file(&cp_raw);
            let ok = Command::new("cp")
                .arg("--sparse=always")
                .arg(&input)
                .arg(&cp_raw)
                .status()
                .unwrap();
            assert!(ok.success());
            // cp does not fsync; ImageWriter::finish does. Same for both.
            File::open(&cp_raw).unwrap().sync_all().unwrap();
        }));
    }
    use std::os::unix::fs::MetadataExt;
    let alloc = |p: &Path| std::fs::metadata(p).unwrap().blocks() as f64 * 512.0 / 1e6;
    println!(
        "sparse raw, {mib} MiB: nodeimg {:.0} MB/s ({:.0} MB allocated), cp --sparse=always {:.0} MB/s ({:.0} MB allocated); nodeimg/cp = {:.2}",
        mbps(t_ours),
        alloc(&ours_raw),
        mbps(t_cp),
        alloc(&cp_raw),
        t_cp / t_ours
    );
    assert!(
        Command::new("cmp")
            .arg(&ours_raw)
            .arg(&input)
            .status()
            .unwrap()
            .success(),
        "sparse output differs from its input"
    );
}
