//! Seeded random operation sequences and their runner, shared by the
//! randomised engine test and the harness self-check (which replays the same
//! sequences through debugfs, a reference writer, to prove the oracles and
//! the model agree before they judge the engine).

use super::check;
use super::engine;
use super::fixture::{Fixture, Variant, HTREE_ENTRIES};
use super::model::{Content, Model};
use super::ops::{cap_net_bind_service, Op};
use super::oracle;
use super::rng::Rng;

/// Who applies the operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// Our engine, through `imagegen::fs::open`.
    Engine,
    /// `debugfs -w`, for operations the model accepts (harness self-check).
    Debugfs,
}

/// Operations per sequence.
pub const OPS: usize = 8;

fn names(scope: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "a",
        "b",
        "c",
        "dir",
        "hostname",
        "hosts",
        "x.conf",
        "long-name-for-the-directory-entry-that-takes-room",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if scope == "/big" {
        for i in [0, 7, 499, 2500, HTREE_ENTRIES - 1] {
            v.push(format!("entry-{i:05}"));
        }
        for i in 0..8 {
            v.push(format!("new-entry-{i}"));
        }
    }
    v
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn data(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(100) {
        0..=9 => 0,
        10..=39 => 1 + rng.below(100),
        40..=69 => 100 + rng.below(5000),
        70..=94 => 5000 + rng.below(200_000),
        _ => (1 << 20) + rng.below(2 << 20),
    } as usize;
    // Compressible or random, so runs and literal bytes are both covered.
    if rng.percent(50) {
        let b = rng.below(256) as u8;
        vec![b; len]
    } else {
        rng.bytes(len)
    }
}

fn target(rng: &mut Rng) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789/._-";
    // Fast (< 60 bytes, in the inode) and slow (a data block) symlinks.
    let len = if rng.percent(60) {
        1 + rng.below(59)
    } else {
        60 + rng.below(300)
    };
    (0..len).map(|_| *rng.pick(CHARS) as char).collect()
}

/// A value from `f`, or (30 %) none, to exercise the defaults.
fn maybe(rng: &mut Rng, f: impl FnOnce(&mut Rng) -> u32) -> Option<u32> {
    let v = f(rng);
    rng.percent(70).then_some(v)
}

/// Generates one operation. Mostly valid ones; some that must fail (missing
/// parent, existing name, non-empty directory, a file over a directory) to
/// check that refusals change nothing.
pub fn gen(rng: &mut Rng, model: &Model, scope: &str) -> Op {
    let dirs: Vec<String> = std::iter::once(scope.to_string())
        .chain(
            model
                .below(scope)
                .into_iter()
                .filter(|p| model.is_dir(p) && !p.starts_with("/lost+found")),
        )
        .collect();
    let pool = names(scope);
    let existing: Vec<String> = model
        .below(scope)
        .into_iter()
        .filter(|p| !p.starts_with("/lost+found"))
        .collect();
    let files: Vec<String> = existing
        .iter()
        .filter(|p| matches!(model.node(p).map(|n| &n.content), Some(Content::File(_))))
        .cloned()
        .collect();
    let not_links: Vec<String> = existing
        .iter()
        .filter(|p| !matches!(model.node(p).map(|n| &n.content), Some(Content::Symlink(_))))
        .cloned()
        .collect();
    loop {
        let mut dir = rng.pick(&dirs).clone();
        if rng.percent(4) {
            dir = join(&dir, "missing-parent");
        }
        let path = join(&dir, rng.pick::<String>(&pool));
        let op = match rng.below(100) {
            0..=29 => {
                if model.exists(&path) {
                    // Replacing (or, over a directory or symlink, a refusal).
                    Op::Put {
                        path,
                        data: data(rng),
                        mode: maybe(rng, |r| *r.pick(&[0o644, 0o600, 0o755, 0o4755])),
                        uid: maybe(rng, |r| r.below(3) as u32 * 1000),
                        gid: maybe(rng, |r| r.below(3) as u32 * 1000),
                    }
                } else {
                    Op::Put {
                        path,
                        data: data(rng),
                        mode: maybe(rng, |r| *r.pick(&[0o644, 0o600, 0o755, 0o2750])),
                        uid: maybe(rng, |r| r.below(3) as u32 * 1000),
                        gid: maybe(rng, |r| r.below(3) as u32 * 1000),
                    }
                }
            }
            30..=41 => Op::Mkdir {
                path,
                parents: false,
                mode: maybe(rng, |r| *r.pick(&[0o755, 0o700, 0o1777])),
                uid: maybe(rng, |_| 1000),
                gid: maybe(rng, |_| 1000),
            },
            42..=46 => Op::Mkdir {
                path: join(&path, rng.pick::<String>(&pool)),
                parents: true,
                mode: maybe(rng, |r| *r.pick(&[0o755, 0o700])),
                uid: maybe(rng, |_| 1000),
                gid: maybe(rng, |_| 1000),
            },
            47..=54 => Op::Symlink {
                target: target(rng),
                path,
                uid: maybe(rng, |_| 1000),
                gid: maybe(rng, |_| 1000),
            },
            55..=61 if !files.is_empty() => Op::Link {
                existing: rng.pick(&files).clone(),
                new: path,
            },
            62..=73 if !existing.is_empty() => Op::Rm {
                path: rng.pick(&existing).clone(),
                recursive: false,
            },
            74..=77 if !existing.is_empty() => Op::Rm {
                path: rng.pick(&existing).clone(),
                recursive: true,
            },
            78..=83 if !not_links.is_empty() => Op::Chmod {
                path: rng.pick(&not_links).clone(),
                mode: *rng.pick(&[0o644, 0o600, 0o755, 0o4755, 0o1777, 0o0]),
            },
            84..=89 if !not_links.is_empty() => Op::Chown {
                path: rng.pick(&not_links).clone(),
                uid: maybe(rng, |r| r.below(70000) as u32),
                gid: maybe(rng, |r| r.below(70000) as u32),
            },
            90..=95 if !not_links.is_empty() => {
                let mut value = cap_net_bind_service();
                if rng.percent(50) {
                    value[4] = rng.below(256) as u8;
                }
                Op::SetXattr {
                    path: rng.pick(&not_links).clone(),
                    name: "security.capability".into(),
                    value,
                }
            }
            96..=99 if !not_links.is_empty() => Op::RmXattr {
                path: rng.pick(&not_links).clone(),
                name: "security.capability".into(),
            },
            _ => continue,
        };
        return op;
    }
}

/// Runs one seeded sequence; `Err` is a report naming seed, ops and the
/// oracle's complaint.
pub fn sequence(writer: Writer, variant: Variant, scope: &str, seed: u64) -> Result<(), String> {
    let fx = Fixture::new(variant);
    let mut model = fx.model.clone();
    let mut rng = Rng::new(seed);
    let mut log: Vec<String> = Vec::new();
    let report = |log: &[String], what: String| {
        format!(
            "{variant:?} seed {seed} failed after:\n  {}\n{what}",
            log.join("\n  ")
        )
    };
    for _ in 0..OPS {
        let op = gen(&mut rng, &model, scope);
        log.push(op.to_string());
        let mut next = model.clone();
        let should = next.apply(&op);
        let may_run_out = matches!(variant, Variant::NearlyFull | Variant::Fragmented);
        let before = (!should || may_run_out).then(|| oracle::Snapshot::take(&fx.image));
        let result = match writer {
            Writer::Engine => engine::with_writable(&fx.image, |fs| op.apply(fs)),
            Writer::Debugfs if should => super::ops::apply_with_debugfs(&fx.image, &op, &model)
                .map_err(imagegen::Error::Invalid),
            Writer::Debugfs => Err(imagegen::Error::Invalid("refused by the model".into())),
        };
        let failed = match (should, result) {
            (true, Ok(())) => {
                model = next;
                false
            }
            (false, Err(_)) => true,
            (true, Err(imagegen::Error::NoSpace(_))) if may_run_out => true,
            (true, Err(e)) => {
                return Err(report(
                    &log,
                    format!("engine refused a valid operation: {e}"),
                ))
            }
            (false, Ok(())) => {
                return Err(report(
                    &log,
                    "engine accepted an operation that must fail".into(),
                ))
            }
        };
        // A failed operation leaves the image byte-for-byte unchanged.
        if let (true, Some(before)) = (failed, before) {
            if let Some(d) = before.differences(&fx.image) {
                return Err(report(
                    &log,
                    format!("a failed operation changed the image: {d}"),
                ));
            }
        }
        check::after_op(&fx.image, &model, &op).map_err(|e| report(&log, e))?;
    }
    let rdump = model.entries.len() < 1000;
    let problems = check::readers(&fx.image, &model, variant, writer == Writer::Engine, rdump);
    if !problems.is_empty() {
        return Err(report(&log, problems.join("\n")));
    }
    Ok(())
}
