//! Who gets an upload slot: every choking decision of the engine, in one place and pure.
//!
//! A worker describes its peers ([`Candidate`]s, and [`auction::Bidder`]s for peers that pay)
//! and gets back what to do; it only sends the choke and unchoke messages. Three decisions:
//!
//! - **The round** ([`round`]), every `rechoke_interval`: the paid slots by auction
//!   ([`auction::allocate`], shares in proportion to price); then the other slots, where payers
//!   whose payments keep up go ahead of free peers, the top price every round and lower ones
//!   in proportion ([`auction::ahead_of_free`]; [`seed::choose`] orders each group); and one
//!   optimistic unchoke beyond the slots, for a free peer whenever one waits, rotated every few
//!   rounds.
//! - **Between rounds**, a peer that becomes interested takes an open slot at once
//!   ([`admit_free`]), and a payer whose bid was just confirmed takes a slot at once
//!   ([`admit_payer`]), choking a free peer for it if every slot is held. A payer never waits
//!   for the next round while free peers hold slots. A slot given up (its holder left or lost
//!   interest, or stopped reading) and a slot held unused while a peer waits (its holder asks
//!   for nothing: [`Candidate::idle`]) bring a round at once, so no slot stands empty or
//!   hoarded until the next interval; such a round neither restarts the measuring interval nor
//!   rotates the optimistic unchoke.
//! - **The split** of the node's slots over the workers ([`Slots::per_worker`]): each worker
//!   decides alone, so no lock and no message crosses workers.
//!
//! Why payers go ahead of free peers in the free slots too: with `upload_slots = 8`,
//! `paid_slots = 4` and as many payers as free peers, a free share protected for free peers
//! (4 slots, plus the optimistic unchoke) caps the payers at 4 of 9 unchoked peers, less than
//! half the bytes, and a free share shared fairly with waiting payers gives them about 1.7× the
//! free peers' bytes: paying would be barely worth it. Free peers are never cut off: they get
//! every slot the payers leave, the optimistic unchoke whenever payers fill the slots, and a
//! payer that stops paying is an ordinary peer again.

pub mod auction;
pub mod seed;

pub use seed::{Candidate, SeedChoker};

use auction::{Bidder, Terms};

/// One worker's share of the node's upload slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    /// Upload slots of this worker; 0 = unlimited.
    pub total: usize,
    /// Of those, the slots the auction gives to payers (0 without `[speed]`).
    pub paid: usize,
}

impl Slots {
    /// The node's `upload_slots` and `paid_slots` split over `workers`, rounding up so a small
    /// node (fewer slots than workers) still has one on every worker.
    pub fn per_worker(upload_slots: usize, paid_slots: usize, workers: usize) -> Slots {
        let workers = workers.max(1);
        let total = if upload_slots == 0 {
            0
        } else {
            upload_slots.div_ceil(workers)
        };
        let paid = paid_slots.div_ceil(workers);
        Slots {
            total,
            paid: if total == 0 { paid } else { paid.min(total) },
        }
    }

    /// Slots that free peers are sure of: the auction never takes them.
    pub fn free_share(&self) -> usize {
        self.total.saturating_sub(self.paid)
    }
}

/// The slots held right now on one worker (optimistic unchokes are not counted: they are
/// beyond the slots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub free: usize,
    pub paid: usize,
}

impl Held {
    pub fn total(&self) -> usize {
        self.free + self.paid
    }

    /// A peer was unchoked into a slot of `kind`.
    pub fn take(&mut self, kind: SlotKind) {
        match kind {
            SlotKind::Free => self.free += 1,
            SlotKind::Paid => self.paid += 1,
            SlotKind::Optimistic => {}
        }
    }

    /// A peer holding a slot of `kind` was choked or left.
    pub fn release(&mut self, kind: SlotKind) {
        match kind {
            SlotKind::Free => self.free = self.free.saturating_sub(1),
            SlotKind::Paid => self.paid = self.paid.saturating_sub(1),
            SlotKind::Optimistic => {}
        }
    }
}

/// What kind of slot an unchoked peer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    Free,
    Paid,
    /// The optimistic unchoke, beyond the slots.
    Optimistic,
}

/// A peer became interested between rounds: it is unchoked at once while a slot is open.
pub fn admit_free(slots: &Slots, held: Held) -> bool {
    slots.total == 0 || held.total() < slots.total
}

/// What to do for a payer whose bid was just confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayerAdmission {
    /// A slot is open: unchoke it now into a slot of this kind.
    Unchoke(SlotKind),
    /// Every slot is held, by free peers among others: choke this one (a key of
    /// `free_holders`) and unchoke the payer in its place, into a slot of this kind.
    Replace(usize, SlotKind),
    /// Every slot is held by payers already: the next round decides.
    Wait,
}

/// A payer's bid was confirmed (and the payer is interested and choked, or holds a slot as a
/// free peer): a paid slot at once while one is left, else a free one ahead of free peers.
/// `free_holders` are the free peers (not payers) holding slots now; of those, the one served
/// most since its unchoke yields (it has had the most of its turn).
pub fn admit_payer(slots: &Slots, held: Held, free_holders: &[Candidate]) -> PayerAdmission {
    let kind = if held.paid < slots.paid {
        SlotKind::Paid
    } else {
        SlotKind::Free
    };
    if admit_free(slots, held) {
        return PayerAdmission::Unchoke(kind);
    }
    match free_holders
        .iter()
        .max_by_key(|c| (c.uploaded_since_unchoke, std::cmp::Reverse(c.since)))
    {
        Some(v) => PayerAdmission::Replace(v.key, kind),
        None => PayerAdmission::Wait,
    }
}

/// When the next round is due: after `interval`, or after half of it while free peers are served
/// by the optimistic unchoke alone, so that with four free peers waiting on a worker each gets
/// its turn within two intervals.
pub fn next_round_in(interval: std::time::Duration, free_starved: bool) -> std::time::Duration {
    if free_starved { interval / 2 } else { interval }
}

/// How one round is decided.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub algo: SeedChoker,
    /// Bytes after which a round-robin slot is handed on.
    pub quota: u64,
    /// A round-robin slot held since this instant or before has had its turn, whatever it
    /// moved (see [`seed::choose`]); `None`: turns end by the quota alone.
    pub turn_ended: Option<std::time::Instant>,
    pub slots: Slots,
    /// The auction's terms with `[speed]` on (`paid_slots` already this worker's share).
    pub terms: Option<Terms>,
    /// Rotate the optimistic unchoke this round.
    pub rotate_optimistic: bool,
}

/// The outcome of a round: every candidate not named here is choked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundChoice {
    pub paid: Vec<usize>,
    pub free: Vec<usize>,
    pub optimistic: Option<usize>,
    /// Free peers wait and none holds a slot: only the optimistic unchoke serves them, so the
    /// next round should come sooner (see [`next_round_in`]).
    pub free_starved: bool,
}

impl RoundChoice {
    /// The slot `key` gets this round, if any.
    pub fn slot_of(&self, key: usize) -> Option<SlotKind> {
        if self.paid.contains(&key) {
            Some(SlotKind::Paid)
        } else if self.free.contains(&key) {
            Some(SlotKind::Free)
        } else if self.optimistic == Some(key) {
            Some(SlotKind::Optimistic)
        } else {
            None
        }
    }
}

/// One choking round over the interested peers. `bidders` are the candidates that bid (their
/// `credit` is updated: keep it for the next round); `optimistic` is the current optimistic
/// unchoke, kept unless the round rotates it or it won a slot; `rng` a random number for the
/// rotation.
pub fn round(
    policy: &Policy,
    cands: &mut [Candidate],
    bidders: &mut [Bidder],
    optimistic: Option<usize>,
    rng: u64,
) -> RoundChoice {
    let slots = policy.slots.total;
    let (paid, payers) = match &policy.terms {
        Some(terms) => {
            let paid = if slots > 0 {
                auction::allocate(terms, bidders)
            } else {
                Vec::new()
            };
            let payers = auction::ahead_of_free(terms, bidders, &paid);
            (paid, payers)
        }
        None => (Vec::new(), Vec::new()),
    };
    if slots == 0 {
        let free = cands
            .iter()
            .map(|c| c.key)
            .filter(|k| !paid.contains(k))
            .collect();
        return RoundChoice {
            paid,
            free,
            optimistic: None,
            free_starved: false,
        };
    }
    let mut open = slots.saturating_sub(paid.len());
    let mut free = Vec::new();
    // Waiting payers first, then free peers; each group in the seed choker's order (payers
    // rotate among themselves; price already weighed in the paid slots).
    let (mut ahead, mut rest): (Vec<Candidate>, Vec<Candidate>) = cands
        .iter()
        .filter(|c| !paid.contains(&c.key))
        .partition(|c| payers.contains(&c.key));
    for group in [&mut ahead, &mut rest] {
        if open == 0 {
            break;
        }
        let picked = seed::choose(policy.algo, group, open, policy.quota, policy.turn_ended);
        open -= picked.len();
        free.extend(picked);
    }
    let mut choice = RoundChoice {
        paid,
        free,
        optimistic: None,
        free_starved: false,
    };
    // The optimistic unchoke: a waiting free peer if there is one, else a waiting payer.
    let waits = |c: &&Candidate| choice.slot_of(c.key).is_none();
    let waiting: Vec<&Candidate> = rest.iter().chain(ahead.iter()).filter(waits).collect();
    let waiting_free: Vec<&Candidate> = rest.iter().filter(waits).collect();
    let pool = if waiting_free.is_empty() {
        &waiting
    } else {
        &waiting_free
    };
    // A peer that asks for nothing neither keeps the optimistic unchoke nor gets it while a
    // peer that wants data waits.
    let wanting: Vec<usize> = pool.iter().filter(|c| !c.idle).map(|c| c.key).collect();
    let pool: Vec<usize> = if wanting.is_empty() {
        pool.iter().map(|c| c.key).collect()
    } else {
        wanting
    };
    // When payers hold every slot, the optimistic unchoke is the free peers' only way in: it
    // rotates every round, so each waiting free peer gets its turn sooner.
    let free_served = rest.iter().any(|c| choice.slot_of(c.key).is_some());
    choice.free_starved = !waiting_free.is_empty() && !free_served;
    let rotate = policy.rotate_optimistic || choice.free_starved;
    let kept = optimistic.filter(|k| pool.contains(k));
    choice.optimistic = match kept {
        Some(k) if !rotate => Some(k),
        _ if pool.is_empty() => None,
        _ => Some(pool[(rng % pool.len() as u64) as usize]),
    };
    choice
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn cand(key: usize, unchoked: bool, up: u64, t0: Instant) -> Candidate {
        Candidate {
            key,
            unchoked,
            since: t0 + Duration::from_secs(key as u64),
            uploaded_since_unchoke: up,
            recent_upload: 0,
            idle: false,
        }
    }

    #[test]
    fn slots_split_over_workers_round_up_and_paid_fits_in_total() {
        assert_eq!(Slots::per_worker(8, 4, 2), Slots { total: 4, paid: 2 });
        assert_eq!(Slots::per_worker(3, 1, 2), Slots { total: 2, paid: 1 });
        assert_eq!(Slots::per_worker(2, 8, 2), Slots { total: 1, paid: 1 });
        assert_eq!(Slots::per_worker(0, 4, 2), Slots { total: 0, paid: 2 });
        assert_eq!(Slots::per_worker(8, 0, 0), Slots { total: 8, paid: 0 });
        assert_eq!(Slots { total: 4, paid: 2 }.free_share(), 2);
    }

    #[test]
    fn a_free_peer_takes_an_open_slot_only() {
        let s = Slots { total: 4, paid: 2 };
        assert!(admit_free(&s, Held { free: 3, paid: 0 }));
        assert!(!admit_free(&s, Held { free: 4, paid: 0 }));
        assert!(!admit_free(&s, Held { free: 2, paid: 2 }));
        assert!(admit_free(
            &Slots { total: 0, paid: 0 },
            Held { free: 99, paid: 0 }
        ));
    }

    #[test]
    fn a_confirmed_payer_takes_a_slot_at_once() {
        let t0 = Instant::now();
        let s = Slots { total: 4, paid: 2 };
        // A slot open: take it, paid while paid slots are left.
        assert_eq!(
            admit_payer(&s, Held { free: 3, paid: 0 }, &[]),
            PayerAdmission::Unchoke(SlotKind::Paid)
        );
        assert_eq!(
            admit_payer(&s, Held { free: 1, paid: 2 }, &[]),
            PayerAdmission::Unchoke(SlotKind::Free)
        );
        // Free peers took every slot on arrival: the one served most yields.
        let holders = [
            cand(1, true, 10, t0),
            cand(2, true, 500, t0),
            cand(3, true, 0, t0),
        ];
        assert_eq!(
            admit_payer(&s, Held { free: 4, paid: 0 }, &holders),
            PayerAdmission::Replace(2, SlotKind::Paid)
        );
        // Paid slots held by payers: a free slot, still ahead of free peers.
        assert_eq!(
            admit_payer(&s, Held { free: 2, paid: 2 }, &holders[..1]),
            PayerAdmission::Replace(1, SlotKind::Free)
        );
        // Every slot held by payers: the next round decides.
        assert_eq!(
            admit_payer(&s, Held { free: 2, paid: 2 }, &[]),
            PayerAdmission::Wait
        );
        // Unlimited slots: always at once.
        assert_eq!(
            admit_payer(&Slots { total: 0, paid: 0 }, Held { free: 9, paid: 0 }, &[]),
            PayerAdmission::Unchoke(SlotKind::Free)
        );
    }

    #[test]
    fn waiting_payers_go_ahead_of_free_peers_who_keep_the_optimistic_unchoke() {
        let t0 = Instant::now();
        let terms = Terms {
            paid_slots: 2,
            min_price: 1,
            credit_window: 1 << 20,
        };
        let policy = Policy {
            algo: SeedChoker::RoundRobin,
            quota: 1 << 20,
            turn_ended: None,
            slots: Slots { total: 4, paid: 2 },
            terms: Some(terms),
            rotate_optimistic: true,
        };
        // Keys 0..4 free peers (waited longest), 10..14 payers at one price.
        let mut cands: Vec<Candidate> = (0..4)
            .chain(10..14)
            .map(|k| cand(k, false, 0, t0))
            .collect();
        let mut bidders: Vec<Bidder> = (10..14).map(|k| Bidder::new(k, 5)).collect();
        for r in 0..6 {
            let c = round(&policy, &mut cands, &mut bidders, None, r);
            let unchoked: Vec<usize> = c.paid.iter().chain(&c.free).copied().collect();
            assert_eq!(unchoked.len(), 4);
            assert!(unchoked.iter().all(|k| *k >= 10), "round {r}: {c:?}");
            let o = c.optimistic.expect("a free peer waits");
            assert!(o < 4, "the optimistic unchoke goes to a free peer: {o}");
        }
        // Free peers hold no slot: their optimistic unchoke rotates every round, even in a round
        // that would keep it otherwise.
        let keep = Policy {
            rotate_optimistic: false,
            ..policy
        };
        let c1 = round(&keep, &mut cands, &mut bidders, None, 0);
        assert!(c1.free_starved, "free peers hold no slot");
        let second = round(&keep, &mut cands, &mut bidders, c1.optimistic, 1).optimistic;
        assert!(c1.optimistic.is_some() && second.is_some() && c1.optimistic != second);
        let ten = std::time::Duration::from_secs(10);
        assert_eq!(next_round_in(ten, true), ten / 2);
        assert_eq!(next_round_in(ten, false), ten);
        // A payer that stopped keeping up is an ordinary peer again.
        bidders[0].served = 64 << 20;
        let c = round(&policy, &mut cands, &mut bidders, None, 0);
        assert!(!c.paid.contains(&10));
        // Fewer payers than slots: free peers get every slot the payers leave.
        let mut few = [Bidder::new(10, 5)];
        let c = round(&policy, &mut cands, &mut few, None, 0);
        let unchoked: Vec<usize> = c.paid.iter().chain(&c.free).copied().collect();
        assert_eq!(unchoked.len(), 4);
        assert_eq!(unchoked.iter().filter(|k| **k >= 10).count(), 1);
    }

    #[test]
    fn a_round_gives_paid_slots_first_then_free_then_one_optimistic() {
        let t0 = Instant::now();
        let policy = Policy {
            algo: SeedChoker::RoundRobin,
            quota: 1 << 20,
            turn_ended: None,
            slots: Slots { total: 3, paid: 1 },
            terms: Some(Terms {
                paid_slots: 1,
                min_price: 1,
                credit_window: 1 << 20,
            }),
            rotate_optimistic: true,
        };
        let mut cands: Vec<Candidate> = (0..6).map(|k| cand(k, false, 0, t0)).collect();
        let mut bidders = [Bidder::new(5, 10)];
        let c = round(&policy, &mut cands, &mut bidders, None, 7);
        assert_eq!(c.paid, [5]);
        assert_eq!(c.free.len(), 2);
        assert!(!c.free.contains(&5));
        let o = c
            .optimistic
            .expect("an optimistic unchoke among the waiting");
        assert!(!c.free.contains(&o) && o != 5);
        // Kept next round when not rotating and still waiting.
        let keep = Policy {
            rotate_optimistic: false,
            ..policy
        };
        let c2 = round(&keep, &mut cands, &mut bidders, Some(o), 0);
        if c2.slot_of(o).is_none() || c2.optimistic == Some(o) {
            assert_eq!(c2.optimistic, Some(o));
        }
    }

    #[test]
    fn an_optimistic_unchoke_held_unused_goes_to_a_peer_that_waits() {
        let t0 = Instant::now();
        let policy = Policy {
            algo: SeedChoker::RoundRobin,
            quota: 1 << 20,
            turn_ended: None,
            slots: Slots { total: 1, paid: 0 },
            terms: None,
            rotate_optimistic: false,
        };
        // 0 holds the slot, 1 the optimistic unchoke, 2 waits.
        let mut cands = vec![
            cand(0, true, 10, t0),
            cand(1, true, 10, t0),
            cand(2, false, 0, t0),
        ];
        let c = round(&policy, &mut cands, &mut [], Some(1), 0);
        assert_eq!(
            (c.free.as_slice(), c.optimistic),
            (&[0][..], Some(1)),
            "kept"
        );
        // 1 asks for nothing: 2 gets the optimistic unchoke though the round keeps it otherwise.
        cands[1].idle = true;
        for rng in 0..4 {
            let c = round(&policy, &mut cands, &mut [], Some(1), rng);
            assert_eq!((c.free.as_slice(), c.optimistic), (&[0][..], Some(2)));
        }
        // Nobody else waits: it keeps it.
        let c = round(&policy, &mut cands[..2], &mut [], Some(1), 0);
        assert_eq!(c.optimistic, Some(1));
    }

    #[test]
    fn unlimited_slots_unchoke_everyone_and_no_optimistic() {
        let t0 = Instant::now();
        let policy = Policy {
            algo: SeedChoker::FastestUpload,
            quota: 1,
            turn_ended: None,
            slots: Slots { total: 0, paid: 0 },
            terms: None,
            rotate_optimistic: true,
        };
        let mut cands: Vec<Candidate> = (0..4).map(|k| cand(k, false, 0, t0)).collect();
        let c = round(&policy, &mut cands, &mut [], None, 1);
        assert_eq!(c.free.len(), 4);
        assert_eq!(c.optimistic, None);
    }
}
