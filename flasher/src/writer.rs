//! The write engine: one reader thread feeds every target's writer thread
//! through bounded queues, so several cards are written from one read of the
//! source and memory stays bounded.
//!
//! Order on each target — "a card with a partition table is a verified
//! card": the sectors that will hold the partition table are zeroed first
//! (an old table must not survive an interrupted write); every other planned
//! range is written; the target is flushed; every written block is read back
//! and compared; only then is the table written, flushed, read back and
//! compared, and the kernel asked to re-read it. A failure or Ctrl-C before
//! that leaves the card without a table.
//!
//! A hashing thread sees every chunk in offset order: it builds the hashes
//! read-back compares against, and checks the bmap's range checksums as the
//! data streams. A damaged image is refused before any card gets its table.

use crate::plan::Plan;
use crate::progress::{Observer, Phase, Shifted};
use crate::ranges::{RangeSet, StreamMapper};
use crate::source::{Chunk, Pool, Source};
use crate::target::Target;
use crate::verify::{HashList, Hasher};
use crate::{Error, Result};
use imagegen::block::BlockDevice;
use imagegen::bmap::RangeVerifier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// The backup GPT: header and entries in a disk's last 33 sectors.
const GPT_BACKUP_BYTES: u64 = 33 * 512;
/// Bytes per chunk read from the source and written in one call.
pub const CHUNK: usize = 4 << 20;
/// Chunks queued per consumer before the reader waits.
const QUEUE: usize = 4;

/// What the run should check besides writing.
#[derive(Debug, Default)]
pub struct Options {
    /// Read every written block back before the table is written.
    pub verify: bool,
    /// Build the hashes of everything read (for `nodeimg verify`) even
    /// without targets.
    pub hash: bool,
    /// The bmap's range checksums, checked as the data streams.
    pub checks: Option<RangeVerifier>,
}

/// What happened on one target.
#[derive(Debug)]
pub struct WriteReport {
    /// Bytes written (data and table).
    pub written: u64,
    /// Wall time from the first write to the end of writing the data.
    pub seconds: f64,
    /// Wall time spent reading back.
    pub verify_seconds: f64,
    /// Whether every written byte was read back and matched.
    pub verified: bool,
    /// Outcome: Ok, or the error that stopped this target.
    pub result: Result<()>,
}

/// What the reader learned: the plan as executed, and the hashes.
#[derive(Debug)]
pub struct Written {
    /// The plan, with learned maps resolved.
    pub plan: Plan,
    /// Hashes of everything read (empty unless hashing was asked for).
    pub hashes: HashList,
    /// Bytes whose bmap checksums matched.
    pub checked: u64,
}

enum Msg {
    /// A chunk, and how far into the image the reader has come.
    Data(Arc<Chunk>, u64),
    /// The source is done and passed its checks: verify, then the table.
    End {
        tables: Vec<Arc<Chunk>>,
        hashes: Option<Arc<HashList>>,
    },
}

/// Writes `plan` from `source` to every target concurrently. Returns one
/// report per target (in order) and what was read; `Err` when the source
/// failed (unreadable, or not what its bmap says), in which case no target
/// got a partition table.
pub fn write_all(
    mut source: Source,
    plan: &Plan,
    targets: &[Arc<dyn Target>],
    opts: Options,
    observer: &dyn Observer,
    cancel: &AtomicBool,
) -> (Vec<WriteReport>, Result<Written>) {
    let pool = Pool::new(QUEUE * (targets.len() + 1) + 2, CHUNK);
    let table = plan.table.clone();
    let learned = plan.learned();
    let total = plan.bytes();
    let random = source.random_access();
    let hash = opts.hash || (opts.verify && !targets.is_empty());
    let verify = opts.verify;
    let bad_image = AtomicBool::new(false);
    let want_hasher = hash || opts.checks.is_some();
    std::thread::scope(|s| {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let (tx, rx) = sync_channel::<Msg>(QUEUE);
            senders.push(Some(tx));
            let (table, random) = (&table, random.as_deref());
            handles.push(s.spawn(move || {
                let mut r = WriteReport {
                    written: 0,
                    seconds: 0.0,
                    verify_seconds: 0.0,
                    verified: false,
                    result: Ok(()),
                };
                let job = Job {
                    t: &**t,
                    table,
                    total,
                    learned,
                    index: i,
                    observer,
                    cancel,
                    random,
                };
                r.result = job.run(rx, &mut r);
                if r.result.is_err() {
                    observer.failed(i);
                }
                r
            }));
        }
        // The hasher sees every chunk, table included, in offset order.
        let (htx, hrx) = sync_channel::<Arc<Chunk>>(QUEUE);
        let mut checks = opts.checks;
        let bad = &bad_image;
        let hasher = s.spawn(move || {
            let mut h = hash.then(Hasher::new);
            let mut failed: Option<Error> = None;
            for c in hrx {
                if let Some(h) = &mut h {
                    h.add(c.offset(), c.data());
                }
                if let (Some(v), None) = (&mut checks, &failed) {
                    if let Err(e) = v.feed(c.offset(), c.data()) {
                        failed = Some(e.into());
                        bad.store(true, Ordering::Relaxed);
                    }
                }
            }
            (h.map(Hasher::finish).unwrap_or_default(), failed, checks)
        });
        let mut htx = want_hasher.then_some(htx);
        let mut table_chunks = Vec::new();
        let mut through = 0u64;
        let mut stopped = false;
        let mut each = |chunk: Chunk| {
            if cancel.load(Ordering::Relaxed) || bad_image.load(Ordering::Relaxed) {
                stopped = true;
                return false;
            }
            let c = Arc::new(chunk);
            let off = c.offset();
            through = through.max(off + c.data().len() as u64);
            if let Some(tx) = &htx {
                if tx.send(c.clone()).is_err() {
                    htx = None;
                }
            }
            // Pieces are cut at table boundaries, so a chunk is all table or none.
            if table
                .extents()
                .iter()
                .any(|e| e.start <= off && off < e.end)
            {
                table_chunks.push(c);
            } else {
                send_all(&mut senders, || Msg::Data(c.clone(), through));
            }
            let go_on = targets.is_empty() || senders.iter().any(Option::is_some);
            stopped |= !go_on;
            go_on
        };
        let mut mapper = plan
            .learn
            .as_ref()
            .map(|parts| StreamMapper::new(plan.image_size, parts));
        let read = match &mut mapper {
            None => source.read_ranges(&plan.pieces(), CHUNK, &pool, &mut each),
            Some(m) => source.read_selected(
                &plan.write.union(&table),
                CHUNK,
                &pool,
                |off, data| m.feed(off, data).map_err(Error::from),
                &mut each,
            ),
        };

        let read = match read {
            Ok(()) if cancel.load(Ordering::Relaxed) => Err(Error::Interrupted {
                device: source.describe(),
                written: 0,
            }),
            other => other,
        };
        drop(htx);
        let (hashes, failed, checks) = hasher.join().expect("hasher thread does not panic");
        // A range can be judged unread only when the read ran to its end (it
        // stops early when every card has failed, and that is not the image's fault).
        let checked = match (failed, checks) {
            (Some(e), _) => Err(e),
            (None, Some(v)) if !stopped => v.finish().map(|()| v.verified()).map_err(Error::from),
            (None, Some(v)) => Ok(v.verified()),
            (None, None) => Ok(0),
        };
        let read = read.and(checked);
        let hashes = Arc::new(hashes);
        if read.is_ok() {
            let shared = verify.then(|| hashes.clone());
            send_all(&mut senders, || Msg::End {
                tables: table_chunks.clone(),
                hashes: shared.clone(),
            });
        }
        // Dropping the senders without End tells writers to stop before the table.
        drop(senders);
        drop(table_chunks);
        let reports: Vec<WriteReport> = handles
            .into_iter()
            .map(|h| h.join().expect("writer thread does not panic"))
            .collect();
        let written = read.map(|checked| Written {
            plan: match &mapper {
                Some(m) => plan.with_learned(m.selected(), m.regions()),
                None => plan.clone(),
            },
            hashes: Arc::try_unwrap(hashes).unwrap_or_else(|a| (*a).clone()),
            checked,
        });
        (reports, written)
    })
}

/// One card of [`write_each`]: its own source and plan, and the card.
pub struct CardWrite {
    /// What this card gets.
    pub source: Source,
    /// Which ranges of it to write.
    pub plan: Plan,
    /// The card.
    pub target: Arc<dyn Target>,
    /// Checks for this card's run.
    pub opts: Options,
}

/// Writes several cards at once, each from a source of its own (each node's
/// base ⊕ delta over one shared base file: the base is read from disk once
/// and served to the others from the page cache). One [`write_all`] per
/// card, each in its own thread; card `i` reports progress to `observer` as
/// device `i`, and every run polls `cancel`. Returns, per card in order, its
/// report and what its run read.
pub fn write_each(
    cards: Vec<CardWrite>,
    observer: &dyn Observer,
    cancel: &AtomicBool,
) -> Vec<(WriteReport, Result<Written>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = cards
            .into_iter()
            .enumerate()
            .map(|(i, card)| {
                s.spawn(move || {
                    let shifted = Shifted::new(observer, i);
                    let (mut reports, read) = write_all(
                        card.source,
                        &card.plan,
                        std::slice::from_ref(&card.target),
                        card.opts,
                        &shifted,
                        cancel,
                    );
                    let report = reports.pop().expect("write_all reports once per target");
                    (report, read)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("card thread does not panic"))
            .collect()
    })
}

fn send_all(senders: &mut [Option<SyncSender<Msg>>], msg: impl Fn() -> Msg) {
    for s in senders.iter_mut() {
        // A writer that failed has dropped its receiver: stop feeding it.
        if s.as_ref().is_some_and(|tx| tx.send(msg()).is_err()) {
            *s = None;
        }
    }
}

/// One target's share of the run.
struct Job<'a> {
    t: &'a dyn Target,
    table: &'a RangeSet,
    total: u64,
    learned: bool,
    index: usize,
    observer: &'a dyn Observer,
    cancel: &'a AtomicBool,
    random: Option<&'a dyn BlockDevice>,
}

impl Job<'_> {
    fn fail(&self, what: &'static str, offset: u64) -> impl FnOnce(std::io::Error) -> Error {
        let device = self.t.describe();
        move |source| Error::Device {
            device,
            what,
            offset,
            source,
        }
    }

    fn run(&self, rx: Receiver<Msg>, report: &mut WriteReport) -> Result<()> {
        let t = self.t;
        let dev = t.describe();
        // Invalidate any old table first, so an interrupted card has none.
        let zeros = crate::aligned::AlignedBuf::new(64 << 10);
        for e in self.table.extents() {
            let mut off = e.start;
            while off < e.end {
                let n = (e.end - off).min(zeros.capacity() as u64) as usize;
                t.write_at(off, &zeros.as_slice()[..n])
                    .map_err(self.fail("clearing the old partition table", off))?;
                off += n as u64;
            }
        }
        // A card that once held a GPT image keeps that table's backup in its
        // last 33 sectors; an MBR image (or a smaller GPT one) never writes
        // there. Zero them too, so no old table survives; planned data that
        // lands there is written afterwards.
        let size = t.size();
        if size >= GPT_BACKUP_BYTES {
            let start = size - GPT_BACKUP_BYTES;
            t.write_at(start, &zeros.as_slice()[..GPT_BACKUP_BYTES as usize])
                .map_err(self.fail("clearing an old backup partition table", start))?;
        }
        t.flush().map_err(self.fail("flush", 0))?;
        self.observer
            .progress(self.index, Phase::Write, 0, self.total);
        let t0 = std::time::Instant::now();
        let interrupted = |written: u64| Error::Interrupted {
            device: dev.clone(),
            written,
        };
        for msg in rx {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(interrupted(report.written));
            }
            match msg {
                Msg::Data(c, through) => {
                    t.write_at(c.offset(), c.data())
                        .map_err(self.fail("write", c.offset()))?;
                    report.written += c.data().len() as u64;
                    let done = if self.learned {
                        through
                    } else {
                        report.written
                    };
                    self.observer
                        .progress(self.index, Phase::Write, done, self.total);
                }
                Msg::End { tables, hashes } => {
                    t.flush().map_err(self.fail("flush", report.written))?;
                    report.seconds = t0.elapsed().as_secs_f64();
                    let done = if self.learned {
                        self.total
                    } else {
                        report.written
                    };
                    self.observer
                        .progress(self.index, Phase::Write, done, self.total);
                    if let Some(hashes) = hashes {
                        let t1 = std::time::Instant::now();
                        let data: Vec<_> = hashes
                            .iter()
                            .filter(|h| !self.in_table(h.offset))
                            .cloned()
                            .collect();
                        crate::verify::verify_target(
                            t,
                            &data,
                            self.random,
                            self.index,
                            self.observer,
                            self.cancel,
                        )?;
                        report.verify_seconds = t1.elapsed().as_secs_f64();
                    }
                    if self.cancel.load(Ordering::Relaxed) {
                        return Err(interrupted(report.written));
                    }
                    for c in &tables {
                        t.write_at(c.offset(), c.data())
                            .map_err(self.fail("writing the partition table", c.offset()))?;
                        report.written += c.data().len() as u64;
                    }
                    t.flush().map_err(self.fail("flush", report.written))?;
                    self.check_table(&tables)?;
                    report.verified = true;
                    t.reread_partitions().map_err(|e| {
                        Error::system(format!("{dev}: re-reading the partition table"), e)
                    })?;
                    return Ok(());
                }
            }
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(interrupted(report.written));
        }
        // The reader stopped without End: the image failed (reported on its own).
        Err(Error::Abandoned {
            device: dev,
            written: report.written,
        })
    }

    fn in_table(&self, offset: u64) -> bool {
        self.table
            .extents()
            .iter()
            .any(|e| e.start <= offset && offset < e.end)
    }

    /// Reads the table sectors back and compares them byte for byte.
    fn check_table(&self, tables: &[Arc<Chunk>]) -> Result<()> {
        for c in tables {
            let mut back = crate::aligned::AlignedBuf::new(c.data().len().max(4096));
            back.set_len(c.data().len());
            self.t
                .read_at(c.offset(), back.as_mut_slice())
                .map_err(self.fail("reading the partition table back", c.offset()))?;
            if let Some(at) = back
                .as_slice()
                .iter()
                .zip(c.data())
                .position(|(a, b)| a != b)
            {
                return Err(Error::Mismatch {
                    device: self.t.describe(),
                    offset: c.offset() + at as u64,
                    detail: " in the partition table".into(),
                });
            }
        }
        Ok(())
    }
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

    /// A test card over `inner` with a name and size of its own, whose
    /// writes go through `write` (which decides what reaches `inner`).
    struct Faulty<W> {
        inner: Arc<dyn Target>,
        name: &'static str,
        size: u64,
        write: W,
    }

    impl<W> Target for Faulty<W>
    where
        W: Fn(&dyn Target, u64, &[u8]) -> io::Result<()> + Send + Sync,
    {
        fn describe(&self) -> String {
            self.name.into()
        }
        fn size(&self) -> u64 {
            self.size
        }
        fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
            (self.write)(&*self.inner, offset, buf)
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.inner.read_at(offset, buf)
        }
        fn flush(&self) -> io::Result<()> {
            self.inner.flush()
        }
        fn reread_partitions(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A device whose space ends at `limit` bytes: writes past it fail.
    fn failing(inner: Arc<dyn Target>, limit: u64) -> Arc<dyn Target> {
        Arc::new(Faulty {
            inner,
            name: "failing",
            size: limit,
            write: move |t: &dyn Target, offset: u64, buf: &[u8]| {
                if offset + buf.len() as u64 > limit {
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
                t.write_at(offset, buf)
            },
        })
    }

    #[test]
    fn two_targets_from_one_read_and_a_failing_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = image(10 << 20 | 123);
        let src = Arc::new(MemDevice::from_vec(data.clone()));
        let plan = build(&Source::Random(src.clone()), &Hints::default()).unwrap();
        let a = target_file(dir.path(), "a", 16 << 20);
        let b = target_file(dir.path(), "b", 16 << 20);
        let bad = failing(target_file(dir.path(), "c", 16 << 20), 5 << 20);
        let cancel = AtomicBool::new(false);
        let (reports, read) = write_all(
            Source::Random(src.clone()),
            &plan,
            &[a.clone(), bad.clone(), b.clone()],
            Options {
                verify: true,
                hash: true,
                checks: None,
            },
            &Silent,
            &cancel,
        );
        let hashes = read.unwrap().hashes;
        for (t, r) in [(&a, &reports[0]), (&b, &reports[2])] {
            r.result.as_ref().unwrap();
            assert!(r.verified);
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

    /// Cards that meet: each holds its first write until `all` of them
    /// have begun writing (or 20 s passed) and counts in `met` whether they
    /// did. Cards written one after another never meet.
    #[derive(Default)]
    struct Meeting {
        started: std::sync::Mutex<usize>,
        all_in: std::sync::Condvar,
        met: std::sync::atomic::AtomicUsize,
    }

    impl Meeting {
        fn arrive(&self, all: usize) {
            let mut n = self.started.lock().unwrap();
            if *n >= all {
                return;
            }
            *n += 1;
            self.all_in.notify_all();
            let (mut n, _) = self
                .all_in
                .wait_timeout_while(n, std::time::Duration::from_secs(20), |n| *n < all)
                .unwrap();
            if *n >= all {
                self.met.fetch_add(1, Ordering::SeqCst);
            }
            // Later writes pass straight through.
            *n = usize::MAX;
        }
    }

    fn rendezvous(inner: Arc<dyn Target>, all: usize, m: Arc<Meeting>) -> Arc<dyn Target> {
        let size = inner.size();
        Arc::new(Faulty {
            inner,
            name: "card",
            size,
            write: move |t: &dyn Target, offset: u64, buf: &[u8]| {
                m.arrive(all);
                t.write_at(offset, buf)
            },
        })
    }

    #[test]
    fn cards_with_their_own_sources_are_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let meeting = Arc::new(Meeting::default());
        let mut cards = Vec::new();
        let mut images = Vec::new();
        for (i, name) in ["a", "b"].into_iter().enumerate() {
            let mut data = image(6 << 20 | 77);
            data[1 << 20] = i as u8 + 1;
            let src: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_vec(data.clone()));
            let plan = build(&Source::Random(src.clone()), &Hints::default()).unwrap();
            let target = rendezvous(target_file(dir.path(), name, 8 << 20), 2, meeting.clone());
            cards.push(CardWrite {
                source: Source::Random(src),
                plan,
                target: target.clone(),
                opts: Options {
                    verify: true,
                    ..Default::default()
                },
            });
            images.push((target, data));
        }
        let cancel = AtomicBool::new(false);
        let out = write_each(cards, &Silent, &cancel);
        assert_eq!(out.len(), 2);
        for (i, ((r, read), (t, data))) in out.iter().zip(&images).enumerate() {
            r.result.as_ref().unwrap();
            read.as_ref().unwrap();
            assert!(r.verified);
            let mut back = vec![0; data.len()];
            t.read_at(0, &mut back).unwrap();
            assert!(&back == data, "card {i} differs from its own source");
        }
        assert_eq!(
            meeting.met.load(Ordering::SeqCst),
            2,
            "the two cards were not being written at the same time"
        );
    }

    /// Stores the byte at `at` wrong, silently, as a failing card does.
    fn liar(inner: Arc<dyn Target>, at: u64) -> Arc<dyn Target> {
        let size = inner.size();
        Arc::new(Faulty {
            inner,
            name: "liar",
            size,
            write: move |t: &dyn Target, offset: u64, buf: &[u8]| {
                let mut v = buf.to_vec();
                if (offset..offset + v.len() as u64).contains(&at) {
                    v[(at - offset) as usize] ^= 0x40;
                }
                t.write_at(offset, &v)
            },
        })
    }

    #[test]
    fn a_card_that_fails_verification_gets_no_partition_table() {
        let dir = tempfile::tempdir().unwrap();
        let src = Arc::new(MemDevice::from_vec(image(6 << 20)));
        let plan = build(&Source::Random(src.clone()), &Hints::default()).unwrap();
        let t = liar(target_file(dir.path(), "t", 8 << 20), 3 << 20);
        let cancel = AtomicBool::new(false);
        let (reports, read) = write_all(
            Source::Random(src),
            &plan,
            std::slice::from_ref(&t),
            Options {
                verify: true,
                ..Default::default()
            },
            &Silent,
            &cancel,
        );
        read.unwrap();
        let err = reports[0].result.as_ref().unwrap_err().to_string();
        assert!(
            err.contains("verification failed") && err.contains(&(3u64 << 20).to_string()),
            "{err}"
        );
        let mut sector = [1u8; 512];
        t.read_at(0, &mut sector).unwrap();
        assert_eq!(sector, [0; 512], "verification comes before the table");
    }

    #[test]
    fn an_image_that_fails_its_bmap_gets_no_partition_table() {
        use imagegen::bmap::{Bmap, ChecksumType, Protection, RangeChecksum, RangeVerifier};
        use imagegen::ranges::Extent;
        let dir = tempfile::tempdir().unwrap();
        let data = image(6 << 20);
        let mut damaged = data.clone();
        damaged[(5 << 20) + 7] ^= 1;
        let range = |first: u64, last: u64| {
            let e = Extent::new(first * 4096, (last + 1) * 4096);
            RangeChecksum {
                blocks: (first, last),
                extent: e,
                digest: ChecksumType::Sha256.digest(&data[e.start as usize..e.end as usize]),
            }
        };
        let checksums = vec![range(0, 255), range(1024, 1535)];
        let bmap = Bmap {
            version: "2.0".into(),
            image_size: data.len() as u64,
            block_size: 4096,
            blocks_count: 1536,
            mapped_blocks_count: 768,
            mapped: RangeSet::from_extents(checksums.iter().map(|c| c.extent).collect()),
            checksum_type: Some(ChecksumType::Sha256),
            checksums,
            protection: Protection::Checksum,
        };
        let src = Arc::new(MemDevice::from_vec(damaged));
        let hints = Hints {
            bmap: Some(&bmap),
            ..Default::default()
        };
        let plan = build(&Source::Random(src.clone()), &hints).unwrap();
        let t = target_file(dir.path(), "t", 8 << 20);
        let cancel = AtomicBool::new(false);
        let (reports, read) = write_all(
            Source::Random(src),
            &plan,
            std::slice::from_ref(&t),
            Options {
                verify: false,
                hash: false,
                checks: RangeVerifier::new(&bmap, &RangeSet::new()),
            },
            &Silent,
            &cancel,
        );
        let err = read.unwrap_err().to_string();
        assert!(err.contains("blocks 1024-1535"), "{err}");
        let err = reports[0].result.as_ref().unwrap_err().to_string();
        assert!(
            err.contains("image failed") && !err.contains("interrupted"),
            "{err}"
        );
        let mut sector = [1u8; 512];
        t.read_at(0, &mut sector).unwrap();
        assert_eq!(sector, [0; 512], "no table for a damaged image");
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
            Options::default(),
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
            Options::default(),
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
