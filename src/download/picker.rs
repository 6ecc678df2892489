//! Which piece a peer should fetch next: a few random pieces first (so there is something to
//! trade at once), then rarest first from the availability the piece table counts. A pick is
//! claimed with one atomic operation on the table's `claimed` bits, so two workers never fetch
//! the same piece outside endgame.
//!
//! A pick scans the torrent's pieces from a random start. Picks happen once per piece claimed,
//! not per block, and the scan stops at the first piece only one peer has.

use crate::pieces::PieceTable;

/// How to choose among the pieces a peer has that nobody fetches yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Any: the first pieces, so there is something to trade before rarity means much.
    Random,
    /// The piece fewest connected peers have (ties broken by the random start).
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

/// Picks a piece the peer has (`has`) that is neither verified nor claimed, and claims it.
/// `start` spreads peers over the torrent (a random number). `None`: nothing is left to claim
/// from this peer (endgame, if it has pieces we still lack).
pub fn claim(
    table: &PieceTable,
    has: impl Fn(u32) -> bool,
    strategy: Strategy,
    start: u32,
) -> Option<u32> {
    // Another worker may claim the chosen piece between the scan and the claim; a few tries.
    for _ in 0..4 {
        let i = choose(table, &has, strategy, start)?;
        if table.claimed.set(i) {
            return Some(i);
        }
    }
    None
}

fn choose(
    table: &PieceTable,
    has: &impl Fn(u32) -> bool,
    strategy: Strategy,
    start: u32,
) -> Option<u32> {
    let n = table.num_pieces();
    if n == 0 {
        return None;
    }
    let start = start % n;
    let mut best: Option<(u32, u16)> = None;
    for k in 0..n {
        let i = if start + k < n {
            start + k
        } else {
            start + k - n
        };
        if table.verified.get(i) || table.claimed.get(i) || !has(i) {
            continue;
        }
        match strategy {
            Strategy::Random => return Some(i),
            Strategy::RarestFirst => {
                let av = table.availability(i);
                if best.is_none_or(|(_, b)| av < b) {
                    best = Some((i, av));
                    if av <= 1 {
                        break;
                    }
                }
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Whether the peer has a piece we still lack (verified or not, claimed or not).
pub fn interesting(table: &PieceTable, has: impl Fn(u32) -> bool) -> bool {
    (0..table.num_pieces()).any(|i| !table.verified.get(i) && has(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarest_first_takes_the_least_available_and_claims_it() {
        let t = PieceTable::new(5);
        for (i, n) in [(0, 3), (1, 2), (2, 4), (3, 2), (4, 5)] {
            for _ in 0..n {
                t.peer_has(i);
            }
        }
        t.verified.set(1);
        assert_eq!(claim(&t, |_| true, Strategy::RarestFirst, 0), Some(3));
        assert!(t.claimed.get(3));
        assert_eq!(claim(&t, |_| true, Strategy::RarestFirst, 0), Some(0));
        assert_eq!(claim(&t, |i| i != 2, Strategy::RarestFirst, 0), Some(4));
        assert_eq!(claim(&t, |i| i != 2, Strategy::RarestFirst, 0), None);
        assert_eq!(claim(&t, |_| true, Strategy::RarestFirst, 0), Some(2));
        assert!(interesting(&t, |_| true));
        assert!(!interesting(&t, |i| i == 1));
    }

    #[test]
    fn random_start_spreads_and_wraps() {
        let t = PieceTable::new(4);
        assert_eq!(claim(&t, |_| true, Strategy::Random, 6), Some(2));
        assert_eq!(claim(&t, |_| true, Strategy::Random, 6), Some(3));
        assert_eq!(claim(&t, |_| true, Strategy::Random, 6), Some(0));
        assert_eq!(Strategy::for_progress(0, 4), Strategy::Random);
        assert_eq!(Strategy::for_progress(4, 4), Strategy::RarestFirst);
    }

    #[test]
    fn a_released_claim_can_be_taken_again() {
        let t = PieceTable::new(1);
        assert_eq!(claim(&t, |_| true, Strategy::Random, 0), Some(0));
        assert_eq!(claim(&t, |_| true, Strategy::Random, 0), None);
        t.claimed.clear(0);
        assert_eq!(claim(&t, |_| true, Strategy::Random, 0), Some(0));
        assert_eq!(
            claim(&PieceTable::new(0), |_| true, Strategy::Random, 0),
            None
        );
    }
}
