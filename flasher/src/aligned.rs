//! Page-aligned buffers, as `O_DIRECT` and `F_NOCACHE` I/O require.

use std::alloc::{alloc_zeroed, dealloc, Layout};

/// Alignment of every buffer: a page, which is a multiple of any sector size.
pub const ALIGN: usize = 4096;

/// A heap buffer whose address and capacity are multiples of [`ALIGN`].
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `cap` bytes rounded up to [`ALIGN`]; its length starts at `cap`.
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(ALIGN).next_multiple_of(ALIGN);
        let layout = Layout::from_size_align(cap, ALIGN).expect("buffer size fits a layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, cap, len: cap }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the length of the valid part (at most the capacity).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "length {len} beyond capacity {}", self.cap);
        self.len = len;
    }

    /// The valid bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for cap >= len initialised (zeroed) bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The valid bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("layout was valid at new");
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} of {})", self.len, self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned() {
        let mut b = AlignedBuf::new(10_000);
        assert_eq!(b.capacity(), 12288);
        assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
        b.set_len(5);
        b.as_mut_slice().copy_from_slice(b"hello");
        assert_eq!(b.as_slice(), b"hello");
    }
}
