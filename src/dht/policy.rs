//! The DHT's pure decisions: which torrents may use it at all, when a torrent looks up peers and
//! announces itself, and which of the addresses a lookup returned are kept. No I/O, no clock of
//! its own (the caller passes `now`), so every rule is unit-tested here.

use std::collections::HashSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Whether a torrent may touch the DHT: announce itself or look up peers. BEP 27: a private
/// torrent (`private=1` in its info dictionary) gets peers only from its trackers. This is the
/// one place that decides it; every DHT path (the per-torrent loop, a magnet's lookups once its
/// metadata says private) asks here.
pub fn may_use_dht(private: bool) -> bool {
    !private
}

/// The bounds and intervals of the DHT's work. Every figure is a bound on what strangers can
/// make us do or hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtLimits {
    /// Peers taken from one lookup (distinct addresses, over all the replies it got); the rest
    /// are dropped. Default 200: ten nodes' worth of BEP 5's usual reply.
    pub max_peers_per_lookup: usize,
    /// Longest one lookup or announce is waited for; its results so far are then used. Default
    /// 30 s (a lookup on the real DHT takes a few seconds).
    pub lookup_timeout: Duration,
    /// Lookups and announces in flight at once over the whole node; more wait their turn.
    /// Default 8.
    pub max_lookups_in_flight: usize,
    /// How often every public torrent announces itself (and so how often a complete one looks
    /// the swarm up). Default 15 min, libtorrent's `dht_announce_interval`.
    pub announce_interval: Duration,
    /// How often an incomplete torrent with fewer than `enough_peers` connected looks for more,
    /// and a magnet waiting for its metadata. Default 60 s.
    pub lookup_interval: Duration,
    /// Connected peers at which an incomplete torrent stops looking every `lookup_interval`
    /// (it still looks at each announce). Default 30.
    pub enough_peers: u32,
    /// How fast the node answers other nodes' queries.
    pub queries: super::filter::QueryLimits,
}

impl Default for DhtLimits {
    fn default() -> Self {
        DhtLimits {
            max_peers_per_lookup: 200,
            lookup_timeout: Duration::from_secs(30),
            max_lookups_in_flight: 8,
            announce_interval: Duration::from_secs(15 * 60),
            lookup_interval: Duration::from_secs(60),
            enough_peers: 30,
            queries: super::filter::QueryLimits::default(),
        }
    }
}

/// What a torrent's DHT loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Look up peers (get_peers), then come back.
    Lookup,
    /// Announce ourselves (announce_peer with our listening port), then come back.
    Announce,
    /// Nothing is due before this instant.
    WaitUntil(Instant),
}

/// A torrent's DHT schedule. A new torrent looks up peers at once, then announces; after that
/// each repeats on its own interval. A seed looks up too (every `announce_interval`): the
/// peers it finds are dialled while it has free slots (issue 15: reach as a seed), and the
/// lookup hands the announce that follows its nodes' tokens, so the pair costs about what a
/// bare announce would (mainline's announce otherwise walks the DHT itself first).
#[derive(Debug, Clone)]
pub struct Schedule {
    next_lookup: Instant,
    next_announce: Instant,
}

impl Schedule {
    pub fn new(now: Instant) -> Schedule {
        Schedule {
            next_lookup: now,
            next_announce: now,
        }
    }

    /// The next step for a torrent that is `complete` or not, with `peers` connected. A step
    /// returned is taken to be done: its next time is set from `now`.
    pub fn next(&mut self, now: Instant, complete: bool, peers: u32, l: &DhtLimits) -> Step {
        // A lookup first, so the announce that follows reuses its nodes (and their tokens).
        if self.next_lookup <= now {
            let every = if !complete && peers < l.enough_peers {
                l.lookup_interval
            } else {
                l.announce_interval
            };
            self.next_lookup = now + every;
            return Step::Lookup;
        }
        if self.next_announce <= now {
            self.next_announce = now + l.announce_interval;
            return Step::Announce;
        }
        // A download whose peers left looks again within a lookup interval, not at the next
        // announce.
        let soon = now + l.lookup_interval;
        if !complete && peers < l.enough_peers && self.next_lookup > soon {
            self.next_lookup = soon;
        }
        Step::WaitUntil(self.next_lookup.min(self.next_announce))
    }
}

/// Keeps the usable, new addresses of one lookup's replies, at most `cap` in all: no port 0, no
/// unspecified, multicast or broadcast address, nothing `seen` already in this lookup.
pub fn take_peers(
    reply: &[SocketAddrV4],
    seen: &mut HashSet<SocketAddrV4>,
    cap: usize,
    out: &mut Vec<SocketAddr>,
) {
    for a in reply {
        if seen.len() >= cap {
            return;
        }
        let ip = a.ip();
        if a.port() == 0 || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            continue;
        }
        if seen.insert(*a) {
            out.push(SocketAddr::V4(*a));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_torrents_never_use_the_dht() {
        assert!(!may_use_dht(true));
        assert!(may_use_dht(false));
    }

    #[test]
    fn a_download_looks_up_first_then_announces_then_waits() {
        let l = DhtLimits::default();
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert_eq!(s.next(t0, false, 0, &l), Step::Lookup);
        assert_eq!(s.next(t0, false, 0, &l), Step::Announce);
        assert_eq!(
            s.next(t0, false, 0, &l),
            Step::WaitUntil(t0 + l.lookup_interval)
        );
        // Few peers: it looks again every lookup interval, announcing only every announce one.
        let t1 = t0 + l.lookup_interval;
        assert_eq!(s.next(t1, false, 3, &l), Step::Lookup);
        assert_eq!(
            s.next(t1, false, 3, &l),
            Step::WaitUntil(t1 + l.lookup_interval)
        );
        // Enough peers: the next lookup waits for the announce interval.
        let t2 = t1 + l.lookup_interval;
        assert_eq!(s.next(t2, false, 50, &l), Step::Lookup);
        assert_eq!(
            s.next(t2, false, 50, &l),
            Step::WaitUntil(t0 + l.announce_interval)
        );
        // Its peers leave: it looks again within a lookup interval.
        assert_eq!(
            s.next(t2, false, 0, &l),
            Step::WaitUntil(t2 + l.lookup_interval)
        );
    }

    #[test]
    fn a_seed_looks_up_and_announces_once_an_announce_interval() {
        let l = DhtLimits::default();
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert_eq!(s.next(t0, true, 0, &l), Step::Lookup);
        assert_eq!(s.next(t0, true, 0, &l), Step::Announce);
        // Few peers or not, a seed does not look every lookup interval.
        assert_eq!(
            s.next(t0, true, 0, &l),
            Step::WaitUntil(t0 + l.announce_interval)
        );
        let t1 = t0 + l.announce_interval;
        assert_eq!(s.next(t1, true, 0, &l), Step::Lookup);
        assert_eq!(s.next(t1, true, 0, &l), Step::Announce);
        // A download that completes drops to the seed's pace after the lookup it had due.
        let mut d = Schedule::new(t0);
        assert_eq!(d.next(t0, false, 0, &l), Step::Lookup);
        assert_eq!(d.next(t0, false, 0, &l), Step::Announce);
        let t2 = t0 + l.lookup_interval;
        assert_eq!(d.next(t2, true, 0, &l), Step::Lookup);
        assert_eq!(
            d.next(t2, true, 0, &l),
            Step::WaitUntil(t0 + l.announce_interval)
        );
        assert_eq!(
            d.next(t0 + l.announce_interval, true, 0, &l),
            Step::Announce
        );
    }

    #[test]
    fn a_lookup_keeps_at_most_cap_new_usable_addresses() {
        let a = |s: &str| s.parse::<SocketAddrV4>().unwrap();
        let reply = [
            a("127.0.0.1:6881"),
            a("127.0.0.1:6881"),
            a("127.0.0.2:0"),
            a("0.0.0.0:6881"),
            a("224.0.0.1:6881"),
            a("255.255.255.255:6881"),
            a("127.0.0.3:6881"),
            a("127.0.0.4:6881"),
        ];
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        take_peers(&reply, &mut seen, 2, &mut out);
        assert_eq!(
            out,
            vec![
                "127.0.0.1:6881".parse::<SocketAddr>().unwrap(),
                "127.0.0.3:6881".parse().unwrap()
            ]
        );
        // A second reply in the same lookup adds nothing once the cap is reached.
        take_peers(&[a("127.0.0.5:1")], &mut seen, 2, &mut out);
        assert_eq!(out.len(), 2);
        // A thousand-address reply costs at most the cap.
        let big: Vec<SocketAddrV4> = (0..1000u32)
            .map(|i| SocketAddrV4::new((0x0a00_0000 + i).into(), 1))
            .collect();
        let (mut seen, mut out) = (HashSet::new(), Vec::new());
        take_peers(&big, &mut seen, 200, &mut out);
        assert_eq!((out.len(), seen.len()), (200, 200));
    }
}
