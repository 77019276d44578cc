//! Faults: a card that fills up mid-write (a loop device over a file on a
//! small tmpfs), a byte changed on a card after flashing, and Ctrl-C during a
//! write. None may leave a valid partition table or print success.

mod flash_support;

use flash_support::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn card_that_fills_up_fails_alone_with_the_offset_and_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img = img.to_str().unwrap();
    // The backing file claims 48 MiB but the tmpfs under it holds 2 MiB:
    // writes past that fail inside the kernel like a dying card.
    let tmpfs = Mounted::tmpfs(&dir.path().join("small"), 2 << 20);
    let bad = Loop::over_new_file(&tmpfs.dir, "card", 48 << 20, 0, 0);
    let good = Loop::over_new_file(dir.path(), "good", 48 << 20, 0, 0);
    let out = nodeimg(&[
        "flash",
        img,
        "--device",
        &bad.dev,
        "--device",
        &good.dev,
        "--allow-fixed",
        "--yes",
    ]);
    let err = stderr(&out);
    // A device that fails while written: an I/O error (5), not a refusal.
    assert_eq!(out.status.code(), Some(5), "{err}");
    let bad_line = err
        .lines()
        .find(|l| l.contains(&bad.dev))
        .unwrap_or_else(|| panic!("no line for {}: {err}", bad.dev));
    assert!(
        bad_line.contains("error") && bad_line.contains("failed at offset"),
        "{bad_line}"
    );
    assert!(!bad_line.contains("verification ok"));
    // The other card of the run finished and was verified.
    let good_line = err.lines().find(|l| l.contains(&good.dev)).unwrap();
    assert!(good_line.contains("verification ok"), "{err}");
    check_filesystems(&good.dev);
    // The failed card has no partition table.
    let sfdisk = Command::new("sfdisk")
        .args(["--json", &bad.dev])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&sfdisk.stdout);
    assert!(
        !table.contains("partitions"),
        "the failed card has a table: {table}"
    );
    assert!(bad.read(0, 512).iter().all(|&b| b == 0));
    drop(bad);
}

#[test]
fn verify_finds_a_byte_changed_after_flashing() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img = img.to_str().unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0, 0);
    let out = nodeimg(&[
        "flash",
        img,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--yes",
        "--no-verify",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("verification skipped"));
    let ok = nodeimg(&["verify", img, "--device", &card.dev]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    // Change one byte inside the ext4 superblock on the card.
    let at = P2 + 1024 + 100;
    let mut byte = card.read(at, 1);
    byte[0] ^= 0xff;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&card.dev)
            .unwrap();
        f.write_all_at(&byte, at).unwrap();
        f.sync_all().unwrap();
    }
    let bad = nodeimg(&["verify", img, "--device", &card.dev]);
    let err = stderr(&bad);
    // A read-back difference: verification failed (4).
    assert_eq!(bad.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("first difference at offset {at}")),
        "{err}"
    );
    let json = nodeimg(&["verify", img, "--device", &card.dev, "--json"]);
    let last = stdout(&json).lines().last().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["verification"].as_str()),
        (Some(false), Some("failed"))
    );
}

#[test]
fn ctrl_c_stops_before_the_partition_table() {
    let dir = tempfile::tempdir().unwrap();
    // 160 MiB of data behind an MBR: long enough to interrupt.
    let img = dir.path().join("big.img");
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 13 % 253) as u8 | 1).collect();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&img).unwrap());
        for _ in 0..160 {
            f.write_all(&data).unwrap();
        }
    }
    let mut child = Command::new("sfdisk")
        .args(["-q", img.to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\n2048,,83\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let card = Loop::over_new_file(dir.path(), "card", 192 << 20, 0, 0);
    // An old table on the card, which must not survive either.
    {
        use std::os::unix::fs::FileExt;
        let head = std::fs::read(&img).unwrap()[..512].to_vec();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&card.dev)
            .unwrap();
        f.write_all_at(&head, 0).unwrap();
        f.sync_all().unwrap();
    }
    assert_eq!(card.read(510, 2), [0x55, 0xaa]);
    let mut flash = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
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
    // Interrupt as soon as the writer reports its start (it has cleared the
    // old table and is about to write data): writing and flushing 160 MiB
    // takes far longer than the signal needs to arrive.
    let mut lines = BufReader::new(flash.stdout.take().unwrap()).lines();
    let mut interrupted = false;
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let (done, total) = (
            v["bytes"].as_u64().unwrap_or(0),
            v["total"].as_u64().unwrap_or(0),
        );
        if v["phase"] == "write" && done < total / 2 {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(flash.id() as i32, libc::SIGINT) };
            interrupted = true;
            break;
        }
    }
    assert!(
        interrupted,
        "the write finished before it could be interrupted"
    );
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = flash.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut flash.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("partition table was not written"),
        "{err}"
    );
    let summary: serde_json::Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(summary["ok"], false);
    assert!(
        card.read(0, 512).iter().all(|&b| b == 0),
        "no table after Ctrl-C"
    );
}
