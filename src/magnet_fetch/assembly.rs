//! The metadata of one peer, piece by piece: which pieces to ask for, which data messages to
//! take, and the hash check of the result. No I/O, so every rule is tested without sockets.

use super::PeerFailure;
use crate::hash;
use crate::metainfo::InfoHash;
use crate::wire::metadata::{PIECE_BYTES, piece_count};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Wanted,
    Requested,
    Received,
}

/// The pieces of metadata of an advertised size, as one peer sends them.
///
/// Only requested pieces are taken, each once and only with its exact length; others are
/// dropped. Every data message counts against a budget, so a peer cannot keep us reading pieces
/// forever. Memory grows with the pieces taken, which are requested in order a few at a time, so
/// an advertised size costs nothing until the peer really sends it.
#[derive(Debug)]
pub(super) struct MetadataAssembly {
    size: usize,
    pieces: Vec<Piece>,
    /// The first piece never requested.
    next: u32,
    in_flight: u32,
    received: u32,
    data: Vec<u8>,
    data_messages: u32,
    max_data_messages: u32,
}

impl MetadataAssembly {
    /// Metadata of `size` bytes (the peer's `metadata_size`), refused over `max` bytes; the
    /// peer may send `per_piece` data messages per piece.
    pub fn new(size: u64, max: usize, per_piece: u32) -> Result<Self, PeerFailure> {
        if size == 0 {
            return Err(PeerFailure::NoMetadataSize);
        }
        let max = max.min(crate::metainfo::MAX_TORRENT_BYTES);
        let size_bytes = usize::try_from(size)
            .ok()
            .filter(|&s| s <= max)
            .ok_or(PeerFailure::TooLarge { size, max })?;
        let count = piece_count(size_bytes);
        Ok(MetadataAssembly {
            size: size_bytes,
            pieces: vec![Piece::Wanted; count as usize],
            next: 0,
            in_flight: 0,
            received: 0,
            data: Vec::new(),
            data_messages: 0,
            max_data_messages: count.saturating_mul(per_piece.max(1)),
        })
    }

    /// The next piece to request, marked as requested.
    pub fn next_request(&mut self) -> Option<u32> {
        let slot = self.pieces.get_mut(self.next as usize)?;
        *slot = Piece::Requested;
        self.next += 1;
        self.in_flight += 1;
        Some(self.next - 1)
    }

    /// Requested pieces not yet received.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Takes a data message: `Ok(true)` when it was a requested piece, now stored; `Ok(false)`
    /// when it was dropped (unrequested or already received); an error when the peer broke the
    /// protocol or its budget.
    pub fn accept(
        &mut self,
        piece: u32,
        total_size: u64,
        bytes: &[u8],
    ) -> Result<bool, PeerFailure> {
        self.data_messages += 1;
        if self.data_messages > self.max_data_messages {
            return Err(PeerFailure::TooManyDataMessages {
                max: self.max_data_messages,
            });
        }
        if total_size != self.size as u64 {
            return Err(PeerFailure::WrongTotalSize {
                got: total_size,
                advertised: self.size as u64,
            });
        }
        let Some(slot) = self.pieces.get_mut(piece as usize) else {
            return Ok(false);
        };
        if *slot != Piece::Requested {
            return Ok(false);
        }
        // `piece` indexes `pieces`, so `start` is below `size`.
        let start = piece as usize * PIECE_BYTES;
        let expected = PIECE_BYTES.min(self.size - start);
        if bytes.len() != expected {
            return Err(PeerFailure::WrongPieceLength {
                piece,
                got: bytes.len(),
                expected,
            });
        }
        let end = start + expected;
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(bytes);
        *slot = Piece::Received;
        self.in_flight -= 1;
        self.received += 1;
        Ok(true)
    }

    pub fn is_complete(&self) -> bool {
        self.received as usize == self.pieces.len()
    }

    /// The assembled bytes (complete once [`is_complete`](Self::is_complete)).
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }
}

/// Checks assembled metadata against every hash known: SHA-1 for v1, SHA-256 for v2.
pub(super) fn check_hash(info: &[u8], expected: &InfoHash) -> Result<(), PeerFailure> {
    if let Some(v1) = expected.v1
        && hash::sha1(info) != v1
    {
        return Err(PeerFailure::HashMismatch("SHA-1 (v1)"));
    }
    if let Some(v2) = expected.v2
        && hash::sha256(info) != v2
    {
        return Err(PeerFailure::HashMismatch("SHA-256 (v2)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7) as u8).collect()
    }

    fn piece(meta: &[u8], i: u32) -> &[u8] {
        let start = i as usize * PIECE_BYTES;
        &meta[start..(start + PIECE_BYTES).min(meta.len())]
    }

    #[test]
    fn pieces_in_any_order_make_the_metadata() {
        let meta = metadata(2 * PIECE_BYTES + 100);
        let mut a = MetadataAssembly::new(meta.len() as u64, 1 << 20, 2).unwrap();
        assert_eq!(
            (a.next_request(), a.next_request(), a.next_request()),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!(a.next_request(), None);
        assert_eq!(a.in_flight(), 3);
        let total = meta.len() as u64;
        for i in [2, 0, 1] {
            assert!(!a.is_complete());
            assert_eq!(a.accept(i, total, piece(&meta, i)), Ok(true));
        }
        assert!(a.is_complete());
        assert_eq!(a.in_flight(), 0);
        assert_eq!(a.into_bytes(), meta);
    }

    #[test]
    fn unrequested_and_repeated_pieces_are_dropped_within_a_budget() {
        let meta = metadata(PIECE_BYTES + 1);
        let total = meta.len() as u64;
        let mut a = MetadataAssembly::new(total, 1 << 20, 2).unwrap();
        assert_eq!(a.next_request(), Some(0));
        // Piece 1 was not requested yet; piece 9 does not exist.
        assert_eq!(a.accept(1, total, piece(&meta, 1)), Ok(false));
        assert_eq!(a.accept(9, total, b"x"), Ok(false));
        assert_eq!(a.accept(0, total, piece(&meta, 0)), Ok(true));
        assert_eq!(a.accept(0, total, piece(&meta, 0)), Ok(false));
        // Four data messages were the budget of two pieces × 2.
        assert_eq!(
            a.accept(0, total, piece(&meta, 0)),
            Err(PeerFailure::TooManyDataMessages { max: 4 })
        );
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let meta = metadata(PIECE_BYTES + 10);
        let total = meta.len() as u64;
        let mut a = MetadataAssembly::new(total, 1 << 20, 2).unwrap();
        a.next_request();
        a.next_request();
        assert_eq!(
            a.accept(0, total + 1, piece(&meta, 0)),
            Err(PeerFailure::WrongTotalSize {
                got: total + 1,
                advertised: total
            })
        );
        assert_eq!(
            a.accept(1, total, &meta[..11]),
            Err(PeerFailure::WrongPieceLength {
                piece: 1,
                got: 11,
                expected: 10
            })
        );
        assert_eq!(
            a.accept(0, total, &meta[..100]),
            Err(PeerFailure::WrongPieceLength {
                piece: 0,
                got: 100,
                expected: PIECE_BYTES
            })
        );
    }

    #[test]
    fn advertised_sizes_are_bounded() {
        assert_eq!(
            MetadataAssembly::new(0, 100, 2).err(),
            Some(PeerFailure::NoMetadataSize)
        );
        assert_eq!(
            MetadataAssembly::new(101, 100, 2).err(),
            Some(PeerFailure::TooLarge {
                size: 101,
                max: 100
            })
        );
        let max = crate::metainfo::MAX_TORRENT_BYTES;
        assert_eq!(
            MetadataAssembly::new(u64::MAX, usize::MAX, 2).err(),
            Some(PeerFailure::TooLarge {
                size: u64::MAX,
                max
            })
        );
        let a = MetadataAssembly::new(max as u64, usize::MAX, u32::MAX).unwrap();
        // Nothing is allocated on the peer's word.
        assert_eq!(a.data.capacity(), 0);
        assert_eq!(a.max_data_messages, u32::MAX);
    }

    #[test]
    fn hashes_are_checked_for_each_version_known() {
        let meta = b"d4:name1:ae";
        let (v1, v2) = (hash::sha1(meta), hash::sha256(meta));
        let ok = |v1, v2| check_hash(meta, &InfoHash { v1, v2 });
        assert_eq!(ok(Some(v1), None), Ok(()));
        assert_eq!(ok(None, Some(v2)), Ok(()));
        assert_eq!(ok(Some(v1), Some(v2)), Ok(()));
        assert_eq!(
            ok(Some([0; 20]), Some(v2)),
            Err(PeerFailure::HashMismatch("SHA-1 (v1)"))
        );
        assert_eq!(
            ok(Some(v1), Some([0; 32])),
            Err(PeerFailure::HashMismatch("SHA-256 (v2)"))
        );
    }
}
