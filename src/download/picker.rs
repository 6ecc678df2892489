//! Which piece a peer should fetch next: a few random pieces first (so there is something to
//! trade at once), then rarest first from the availability the piece table counts. A pick is
//! claimed with one atomic operation on the table's `claimed` bits, so two workers never fetch
//! the same piece outside endgame.
//!
//! Picks happen once per piece claimed, not per block, but with small pieces that is often: a
//! torrent of 16 KiB pieces claims one per block. So a pick never reads every piece: rarest
//! first reads the table's rarity index (`pieces/rarity.rs`: the claimable pieces per
//! availability level, kept as haves arrive), the lowest level first, 64 pieces per word, and
//! compares them with the peer's bitfield a word at a time; a random pick reads the peer's
//! bitfield and the table's bits a word at a time too.
//!
//! What is wanted ([`Want`]: file priorities, sequential, first/last piece) masks the peer's
//! words before any of that: pieces only skipped files cover are never claimed; the urgent
//! tiers are tried first (lowest piece first), and a sequential download takes the lowest
//! missing wanted piece instead of the rarest.

use super::want::Want;
use crate::pieces::PieceTable;

/// How to choose among the pieces a peer has that nobody fetches yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Any: the first pieces, so there is something to trade before rarity means much.
    Random,
    /// The piece fewest connected peers have (ties broken at random).
    RarestFirst,
}

impl Strategy {
    /// Random until `random_first` pieces are verified, then rarest first.
    pub fn for_progress(verified: u32, random_first: u32) -> Strategy {
        if verified < random_first {
            Strategy::Random
        } else {
            Strategy::RarestFirst
        }
    }
}

/// The pieces a peer can give us now.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    /// What it announced: a BEP 3 bitfield (missing bytes count as clear).
    pub bits: &'a [u8],
    /// While it chokes us: only these pieces (its allowed-fast set, BEP 6), among `bits`.
    pub only: Option<&'a [u32]>,
}

impl Offer<'_> {
    pub fn has(&self, i: u32) -> bool {
        let announced = self
            .bits
            .get((i / 8) as usize)
            .is_some_and(|b| b & (0x80 >> (i % 8)) != 0);
        announced && self.only.is_none_or(|only| only.contains(&i))
    }

    /// Pieces `64 w ..` of its bitfield as one word in the piece table's layout (piece `64 w`
    /// in bit 0): the wire's eight bytes, bits reversed.
    fn word(&self, w: usize) -> u64 {
        let at = w * 8;
        let wire = match self.bits.get(at..at + 8) {
            Some(b) => b.iter().fold(0, |acc, &x| acc << 8 | u64::from(x)),
            None => {
                let mut b = [0u8; 8];
                let tail = self.bits.get(at..).unwrap_or_default();
                b[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(b)
            }
        };
        wire.reverse_bits()
    }
}

/// Picks a wanted piece the peer offers that is neither verified nor claimed, and claims it:
/// from the most urgent tier of `want` that has one (lowest first), else the lowest one for a
/// sequential download, else by `strategy`. `rand` spreads peers over the torrent (a random
/// number). `None`: nothing is left to claim from this peer (endgame, if it has pieces we
/// still lack).
pub fn claim(
    table: &PieceTable,
    offer: Offer<'_>,
    strategy: Strategy,
    rand: u64,
    want: &Want,
) -> Option<u32> {
    if let Some(only) = offer.only {
        return claim_among(table, only, offer, strategy, rand, want);
    }
    for tier in want.tiers() {
        let urgent = |w: usize| offer.word(w) & tier.get(w).copied().unwrap_or(0);
        if let Some(i) = table.claim_any(urgent, 0) {
            return Some(i);
        }
    }
    let has = |w: usize| offer.word(w) & want.word(w);
    if want.sequential {
        // From word 0, bit 0: the lowest claimable piece the peer has.
        return table.claim_any(has, 0);
    }
    match strategy {
        Strategy::Random => table.claim_any(has, rand),
        Strategy::RarestFirst => table.claim_rarest(has, rand),
    }
}

/// A pick among a few pieces (a choking peer's allowed-fast set, at most a few dozen): each is
/// looked at.
fn claim_among(
    table: &PieceTable,
    pieces: &[u32],
    offer: Offer<'_>,
    strategy: Strategy,
    rand: u64,
    want: &Want,
) -> Option<u32> {
    // Another worker may claim the chosen piece between the look and the claim: a few tries.
    for _ in 0..4 {
        let n = pieces.len();
        let start = if n == 0 {
            0
        } else {
            (rand % n as u64) as usize
        };
        let free = (0..n).map(|k| pieces[(start + k) % n]).filter(|&i| {
            offer.has(i) && want.wants(i) && !table.verified.get(i) && !table.claimed(i)
        });
        let i = if want.sequential {
            free.min_by_key(|&i| (want.rank(i), i))
        } else {
            match strategy {
                Strategy::Random => free.min_by_key(|&i| want.rank(i)),
                Strategy::RarestFirst => {
                    free.min_by_key(|&i| (want.rank(i), table.availability(i)))
                }
            }
        }?;
        if table.claim(i) {
            return Some(i);
        }
    }
    None
}

/// Endgame across workers: a piece another worker claimed that the peer offers, to copy here
/// (`here(i)`: this worker has a part of it already), from a random place (`rand`). Never one
/// that is verified or being written: that one's bytes are complete, checked and on their way
/// to disk; a copy could only waste the bandwidth (and its write would race the first one).
/// Read a word at a time, as picks are.
pub fn copy_candidate(
    table: &PieceTable,
    offer: Offer<'_>,
    here: impl Fn(u32) -> bool,
    rand: u64,
    want: &Want,
) -> Option<u32> {
    let copyable = |i: u32| {
        table.copyable_word((i / 64) as usize) & want.word((i / 64) as usize) & (1u64 << (i % 64))
            != 0
    };
    if let Some(only) = offer.only {
        return only
            .iter()
            .copied()
            .find(|&i| offer.has(i) && copyable(i) && !here(i));
    }
    let words = table.verified.words();
    if words == 0 {
        return None;
    }
    let first = (rand % words as u64) as usize;
    (0..words).find_map(|k| {
        let w = (first + k) % words;
        let mut cand = offer.word(w) & table.copyable_word(w) & want.word(w);
        while cand != 0 {
            let off = cand.trailing_zeros();
            cand &= cand - 1;
            let i = w as u32 * 64 + off;
            if !here(i) {
                return Some(i);
            }
        }
        None
    })
}

/// Whether the peer has a wanted piece we still lack (claimed or not).
pub fn interesting(table: &PieceTable, offer: Offer<'_>, want: &Want) -> bool {
    (0..table.verified.words()).any(|w| offer.word(w) & want.word(w) & !table.verified.word(w) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::want::tests::layout;

    /// The picks with every piece wanted (what the tests below were written for).
    fn claim(t: &PieceTable, o: Offer<'_>, s: Strategy, rand: u64) -> Option<u32> {
        super::claim(t, o, s, rand, &Want::everything(t.num_pieces()))
    }

    fn copy_candidate(
        t: &PieceTable,
        o: Offer<'_>,
        here: impl Fn(u32) -> bool,
        rand: u64,
    ) -> Option<u32> {
        super::copy_candidate(t, o, here, rand, &Want::everything(t.num_pieces()))
    }

    fn interesting(t: &PieceTable, o: Offer<'_>) -> bool {
        super::interesting(t, o, &Want::everything(t.num_pieces()))
    }

    /// Ten files of 64 bytes, pieces of 32: file `k` covers pieces `2k` and `2k + 1`.
    fn ten_files() -> crate::metainfo::FileLayout {
        layout(&[64; 10], 32)
    }

    /// A table of 20 pieces where piece `i` has `20 - i` peers (the highest is the rarest).
    fn table_rare_high() -> PieceTable {
        let t = PieceTable::new(20);
        for i in 0..20 {
            for _ in 0..(20 - i) {
                t.peer_has(i);
            }
        }
        t
    }

    /// Everything a skipped file alone covers is never claimed, whatever the strategy, also
    /// not as an endgame copy nor from an allowed-fast set; a peer with only such pieces is
    /// not interesting.
    #[test]
    fn skipped_files_pieces_are_never_claimed() {
        let l = layout(&[40, 60, 30], 16); // f1 alone covers pieces 3-5
        let want = Want::plan(&l, &[1, 0, 1], false, false);
        let every = bits(9, |_| true);
        for s in [Strategy::Random, Strategy::RarestFirst] {
            let t = PieceTable::new(9);
            for i in 0..9 {
                t.peer_has(i);
            }
            let mut got: Vec<u32> = (0..20)
                .filter_map(|r| super::claim(&t, offer(&every), s, r * 977, &want))
                .collect();
            got.sort();
            assert_eq!(got, [0, 1, 2, 6, 7, 8], "{s:?}");
            // Endgame copies: the claimed pieces, never 3-5.
            for r in 0..20 {
                let c = super::copy_candidate(&t, offer(&every), |_| false, r, &want);
                assert!(c.is_some_and(|i| want.wants(i)), "{c:?}");
            }
        }
        let t = PieceTable::new(9);
        let only_skipped = bits(9, |i| (3..=5).contains(&i));
        assert!(!super::interesting(&t, offer(&only_skipped), &want));
        assert!(super::interesting(&t, offer(&every), &want));
        let choked = Offer {
            bits: &every,
            only: Some(&[4, 5, 8]),
        };
        assert_eq!(
            super::claim(&t, choked, Strategy::RarestFirst, 0, &want),
            Some(8)
        );
        assert_eq!(
            super::claim(&t, choked, Strategy::RarestFirst, 0, &want),
            None
        );
    }

    /// Sequential: the lowest missing wanted piece the peer has, not the rarest.
    #[test]
    fn sequential_takes_the_lowest_missing_piece() {
        let t = table_rare_high();
        t.verified.set(0);
        let want = Want::plan(&ten_files(), &[1, 0], false, true);
        let every = bits(20, |_| true);
        let no_4 = bits(20, |i| i != 4);
        let pick = |o| super::claim(&t, o, Strategy::RarestFirst, 12345, &want);
        assert_eq!(pick(offer(&every)), Some(1));
        assert_eq!(pick(offer(&no_4)), Some(5), "2-3 skipped, 4 not offered");
        assert_eq!(pick(offer(&every)), Some(4));
        assert_eq!(pick(offer(&every)), Some(6));
        // Without sequential the same table gives the rarest.
        let t = table_rare_high();
        let plain = Want::plan(&ten_files(), &[], false, false);
        assert_eq!(
            super::claim(&t, offer(&every), Strategy::RarestFirst, 0, &plain),
            Some(19)
        );
    }

    /// First/last piece priority: the first and last piece of each wanted file before any
    /// other, then rarest first as usual.
    #[test]
    fn first_and_last_pieces_come_first() {
        let l = layout(&[100, 28, 200], 32); // f0: 0-3, f1: 3, f2: 4-10
        let want = Want::plan(&l, &[], true, false);
        let t = PieceTable::new(11);
        for i in 0..11 {
            for _ in 0..(11 - i) {
                t.peer_has(i);
            }
        }
        let every = bits(11, |_| true);
        let mut firsts: Vec<u32> = (0..4)
            .filter_map(|r| super::claim(&t, offer(&every), Strategy::RarestFirst, r, &want))
            .collect();
        firsts.sort();
        assert_eq!(firsts, [0, 3, 4, 10]);
        // Then the rarest of the rest (9 has fewest peers).
        assert_eq!(
            super::claim(&t, offer(&every), Strategy::RarestFirst, 0, &want),
            Some(9)
        );
    }

    /// High and maximal priority files' pieces are claimed before normal ones, maximal first;
    /// a peer without any of them still gets a normal piece.
    #[test]
    fn higher_priority_files_are_fetched_first() {
        let t = table_rare_high();
        let want = Want::plan(&ten_files(), &[1, 6, 1, 7, 1, 1, 1, 1, 1, 1], false, false);
        let every = bits(20, |_| true);
        let order: Vec<u32> = (0..5)
            .filter_map(|r| super::claim(&t, offer(&every), Strategy::RarestFirst, r, &want))
            .collect();
        assert_eq!(order, [6, 7, 2, 3, 19]);
        let t = table_rare_high();
        let no_urgent = bits(20, |i| !(2..=3).contains(&i) && !(6..=7).contains(&i));
        assert_eq!(
            super::claim(&t, offer(&no_urgent), Strategy::RarestFirst, 0, &want),
            Some(19)
        );
    }

    /// A bitfield of `n` pieces with `has` set.
    fn bits(n: u32, has: impl Fn(u32) -> bool) -> Vec<u8> {
        let mut b = vec![0u8; n.div_ceil(8) as usize];
        for i in (0..n).filter(|&i| has(i)) {
            b[(i / 8) as usize] |= 0x80 >> (i % 8);
        }
        b
    }

    fn offer(b: &[u8]) -> Offer<'_> {
        Offer {
            bits: b,
            only: None,
        }
    }

    #[test]
    fn rarest_first_takes_the_least_available_and_claims_it() {
        let t = PieceTable::new(5);
        for (i, n) in [(0, 3), (1, 2), (2, 4), (3, 2), (4, 5)] {
            for _ in 0..n {
                t.peer_has(i);
            }
        }
        t.verified.set(1);
        let every = bits(5, |_| true);
        let no_2 = bits(5, |i| i != 2);
        assert_eq!(claim(&t, offer(&every), Strategy::RarestFirst, 0), Some(3));
        assert!(t.claimed(3));
        assert_eq!(claim(&t, offer(&every), Strategy::RarestFirst, 0), Some(0));
        assert_eq!(claim(&t, offer(&no_2), Strategy::RarestFirst, 0), Some(4));
        assert_eq!(claim(&t, offer(&no_2), Strategy::RarestFirst, 0), None);
        assert_eq!(claim(&t, offer(&every), Strategy::RarestFirst, 0), Some(2));
        assert!(interesting(&t, offer(&every)));
        assert!(!interesting(&t, offer(&bits(5, |i| i == 1))));
    }

    #[test]
    fn random_start_spreads_and_wraps() {
        let t = PieceTable::new(4);
        let every = bits(4, |_| true);
        // Word 0, from bit 2 on.
        let r = 2u64 << 32;
        assert_eq!(claim(&t, offer(&every), Strategy::Random, r), Some(2));
        assert_eq!(claim(&t, offer(&every), Strategy::Random, r), Some(3));
        assert_eq!(claim(&t, offer(&every), Strategy::Random, r), Some(0));
        assert_eq!(Strategy::for_progress(0, 4), Strategy::Random);
        assert_eq!(Strategy::for_progress(4, 4), Strategy::RarestFirst);
    }

    #[test]
    fn a_released_claim_can_be_taken_again() {
        let t = PieceTable::new(1);
        t.peer_has(0);
        let one = bits(1, |_| true);
        for s in [Strategy::Random, Strategy::RarestFirst] {
            assert_eq!(claim(&t, offer(&one), s, 0), Some(0));
            assert_eq!(claim(&t, offer(&one), s, 0), None);
            t.release(0);
        }
        assert_eq!(claim(&t, offer(&one), Strategy::RarestFirst, 7), Some(0));
        assert_eq!(
            claim(&PieceTable::new(0), offer(&[]), Strategy::Random, 0),
            None
        );
    }

    #[test]
    fn a_choking_peer_offers_only_its_allowed_fast_pieces() {
        let t = PieceTable::new(100);
        for i in 0..100 {
            t.peer_has(i);
            t.peer_has(i);
        }
        t.peer_lost(50); // the rarest, but not allowed fast
        t.peer_has(7);
        let every = bits(100, |_| true);
        let choked = Offer {
            bits: &every,
            only: Some(&[7, 70, 200]),
        };
        assert!(choked.has(70) && !choked.has(50) && !choked.has(200));
        assert_eq!(claim(&t, choked, Strategy::RarestFirst, 5), Some(70));
        assert_eq!(claim(&t, choked, Strategy::RarestFirst, 5), Some(7));
        assert_eq!(claim(&t, choked, Strategy::Random, 5), None);
        assert_eq!(claim(&t, offer(&every), Strategy::RarestFirst, 5), Some(50));
    }

    /// The endgame copy never takes a piece that is being written or verified, nor one this
    /// worker has, nor one nobody claimed (that one is claimed, not copied).
    #[test]
    fn an_endgame_copy_skips_pieces_written_verified_or_here() {
        let t = PieceTable::new(130);
        let every = bits(130, |_| true);
        for i in [3, 64, 100, 129] {
            assert!(t.claim(i));
        }
        let here = |i: u32| i == 100;
        let mut got: Vec<u32> = (0..8)
            .filter_map(|r| copy_candidate(&t, offer(&every), here, r))
            .collect();
        got.sort();
        got.dedup();
        assert_eq!(got, [3, 64, 129]);
        // Piece 64's copy passed its check elsewhere and is being written: no new copy.
        assert!(t.begin_write(64));
        assert!(!t.begin_write(64), "one writer per piece");
        t.verified.set(3);
        for r in 0..8 {
            assert_eq!(copy_candidate(&t, offer(&every), here, r), Some(129));
        }
        // A failed write makes the piece copyable again.
        t.write_failed(64);
        assert!((0..8).any(|r| copy_candidate(&t, offer(&every), here, r) == Some(64)));
        let choked = Offer {
            bits: &every,
            only: Some(&[3, 100, 129]),
        };
        assert_eq!(copy_candidate(&t, choked, here, 0), Some(129));
        assert_eq!(
            copy_candidate(&t, offer(&bits(130, |i| i < 64)), here, 0),
            None
        );
    }

    /// Two workers finish copies of the same pieces at once: each piece is written by exactly
    /// one of them.
    #[test]
    fn each_piece_gets_one_writer_among_racing_workers() {
        let t = std::sync::Arc::new(PieceTable::new(4096));
        let wins: Vec<Vec<u32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let t = &t;
                    s.spawn(move || (0..4096).filter(|&i| t.begin_write(i)).collect())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(wins[0].len() + wins[1].len(), 4096);
        assert!(wins[0].iter().all(|i| !wins[1].contains(i)));
        assert!((0..4096).all(|i| t.written(i)));
    }

    #[test]
    fn a_short_bitfield_reads_as_clear_past_its_end() {
        // Pieces 0-7 and 15.
        let o = offer(&[0xff, 0x01]);
        assert_eq!(o.word(0), 0x80ff);
        assert_eq!(o.word(1), 0);
        let full: Vec<u8> = (1..=9).collect();
        assert_eq!(
            offer(&full).word(0),
            0x0102_0304_0506_0708_u64.reverse_bits()
        );
        // 0x09: pieces 68 and 71.
        assert_eq!(offer(&full).word(1), 1 << 4 | 1 << 7);
    }
}
