//! A piece buffer: `len` bytes at an address that is a multiple of [`ALIGN`] (4096), so the
//! whole pages of a piece can be written with `O_DIRECT` straight from it (the kernel wants
//! the buffer, the file offset and the length aligned to the device's logical block; 4096
//! covers every block size up to a page).
//!
//! Every buffer is aligned, whatever `engine.download_writes` says: the allocator serves a
//! 4096-aligned request of a piece's size (16 KiB and up) from the same pages as an unaligned
//! one, so buffered writes lose nothing and a buffer never needs to know which kind it feeds.
//! The bytes are zeroed once, when allocated; a buffer used again for another piece keeps the
//! old piece's bytes until its blocks overwrite them (`Part` reads only received blocks).
//!
//! Why not a crate: this is the one aligned buffer the engine needs (allocate zeroed, deref
//! to a slice, free), forty lines over `std::alloc`; `aligned-vec` and friends bring growth
//! and generic element types this never uses.

use std::alloc::Layout;
use std::ptr::NonNull;

/// Alignment of every piece buffer: a page, which is also the largest logical block size
/// `O_DIRECT` asks of the buffer, the file offset and the length.
pub const ALIGN: usize = 4096;

/// A zero-initialised, [`ALIGN`]-aligned, fixed-size byte buffer.
pub struct PieceBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `PieceBuf` owns its allocation alone, like a `Box<[u8]>`; nothing in it is tied
// to a thread.
unsafe impl Send for PieceBuf {}
// SAFETY: shared access only reads (through `Deref`), like `&[u8]`.
unsafe impl Sync for PieceBuf {}

impl PieceBuf {
    fn layout(len: usize) -> Layout {
        // `len` comes from a piece size (at most 2^31 bytes, checked at parse), far below
        // `isize::MAX - ALIGN`; a zero-length buffer still allocates one byte so the pointer
        // is a real allocation.
        Layout::from_size_align(len.max(1), ALIGN).unwrap_or_else(|_| Layout::new::<u8>())
    }

    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> PieceBuf {
        let layout = Self::layout(len);
        // SAFETY: the layout's size is non-zero (at least one byte).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        PieceBuf { ptr, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for PieceBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised bytes (zeroed at allocation, written only
        // through `DerefMut`) owned by `self`, which the returned borrow cannot outlive.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for PieceBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PieceBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated in `zeroed` with this same layout and is freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

impl std::fmt::Debug for PieceBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PieceBuf").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_and_zeroed() {
        for len in [0, 1, 100, 16 << 10, (16 << 10) + 100, 1 << 20] {
            let mut b = PieceBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0, "{len}");
            assert!(b.iter().all(|&x| x == 0));
            b.fill(7);
            assert!(b.iter().all(|&x| x == 7));
        }
    }
}
