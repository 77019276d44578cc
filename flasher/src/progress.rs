//! Progress reporting: an [`Observer`] receives byte counts per device and
//! phase from the writer and verifier threads. [`Bars`] draws one `indicatif`
//! bar per device; [`JsonLines`] prints one JSON object per line instead:
//!
//! `{"event":"progress","device":"/dev/sdb","phase":"write","bytes":N,"total":N}`
//! (at most every 250 ms per device and phase, and at 100 %).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which pass over a device is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Writing the planned ranges.
    Write,
    /// Reading them back and comparing.
    Verify,
}

/// Receives progress from the worker threads.
pub trait Observer: Sync {
    /// `done` of `total` bytes of `phase` on device number `device`.
    fn progress(&self, device: usize, phase: Phase, done: u64, total: u64);
    /// Device number `device` stopped with an error (reported separately).
    fn failed(&self, device: usize);
}

/// Reports nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Observer for Silent {
    fn progress(&self, _: usize, _: Phase, _: u64, _: u64) {}
    fn failed(&self, _: usize) {}
}

/// Another observer seen with device numbers shifted by `first`: lets
/// several writer runs, each numbering its own targets from 0, report into
/// one set of bars (see [`crate::writer::write_each`]).
pub struct Shifted<'a> {
    inner: &'a dyn Observer,
    first: usize,
}

impl<'a> Shifted<'a> {
    /// Device `n` of this run is device `first + n` of `inner`.
    pub fn new(inner: &'a dyn Observer, first: usize) -> Self {
        Shifted { inner, first }
    }
}

impl Observer for Shifted<'_> {
    fn progress(&self, device: usize, phase: Phase, done: u64, total: u64) {
        self.inner.progress(self.first + device, phase, done, total);
    }

    fn failed(&self, device: usize) {
        self.inner.failed(self.first + device);
    }
}

/// One terminal progress bar per device and phase.
pub struct Bars {
    multi: MultiProgress,
    names: Vec<String>,
    bars: Mutex<Vec<Option<(Phase, ProgressBar)>>>,
}

impl Bars {
    /// Bars for these device names, drawn on stderr.
    pub fn new(names: Vec<String>) -> Self {
        let n = names.len();
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            names,
            bars: Mutex::new((0..n).map(|_| None).collect()),
        }
    }
}

impl Observer for Bars {
    fn progress(&self, device: usize, phase: Phase, done: u64, total: u64) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = bars.get_mut(device) else {
            return;
        };
        if slot.as_ref().is_none_or(|(p, _)| *p != phase) {
            if let Some((_, old)) = slot.take() {
                old.finish();
            }
            let bar = self.multi.add(ProgressBar::new(total));
            let verb = match phase {
                Phase::Write => "write ",
                Phase::Verify => "verify",
            };
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{prefix}} {verb} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}}"
                ))
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(self.names[device].clone());
            *slot = Some((phase, bar));
        }
        if let Some((_, bar)) = slot {
            bar.set_length(total);
            bar.set_position(done);
            if done >= total {
                bar.finish();
            }
        }
    }

    fn failed(&self, device: usize) {
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(Some((_, bar))) = bars.get(device) {
            bar.abandon_with_message("failed");
        }
    }
}

/// Machine-readable progress on stdout, one JSON object per line.
pub struct JsonLines {
    names: Vec<String>,
    last: Mutex<Vec<Option<(Phase, Instant)>>>,
}

impl JsonLines {
    /// Progress lines for these device names.
    pub fn new(names: Vec<String>) -> Self {
        let n = names.len();
        JsonLines {
            names,
            last: Mutex::new(vec![None; n]),
        }
    }

    /// Prints one JSON value as a line on stdout.
    pub fn emit(value: &serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }
}

impl Observer for JsonLines {
    fn progress(&self, device: usize, phase: Phase, done: u64, total: u64) {
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let Some(slot) = last.get_mut(device) else {
                return;
            };
            let now = Instant::now();
            let due = match slot {
                Some((p, t)) => *p != phase || now.duration_since(*t) >= Duration::from_millis(250),
                None => true,
            };
            if !due && done < total {
                return;
            }
            *slot = Some((phase, now));
        }
        Self::emit(&serde_json::json!({
            "event": "progress",
            "device": self.names[device],
            "phase": phase,
            "bytes": done,
            "total": total,
        }));
    }

    fn failed(&self, _: usize) {}
}
