//! Benchmark (not a test): our in-place ext4 engine against
//! `debugfs -w -f SCRIPT` doing the same job on an identical image, in the
//! same run. The job: 1,000 files of 4 KiB and 10 files of 50 MiB into a
//! fresh, sparse 4 GiB `mkfs.ext4` image. Both results must pass
//! `e2fsck -fn` and hold the same bytes.
//!
//! debugfs writes without its journal and makes the result durable once, at
//! the end; the engine's like-for-like mode is group commit
//! (`Filesystem::defer_commits`: journalled transactions that commit when
//! they grow large and at the flush). The engine is also timed committing
//! every change on its own (four flushes each, durable as it returns), for
//! what that guarantee costs.
//!
//! Run: `cargo bench --bench ext4_write` (set `EXT4_BENCH_DIR` to choose where
//! the ~1.5 GiB of temporary files go; default: the system temp dir).

#[path = "../tests/common/mod.rs"]
mod common;

use common::fixture::mkfs;
use common::oracle::{self, run};
use common::rng::Rng;
use imagegen::fs::NewAttrs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SMALL: usize = 1000;
const SMALL_SIZE: usize = 4096;
const LARGE: usize = 10;
const LARGE_SIZE: usize = 50 << 20;

struct Job {
    small: Vec<PathBuf>,
    large: Vec<PathBuf>,
}

fn make_inputs(dir: &Path) -> Job {
    let mut rng = Rng::new(2026);
    let small_dir = dir.join("small");
    let large_dir = dir.join("large");
    std::fs::create_dir_all(&small_dir).unwrap();
    std::fs::create_dir_all(&large_dir).unwrap();
    let small = (0..SMALL)
        .map(|i| {
            let p = small_dir.join(format!("f{i:04}"));
            std::fs::write(&p, rng.bytes(SMALL_SIZE)).unwrap();
            p
        })
        .collect();
    let large = (0..LARGE)
        .map(|i| {
            let p = large_dir.join(format!("L{i:02}"));
            std::fs::write(&p, rng.bytes(LARGE_SIZE)).unwrap();
            p
        })
        .collect();
    Job { small, large }
}

fn image_path(local: &Path) -> String {
    let kind = local
        .parent()
        .and_then(|p| p.file_name())
        .unwrap()
        .to_string_lossy();
    format!("/{kind}/{}", local.file_name().unwrap().to_string_lossy())
}

fn with_engine(image: &Path, job: &Job, group: bool) -> Duration {
    let start = Instant::now();
    let mut fs = common::engine::open(image, true).expect("engine open");
    if group {
        fs.defer_commits();
    }
    let attrs = NewAttrs::default();
    fs.mkdir("/small", false, &attrs).expect("mkdir");
    fs.mkdir("/large", false, &attrs).expect("mkdir");
    for local in job.small.iter().chain(&job.large) {
        let mut f = std::fs::File::open(local).unwrap();
        let size = f.metadata().unwrap().len();
        fs.write_file(&image_path(local), &mut f, size, &attrs)
            .expect("engine write");
    }
    fs.flush().expect("engine flush");
    drop(fs);
    start.elapsed()
}

fn with_debugfs(image: &Path, job: &Job, script: &Path) -> Duration {
    let mut text = String::from("mkdir /small\nmkdir /large\n");
    for local in job.small.iter().chain(&job.large) {
        text.push_str(&format!(
            "write {} {}\n",
            local.display(),
            image_path(local)
        ));
    }
    std::fs::write(script, text).unwrap();
    let start = Instant::now();
    let out = run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(script)
        .arg(image));
    assert!(out.status.success(), "debugfs failed");
    // Our engine's flush ends in fsync; give debugfs the same.
    std::fs::File::open(image).unwrap().sync_all().unwrap();
    start.elapsed()
}

fn main() {
    let base = std::env::var_os("EXT4_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    eprintln!("preparing inputs in {}", dir.path().display());
    let job = make_inputs(dir.path());
    let ours = dir.path().join("ours.img");
    let each = dir.path().join("each.img");
    let theirs = dir.path().join("debugfs.img");
    // Each contender twice on a fresh image, after a system-wide sync so no
    // one pays for another's writeback; the best time counts.
    let fresh = |img: &Path| {
        let _ = std::fs::remove_file(img);
        mkfs(img, 4096, &[], None).expect("mkfs.ext4 4 GiB");
        run(&mut Command::new("sync"));
    };
    let (mut t_debugfs, mut t_ours, mut t_each) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..2 {
        fresh(&theirs);
        t_debugfs = t_debugfs.min(with_debugfs(&theirs, &job, &dir.path().join("script")));
        fresh(&ours);
        t_ours = t_ours.min(with_engine(&ours, &job, true));
        fresh(&each);
        t_each = t_each.min(with_engine(&each, &job, false));
    }

    for (who, img) in [
        ("engine", &ours),
        ("engine (each change)", &each),
        ("debugfs", &theirs),
    ] {
        if let Err(e) = oracle::fsck_clean(img) {
            panic!("{who}'s image is not clean: {e}");
        }
    }
    for local in [&job.small[0], &job.small[SMALL - 1], &job.large[LARGE - 1]] {
        let want = std::fs::read(local).unwrap();
        for img in [&ours, &each, &theirs] {
            assert!(
                oracle::cat(img, &image_path(local)).unwrap() == want,
                "{} differs in {}",
                image_path(local),
                img.display()
            );
        }
    }
    let mib = (SMALL * SMALL_SIZE + LARGE * LARGE_SIZE) as f64 / (1 << 20) as f64;
    println!("ext4 write benchmark: {SMALL} x 4 KiB + {LARGE} x 50 MiB ({mib:.0} MiB) into a fresh 4 GiB mkfs.ext4 image");
    println!(
        "  nodeimg engine, group commit     {:>8.3} s  ({:.0} MiB/s)",
        t_ours.as_secs_f64(),
        mib / t_ours.as_secs_f64()
    );
    println!(
        "  nodeimg engine, each change      {:>8.3} s  ({:.0} MiB/s)",
        t_each.as_secs_f64(),
        mib / t_each.as_secs_f64()
    );
    println!(
        "  debugfs -w -f                    {:>8.3} s  ({:.0} MiB/s)",
        t_debugfs.as_secs_f64(),
        mib / t_debugfs.as_secs_f64()
    );
    println!(
        "  ratio debugfs/engine: {:.2}x group commit, {:.2}x each change durable (above 1: the engine is faster); all pass e2fsck -fn",
        t_debugfs.as_secs_f64() / t_ours.as_secs_f64(),
        t_debugfs.as_secs_f64() / t_each.as_secs_f64()
    );
}
