//! Block-aligned owned buffers for direct I/O.
//!
//! O_DIRECT needs the memory, the file offset and the length aligned to the
//! device's logical block size; 4096 covers every device we run on. RPC
//! payloads are received straight into an [`AlignedBuf`] and handed on as
//! [`bytes::Bytes`] (see [`AlignedBuf::freeze`]), so a chunk written over the
//! network reaches the disk without another copy.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use bytes::Bytes;

use crate::limits::BLOCK_SIZE_BYTES;

/// The alignment of every [`AlignedBuf`].
pub const ALIGN_BYTES: usize = BLOCK_SIZE_BYTES;

/// A zero-initialised heap buffer whose start is aligned to [`ALIGN_BYTES`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Allocated bytes: `len` rounded up to the alignment (at least one block),
    /// so the tail of a short buffer is still safe for a whole-block read.
    cap: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        let cap = round_up(len.max(1), ALIGN_BYTES);
        let layout = Self::layout(cap);
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else { alloc::handle_alloc_error(layout) };
        Self { ptr, len, cap }
    }

    /// A buffer holding a copy of `data`.
    pub fn copy_from(data: &[u8]) -> Self {
        let mut buf = Self::zeroed(data.len());
        buf.copy_from_slice(data);
        buf
    }

    /// Shortens the visible length; the allocation is unchanged.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The allocated length, a multiple of [`ALIGN_BYTES`].
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Turns the buffer into shared, sliceable [`Bytes`] without copying.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }

    fn layout(cap: usize) -> Layout {
        match Layout::from_size_align(cap, ALIGN_BYTES) {
            Ok(layout) => layout,
            Err(_) => panic!("aligned buffer of {cap} bytes exceeds the address space"),
        }
    }
}

/// Whether `data` may be handed to direct I/O as it is.
pub fn is_aligned(data: &[u8]) -> bool {
    (data.as_ptr() as usize).is_multiple_of(ALIGN_BYTES) && data.len().is_multiple_of(ALIGN_BYTES)
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated in `zeroed` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for cap >= len initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for cap >= len initialised bytes, uniquely owned.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for len in [0, 1, 4095, 4096, 4097, 1 << 20] {
            let buf = AlignedBuf::zeroed(len);
            assert_eq!(buf.len(), len);
            assert_eq!(buf.as_ptr() as usize % ALIGN_BYTES, 0);
            assert!(buf.iter().all(|&b| b == 0));
            assert!(buf.capacity() >= len && buf.capacity().is_multiple_of(ALIGN_BYTES));
        }
    }

    #[test]
    fn freeze_keeps_alignment_and_content() {
        let mut buf = AlignedBuf::zeroed(8192);
        buf[10] = 7;
        let bytes = buf.freeze();
        assert!(is_aligned(&bytes));
        assert_eq!(bytes[10], 7);
        assert!(!is_aligned(&bytes.slice(1..4097)));
    }
}
