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
use std::sync::Arc;

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

/// Runs the operations `input` describes on a copy of `base` (a whole
/// ext4 image) and checks the invariant after each; panics on a violation.
/// Returns how many operations ran.
pub fn run(base: &[u8], input: &[u8]) -> usize {
    let dev = Arc::new(MemDevice::from_vec(base.to_vec()));
    let now = Timestamp {
        secs: 1_800_000_000,
        nanos: 0,
    };
    let Ok(mut fs) = Ext4Fs::open_with(dev.clone(), OpenOptions::writable(now)) else {
        return 0;
    };
    let mut inp = Input(input);
    let mut ops = 0;
    while !inp.done() && ops < 64 {
        let before = dev.to_vec();
        let result = step(&mut fs, &mut inp);
        ops += 1;
        match result {
            Ok(()) => {
                let check = Ext4Fs::open_with(dev.clone(), OpenOptions::read_only())
                    .and_then(|ro| ro.check_maps());
                match check {
                    Ok(r) if r.is_clean() => {}
                    Ok(r) => panic!(
                        "operation {ops} left the maps inconsistent: {:?}",
                        r.problems
                    ),
                    Err(e) => panic!("operation {ops} left an image that does not open: {e}"),
                }
            }
            Err(e) => {
                assert!(
                    dev.to_vec() == before,
                    "operation {ops} failed ({e}) but changed the image"
                );
                assert!(!e.to_string().contains('\n'), "not one line: {e}");
            }
        }
    }
    let _ = dev.flush();
    ops
}
