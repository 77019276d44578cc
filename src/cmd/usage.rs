//! Exit codes: 2 when the command line is wrong (as clap itself exits for
//! a missing or malformed argument), 1 when the operation failed. A check
//! of the arguments that clap cannot express returns [`usage`].

use std::fmt;

/// A wrong command line, found after clap's parsing.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// An error that makes `nodeimg` exit with status 2.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// The exit status for `err`: 2 for a wrong command line, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|c| c.is::<Usage>()) {
        2
    } else {
        1
    }
}
