//! The structured fuzz target `fuzz/fuzz_targets/ext4_ops.rs`, run as a
//! seeded loop so the normal suite drives it too (cargo-fuzz needs nightly
//! and is not installed on every machine): random operation sequences on
//! images made by `mkfs.ext4`, each operation either leaving the maps
//! consistent (the engine's scan) or failing with the image byte-identical.
//!
//! More: `EXT4_OPS_FUZZ_RUNS=100000 cargo test --release --test ext4_ops_fuzz`;
//! one seed: `EXT4_OPS_FUZZ_SEED=N`.

mod common;

#[path = "../fuzz/ops_driver.rs"]
mod ops_driver;

use common::fixture::mkfs;
use common::rng::Rng;
use imagegen::block::MemDevice;
use std::sync::Arc;

fn base(args: &[&str], size_mib: u64) -> Arc<MemDevice> {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("base.img");
    mkfs(&img, size_mib, args, None).unwrap();
    Arc::new(MemDevice::from_vec(std::fs::read(&img).unwrap()))
}

#[test]
fn random_operation_sequences_never_make_the_filesystem_worse() {
    let runs: u64 = std::env::var("EXT4_OPS_FUZZ_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let only: Option<u64> = std::env::var("EXT4_OPS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    let bases = [
        base(&["-b", "1024", "-N", "64", "-O", "^has_journal"], 2),
        base(&["-b", "1024", "-N", "128"], 4),
        base(
            &[
                "-T",
                "default",
                "-O",
                "^metadata_csum,^64bit,uninit_bg",
                "-N",
                "128",
            ],
            16,
        ),
    ];
    let mut ops = 0;
    for seed in 0..runs {
        if only.is_some_and(|s| s != seed) {
            continue;
        }
        let mut rng = Rng::new(seed);
        let len = 8 + (rng.bytes(1)[0] as usize) * 2;
        let input = rng.bytes(len);
        let base = &bases[(seed % bases.len() as u64) as usize];
        let r = std::panic::catch_unwind(|| ops_driver::run(base, &input));
        match r {
            Ok(n) => ops += n,
            Err(_) => panic!("seed {seed} (EXT4_OPS_FUZZ_SEED={seed} to rerun)"),
        }
    }
    eprintln!("{runs} sequences, {ops} operations");
    assert!(only.is_some() || ops > runs as usize);
}
