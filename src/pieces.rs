//! Lock-free piece tables shared by every worker.
//!
//! A torrent's piece state is read on every request by whichever worker owns the peer, and
//! written rarely (a piece verified, a peer's bitfield arriving). Arrays of atomics make both
//! lock-free: no worker ever waits for another.
//!
//! Every access here is `SeqCst`. On x86-64 that costs what Acquire/Release cost (a load is a
//! plain `mov`, a read-modify-write is `lock`ed either way; this code has no plain stores), and
//! the rarity index ([`rarity`]) is argued correct over one total order of these bits and the
//! availability counters.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};

mod rarity;
pub use rarity::LEVELS;

/// A fixed-size bitfield of atomics: piece `i` is bit `i % 64` of word `i / 64`. (The wire is
/// most significant bit first; the picker turns eight bytes of a peer's bitfield into a word of
/// this layout with one `reverse_bits`, so `get` on the upload path stays one `bt`.)
#[derive(Debug)]
pub struct AtomicBitfield {
    words: Box<[AtomicU64]>,
    len: u32,
    ones: AtomicU32,
}

/// The bit of piece `i` in its word.
fn mask(i: u32) -> u64 {
    1u64 << (i % 64)
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

    /// Whoever sees the bit also sees what was written before it was set (a piece's bytes on
    /// disk, for the have bitfield): the Acquire half of `SeqCst`.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize].load(SeqCst) & mask(i) != 0
    }

    /// Word `w` (pieces `64 w ..`, the first one in bit 0); zero past the end.
    pub fn word(&self, w: usize) -> u64 {
        self.words.get(w).map_or(0, |x| x.load(SeqCst))
    }

    /// Words in the bitfield.
    pub fn words(&self) -> usize {
        self.words.len()
    }

    /// Sets bit `i`; returns true if it was clear. Out-of-range indexes are ignored.
    pub fn set(&self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let m = mask(i);
        let was = self.words[(i / 64) as usize].fetch_or(m, SeqCst) & m == 0;
        if was {
            // The count is a statistic (and a hint for the rarity index); the bit carries the
            // ordering.
            self.ones.fetch_add(1, SeqCst);
        }
        was
    }

    /// Clears bit `i`; returns true if it was set.
    pub fn clear(&self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let m = mask(i);
        let was = self.words[(i / 64) as usize].fetch_and(!m, SeqCst) & m != 0;
        if was {
            self.ones.fetch_sub(1, SeqCst);
        }
        was
    }

    /// Set bits, as last counted (each flip is counted by whoever flipped it, just after).
    pub fn count(&self) -> u32 {
        self.ones.load(SeqCst)
    }

    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// The wire form (BEP 3): most significant bit of the first byte is piece 0, spare bits zero.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self
            .words
            .iter()
            .flat_map(|w| w.load(SeqCst).reverse_bits().to_be_bytes())
            .collect();
        out.truncate(self.len.div_ceil(8) as usize);
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

/// Piece state of one torrent: which pieces are on disk and verified, which a worker is
/// fetching, and how many connected peers have each one.
#[derive(Debug)]
pub struct PieceTable {
    /// Pieces whose data has been hashed and matches: only these are ever uploaded. Never
    /// cleared once the table is shared (the rarity index relies on it).
    pub verified: AtomicBitfield,
    /// Pieces a worker is fetching (see [`crate::download::picker`]): set by one `fetch_or`
    /// (whoever flips it owns the piece), cleared when the worker gives the piece up. Outside
    /// endgame no two workers fetch one piece. The bit guards no data: the piece's bytes stay
    /// in the claiming worker until written, and `verified` publishes them. Stays set once the
    /// piece is verified.
    claimed: AtomicBitfield,
    /// Pieces whose checked bytes a worker is writing (or wrote): set by one `fetch_or` when a
    /// complete piece passed its check, so however many workers assembled copies of it
    /// (endgame), exactly one writes it; an endgame copy is never started for a piece with this
    /// bit. Cleared only if the write fails.
    writing: AtomicBitfield,
    /// Per-piece count of connected peers that have it (saturating), for rarest-first.
    availability: Box<[AtomicU16]>,
    /// Connected peers that said `have_all`: they count toward every piece's availability
    /// without touching each piece's counter (a `have_all` costs O(1), not O(pieces)). They
    /// add the same to every piece, so the rarity index orders pieces without them (its level
    /// 0 holds the pieces only they have).
    seeds: AtomicU32,
    /// Connected peers whose bitfield or `have`s announced every piece (those that said
    /// `have_all` are in `seeds`): with them, the peers that have a complete copy (the
    /// qBittorrent API's `num_seeds`).
    complete: AtomicU32,
    /// The rarity index: per availability level, the claimable pieces at that level (see
    /// [`rarity`]). A level's bitfield is allocated the first time a piece reaches it (level 0
    /// the first time a seed's peer picks); a torrent that only seeds allocates none.
    levels: Box<[OnceLock<AtomicBitfield>]>,
}

impl PieceTable {
    pub fn new(num_pieces: u32) -> Self {
        PieceTable {
            verified: AtomicBitfield::new(num_pieces),
            claimed: AtomicBitfield::new(num_pieces),
            writing: AtomicBitfield::new(num_pieces),
            availability: (0..num_pieces).map(|_| AtomicU16::new(0)).collect(),
            seeds: AtomicU32::new(0),
            complete: AtomicU32::new(0),
            levels: (0..LEVELS).map(|_| OnceLock::new()).collect(),
        }
    }

    pub fn num_pieces(&self) -> u32 {
        self.verified.len()
    }

    /// Peers that have piece `i`: those that announced it, plus those that announced all.
    pub fn availability(&self, i: u32) -> u16 {
        let seeds = self.seeds().min(u32::from(u16::MAX)) as u16;
        self.announced(i).saturating_add(seeds)
    }

    /// Peers that announced piece `i` one by one (or in a bitfield), seeds left out: the
    /// count the rarity index orders by.
    fn announced(&self, i: u32) -> u16 {
        self.availability
            .get(i as usize)
            .map_or(0, |a| a.load(SeqCst))
    }

    /// Connected peers counted by [`PieceTable::seed_joined`].
    pub fn seeds(&self) -> u32 {
        // Relaxed: whether to look at level 0 is a heuristic; a seed that just joined is
        // found at the next pick.
        self.seeds.load(Relaxed)
    }

    /// A peer announced every piece (`have_all`). Relaxed, like the per-piece counts.
    pub fn seed_joined(&self) {
        self.seeds.fetch_add(1, Relaxed);
    }

    /// A peer counted by [`PieceTable::seed_joined`] left or took its announcement back.
    pub fn seed_left(&self) {
        let _ = self
            .seeds
            .fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
    }

    /// Connected peers that have every piece: `have_all`, or a bitfield or `have`s that
    /// cover them all.
    pub fn complete_peers(&self) -> u32 {
        self.seeds().saturating_add(self.complete.load(Relaxed))
    }

    /// A peer's bitfield or `have`s now cover every piece (not counted by `seed_joined`).
    pub fn peer_completed(&self) {
        self.complete.fetch_add(1, Relaxed);
    }

    /// A peer counted by [`PieceTable::peer_completed`] left or sent another bitfield.
    pub fn complete_peer_left(&self) {
        let _ = self
            .complete
            .fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
    }

    /// libtorrent's "distributed copies" of the connected peers' pieces: copies of the rarest
    /// piece, plus the fraction of pieces more common than that (`2.5`: every piece twice, half
    /// of them thrice). O(pieces): for the API, not the hot path.
    pub fn distributed_copies(&self) -> f64 {
        let n = self.num_pieces();
        if n == 0 {
            return 0.0;
        }
        let avail = |i| self.availability(i);
        let min = (0..n).map(avail).min().unwrap_or(0);
        let above = (0..n).filter(|&i| avail(i) > min).count();
        f64::from(min) + above as f64 / f64::from(n)
    }

    /// A peer announced piece `i`.
    pub fn peer_has(&self, i: u32) {
        if let Some(a) = self.availability.get(i as usize)
            && let Ok(old) = a.fetch_update(SeqCst, SeqCst, |v| v.checked_add(1))
        {
            self.moved(i, old, old + 1);
        }
    }

    /// A peer that had piece `i` left.
    pub fn peer_lost(&self, i: u32) {
        if let Some(a) = self.availability.get(i as usize)
            && let Ok(old) = a.fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1))
        {
            self.moved(i, old, old - 1);
        }
    }

    /// Whether a worker claimed piece `i` (it stays claimed once verified).
    pub fn claimed(&self, i: u32) -> bool {
        self.claimed.get(i)
    }

    /// Claims piece `i` for this worker: true if nobody had (one `fetch_or`: exactly one
    /// worker wins a piece). It leaves the rarity index.
    pub fn claim(&self, i: u32) -> bool {
        if !self.claimed.set(i) {
            return false;
        }
        self.unplace(rarity::level(self.announced(i)), i);
        true
    }

    /// Gives a claim up: the piece can be claimed again (and is back in the rarity index).
    pub fn release(&self, i: u32) {
        if self.claimed.clear(i) {
            self.place(i);
        }
    }

    /// Takes the right to write piece `i` (its complete copy passed the check): true for the
    /// first worker only; the others drop their copies.
    pub fn begin_write(&self, i: u32) -> bool {
        self.writing.set(i)
    }

    /// The write of piece `i` failed: it may be written again.
    pub fn write_failed(&self, i: u32) {
        self.writing.clear(i);
    }

    /// Word `w` of the pieces a worker claimed that are neither verified nor being written:
    /// what an endgame copy may take.
    pub fn copyable_word(&self, w: usize) -> u64 {
        // `writing` is set first and `verified` after the write, and neither is cleared but by
        // a failed write: a piece that gets either between the two loads is left out, whichever
        // is read first.
        self.claimed.word(w) & !self.writing.word(w) & !self.verified.word(w)
    }

    /// Whether piece `i` is verified or being written: nothing more to fetch for it.
    pub fn written(&self, i: u32) -> bool {
        // Both: a piece verified at open was never written by a worker.
        self.writing.get(i) || self.verified.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_peers_and_distributed_copies() {
        let t = PieceTable::new(4);
        assert_eq!(t.distributed_copies(), 0.0);
        for i in 0..4 {
            t.peer_has(i);
        }
        t.peer_completed();
        t.peer_has(0);
        t.peer_has(1);
        assert_eq!(t.distributed_copies(), 1.5, "each once, half twice");
        t.seed_joined();
        assert_eq!(t.distributed_copies(), 2.5);
        assert_eq!(t.complete_peers(), 2);
        t.complete_peer_left();
        t.complete_peer_left();
        t.seed_left();
        assert_eq!(t.complete_peers(), 0, "never below zero");
    }

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
