//! Refusals and messages from the command line: one clear line on stderr,
//! the right exit code, nothing changed (issue 9, items 11 and 13).

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn nodeimg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("nodeimg runs")
}

fn ok(args: &[&str]) -> String {
    let out = nodeimg(args);
    assert!(
        out.status.success(),
        "nodeimg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must exit with `code` and one line on stderr
/// containing each of `want`; returns that line.
fn fails_with(code: i32, args: &[&str], want: &[&str]) -> String {
    let out = nodeimg(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "nodeimg {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    for w in want {
        assert!(err.contains(w), "{err:?} lacks {w:?}");
    }
    err
}

fn fails(args: &[&str], want: &[&str]) -> String {
    fails_with(1, args, want)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

fn ext4(dir: &Path) -> std::path::PathBuf {
    let img = dir.join("root.img");
    ok(&["fs", "mkfs", "ext4", s(&img), "--size", "16M"]);
    img
}

#[test]
fn a_locked_image_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = ext4(tmp.path());
    let before = std::fs::read(&img).unwrap();
    let held = std::fs::File::open(&img).unwrap();
    // SAFETY: flock(2) on a file this test owns.
    assert_eq!(
        unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    fails(
        &["fs", "mkdir", s(&img), "/x"],
        &["another process", "lock"],
    );
    fails(
        &["fs", "ls", s(&img), "/"],
        &["another process is changing"],
    );
    fails(
        &["fs", "mkfs", "fat", s(&img), "--part", "1"],
        &["another process"],
    );
    drop(held);
    assert_eq!(std::fs::read(&img).unwrap(), before, "nothing changed");
    ok(&["fs", "mkdir", s(&img), "/x"]);

    // Readers share the lock: a reader does not stop another.
    let reader = std::fs::File::open(&img).unwrap();
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::flock(reader.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) },
        0
    );
    ok(&["fs", "ls", s(&img), "/"]);
    fails(&["fs", "rm", s(&img), "/x"], &["another process is using"]);
}

#[test]
fn a_read_only_image_is_refused_even_to_root() {
    let tmp = tempfile::tempdir().unwrap();
    let img = ext4(tmp.path());
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&img).unwrap();
    fails(
        &["fs", "mkdir", s(&img), "/x"],
        &["read-only (mode 0444)", "even as root"],
    );
    assert_eq!(std::fs::read(&img).unwrap(), before);
    ok(&["fs", "ls", s(&img), "/"]);
}
