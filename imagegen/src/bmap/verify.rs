//! Checking a bmap's range checksums while the image streams past.

use super::{Bmap, ChecksumType, RangeChecksum};
use crate::ranges::RangeSet;
use crate::source::to_hex;
use crate::{Error, Result};
use sha2::Digest;

enum State {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl State {
    fn new(kind: ChecksumType) -> Self {
        match kind {
            ChecksumType::Sha1 => State::Sha1(sha1::Sha1::new()),
            ChecksumType::Sha256 => State::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            State::Sha1(h) => h.update(data),
            State::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            State::Sha1(h) => h.finalize().to_vec(),
            State::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// Verifies every range checksum of a bmap against image bytes fed in
/// offset order, in pieces of any size that may also cover unmapped bytes.
/// The first range whose bytes differ is an error naming it.
pub struct RangeVerifier {
    kind: ChecksumType,
    ranges: Vec<RangeChecksum>,
    /// Index of the range being hashed.
    next: usize,
    /// Next byte expected inside it, and the digest so far.
    pos: u64,
    state: Option<State>,
    verified: u64,
}

impl std::fmt::Debug for RangeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeVerifier")
            .field("ranges", &self.ranges.len())
            .field("next", &self.next)
            .finish()
    }
}

impl RangeVerifier {
    /// A verifier for `bmap`'s checksummed ranges, leaving out those that
    /// touch `exempt` (bytes deliberately replaced, e.g. by a node delta,
    /// whose base is vouched for otherwise). `None` when there is nothing to
    /// check.
    pub fn new(bmap: &Bmap, exempt: &RangeSet) -> Option<Self> {
        let kind = bmap.checksum_type?;
        let mut ranges: Vec<RangeChecksum> = bmap
            .checksums
            .iter()
            .filter(|r| {
                exempt
                    .intersect(&RangeSet::from_extents(vec![r.extent]))
                    .is_empty()
            })
            .cloned()
            .collect();
        ranges.sort_by_key(|r| r.extent.start);
        if ranges.is_empty() {
            return None;
        }
        Some(RangeVerifier {
            kind,
            pos: ranges[0].extent.start,
            ranges,
            next: 0,
            state: None,
            verified: 0,
        })
    }

    /// Bytes whose checksums have matched so far.
    pub fn verified(&self) -> u64 {
        self.verified
    }

    fn name(&self, r: &RangeChecksum) -> String {
        let (a, b) = r.blocks;
        let blocks = if a == b {
            format!("block {a}")
        } else {
            format!("blocks {a}-{b}")
        };
        format!(
            "bmap range {blocks} (bytes {}..{})",
            r.extent.start, r.extent.end
        )
    }

    /// Feeds the image bytes at `offset`. Pieces must arrive in offset order.
    pub fn feed(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset + data.len() as u64;
        while let Some(r) = self.ranges.get(self.next) {
            if r.extent.start >= end {
                return Ok(());
            }
            if r.extent.end <= offset || offset > self.pos {
                return Err(Error::corrupt(
                    "image",
                    format!("{} was not read in full", self.name(r)),
                ));
            }
            let from = self.pos.max(offset);
            let to = r.extent.end.min(end);
            if from < to {
                let state = self.state.get_or_insert_with(|| State::new(self.kind));
                state.update(&data[(from - offset) as usize..(to - offset) as usize]);
                self.pos = to;
            }
            if self.pos < r.extent.end {
                return Ok(());
            }
            let got = self.state.take().map(State::finish).unwrap_or_default();
            if got != r.digest {
                return Err(Error::corrupt(
                    "image",
                    format!(
                        "{} has {} {}, but the bmap says {}: the image is damaged or is not the one the bmap describes",
                        self.name(r),
                        self.kind.name(),
                        to_hex(&got),
                        to_hex(&r.digest)
                    ),
                ));
            }
            self.verified += r.extent.len();
            self.next += 1;
            if let Some(n) = self.ranges.get(self.next) {
                self.pos = n.extent.start;
            }
        }
        Ok(())
    }

    /// Checks that every range was seen in full.
    pub fn finish(&self) -> Result<()> {
        match self.ranges.get(self.next) {
            Some(r) => Err(Error::corrupt(
                "image",
                format!("{} was not read in full", self.name(r)),
            )),
            None => Ok(()),
        }
    }
}
