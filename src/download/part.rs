//! One piece being downloaded on one worker: its buffer, the state of each 16 KiB block, and
//! the SHA-1 that advances as blocks become contiguous, so the piece is checked the moment its
//! last block lands, without reading anything back.
//!
//! A part belongs to its worker alone (no atomics). Blocks may arrive in any order and, in
//! endgame, more than once: the first copy counts, later ones are duplicates.

use std::net::IpAddr;
use std::time::Instant;

use sha1::{Digest, Sha1};

use super::buf::PieceBuf;
use crate::metainfo::Info;
use crate::wire::BLOCK_SIZE;

/// What is known of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Missing,
    /// Asked of `n` peers (more than one only in endgame).
    Requested(u8),
    Received,
}

/// Why a block was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block at {begin} of {len} bytes does not fit the piece of {size} bytes")]
    OutOfRange { begin: u32, len: u32, size: u32 },
    #[error("block at {begin} of {len} bytes is not a whole block")]
    Misaligned { begin: u32, len: u32 },
}

/// What taking a block did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// New data; the piece still misses blocks.
    Stored,
    /// New data, and it was the last block.
    Complete,
    /// Another copy already arrived (endgame, or a late block after a cancel).
    Duplicate,
}

/// A piece being assembled.
#[derive(Debug)]
pub struct Part {
    pub index: u32,
    buf: PieceBuf,
    blocks: Box<[Block]>,
    received: u32,
    /// Blocks nobody was asked for, and the first block that may be one (a cursor, so asking
    /// for the next block is not a scan of the piece per request).
    missing: u32,
    cursor: u32,
    /// Blocks (from the first) already fed to `sha1`.
    hashed: u32,
    /// SHA-1 advancing as blocks arrive; `None` for a v2-only piece, or for one hashed in a
    /// batch once complete ([`crate::sha1x16`], the digest given to [`Part::check`]).
    sha1: Option<Sha1>,
    incremental: bool,
    /// The connection (worker slot) fetching it whole, if any: a fast peer keeps its pieces to
    /// itself so a piece comes from one peer and bad data has one culprit.
    pub owner: Option<usize>,
    /// This worker claimed the piece (outside endgame); it clears the claim if it gives the
    /// piece up. An endgame copy of another worker's piece is not claimed.
    pub claimed: bool,
    /// When a block of it was last asked for or arrived (set by the worker): how long it has
    /// been an orphan, if nothing is in flight (see [`super::orphan`]).
    pub touched: Option<Instant>,
    /// It is on the worker's list of parts with blocks nobody was asked for (set by the
    /// worker; the list is pruned lazily, so this may outlive the missing blocks).
    pub listed: bool,
    /// Addresses that sent its blocks (each once).
    senders: Vec<IpAddr>,
}

impl Part {
    /// An empty part of `size` bytes; `v1` hashes with SHA-1 as blocks arrive (otherwise a
    /// v1 piece is hashed once complete, by the caller).
    pub fn new(index: u32, size: u32, v1: bool) -> Part {
        Part::with_buffer(index, PieceBuf::zeroed(size as usize), v1)
    }

    /// An empty part over `buf` (its length is the piece's size), so buffers of written pieces
    /// are used again without zeroing or faulting in fresh pages. Its old bytes (another
    /// piece's) are never read: a block counts as received only once its bytes are copied in,
    /// blocks cover the piece exactly (`take` wants whole blocks, the last one short), the
    /// SHA-1 is fed received blocks only, and the buffer is seen whole ([`Part::bytes`], the
    /// v2 check, the write after [`Part::into_buffer`]) only once every block is received.
    pub fn with_buffer(index: u32, buf: PieceBuf, v1: bool) -> Part {
        let nblocks = (buf.len() as u32).div_ceil(BLOCK_SIZE) as usize;
        Part {
            index,
            buf,
            blocks: vec![Block::Missing; nblocks].into_boxed_slice(),
            received: 0,
            missing: nblocks as u32,
            cursor: 0,
            hashed: 0,
            sha1: v1.then(Sha1::new),
            incremental: v1,
            owner: None,
            claimed: false,
            touched: None,
            listed: false,
            senders: Vec::new(),
        }
    }

    pub fn size(&self) -> u32 {
        self.buf.len() as u32
    }

    /// The piece's bytes, once every block is received (before that, parts of the buffer may
    /// still hold a previous piece's bytes).
    pub fn bytes(&self) -> Option<&[u8]> {
        self.is_complete().then_some(&self.buf[..])
    }

    /// The block at `b` as a request (index, begin, length).
    pub fn block(&self, b: u32) -> crate::wire::BlockRequest {
        let begin = b * BLOCK_SIZE;
        crate::wire::BlockRequest {
            index: self.index,
            begin,
            length: BLOCK_SIZE.min(self.size() - begin),
        }
    }

    /// The first block nobody was asked for, now marked asked.
    pub fn next_missing(&mut self) -> Option<u32> {
        if self.missing == 0 {
            return None;
        }
        let from = self.cursor as usize;
        let b = from
            + self.blocks[from..]
                .iter()
                .position(|s| *s == Block::Missing)?;
        self.blocks[b] = Block::Requested(1);
        self.missing -= 1;
        self.cursor = b as u32 + 1;
        Some(b as u32)
    }

    /// Whether a block nobody was asked for is left.
    pub fn has_missing(&self) -> bool {
        self.missing > 0
    }

    /// Blocks asked of some peer and not yet here.
    pub fn in_flight(&self) -> u32 {
        self.blocks.len() as u32 - self.missing - self.received
    }

    /// Endgame: a block asked of others but not yet here, not among `skip` (what the asking
    /// peer has in flight already), now counted as asked once more. Each block is asked of at
    /// most `max_copies` peers.
    pub fn next_duplicate(&mut self, skip: impl Fn(u32) -> bool, max_copies: u8) -> Option<u32> {
        let b = (0..self.blocks.len() as u32).find(|&b| {
            matches!(self.blocks[b as usize], Block::Requested(n) if n < max_copies) && !skip(b)
        })?;
        if let Block::Requested(n) = &mut self.blocks[b as usize] {
            *n += 1;
        }
        Some(b)
    }

    /// Whether block `b` is asked of more than one peer (endgame): when it arrives, the other
    /// requests are cancelled.
    pub fn asked_of_others(&self, b: u32) -> bool {
        matches!(self.blocks.get(b as usize), Some(Block::Requested(n)) if *n > 1)
    }

    /// A request for block `b` was dropped (rejected, choked away, timed out, its peer left).
    pub fn unrequest(&mut self, b: u32) {
        if let Some(s) = self.blocks.get_mut(b as usize) {
            *s = match *s {
                Block::Requested(n) if n > 1 => Block::Requested(n - 1),
                Block::Requested(_) => {
                    self.missing += 1;
                    self.cursor = self.cursor.min(b);
                    Block::Missing
                }
                other => other,
            };
        }
    }

    /// Takes a block's data from `from`. The range must be a whole block of this piece.
    pub fn take(&mut self, begin: u32, data: &[u8], from: IpAddr) -> Result<Taken, BlockError> {
        let len = data.len() as u32;
        let size = self.size();
        if u64::from(begin) + u64::from(len) > u64::from(size) {
            return Err(BlockError::OutOfRange { begin, len, size });
        }
        if !begin.is_multiple_of(BLOCK_SIZE) || len != BLOCK_SIZE.min(size - begin) {
            return Err(BlockError::Misaligned { begin, len });
        }
        let b = (begin / BLOCK_SIZE) as usize;
        if self.blocks[b] == Block::Received {
            return Ok(Taken::Duplicate);
        }
        self.buf[begin as usize..(begin + len) as usize].copy_from_slice(data);
        if self.blocks[b] == Block::Missing {
            // A late block for a request given back meanwhile.
            self.missing -= 1;
        }
        self.blocks[b] = Block::Received;
        self.received += 1;
        if !self.senders.contains(&from) {
            self.senders.push(from);
        }
        self.advance_hash();
        if self.received as usize == self.blocks.len() {
            Ok(Taken::Complete)
        } else {
            Ok(Taken::Stored)
        }
    }

    /// Feeds SHA-1 every block that is now contiguous from the start.
    fn advance_hash(&mut self) {
        let Some(h) = self.sha1.as_mut() else { return };
        let from = self.hashed;
        while (self.hashed as usize) < self.blocks.len()
            && self.blocks[self.hashed as usize] == Block::Received
        {
            self.hashed += 1;
        }
        if self.hashed > from {
            let start = (from * BLOCK_SIZE) as usize;
            let end = ((self.hashed * BLOCK_SIZE) as usize).min(self.buf.len());
            h.update(&self.buf[start..end]);
        }
    }

    pub fn is_complete(&self) -> bool {
        self.received as usize == self.blocks.len()
    }

    /// Blocks received so far.
    pub fn received_blocks(&self) -> u32 {
        self.received
    }

    /// Whether the piece's SHA-1 is left to the caller (computed in a batch once complete).
    pub fn needs_sha1(&self, info: &Info) -> bool {
        !self.incremental && info.version.has_v1()
    }

    /// Whether the complete piece matches `info`'s hashes: SHA-1 for v1 (computed as the
    /// blocks came, or `sha1` from the caller when [`Part::needs_sha1`]), the BEP 52 hash over
    /// the buffer for v2, both for hybrid.
    pub fn check(&mut self, info: &Info, sha1: Option<[u8; 20]>) -> bool {
        if !self.is_complete() {
            return false;
        }
        let digest = match (self.sha1.take(), sha1) {
            (Some(h), _) => Some(h.finalize().into()),
            (None, given) => given,
        };
        let v1_ok = match digest {
            Some(d) => info.pieces.get(self.index as usize) == Some(&d),
            None => !info.version.has_v1(),
        };
        let v2_ok = !info.version.has_v2()
            || crate::verify::v2_digest(&info.layout, self.index, &self.buf)
                .is_some_and(|d| Some(d) == info.v2_piece_hash(self.index));
        v1_ok && v2_ok
    }

    /// Who sent its blocks.
    pub fn senders(&self) -> &[IpAddr] {
        &self.senders
    }

    /// Drops every received block (after a failed check), keeping the allocation.
    pub fn reset(&mut self) {
        self.blocks.fill(Block::Missing);
        self.missing = self.blocks.len() as u32;
        self.cursor = 0;
        self.received = 0;
        self.hashed = 0;
        self.sha1 = self.incremental.then(Sha1::new);
        self.senders.clear();
        self.owner = None;
    }

    /// Gives the buffer up: for the write once the piece is complete and checked, else (a
    /// part dropped or discarded) only to be used again by a new part.
    pub fn into_buffer(self) -> PieceBuf {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn blocks_in_any_order_hash_like_the_whole() {
        let size = 2 * BLOCK_SIZE + 100;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut p = Part::new(0, size, true);
        assert_eq!(p.next_missing(), Some(0));
        assert_eq!(p.next_missing(), Some(1));
        assert_eq!(p.next_missing(), Some(2));
        assert_eq!(p.next_missing(), None);
        assert_eq!(p.block(2).length, 100);
        let b = BLOCK_SIZE as usize;
        assert_eq!(p.take(2 * BLOCK_SIZE, &data[2 * b..], A), Ok(Taken::Stored));
        assert_eq!(p.take(0, &data[..b], A), Ok(Taken::Stored));
        assert_eq!(p.take(0, &data[..b], A), Ok(Taken::Duplicate));
        assert_eq!(p.take(BLOCK_SIZE, &data[b..2 * b], A), Ok(Taken::Complete));
        assert_eq!(p.bytes(), Some(&data[..]));
        let digest: [u8; 20] = p.sha1.take().unwrap().finalize().into();
        assert_eq!(digest, crate::hash::sha1(&data));
        assert_eq!(p.senders(), &[A]);
    }

    #[test]
    fn wrong_ranges_are_refused() {
        let mut p = Part::new(3, BLOCK_SIZE + 10, true);
        let big = vec![0u8; BLOCK_SIZE as usize];
        assert!(matches!(
            p.take(BLOCK_SIZE, &big, A),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            p.take(1, &big[..10], A),
            Err(BlockError::Misaligned { .. })
        ));
        assert!(matches!(
            p.take(0, &big[..100], A),
            Err(BlockError::Misaligned { .. })
        ));
        assert!(matches!(
            p.take(u32::MAX, &big[..1], A),
            Err(BlockError::OutOfRange { .. })
        ));
        assert_eq!(p.received_blocks(), 0);
    }

    #[test]
    fn endgame_duplicates_are_bounded_and_unrequest_counts_down() {
        let mut p = Part::new(0, 2 * BLOCK_SIZE, true);
        assert!(p.has_missing());
        p.next_missing();
        p.next_missing();
        assert!(!p.has_missing());
        assert_eq!(p.next_duplicate(|b| b == 0, 2), Some(1));
        assert_eq!(p.next_duplicate(|_| false, 2), Some(0));
        assert_eq!(p.next_duplicate(|_| false, 2), None);
        p.unrequest(1);
        assert!(!p.has_missing());
        p.unrequest(1);
        assert!(p.has_missing());
        assert_eq!(p.next_missing(), Some(1));
    }

    #[test]
    fn a_block_given_back_is_asked_again_first_and_a_late_copy_still_counts() {
        let mut p = Part::new(0, 4 * BLOCK_SIZE, true);
        for b in 0..4 {
            assert_eq!(p.next_missing(), Some(b));
        }
        assert!(!p.has_missing());
        p.unrequest(1);
        p.unrequest(3);
        assert_eq!(p.in_flight(), 2);
        assert_eq!(p.next_missing(), Some(1));
        assert_eq!(p.in_flight(), 3);
        // Block 3 arrives late from the peer that gave it back: nothing is missing any more.
        let data = vec![0u8; BLOCK_SIZE as usize];
        assert_eq!(p.take(3 * BLOCK_SIZE, &data, A), Ok(Taken::Stored));
        assert!(!p.has_missing());
        assert_eq!(p.next_missing(), None);
        assert_eq!(p.in_flight(), 3);
        assert_eq!(p.take(0, &data, A), Ok(Taken::Stored));
        assert_eq!(p.in_flight(), 2);
    }

    /// A buffer used again holds the previous piece's bytes: none of them is hashed or shown,
    /// whatever order the blocks come in, and the piece (its size not a multiple of a block)
    /// is its own bytes only once complete.
    #[test]
    fn a_reused_buffer_never_shows_the_previous_pieces_bytes() {
        let size = 3 * BLOCK_SIZE + 1000;
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let mut old = PieceBuf::zeroed(size as usize);
        old.fill(0xAA);
        let mut p = Part::with_buffer(0, old, true);
        let b = BLOCK_SIZE as usize;
        for (k, blk) in [3usize, 1, 0].into_iter().enumerate() {
            let end = ((blk + 1) * b).min(size as usize);
            p.take(blk as u32 * BLOCK_SIZE, &data[blk * b..end], A)
                .unwrap();
            assert_eq!(p.bytes(), None, "shown after {} blocks", k + 1);
            // Only the blocks contiguous from the start were hashed.
            assert_eq!(p.hashed, if blk == 0 { 2 } else { 0 });
        }
        assert_eq!(
            p.take(2 * BLOCK_SIZE, &data[2 * b..3 * b], A),
            Ok(Taken::Complete)
        );
        assert_eq!(p.bytes(), Some(&data[..]));
        let digest: [u8; 20] = p.sha1.take().unwrap().finalize().into();
        assert_eq!(digest, crate::hash::sha1(&data));
        // A block of the wrong length (one that would leave old bytes behind it) is refused.
        let mut q = Part::with_buffer(1, p.into_buffer(), true);
        assert!(q.take(3 * BLOCK_SIZE, &data[..10], A).is_err());
        assert_eq!(q.received_blocks(), 0);
        assert_eq!(q.bytes(), None);
    }

    #[test]
    fn reset_starts_over() {
        let mut p = Part::new(0, BLOCK_SIZE, true);
        p.next_missing();
        p.take(0, &vec![1u8; BLOCK_SIZE as usize], A).unwrap();
        assert!(p.is_complete());
        p.reset();
        assert!(!p.is_complete() && p.has_missing() && p.senders().is_empty());
    }
}
