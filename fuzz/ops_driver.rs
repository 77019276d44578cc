//! Structured fuzzing of the ext4 engine: the input is a sequence of
//! operations (put, replace, mkdir, rm -r, symlink, link, rename, truncate,
//! mknod, chmod, xattrs, flags, batches of them) on a small real image.
//! After every operation either it succeeded and the engine's own map scan
//! (`Ext4Fs::check_maps`) finds the filesystem consistent, or it failed and
//! the image is byte-identical to before. Shared by the `ext4_ops` cargo-fuzz
//! target and the `ext4_ops_fuzz` test (a seeded loop of the same driver).

use imagegen::block::{BlockDevice, MemDevice};
use imagegen::fs::ext4::Ext4Fs;
use imagegen::fs::{FileKind, Filesystem, NewAttrs, OpenOptions, Timestamp};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const NAMES: [&str; 6] = ["a", "b", "dir", "x y", "deep", "etc"];

/// Reads the input a byte at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    fn path(&mut self) -> String {
        let depth = 1 + self.byte() % 3;
        let mut p = String::new();
        for _ in 0..depth {
            p.push('/');
            p.push_str(NAMES[usize::from(self.byte()) % NAMES.len()]);
        }
        p
    }
    fn size(&mut self) -> u64 {
        let b = u64::from(self.byte());
        match b % 4 {
            0 => b,
            1 => b * 97,
            2 => b * 1031,
            _ => b * 5003,
        }
    }
}

/// Applies one operation decoded from `inp`.
fn step(fs: &mut dyn Filesystem, inp: &mut Input) -> imagegen::Result<()> {
    let attrs = NewAttrs::default();
    match inp.byte() % 15 {
        0 | 1 => {
            let (p, n) = (inp.path(), inp.size());
            let fill = inp.byte();
            let data = vec![fill; n as usize];
            fs.write_file(&p, &mut &data[..], n, &attrs)
        }
        2 => {
            let p = inp.path();
            fs.mkdir(&p, inp.byte().is_multiple_of(2), &attrs)
        }
        3 => {
            let p = inp.path();
            fs.remove(&p, inp.byte().is_multiple_of(2))
        }
        4 => {
            let (t, p) = (inp.path(), inp.path());
            let long = inp.byte().is_multiple_of(2);
            let target = if long { t.repeat(12) } else { t };
            fs.symlink(&target, &p, &attrs)
        }
        5 => {
            let (a, b) = (inp.path(), inp.path());
            fs.hard_link(&a, &b)
        }
        6 => {
            let (a, b) = (inp.path(), inp.path());
            fs.rename(&a, &b)
        }
        7 => {
            let p = inp.path();
            fs.truncate(&p, inp.size())
        }
        8 => {
            let p = inp.path();
            let kind = [FileKind::CharDevice, FileKind::Fifo, FileKind::Socket]
                [usize::from(inp.byte()) % 3];
            fs.mknod(
                &p,
                kind,
                u32::from(inp.byte()),
                u32::from(inp.byte()),
                &attrs,
            )
        }
        9 => {
            let p = inp.path();
            fs.set_mode(&p, u32::from(inp.byte()) * 16)
        }
        10 => {
            let p = inp.path();
            let n = usize::from(inp.byte()) * 8;
            fs.set_xattr(&p, "user.fuzz", &vec![7u8; n])
        }
        11 => {
            let p = inp.path();
            fs.remove_xattr(&p, "user.fuzz")
        }
        12 => {
            let p = inp.path();
            let on = inp.byte().is_multiple_of(2);
            let (set, clear): (&[&str], &[&str]) = if on {
                (&["nodump"], &[])
            } else {
                (&[], &["nodump"])
            };
            fs.set_flags(&p, set, clear)
        }
        13 => {
            let p = inp.path();
            fs.set_owner(&p, Some(u32::from(inp.byte())), None)
        }
        _ => {
            // A batch of up to four operations, committed once.
            let n = 1 + inp.byte() % 4;
            let mut ops: Vec<u8> = Vec::new();
            for _ in 0..n * 8 {
                ops.push(inp.byte());
            }
            fs.batch(&mut |fs| {
                let mut sub = Input(&ops);
                for _ in 0..n {
                    let _ = step(fs, &mut sub);
                }
                if ops.first().is_some_and(|b| b.is_multiple_of(5)) {
                    return Err(imagegen::Error::Invalid("the batch gives up".into()));
                }
                Ok(())
            })
        }
    }
}

/// The image under test: copy-on-write over the shared base in memory (no
/// per-run copy of it, no spill file), remembering whether any write since
/// the last mark changed a byte — cheaper than comparing whole images after
/// every operation.
struct Tracked {
    base: Arc<MemDevice>,
    blocks: Mutex<HashMap<u64, Box<[u8]>>>,
    changed: AtomicBool,
}

const COW_BLOCK: u64 = 4096;

impl Tracked {
    fn new(base: Arc<MemDevice>) -> Tracked {
        Tracked {
            base,
            blocks: Mutex::new(HashMap::new()),
            changed: AtomicBool::new(false),
        }
    }

    /// Calls `f(block, offset in block, range of buf)` for each block `len`
    /// bytes at `offset` touch.
    fn each(offset: u64, len: usize, mut f: impl FnMut(u64, usize, std::ops::Range<usize>)) {
        let mut done = 0;
        while done < len {
            let at = offset + done as u64;
            let within = (at % COW_BLOCK) as usize;
            let n = (COW_BLOCK as usize - within).min(len - done);
            f(at / COW_BLOCK, within, done..done + n);
            done += n;
        }
    }
}

impl BlockDevice for Tracked {
    fn size(&self) -> u64 {
        self.base.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> imagegen::Result<()> {
        imagegen::block::check_bounds(offset, buf.len(), self.size())?;
        self.base.read_at(offset, buf)?;
        let blocks = self.blocks.lock().expect("lock");
        Self::each(offset, buf.len(), |b, within, r| {
            if let Some(block) = blocks.get(&b) {
                let n = r.len();
                buf[r].copy_from_slice(&block[within..within + n]);
            }
        });
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> imagegen::Result<()> {
        imagegen::block::check_bounds(offset, buf.len(), self.size())?;
        let mut blocks = self.blocks.lock().expect("lock");
        let mut result = Ok(());
        Self::each(offset, buf.len(), |b, within, r| {
            let block = blocks.entry(b).or_insert_with(|| {
                let mut fresh = vec![0u8; COW_BLOCK as usize].into_boxed_slice();
                let start = b * COW_BLOCK;
                let n = (self.base.size() - start).min(COW_BLOCK) as usize;
                if let Err(e) = self.base.read_at(start, &mut fresh[..n]) {
                    result = Err(e);
                }
                fresh
            });
            let n = r.len();
            if block[within..within + n] != buf[r.clone()] {
                self.changed.store(true, Ordering::Relaxed);
                block[within..within + n].copy_from_slice(&buf[r]);
            }
        });
        result
    }
    fn flush(&self) -> imagegen::Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "fuzz image".into()
    }
}

/// Runs the operations `input` describes on a copy-on-write view of `base`
/// (a whole ext4 image) and checks the invariant after each; panics on a
/// violation. Returns how many operations ran.
pub fn run(base: &Arc<MemDevice>, input: &[u8]) -> usize {
    let dev = Arc::new(Tracked::new(base.clone()));
    let now = Timestamp {
        secs: 1_800_000_000,
        nanos: 0,
    };
    let Ok(mut fs) = Ext4Fs::open_with(dev.clone(), OpenOptions::writable(now)) else {
        return 0;
    };
    let mut inp = Input(input);
    // Odd first byte: group commit, the maps checked at the flushes the
    // input asks for and at the end, since a second handle sees only what
    // was committed.
    let deferred = inp.byte() % 2 == 1;
    if deferred {
        fs.defer_commits();
    }
    let check = |ops: usize| {
        let check =
            Ext4Fs::open_with(dev.clone(), OpenOptions::read_only()).and_then(|ro| ro.check_maps());
        match check {
            Ok(r) if r.is_clean() => {}
            Ok(r) => panic!(
                "operation {ops} left the maps inconsistent: {:?}",
                r.problems
            ),
            Err(e) => panic!("operation {ops} left an image that does not open: {e}"),
        }
    };
    let mut ops = 0;
    while !inp.done() && ops < 64 {
        dev.changed.store(false, Ordering::Relaxed);
        let result = step(&mut fs, &mut inp);
        ops += 1;
        match result {
            Ok(()) if !deferred => check(ops),
            Ok(()) => {
                if inp.byte() % 4 == 0 {
                    fs.sync().expect("commit");
                    check(ops);
                }
            }
            Err(e) => {
                assert!(
                    !dev.changed.load(Ordering::Relaxed),
                    "operation {ops} failed ({e}) but changed the image"
                );
                assert!(!e.to_string().contains('\n'), "not one line: {e}");
            }
        }
    }
    if deferred {
        fs.sync().expect("commit");
        check(ops);
    }
    let _ = dev.flush();
    ops
}
