//! Ctrl-C: the first SIGINT sets a flag the reader, writers and verifier poll,
//! so a run stops between chunks and never writes the partition table after
//! it; a second SIGINT kills the process the usual way.
//!
//! The `nodeimg` binary handles signals itself (its `signals` module, for
//! SIGINT and SIGTERM alike) and only sets [`flag`]; [`install`] is for
//! programs that use the flasher without a handler of their own.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only async-signal-safe work here: a store, and restoring the default.
    INTERRUPTED.store(true, Ordering::SeqCst);
    // SAFETY: signal() is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
}

/// Installs the SIGINT handler and returns the flag it sets.
pub fn install() -> &'static AtomicBool {
    // SAFETY: the handler only touches an atomic and calls signal().
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    &INTERRUPTED
}

/// The flag the reader, writers and verifier poll, for a handler installed
/// by the program itself.
pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}
