//! The exit status of `nodeimg`, defined in one place (README "Exit codes").
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure |
//! | 2 | usage error: a flag or argument clap rejects |
//! | 3 | refused: bad input, a check that failed before anything was written (a cluster file with problems, a hash mismatch, a device the safety rules refuse, a node not in the manifest, a state of another cluster) |
//! | 4 | verification failed: a card read back differs from what was written |
//! | 5 | I/O error: reading or writing a file or device failed |
//! | 6 | `boot`: a node booted, but a first-boot unit failed or gave no result |
//! | 7 | `boot`: a node did not boot (no first-boot report before the timeout) |

use std::process::ExitCode;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Failure = 1,
    Usage = 2,
    Refused = 3,
    Verify = 4,
    Io = 5,
    FirstBootFailed = 6,
    NoBoot = 7,
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}

/// The code for an error: the first cause in its chain that says which kind
/// it is.
pub fn classify(err: &anyhow::Error) -> Code {
    if crate::cmd::usage::exit_code(err) == Code::Usage as u8 {
        return Code::Usage;
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<pipeline::Error>() {
            return match e {
                pipeline::Error::Io { .. } => Code::Io,
                pipeline::Error::Image(i) | pipeline::Error::ImageAt { source: i, .. } => image(i),
                _ => Code::Refused,
            };
        }
        if let Some(e) = cause.downcast_ref::<flasher::Error>() {
            return match e {
                flasher::Error::Mismatch { .. } => Code::Verify,
                flasher::Error::Refused { .. } => Code::Refused,
                flasher::Error::Interrupted { .. } => Code::Failure,
                _ => Code::Io,
            };
        }
        if let Some(e) = cause.downcast_ref::<imagegen::Error>() {
            return image(e);
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return Code::Io;
        }
    }
    // Messages the binary composes itself (`bail!`) are refusals of input.
    Code::Refused
}

fn image(e: &imagegen::Error) -> Code {
    match e {
        imagegen::Error::Io { .. } | imagegen::Error::IoContext { .. } => Code::Io,
        _ => Code::Refused,
    }
}
