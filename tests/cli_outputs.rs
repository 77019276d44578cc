//! Outputs from the command line: no command overwrites a file without
//! `--force`, none ever writes over one of its own inputs (however the path
//! is spelt), and SIGINT/SIGTERM during a long command leave no temporary
//! file behind, print one line and exit 130/143.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

mod cli_support;
use cli_support::*;
use std::time::{Duration, Instant};

/// Two same-size images that differ in one block, and a delta between them.
fn images(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (base, node, delta) = (
        dir.join("base.img"),
        dir.join("node.img"),
        dir.join("node.delta"),
    );
    std::fs::write(&base, vec![1u8; 1 << 20]).unwrap();
    let mut changed = vec![1u8; 1 << 20];
    changed[8192..8200].fill(9);
    std::fs::write(&node, changed).unwrap();
    ok(&["delta", "create", s(&base), s(&node), "-o", s(&delta)]);
    (base, node, delta)
}

fn fingerprint(p: &Path) -> (Vec<u8>, i64) {
    let m = std::fs::metadata(p).unwrap();
    (std::fs::read(p).unwrap(), m.mtime_nsec())
}

fn only(dir: &Path, names: &[&str]) {
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(left, want, "files left in {}", dir.display());
}

#[test]
fn an_input_is_never_an_output_even_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, node, delta) = images(tmp.path());
    let hard = tmp.path().join("hard-link.img");
    std::fs::hard_link(&base, &hard).unwrap();
    let before = fingerprint(&base);
    let dotted = tmp.path().join(".").join("base.img");
    for out in [&base, &dotted, &hard] {
        for force in [false, true] {
            let mut args = vec!["delta", "create", s(&base), s(&node), "-o", s(out)];
            if force {
                args.push("--force");
            }
            refused(&args, &["refusing to write"]);
            let mut args = vec!["delta", "apply", s(&base), s(&delta), "-o", s(out)];
            if force {
                args.push("--force");
            }
            refused(&args, &["refusing to write"]);
        }
    }
    refused(
        &[
            "delta",
            "apply",
            s(&base),
            s(&delta),
            "-o",
            s(&delta),
            "--force",
        ],
        &["it is also an input"],
    );
    assert_eq!(fingerprint(&base), before, "the base is untouched");

    // mkfs repacking an image into itself, also into a partition of it.
    let fs = tmp.path().join("fs.img");
    ok(&["fs", "mkfs", "ext4", s(&fs), "--size", "16M"]);
    let fs_before = fingerprint(&fs);
    let mkfs = [
        "fs",
        "mkfs",
        "ext4",
        s(&fs),
        "--size",
        "8M",
        "--from",
        s(&fs),
    ];
    refused(&[&mkfs[..], &["--force"]].concat(), &["refusing to write"]);
    refused(
        &[
            "fs",
            "mkfs",
            "ext4",
            s(&fs),
            "--part",
            "1",
            "--from",
            s(&fs),
        ],
        &["refusing to write"],
    );
    assert_eq!(fingerprint(&fs), fs_before);
    only(
        tmp.path(),
        &[
            "base.img",
            "node.img",
            "node.delta",
            "hard-link.img",
            "fs.img",
        ],
    );
}

#[test]
fn an_existing_output_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, node, delta) = images(tmp.path());
    let out = tmp.path().join("out");
    let cases: [Vec<&str>; 4] = [
        vec!["delta", "create", s(&base), s(&node), "-o", s(&out)],
        vec!["delta", "apply", s(&base), s(&delta), "-o", s(&out)],
        vec!["fs", "mkfs", "fat", s(&out), "--size", "34M"],
        vec!["fs", "mkfs", "ext4", s(&out), "--size", "16M"],
    ];
    for args in &cases {
        std::fs::write(&out, b"precious").unwrap();
        refused(args, &["already exists; use --force to replace it"]);
        assert_eq!(std::fs::read(&out).unwrap(), b"precious", "{args:?}");
        ok(&[&args[..], &["--force"]].concat());
        assert_ne!(std::fs::read(&out).unwrap(), b"precious", "{args:?}");
    }
    // A directory or a device node is never replaced.
    refused(
        &[
            "delta",
            "create",
            s(&base),
            s(&node),
            "-o",
            s(tmp.path()),
            "--force",
        ],
        &["is a directory"],
    );
    refused(
        &["fs", "mkfs", "fat", "/dev/null", "--size", "34M", "--force"],
        &["not a regular file"],
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    only(tmp.path(), &["base.img", "node.img", "node.delta", "out"]);
}

/// Starts `args`, waits until a temporary `.partial` file appears in `dir`,
/// sends `signal`; returns the exit status and stderr.
fn interrupt(args: &[&str], dir: &Path, signal: i32) -> (i32, String) {
    let child = bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodeimg starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let partial = || {
        std::fs::read_dir(dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        })
    };
    while !partial() {
        assert!(Instant::now() < deadline, "no .partial file appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let out = child.wait_with_output().expect("nodeimg exits");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two sparse 2 GiB images: comparing them takes seconds, long enough to
/// interrupt.
fn big_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    for p in [&a, &b] {
        std::fs::File::create(p).unwrap().set_len(2 << 30).unwrap();
    }
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&b)
        .unwrap()
        .write_all_at(b"x", (2 << 30) - 5)
        .unwrap();
    (a, b)
}

#[test]
fn sigterm_and_sigint_remove_the_unfinished_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = big_pair(tmp.path());
    let out = tmp.path().join("n.delta");
    for (signal, code, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGINT, 130, "SIGINT"),
    ] {
        let (status, err) = interrupt(
            &["delta", "create", s(&a), s(&b), "-o", s(&out)],
            tmp.path(),
            signal,
        );
        assert_eq!(status, code, "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        assert!(
            err.contains(&format!("interrupted by {name}")) && err.contains("removed"),
            "{err}"
        );
        only(tmp.path(), &["a.img", "b.img"]);
    }
}

#[test]
fn sigterm_during_mkfs_removes_the_unfinished_image() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("out");
    std::fs::create_dir(&work).unwrap();
    // A large file to copy in keeps mkfs busy after its output exists.
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let data: Vec<u8> = (0..(64u32 << 20)).map(|i| (i % 251) as u8).collect();
    for n in 0..8 {
        std::fs::write(src.join(format!("f{n}")), &data).unwrap();
    }
    let out = work.join("root.img");
    let (status, err) = interrupt(
        &[
            "fs",
            "mkfs",
            "ext4",
            s(&out),
            "--size",
            "1G",
            "--from",
            s(&src),
        ],
        &work,
        libc::SIGTERM,
    );
    assert_eq!(status, 143, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    only(&work, &[]);
}

#[test]
fn a_signal_during_an_in_place_change_waits_for_a_consistent_image() {
    use std::os::fd::AsRawFd;
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("root.img");
    ok(&["fs", "mkfs", "ext4", s(&img), "--size", "512M"]);
    let local = tmp.path().join("big.bin");
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 249) as u8 | 1).collect();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&local).unwrap());
        for _ in 0..256 {
            f.write_all(&chunk).unwrap();
        }
    }
    let child = bin()
        .args(["fs", "put", s(&img), s(&local), "/big.bin"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The writer holds the image's lock while it changes it.
    let probe = std::fs::File::open(&img).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // SAFETY: flock(2) on our own descriptor; released right away.
        let free = unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
        if !free {
            break;
        }
        // SAFETY: as above.
        unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_UN) };
        assert!(Instant::now() < deadline, "the writer never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("completed first"), "{err}");
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn", s(&img)])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck after the interrupted put: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}
