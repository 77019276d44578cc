//! Running the `nodeimg` binary from CLI tests: success, or failure with
//! one line on stderr and a given exit code.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The binary, without `SOURCE_DATE_EPOCH` from the environment.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodeimg"));
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

pub fn nodeimg(args: &[&str]) -> Output {
    bin().args(args).output().expect("nodeimg runs")
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = nodeimg(args);
    assert!(
        out.status.success(),
        "nodeimg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must exit with `code` and one line on stderr
/// containing each of `want`; returns that line.
pub fn fails_with(code: i32, args: &[&str], want: &[&str]) -> String {
    let out = nodeimg(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // The exact documented code (src/exit.rs, README "Exit codes").
    let ok = out.status.code() == Some(code);
    assert!(
        ok,
        "nodeimg {args:?}: exit {:?}, wanted {code}: {err}",
        out.status.code()
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    for w in want {
        assert!(err.contains(w), "{err:?} lacks {w:?}");
    }
    err
}

/// [`fails_with`] exit code 3: refused (bad input, a check before writing).
pub fn refused(args: &[&str], want: &[&str]) -> String {
    fails_with(3, args, want)
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}
