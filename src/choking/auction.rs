//! Auction choking: which bidders get the paid upload slots this round. Pure decision code, like
//! [`super::seed`], which decides the free slots.
//!
//! A bidder is *eligible* when its price is at least the seeder's minimum and its payments keep
//! up with the bytes served: `paid ≥ price × (served − credit_window) / MiB`. Eligible bidders
//! share the `paid_slots` in proportion to their price: bidder *i* is entitled to
//! `min(1, paid_slots × priceᵢ / Σ price)` of a slot, and a credit counter turns that fraction
//! into whole rounds (a bidder entitled to ½ holds a paid slot every other round). So a higher
//! price always buys more service — with a winner-takes-all auction two bidders and two slots
//! would be served alike whatever they bid, and nobody would bid above the minimum.
//!
//! Whatever the paid slots do not use goes to the free pool, which the normal seed choker fills
//! from everyone else: bidders that are not eligible (or not picked this round) compete there as
//! ordinary peers. Nobody is cut off for not paying.
//!
//! ```
//! use ringseed::choking::auction::{Bidder, Terms, allocate};
//! let terms = Terms { paid_slots: 2, min_price: 1, credit_window: 1 << 20 };
//! let mut b = [Bidder::new(1, 30), Bidder::new(2, 10)];
//! // Entitlements: 1 slot and ½ slot: bidder 1 every round, bidder 2 every other round.
//! let rounds: Vec<Vec<usize>> = (0..4).map(|_| allocate(&terms, &mut b)).collect();
//! assert!(rounds.iter().all(|r| r.contains(&1)));
//! assert_eq!(rounds.iter().filter(|r| r.contains(&2)).count(), 2);
//! ```

/// Base units of the payment token, as vouchers count them (`speed::voucher::Amount`; kept as
/// its own alias so choking depends on nothing of the speed layer).
pub type Amount = u128;

const MIB: u128 = 1 << 20;
/// One whole slot-round in credit units (credits are thousandths of a slot).
const WHOLE: u64 = 1000;

/// The seeder's auction settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub paid_slots: usize,
    /// Least price per MiB that is eligible.
    pub min_price: Amount,
    /// Bytes served ahead of payment.
    pub credit_window: u64,
}

/// One interested peer that has bid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bidder {
    /// Caller's handle for the peer.
    pub key: usize,
    /// Price per MiB.
    pub price: Amount,
    /// Payload bytes served to it since its bid.
    pub served: u64,
    /// Amount accepted (durably) from it since its bid.
    pub paid: Amount,
    /// Accumulated slot entitlement in thousandths; kept by the caller between rounds.
    pub credit: u64,
    /// Accumulated priority over free peers for the other slots, in thousandths; kept by the
    /// caller between rounds (see [`ahead_of_free`]).
    pub priority: u64,
}

impl Bidder {
    pub fn new(key: usize, price: Amount) -> Bidder {
        Bidder {
            key,
            price,
            served: 0,
            paid: 0,
            credit: 0,
            priority: 0,
        }
    }
}

/// What `bytes` cost at `price` per MiB (rounded down; saturating, never overflowing).
pub fn cost(price: Amount, bytes: u64) -> Amount {
    price.saturating_mul(u128::from(bytes)) / MIB
}

/// Whether payments keep up with the bytes served: everything beyond the credit window is paid.
pub fn keeps_up(b: &Bidder, credit_window: u64) -> bool {
    b.paid >= cost(b.price, b.served.saturating_sub(credit_window))
}

/// Whether `b` may hold a paid slot at all.
pub fn eligible(terms: &Terms, b: &Bidder) -> bool {
    b.price >= terms.min_price && b.price > 0 && keeps_up(b, terms.credit_window)
}

/// Picks this round's paid-slot holders (keys), updating each bidder's credit. Call once per
/// choking round with every interested bidder; ineligible bidders lose their credit.
pub fn allocate(terms: &Terms, bidders: &mut [Bidder]) -> Vec<usize> {
    // Shares in f64: a sum of u128 prices would saturate at an absurd bid (u128::MAX) and round
    // every honest bidder's share down to nothing.
    let total: f64 = bidders
        .iter()
        .filter(|b| eligible(terms, b))
        .map(|b| b.price as f64)
        .sum();
    if terms.paid_slots == 0 || total == 0.0 {
        for b in bidders.iter_mut() {
            b.credit = 0;
        }
        return Vec::new();
    }
    let slots = terms.paid_slots as f64;
    let mut ready: Vec<usize> = Vec::new();
    for (i, b) in bidders.iter_mut().enumerate() {
        if !eligible(terms, b) {
            b.credit = 0;
            continue;
        }
        // min(1, slots × price / total) in thousandths.
        let share = ((b.price as f64 * slots / total).min(1.0) * WHOLE as f64) as u64;
        // Capped at two rounds' worth: a bidder passed over when credits collide catches up
        // once, not forever.
        b.credit = (b.credit + share.max(1)).min(2 * WHOLE);
        if b.credit >= WHOLE {
            ready.push(i);
        }
    }
    // More ready than slots (rounding or collisions): the most credit first, then the higher
    // price, then the caller's order.
    ready.sort_by(|&x, &y| {
        let (a, b) = (&bidders[x], &bidders[y]);
        b.credit.cmp(&a.credit).then(b.price.cmp(&a.price))
    });
    ready.truncate(terms.paid_slots);
    ready
        .into_iter()
        .map(|i| {
            bidders[i].credit -= WHOLE;
            bidders[i].key
        })
        .collect()
}

/// The bidders that go ahead of free peers for the slots left after the paid ones, this round
/// (keys; `paid` are this round's paid-slot holders, left out). An eligible bidder at the highest
/// price goes ahead every round, one at a third of it every third round: a higher price always
/// buys more, even while payers are fewer than the slots. Ineligible bidders lose their
/// priority.
pub fn ahead_of_free(terms: &Terms, bidders: &mut [Bidder], paid: &[usize]) -> Vec<usize> {
    let top = bidders
        .iter()
        .filter(|b| eligible(terms, b))
        .map(|b| b.price)
        .max()
        .unwrap_or(0);
    let mut ahead = Vec::new();
    for b in bidders.iter_mut() {
        if !eligible(terms, b) || top == 0 {
            b.priority = 0;
            continue;
        }
        if paid.contains(&b.key) {
            continue;
        }
        // Rounded up, so a third of the top price is ahead every third round, not every fourth.
        let share = ((b.price as f64 / top as f64) * WHOLE as f64).ceil() as u64;
        b.priority = (b.priority + share.max(1)).min(2 * WHOLE);
        if b.priority >= WHOLE {
            b.priority -= WHOLE;
            ahead.push(b.key);
        }
    }
    ahead
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choking::{Candidate, SeedChoker};
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    #[test]
    fn the_highest_price_goes_ahead_every_round_a_third_of_it_every_third() {
        let terms = Terms {
            paid_slots: 0,
            min_price: 1,
            credit_window: 0,
        };
        let mut b = [Bidder::new(1, 30), Bidder::new(2, 10), Bidder::new(3, 0)];
        let mut count = [0; 4];
        for _ in 0..9 {
            for k in ahead_of_free(&terms, &mut b, &[]) {
                count[k] += 1;
            }
        }
        assert_eq!(
            count,
            [0, 9, 3, 0],
            "price 30 every round, 10 every third, 0 never"
        );
        // A paid-slot holder is not counted again.
        assert_eq!(ahead_of_free(&terms, &mut b, &[1]), Vec::<usize>::new());
    }

    #[test]
    fn payment_must_keep_up_beyond_the_window() {
        let mut b = Bidder::new(1, 2 << 20); // 2 << 20 units per MiB = 2 units per byte
        b.served = 1000;
        assert!(keeps_up(&b, 1000), "inside the window nothing is owed");
        b.served = 1500;
        assert!(!keeps_up(&b, 1000));
        b.paid = 1000;
        assert!(keeps_up(&b, 1000));
        assert_eq!(cost(u128::MAX, u64::MAX), u128::MAX / MIB);
    }

    #[test]
    fn ineligible_bidders_get_no_paid_slot() {
        let terms = Terms {
            paid_slots: 2,
            min_price: 10,
            credit_window: 0,
        };
        let mut cheap = Bidder::new(1, 9);
        let mut behind = Bidder::new(2, 100);
        behind.served = 1 << 20;
        for _ in 0..5 {
            assert!(allocate(&terms, &mut [cheap, behind]).is_empty());
        }
        cheap.price = 100;
        behind.paid = 100;
        let mut got = allocate(&terms, &mut [cheap, behind]);
        got.sort();
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn more_bidders_than_slots_share_in_proportion_to_price() {
        let terms = Terms {
            paid_slots: 1,
            min_price: 1,
            credit_window: 0,
        };
        let mut b = vec![Bidder::new(0, 3), Bidder::new(1, 1)];
        let mut held = [0; 2];
        for _ in 0..400 {
            let got = allocate(&terms, &mut b);
            assert!(got.len() <= 1);
            for k in got {
                held[k] += 1;
            }
        }
        // 3/4 and 1/4 of the rounds, give or take the one round a collision defers.
        assert!(
            (299..=300).contains(&held[0]) && (99..=100).contains(&held[1]),
            "{held:?}"
        );
    }

    /// A swarm simulated in rounds: the seeder's bandwidth per round is shared equally by the
    /// unchoked peers (as TCP shares a link); payers pay exactly for what they got (or stop);
    /// free peers leave once complete.
    struct Sim {
        bytes: HashMap<usize, u64>,
        rounds_to_complete_all_free: Option<usize>,
    }

    fn simulate(prices: &[(usize, Amount, bool)], free: &[usize], need: u64) -> Sim {
        let terms = Terms {
            paid_slots: 2,
            min_price: 1,
            credit_window: 256 << 10,
        };
        let per_round: u64 = 4 << 20;
        let t0 = Instant::now();
        let mut bidders: Vec<Bidder> = prices.iter().map(|&(k, p, _)| Bidder::new(k, p)).collect();
        let pays: HashMap<usize, bool> = prices.iter().map(|&(k, _, p)| (k, p)).collect();
        let mut bytes: HashMap<usize, u64> = HashMap::new();
        let mut unchoked: HashMap<usize, (bool, Instant, u64)> = HashMap::new();
        let mut done = None;
        for round in 0..10_000 {
            let now = t0 + Duration::from_secs(10 * round as u64);
            let live_free: Vec<usize> = free
                .iter()
                .copied()
                .filter(|k| bytes.get(k).copied().unwrap_or(0) < need)
                .collect();
            if live_free.is_empty() {
                done = Some(round);
                break;
            }
            let mut cands: Vec<Candidate> = bidders
                .iter()
                .map(|b| b.key)
                .chain(live_free.iter().copied())
                .map(|k| {
                    let (on, since, up) = unchoked.get(&k).copied().unwrap_or((false, t0, 0));
                    Candidate {
                        key: k,
                        unchoked: on,
                        since,
                        uploaded_since_unchoke: up,
                        recent_upload: 0,
                        idle: false,
                    }
                })
                .collect();
            let policy = crate::choking::Policy {
                algo: SeedChoker::RoundRobin,
                quota: 4 << 20,
                turn_ended: None,
                slots: crate::choking::Slots { total: 4, paid: 2 },
                terms: Some(terms),
                rotate_optimistic: false,
            };
            let choice = crate::choking::round(&policy, &mut cands, &mut bidders, None, 0);
            let pick: Vec<usize> = choice.paid.into_iter().chain(choice.free).collect();
            let share = per_round / pick.len().max(1) as u64;
            for c in &cands {
                let on = pick.contains(&c.key);
                let entry = unchoked.entry(c.key).or_insert((false, t0, 0));
                if on != entry.0 {
                    *entry = (on, now, 0);
                }
                if on {
                    entry.2 += share;
                    *bytes.entry(c.key).or_insert(0) += share;
                    if let Some(b) = bidders.iter_mut().find(|b| b.key == c.key) {
                        b.served += share;
                        if pays[&b.key] {
                            b.paid = cost(b.price, b.served);
                        }
                    }
                }
            }
        }
        Sim {
            bytes,
            rounds_to_complete_all_free: done,
        }
    }

    #[test]
    fn under_contention_payers_get_more_and_free_peers_still_complete() {
        // 4 slots, 2 paid; payers 100 and 300 at prices 1x and 3x; 6 free peers.
        let free: Vec<usize> = (0..6).collect();
        let sim = simulate(&[(100, 1000, true), (300, 3000, true)], &free, 64 << 20);
        assert!(
            sim.rounds_to_complete_all_free.is_some(),
            "a free peer starved"
        );
        let (low, high) = (sim.bytes[&100], sim.bytes[&300]);
        let best_free = free.iter().map(|k| sim.bytes[k]).max().unwrap_or(0);
        assert!(high > low, "higher price {high} vs lower {low}");
        assert!(low > best_free, "payer {low} vs best free peer {best_free}");
        // With no payers at all, the same free peers finish sooner: payers do take service.
        let alone = simulate(&[], &free, 64 << 20);
        assert!(alone.rounds_to_complete_all_free < sim.rounds_to_complete_all_free);
    }

    #[test]
    fn a_payer_who_stops_paying_drops_to_the_free_pool_but_is_still_served() {
        let free: Vec<usize> = (0..6).collect();
        let sim = simulate(&[(100, 1000, true), (300, 3000, false)], &free, 64 << 20);
        assert!(sim.rounds_to_complete_all_free.is_some());
        let (payer, deadbeat) = (sim.bytes[&100], sim.bytes[&300]);
        assert!(deadbeat > 0, "not cut off");
        assert!(payer > deadbeat, "payer {payer} vs non-payer {deadbeat}");
    }
}
