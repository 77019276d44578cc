//! Checks of the ext4 test harness itself, independent of our engine: the
//! fixtures are what the model says, every independent reader agrees with
//! the model, and the oracles do notice damage. A harness that cannot fail
//! judges nothing.

mod common;

use common::fixture::{Fixture, Variant};
use common::mount::RoMount;
use common::random::{sequence, Writer};
use common::{check, oracle, tree};
use std::process::Command;

#[test]
fn every_fixture_is_clean_and_matches_its_model() {
    for variant in Variant::ALL {
        let fx = Fixture::new(variant);
        let problems = check::readers(&fx.image, &fx.model, variant, false, true);
        assert!(problems.is_empty(), "{variant:?}:\n{}", problems.join("\n"));
    }
}

#[test]
fn fixtures_have_the_features_they_claim() {
    let features = |v| {
        let fx = Fixture::new(v);
        oracle::superblock_field(&fx.image, "Filesystem features:").unwrap_or_default()
    };
    let gdt = features(Variant::GdtCsum);
    assert!(
        gdt.contains("uninit_bg") && !gdt.contains("metadata_csum") && !gdt.contains("64bit"),
        "{gdt}"
    );
    assert!(features(Variant::Defaults).contains("metadata_csum"));
    assert!(!features(Variant::NoJournal).contains("has_journal"));
    assert!(features(Variant::InlineData).contains("inline_data"));

    let fx = Fixture::new(Variant::InlineData);
    let st = oracle::stat(&fx.image, "/inline/tiny.txt").unwrap();
    assert!(
        st.flags & 0x1000_0000 != 0,
        "tiny.txt is not inline: {}",
        st.raw
    );

    let fx = Fixture::new(Variant::NearlyFull);
    let (blocks, inodes) = oracle::free_counts(&fx.image);
    assert!(
        blocks < 64 && inodes < 64,
        "not nearly full: {blocks} blocks, {inodes} inodes free"
    );

    let fx = Fixture::new(Variant::Fragmented);
    let (blocks, _) = oracle::free_counts(&fx.image);
    assert!(
        blocks > 700,
        "fragmented fixture has only {blocks} free blocks"
    );
}

#[test]
fn fsck_oracle_notices_a_damaged_bitmap_count() {
    let fx = Fixture::new(Variant::Defaults);
    // Lower the superblock's free-inode count (offset 1024 + 0x10).
    let mut img = std::fs::read(&fx.image).unwrap();
    let at = 1024 + 0x10;
    img[at] = img[at].wrapping_sub(3);
    std::fs::write(&fx.image, &img).unwrap();
    assert!(oracle::fsck_clean(&fx.image).is_err());
}

#[test]
fn readers_notice_a_wrong_model() {
    let fx = Fixture::new(Variant::Block1k);
    let mut model = fx.model.clone();
    let ok = model.apply(&common::ops::Op::Chmod {
        path: "/etc/hostname".into(),
        mode: 0o600,
    });
    assert!(ok);
    let mount = RoMount::new(&fx.image).unwrap();
    let got = tree::from_host(mount.root(), true).unwrap();
    let d = tree::diff(&model.tree(), &got, "kernel");
    assert_eq!(
        d,
        vec!["kernel: /etc/hostname: mode is 644, expected 600".to_string()]
    );
}

#[test]
fn duplicate_names_are_counted() {
    // Make a second `hostname` entry by hand (a link named `hostnamX`,
    // renamed in the raw bytes; no directory checksums in this variant):
    // exactly the damage the replace tests look for.
    let fx = Fixture::new(Variant::GdtCsum);
    assert_eq!(
        oracle::count_entries(&fx.image, "/etc", "hostname").unwrap(),
        1
    );
    let out = oracle::run(
        Command::new("debugfs")
            .args(["-w", "-R", "ln /etc/hosts /etc/hostnamX"])
            .arg(&fx.image),
    );
    assert!(out.status.success());
    let mut img = std::fs::read(&fx.image).unwrap();
    let at = img
        .windows(8)
        .position(|w| w == b"hostnamX")
        .expect("new entry in the image");
    img[at + 7] = b'e';
    std::fs::write(&fx.image, &img).unwrap();
    assert_eq!(
        oracle::count_entries(&fx.image, "/etc", "hostname").unwrap(),
        2
    );
}

#[test]
fn loop_mount_is_detached_when_the_test_panics() {
    let fx = Fixture::new(Variant::Block1k);
    let image = fx.image.clone();
    let result = std::panic::catch_unwind(|| {
        let _m = RoMount::new(&image).unwrap();
        panic!("deliberate");
    });
    assert!(result.is_err());
    let out = oracle::run(Command::new("losetup").arg("-j").arg(&fx.image));
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "loop device left behind: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn debugfs_oracles_parse() {
    let fx = Fixture::new(Variant::Defaults);
    let st = oracle::stat(&fx.image, "/etc/shadow").unwrap();
    assert_eq!(
        (st.kind.as_str(), st.mode, st.uid, st.gid, st.size, st.links),
        ("regular", 0o640, 0, 42, 26, 1)
    );
    assert_eq!(
        oracle::cat(&fx.image, "/etc/hostname").unwrap(),
        b"seed-node\n"
    );
    assert_eq!(
        oracle::link_target(&fx.image, "/link-to-hostname").unwrap(),
        "etc/hostname"
    );
    assert_eq!(
        oracle::xattr(&fx.image, "/etc/hostname", "security.capability").unwrap(),
        None
    );
    assert!(oracle::stat(&fx.image, "/nope").is_err());
}

/// The random sequences the engine faces, written by debugfs instead: the
/// generator, the model and every oracle must accept a correct writer.
/// (Not on the nearly full fixture: debugfs leaves half-done work on ENOSPC.)
#[test]
fn random_sequences_pass_with_debugfs_as_the_writer() {
    let runs = [
        (Variant::Defaults, "/", 10),
        (Variant::Block1k, "/", 4),
        (Variant::Htree, "/big", 3),
    ];
    let mut failures = Vec::new();
    for (variant, scope, count) in runs {
        for seed in 0..count {
            if let Err(e) = sequence(Writer::Debugfs, variant, scope, seed) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The fragmented fixture really forces deep extent trees: debugfs's own
/// allocator needs depth 2 for a file that fills the holes.
#[test]
fn fragmented_fixture_forces_a_deep_extent_tree() {
    let fx = Fixture::new(Variant::Fragmented);
    let (free, _) = oracle::free_counts(&fx.image);
    let local = fx.scratch().join("fill");
    std::fs::write(&local, vec![0x5au8; ((free - 40) * 1024) as usize]).unwrap();
    let out = oracle::run(
        Command::new("debugfs")
            .arg("-w")
            .arg("-R")
            .arg(format!("write {} /scattered", local.display()))
            .arg(&fx.image),
    );
    assert!(out.status.success());
    oracle::assert_fsck_clean(&fx.image, "debugfs write into holes");
    let depth = oracle::extent_depth(&fx.image, "/scattered").unwrap();
    assert!(depth >= 2, "extent tree depth {depth}");
}
