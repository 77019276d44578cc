//! The feature matrix: every operation of the in-place ext4 engine on images
//! made by `mkfs.ext4` itself, with `e2fsck -fn`, debugfs and a read-only
//! kernel loop mount judging after each operation, and our engine, the
//! kernel, `debugfs rdump` and `ext4-view` compared with the model at the end.

mod common;

use common::check;
use common::engine;
use common::fixture::{Fixture, Variant, HTREE_ENTRIES};
use common::model::Model;
use common::mount::RoMount;
use common::ops::{cap_net_bind_service, Op};
use common::rng::Rng;
use common::{oracle, tree};

/// A fixture, its model and the log of what was done to it.
struct Run {
    fx: Fixture,
    model: Model,
    log: Vec<String>,
}

impl Run {
    fn new(variant: Variant) -> Run {
        let fx = Fixture::new(variant);
        let model = fx.model.clone();
        let run = Run {
            fx,
            model,
            log: Vec::new(),
        };
        run.full("reading the fresh image");
        run
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{:?}: {what}\nafter:\n  {}",
            self.fx.variant,
            self.log.join("\n  ")
        );
    }

    /// Applies `op` through the engine; it must succeed, and every oracle
    /// must then agree with the model.
    fn ok(&mut self, op: Op) {
        self.log.push(op.to_string());
        assert!(self.model.apply(&op), "test bug: the model refuses {op}");
        if let Err(e) = engine::with_writable(&self.fx.image, |fs| op.apply(fs)) {
            self.fail(&format!("engine refused a valid operation: {e}"));
        }
        if let Err(e) = check::after_op(&self.fx.image, &self.model, &op) {
            self.fail(&e);
        }
        self.mount_matches();
    }

    /// Applies `op` through the engine; it must fail and change no byte.
    fn refused(&mut self, op: Op) -> imagegen::Error {
        self.log.push(format!("{op} (must be refused)"));
        let before = oracle::Snapshot::take(&self.fx.image);
        let (_, fsck_before) = oracle::fsck(&self.fx.image);
        match engine::with_writable(&self.fx.image, |fs| op.apply(fs)) {
            Ok(()) => self.fail("engine accepted an operation that must fail"),
            Err(e) => {
                if let Some(d) = before.differences(&self.fx.image) {
                    self.fail(&format!("refusing ({e}) changed the image: {d}"));
                }
                let (_, fsck_after) = oracle::fsck(&self.fx.image);
                assert_eq!(fsck_before, fsck_after);
                e
            }
        }
    }

    /// The kernel's view of the whole tree is the model's.
    fn mount_matches(&self) {
        let mount = RoMount::new(&self.fx.image).unwrap_or_else(|e| self.fail(&e));
        let got = tree::from_host(mount.root(), true).unwrap_or_else(|e| self.fail(&e));
        let problems = tree::diff(&self.model.tree(), &got, "kernel");
        if !problems.is_empty() {
            self.fail(&problems.join("\n"));
        }
    }

    fn full(&self, context: &str) {
        let problems = check::full(&self.fx.image, &self.model, self.fx.variant);
        if !problems.is_empty() {
            self.fail(&format!("{context}:\n{}", problems.join("\n")));
        }
    }

    fn free(&self) -> (u64, u64) {
        oracle::free_counts(&self.fx.image)
    }
}

fn put(path: &str, data: Vec<u8>, mode: Option<u32>, uid: Option<u32>, gid: Option<u32>) -> Op {
    Op::Put {
        path: path.into(),
        data,
        mode,
        uid,
        gid,
    }
}

fn mkdir(path: &str, parents: bool, mode: Option<u32>, owner: Option<u32>) -> Op {
    Op::Mkdir {
        path: path.into(),
        parents,
        mode,
        uid: owner,
        gid: owner,
    }
}

fn symlink(target: &str, path: &str) -> Op {
    Op::Symlink {
        target: target.into(),
        path: path.into(),
        uid: None,
        gid: None,
    }
}

fn rm(path: &str, recursive: bool) -> Op {
    Op::Rm {
        path: path.into(),
        recursive,
    }
}

fn cap(path: &str) -> Op {
    Op::SetXattr {
        path: path.into(),
        name: "security.capability".into(),
        value: cap_net_bind_service(),
    }
}

fn uncap(path: &str) -> Op {
    Op::RmXattr {
        path: path.into(),
        name: "security.capability".into(),
    }
}

/// Every operation of the issue on one writable variant.
fn every_operation(variant: Variant) {
    let mut rng = Rng::new(42);
    let mut r = Run::new(variant);

    // put: 0 bytes with defaults, small with attributes, multi-MiB.
    r.ok(put("/etc/empty", vec![], None, None, None));
    r.ok(put(
        "/etc/small",
        rng.bytes(100),
        Some(0o600),
        Some(1000),
        Some(1000),
    ));
    r.ok(put(
        "/data.bin",
        rng.bytes((3 << 20) + 123),
        Some(0o644),
        None,
        None,
    ));

    // replace in a linear directory: one entry, new bytes; shrink and grow.
    r.ok(put(
        "/etc/hostname",
        b"node7\n".to_vec(),
        Some(0o644),
        Some(0),
        Some(0),
    ));
    r.ok(put(
        "/data.bin",
        rng.bytes(1000),
        Some(0o640),
        Some(0),
        Some(4),
    ));
    r.ok(put(
        "/data.bin",
        rng.bytes(2 << 20),
        Some(0o644),
        Some(0),
        Some(0),
    ));

    // mkdir, with and without parents.
    r.ok(mkdir("/opt/a/b/c", true, None, None));
    r.refused(mkdir("/opt/a/b/c", false, None, None));
    r.ok(mkdir("/opt/a/b/c", true, None, None));
    r.ok(mkdir("/opt/a/b/c/d", false, Some(0o700), Some(1000)));

    // symlinks: fast (< 60 bytes, in the inode), the 59/60 boundary, slow.
    r.ok(symlink("/etc/hostname", "/opt/fast"));
    r.ok(symlink(&"f".repeat(59), "/opt/fast59"));
    r.ok(symlink(&"s".repeat(60), "/opt/slow60"));
    r.ok(symlink(&format!("/{}", "long/".repeat(40)), "/opt/slow"));

    // hard link, then the attributes every name shares.
    r.ok(Op::Link {
        existing: "/etc/small".into(),
        new: "/opt/a/small-link".into(),
    });
    r.ok(Op::Chmod {
        path: "/etc/small".into(),
        mode: 0o4755,
    });
    r.ok(Op::Chmod {
        path: "/opt/a".into(),
        mode: 0o1777,
    });
    r.ok(Op::Chown {
        path: "/etc/small".into(),
        uid: Some(1234),
        gid: Some(5678),
    });
    r.ok(Op::Chown {
        path: "/opt/a/small-link".into(),
        uid: Some(70000),
        gid: None,
    });

    // security.capability: set, replace, remove; removing twice is an error.
    r.ok(cap("/usr/bin/tool"));
    r.ok(Op::SetXattr {
        path: "/usr/bin/tool".into(),
        name: "security.capability".into(),
        value: {
            let mut v = cap_net_bind_service();
            v[4] |= 1;
            v
        },
    });
    r.ok(uncap("/usr/bin/tool"));
    r.refused(uncap("/usr/bin/tool"));
    r.ok(cap("/opt/a"));

    // Refusals change nothing.
    r.refused(put("/nope/x", vec![1], None, None, None));
    r.refused(put("/opt", vec![1], None, None, None));
    r.refused(rm("/opt", false));
    r.refused(rm("/nope", true));
    r.refused(Op::Link {
        existing: "/opt".into(),
        new: "/opt2".into(),
    });
    r.refused(mkdir("/etc/hostname", false, None, None));
    r.refused(mkdir("/etc/hostname/x", true, None, None));
    r.refused(symlink("x", "/etc/hosts"));
    r.refused(put(
        &format!("/etc/{}", "n".repeat(256)),
        vec![1],
        None,
        None,
        None,
    ));

    // rm of one name of a linked file, then free counts come back exactly.
    r.ok(rm("/opt/a/small-link", false));
    let before = r.free();
    r.ok(mkdir("/tmpx/y", true, None, None));
    r.ok(put("/tmpx/y/big", rng.bytes(2 << 20), None, None, None));
    r.ok(put("/tmpx/small", rng.bytes(10), None, None, None));
    r.ok(symlink(&"t".repeat(200), "/tmpx/y/slow"));
    r.ok(Op::Link {
        existing: "/tmpx/small".into(),
        new: "/tmpx/y/small2".into(),
    });
    r.ok(rm("/tmpx", true));
    assert_eq!(
        r.free(),
        before,
        "rm -r did not give back every block and inode"
    );

    let before = r.free();
    r.ok(put("/big2", rng.bytes(5 << 20), None, None, None));
    r.ok(rm("/big2", false));
    assert_eq!(
        r.free(),
        before,
        "rm did not give back every block and inode"
    );

    r.ok(rm("/opt/slow", false));
    r.ok(rm("/opt/a/b/c/d", false));
    r.full("after every operation");
}

#[test]
fn defaults() {
    every_operation(Variant::Defaults);
}

#[test]
fn gdt_csum() {
    every_operation(Variant::GdtCsum);
}

#[test]
fn block_1k() {
    every_operation(Variant::Block1k);
}

#[test]
fn block_2k() {
    every_operation(Variant::Block2k);
}

#[test]
fn no_journal() {
    every_operation(Variant::NoJournal);
}

#[test]
fn inode_128() {
    every_operation(Variant::Inode128);
}

/// Replacing in and growing an indexed directory of 5,000 entries: exactly
/// one entry per name (e2fsck alone does not always notice a duplicate in an
/// htree), leaf splits when new names arrive, and the common operations.
#[test]
fn htree() {
    let mut rng = Rng::new(7);
    let mut r = Run::new(Variant::Htree);
    for i in [0, 2500, HTREE_ENTRIES - 1] {
        let path = format!("/big/entry-{i:05}");
        r.ok(put(&path, rng.bytes(300), Some(0o644), Some(0), Some(0)));
        assert_eq!(
            oracle::count_entries(&r.fx.image, "/big", &path[5..]).unwrap(),
            1
        );
    }
    // Hundreds of new names in one session: leaves fill up and must split
    // (or the directory be rewritten); then one check of everything.
    let mut ops = Vec::new();
    for i in 0..400 {
        ops.push(put(
            &format!("/big/added-{i:04}-{}", "x".repeat(i % 40)),
            vec![b'a'; i % 7],
            None,
            None,
            None,
        ));
    }
    for i in (0..HTREE_ENTRIES).step_by(97) {
        ops.push(put(
            &format!("/big/entry-{i:05}"),
            rng.bytes(i % 50),
            Some(0o600),
            Some(0),
            Some(0),
        ));
    }
    for i in (1..HTREE_ENTRIES).step_by(131) {
        ops.push(rm(&format!("/big/entry-{i:05}"), false));
    }
    r.log.push(format!(
        "{} puts, replaces and removals in /big in one session",
        ops.len()
    ));
    for op in &ops {
        assert!(r.model.apply(op), "test bug: {op}");
    }
    if let Err(e) =
        engine::with_writable(&r.fx.image, |fs| ops.iter().try_for_each(|op| op.apply(fs)))
    {
        r.fail(&format!("engine: {e}"));
    }
    oracle::assert_fsck_clean(&r.fx.image, "after the batch in /big");
    let listing = oracle::ls(&r.fx.image, "/big").unwrap();
    let mut names: Vec<&str> = listing.iter().map(|e| e.name.as_str()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "duplicate names in /big");
    r.mount_matches();
    r.ok(mkdir("/big/sub", false, None, None));
    r.ok(rm("/big/entry-00002", false));
    r.full("after the htree operations");
    drop(r);
    every_operation(Variant::Htree);
}

/// ENOSPC: refused before anything changes, for blocks and for inodes.
#[test]
fn nearly_full() {
    let mut r = Run::new(Variant::NearlyFull);
    let (free_blocks, free_inodes) = r.free();
    let e = r.refused(put(
        "/too-big",
        vec![7u8; ((free_blocks + 10) * 4096) as usize],
        None,
        None,
        None,
    ));
    assert!(
        matches!(e, imagegen::Error::NoSpace(_)),
        "expected NoSpace, got {e}"
    );
    // More directories than free inodes: nothing of the path may appear.
    let deep: String = (0..free_inodes + 2).map(|i| format!("/d{i}")).collect();
    let e = r.refused(mkdir(&deep, true, None, None));
    assert!(
        matches!(e, imagegen::Error::NoSpace(_)),
        "expected NoSpace, got {e}"
    );
    // Fill what is left with small files until the engine says no.
    let mut i = 0;
    loop {
        let op = put(&format!("/etc/f{i}"), vec![b'z'; 3000], None, None, None);
        let mut next = r.model.clone();
        next.apply(&op);
        let before = oracle::Snapshot::take(&r.fx.image);
        match engine::with_writable(&r.fx.image, |fs| op.apply(fs)) {
            Ok(()) => {
                r.model = next;
                r.log.push(op.to_string());
                check::after_op(&r.fx.image, &r.model, &op).unwrap_or_else(|e| r.fail(&e));
            }
            Err(imagegen::Error::NoSpace(_)) => {
                if let Some(d) = before.differences(&r.fx.image) {
                    r.fail(&format!("ENOSPC changed the image: {d}"));
                }
                break;
            }
            Err(e) => r.fail(&format!("unexpected error: {e}")),
        }
        i += 1;
        assert!(i < 200, "never ran out of space");
    }
    oracle::assert_fsck_clean(&r.fx.image, "full");
    r.ok(rm("/etc/f0", false));
    r.full("after filling up");
}

/// Free space in hundreds of one-block holes: a new file needs far more
/// than the four extents an inode holds, so an extent tree of depth 2.
#[test]
fn fragmented_free_space_makes_a_deep_extent_tree() {
    let mut rng = Rng::new(9);
    let mut r = Run::new(Variant::Fragmented);
    let (free_blocks, _) = r.free();
    let len = ((free_blocks - 40) * 1024) as usize;
    r.ok(put("/scattered", rng.bytes(len), Some(0o644), None, None));
    let depth = oracle::extent_depth(&r.fx.image, "/scattered").unwrap_or_else(|e| r.fail(&e));
    assert!(depth >= 2, "extent tree depth {depth}, expected 2");
    let st = engine::open(&r.fx.image, false)
        .unwrap()
        .stat("/scattered")
        .unwrap();
    assert!(st.extents.len() > 336, "only {} extents", st.extents.len());
    let before = r.free();
    r.ok(rm("/scattered", false));
    assert!(
        r.free().0 > before.0 + free_blocks - 50,
        "blocks of the deep tree not freed"
    );
    r.ok(put("/scattered", rng.bytes(len), Some(0o644), None, None));
    r.full("after writing and rewriting a deep extent tree");
}

/// inline_data: the engine reads inline files and directories; changes to
/// inline inodes are refused without touching the image.
#[test]
fn inline_data_reads_and_refuses_changes() {
    let mut r = Run::new(Variant::InlineData);
    r.refused(put(
        "/inline/tiny.txt",
        b"new".to_vec(),
        Some(0o644),
        Some(0),
        Some(0),
    ));
    r.refused(put("/inline/new.txt", b"new".to_vec(), None, None, None));
    r.refused(rm("/inline/tiny.txt", false));
    r.refused(cap("/inline/small.txt"));
    r.full("after the refusals");
}

/// The independent `ext4-view` reader lists and reads what the engine wrote:
/// directories, contents (small, multi-MiB, deep extent tree), both kinds
/// of symlink and hard links.
#[test]
fn ext4_view_reads_what_the_engine_wrote() {
    let mut rng = Rng::new(11);
    let mut r = Run::new(Variant::Fragmented);
    r.ok(mkdir("/srv/www", true, Some(0o750), Some(33)));
    r.ok(put(
        "/srv/www/index.html",
        b"<h1>hi</h1>\n".to_vec(),
        Some(0o640),
        Some(33),
        Some(33),
    ));
    r.ok(put("/srv/blob", rng.bytes(300 << 10), None, None, None));
    r.ok(symlink("www/index.html", "/srv/fast"));
    r.ok(symlink(&"deep/".repeat(30), "/srv/slow"));
    r.ok(Op::Link {
        existing: "/srv/blob".into(),
        new: "/srv/www/blob".into(),
    });
    let (free, _) = r.free();
    r.ok(put(
        "/srv/scattered",
        rng.bytes(((free - 60) * 1024) as usize),
        None,
        None,
        None,
    ));
    let got = tree::from_ext4_view(&r.fx.image).unwrap_or_else(|e| r.fail(&e));
    let problems = tree::diff(&r.model.tree(), &got, "ext4-view");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Timestamps given at creation and by `set_times` reach debugfs and the
/// kernel exactly: nanoseconds and dates past 2038 where the inode has the
/// extra fields (256-byte inodes), whole seconds before 2038 with 128 bytes.
#[test]
fn timestamps_reach_debugfs_and_the_kernel() {
    use imagegen::fs::{NewAttrs, Timestamp};
    use std::os::unix::fs::MetadataExt;
    for (variant, wide) in [(Variant::Defaults, true), (Variant::Inode128, false)] {
        let fx = Fixture::new(variant);
        let t = |secs: i64, nanos: u32| Timestamp {
            secs,
            nanos: if wide { nanos } else { 0 },
        };
        let created = t(1_700_000_000, 123_456_789);
        let atime = t(1_600_000_000, 5);
        let mtime = if wide {
            t(4_000_000_000, 999_999_999)
        } else {
            t(2_000_000_000, 0)
        };
        engine::with_writable(&fx.image, |fs| {
            let attrs = NewAttrs {
                mtime: Some(created),
                ..NewAttrs::default()
            };
            fs.write_file("/stamped", &mut &b"x"[..], 1, &attrs)?;
            fs.write_file("/later", &mut &b"y"[..], 1, &attrs)?;
            fs.set_times("/later", Some(atime), Some(mtime))?;
            fs.set_times("/stamped", None, None)
        })
        .unwrap_or_else(|e| panic!("{variant:?}: {e}"));
        oracle::assert_fsck_clean(&fx.image, "after setting times");
        let pair = |ts: Timestamp| (ts.secs, ts.nanos);
        let st = oracle::stat(&fx.image, "/stamped").unwrap();
        assert_eq!(
            st.mtime,
            Some(pair(created)),
            "{variant:?} /stamped:\n{}",
            st.raw
        );
        let st = oracle::stat(&fx.image, "/later").unwrap();
        assert_eq!(
            st.mtime,
            Some(pair(mtime)),
            "{variant:?} /later mtime:\n{}",
            st.raw
        );
        assert_eq!(
            st.atime,
            Some(pair(atime)),
            "{variant:?} /later atime:\n{}",
            st.raw
        );
        let engine_st = engine::open(&fx.image, false)
            .unwrap()
            .stat("/later")
            .unwrap();
        assert_eq!(
            engine_st.mtime,
            Some(mtime),
            "{variant:?}: engine's own mtime"
        );
        let mount = RoMount::new(&fx.image).unwrap();
        let meta = std::fs::symlink_metadata(mount.host("/later")).unwrap();
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec() as u32),
            pair(mtime),
            "{variant:?}: kernel mtime"
        );
        assert_eq!(
            (meta.atime(), meta.atime_nsec() as u32),
            pair(atime),
            "{variant:?}: kernel atime"
        );
    }
}

/// Opened read-only (`writable == false`), on a device that could be
/// written, the engine refuses every change and touches nothing.
#[test]
fn read_only_open_refuses_changes() {
    use imagegen::block::FileDevice;
    use imagegen::fs::NewAttrs;
    let fx = Fixture::new(Variant::Defaults);
    let before = oracle::Snapshot::take(&fx.image);
    let dev = std::sync::Arc::new(FileDevice::open_rw(&fx.image).unwrap());
    let mut fs = engine::open_dev(dev, false).unwrap();
    let attrs = NewAttrs::default();
    assert!(fs.write_file("/etc/x", &mut &b"x"[..], 1, &attrs).is_err());
    assert!(fs.mkdir("/x", false, &attrs).is_err());
    assert!(fs.remove("/etc/hostname", false).is_err());
    assert!(fs.set_mode("/etc/hostname", 0o600).is_err());
    assert!(fs
        .set_xattr(
            "/etc/hostname",
            "security.capability",
            &cap_net_bind_service()
        )
        .is_err());
    let _ = fs.flush();
    drop(fs);
    if let Some(d) = before.differences(&fx.image) {
        panic!("a read-only open changed the image: {d}");
    }
}

/// A time the inode cannot hold (after 2038 with 128-byte inodes) is either
/// refused without a change or stored exactly; never silently wrapped.
#[test]
fn timestamps_outside_32_bits() {
    use imagegen::fs::{NewAttrs, Timestamp};
    let fx = Fixture::new(Variant::Inode128);
    engine::with_writable(&fx.image, |fs| {
        fs.write_file("/f", &mut &b"x"[..], 1, &NewAttrs::default())
    })
    .unwrap();
    for secs in [4_000_000_000i64, -3_000_000_000] {
        let before = oracle::Snapshot::take(&fx.image);
        let t = Timestamp { secs, nanos: 0 };
        match engine::with_writable(&fx.image, |fs| fs.set_times("/f", None, Some(t))) {
            Ok(()) => {
                let st = oracle::stat(&fx.image, "/f").unwrap();
                assert_eq!(
                    st.mtime,
                    Some((secs, 0)),
                    "mtime {secs} stored as something else"
                );
            }
            Err(_) => {
                if let Some(d) = before.differences(&fx.image) {
                    panic!("refusing mtime {secs} changed the image: {d}");
                }
            }
        }
        oracle::assert_fsck_clean(&fx.image, "after an out-of-range time");
    }
}
