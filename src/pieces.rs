//! Lock-free piece tables shared by every worker.
//!
//! A torrent's piece state is read on every request by whichever worker owns the peer, and
//! written rarely (a piece verified, a peer's bitfield arriving). Arrays of atomics make both
//! lock-free: no worker ever waits for another.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

/// A fixed-size bitfield of atomics.
#[derive(Debug)]
pub struct AtomicBitfield {
    words: Box<[AtomicU64]>,
    len: u32,
    ones: AtomicU32,
}

impl AtomicBitfield {
    pub fn new(len: u32) -> Self {
        AtomicBitfield {
            words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            len,
            ones: AtomicU32::new(0),
        }
    }

    pub fn full(len: u32) -> Self {
        let b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Acquire pairs with the Release in [`set`](Self::set): whoever sees the bit also sees the
    /// data written before it was set (a piece's bytes on disk, for the have bitfield).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; returns true if it was clear. Out-of-range indexes are ignored.
    pub fn set(&self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let mask = 1u64 << (i % 64);
        let was = self.words[(i / 64) as usize].fetch_or(mask, Ordering::Release) & mask == 0;
        if was {
            // Relaxed: the count is a statistic; the bit itself carries the ordering.
            self.ones.fetch_add(1, Ordering::Relaxed);
        }
        was
    }

    /// Clears bit `i`; returns true if it was set.
    pub fn clear(&self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let mask = 1u64 << (i % 64);
        let was = self.words[(i / 64) as usize].fetch_and(!mask, Ordering::Release) & mask != 0;
        if was {
            self.ones.fetch_sub(1, Ordering::Relaxed);
        }
        was
    }

    pub fn count(&self) -> u32 {
        self.ones.load(Ordering::Relaxed)
    }

    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// The wire form (BEP 3): most significant bit of the first byte is piece 0, spare bits zero.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len.div_ceil(8) as usize];
        for (w, word) in self.words.iter().enumerate() {
            let v = word.load(Ordering::Acquire);
            for b in 0..8 {
                let byte_index = w * 8 + b;
                if byte_index < out.len() {
                    out[byte_index] = ((v >> (b * 8)) as u8).reverse_bits();
                }
            }
        }
        out
    }
}

/// Set bits among the first `n` of a wire-form bitfield.
pub fn count_wire(bits: &[u8], n: u32) -> u32 {
    (0..n)
        .filter(|&i| {
            bits.get((i / 8) as usize)
                .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
        })
        .count() as u32
}

/// Piece state of one torrent: which pieces are on disk and verified, and how many connected
/// peers have each one.
#[derive(Debug)]
pub struct PieceTable {
    /// Pieces whose data has been hashed and matches: only these are ever uploaded.
    pub verified: AtomicBitfield,
    /// Pieces a worker is fetching (see [`crate::download::picker`]): set by one `fetch_or`
    /// (whoever flips it owns the piece), cleared when the worker gives the piece up. Outside
    /// endgame no two workers fetch one piece. The bit guards no data: the piece's bytes stay
    /// in the claiming worker until written, and `verified` publishes them.
    pub claimed: AtomicBitfield,
    /// Per-piece count of connected peers that have it (saturating), for rarest-first.
    availability: Box<[AtomicU16]>,
    /// Connected peers that said `have_all`: they count toward every piece's availability
    /// without touching each piece's counter (a `have_all` costs O(1), not O(pieces)).
    seeds: AtomicU32,
}

impl PieceTable {
    pub fn new(num_pieces: u32) -> Self {
        PieceTable {
            verified: AtomicBitfield::new(num_pieces),
            claimed: AtomicBitfield::new(num_pieces),
            availability: (0..num_pieces).map(|_| AtomicU16::new(0)).collect(),
            seeds: AtomicU32::new(0),
        }
    }

    pub fn num_pieces(&self) -> u32 {
        self.verified.len()
    }

    /// Peers that have piece `i`: those that announced it, plus those that announced all.
    pub fn availability(&self, i: u32) -> u16 {
        let own = self
            .availability
            .get(i as usize)
            .map_or(0, |a| a.load(Ordering::Relaxed));
        let seeds = self.seeds.load(Ordering::Relaxed).min(u32::from(u16::MAX)) as u16;
        own.saturating_add(seeds)
    }

    /// A peer announced every piece (`have_all`). Relaxed, like the per-piece counts.
    pub fn seed_joined(&self) {
        self.seeds.fetch_add(1, Ordering::Relaxed);
    }

    /// A peer counted by [`PieceTable::seed_joined`] left or took its announcement back.
    pub fn seed_left(&self) {
        let _ = self
            .seeds
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// A peer announced piece `i`. Relaxed: availability is a heuristic for piece picking.
    pub fn peer_has(&self, i: u32) {
        if let Some(a) = self.availability.get(i as usize) {
            let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_add(1));
        }
    }

    /// A peer that had piece `i` left.
    pub fn peer_lost(&self, i: u32) {
        if let Some(a) = self.availability.get(i as usize) {
            let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_msb_first() {
        let b = AtomicBitfield::new(70);
        assert!(b.set(0));
        assert!(!b.set(0));
        b.set(9);
        b.set(69);
        let w = b.to_wire();
        assert_eq!(w.len(), 9);
        assert_eq!(w[0], 0x80);
        assert_eq!(w[1], 0x40);
        assert_eq!(w[8], 0x04);
        assert_eq!(b.count(), 3);
        assert!(b.clear(9));
        assert!(!b.get(9) && b.get(69) && !b.get(70) && !b.set(70));
        assert!(AtomicBitfield::full(70).is_full());
        assert_eq!(AtomicBitfield::full(70).to_wire()[8], 0xfc);
    }

    #[test]
    fn concurrent_sets_are_all_counted() {
        let b = std::sync::Arc::new(AtomicBitfield::new(10_000));
        let hs: Vec<_> = (0..2)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in (t..10_000).step_by(2) {
                        b.set(i);
                    }
                    for i in 0..10_000 {
                        b.set(i);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(b.count(), 10_000);
        assert!(b.to_wire()[..1249].iter().all(|&x| x == 0xff));
    }

    #[test]
    fn availability_saturates() {
        let t = PieceTable::new(2);
        t.peer_lost(0);
        assert_eq!(t.availability(0), 0);
        t.peer_has(1);
        t.peer_has(1);
        t.peer_lost(1);
        assert_eq!(t.availability(1), 1);
        t.peer_has(99);
    }
}
