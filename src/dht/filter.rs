//! Which incoming DHT queries our node answers: every query comes from a stranger over UDP, so
//! each source address and the node as a whole get a rate, and a source that keeps asking past
//! its rate is not answered at all for a while (as libtorrent's DHT blocks a node that sends
//! more than `dht_block_ratelimit` queries a second, for `dht_block_timeout`).
//!
//! [`QueryLimiter`] is the pure decision (explicit `now`, unit-tested); [`QueryFilter`] hands it
//! to mainline's server, which asks it before it answers anything (ping, find_node, get_peers,
//! announce_peer, BEP 44 get/put) and drops what it refuses without a reply. What a refused
//! query costs us is reading one datagram; no reply means no amplification, whatever address
//! the datagram claims to come from, and the node-wide rate bounds what the node sends in
//! replies even when a flood spoofs a new address per datagram.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mainline::{RequestFilter, RequestSpecific};

/// How fast a node answers queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Queries a second one source address is answered, on average (`dht.max_queries_per_ip`).
    /// Default 5, libtorrent's `dht_block_ratelimit`.
    pub per_ip_per_s: u32,
    /// Queries one source may send at once before its rate counts: a node looking something up
    /// asks us a few things in a row. Default 20.
    pub per_ip_burst: u32,
    /// How long a source that went past its rate is not answered at all. Default 5 min,
    /// libtorrent's `dht_block_timeout`.
    pub block: Duration,
    /// Queries a second the node answers over all sources (`dht.max_queries`). Default 500:
    /// a few hundred KiB/s of replies.
    pub total_per_s: u32,
    /// Source addresses remembered at once; past it, addresses idle long enough to have their
    /// whole burst back are forgotten, and while none is, new addresses are not answered.
    /// Default 16 384 (about 1 MiB).
    pub max_sources: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            per_ip_per_s: 5,
            per_ip_burst: 20,
            block: Duration::from_secs(5 * 60),
            total_per_s: 500,
            max_sources: 16_384,
        }
    }
}

/// What the node does with one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Verdict {
    Answer,
    /// Its source went past its rate now (it is blocked from now on).
    OverRate,
    /// Its source is blocked: it went past its rate less than `block` ago.
    Blocked,
    /// The node answered `total_per_s` queries in the last second already.
    NodeBusy,
    /// A new source while `max_sources` are remembered and none can be forgotten yet.
    TooManySources,
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [
        Verdict::Answer,
        Verdict::OverRate,
        Verdict::Blocked,
        Verdict::NodeBusy,
        Verdict::TooManySources,
    ];

    /// Its label in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Answer => "answered",
            Verdict::OverRate => "over_rate",
            Verdict::Blocked => "blocked",
            Verdict::NodeBusy => "node_busy",
            Verdict::TooManySources => "too_many_sources",
        }
    }
}

/// Incoming queries counted by [`Verdict`] (shared with the node's statistics).
#[derive(Debug, Default)]
pub struct QueryCounts([AtomicU64; Verdict::ALL.len()]);

impl QueryCounts {
    pub fn count(&self, v: Verdict) {
        self.0[v as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, v: Verdict) -> u64 {
        self.0[v as usize].load(Ordering::Relaxed)
    }
}

/// A token bucket: `tokens` refill at `rate` a second up to `cap`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(cap: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(cap),
            at: now,
        }
    }

    fn refill(&mut self, rate: u32, cap: u32, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * f64::from(rate)).min(f64::from(cap));
        self.at = now;
    }

    /// Takes one token if there is one.
    fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Source {
    bucket: Bucket,
    blocked_until: Option<Instant>,
}

/// The rates of a node's incoming queries.
#[derive(Debug)]
pub struct QueryLimiter {
    limits: QueryLimits,
    sources: HashMap<Ipv4Addr, Source>,
    total: Bucket,
    /// When the table was last swept for forgettable sources (at most once a second).
    swept: Option<Instant>,
}

impl QueryLimiter {
    pub fn new(limits: QueryLimits, now: Instant) -> QueryLimiter {
        QueryLimiter {
            limits,
            sources: HashMap::new(),
            total: Bucket::full(limits.total_per_s, now),
            swept: None,
        }
    }

    /// Source addresses remembered now.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Whether to answer one query from `ip` arriving at `now`. A query that is not answered
    /// takes nothing from the node's rate, and one refused for the node's rate takes nothing
    /// from its source's.
    pub fn check(&mut self, ip: Ipv4Addr, now: Instant) -> Verdict {
        let l = self.limits;
        if !self.sources.contains_key(&ip) && self.sources.len() >= l.max_sources {
            self.sweep(now);
            if self.sources.len() >= l.max_sources {
                return Verdict::TooManySources;
            }
        }
        let source = self.sources.entry(ip).or_insert(Source {
            bucket: Bucket::full(l.per_ip_burst, now),
            blocked_until: None,
        });
        if let Some(until) = source.blocked_until {
            if now < until {
                return Verdict::Blocked;
            }
            // Served its time: a new source again.
            source.blocked_until = None;
            source.bucket = Bucket::full(l.per_ip_burst, now);
        }
        source.bucket.refill(l.per_ip_per_s, l.per_ip_burst, now);
        if source.bucket.tokens < 1.0 {
            source.blocked_until = Some(now + l.block);
            return Verdict::OverRate;
        }
        self.total.refill(l.total_per_s, l.total_per_s, now);
        if !self.total.take() {
            return Verdict::NodeBusy;
        }
        source.bucket.take();
        Verdict::Answer
    }

    /// Forgets sources that are not blocked and have their whole burst back (they would start
    /// from a full bucket anyway), at most once a second.
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.swept = Some(now);
        let l = self.limits;
        self.sources.retain(|_, s| {
            if s.blocked_until.is_some_and(|u| now < u) {
                return true;
            }
            let mut b = s.bucket;
            b.refill(l.per_ip_per_s, l.per_ip_burst, now);
            b.tokens < f64::from(l.per_ip_burst)
        });
    }
}

/// The limiter as mainline's request filter: shared by the server's clones, counting every
/// query by its verdict in `counts` (the node's statistics hold them).
#[derive(Debug, Clone)]
pub struct QueryFilter {
    limiter: Arc<Mutex<QueryLimiter>>,
    counts: Arc<QueryCounts>,
}

impl QueryFilter {
    pub fn new(limits: QueryLimits, counts: Arc<QueryCounts>) -> QueryFilter {
        QueryFilter {
            limiter: Arc::new(Mutex::new(QueryLimiter::new(limits, Instant::now()))),
            counts,
        }
    }
}

impl RequestFilter for QueryFilter {
    fn allow_request(&self, _request: &RequestSpecific, from: SocketAddrV4) -> bool {
        let verdict = match self.limiter.lock() {
            Ok(mut l) => l.check(*from.ip(), Instant::now()),
            // A panic elsewhere while holding the lock: answer nothing rather than unbounded.
            Err(_) => Verdict::NodeBusy,
        };
        self.counts.count(verdict);
        verdict == Verdict::Answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> QueryLimits {
        QueryLimits {
            per_ip_per_s: 5,
            per_ip_burst: 20,
            block: Duration::from_secs(300),
            total_per_s: 1000,
            max_sources: 4,
        }
    }

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut q = QueryLimiter::new(limits(), t0);
        for i in 0..20 {
            assert_eq!(
                q.check(ip(1), t0),
                Verdict::Answer,
                "query {i} of the burst"
            );
        }
        // One second later five more have been earned, and no more.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..5 {
            assert_eq!(q.check(ip(1), t1), Verdict::Answer, "query {i} of the rate");
        }
        assert_eq!(q.check(ip(1), t1), Verdict::OverRate);
        // Another source is not held to the first one's rate.
        assert_eq!(q.check(ip(2), t1), Verdict::Answer);
    }

    #[test]
    fn a_source_past_its_rate_is_blocked_for_the_block_time_then_starts_afresh() {
        let t0 = Instant::now();
        let mut q = QueryLimiter::new(limits(), t0);
        for _ in 0..20 {
            q.check(ip(1), t0);
        }
        assert_eq!(q.check(ip(1), t0), Verdict::OverRate);
        // Blocked for the whole block time, however slowly it asks.
        for s in [1, 10, 100, 299] {
            assert_eq!(
                q.check(ip(1), t0 + Duration::from_secs(s)),
                Verdict::Blocked,
                "{s} s on"
            );
        }
        // Then it is a new source again: its burst, then its rate.
        let back = t0 + Duration::from_secs(300);
        for i in 0..20 {
            assert_eq!(
                q.check(ip(1), back),
                Verdict::Answer,
                "query {i} after the block"
            );
        }
        assert_eq!(q.check(ip(1), back), Verdict::OverRate);
    }

    #[test]
    fn the_node_answers_at_most_its_total_rate_and_refusing_for_it_costs_a_source_nothing() {
        let mut l = limits();
        l.total_per_s = 10;
        l.max_sources = 100;
        let t0 = Instant::now();
        let mut q = QueryLimiter::new(l, t0);
        let answered = (0..40u8)
            .filter(|&n| q.check(ip(n), t0) == Verdict::Answer)
            .count();
        assert_eq!(answered, 10);
        assert_eq!(q.check(ip(200), t0), Verdict::NodeBusy);
        // A source refused for the node's rate kept its burst.
        let t1 = t0 + Duration::from_secs(2);
        let again = (0..20)
            .filter(|_| q.check(ip(39), t1) == Verdict::Answer)
            .count();
        assert_eq!(
            again, 10,
            "the node's burst (a second of its rate) binds, not the source's"
        );
    }

    #[test]
    fn the_table_of_sources_is_bounded_and_forgets_idle_sources() {
        let t0 = Instant::now();
        let mut q = QueryLimiter::new(limits(), t0);
        for n in 1..=4 {
            assert_eq!(q.check(ip(n), t0), Verdict::Answer);
        }
        assert_eq!(q.check(ip(5), t0), Verdict::TooManySources);
        assert_eq!(q.sources(), 4);
        // Not yet: each of the four has used a query it has not earned back (1/5 s).
        let soon = t0 + Duration::from_millis(100);
        assert_eq!(q.check(ip(5), soon), Verdict::TooManySources);
        // Once they have their burst back they are forgotten (a sweep a second at most).
        let later = t0 + Duration::from_secs(2);
        assert_eq!(q.check(ip(5), later), Verdict::Answer);
        assert_eq!(q.sources(), 1);
    }

    #[test]
    fn a_blocked_source_is_never_forgotten_while_blocked() {
        let t0 = Instant::now();
        let mut q = QueryLimiter::new(limits(), t0);
        for _ in 0..21 {
            q.check(ip(1), t0);
        }
        let later = t0 + Duration::from_secs(10);
        for n in 2..=4 {
            assert_eq!(q.check(ip(n), later), Verdict::Answer);
        }
        // Full: only ip(1) might go, and it is blocked, so it stays and stays blocked.
        let more = later + Duration::from_secs(10);
        assert_eq!(q.check(ip(9), more), Verdict::Answer, "ip 2..4 forgotten");
        assert_eq!(q.check(ip(1), more), Verdict::Blocked);
    }
}
