//! The write engine: one reader thread feeds every target's writer thread
//! through bounded queues, so several cards are written from one read of the
//! source and memory stays bounded.
//!
//! Order on each target: the sectors that will hold the partition table are
//! zeroed first (an old table must not survive an interrupted write), every
//! other planned range is written, the target is flushed, then the table
//! sectors are written, flushed again and the kernel re-reads the table. A
//! failure or Ctrl-C before that last step leaves the card without a table.

use crate::plan::Plan;
use crate::progress::{Observer, Phase};
use crate::ranges::RangeSet;
use crate::source::{Chunk, Pool, Source};
use crate::target::Target;
use crate::verify::{HashList, Hasher};
use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

/// Bytes per chunk read from the source and written in one call.
pub const CHUNK: usize = 4 << 20;
/// Chunks queued per consumer before the reader waits.
const QUEUE: usize = 4;

/// What happened on one target.
#[derive(Debug)]
pub struct WriteReport {
    /// Bytes written (data and table).
    pub written: u64,
    /// Wall time from the first write to the end (or the failure).
    pub seconds: f64,
    /// Outcome: Ok, or the error that stopped this target.
    pub result: Result<()>,
}

enum Msg {
    Data(Arc<Chunk>),
    /// The source is done; the table chunks follow in this message.
    End(Vec<Arc<Chunk>>),
}

/// Writes `plan` from `source` to every target concurrently. Returns one
/// report per target (in order) and, when `hash` is set, the hashes of
/// everything written, for verification (hashing runs on its own thread);
/// `Err` only when the source itself failed, in which case no target got a
/// partition table.
pub fn write_all(
    mut source: Source,
    plan: &Plan,
    targets: &[Arc<dyn Target>],
    hash: bool,
    observer: &dyn Observer,
    cancel: &AtomicBool,
) -> (Vec<WriteReport>, Result<HashList>) {
    let pool = Pool::new(QUEUE * (targets.len() + 1) + 2, CHUNK);
    let table = plan.table.clone();
    let pieces = plan.pieces();
    let total = plan.write.bytes() + table.bytes();
    std::thread::scope(|s| {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let (tx, rx) = sync_channel::<Msg>(QUEUE);
            senders.push(Some(tx));
            let table = &table;
            handles.push(s.spawn(move || {
                let mut written = 0;
                let t0 = std::time::Instant::now();
                let result = write_one(&**t, rx, table, total, i, observer, cancel, &mut written);
                if result.is_err() {
                    observer.failed(i);
                }
                WriteReport {
                    written,
                    seconds: t0.elapsed().as_secs_f64(),
                    result,
                }
            }));
        }
        let (htx, hrx) = sync_channel::<Msg>(QUEUE);
        let hasher = s.spawn(move || {
            let mut h = Hasher::new();
            for m in hrx {
                match m {
                    Msg::Data(c) => h.add(c.offset(), c.data()),
                    Msg::End(t) => t.iter().for_each(|c| h.add(c.offset(), c.data())),
                }
            }
            h.finish()
        });
        // Without hashing the hasher gets nothing and ends at once.
        let mut htx = hash.then_some(htx);
        let mut table_chunks = Vec::new();
        let read = source.read_ranges(&pieces, CHUNK, &pool, |chunk| {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            // Pieces are cut at table boundaries, so a chunk is all table or none.
            let c = Arc::new(chunk);
            let off = c.offset();
            if !table
                .extents()
                .iter()
                .any(|e| e.start <= off && off < e.end)
            {
                send_all(&mut senders, &mut htx, || Msg::Data(c.clone()));
            } else {
                table_chunks.push(c);
            }
            // Without targets (plain verification) only the hasher consumes.
            if targets.is_empty() {
                htx.is_some()
            } else {
                senders.iter().any(Option::is_some)
            }
        });
        let read = match read {
            Ok(()) if cancel.load(Ordering::Relaxed) => Err(Error::Interrupted {
                device: source.describe(),
                written: 0,
            }),
            other => other,
        };
        if read.is_ok() {
            send_all(&mut senders, &mut htx, || Msg::End(table_chunks.clone()));
        }
        // Dropping the senders without End tells writers to stop before the table.
        drop(senders);
        drop(htx);
        drop(table_chunks);
        let reports: Vec<WriteReport> = handles
            .into_iter()
            .map(|h| h.join().expect("writer thread does not panic"))
            .collect();
        let hashes = hasher.join().expect("hasher thread does not panic");
        (reports, read.map(|()| hashes))
    })
}

fn send_all(
    senders: &mut [Option<std::sync::mpsc::SyncSender<Msg>>],
    hasher: &mut Option<std::sync::mpsc::SyncSender<Msg>>,
    msg: impl Fn() -> Msg,
) {
    for s in senders.iter_mut() {
        // A writer that failed has dropped its receiver: stop feeding it.
        if s.as_ref().is_some_and(|tx| tx.send(msg()).is_err()) {
            *s = None;
        }
    }
    if hasher.as_ref().is_some_and(|tx| tx.send(msg()).is_err()) {
        *hasher = None;
    }
}

#[allow(clippy::too_many_arguments)]
fn write_one(
    t: &dyn Target,
    rx: Receiver<Msg>,
    table: &RangeSet,
    total: u64,
    index: usize,
    observer: &dyn Observer,
    cancel: &AtomicBool,
    written: &mut u64,
) -> Result<()> {
    let dev = t.describe();
    let fail = |what: &'static str, offset: u64| {
        let device = dev.clone();
        move |source| Error::Device {
            device,
            what,
            offset,
            source,
        }
    };
    // Invalidate any old table first, so an interrupted card has none.
    let zeros = crate::aligned::AlignedBuf::new(64 << 10);
    for e in table.extents() {
        let mut off = e.start;
        while off < e.end {
            let n = (e.end - off).min(zeros.capacity() as u64) as usize;
            t.write_at(off, &zeros.as_slice()[..n])
                .map_err(fail("clearing the old partition table", off))?;
            off += n as u64;
        }
    }
    t.flush().map_err(fail("flush", 0))?;
    observer.progress(index, Phase::Write, 0, total);
    let interrupted = |written: u64| Error::Interrupted {
        device: dev.clone(),
        written,
    };
    for msg in rx {
        if cancel.load(Ordering::Relaxed) {
            return Err(interrupted(*written));
        }
        match msg {
            Msg::Data(c) => {
                t.write_at(c.offset(), c.data())
                    .map_err(fail("write", c.offset()))?;
                *written += c.data().len() as u64;
                observer.progress(index, Phase::Write, *written, total);
            }
            Msg::End(tables) => {
                t.flush().map_err(fail("flush", *written))?;
                if cancel.load(Ordering::Relaxed) {
                    return Err(interrupted(*written));
                }
                for c in &tables {
                    t.write_at(c.offset(), c.data())
                        .map_err(fail("writing the partition table", c.offset()))?;
                    *written += c.data().len() as u64;
                }
                t.flush().map_err(fail("flush", *written))?;
                t.reread_partitions().map_err(|e| {
                    Error::system(format!("{dev}: re-reading the partition table"), e)
                })?;
                observer.progress(index, Phase::Write, *written, total);
                return Ok(());
            }
        }
    }
    // The reader stopped without End: source error or Ctrl-C.
    Err(interrupted(*written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{build, Hints};
    use crate::progress::Silent;
    use crate::target::DeviceTarget;
    use imagegen::block::MemDevice;
    use std::io;

    fn image(size: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        v[510] = 0x55;
        v[511] = 0xaa;
        v
    }

    fn target_file(dir: &std::path::Path, name: &str, size: u64) -> Arc<dyn Target> {
        let p = dir.join(name);
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        // An old "partition table" that must not survive.
        std::os::unix::fs::FileExt::write_all_at(&f, &[0xee; 512], 0).unwrap();
        Arc::new(DeviceTarget::open(&p).unwrap())
    }

    /// Fails every write at or past `limit`.
    struct Failing(Arc<dyn Target>, u64);

    impl Target for Failing {
        fn describe(&self) -> String {
            "failing".into()
        }
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
            if offset + buf.len() as u64 > self.1 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.0.write_at(offset, buf)
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.read_at(offset, buf)
        }
        fn flush(&self) -> io::Result<()> {
            self.0.flush()
        }
        fn reread_partitions(&self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn two_targets_from_one_read_and_a_failing_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = image(10 << 20 | 123);
        let src = Arc::new(MemDevice::from_vec(data.clone()));
        let plan = build(&Source::Random(src.clone()), &Hints::default()).unwrap();
        let a = target_file(dir.path(), "a", 16 << 20);
        let b = target_file(dir.path(), "b", 16 << 20);
        let bad: Arc<dyn Target> =
            Arc::new(Failing(target_file(dir.path(), "c", 16 << 20), 5 << 20));
        let cancel = AtomicBool::new(false);
        let (reports, hashes) = write_all(
            Source::Random(src.clone()),
            &plan,
            &[a.clone(), bad.clone(), b.clone()],
            true,
            &Silent,
            &cancel,
        );
        let hashes = hashes.unwrap();
        for (t, r) in [(&a, &reports[0]), (&b, &reports[2])] {
            r.result.as_ref().unwrap();
            assert_eq!(r.written, data.len() as u64);
            let mut back = vec![0; data.len()];
            t.read_at(0, &mut back).unwrap();
            assert!(back == data, "{} differs", t.describe());
            crate::verify::verify_target(&**t, &hashes, Some(&*src), 0, &Silent, &cancel).unwrap();
        }
        let err = reports[1].result.as_ref().unwrap_err().to_string();
        assert!(err.contains("write failed at offset 4198400"), "{err}");
        // The failed target's old table was cleared and no new one written.
        let mut sector = [1u8; 512];
        bad.read_at(0, &mut sector).unwrap();
        assert_eq!(sector, [0; 512]);
        // A changed byte is found, to the byte, even early in a long run.
        a.write_at(5000, &[0xff]).unwrap();
        let e = crate::verify::verify_target(&*a, &hashes, Some(&*src), 0, &Silent, &cancel)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offset 5000"), "{e}");
        a.write_at(5000, &data[5000..5001]).unwrap();
        a.write_at(7_000_001, &[0]).unwrap();
        let e = crate::verify::verify_target(&*a, &hashes, Some(&*src), 0, &Silent, &cancel)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offset 7000001"), "{e}");
    }

    /// Sets the cancel flag once a device has passed `at` bytes.
    struct CancelAt<'a>(&'a AtomicBool, u64);

    impl crate::progress::Observer for CancelAt<'_> {
        fn progress(&self, _: usize, _: Phase, done: u64, _: u64) {
            if done >= self.1 {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        fn failed(&self, _: usize) {}
    }

    #[test]
    fn interrupted_run_leaves_no_partition_table() {
        let dir = tempfile::tempdir().unwrap();
        let data = image(24 << 20);
        let src = Arc::new(MemDevice::from_vec(data));
        let plan = build(&Source::Random(src.clone()), &Hints::default()).unwrap();
        let t = target_file(dir.path(), "t", 32 << 20);
        let cancel = AtomicBool::new(false);
        let (reports, _) = write_all(
            Source::Random(src),
            &plan,
            std::slice::from_ref(&t),
            false,
            &CancelAt(&cancel, 8 << 20),
            &cancel,
        );
        let err = reports[0].result.as_ref().unwrap_err().to_string();
        assert!(
            err.contains("interrupted") && err.contains("not written"),
            "{err}"
        );
        let mut sector = [1u8; 512];
        t.read_at(0, &mut sector).unwrap();
        assert_eq!(sector, [0; 512], "no table after an interruption");
    }

    /// Raises a real SIGINT once a device has passed `at` bytes.
    struct RaiseAt(u64, AtomicBool);

    impl crate::progress::Observer for RaiseAt {
        fn progress(&self, _: usize, _: Phase, done: u64, _: u64) {
            if done >= self.0 && !self.1.swap(true, Ordering::SeqCst) {
                // SAFETY: raise(3) with the handler `install` put in place.
                unsafe { libc::raise(libc::SIGINT) };
            }
        }
        fn failed(&self, _: usize) {}
    }

    #[test]
    fn sigint_through_the_handler_stops_before_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let src = Arc::new(MemDevice::from_vec(image(24 << 20)));
        let plan = build(&Source::Random(src.clone()), &Hints::default()).unwrap();
        let t = target_file(dir.path(), "t", 32 << 20);
        let cancel = crate::interrupt::install();
        let (reports, _) = write_all(
            Source::Random(src),
            &plan,
            std::slice::from_ref(&t),
            false,
            &RaiseAt(8 << 20, AtomicBool::new(false)),
            cancel,
        );
        let err = reports[0].result.as_ref().unwrap_err().to_string();
        assert!(err.contains("interrupted"), "{err}");
        let mut sector = [1u8; 512];
        t.read_at(0, &mut sector).unwrap();
        assert_eq!(sector, [0; 512], "no table after SIGINT");
    }
}
