//! One path for SIGINT and SIGTERM, shared by every command.
//!
//! [`install`] runs once in `main`, before any command. A signal is then
//! handled on a thread of its own (not in a signal handler, so it may lock
//! and do I/O): it removes every unfinished output — the temporary
//! `.NAME.XXXX.partial` files that `imagegen::sink::PendingFile` lists in
//! its registry — prints one line and exits with 128 + the signal number
//! (130 for SIGINT, 143 for SIGTERM). Commands need do nothing to get this:
//! writing outputs through `PendingFile` (or `ImageWriter`, `DeltaWriter`,
//! `mkfs::ext4::build_file`…) is enough.
//!
//! A command that must stop at a safe point rather than at once — `flash`
//! never writes a partition table after an interruption — calls
//! [`cooperate`] with the flag its workers poll: the first signal then only
//! sets that flag, and when the command returns, `main` calls
//! [`exit_if_interrupted`], which removes, prints and exits the same way. A
//! second signal exits at once.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

/// The first signal received, or 0.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

/// The flag of the command that stops itself, and what the user should know
/// about the state it leaves.
static COOPERATIVE: OnceLock<(&'static AtomicBool, &'static str)> = OnceLock::new();

/// Starts the thread that handles SIGINT and SIGTERM.
pub fn install() -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let first = CAUGHT
                    .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                match COOPERATIVE.get() {
                    Some((flag, _)) if first => flag.store(true, Ordering::SeqCst),
                    _ => exit_now(CAUGHT.load(Ordering::SeqCst)),
                }
            }
        })?;
    Ok(())
}

/// Makes the first signal set `flag` instead of exiting; `note` is added to
/// the line printed at exit (e.g. what state the cards were left in).
pub fn cooperate(flag: &'static AtomicBool, note: &'static str) {
    // One long command per process: a second call keeps the first flag.
    let _ = COOPERATIVE.set((flag, note));
}

/// Whether a signal has been received (a cooperating command checks this to
/// skip its normal summary).
pub fn interrupted() -> bool {
    CAUGHT.load(Ordering::SeqCst) != 0
}

/// Exits as [`install`]'s thread would when a signal arrived while a
/// cooperating command wound down.
pub fn exit_if_interrupted() {
    let sig = CAUGHT.load(Ordering::SeqCst);
    if sig != 0 {
        exit_now(sig);
    }
}

fn exit_now(sig: i32) -> ! {
    let removed = imagegen::sink::discard_all_pending();
    let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
    let mut line = format!("nodeimg: interrupted by {name}");
    match removed {
        0 => {}
        1 => line.push_str("; the unfinished output was removed"),
        n => line.push_str(&format!("; {n} unfinished outputs were removed")),
    }
    if let Some((_, note)) = COOPERATIVE.get() {
        line.push_str("; ");
        line.push_str(note);
    }
    eprintln!("{line}");
    std::process::exit(128 + sig);
}
