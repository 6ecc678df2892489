//! How many fresh credit windows one network address may open. A connection's first bid gets a
//! credit window of paid-slot service before any payment, and keys and channel ids cost
//! nothing: without a bound a peer could reconnect for window after window it never pays for,
//! and each window's channels could become ledger rows. Each address (an IPv4 address, or an
//! IPv6 /56, what one subscriber usually holds) gets a token bucket: `burst` windows at once,
//! then one per `refill`. Pure: the caller passes the time.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ringseed::speed::admission::Admission;
//! let mut a = Admission::new(2, Duration::from_secs(60), 1000);
//! let (ip, t) = ("192.0.2.7".parse().unwrap(), Instant::now());
//! assert!(a.admit(ip, t) && a.admit(ip, t));
//! assert!(!a.admit(ip, t), "the burst is spent");
//! assert!(a.admit(ip, t + Duration::from_secs(60)), "one more a minute later");
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Fresh credit windows one address may open at once.
pub const BURST: u32 = 8;
/// Then one more per this long (12 an hour).
pub const REFILL: Duration = Duration::from_secs(300);
/// Addresses tracked at once. Beyond, those whose bucket is full again are forgotten, and if
/// that is not enough the eighth that spent their allowance longest ago (a table nobody can
/// fill to lock new addresses out).
pub const MAX_ADDRESSES: usize = 65_536;

/// The bucket key: an IPv4 address, or the /56 prefix of an IPv6 address (an IPv4-mapped
/// IPv6 address counts as its IPv4 address). A /64 would let one subscriber's /56 count as 256
/// addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddressKey {
    V4([u8; 4]),
    V6Prefix([u8; 7]),
}

impl AddressKey {
    fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4.octets()),
                None => {
                    let mut p = [0u8; 7];
                    p.copy_from_slice(&v6.octets()[..7]);
                    AddressKey::V6Prefix(p)
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Whole tokens available at `at`.
    tokens: u32,
    at: Instant,
}

#[derive(Debug)]
pub struct Admission {
    burst: u32,
    refill: Duration,
    max_addresses: usize,
    buckets: HashMap<AddressKey, Bucket>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(BURST, REFILL, MAX_ADDRESSES)
    }
}

impl Admission {
    pub fn new(burst: u32, refill: Duration, max_addresses: usize) -> Admission {
        Admission {
            burst: burst.max(1),
            refill: refill.max(Duration::from_millis(1)),
            max_addresses: max_addresses.max(1),
            buckets: HashMap::new(),
        }
    }

    /// The bucket brought up to `now`: whole tokens earned since `at`, the remainder kept.
    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(b.at);
        let earned = (elapsed.as_nanos() / self.refill.as_nanos()).min(u128::from(self.burst));
        let tokens = (u128::from(b.tokens) + earned).min(u128::from(self.burst)) as u32;
        if tokens == self.burst {
            Bucket { tokens, at: now }
        } else {
            Bucket {
                tokens,
                at: b.at + self.refill * earned as u32,
            }
        }
    }

    /// Takes one from `ip`'s allowance; `false` when it has none left.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = AddressKey::of(ip);
        let bucket = match self.buckets.get(&key) {
            Some(b) => self.refilled(*b, now),
            None => {
                if self.buckets.len() >= self.max_addresses {
                    self.make_room(now);
                }
                Bucket {
                    tokens: self.burst,
                    at: now,
                }
            }
        };
        if bucket.tokens == 0 {
            self.buckets.insert(key, bucket);
            return false;
        }
        self.buckets.insert(
            key,
            Bucket {
                tokens: bucket.tokens - 1,
                ..bucket
            },
        );
        true
    }

    /// Gives back what `admit` took from `ip` (its bid was refused after all: it opened no
    /// window).
    pub fn refund(&mut self, ip: IpAddr) {
        if let Some(b) = self.buckets.get_mut(&AddressKey::of(ip)) {
            b.tokens = (b.tokens + 1).min(self.burst);
        }
    }

    /// Drops the addresses whose allowance is whole again (they are as if never seen); if that
    /// frees less than an eighth of the table, also those whose last refill is oldest, so each
    /// pass costs O(n log n) and buys room for n/8 new addresses.
    fn make_room(&mut self, now: Instant) {
        let (burst, refill) = (self.burst, self.refill);
        self.buckets.retain(|_, b| {
            let earned = now.saturating_duration_since(b.at).as_nanos() / refill.as_nanos();
            u128::from(b.tokens) + earned < u128::from(burst)
        });
        let target = self.max_addresses - self.max_addresses.div_ceil(8);
        if self.buckets.len() > target {
            let mut ages: Vec<(Instant, AddressKey)> =
                self.buckets.iter().map(|(k, b)| (b.at, *k)).collect();
            ages.sort_unstable_by_key(|(at, _)| *at);
            for (_, k) in ages.iter().take(self.buckets.len() - target) {
                self.buckets.remove(k);
            }
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_one_per_refill_and_never_more_than_the_burst() {
        let t = Instant::now();
        let mut a = Admission::new(3, Duration::from_secs(10), 100);
        let x = ip("198.51.100.1");
        assert_eq!((0..5).filter(|_| a.admit(x, t)).count(), 3);
        assert!(!a.admit(x, t + Duration::from_secs(9)));
        assert!(a.admit(x, t + Duration::from_secs(10)));
        assert!(!a.admit(x, t + Duration::from_secs(19)));
        assert!(a.admit(x, t + Duration::from_secs(20)));
        // A long silence earns the burst back, not more.
        let later = t + Duration::from_secs(10_000);
        assert_eq!((0..10).filter(|_| a.admit(x, later)).count(), 3);
        // Another address has its own allowance.
        assert!(a.admit(ip("198.51.100.2"), t));
    }

    #[test]
    fn ipv6_subscribers_share_their_56_and_mapped_ipv4_is_ipv4() {
        let t = Instant::now();
        let mut a = Admission::new(2, Duration::from_secs(10), 100);
        assert!(a.admit(ip("2001:db8:1:2::1"), t));
        assert!(a.admit(ip("2001:db8:1:2:ffff::9"), t));
        assert!(!a.admit(ip("2001:db8:1:2::77"), t), "same /64");
        assert!(
            !a.admit(ip("2001:db8:1:ff::1"), t),
            "another /64 of the same /56"
        );
        assert!(a.admit(ip("2001:db8:1:100::1"), t), "another /56");
        assert!(a.admit(ip("192.0.2.1"), t));
        assert!(a.admit(ip("::ffff:192.0.2.1"), t));
        assert!(
            !a.admit(ip("192.0.2.1"), t),
            "mapped and plain are one address"
        );
    }

    #[test]
    fn the_table_is_bounded_and_cannot_be_filled_to_lock_others_out() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut a = Admission::new(2, s(100), 16);
        for i in 0..16u8 {
            let at = t + s(u64::from(i));
            assert!(a.admit(ip(&format!("10.0.0.{i}")), at));
            assert!(a.admit(ip(&format!("10.0.0.{i}")), at));
        }
        assert_eq!(a.tracked(), 16);
        // Full of addresses that spent their allowance: a newcomer still gets in, and the two
        // that spent theirs longest ago are forgotten to make room.
        assert!(a.admit(ip("10.0.1.1"), t + s(20)));
        assert!(a.tracked() <= 16);
        assert!(
            a.admit(ip("10.0.0.0"), t + s(20)),
            "forgotten, so whole again"
        );
        assert!(
            !a.admit(ip("10.0.0.15"), t + s(20)),
            "still remembered and spent"
        );
        // Addresses whose allowance is whole again go first.
        let later = t + s(10_000);
        for i in 0..40u8 {
            assert!(a.admit(ip(&format!("10.0.2.{i}")), later));
        }
        assert!(a.tracked() <= 16);
    }
}
