//! Progress of the long stages (`base`, `build`): one indicatif bar on
//! stderr when it is a terminal (hidden with `-q`, `-v`, `--json` or when
//! stderr is a file or pipe), and each step's duration logged through
//! `tracing` (shown with `-v`): `INFO build: step done step="stamping node0"
//! secs=0.41`. The stage itself is a span whose close line (`-v`) carries
//! its total time.

use indicatif::{ProgressBar, ProgressStyle};
use pipeline::base::Progress;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

/// Reports a stage's steps (see the module documentation).
pub struct Steps {
    bar: Option<ProgressBar>,
    current: Mutex<Option<(String, Instant)>>,
}

impl Steps {
    /// Steps of a stage; `json` hides the bar (stdout is for the summary).
    pub fn new(json: bool) -> Steps {
        let show = !json
            && !crate::out::quiet()
            && !crate::out::verbose()
            && std::io::stderr().is_terminal();
        Steps {
            bar: show.then(|| {
                let b = ProgressBar::new_spinner();
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                b
            }),
            current: Mutex::new(None),
        }
    }

    /// Ends the last step and removes the bar.
    pub fn done(&self) {
        self.finish_step();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn finish_step(&self) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((what, t0)) = current.take() {
            let secs = t0.elapsed().as_secs_f64();
            tracing::info!(step = %what, secs = format_args!("{secs:.2}"), "step done");
        }
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        self.done();
    }
}

impl Progress for Steps {
    fn step_total(&self, what: &str, total: Option<u64>) {
        self.finish_step();
        tracing::debug!(step = %what, total, "step begins");
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((what.to_string(), Instant::now()));
        let Some(b) = &self.bar else { return };
        b.set_position(0);
        b.set_message(what.to_string());
        match total {
            Some(t) => {
                b.set_length(t);
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
            }
            None => {
                b.unset_length();
                b.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
            }
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn position(&self, done: u64, total: Option<u64>) {
        if let Some(b) = &self.bar {
            if let Some(t) = total {
                if b.length() != Some(t) {
                    b.set_length(t);
                }
            }
            b.set_position(done);
        }
    }
}
