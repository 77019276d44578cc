//! `flash` from the command line: a card mounted under a work directory is
//! media, not the system disk; SIGTERM stops a flash before the partition
//! table with one line and exit 143; argument errors exit 2.

mod flash_support;

use flash_support::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[test]
fn a_card_mounted_under_a_work_directory_is_not_the_system_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img = img.to_str().unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0x11, 1 << 20);
    let swaps = dir.path().join("swaps");
    std::fs::write(&swaps, "Filename Type Size Used Priority\n").unwrap();
    let mounted_at = |mountpoint: &str| {
        let mountinfo = dir.path().join("mountinfo");
        std::fs::write(
            &mountinfo,
            format!(
                "1 0 {} / {mountpoint} rw - ext4 {} rw\n",
                card.devnum(),
                card.dev
            ),
        )
        .unwrap();
        let swaps = swaps.clone();
        move |args: &[&str]| {
            nodeimg_env(
                args,
                &[
                    ("NODEIMG_MOUNTINFO", mountinfo.to_str().unwrap()),
                    ("NODEIMG_SWAPS", swaps.to_str().unwrap()),
                ],
            )
        }
    };
    let dry = [
        "flash",
        img,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--dry-run",
    ];
    // Under /media: unmounted after confirmation (docs/flash.md).
    let out = mounted_at("/media/pi/card")(&dry);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("after unmounting /media/pi/card"),
        "{}",
        stdout(&out)
    );
    // Under a work directory: not the system disk, but not ours to
    // unmount either (docs/flash.md names the directories flash unmounts).
    let run = mounted_at("/home/pi/work/card");
    let out = run(&dry);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("mounted at /home/pi/work/card, outside /media") && !err.contains("system"),
        "{err}"
    );
    // The same device twice: refused (3), like every other device check.
    let out = run(&[
        "flash",
        img,
        "--device",
        &card.dev,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("given twice"), "{}", stderr(&out));
}

#[test]
fn sigterm_stops_a_flash_before_the_table() {
    let dir = tempfile::tempdir().unwrap();
    // 256 MiB of data in one partition of unknown type: written in full.
    let img = dir.path().join("data.img");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&img).unwrap());
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8 | 1).collect();
        for _ in 0..256 {
            f.write_all(&chunk).unwrap();
        }
    }
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", img.to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\n2048,,da\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let card = Loop::over_new_file(dir.path(), "card", 256 << 20, 0x11, 1 << 20);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args([
            "flash",
            img.to_str().unwrap(),
            "--device",
            &card.dev,
            "--allow-fixed",
            "--yes",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The first progress event: writing has begun.
    for line in lines.by_ref() {
        if line.unwrap().contains("\"progress\"") {
            break;
        }
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    for _ in lines {}
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(
        err.contains("interrupted by SIGTERM") && err.contains("partition table was not written"),
        "{err}"
    );
    assert!(
        card.read(0, 512).iter().all(|&b| b == 0),
        "no partition table on an interrupted card"
    );
}
