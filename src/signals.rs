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
//! Each long command says what it is doing with [`doing`] ("building
//! dist/"), and the line names it: `nodeimg: interrupted by SIGINT while
//! building dist/; the unfinished output was removed`. Staging directories
//! and spools are `imagegen::sink::PendingDir`s, in the same registry as the
//! partial files, so they go the same way.
//!
//! A closed stdout (`nodeimg cluster info --json | head -1`) ends the
//! program through [`exit_on_closed_pipe`]: the same removal, no message,
//! status 141 (128 + SIGPIPE), as a C program killed by SIGPIPE.
//!
//! A command that must stop at a safe point rather than at once — `flash`
//! never writes a partition table after an interruption — calls
//! [`cooperate`] with the flag its workers poll: the first signal then only
//! sets that flag, and when the command returns, `main` calls
//! [`exit_if_interrupted`], which removes, prints and exits the same way. A
//! second signal exits at once.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

/// What the running command is doing, for the interrupt message.
static DOING: Mutex<Option<String>> = Mutex::new(None);

/// Records what the command is doing now ("flashing dist/: unpacking the
/// base"); the interrupt message names it.
pub fn doing(what: impl Into<String>) {
    *DOING.lock().unwrap_or_else(|e| e.into_inner()) = Some(what.into());
}

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

/// Ends the program quietly because stdout's reader went away: removes
/// the unfinished outputs and exits 141.
pub fn exit_on_closed_pipe() -> ! {
    imagegen::sink::discard_all_pending();
    std::process::exit(128 + libc::SIGPIPE);
}

/// Removes the unfinished outputs and exits with `code`.
pub fn exit_with(code: i32) -> ! {
    imagegen::sink::discard_all_pending();
    std::process::exit(code);
}

fn exit_now(sig: i32) -> ! {
    let removed = imagegen::sink::discard_all_pending();
    let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
    let mut line = format!("nodeimg: interrupted by {name}");
    // A poisoned lock still holds the text (the handler must not panic).
    if let Some(what) = DOING.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        line.push_str(" while ");
        line.push_str(what);
    }
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
