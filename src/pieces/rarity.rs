//! The rarity index: rarest first without reading every piece's count.
//!
//! For each availability level, a bitfield of the pieces that can be claimed there (not
//! verified, not claimed). The level is the count of connected peers that announced the piece
//! one by one; peers that announced `have_all` add the same to every piece and are left out of
//! it (see [`PieceTable::seed_joined`]). Level 0 holds the pieces only such seeds have: the
//! rarest of all while a seed is connected, and looked at only then. It starts with every
//! piece in it (allocated the first time it is needed), which places every piece at once;
//! scans clear the bits that are stale. Levels 1 to 31 are exact counts;
//! above that there is one level per power of two (32–63, 64–127, … 32768–65535), where "rarest"
//! no longer means much and the pieces of one level count as ties. A pick reads the lowest level
//! that holds a piece the peer has, a word (64 pieces) at a time from a random word: in a
//! healthy swarm a few words, where a scan of the counts reads every piece of the torrent.
//!
//! # Why it stays right without locks
//! The counters and the `claimed`/`verified` bits are the truth; the levels are an index that
//! may hold stale bits (a piece at a level it left, a piece claimed or verified since) but does
//! not lose a claimable piece. Two rules:
//! 1. Whoever changes a piece's state (a count, a claim given back) then *places* it: reads its
//!    state and sets its bit at the level that state says.
//! 2. Whoever clears a bit (a count that left a level, a claim, a scan meeting a stale bit)
//!    then reads the state again and sets the bit back if the piece belongs there.
//!
//! Every access is `SeqCst`, so there is one order S of all of them. Take the last state change
//! X of piece `i` in S, and the placement P its writer does after it: P sees the final state and
//! sets bit (L, i), L the final level. A clear of (L, i) after P in S is followed by its
//! clearer's re-read, which comes after X, sees level L and sets the bit again. So once changes
//! stop, the bit is set. Stale bits only cost a pick time, and the scans that meet them clear
//! them. (Rule 2 is what makes this hold: without the re-read, a count moving from level 2 to 3
//! and straight back could leave the piece in neither.)

use super::{AtomicBitfield, PieceTable};

/// Availability levels: 0 (no peer: never indexed), 1–31, then one per power of two up to
/// `u16::MAX`.
pub const LEVELS: usize = 43;

/// The level of a piece that `av` connected peers have.
pub(super) fn level(av: u16) -> usize {
    if av < 32 {
        av as usize
    } else {
        // 32–63 → 32, 64–127 → 33, …, 32768–65535 → 42.
        32 + (15 - av.leading_zeros() as usize) - 5
    }
}

/// Calls `f` with the piece of every set bit of word `w`, lowest first.
fn for_each_bit(w: usize, mut bits: u64, mut f: impl FnMut(u32)) {
    while bits != 0 {
        let off = bits.trailing_zeros();
        bits &= bits - 1;
        f(w as u32 * 64 + off);
    }
}

impl PieceTable {
    /// The level piece `i` belongs at now, if it can be claimed.
    fn want(&self, i: u32) -> Option<usize> {
        if self.verified.get(i) || self.claimed.get(i) {
            return None;
        }
        Some(level(self.announced(i)))
    }

    fn level_bits(&self, l: usize) -> Option<&AtomicBitfield> {
        self.levels.get(l)?.get()
    }

    /// Level `l`'s bitfield, allocated on first use: level 0 with every piece in it (no piece
    /// was ever placed there, and every piece starts at count 0), the others empty.
    fn level_or_init(&self, l: usize) -> &AtomicBitfield {
        self.levels[l].get_or_init(|| {
            if l == 0 {
                AtomicBitfield::full(self.num_pieces())
            } else {
                AtomicBitfield::new(self.num_pieces())
            }
        })
    }

    /// Rule 1: puts piece `i` at the level its state says (if it can be claimed).
    pub(super) fn place(&self, i: u32) {
        if let Some(l) = self.want(i) {
            let b = self.level_or_init(l);
            // A set bit seen here (after the state change) is as good as setting it: a later
            // clear re-reads the state (rule 2).
            if !b.get(i) {
                b.set(i);
            }
        }
    }

    /// Rule 2: takes piece `i` out of level `l`, unless it belongs there after all.
    pub(super) fn unplace(&self, l: usize, i: u32) {
        if let Some(b) = self.level_bits(l)
            && b.clear(i)
            && self.want(i) == Some(l)
        {
            b.set(i);
        }
    }

    /// Piece `i`'s count went from `old` to `new`.
    pub(super) fn moved(&self, i: u32, old: u16, new: u16) {
        self.place(i);
        if level(old) != level(new) {
            self.unplace(level(old), i);
        }
    }

    /// Claims the rarest piece among those `has` offers (`has(w)`: the peer's word `w`, laid out
    /// like ours), scanning each level from a random place (`rand`) so ties go to a random
    /// piece. `None`: nothing the peer has can be claimed.
    pub fn claim_rarest(&self, has: impl Fn(usize) -> u64, rand: u64) -> Option<u32> {
        let words = self.verified.words();
        if words == 0 {
            return None;
        }
        // Level 0 only while a seed is connected: without one, no peer has its pieces.
        let first = if self.seeds() > 0 { 0 } else { 1 };
        for l in first..LEVELS {
            let b = if l == 0 {
                Some(self.level_or_init(0))
            } else {
                self.level_bits(l)
            };
            let Some(b) = b else {
                continue;
            };
            if b.count() == 0 {
                continue;
            }
            let found = scan(words, rand, |w, part| {
                let bits = b.word(w) & part;
                if bits == 0 {
                    return None;
                }
                self.claim_in_level(l, w, bits, has(w))
            });
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// The first piece `has` offers that can be claimed, from a random place: claimed.
    pub fn claim_any(&self, has: impl Fn(usize) -> u64, rand: u64) -> Option<u32> {
        let words = self.verified.words();
        scan(words, rand, |w, part| {
            let mut cand = has(w) & part;
            if cand == 0 {
                return None;
            }
            cand &= !(self.verified.word(w) | self.claimed.word(w));
            let mut won = None;
            for_each_bit(w, cand, |i| {
                if won.is_none() && self.claim(i) {
                    won = Some(i);
                }
            });
            won
        })
    }

    /// Claims a piece of word `w` in level `l` (`bits`: the level's bits there) that the peer
    /// has; clears the stale bits met on the way.
    fn claim_in_level(&self, l: usize, w: usize, bits: u64, has: u64) -> Option<u32> {
        let taken = self.verified.word(w) | self.claimed.word(w);
        for_each_bit(w, bits & taken, |i| self.unplace(l, i));
        let mut cand = bits & !taken & has;
        while cand != 0 {
            let off = cand.trailing_zeros();
            cand &= cand - 1;
            let i = w as u32 * 64 + off;
            match self.want(i) {
                // Its count may have dropped below this level meanwhile: rarer still, take it.
                Some(m) if m <= l => {
                    if self.claim(i) {
                        if m != l {
                            self.unplace(l, i);
                        }
                        return Some(i);
                    }
                }
                // More common now: to its level, and on to the next piece here.
                Some(_) => {
                    self.place(i);
                    self.unplace(l, i);
                }
                None => self.unplace(l, i),
            }
        }
        None
    }
}

/// Visits the `words` words once from a random word and bit (`rand`): `f(w, part)` with `part`
/// the bits of word `w` to look at (the start word is visited twice: from the start bit on, and
/// at the end, the bits before it). Stops at the first `Some`.
fn scan<T>(words: usize, rand: u64, mut f: impl FnMut(usize, u64) -> Option<T>) -> Option<T> {
    if words == 0 {
        return None;
    }
    let first = (rand % words as u64) as usize;
    let shift = ((rand >> 32) % 64) as u32;
    for k in 0..=words {
        let part = if k == 0 {
            u64::MAX << shift
        } else if k == words {
            !(u64::MAX << shift)
        } else {
            u64::MAX
        };
        let w = (first + k) % words;
        if let Some(found) = f(w, part) {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece `(0..n)` placed where its state says: the invariant at rest.
    fn assert_indexed(t: &PieceTable) {
        for i in 0..t.num_pieces() {
            for l in 0..LEVELS {
                // Level 0 unallocated stands for every piece.
                let set = t.level_bits(l).map_or(l == 0, |b| b.get(i));
                if t.want(i) == Some(l) {
                    assert!(
                        set,
                        "piece {i} (availability {}) missing from level {l}",
                        t.availability(i)
                    );
                }
            }
        }
    }

    fn all(_: usize) -> u64 {
        u64::MAX
    }

    #[test]
    fn levels_are_exact_then_powers_of_two() {
        assert_eq!(level(1), 1);
        assert_eq!(level(31), 31);
        assert_eq!(level(32), 32);
        assert_eq!(level(63), 32);
        assert_eq!(level(64), 33);
        assert_eq!(level(u16::MAX), LEVELS - 1);
    }

    #[test]
    fn rarest_first_claims_the_lowest_level_and_a_given_back_claim_returns() {
        let t = PieceTable::new(200);
        for i in 0..200 {
            for _ in 0..(3 + i % 4) {
                t.peer_has(i);
            }
        }
        t.peer_lost(150); // 150 had 5, now 4
        for _ in 0..2 {
            t.peer_lost(77); // 77 had 4, now 2: the rarest
        }
        t.verified.set(4); // 3 peers, but verified
        assert_eq!(t.claim_rarest(all, 12345), Some(77));
        assert!(t.claimed(77));
        // Then the pieces at 3 (i % 4 == 0), whatever the start.
        for r in [0, 7, 1 << 40, u64::MAX] {
            let i = t.claim_rarest(all, r).unwrap();
            assert_eq!(t.availability(i), 3, "{i}");
            assert_ne!(i, 4);
        }
        t.release(77);
        assert_eq!(t.claim_rarest(all, 999), Some(77));
        // The peer lacks every piece at 3 and 4: it gets one at 5 or 6.
        let has_none_below_5 = |w: usize| {
            (0..64).fold(0u64, |acc, b| {
                let i = (w * 64 + b) as u32;
                if i < 200 && t.availability(i) >= 5 {
                    acc | 1 << b
                } else {
                    acc
                }
            })
        };
        let i = t.claim_rarest(has_none_below_5, 3).unwrap();
        assert_eq!(t.availability(i), 5);
        assert_indexed(&t);
    }

    #[test]
    fn the_start_spreads_ties_and_nothing_is_claimed_twice() {
        let t = PieceTable::new(1000);
        for i in 0..1000 {
            t.peer_has(i);
        }
        let mut seen = std::collections::HashSet::new();
        let mut firsts = std::collections::HashSet::new();
        let mut r = 0x9e37_79b9_7f4a_7c15u64;
        for k in 0..1000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let i = t.claim_rarest(all, r).unwrap();
            assert!(seen.insert(i), "{i} claimed twice");
            if k < 20 {
                firsts.insert(i / 64);
            }
        }
        assert!(
            firsts.len() > 5,
            "ties all went to the same words: {firsts:?}"
        );
        assert_eq!(t.claim_rarest(all, r), None);
        assert_eq!(t.claim_any(all, r), None);
        assert_eq!(t.claimed.count(), 1000);
    }

    #[test]
    fn a_seeding_table_allocates_no_levels() {
        let t = PieceTable::new(100);
        for i in 0..100 {
            t.verified.set(i);
        }
        for i in 0..100 {
            t.peer_has(i);
            t.peer_has(i);
            t.peer_lost(i);
        }
        assert!((0..LEVELS).all(|l| t.level_bits(l).is_none()));
        assert_eq!(t.claim_rarest(all, 1), None);
    }

    /// A seed (`have_all`) is the only peer: every piece is claimable from it, and once peers
    /// announce some pieces, those only the seed has are the rarest.
    #[test]
    fn pieces_only_seeds_have_are_claimed_first() {
        let t = PieceTable::new(130);
        assert_eq!(t.claim_rarest(all, 3), None, "no peer, nothing to claim");
        t.seed_joined();
        let first = t.claim_rarest(all, 3).unwrap();
        t.release(first);
        for i in 0..130 {
            if i != 7 && i != 100 {
                t.peer_has(i);
            }
        }
        let mut got = [
            t.claim_rarest(all, 5).unwrap(),
            t.claim_rarest(all, 99).unwrap(),
        ];
        got.sort();
        assert_eq!(got, [7, 100]);
        let third = t.claim_rarest(all, 1).unwrap();
        assert_eq!(t.availability(third), 2);
        t.seed_left();
        t.peer_lost(50);
        assert_indexed(&t);
        // Without the seed, a piece nobody announces is not offered, even by an `all` mask.
        while let Some(i) = t.claim_rarest(all, 8) {
            assert!(t.availability(i) > 0, "{i}");
        }
        assert!(!t.claimed(50) || third == 50);
    }

    /// Against a plain reading of every count: random haves, losses, claims, releases and
    /// verifications, and after each pick the piece claimed is one of the rarest the peer has.
    #[test]
    fn picks_match_a_scan_of_the_counts() {
        let n = 300u32;
        let t = PieceTable::new(n);
        let mut has = vec![false; n as usize];
        let mut r = 42u64;
        let mut next = || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        for i in 0..n {
            has[i as usize] = next() % 3 != 0;
        }
        let word = |has: &[bool], w: usize| {
            (0..64).fold(0u64, |acc, b| {
                if has.get(w * 64 + b) == Some(&true) {
                    acc | 1 << b
                } else {
                    acc
                }
            })
        };
        for _ in 0..20_000 {
            let i = (next() % u64::from(n)) as u32;
            match next() % 10 {
                0..=3 => t.peer_has(i),
                4..=5 => t.peer_lost(i),
                6 => t.release(i),
                7 => match next() % 16 {
                    0 | 1 => {
                        t.verified.set(i);
                    }
                    2 => t.seed_joined(),
                    3 => t.seed_left(),
                    _ => {}
                },
                _ => {
                    // Seeds add the same to every piece: the order is the one of the counts
                    // announced piece by piece.
                    let rarest = (0..n)
                        .filter(|&j| {
                            has[j as usize]
                                && !t.verified.get(j)
                                && !t.claimed(j)
                                && t.availability(j) > 0
                        })
                        .map(|j| level(t.announced(j)))
                        .min();
                    let got = t.claim_rarest(|w| word(&has, w), next());
                    assert_eq!(got.map(|j| level(t.announced(j))), rarest);
                    if let Some(j) = got {
                        assert!(has[j as usize] && t.claimed(j));
                    }
                }
            }
        }
        assert_indexed(&t);
    }

    /// Two threads move the same few pieces between levels, claim and give them back, at once;
    /// at rest every claimable piece is at its level.
    #[test]
    fn concurrent_moves_lose_no_piece() {
        let t = std::sync::Arc::new(PieceTable::new(8));
        for round in 0..100u64 {
            std::thread::scope(|s| {
                for k in 0..2u64 {
                    let t = &t;
                    s.spawn(move || {
                        let mut r = (round << 8 | k) * 0x9e37_79b9 + 1;
                        for _ in 0..2000 {
                            r ^= r << 13;
                            r ^= r >> 7;
                            r ^= r << 17;
                            let i = (r % 8) as u32;
                            match (r >> 8) % 6 {
                                0 | 1 => t.peer_has(i),
                                2 | 3 => t.peer_lost(i),
                                4 => {
                                    let _ = t.claim_rarest(all, r);
                                }
                                _ => t.release(i),
                            }
                        }
                    });
                }
            });
            assert_indexed(&t);
        }
    }

    /// The race rule 2 is for, run many times: one thread moves a piece from level 2 to 3 and
    /// back while the other moves it to 1 and back, started together (spinning, so they start
    /// within nanoseconds). Each ends where it began, so the piece must be at level 2 after
    /// every round. Without the re-read after a clear, one thread's late clear of level 2 loses
    /// it.
    #[test]
    fn a_piece_moved_both_ways_at_once_stays_at_its_level() {
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        let t = PieceTable::new(1);
        t.peer_has(0);
        t.peer_has(0);
        const ROUNDS: u64 = 5_000;
        // Arrivals at the three meeting points of each round.
        let (go, done, checked) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let meet = |at: &AtomicU64, round: u64| {
            at.fetch_add(1, SeqCst);
            let mut spins = 0u32;
            while at.load(SeqCst) < 2 * (round + 1) {
                spins += 1;
                if spins < 10_000 {
                    std::hint::spin_loop();
                } else {
                    // The other thread is off the core (a busy machine): let it run.
                    std::thread::yield_now();
                }
            }
        };
        let mut lost = 0;
        std::thread::scope(|s| {
            let (t, meet, go, done, checked) = (&t, &meet, &go, &done, &checked);
            s.spawn(move || {
                for r in 0..ROUNDS {
                    meet(go, r);
                    t.peer_lost(0);
                    t.peer_has(0);
                    meet(done, r);
                    meet(checked, r);
                }
            });
            for r in 0..ROUNDS {
                meet(go, r);
                t.peer_has(0);
                t.peer_lost(0);
                meet(done, r);
                if !t.level_bits(2).is_some_and(|b| b.get(0)) {
                    lost += 1;
                    // Put it back, to count each loss once.
                    t.place(0);
                }
                meet(checked, r);
            }
        });
        assert_eq!(t.availability(0), 2);
        assert_eq!(lost, 0, "rounds out of {ROUNDS} that lost the piece");
    }
}
