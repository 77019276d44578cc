//! Benchmark of ext4 creation from a directory tree: our `mkext4`-based
//! build against `mke2fs -t ext4 -d` and against `mkext4`'s own
//! `examples/mkfs.rs` (built from the registry source, not copied), on the
//! same generated tree and size; then peak memory for a synthetic tree of
//! a million entries, ours against bare `mkext4` calls.
//!
//! `cargo bench --bench mkfs_ext4` (release). Knobs (environment):
//! `BENCH_FILES` (20000), `BENCH_SIZE_MIB` (2048), `BENCH_RUNS` (3),
//! `BENCH_MILLION` (1000000; 0 skips), `BENCH_DIR` (target/mkfs-bench).
//! Every output is checked with `e2fsck -fn` once.
//!
//! Each measured command runs under a re-executed copy of this binary
//! (`--measure`), whose only child is the command, so `getrusage` of its
//! children is that command's peak memory.

use imagegen::fs::Timestamp;
use imagegen::mkfs::ext4::{build_file, Ext4Options, InodePolicy};
use imagegen::tree::{DataMap, DirSource, Entry, EntryKind, InodeFlags, TreeSource, Visitor};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const UUID: [u8; 16] = *b"mkext4-benchmark";
const EPOCH: i64 = 1_704_067_200;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("--measure") => measure_child(&args[1..]),
        Some("--ours") => ours(&args[1], &args[2], args[3].parse().unwrap()),
        Some("--ours-synthetic") => synthetic(&args[1], args[2].parse().unwrap(), false),
        Some("--bare-synthetic") => synthetic(&args[1], args[2].parse().unwrap(), true),
        _ => orchestrate(),
    }
}

/// Runs the command, prints `elapsed_seconds peak_rss_kib`.
fn measure_child(cmd: &[String]) {
    let start = Instant::now();
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("spawn");
    let elapsed = start.elapsed().as_secs_f64();
    assert!(status.success(), "{cmd:?} failed");
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    println!("{elapsed} {}", usage.max_rss());
}

/// Our build, as the library is called by the CLI.
fn ours(src: &str, out: &str, size: u64) {
    let mut opts = Ext4Options::new(size, UUID, 1_700_000_000, Some(1_700_000_000));
    opts.epoch = EPOCH;
    build_file(
        &mut DirSource::new(src).expect("source"),
        &opts,
        Path::new(out),
    )
    .expect("build");
}

/// A million-entry tree without a disk: 1000 directories of 1000 files,
/// every tenth with 100 bytes.
struct Synthetic {
    entries: u64,
}

impl TreeSource for Synthetic {
    fn describe(&self) -> String {
        "synthetic".into()
    }
    fn walk(&mut self, with_data: bool, visit: &mut Visitor<'_>) -> imagegen::Result<()> {
        let t = Timestamp {
            secs: EPOCH,
            nanos: 0,
        };
        let mut entry = Entry {
            path: String::new(),
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: None,
            xattrs: Vec::new(),
            flags: InodeFlags::default(),
            nlink: Some(1),
        };
        let data = [b'x'; 100];
        for d in 0..self.entries.div_ceil(1000) {
            entry.path = format!("dir-{d:04}");
            entry.kind = EntryKind::Dir;
            visit(&entry, None)?;
            for f in 0..1000 {
                entry.path = format!("dir-{d:04}/file-{f:04}");
                let size = if f % 10 == 0 { 100 } else { 0 };
                entry.kind = EntryKind::File {
                    size,
                    data: DataMap::Dense,
                };
                if with_data && size > 0 {
                    visit(&entry, Some(&mut &data[..]))?;
                } else {
                    visit(&entry, None)?;
                }
            }
        }
        Ok(())
    }
}

fn synthetic(out: &str, entries: u64, bare: bool) {
    let size = 8u64 << 30;
    let inodes = (entries + entries / 1000 + 1000) as u32;
    if bare {
        use mkext4::{FsBuilder, InodeCount, Meta, Options, ROOT};
        let mut opts = Options::new(size, UUID, EPOCH);
        opts.inodes = InodeCount::Exact(inodes);
        let mut b = FsBuilder::new(opts).unwrap();
        let meta = Meta::new(0o755, 0, 0, (EPOCH, 0));
        let mut fills = Vec::new();
        for d in 0..entries.div_ceil(1000) {
            let dir = b.mkdir(ROOT, &format!("dir-{d:04}"), meta).unwrap();
            for f in 0..1000 {
                let size = if f % 10 == 0 { 100 } else { 0 };
                let h = b.file(dir, &format!("file-{f:04}"), meta, size).unwrap();
                if size > 0 {
                    fills.push(h);
                }
            }
        }
        let layout = b.seal().unwrap();
        let mut sink = mkext4::sink::FileSink::create(Path::new(out), size).unwrap();
        let mut w = layout.writer(&mut sink).unwrap();
        for h in fills {
            w.fill(h, &mut &[b'x'; 100][..]).unwrap();
        }
        w.finish().unwrap();
    } else {
        let mut opts = Ext4Options::new(size, UUID, 1_700_000_000, Some(1_700_000_000));
        opts.epoch = EPOCH;
        opts.inodes = InodePolicy::Count(inodes);
        build_file(&mut Synthetic { entries }, &opts, Path::new(out)).unwrap();
    }
}

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A tree shaped like a root filesystem: many small files, some large,
/// 100 directories of subdirectories, symlinks and hard links.
fn make_tree(root: &Path, files: u64) -> u64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut total = 0;
    let mut buf = vec![0u8; 4 << 20];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    for i in 0..files {
        let dir = root.join(format!("d{:02}/s{:02}", i % 100, (i / 100) % 20));
        if i < 2000 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let roll = rng.next() % 100;
        let size = match roll {
            0 => 128 * 1024 + rng.next() % (4 << 20),
            1..=25 => 8192 + rng.next() % (120 * 1024),
            _ => rng.next() % 8192,
        } as usize;
        let offset = (rng.next() % 1024) as usize;
        let path = dir.join(format!("f{i:06}"));
        std::fs::write(&path, &buf[offset..(offset + size).min(buf.len())]).unwrap();
        total += size.min(buf.len() - offset) as u64;
        if i % 50 == 0 {
            std::os::unix::fs::symlink(format!("f{i:06}"), dir.join(format!("l{i:06}"))).unwrap();
        }
        if i % 200 == 0 {
            std::fs::hard_link(&path, dir.join(format!("h{i:06}"))).unwrap();
        }
    }
    total
}

fn measure(cmd: &[&str]) -> (f64, u64) {
    let me = std::env::current_exe().unwrap();
    let out = Command::new(me)
        .arg("--measure")
        .args(cmd)
        .output()
        .expect("measure");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    (
        it.next().unwrap().parse().unwrap(),
        it.next().unwrap().parse().unwrap(),
    )
}

fn e2fsck(image: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Builds `mkext4`'s `examples/mkfs.rs` from the registry source.
fn example_binary(scratch: &Path) -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let manifest = std::fs::read_dir(cargo_home.join("registry/src"))
        .unwrap()
        .map(|d| d.unwrap().path().join("mkext4-0.0.3/Cargo.toml"))
        .find(|p| p.exists())
        .expect("mkext4-0.0.3 in the cargo registry (cargo fetch)");
    let target = scratch.join("mkext4-example-target");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--example", "mkfs", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success(), "building mkext4's example");
    target.join("release/examples/mkfs")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn orchestrate() {
    let files = env_num("BENCH_FILES", 20_000);
    let size = env_num("BENCH_SIZE_MIB", 2048) << 20;
    let runs = env_num("BENCH_RUNS", 3) as usize;
    let million = env_num("BENCH_MILLION", 1_000_000);
    let scratch = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/mkfs-bench"));
    std::fs::create_dir_all(&scratch).unwrap();
    let example = example_binary(&scratch);
    let tree = scratch.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    let bytes = make_tree(&tree, files);
    println!(
        "tree: {files} files ({} MiB of data), filesystem {} MiB, {runs} runs each, medians",
        bytes >> 20,
        size >> 20
    );
    let me = std::env::current_exe().unwrap();
    let (src, me_s) = (tree.to_str().unwrap(), me.to_str().unwrap());
    let size_s = size.to_string();
    let out = |name: &str| scratch.join(name).to_str().unwrap().to_string();
    let (o_ours, o_ex, o_mke2fs) = (out("ours.img"), out("example.img"), out("mke2fs.img"));
    let size_k = format!("{}k", size >> 10);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "nodeimg (mkext4 + tree model)",
            vec![me_s, "--ours", src, &o_ours, &size_s],
            &o_ours,
        ),
        (
            "mkext4 examples/mkfs.rs",
            vec![example.to_str().unwrap(), src, &o_ex, &size_s],
            &o_ex,
        ),
        (
            "mke2fs -t ext4 -d",
            vec![
                "mke2fs",
                "-q",
                "-F",
                "-t",
                "ext4",
                "-b",
                "4096",
                "-I",
                "256",
                "-i",
                "16384",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                "-d",
                src,
                &o_mke2fs,
                &size_k,
            ],
            &o_mke2fs,
        ),
    ];
    let mut results = Vec::new();
    for (name, cmd, output) in &cases {
        let mut times = Vec::new();
        let mut peak = 0;
        for _ in 0..runs {
            let _ = std::fs::remove_file(output);
            let (t, rss) = measure(cmd);
            times.push(t);
            peak = peak.max(rss);
        }
        e2fsck(Path::new(output));
        let t = median(times);
        println!("{name:32} {t:8.3} s {:8} MiB peak", peak >> 10);
        results.push((t, peak));
    }
    let (ours, ex, mke2fs) = (results[0], results[1], results[2]);
    println!(
        "ratios: ours/example time {:.2}x memory {:.2}x; ours/mke2fs time {:.2}x",
        ours.0 / ex.0,
        ours.1 as f64 / ex.1 as f64,
        ours.0 / mke2fs.0
    );
    if million > 0 {
        let o = out("million.img");
        let n = million.to_string();
        let (t_ours, m_ours) = measure(&[me_s, "--ours-synthetic", &o, &n]);
        e2fsck(Path::new(&o));
        let (t_bare, m_bare) = measure(&[me_s, "--bare-synthetic", &o, &n]);
        println!(
            "{million} entries (synthetic): ours {t_ours:.2} s {} MiB peak; bare mkext4 {t_bare:.2} s {} MiB peak ({:.2}x memory)",
            m_ours >> 10,
            m_bare >> 10,
            m_ours as f64 / m_bare as f64
        );
        let _ = std::fs::remove_file(&o);
    }
    for o in [&o_ours, &o_ex, &o_mke2fs] {
        let _ = std::fs::remove_file(o);
    }
}
