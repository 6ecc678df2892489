//! Whether a bid's channel, as the contract holds it, is worth paid slots (`[speed] rpc`), and
//! a small cache of what `channels(id)` said. Pure: the caller does the RPC and passes the time.
//!
//! A confirmed bid gets a credit window of service before its first voucher, and every voucher
//! is only worth what the deposit still holds until the expiry. So the seeder asks of the
//! channel: this payer's (else a stranger's key bids on someone's channel), this seeder's
//! (a voucher for another payee never pays here), at least one credit window at the bid's
//! price left in it (what the seeder serves before it sees any payment), a cap not above the
//! deposit (vouchers up to the cap are accepted), and an expiry far enough ahead to settle
//! before it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::abi::OnChainChannel;
use crate::speed::protocol::Bid;
use crate::speed::voucher::{Amount, ChannelId, Rejection};
use crate::speed::wallet::Address;

/// What the seeder asks of a bid's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// This seeder's address (the channel's payee).
    pub me: Address,
    /// Bytes served ahead of payment (`[speed] credit_window_kib`).
    pub credit_window: u64,
    /// Seconds the channel must still run (`[speed] min_channel_life_s`).
    pub min_life_s: u64,
}

/// The least the deposit must still hold for `bid`: one credit window at its price (rounded
/// up), at least one base unit (a free bid on an empty channel buys nothing either).
pub fn least_left(bid: &Bid, credit_window: u64) -> Amount {
    let owed = bid.price.saturating_mul(u128::from(credit_window));
    (owed >> 20)
        .saturating_add(u128::from(owed & ((1 << 20) - 1) != 0))
        .max(1)
}

/// The verdict on `bid` given what `channels(id)` returned, at unix time `now_s`.
pub fn judge(ch: &OnChainChannel, bid: &Bid, rules: &Rules, now_s: u64) -> Result<(), Rejection> {
    if !ch.exists() {
        return Err(Rejection::NotOnChain);
    }
    if ch.payer != bid.payer {
        return Err(Rejection::Forged);
    }
    if ch.payee != rules.me {
        return Err(Rejection::NotOurChannel);
    }
    if ch.expiry < now_s.saturating_add(rules.min_life_s) {
        return Err(Rejection::Expiring);
    }
    let left = ch.deposit.saturating_sub(ch.claimed);
    if bid.cap > ch.deposit || left < least_left(bid, rules.credit_window) {
        return Err(Rejection::Underfunded);
    }
    Ok(())
}

/// Recent `channels(id)` replies: at most `max` channels, each for `ttl` (then read again, so a
/// top-up or a claim shows within `ttl`). Failures are not cached.
#[derive(Debug)]
pub struct ChannelCache {
    max: usize,
    ttl: Duration,
    /// Each reply, when it came and its insertion number.
    entries: HashMap<ChannelId, (OnChainChannel, Instant, u64)>,
    order: VecDeque<(ChannelId, u64)>,
    next: u64,
}

impl ChannelCache {
    pub fn new(max: usize, ttl: Duration) -> ChannelCache {
        ChannelCache {
            max: max.max(1),
            ttl,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    pub fn get(&self, id: &ChannelId, now: Instant) -> Option<OnChainChannel> {
        self.entries
            .get(id)
            .filter(|(_, at, _)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(c, _, _)| *c)
    }

    /// Remembers a reply; the oldest entries go first when full.
    pub fn put(&mut self, id: ChannelId, ch: OnChainChannel, now: Instant) {
        let seq = self.next;
        self.next += 1;
        self.entries.insert(id, (ch, now, seq));
        self.order.push_back((id, seq));
        while self.entries.len() > self.max || self.order.len() > 2 * self.max {
            let Some((old, n)) = self.order.pop_front() else {
                break;
            };
            // Only the entry's latest insertion removes it.
            if self.entries.get(&old).is_some_and(|(_, _, s)| *s == n) {
                self.entries.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speed::voucher::Domain;
    use crate::speed::wallet::Wallet;

    const ME: Address = Address([0x5e; 20]);

    fn bid(payer: &Wallet, price: u128, cap: u128) -> Bid {
        let d = Domain {
            chain_id: 1,
            contract: Address([1; 20]),
        };
        Bid::sign(payer, d, ME, price, ChannelId([7; 32]), cap)
    }

    #[test]
    fn a_channel_is_judged_on_payer_payee_expiry_and_funds() {
        let payer = Wallet::from_secret([3; 32]).unwrap();
        let rules = Rules {
            me: ME,
            credit_window: 1 << 20,
            min_life_s: 3600,
        };
        let good = OnChainChannel {
            payer: payer.address(),
            expiry: 10_000,
            payee: ME,
            deposit: 1000,
            claimed: 0,
        };
        let b = bid(&payer, 100, 1000);
        assert_eq!(judge(&good, &b, &rules, 6400), Ok(()));
        let none = OnChainChannel {
            payer: Address([0; 20]),
            payee: Address([0; 20]),
            ..good
        };
        assert_eq!(judge(&none, &b, &rules, 0), Err(Rejection::NotOnChain));
        let other_payer = OnChainChannel {
            payer: Address([9; 20]),
            ..good
        };
        assert_eq!(judge(&other_payer, &b, &rules, 0), Err(Rejection::Forged));
        let other_payee = OnChainChannel {
            payee: Address([9; 20]),
            ..good
        };
        assert_eq!(
            judge(&other_payee, &b, &rules, 0),
            Err(Rejection::NotOurChannel)
        );
        assert_eq!(judge(&good, &b, &rules, 6401), Err(Rejection::Expiring));
        // 100 per MiB over a 1 MiB window: 100 must be left.
        let spent = OnChainChannel {
            claimed: 901,
            ..good
        };
        assert_eq!(judge(&spent, &b, &rules, 0), Err(Rejection::Underfunded));
        let just = OnChainChannel {
            claimed: 900,
            ..good
        };
        assert_eq!(judge(&just, &b, &rules, 0), Ok(()));
        let over_cap = bid(&payer, 100, 1001);
        assert_eq!(
            judge(&good, &over_cap, &rules, 0),
            Err(Rejection::Underfunded)
        );
        let empty = OnChainChannel { deposit: 0, ..good };
        assert_eq!(
            judge(&empty, &bid(&payer, 0, 0), &rules, 0),
            Err(Rejection::Underfunded)
        );
    }

    #[test]
    fn least_left_rounds_up_and_is_never_zero() {
        let payer = Wallet::from_secret([3; 32]).unwrap();
        assert_eq!(least_left(&bid(&payer, 0, 0), 1 << 20), 1);
        assert_eq!(least_left(&bid(&payer, 3, 0), 1 << 19), 2);
        assert_eq!(
            least_left(&bid(&payer, u128::MAX, 0), 1 << 25),
            (u128::MAX >> 20) + 1
        );
    }

    #[test]
    fn the_cache_is_bounded_and_expires() {
        let ch = OnChainChannel {
            payer: ME,
            expiry: 1,
            payee: ME,
            deposit: 1,
            claimed: 0,
        };
        let t = Instant::now();
        let mut c = ChannelCache::new(2, Duration::from_secs(60));
        for i in 0..5u8 {
            c.put(ChannelId([i; 32]), ch, t);
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&ChannelId([4; 32]), t).is_some());
        assert!(c.get(&ChannelId([0; 32]), t).is_none());
        assert!(
            c.get(&ChannelId([4; 32]), t + Duration::from_secs(60))
                .is_none()
        );
        for _ in 0..10 {
            c.put(ChannelId([4; 32]), ch, t);
        }
        assert!(c.order.len() <= 4);
        assert!(c.get(&ChannelId([4; 32]), t).is_some());
    }
}
