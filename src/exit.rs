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
                pipeline::Error::Io { source, .. } => io(source),
                pipeline::Error::Internal { .. } => Code::Failure,
                pipeline::Error::Image(i) | pipeline::Error::ImageAt { source: i, .. } => image(i),
                _ => Code::Refused,
            };
        }
        if let Some(e) = cause.downcast_ref::<flasher::Error>() {
            return flasher(e);
        }
        if let Some(e) = cause.downcast_ref::<imagegen::Error>() {
            return image(e);
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            return io(e);
        }
    }
    // Messages the binary composes itself (`bail!`) are refusals of input.
    Code::Refused
}

/// The code for one card's failure (`flash` reports each card's error on
/// its own line and exits with the first failed card's code).
pub fn flasher(e: &flasher::Error) -> Code {
    match e {
        flasher::Error::Mismatch { .. } => Code::Verify,
        flasher::Error::Refused { .. } => Code::Refused,
        flasher::Error::Interrupted { .. } => Code::Failure,
        // The image failed: its own error says how.
        flasher::Error::Image(i) => image(i),
        flasher::Error::Abandoned { .. } => Code::Refused,
        flasher::Error::Device { source, .. } | flasher::Error::System { source, .. } => io(source),
        _ => Code::Io,
    }
}

fn image(e: &imagegen::Error) -> Code {
    match e {
        imagegen::Error::Io { source, .. } | imagegen::Error::IoContext { source, .. } => {
            io(source)
        }
        _ => Code::Refused,
    }
}

/// An I/O error is exit 5, except a source that does not decode (a corrupt
/// or truncated `.zst`/`.xz`/`.gz`, a file that ends early): that is bad
/// input, 3.
fn io(e: &std::io::Error) -> Code {
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => Code::Refused,
        _ => Code::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn io_err(kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, "x")
    }

    #[test]
    fn each_kind_of_failure_has_its_documented_code() {
        let mismatch = flasher::Error::Mismatch {
            device: "/dev/sdz".into(),
            offset: 0,
            detail: String::new(),
        };
        assert_eq!(flasher(&mismatch), Code::Verify);
        assert_eq!(classify(&anyhow::Error::new(mismatch)), Code::Verify);
        let device = flasher::Error::Device {
            device: "/dev/sdz".into(),
            what: "write",
            offset: 0,
            source: io_err(io::ErrorKind::StorageFull),
        };
        assert_eq!(flasher(&device), Code::Io);
        // A source that does not decode is bad input, however it surfaces.
        let truncated = imagegen::Error::io_context("zstd", io_err(io::ErrorKind::UnexpectedEof));
        assert_eq!(flasher(&flasher::Error::Image(truncated)), Code::Refused);
        let corrupt = imagegen::Error::io("a.img.xz", io_err(io::ErrorKind::InvalidData));
        assert_eq!(classify(&anyhow::Error::new(corrupt)), Code::Refused);
        let eio = imagegen::Error::io("a.img", io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(classify(&anyhow::Error::new(eio)), Code::Io);
        let refused = flasher::Error::Refused {
            device: "/dev/sda".into(),
            reason: "it is the system disk".into(),
        };
        assert_eq!(flasher(&refused), Code::Refused);
        let rng = pipeline::Error::internal("the OS random generator", "unavailable");
        assert_eq!(classify(&anyhow::Error::new(rng)), Code::Failure);
        let usage = crate::cmd::usage::usage("give one of -o, --out-dir and --image");
        assert_eq!(classify(&usage), Code::Usage);
        assert_eq!(classify(&anyhow::anyhow!("a check of ours")), Code::Refused);
    }
}
