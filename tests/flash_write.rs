//! `nodeimg flash` writes fixture images (raw, zstd, xz, with and without a
//! bmap, to one or two cards at once) to loop devices; `cmp` compares every
//! planned range with the image, and e2fsck, fsck.vfat, mtools and sfdisk
//! read the cards back.

mod flash_support;

use flash_support::*;

fn flash_ok(args: &[&str]) -> String {
    let out = nodeimg(args);
    assert!(
        out.status.success(),
        "flash {args:?} failed: {}",
        stderr(&out)
    );
    stderr(&out)
}

/// Every planned range of the device equals the image there.
fn assert_planned_ranges_match(image: &str, raw: &str, extra: &[&str], dev: &str) -> u64 {
    let (size, ranges) = planned_ranges(image, extra, dev);
    for (start, end) in &ranges {
        assert!(
            cmp_range(raw, dev, *start, end - start),
            "{dev} differs from {raw} in {start}..{end}"
        );
    }
    ranges.iter().map(|(s, e)| e - s).sum::<u64>().min(size)
}

#[test]
fn raw_sparse_image_is_written_sparsely_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img = img.to_str().unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 64 << 20, 0xa5, 64 << 20);
    let err = flash_ok(&[
        "flash",
        img,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--yes",
    ]);
    assert!(err.contains("verification ok"), "{err}");
    let written = assert_planned_ranges_match(img, img, &[], &card.dev);
    assert!(
        written < 20 << 20,
        "sparse: only {written} of 40 MiB planned"
    );
    // Skipped ranges kept the card's old bytes: the plan really skipped them.
    assert!(card.read(30 << 20, 4096).iter().all(|&b| b == 0xa5));
    check_filesystems(&card.dev);
}

/// Compressed images are written sparsely: the filesystems' maps are learned
/// as the image streams past, so the card keeps its old bytes where nothing
/// is used — exactly as for the raw image — in one pass over the stream.
#[test]
fn compressed_images_are_written_sparsely() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img_s = img.to_str().unwrap();
    sh("zstd", &["-q", "-k", img_s, "-o", &format!("{img_s}.zst")]);
    sh("xz", &["-k", "-T2", img_s]);
    sh("bzip2", &["-k", "-1", img_s]);
    sh("lz4", &["-q", img_s, &format!("{img_s}.lz4")]);
    for ext in ["zst", "xz", "bz2", "lz4"] {
        let compressed = format!("{img_s}.{ext}");
        let card =
            Loop::over_new_file(dir.path(), &format!("card-{ext}"), 48 << 20, 0x5a, 48 << 20);
        let err = flash_ok(&[
            "flash",
            &compressed,
            "--device",
            &card.dev,
            "--allow-fixed",
            "--yes",
        ]);
        assert!(err.contains("verification ok"), "{ext}: {err}");
        assert!(
            card.read(30 << 20, 4096).iter().all(|&b| b == 0x5a),
            "{ext}: unused blocks were skipped"
        );
        if ext == "bz2" || ext == "lz4" {
            // Same path as the others from here on; spare the slow decoders.
            continue;
        }
        let written = assert_planned_ranges_match(&compressed, img_s, &[], &card.dev);
        assert!(written < 20 << 20, "{ext}: {written} of 40 MiB planned");
        // The raw image's plan comes from random access to its filesystems.
        let (_, raw_plan) = planned_ranges(img_s, &[], &card.dev);
        let (_, learned) = planned_ranges(&compressed, &[], &card.dev);
        assert_eq!(
            learned, raw_plan,
            "{ext}: the stream teaches what random access reads"
        );
        assert!(
            card.read(30 << 20, 4096).iter().all(|&b| b == 0x5a),
            "{ext}: unused blocks were skipped"
        );
        check_filesystems(&card.dev);
        let v = nodeimg(&["verify", &compressed, "--device", &card.dev]);
        assert!(v.status.success(), "verify {ext}: {}", stderr(&v));
    }
}

#[test]
fn bmap_limits_the_write_to_mapped_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img_s = img.to_str().unwrap();
    let bmap = dir.path().join("fixture.bmap");
    sh("bmaptool", &["create", "-o", bmap.to_str().unwrap(), img_s]);
    sh("zstd", &["-q", "-k", img_s, "-o", &format!("{img_s}.zst")]);
    for source in [img_s.to_string(), format!("{img_s}.zst")] {
        let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0xa5, 48 << 20);
        let b = bmap.to_str().unwrap();
        flash_ok(&[
            "flash",
            &source,
            "--bmap",
            b,
            "--device",
            &card.dev,
            "--allow-fixed",
            "--yes",
        ]);
        let written = assert_planned_ranges_match(&source, img_s, &["--bmap", b], &card.dev);
        assert!(written < 20 << 20, "bmap: {written} bytes planned");
        assert!(card.read(30 << 20, 4096).iter().all(|&b| b == 0xa5));
        check_filesystems(&card.dev);
        drop(card);
    }
}

#[test]
fn two_cards_are_written_from_one_read_with_a_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img = img.to_str().unwrap();
    let a = Loop::over_new_file(dir.path(), "a", 48 << 20, 0, 0);
    let b = Loop::over_new_file(dir.path(), "b", 64 << 20, 0xff, 1 << 20);
    let out = nodeimg(&[
        "flash",
        img,
        "--device",
        &a.dev,
        "--device",
        &b.dev,
        "--allow-fixed",
        "--yes",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["event"] == "progress" && l["phase"] == "write"));
    assert!(lines
        .iter()
        .any(|l| l["event"] == "progress" && l["phase"] == "verify"));
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["ok"], true);
    let devices = summary["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    for d in devices {
        assert_eq!(d["verification"], "ok");
        assert!(d["bytes_written"].as_u64().unwrap() > 3_000_000);
        assert!(d["bytes_skipped"].as_u64().unwrap() > 0);
        assert!(d["mb_per_s"].as_f64().is_some() && d["seconds"].as_f64().is_some());
    }
    for card in [&a, &b] {
        assert_planned_ranges_match(img, img, &[], &card.dev);
        check_filesystems(&card.dev);
    }
}

/// A card that once held a larger GPT image keeps no trace of its backup
/// table after an MBR image is written: its last 33 sectors are zeroed, and
/// sfdisk sees the MBR only.
#[test]
fn an_old_backup_gpt_does_not_survive_an_mbr_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img = img.to_str().unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 96 << 20, 0, 0);
    let old = "label: gpt\nstart=2048, size=8192, type=L\n";
    let mut child = std::process::Command::new("sfdisk")
        .args(["-q", "--no-reread", &card.dev])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(old.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let size = 96u64 << 20;
    assert_eq!(
        &card.read(size - 512, 8)[..],
        b"EFI PART",
        "the backup GPT header is there"
    );
    flash_ok(&[
        "flash",
        img,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--yes",
    ]);
    assert!(
        card.read(size - 33 * 512, 33 * 512).iter().all(|&b| b == 0),
        "the old backup GPT was zeroed"
    );
    let json = sh("sfdisk", &["--json", &card.dev]);
    assert!(json.contains("\"label\": \"dos\""), "{json}");
    check_filesystems(&card.dev);
}
