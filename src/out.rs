//! What `nodeimg` prints on stdout and stderr, in one place.
//!
//! - `outln!` prints data the user asked for (`inspect`, `fs cat`,
//!   `cluster info`, `--json`): always, even with `-q`.
//! - `sayln!` prints summaries and hints on stdout and `notice!` notes on
//!   stderr: both are silent with `-q`.
//!
//! A reader that went away (`nodeimg cluster info --json | head -1`) ends the
//! program quietly with status 141, as the default SIGPIPE action would (Rust
//! ignores SIGPIPE, so a write fails with EPIPE instead): unfinished outputs
//! are removed first, as on SIGINT. Any other failure to write stdout is an
//! I/O error (exit 5).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);
static VERBOSE: AtomicBool = AtomicBool::new(false);

/// `-v`: steps are logged, so progress bars stay hidden.
pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
}

/// Whether `-v` was given.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// `-q`: print errors only.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `-q` was given (progress bars and summaries stay hidden).
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Writes to stdout, ending the program as described in the module docs on
/// failure.
pub fn stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        drop(out);
        failed(&e);
    }
}

/// Writes raw bytes to stdout (`fs cat`, `man`, completions).
pub fn stdout_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        drop(out);
        failed(&e);
    }
}

fn failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        crate::signals::exit_on_closed_pipe();
    }
    eprintln!("nodeimg: error: writing to stdout: {e}");
    crate::signals::exit_with(crate::exit::Code::Io as i32);
}

/// Prints a line of data on stdout (also with `-q`).
macro_rules! outln {
    () => { $crate::out::stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::out::stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// Prints data on stdout without a newline (also with `-q`).
macro_rules! out {
    ($($t:tt)*) => { $crate::out::stdout(format_args!($($t)*)) };
}

/// Prints a summary line on stdout, unless `-q`.
macro_rules! sayln {
    ($($t:tt)*) => {
        if !$crate::out::quiet() {
            $crate::out::stdout(format_args!("{}\n", format_args!($($t)*)))
        }
    };
}

/// Prints a note on stderr, unless `-q`.
macro_rules! notice {
    ($($t:tt)*) => {
        if !$crate::out::quiet() {
            eprintln!($($t)*)
        }
    };
}
