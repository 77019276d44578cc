//! Randomised model test of the in-place ext4 engine: seeded sequences of
//! mixed operations on `mkfs.ext4` fixture images, `e2fsck -fn` plus a
//! debugfs look at the touched path after each operation, and the final tree
//! compared with an in-memory model through every reader.
//!
//! A failure prints the seed and the operations; rerun one sequence with
//! `EXT4_RANDOM_SEED=<seed> cargo test --test ext4_random <test name>`, or
//! run more with `EXT4_RANDOM_SCALE=10`.

mod common;

use common::fixture::Variant;
use common::random::{sequence, Writer, OPS};

fn scale() -> u64 {
    std::env::var("EXT4_RANDOM_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Runs `count` sequences (seeds `base..base+count`), or only the one in
/// `EXT4_RANDOM_SEED`; all failures are reported together.
fn sequences(variant: Variant, scope: &str, base: u64, count: u64) {
    let seeds: Vec<u64> = match std::env::var("EXT4_RANDOM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (base..base + count * scale()).collect(),
    };
    let failures: Vec<String> = seeds
        .iter()
        .filter_map(|&seed| sequence(Writer::Engine, variant, scope, seed).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} sequences failed:\n\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n\n")
    );
    eprintln!(
        "{variant:?}: {} sequences of {OPS} operations passed",
        seeds.len()
    );
}

#[test]
fn random_defaults() {
    sequences(Variant::Defaults, "/", 1_000, 40);
}

#[test]
fn random_gdt_csum() {
    sequences(Variant::GdtCsum, "/", 2_000, 30);
}

#[test]
fn random_block1k() {
    sequences(Variant::Block1k, "/", 3_000, 30);
}

#[test]
fn random_block2k() {
    sequences(Variant::Block2k, "/", 4_000, 20);
}

#[test]
fn random_no_journal() {
    sequences(Variant::NoJournal, "/", 5_000, 20);
}

#[test]
fn random_inode128() {
    sequences(Variant::Inode128, "/", 6_000, 25);
}

#[test]
fn random_htree() {
    sequences(Variant::Htree, "/big", 7_000, 15);
}

#[test]
fn random_nearly_full() {
    sequences(Variant::NearlyFull, "/", 8_000, 20);
}

#[test]
fn random_fragmented() {
    sequences(Variant::Fragmented, "/", 9_000, 10);
}
