//! A torrent's swarm as peer exchange (BEP 11) tells it: the connected peers' listening
//! addresses, counted (two connections can share one address: a peer that both dialled us and
//! was dialled, or two clients behind one NAT), and a bounded log of joins and leaves numbered
//! by generation. A peer remembers only the generation it last heard, so a round costs each
//! peer the changes since then, and memory is one log per torrent, not one set per peer.
//! Pure: the worker holds it behind the torrent's mutex.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// Changes kept per torrent; a peer that fell further behind starts over from the swarm.
pub const LOG_LEN: usize = 4096;

#[derive(Debug, Default)]
pub struct Swarm {
    /// Listening address → (BEP 11 flags, connections that share it).
    peers: HashMap<SocketAddr, (u8, u32)>,
    /// (generation, address, joined) in generation order.
    log: VecDeque<(u64, SocketAddr, bool)>,
    generation: u64,
}

/// What one peer is to hear.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<(SocketAddr, u8)>,
    pub dropped: Vec<SocketAddr>,
}

impl Swarm {
    /// One more connection at `addr`.
    pub fn join(&mut self, addr: SocketAddr, flags: u8) {
        let e = self.peers.entry(addr).or_insert((flags, 0));
        e.0 = flags;
        e.1 += 1;
        if e.1 == 1 {
            self.record(addr, true);
        }
    }

    /// One connection at `addr` fewer; the address leaves with its last connection.
    pub fn leave(&mut self, addr: SocketAddr) {
        let Some(e) = self.peers.get_mut(&addr) else {
            return;
        };
        e.1 -= 1;
        if e.1 == 0 {
            self.peers.remove(&addr);
            self.record(addr, false);
        }
    }

    fn record(&mut self, addr: SocketAddr, joined: bool) {
        self.generation += 1;
        self.log.push_back((self.generation, addr, joined));
        while self.log.len() > LOG_LEN {
            self.log.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// What a peer that last heard generation `since` (`None`: nothing yet) should hear now,
    /// at most `max` added and `max` dropped, never `me`; and the generation it has then
    /// heard. A peer that never heard anything, or fell behind the log, gets the swarm as it
    /// is (up to `max` of it).
    pub fn changes_since(
        &self,
        since: Option<u64>,
        me: Option<SocketAddr>,
        max: usize,
    ) -> (Changes, u64) {
        let mut out = Changes::default();
        let oldest = self.log.front().map_or(self.generation + 1, |e| e.0);
        match since {
            Some(g) if g + 1 >= oldest => {
                // The net effect per address: its last change since `g`.
                let mut last: HashMap<SocketAddr, bool> = HashMap::new();
                for &(_, a, joined) in self.log.iter().filter(|e| e.0 > g) {
                    last.insert(a, joined);
                }
                for (a, joined) in last {
                    if Some(a) == me {
                        continue;
                    }
                    if joined {
                        if out.added.len() < max
                            && let Some((f, _)) = self.peers.get(&a)
                        {
                            out.added.push((a, *f));
                        }
                    } else if out.dropped.len() < max {
                        out.dropped.push(a);
                    }
                }
            }
            _ => {
                out.added = self
                    .peers
                    .iter()
                    .filter(|(a, _)| Some(**a) != me)
                    .take(max)
                    .map(|(a, (f, _))| (*a, *f))
                    .collect();
            }
        }
        (out, self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn a_shared_address_leaves_with_its_last_connection() {
        let mut s = Swarm::default();
        s.join(a(1), 0);
        s.join(a(1), 0);
        s.leave(a(1));
        assert_eq!(s.len(), 1, "one connection at a(1) remains");
        s.leave(a(1));
        assert!(s.is_empty());
        s.leave(a(1)); // a stray leave changes nothing
        assert!(s.is_empty());
    }

    #[test]
    fn peers_hear_net_changes_since_their_generation() {
        let mut s = Swarm::default();
        s.join(a(1), 0);
        s.join(a(2), 2);
        let (first, g) = s.changes_since(None, Some(a(1)), 50);
        assert_eq!(first.added, vec![(a(2), 2)], "never itself");
        assert!(first.dropped.is_empty());
        // a(3) joins and leaves again, a(2) leaves, a(4) joins: the net effect only.
        s.join(a(3), 0);
        s.leave(a(3));
        s.leave(a(2));
        s.join(a(4), 0);
        let (next, g2) = s.changes_since(Some(g), Some(a(1)), 50);
        assert_eq!(next.added, vec![(a(4), 0)]);
        let mut dropped = next.dropped.clone();
        dropped.sort();
        assert_eq!(dropped, vec![a(2), a(3)]);
        let (none, _) = s.changes_since(Some(g2), Some(a(1)), 50);
        assert_eq!(none, Changes::default());
    }

    #[test]
    fn the_log_is_bounded_and_a_peer_behind_it_starts_over() {
        let mut s = Swarm::default();
        s.join(a(1), 0);
        let (_, g) = s.changes_since(None, None, 50);
        for p in 2..(LOG_LEN as u16 + 100) {
            s.join(a(p), 0);
            s.leave(a(p));
        }
        s.join(a(9), 0);
        assert!(s.log.len() <= LOG_LEN);
        let (c, _) = s.changes_since(Some(g), None, 3);
        assert!(c.dropped.is_empty());
        assert_eq!(c.added.len(), 2, "the swarm as it is: a(1) and a(9)");
        // At most `max` of each.
        let (c, _) = s.changes_since(None, None, 1);
        assert_eq!(c.added.len(), 1);
    }
}
