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
        // `len` comes from a piece size (at most `MAX_PIECE_LENGTH`, checked at parse), far
        // below `isize::MAX - ALIGN`, so this never fails; a zero-length buffer still
        // allocates one byte so the pointer is a real allocation.
        match Layout::from_size_align(len.max(1), ALIGN) {
            Ok(l) => l,
            Err(_) => panic!("no allocation of {len} bytes aligned to {ALIGN}"),
        }
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

/// How one file span of a piece is written with `O_DIRECT` on: `head` bytes through the page
/// cache, then `direct` bytes (whole pages: their file offset, buffer address and length all
/// multiples of [`ALIGN`]) with `O_DIRECT`, then `tail` bytes through the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub head: usize,
    pub direct: usize,
    pub tail: usize,
}

impl Split {
    /// All of `len` through the page cache.
    pub fn buffered(len: usize) -> Split {
        Split {
            head: len,
            direct: 0,
            tail: 0,
        }
    }
}

/// Splits the span of `len` bytes at file `offset`, whose bytes are at address `addr`: the
/// whole file pages it covers go direct when the buffer is aligned like the file (`addr` and
/// `offset` equal modulo [`ALIGN`]; for a piece buffer at a page boundary, whenever the file
/// starts at a page boundary of the torrent), the partial pages at its ends (a file's last
/// page, a file starting mid-page in a multi-file torrent) buffered. A page is thus written
/// either whole with `O_DIRECT` by one span, or through the page cache by the spans that
/// share it: never both ways.
pub fn split_direct(offset: u64, addr: usize, len: usize) -> Split {
    let a = ALIGN as u64;
    if offset % a != addr as u64 % a {
        return Split::buffered(len);
    }
    let head = ((a - offset % a) % a) as usize;
    if head >= len {
        return Split::buffered(len);
    }
    let direct = (len - head) / ALIGN * ALIGN;
    if direct == 0 {
        return Split::buffered(len);
    }
    Split {
        head,
        direct,
        tail: len - head - direct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(head: usize, direct: usize, tail: usize) -> Split {
        Split { head, direct, tail }
    }

    #[test]
    fn spans_split_into_whole_pages_direct_and_partial_pages_buffered() {
        const P: usize = ALIGN;
        // A single-file torrent's piece: all direct; the last piece of a file of odd size
        // ends with its partial page buffered.
        assert_eq!(split_direct(0, 0, 1 << 20), split(0, 1 << 20, 0));
        assert_eq!(
            split_direct(5 << 20, 8 * P, 1000 + 3 * P),
            split(0, 3 * P, 1000)
        );
        // A file starting mid-page of the torrent: its spans are never aligned like the
        // buffer, so all of it is buffered, whatever its offset.
        assert_eq!(split_direct(0, 100, 1 << 20), Split::buffered(1 << 20));
        assert_eq!(
            split_direct(P as u64, 100, 1 << 20),
            Split::buffered(1 << 20)
        );
        // A file starting at a page boundary mid-piece, its span starting mid-page (the
        // previous piece wrote the page's first bytes): head up to the page, pages, tail.
        let (off, addr) = (3 * P as u64 + 100, 7 * P + 100);
        assert_eq!(split_direct(off, addr, 2 * P + 50), split(P - 100, P, 150));
        // Less than a whole page: buffered.
        assert_eq!(split_direct(100, 100, P), Split::buffered(P));
        assert_eq!(split_direct(0, 0, P - 1), Split::buffered(P - 1));
        assert_eq!(split_direct(0, 0, 0), Split::buffered(0));
        // Exhaustively on small cases: the parts add up, the direct part is whole pages at
        // aligned offsets and addresses, the buffered ends do not reach a whole page.
        for off in 0..3 * P as u64 {
            for len in [0, 1, P - 1, P, P + 1, 3 * P + 7] {
                let addr = (off as usize) % P + 16 * P;
                let s = split_direct(off, addr, len);
                assert_eq!(s.head + s.direct + s.tail, len);
                if s.direct > 0 {
                    let at = off + s.head as u64;
                    assert_eq!((at % P as u64, s.direct % P), (0, 0));
                    assert_eq!((addr + s.head) % P, 0);
                    assert!(s.head < P && s.tail < P);
                }
            }
        }
    }

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
