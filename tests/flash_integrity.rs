//! A corrupt image is never written as good: bmap range checksums and the
//! bmap's own checksum (bmaptool's material and behaviour as the reference),
//! `--sha256`, containers we do not decode, unclean filesystems, and the
//! messages of a failed source. Every refusal leaves the card without a
//! partition table (or untouched, when refused before writing).

mod flash_support;

use flash_support::*;
use std::path::{Path, PathBuf};

fn flash(image: &str, card: &Loop, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "flash",
        image,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--yes",
    ];
    args.extend_from_slice(extra);
    let out = nodeimg(&args);
    (out.status.success(), stderr(&out))
}

fn bmaptool_create(img: &Path, bmap: &Path) {
    sh(
        "bmaptool",
        &[
            "create",
            "-o",
            bmap.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
}

/// A copy of `img` with one byte flipped at `offset`, holes kept.
fn damaged_copy(img: &Path, name: &str, offset: u64) -> PathBuf {
    let out = img.with_file_name(name);
    sh(
        "cp",
        &[
            "--sparse=always",
            img.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    flip(&out, offset);
    out
}

fn flip(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], offset).unwrap();
}

/// The middle of the largest range the bmap lists.
fn inside_a_mapped_range(bmap: &Path) -> u64 {
    let b = imagegen::bmap::Bmap::load(bmap).unwrap();
    let e = b
        .mapped
        .extents()
        .iter()
        .max_by_key(|e| e.len())
        .copied()
        .unwrap();
    e.start + e.len() / 2
}

fn assert_refused_without_table(ok: bool, err: &str, card: &Loop, wants: &[&str]) {
    assert!(!ok, "must be refused: {err}");
    for w in wants {
        assert!(err.contains(w), "{w:?} missing from: {err}");
    }
    assert!(!err.contains("verification ok"), "{err}");
    assert!(
        !err.contains("interrupted"),
        "nothing was interrupted: {err}"
    );
    assert!(
        card.read(0, 512).iter().all(|&b| b == 0),
        "the card has no partition table"
    );
}

#[test]
fn a_byte_flipped_in_a_mapped_block_is_refused_naming_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let bmap = dir.path().join("fixture.bmap");
    bmaptool_create(&img, &bmap);
    let at = inside_a_mapped_range(&bmap);
    let bad = damaged_copy(&img, "bad.img", at);
    let bad_zst = format!("{}.zst", bad.display());
    sh("zstd", &["-q", bad.to_str().unwrap(), "-o", &bad_zst]);
    // bmaptool, the reference, refuses it too.
    let reference = Loop::over_new_file(dir.path(), "ref", 48 << 20, 0xa5, 1 << 20);
    let st = std::process::Command::new("bmaptool")
        .args(["-q", "copy", "--bmap", bmap.to_str().unwrap()])
        .arg(&bad)
        .arg(&reference.dev)
        .output()
        .unwrap();
    assert!(!st.status.success(), "bmaptool refuses the damaged image");
    for source in [bad.to_str().unwrap(), bad_zst.as_str()] {
        let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0xa5, 48 << 20);
        let (ok, err) = flash(source, &card, &["--bmap", bmap.to_str().unwrap()]);
        assert_refused_without_table(
            ok,
            &err,
            &card,
            &["bmap range", "SHA-256", "partition table was not written"],
        );
        // The range named is the one that holds the flipped byte.
        let named = err
            .split("(bytes ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap();
        let (a, b) = named.split_once("..").unwrap();
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        assert!(a <= at && at < b, "{at} not in {named}");
    }
}

#[test]
fn an_all_zero_image_of_the_right_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let bmap = dir.path().join("fixture.bmap");
    bmaptool_create(&img, &bmap);
    let zero = dir.path().join("zero.img");
    std::fs::File::create(&zero)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0xa5, 1 << 20);
    let (ok, err) = flash(
        zero.to_str().unwrap(),
        &card,
        &["--bmap", bmap.to_str().unwrap()],
    );
    assert_refused_without_table(ok, &err, &card, &["bmap range"]);
}

#[test]
fn a_zstd_image_without_content_checksum_damaged_in_transit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let bmap = dir.path().join("fixture.bmap");
    bmaptool_create(&img, &bmap);
    let zst = dir.path().join("n.img.zst");
    sh(
        "zstd",
        &[
            "-q",
            "--no-check",
            img.to_str().unwrap(),
            "-o",
            zst.to_str().unwrap(),
        ],
    );
    let packed = std::fs::read(&zst).unwrap();
    let original = std::fs::read(&img).unwrap();
    // Prefer a flip that zstd itself does not notice: the case only the
    // bmap's checksums can catch.
    let damaged = dir.path().join("d.img.zst");
    let mut chosen = None;
    for i in 1..60 {
        let at = packed.len() * i / 61;
        let mut v = packed.clone();
        v[at] ^= 0x01;
        std::fs::write(&damaged, &v).unwrap();
        let out = std::process::Command::new("zstd")
            .args(["-q", "-d", "-c"])
            .arg(&damaged)
            .output()
            .unwrap();
        if out.status.success() && out.stdout != original {
            chosen = Some(at);
            break;
        }
    }
    let at = chosen.unwrap_or(packed.len() / 2);
    let mut v = packed.clone();
    v[at] ^= 0x01;
    std::fs::write(&damaged, &v).unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0xa5, 1 << 20);
    let (ok, err) = flash(
        damaged.to_str().unwrap(),
        &card,
        &["--bmap", bmap.to_str().unwrap()],
    );
    assert_refused_without_table(ok, &err, &card, &["partition table was not written"]);
    if chosen.is_some() {
        assert!(err.contains("bmap range"), "{err}");
    }
}

#[test]
fn a_bmap_that_was_changed_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let bmap = dir.path().join("fixture.bmap");
    bmaptool_create(&img, &bmap);
    let text = std::fs::read_to_string(&bmap).unwrap();
    // Delete the last range and fix the count, so that only the file's own
    // checksum can tell.
    let ranges: Vec<&str> = text.lines().filter(|l| l.contains("<Range")).collect();
    assert!(ranges.len() > 1, "{text}");
    let last = ranges[ranges.len() - 1];
    let blocks = |l: &str| -> u64 {
        let t = l
            .split('>')
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .trim();
        match t.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        }
    };
    let count: u64 = ranges.iter().map(|l| blocks(l)).sum();
    let cut = text.replace(&format!("{last}\n"), "").replace(
        &format!("<MappedBlocksCount> {count} "),
        &format!("<MappedBlocksCount> {} ", count - blocks(last)),
    );
    assert_ne!(cut, text);
    let changed = dir.path().join("changed.bmap");
    std::fs::write(&changed, cut).unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0xa5, 1 << 20);
    let (ok, err) = flash(
        img.to_str().unwrap(),
        &card,
        &["--bmap", changed.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(err.contains("BmapFileChecksum"), "{err}");
    assert!(card.read(0, 4096).iter().all(|&b| b == 0xa5), "untouched");
}

#[test]
fn containers_we_do_not_decode_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let lzo = format!("{}.lzo", img.display());
    sh("lzop", &["-q", "-o", &lzo, img.to_str().unwrap()]);
    let zip = dir.path().join("fixture.zip");
    let mut z = b"PK\x03\x04\x14\x00\x00\x00".to_vec();
    z.extend(vec![0u8; 1 << 20]);
    std::fs::write(&zip, z).unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0xa5, 1 << 20);
    for (file, name) in [(lzo.as_str(), "lzop"), (zip.to_str().unwrap(), "zip")] {
        let (ok, err) = flash(file, &card, &[]);
        assert!(!ok && err.contains(name), "{name}: {err}");
        assert!(card.read(0, 4096).iter().all(|&b| b == 0xa5), "untouched");
    }
}

#[test]
fn verify_with_a_bmap_compares_exactly_its_ranges_on_a_card_bmaptool_wrote() {
    let dir = tempfile::tempdir().unwrap();
    // Data in the second MiB only: block 0 is a hole bmaptool neither lists nor writes.
    let img = dir.path().join("data.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(8 << 20).unwrap();
    let data: Vec<u8> = (0..(1u32 << 20) + 1000).map(|i| (i % 241) as u8).collect();
    std::os::unix::fs::FileExt::write_all_at(&f, &data, 1 << 20).unwrap();
    drop(f);
    let bmap = dir.path().join("data.bmap");
    bmaptool_create(&img, &bmap);
    let card = Loop::over_new_file(dir.path(), "card", 8 << 20, 0xa5, 8 << 20);
    sh(
        "bmaptool",
        &[
            "-q",
            "copy",
            "--bmap",
            bmap.to_str().unwrap(),
            img.to_str().unwrap(),
            &card.dev,
        ],
    );
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", img.to_str().unwrap(), "--device", &card.dev];
        args.extend_from_slice(extra);
        let out = nodeimg(&args);
        (out.status.success(), stderr(&out))
    };
    let (ok, err) = verify(&["--bmap", bmap.to_str().unwrap()]);
    assert!(ok, "a correct card bmaptool wrote: {err}");
    // The bmap beside the image is found the same way.
    std::fs::copy(&bmap, dir.path().join("data.img.bmap")).unwrap();
    let (ok, err) = verify(&[]);
    assert!(ok, "{err}");
    // A byte of a listed range changed on the card is found.
    use std::os::unix::fs::FileExt;
    let dev = std::fs::OpenOptions::new()
        .write(true)
        .open(&card.dev)
        .unwrap();
    dev.write_all_at(&[0xff], (1 << 20) + 77).unwrap();
    dev.sync_all().unwrap();
    let (ok, err) = verify(&["--bmap", bmap.to_str().unwrap()]);
    assert!(!ok && err.contains("verification failed"), "{err}");
}

#[test]
fn the_bmap_beside_the_image_is_used_and_sha256_is_checked_first() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let bmap = dir.path().join("fixture.img.bmap");
    bmaptool_create(&img, &bmap);
    let zst = format!("{}.zst", img.display());
    sh("zstd", &["-q", "-k", img.to_str().unwrap(), "-o", &zst]);
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0xa5, 48 << 20);
    let (ok, err) = flash(&zst, &card, &[]);
    assert!(ok, "{err}");
    assert!(err.contains("using the bmap beside the image"), "{err}");
    let (_, planned) = planned_ranges(&zst, &[], &card.dev);
    let listed = imagegen::bmap::Bmap::load(&bmap).unwrap();
    let planned_bytes: u64 = planned.iter().map(|(a, b)| b - a).sum();
    assert!(
        planned_bytes <= listed.mapped.bytes() + 8192,
        "the bmap planned it"
    );
    check_filesystems(&card.dev);
    // The same bmap refuses a damaged copy beside it, unasked.
    let at = inside_a_mapped_range(&bmap);
    let bad = damaged_copy(&img, "bad.img", at);
    std::fs::copy(&bmap, dir.path().join("bad.img.bmap")).unwrap();
    let card2 = Loop::over_new_file(dir.path(), "card2", 48 << 20, 0xa5, 1 << 20);
    let (ok, err) = flash(bad.to_str().unwrap(), &card2, &[]);
    assert_refused_without_table(ok, &err, &card2, &["bmap range"]);
    // --sha256: a wrong digest writes nothing at all; a right one, or a list, passes.
    let card3 = Loop::over_new_file(dir.path(), "card3", 48 << 20, 0xa5, 1 << 20);
    let (ok, err) = flash(&zst, &card3, &["--sha256", &"0".repeat(64)]);
    assert!(!ok && err.contains("SHA-256"), "{err}");
    assert!(card3.read(0, 4096).iter().all(|&b| b == 0xa5), "untouched");
    let sum = sh("sha256sum", &[&zst]);
    let hex = sum.split_whitespace().next().unwrap();
    let (ok, err) = flash(&zst, &card3, &["--sha256", hex]);
    assert!(ok, "{err}");
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&sums, format!("{hex}  fixture.img.zst\n")).unwrap();
    let (ok, err) = flash(
        &zst,
        &card3,
        &["--sha256", sums.to_str().unwrap(), "--no-verify"],
    );
    assert!(ok, "{err}");
}

#[test]
fn an_ext4_whose_journal_needs_recovery_is_written_whole_and_the_plan_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let fs_at = format!("{}?offset={P2}", img.display());
    sh("debugfs", &["-w", "-R", "feature needs_recovery", &fs_at]);
    let zst = format!("{}.zst", img.display());
    sh("zstd", &["-q", "-k", img.to_str().unwrap(), "-o", &zst]);
    for source in [img.to_str().unwrap(), zst.as_str()] {
        let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0xa5, 48 << 20);
        let out = nodeimg(&[
            "flash",
            source,
            "--device",
            &card.dev,
            "--allow-fixed",
            "--dry-run",
        ]);
        let plan = stdout(&out);
        assert!(out.status.success(), "{}", stderr(&out));
        let p2 = plan.lines().find(|l| l.contains("partition 2")).unwrap();
        assert!(p2.contains("journal needs recovery"), "{plan}");
        let (ok, err) = flash(source, &card, &[]);
        assert!(ok, "{err}");
        assert!(
            cmp_range(img.to_str().unwrap(), &card.dev, P2, 28 << 20),
            "{source}: the whole partition was written"
        );
    }
}

#[test]
fn a_truncated_image_is_a_source_error_not_an_interruption() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let zst = format!("{}.zst", img.display());
    sh("zstd", &["-q", "-k", img.to_str().unwrap(), "-o", &zst]);
    let packed = std::fs::read(&zst).unwrap();
    std::fs::write(&zst, &packed[..packed.len() * 2 / 3]).unwrap();
    // Without a size to go by, the truncation shows before anything is written.
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0xa5, 1 << 20);
    let (ok, err) = flash(&zst, &card, &["--no-bmap"]);
    assert!(!ok && err.contains("corrupt or truncated"), "{err}");
    assert!(card.read(0, 4096).iter().all(|&b| b == 0xa5), "untouched");
    // With the size from a bmap, it shows while writing: a source error,
    // said as such, and no partition table.
    let bmap = dir.path().join("fixture.bmap");
    bmaptool_create(&img, &bmap);
    let (ok, err) = flash(&zst, &card, &["--bmap", bmap.to_str().unwrap()]);
    assert_refused_without_table(ok, &err, &card, &["corrupt or truncated", "image failed"]);
}
