//! Crash safety of the ext4 commit: the power goes at every write of a
//! change, on images with and without a journal (`mkfs.ext4`, metadata_csum
//! on), for each kind of change. Each crash image is judged by the
//! independent tools:
//!
//! - with a journal: `e2fsck -y -E journal_only` replays it (as a mount
//!   would; not with `-f`, which turns it into a full check that repairs —
//!   and so would hide damage),
//!   then `e2fsck -fn` must be clean and the tree, as `ext4-view` reads it,
//!   must be exactly the old one or exactly the new one;
//! - without: either the same (clean, old or new), or the superblock is
//!   marked not clean, our engine refuses to change it, and `e2fsck -fy`
//!   repairs it to a clean filesystem.
//!
//! Writes issued since the last flush may all survive, none, or any subset
//! (a disk reorders its cache): all three are tried at every position.

mod common;

use common::fixture::mkfs;
use common::mount::RoMount;
use common::oracle::{self, run};
use common::tree::{self, Tree};
use imagegen::block::{BlockDevice, FaultyDevice, MemDevice, Unflushed};
use imagegen::fs::{Filesystem, NewAttrs, OpenOptions, Timestamp};
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const NOW: Timestamp = Timestamp {
    secs: 1_800_000_000,
    nanos: 5,
};
const XATTR: &str = "user.comment";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    PutNew,
    Replace,
    Mkdir,
    RemoveTree,
    Symlink,
    Xattr,
}

const OPS: [Op; 6] = [
    Op::PutNew,
    Op::Replace,
    Op::Mkdir,
    Op::RemoveTree,
    Op::Symlink,
    Op::Xattr,
];

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

fn apply(op: Op, fs: &mut dyn Filesystem) -> imagegen::Result<()> {
    let attrs = NewAttrs::default();
    match op {
        Op::PutNew => {
            let data = pattern(9000, 1);
            fs.write_file("/etc/new.conf", &mut &data[..], data.len() as u64, &attrs)
        }
        Op::Replace => {
            let data = pattern(5000, 2);
            fs.write_file("/etc/hostname", &mut &data[..], data.len() as u64, &attrs)
        }
        Op::Mkdir => fs.mkdir("/etc/newdir", false, &attrs),
        Op::RemoveTree => fs.remove("/tree", true),
        Op::Symlink => fs.symlink(
            &"/usr/lib/very/long/target/".repeat(4),
            "/etc/longlink",
            &attrs,
        ),
        Op::Xattr => fs.set_xattr("/etc/hosts", XATTR, &pattern(400, 3)),
    }
}

struct Case {
    mkfs: &'static [&'static str],
    /// Turn on the journal's csum_v3 and 64-bit tags (as the kernel does on
    /// its first mount of a metadata_csum filesystem) with debugfs.
    journal_csum: bool,
    /// Whether changes go through the journal (judged as such).
    journal: bool,
    /// Shrink the log to this many blocks (journal superblock surgery), so
    /// that no change fits and every commit takes the ordered path.
    log_blocks: Option<u32>,
}

/// A fixture with a small tree, made by mkfs.ext4 from a directory.
fn fixture(case: &Case, dir: &Path) -> Vec<u8> {
    fixture_with(case, dir, 0)
}

/// The fixture, plus `many` small files in `/many`.
fn fixture_with(case: &Case, dir: &Path, many: usize) -> Vec<u8> {
    let src = dir.join("src");
    for d in ["etc", "tree/sub/deeper", "usr/bin", "many"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    for i in 0..many {
        std::fs::write(src.join(format!("many/f{i:04}")), format!("{i}\n")).unwrap();
    }
    std::fs::write(src.join("etc/hostname"), b"seed-node\n").unwrap();
    std::fs::write(src.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    std::fs::write(src.join("tree/a"), pattern(5000, 4)).unwrap();
    std::fs::write(src.join("tree/sub/b"), b"b\n").unwrap();
    std::fs::write(src.join("tree/sub/deeper/c"), pattern(70_000, 5)).unwrap();
    std::fs::write(src.join("usr/bin/tool"), pattern(30_000, 6)).unwrap();
    let image = dir.join("fixture.img");
    mkfs(&image, 16, case.mkfs, Some(&src)).expect("mkfs.ext4");
    if case.journal_csum {
        let script = dir.join("jcsum");
        std::fs::write(&script, "jo -c\njc\n").unwrap();
        let out = run(Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(&image));
        assert!(out.status.success());
        let features = oracle::superblock_field(&image, "Journal features:");
        assert!(
            features
                .as_deref()
                .is_some_and(|f| f.contains("journal_checksum_v3") && f.contains("journal_64bit")),
            "{features:?}"
        );
    }
    if let Some(len) = case.log_blocks {
        let (out, _) = oracle::debugfs(&image, "bmap <8> 0");
        let block: u64 = String::from_utf8_lossy(&out).trim().parse().expect("bmap");
        let mut bytes = std::fs::read(&image).unwrap();
        let at = (block * 4096 + 0x10) as usize;
        bytes[at..at + 4].copy_from_slice(&len.to_be_bytes());
        std::fs::write(&image, bytes).unwrap();
    }
    oracle::assert_fsck_clean(&image, "fixture");
    std::fs::read(&image).unwrap()
}

fn open(dev: Arc<dyn BlockDevice>) -> imagegen::Result<Box<dyn Filesystem>> {
    imagegen::fs::open(dev, OpenOptions::writable(NOW))
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// `s_state` clean bit and `needs_recovery` of an image's superblock.
fn marks(image: &[u8]) -> (bool, bool) {
    let state = u16::from_le_bytes([image[1024 + 0x3A], image[1024 + 0x3B]]);
    let incompat = u32::from_le_bytes(image[1024 + 0x60..1024 + 0x64].try_into().unwrap());
    (state & 1 == 1, incompat & 0x4 != 0)
}

/// What must hold of the tree: exactly the old or exactly the new one.
struct States {
    old: Tree,
    new: Tree,
    old_xattr: Option<Vec<u8>>,
    new_xattr: Option<Vec<u8>>,
}

fn xattr_of(image: &Path) -> Option<Vec<u8>> {
    oracle::xattr(image, "/etc/hosts", XATTR).expect("debugfs ea_get")
}

fn write_image(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// Judges one crash image; `Err` says what is wrong.
fn judge(case: &Case, bytes: &[u8], work: &Path, states: &States) -> Result<(), String> {
    let path = work.join("crash.img");
    write_image(&path, bytes);
    let (clean, recover) = marks(bytes);
    if recover || !clean {
        // Marked: the engine must refuse to change it, and change nothing.
        let dev = Arc::new(MemDevice::from_vec(bytes.to_vec()));
        let refused = match open(dev.clone()) {
            Ok(mut fs) => fs.mkdir("/refused", false, &NewAttrs::default()).is_err(),
            Err(_) => true,
        };
        if !refused || dev.to_vec() != bytes {
            return Err(format!(
                "the engine changed a filesystem marked clean={clean} needs_recovery={recover}"
            ));
        }
    }
    if case.journal {
        if !clean {
            return Err("a journalled commit left the filesystem marked not clean".into());
        }
        let out = run(Command::new("e2fsck")
            .args(["-y", "-E", "journal_only"])
            .arg(&path));
        if !matches!(out.status.code(), Some(0 | 1)) {
            return Err(format!(
                "e2fsck -E journal_only exited {:?}: {}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    } else if !clean {
        // Not clean: e2fsck must be able to repair it; nothing is promised
        // about which state it repairs to.
        run(Command::new("e2fsck").arg("-fy").arg(&path));
        return oracle::fsck_clean(&path).map_err(|e| format!("after e2fsck -fy: {e}"));
    }
    oracle::fsck_clean(&path)?;
    let got = tree::from_ext4_view(&path)?;
    let x = xattr_of(&path);
    let is_old = got == states.old && x == states.old_xattr;
    let is_new = got == states.new && x == states.new_xattr;
    if !is_old && !is_new {
        let mut d = tree::diff(&states.new, &got, "after the crash (vs new)");
        d.extend(tree::diff(&states.old, &got, "after the crash (vs old)"));
        return Err(format!(
            "neither the old nor the new tree:\n{}",
            d.join("\n")
        ));
    }
    Ok(())
}

/// Runs `op` once without a fault; returns the new image and the number of
/// writes its commit made.
fn clean_run(base: &[u8], op: Op) -> (Vec<u8>, u64) {
    let dev = Arc::new(FaultyDevice::new(base.to_vec()));
    let mut fs = open(dev.clone()).expect("open");
    apply(op, &mut *fs).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    fs.flush().unwrap();
    drop(fs);
    (dev.contents(), dev.writes())
}

fn states(base: &[u8], new: &[u8], work: &Path) -> States {
    let p = work.join("state.img");
    write_image(&p, base);
    let old = tree::from_ext4_view(&p).unwrap();
    let old_xattr = xattr_of(&p);
    write_image(&p, new);
    oracle::assert_fsck_clean(&p, "after the change without a crash");
    let new_t = tree::from_ext4_view(&p).unwrap();
    let new_xattr = xattr_of(&p);
    assert!(
        old != new_t || old_xattr != new_xattr,
        "the change changed nothing"
    );
    States {
        old,
        new: new_t,
        old_xattr,
        new_xattr,
    }
}

/// The power goes at every write of every operation's commit.
fn crash_everywhere(case: Case) {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&case, dir.path());
    let mut failures = Vec::new();
    let mut judged = 0;
    for op in OPS {
        let (new, writes) = clean_run(&base, op);
        assert!(writes >= 3, "{op:?}: only {writes} writes");
        let states = states(&base, &new, dir.path());
        // The first write marks the change in flight: needs_recovery when it
        // goes through the journal, not clean when it does not.
        let dev = Arc::new(FaultyDevice::new(base.clone()));
        dev.power_loss_at(1);
        let mut fs = open(dev.clone()).expect("open");
        assert!(apply(op, &mut *fs).is_err());
        let want = if case.journal {
            (true, true)
        } else {
            (false, false)
        };
        assert_eq!(
            marks(&dev.after_crash(Unflushed::Kept)),
            want,
            "{op:?}: first write"
        );
        let mut seen = HashSet::new();
        for n in 0..writes {
            let dev = Arc::new(FaultyDevice::new(base.clone()));
            dev.power_loss_at(n);
            let mut fs = open(dev.clone()).expect("open");
            let err = apply(op, &mut *fs).expect_err("the power went, yet the change succeeded");
            assert!(
                err.to_string().contains("stopped partway"),
                "{op:?} at write {n}: {err}"
            );
            // The handle is poisoned: it refuses every further change.
            let again = fs.mkdir("/after", false, &NewAttrs::default());
            let again = again.expect_err("a poisoned handle accepted a change");
            assert!(again.to_string().contains("refused"), "{again}");
            drop(fs);
            for mode in [Unflushed::Lost, Unflushed::Kept, Unflushed::Some(n * 7 + 1)] {
                let image = dev.after_crash(mode);
                if !seen.insert(hash(&image)) {
                    continue;
                }
                judged += 1;
                if let Err(e) = judge(&case, &image, dir.path(), &states) {
                    failures.push(format!(
                        "{op:?}, power lost at write {n}/{writes} ({mode:?}): {e}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {judged} crash images are wrong:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    eprintln!("{judged} distinct crash images judged");
}

/// All six operations as one group commit (`defer_commits`): their data
/// is written as each succeeds, their metadata in one transaction at the
/// flush. The power goes at every write; the result is the old tree or
/// the tree after all six, never a mix.
fn crash_everywhere_deferred(case: Case) {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&case, dir.path());
    let all = |fs: &mut dyn Filesystem| -> imagegen::Result<()> {
        fs.defer_commits();
        for op in OPS {
            apply(op, fs)?;
        }
        fs.flush()
    };
    let dev = Arc::new(FaultyDevice::new(base.clone()));
    all(&mut *open(dev.clone()).expect("open")).expect("the clean group commit");
    let (new, writes) = (dev.contents(), dev.writes());
    let states = states(&base, &new, dir.path());
    let mut failures = Vec::new();
    let mut seen = HashSet::new();
    for n in 0..writes {
        let dev = Arc::new(FaultyDevice::new(base.clone()));
        dev.power_loss_at(n);
        let err = all(&mut *open(dev.clone()).expect("open"))
            .expect_err("the power went, yet the group commit succeeded");
        assert!(
            err.to_string().contains("stopped partway"),
            "at write {n}: {err}"
        );
        for mode in [Unflushed::Lost, Unflushed::Kept, Unflushed::Some(n * 7 + 1)] {
            let image = dev.after_crash(mode);
            if !seen.insert(hash(&image)) {
                continue;
            }
            if let Err(e) = judge(&case, &image, dir.path(), &states) {
                failures.push(format!("power lost at write {n}/{writes} ({mode:?}): {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} crash images are wrong:\n{}",
        failures.len(),
        seen.len(),
        failures.join("\n\n")
    );
    eprintln!("{} distinct crash images judged", seen.len());
}

const J4K: &[&str] = &[
    "-T", "default", "-b", "4096", "-g", "1024", "-N", "512", "-J", "size=4",
];
const J1K: &[&str] = &[
    "-T", "default", "-b", "1024", "-g", "2048", "-N", "512", "-J", "size=1",
];
const NJ4K: &[&str] = &[
    "-T",
    "default",
    "-b",
    "4096",
    "-g",
    "1024",
    "-N",
    "512",
    "-O",
    "^has_journal",
];
const NJ1K: &[&str] = &[
    "-T",
    "default",
    "-b",
    "1024",
    "-g",
    "2048",
    "-N",
    "512",
    "-O",
    "^has_journal",
];

#[test]
fn journal_4k_power_loss_at_every_write() {
    crash_everywhere(Case {
        mkfs: J4K,
        journal_csum: false,
        journal: true,
        log_blocks: None,
    });
}

#[test]
fn journal_4k_csum_v3_power_loss_at_every_write() {
    crash_everywhere(Case {
        mkfs: J4K,
        journal_csum: true,
        journal: true,
        log_blocks: None,
    });
}

#[test]
fn journal_1k_csum_v3_power_loss_at_every_write() {
    crash_everywhere(Case {
        mkfs: J1K,
        journal_csum: true,
        journal: true,
        log_blocks: None,
    });
}

/// A transaction that does not fit in the log is not split: the change
/// takes the ordered path, with its guarantees.
#[test]
fn too_small_a_log_falls_back_to_the_ordered_commit() {
    crash_everywhere(Case {
        mkfs: J4K,
        journal_csum: false,
        journal: false,
        log_blocks: Some(4),
    });
}

#[test]
fn no_journal_4k_power_loss_at_every_write() {
    crash_everywhere(Case {
        mkfs: NJ4K,
        journal_csum: false,
        journal: false,
        log_blocks: None,
    });
}

#[test]
fn no_journal_1k_power_loss_at_every_write() {
    crash_everywhere(Case {
        mkfs: NJ1K,
        journal_csum: false,
        journal: false,
        log_blocks: None,
    });
}

/// A write error that leaves the device working still poisons the handle,
/// and what is on disk replays to the old or the new state.
#[test]
fn journal_4k_group_commit_power_loss_at_every_write() {
    crash_everywhere_deferred(Case {
        mkfs: J4K,
        journal_csum: true,
        journal: true,
        log_blocks: None,
    });
}

#[test]
fn no_journal_1k_group_commit_power_loss_at_every_write() {
    crash_everywhere_deferred(Case {
        mkfs: NJ1K,
        journal_csum: false,
        journal: false,
        log_blocks: None,
    });
}

#[test]
fn a_failed_write_poisons_the_handle() {
    let case = Case {
        mkfs: J4K,
        journal_csum: true,
        journal: true,
        log_blocks: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&case, dir.path());
    let (new, writes) = clean_run(&base, Op::Replace);
    let states = states(&base, &new, dir.path());
    for n in [0, writes / 2, writes - 1] {
        let dev = Arc::new(FaultyDevice::new(base.clone()));
        dev.fail_write(n);
        let mut fs = open(dev.clone()).unwrap();
        let err = apply(Op::Replace, &mut *fs).unwrap_err().to_string();
        assert!(
            err.contains("stopped partway") && err.contains("replay"),
            "{err}"
        );
        let before = dev.contents();
        let again = fs.mkdir("/after", false, &NewAttrs::default()).unwrap_err();
        assert!(again.to_string().contains("refused"), "{again}");
        assert_eq!(dev.contents(), before, "a refused change wrote");
        judge(&case, &dev.contents(), dir.path(), &states)
            .unwrap_or_else(|e| panic!("write {n} failed: {e}"));
    }
}

/// A change that logs more blocks than one descriptor block has tags for
/// (here 62 with csum_v3 tags in 1 KiB blocks): every flush boundary of its
/// commit still replays to the old or the new state, and one replays to the
/// new state.
#[test]
fn a_transaction_of_several_descriptor_blocks_replays() {
    let case = Case {
        mkfs: J1K,
        journal_csum: true,
        journal: true,
        log_blocks: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let base = fixture_with(&case, dir.path(), 400);
    let op = |fs: &mut dyn Filesystem| fs.remove("/many", true);
    let dev = Arc::new(FaultyDevice::new(base.clone()));
    let mut fs = open(dev.clone()).unwrap();
    op(&mut *fs).unwrap();
    fs.flush().unwrap();
    drop(fs);
    let (new, writes) = (dev.contents(), dev.writes());
    assert!(
        writes > 2 * 100,
        "only {writes} writes: not a big transaction"
    );
    let states = states(&base, &new, dir.path());
    let mut seen = HashSet::new();
    let mut replayed_new = false;
    for n in 0..writes {
        let dev = Arc::new(FaultyDevice::new(base.clone()));
        dev.power_loss_at(n);
        let mut fs = open(dev.clone()).unwrap();
        assert!(op(&mut *fs).is_err());
        let image = dev.after_crash(Unflushed::Lost);
        if !seen.insert(hash(&image)) {
            continue;
        }
        judge(&case, &image, dir.path(), &states)
            .unwrap_or_else(|e| panic!("power lost at write {n}/{writes}: {e}"));
        let replayed = dir.path().join("crash.img");
        replayed_new |= marks(&image).1 && tree::from_ext4_view(&replayed).unwrap() == states.new;
    }
    assert!(replayed_new, "no crash image replayed to the new state");
}

/// A loop device of the test's own, detached (and unmounted) on drop.
struct RwMount {
    dir: tempfile::TempDir,
    loopdev: String,
    mounted: bool,
}

impl RwMount {
    /// Mounts `image` read-only on a writable loop device: the kernel
    /// replays the journal into the image as it mounts.
    fn new(image: &Path) -> RwMount {
        let out = run(Command::new("losetup").args(["-f", "--show"]).arg(image));
        assert!(out.status.success(), "losetup");
        let mut m = RwMount {
            dir: tempfile::tempdir().unwrap(),
            loopdev: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            mounted: false,
        };
        let out = run(Command::new("mount")
            .args(["-t", "ext4", "-o", "ro"])
            .arg(&m.loopdev)
            .arg(m.dir.path()));
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m.mounted = true;
        m
    }

    fn host(&self, path: &str) -> PathBuf {
        self.dir.path().join(path.trim_start_matches('/'))
    }
}

impl Drop for RwMount {
    fn drop(&mut self) {
        if self.mounted {
            run(Command::new("umount").arg(self.dir.path()));
        }
        run(Command::new("losetup").arg("-d").arg(&self.loopdev));
    }
}

/// The kernel, too, replays what the engine committed: a crash right after
/// the commit block became durable reads back as the new state once mounted.
#[test]
fn the_kernel_replays_a_committed_transaction() {
    let case = Case {
        mkfs: J4K,
        journal_csum: true,
        journal: true,
        log_blocks: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&case, dir.path());
    let (_, writes) = clean_run(&base, Op::Replace);
    let want = pattern(5000, 2);
    let path = dir.path().join("kernel.img");
    // The earliest crash (only flushed writes kept) that e2fsck replays to
    // the new state is the one just after the commit block.
    let mut found = None;
    for n in 0..writes {
        let dev = Arc::new(FaultyDevice::new(base.clone()));
        dev.power_loss_at(n);
        let mut fs = open(dev.clone()).unwrap();
        assert!(apply(Op::Replace, &mut *fs).is_err());
        let image = dev.after_crash(Unflushed::Lost);
        write_image(&path, &image);
        if !marks(&image).1 {
            continue;
        }
        run(Command::new("e2fsck")
            .args(["-y", "-E", "journal_only"])
            .arg(&path));
        if oracle::cat(&path, "/etc/hostname").ok().as_deref() == Some(&want[..]) {
            found = Some(image);
            break;
        }
    }
    let image = found.expect("no crash point replays to the new state");
    write_image(&path, &image);
    {
        let m = RwMount::new(&path);
        assert_eq!(std::fs::read(m.host("/etc/hostname")).unwrap(), want);
    }
    oracle::assert_fsck_clean(&path, "after the kernel's replay");
    let ro = RoMount::new(&path).expect("read-only mount after replay");
    assert_eq!(std::fs::read(ro.host("/etc/hostname")).unwrap(), want);
}
