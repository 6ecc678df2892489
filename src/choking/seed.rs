//! Seed-mode choking: which interested peers get upload slots.
//!
//! Pure decision code, so it is testable and benchmarkable on its own: the worker describes its
//! peers as [`Candidate`]s and gets back the set to unchoke.

use std::time::Instant;

/// Seed choking algorithms (libtorrent's `seed_choking_algorithm` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedChoker {
    /// Rotate slots: a peer keeps its slot until it has received its quota, then waits while
    /// peers that waited longest are served. Spreads the upload evenly (libtorrent's default).
    RoundRobin,
    /// Give slots to the peers that download fastest from us.
    FastestUpload,
}

/// What the choker knows about one interested peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Caller's handle for the peer.
    pub key: usize,
    pub unchoked: bool,
    /// When the peer last changed between choked and unchoked.
    pub since: Instant,
    /// Bytes sent since it was last unchoked.
    pub uploaded_since_unchoke: u64,
    /// Bytes sent during the last choke interval.
    pub recent_upload: u64,
    /// It holds its unchoke without using it: it has asked for nothing for a while
    /// (the engine's `Conn::holds_unused_slot`). It yields its slot to any peer that waits.
    pub idle: bool,
}

impl Candidate {
    /// It holds an unchoke and uses it.
    fn holds(&self) -> bool {
        self.unchoked && !self.idle
    }
}

/// Picks up to `slots` peers to unchoke (0 = no limit). A round-robin slot is handed on after
/// `quota` bytes, or when its turn is over (unchoked at or before `turn_ended`) whatever it
/// moved: a peer that asks for a block now and then would otherwise never reach the quota and
/// keep its slot for as long as it likes. In both algorithms a peer that holds a slot it does
/// not use (`idle`) comes after every peer that waits.
pub fn choose(
    algo: SeedChoker,
    cands: &mut [Candidate],
    slots: usize,
    quota: u64,
    turn_ended: Option<Instant>,
) -> Vec<usize> {
    if slots == 0 || cands.len() <= slots {
        return cands.iter().map(|c| c.key).collect();
    }
    match algo {
        SeedChoker::RoundRobin => {
            // 0: holding a slot in its turn (oldest first), 1: waiting (longest first),
            // 2: holding a slot over quota, past its turn, or unused (most recently unchoked
            // last).
            let over = |c: &Candidate| {
                c.idle
                    || c.uploaded_since_unchoke >= quota
                    || turn_ended.is_some_and(|t| c.since <= t)
            };
            let class = |c: &Candidate| match (c.unchoked, over(c)) {
                (false, _) => 1,
                (true, false) => 0,
                (true, true) => 2,
            };
            cands.sort_by_key(|c| (class(c), c.since));
        }
        SeedChoker::FastestUpload => {
            cands.sort_by(|a, b| {
                a.idle
                    .cmp(&b.idle)
                    .then(b.recent_upload.cmp(&a.recent_upload))
                    .then(b.holds().cmp(&a.holds()))
                    .then(a.since.cmp(&b.since))
            });
        }
    }
    cands[..slots].iter().map(|c| c.key).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cand(
        key: usize,
        unchoked: bool,
        since_s: u64,
        up: u64,
        recent: u64,
        t0: Instant,
    ) -> Candidate {
        Candidate {
            key,
            unchoked,
            since: t0 + Duration::from_secs(since_s),
            uploaded_since_unchoke: up,
            recent_upload: recent,
            idle: false,
        }
    }

    #[test]
    fn round_robin_rotates_after_quota() {
        let t0 = Instant::now();
        let mut c = vec![
            cand(1, true, 5, 10, 0, t0),  // under quota: keeps slot
            cand(2, true, 1, 500, 0, t0), // over quota: yields
            cand(3, false, 2, 0, 0, t0),  // waited since 2
            cand(4, false, 0, 0, 0, t0),  // waited longest
        ];
        let mut got = choose(SeedChoker::RoundRobin, &mut c, 2, 100, None);
        got.sort();
        assert_eq!(got, [1, 4]);
    }

    #[test]
    fn fastest_upload_prefers_rate_and_unlimited_takes_all() {
        let t0 = Instant::now();
        let mut c = vec![
            cand(1, true, 0, 0, 5, t0),
            cand(2, false, 0, 0, 50, t0),
            cand(3, true, 0, 0, 20, t0),
        ];
        let mut got = choose(SeedChoker::FastestUpload, &mut c, 2, 100, None);
        got.sort();
        assert_eq!(got, [2, 3]);
        assert_eq!(
            choose(SeedChoker::RoundRobin, &mut c, 0, 100, None).len(),
            3
        );
    }

    #[test]
    fn a_slot_held_unused_goes_to_a_peer_that_waits() {
        let t0 = Instant::now();
        for algo in [SeedChoker::RoundRobin, SeedChoker::FastestUpload] {
            // 1 and 2 hold the slots under quota; 2 asks for nothing; 3 waits.
            let mut c = vec![
                cand(1, true, 0, 10, 500, t0),
                Candidate {
                    idle: true,
                    ..cand(2, true, 0, 10, 900, t0)
                },
                cand(3, false, 5, 0, 0, t0),
            ];
            let mut got = choose(algo, &mut c, 2, 100, None);
            got.sort();
            assert_eq!(got, [1, 3], "{algo:?}");
        }
    }

    #[test]
    fn a_round_robin_turn_ends_with_its_time_under_quota() {
        let t0 = Instant::now();
        // 1 unchoked at t0 + 0 s, 2 at t0 + 20 s, both under quota (a block now and then);
        // 3 waits since t0 + 5 s.
        let c = vec![
            cand(1, true, 0, 10, 0, t0),
            cand(2, true, 20, 10, 0, t0),
            cand(3, false, 5, 0, 0, t0),
        ];
        let pick = |turn_ended: Option<Instant>| {
            let mut c = c.clone();
            let mut got = choose(SeedChoker::RoundRobin, &mut c, 2, 100, turn_ended);
            got.sort();
            got
        };
        assert_eq!(
            pick(None),
            [1, 2],
            "no turn: under quota they keep their slots"
        );
        // Turns of 30 s, at t0 + 30 s: 1's is over, 2's is not.
        assert_eq!(pick(Some(t0)), [2, 3]);
        // Both past their turn: the waiting one first, then the one unchoked earlier.
        assert_eq!(pick(Some(t0 + Duration::from_secs(20))), [1, 3]);
    }
}
