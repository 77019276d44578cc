//! Sets of byte ranges: what a plan writes, what a bmap maps, what a filesystem uses.

mod alloc;
mod stream;
pub use alloc::{data_map, filesystem_map};
pub use stream::{LearnedRegion, StreamMapper};

/// A half-open byte range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Extent {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Extent {
    /// `[start, end)`; an empty or inverted range has length 0.
    pub fn new(start: u64, end: u64) -> Self {
        Extent { start, end }
    }

    /// Number of bytes.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A normalised set of byte ranges: sorted, non-empty, non-overlapping and
/// non-adjacent (touching ranges are merged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    extents: Vec<Extent>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set holding `[0, size)`.
    pub fn full(size: u64) -> Self {
        let mut s = Self::new();
        s.insert(0, size);
        s
    }

    /// A set from any ranges, in any order, overlapping or not.
    pub fn from_extents(mut extents: Vec<Extent>) -> Self {
        extents.retain(|e| !e.is_empty());
        extents.sort();
        let mut out: Vec<Extent> = Vec::with_capacity(extents.len());
        for e in extents {
            match out.last_mut() {
                Some(last) if e.start <= last.end => last.end = last.end.max(e.end),
                _ => out.push(e),
            }
        }
        RangeSet { extents: out }
    }

    /// Adds `[start, end)`.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // Ranges usually arrive in order: append or merge with the tail cheaply.
        if let Some(last) = self.extents.last_mut() {
            if start >= last.start && start <= last.end {
                last.end = last.end.max(end);
                return;
            }
            if start > last.end {
                self.extents.push(Extent::new(start, end));
                return;
            }
        } else {
            self.extents.push(Extent::new(start, end));
            return;
        }
        let mut all = std::mem::take(&mut self.extents);
        all.push(Extent::new(start, end));
        *self = Self::from_extents(all);
    }

    /// The ranges, in order.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Total bytes covered.
    pub fn bytes(&self) -> u64 {
        self.extents.iter().map(Extent::len).sum()
    }

    /// Whether no byte is covered.
    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Bytes in either set.
    pub fn union(&self, other: &RangeSet) -> RangeSet {
        let mut all = self.extents.clone();
        all.extend_from_slice(&other.extents);
        Self::from_extents(all)
    }

    /// Bytes in both sets.
    pub fn intersect(&self, other: &RangeSet) -> RangeSet {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.extents.len() && j < other.extents.len() {
            let (a, b) = (self.extents[i], other.extents[j]);
            let start = a.start.max(b.start);
            let end = a.end.min(b.end);
            if start < end {
                out.push(Extent::new(start, end));
            }
            if a.end < b.end {
                i += 1;
            } else {
                j += 1;
            }
        }
        RangeSet { extents: out }
    }

    /// Bytes in `self` but not in `other`.
    pub fn subtract(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        let mut j = 0;
        for &a in &self.extents {
            let mut cur = a.start;
            while j < other.extents.len() && other.extents[j].end <= cur {
                j += 1;
            }
            let mut k = j;
            while cur < a.end {
                match other.extents.get(k) {
                    Some(b) if b.start < a.end => {
                        if b.start > cur {
                            out.push(Extent::new(cur, b.start));
                        }
                        cur = cur.max(b.end);
                        k += 1;
                    }
                    _ => {
                        out.push(Extent::new(cur, a.end));
                        cur = a.end;
                    }
                }
            }
        }
        RangeSet { extents: out }
    }

    /// Each range widened to multiples of `align` (a power of two), clipped to `limit`.
    pub fn aligned(&self, align: u64, limit: u64) -> RangeSet {
        debug_assert!(align.is_power_of_two());
        let v = self
            .extents
            .iter()
            .map(|e| {
                let start = e.start & !(align - 1);
                let end = e.end.checked_next_multiple_of(align).unwrap_or(u64::MAX);
                Extent::new(start.min(limit), end.min(limit))
            })
            .collect();
        Self::from_extents(v)
    }

    /// The set moved by `delta` bytes (a partition's ranges into image offsets).
    pub fn shifted(&self, delta: u64) -> RangeSet {
        RangeSet {
            extents: self
                .extents
                .iter()
                .map(|e| Extent::new(e.start.saturating_add(delta), e.end.saturating_add(delta)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bitmap(set: &RangeSet, n: u64) -> Vec<bool> {
        let mut v = vec![false; n as usize];
        for e in set.extents() {
            for b in e.start..e.end.min(n) {
                v[b as usize] = true;
            }
        }
        v
    }

    fn arb_set() -> impl Strategy<Value = RangeSet> {
        prop::collection::vec((0u64..200, 0u64..40), 0..12).prop_map(|v| {
            RangeSet::from_extents(v.into_iter().map(|(s, l)| Extent::new(s, s + l)).collect())
        })
    }

    proptest! {
        #[test]
        fn set_operations_match_bitmaps(a in arb_set(), b in arb_set()) {
            let (ba, bb) = (bitmap(&a, 256), bitmap(&b, 256));
            let check = |s: &RangeSet, f: &dyn Fn(bool, bool) -> bool| {
                let bs = bitmap(s, 256);
                (0..256).all(|i| bs[i] == f(ba[i], bb[i]))
            };
            prop_assert!(check(&a.union(&b), &|x, y| x || y));
            prop_assert!(check(&a.intersect(&b), &|x, y| x && y));
            prop_assert!(check(&a.subtract(&b), &|x, y| x && !y));
            for s in [a.union(&b), a.intersect(&b), a.subtract(&b)] {
                for w in s.extents().windows(2) {
                    prop_assert!(w[0].end < w[1].start, "not normalised: {:?}", s);
                }
            }
        }

        #[test]
        fn insert_matches_from_extents(v in prop::collection::vec((0u64..200, 1u64..40), 0..12)) {
            let mut s = RangeSet::new();
            for &(a, l) in &v { s.insert(a, a + l); }
            let t = RangeSet::from_extents(v.iter().map(|&(a, l)| Extent::new(a, a + l)).collect());
            prop_assert_eq!(s, t);
        }
    }

    #[test]
    fn aligned_widens_and_clips() {
        let s = RangeSet::from_extents(vec![Extent::new(10, 20), Extent::new(4100, 4101)]);
        let a = s.aligned(4096, 5000);
        assert_eq!(a.extents(), &[Extent::new(0, 5000)]);
        assert_eq!(s.aligned(4096, 1 << 20).bytes(), 8192);
    }
}
