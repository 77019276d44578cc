//! Refusals and messages from the command line: one clear line on stderr,
//! the right exit code, nothing changed (issue 9, items 11 and 13).

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

mod cli_support;
use cli_support::*;

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
    refused(
        &["fs", "mkdir", s(&img), "/x"],
        &["another process", "lock"],
    );
    refused(
        &["fs", "ls", s(&img), "/"],
        &["another process is changing"],
    );
    refused(
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
    refused(&["fs", "rm", s(&img), "/x"], &["another process is using"]);
}

#[test]
fn a_read_only_image_is_refused_even_to_root() {
    let tmp = tempfile::tempdir().unwrap();
    let img = ext4(tmp.path());
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&img).unwrap();
    refused(
        &["fs", "mkdir", s(&img), "/x"],
        &["read-only (mode 0444)", "even as root"],
    );
    assert_eq!(std::fs::read(&img).unwrap(), before);
    ok(&["fs", "ls", s(&img), "/"]);
}

/// A 64 MiB disk image with an MBR and an ext4 partition 1.
fn disk(dir: &Path) -> std::path::PathBuf {
    let img = dir.join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk");
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=40960, type=83\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    ok(&["fs", "mkfs", "ext4", s(&img), "--part", "1"]);
    img
}

#[test]
fn mkfs_from_a_disk_image_names_from_part() {
    let tmp = tempfile::tempdir().unwrap();
    let img = disk(tmp.path());
    let out = tmp.path().join("out.img");
    let o = s(&out);
    // Was: `tarball disk.img: numeric field was not a number`.
    let err = refused(
        &["fs", "mkfs", "ext4", o, "--size", "32M", "--from", s(&img)],
        &["MBR partition table", "--from-part N"],
    );
    assert!(!err.contains("tarball"), "{err}");
    // Was: blamed the table of the compressed file and named --part.
    let zst = tmp.path().join("disk.img.zst");
    let zstd = Command::new("zstd")
        .args(["-q", s(&img), "-o", s(&zst)])
        .status()
        .unwrap();
    assert!(zstd.success());
    let mut args = vec!["fs", "mkfs", "ext4", o, "--size", "32M", "--from", s(&zst)];
    for extra in [&[][..], &["--from-part", "1"][..]] {
        let err = refused(
            &[&args[..], extra].concat(),
            &["zstd-compressed, a disk image", "decompress it first"],
        );
        assert!(!err.contains("--part "), "{err}");
    }
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "hello\n").unwrap();
    args[7] = s(&text);
    refused(&args, &["notes.txt: not a directory, a tarball"]);
    ok(&[&args[..7], &[s(&img), "--from-part", "1"]].concat());
}

#[test]
fn inspect_of_nothing_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("six.txt");
    std::fs::write(&text, "hello\n").unwrap();
    refused(
        &["inspect", s(&text)],
        &["six.txt: not a disk or filesystem image"],
    );
    refused(
        &["inspect", "/dev/null"],
        &["/dev/null: not a disk or filesystem image"],
    );
    refused(
        &["inspect", "--json", s(&text)],
        &["not a disk or filesystem image"],
    );
    ok(&["inspect", s(&disk(tmp.path()))]);
}

#[test]
fn flash_and_verify_refuse_what_cannot_be_right() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("text.img");
    std::fs::write(&text, "hello\n").unwrap();
    // Was: "every check passed" (with a card) or a device complaint.
    refused(
        &["flash", s(&text), "--device", "/dev/null", "--dry-run"],
        &["text.img: not a disk image", "refusing to write it"],
    );
    // Was: "failed to fill whole buffer".
    let img = disk(tmp.path());
    refused(
        &["verify", s(&img), "--device", "/dev/null"],
        &["/dev/null: device shorter than the image"],
    );
}

#[test]
fn a_mounted_ext4_is_said_to_be_mounted() {
    let tmp = tempfile::tempdir().unwrap();
    let img = ext4(tmp.path());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -o loop");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let guard = Unmount(&mnt);
    // Was: "mount it once or run e2fsck", which is wrong for a mounted one.
    let err = refused(
        &["fs", "mkdir", s(&img), "/x"],
        &["it is mounted now", "unmount it"],
    );
    assert!(!err.contains("mount it once"), "{err}");
    drop(guard);
}

#[test]
fn fat_limits_come_before_the_file_and_paths_are_said_once() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.img");
    // Was: "big.img: big.img: File too large", after trying the file.
    let err = refused(
        &["fs", "mkfs", "fat", s(&big), "--size", "16T"],
        &["too large for FAT32", "at most"],
    );
    assert_eq!(err.matches("big.img").count(), 1, "{err}");
    let missing = tmp.path().join("no-such-dir").join("x.img");
    // A directory that does not exist: an I/O error (5).
    let err = fails_with(
        5,
        &["fs", "mkfs", "fat", s(&missing), "--size", "64M"],
        &["No such file or directory"],
    );
    assert!(
        !err.contains(".partial") && !err.contains("at path"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn argument_errors_exit_2_in_every_verb() {
    let tmp = tempfile::tempdir().unwrap();
    let img = ext4(tmp.path());
    let o = tmp.path().join("o.img");
    for args in [
        vec!["fs", "mkfs", "ext4", s(&o)],
        vec!["fs", "mkfs", "fat", s(&o)],
        vec![
            "fs",
            "mkfs",
            "ext4",
            s(&o),
            "--size",
            "16M",
            "--inodes",
            "0",
        ],
        vec!["fs", "chown", s(&img), "pi", "/"],
        vec!["fs", "setxattr", s(&img), "/", "user.a", "zz", "--hex"],
        vec![
            "fs",
            "mkfs",
            "ext4",
            s(&o),
            "--size",
            "16M",
            "--from",
            s(tmp.path()),
            "--from-part",
            "1",
        ],
    ] {
        let out = nodeimg(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!o.exists());
    // An operation that fails on good arguments exits 1.
    fails_with(3, &["fs", "cat", s(&img), "/missing"], &["no such file"]);
}
