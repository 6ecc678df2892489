//! Lock-free token buckets for upload rate limits.
//!
//! Several workers draw from one bucket (the global limit, a torrent's limit) without locks: the
//! token count is one atomic, refilled by whichever caller notices that time has passed.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// A token bucket in bytes. A rate of 0 means unlimited.
#[derive(Debug)]
pub struct TokenBucket {
    rate: AtomicU64,
    tokens: AtomicI64,
    /// Nanoseconds since `epoch` at the last refill.
    refilled_at: AtomicU64,
    epoch: Instant,
}

impl TokenBucket {
    pub fn new(bytes_per_sec: u64) -> Self {
        TokenBucket {
            rate: AtomicU64::new(bytes_per_sec),
            tokens: AtomicI64::new(bytes_per_sec as i64 / 10),
            refilled_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Changes the rate (0 = unlimited); takes effect at the next refill.
    pub fn set_rate(&self, bytes_per_sec: u64) {
        // Relaxed: a rate change need not be ordered with anything else.
        self.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Takes `n` tokens if available. Burst is capped at 100 ms worth of rate (at least `n`, so
    /// one batch larger than the burst still passes eventually).
    pub fn try_take(&self, n: u64, now: Instant) -> bool {
        let rate = self.rate();
        if rate == 0 {
            return true;
        }
        self.refill(rate, n, now);
        // Relaxed throughout: the bucket protects no other memory, only a count.
        let before = self.tokens.fetch_sub(n as i64, Ordering::Relaxed);
        if before >= n as i64 {
            true
        } else {
            self.tokens.fetch_add(n as i64, Ordering::Relaxed);
            false
        }
    }

    /// Takes `n` tokens whether or not they are there: bytes that must go out now (a metadata
    /// answer) still count, and whoever asks next waits for the debt to be paid.
    pub fn charge(&self, n: u64, now: Instant) {
        let rate = self.rate();
        if rate == 0 {
            return;
        }
        self.refill(rate, n, now);
        self.tokens.fetch_sub(n as i64, Ordering::Relaxed);
    }

    /// Returns tokens taken by [`try_take`](Self::try_take) but not used.
    pub fn give_back(&self, n: u64) {
        if self.rate() != 0 {
            self.tokens.fetch_add(n as i64, Ordering::Relaxed);
        }
    }

    fn refill(&self, rate: u64, n: u64, now: Instant) {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let last = self.refilled_at.load(Ordering::Relaxed);
        if now_ns <= last {
            return;
        }
        // Only the caller that wins the exchange adds the tokens for this interval.
        if self
            .refilled_at
            .compare_exchange(last, now_ns, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let add = (u128::from(now_ns - last) * u128::from(rate) / 1_000_000_000) as i64;
        let cap = (rate / 10).max(n) as i64;
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + add).min(cap))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn limits_to_the_rate() {
        let b = TokenBucket::new(1_000_000);
        let t0 = Instant::now();
        let mut taken = 0u64;
        // Simulate 2 s in 1 ms steps, asking for 16 KiB each step.
        for ms in 0..2000 {
            if b.try_take(16384, t0 + Duration::from_millis(ms)) {
                taken += 16384;
            }
        }
        assert!((1_900_000..=2_300_000).contains(&taken), "{taken}");
        let unlimited = TokenBucket::new(0);
        assert!(unlimited.try_take(u64::MAX / 2, t0));
    }

    #[test]
    fn a_charge_is_a_debt_the_next_taker_waits_for() {
        let b = TokenBucket::new(100_000);
        let t0 = Instant::now();
        b.charge(50_000, t0);
        // The 10 000 of burst and the 50 000 charged: 40 000 owed.
        assert!(!b.try_take(1, t0));
        assert!(!b.try_take(1, t0 + Duration::from_millis(350)));
        assert!(b.try_take(1, t0 + Duration::from_millis(450)));
        TokenBucket::new(0).charge(u64::MAX / 2, t0);
    }
}
