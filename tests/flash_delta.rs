//! Base ⊕ node delta written straight to a card (raw and zstd base), compared
//! with the node image by `cmp` over the planned ranges and by mtools; a
//! delta over the wrong base is refused before anything is written.

mod flash_support;

use flash_support::*;
use std::process::Command;

/// A node image (the fixture with a new config.txt and a changed block in a
/// hole of the base) and its delta against the fixture.
fn node_and_delta(dir: &std::path::Path, base: &std::path::Path) -> (String, String) {
    let node = dir.join("node.img");
    std::fs::copy(base, &node).unwrap();
    let cfg = dir.join("node-config.txt");
    std::fs::write(&cfg, "arm_64bit=1\nhostname=node7\n").unwrap();
    let out = Command::new("mcopy")
        .args(["-o", "-i", &format!("{}@@{}", node.display(), 1u64 << 20)])
        .arg(&cfg)
        .arg("::config.txt")
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&node).unwrap();
        // Inside the ext4 partition's free space: no map says it is used,
        // but the delta changed it, so it must be written.
        f.write_all_at(b"changed by the node", 36 << 20).unwrap();
    }
    let delta = dir.join("node.delta");
    imagegen::delta::create_from_images(base, &node, &delta, 4096).unwrap();
    (
        node.to_str().unwrap().to_string(),
        delta.to_str().unwrap().to_string(),
    )
}

#[test]
fn base_plus_delta_is_the_node_image_on_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture_image(dir.path());
    let (node, delta) = node_and_delta(dir.path(), &base);
    let base_s = base.to_str().unwrap().to_string();
    let zst = format!("{base_s}.zst");
    sh("zstd", &["-q", "-k", &base_s, "-o", &zst]);
    for source in [base_s.clone(), zst] {
        let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0xa5, 48 << 20);
        let out = nodeimg(&[
            "flash",
            &source,
            "--delta",
            &delta,
            "--device",
            &card.dev,
            "--allow-fixed",
            "--yes",
        ]);
        assert!(out.status.success(), "{source}: {}", stderr(&out));
        let (_, ranges) = planned_ranges(&source, &["--delta", &delta], &card.dev);
        for (s, e) in ranges {
            assert!(
                cmp_range(&node, &card.dev, s, e - s),
                "{source}: differs in {s}..{e}"
            );
        }
        assert_eq!(card.read(36 << 20, 19), b"changed by the node");
        let fat = partition(&card.dev, 1 << 20, 11 << 20);
        let mtype = Command::new("mtype")
            .args(["-i", &fat.dev, "::config.txt"])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&mtype.stdout),
            "arm_64bit=1\nhostname=node7\n"
        );
        sh("fsck.vfat", &["-n", &fat.dev]);
        drop(fat);
        let v = nodeimg(&["verify", &source, "--delta", &delta, "--device", &card.dev]);
        assert!(v.status.success(), "verify: {}", stderr(&v));
    }
}

#[test]
fn delta_over_the_wrong_base_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture_image(dir.path());
    let (node, delta) = node_and_delta(dir.path(), &base);
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0x77, 1 << 20);
    // The node image is not the delta's base.
    let out = nodeimg(&[
        "flash",
        &node,
        "--delta",
        &delta,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--yes",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("SHA-256"), "{err}");
    assert!(
        card.read(0, 4096).iter().all(|&b| b == 0x77),
        "nothing written"
    );
}

#[test]
fn compressed_wrong_base_leaves_no_partition_table() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture_image(dir.path());
    let (node, delta) = node_and_delta(dir.path(), &base);
    let zst = format!("{node}.zst");
    sh("zstd", &["-q", "-k", &node, "-o", &zst]);
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0x77, 1 << 20);
    let out = nodeimg(&[
        "flash",
        &zst,
        "--delta",
        &delta,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--yes",
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("SHA-256") || err.contains("base"), "{err}");
    assert!(err.contains("partition table was not written"), "{err}");
    assert!(!err.contains("verification ok"), "{err}");
    assert!(card.read(0, 512).iter().all(|&b| b == 0), "no table");
}
