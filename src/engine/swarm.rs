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
    /// at most `max` added and `max` dropped, never `me`; and the generation it has heard once
    /// told. Changes are taken in order and a message ends before the first one that does not
    /// fit, so what is cut comes in the next round. A peer that never heard anything starts
    /// from the beginning of the log while the log reaches back to it; one that fell behind
    /// the log gets up to `max` of the swarm as it is (starting at a place that moves with the
    /// generation, so newcomers do not all hear the same peers).
    pub fn changes_since(
        &self,
        since: Option<u64>,
        me: Option<SocketAddr>,
        max: usize,
    ) -> (Changes, u64) {
        let oldest = self.log.front().map_or(self.generation + 1, |e| e.0);
        let from = match since {
            Some(g) if g + 1 >= oldest => g,
            None if oldest <= 1 => 0,
            _ => return self.snapshot(me, max),
        };
        // Per address: whether the peer knew it before (its first change since is a leave)
        // and whether it is there now.
        let mut net: HashMap<SocketAddr, (bool, bool)> = HashMap::new();
        let (mut adds, mut drops) = (0usize, 0usize);
        let mut heard = from;
        let skip = (from + 1 - oldest.min(from + 1)) as usize;
        for &(generation, a, joined) in self.log.iter().skip(skip) {
            if Some(a) != me {
                let (knew, _) = net.get(&a).copied().unwrap_or((!joined, !joined));
                let effect = |(knew, there): (bool, bool)| (!knew && there, knew && !there);
                let (was_add, was_drop) = effect(net.get(&a).copied().unwrap_or((knew, knew)));
                let (is_add, is_drop) = effect((knew, joined));
                let adds_after = adds - usize::from(was_add) + usize::from(is_add);
                let drops_after = drops - usize::from(was_drop) + usize::from(is_drop);
                if adds_after > max || drops_after > max {
                    break;
                }
                (adds, drops) = (adds_after, drops_after);
                net.insert(a, (knew, joined));
            }
            heard = generation;
        }
        let mut out = Changes::default();
        for (a, (knew, there)) in net {
            match (knew, there) {
                (false, true) => {
                    if let Some((f, _)) = self.peers.get(&a) {
                        out.added.push((a, *f));
                    }
                }
                (true, false) => out.dropped.push(a),
                _ => {}
            }
        }
        (out, heard)
    }

    fn snapshot(&self, me: Option<SocketAddr>, max: usize) -> (Changes, u64) {
        let n = self.peers.len().max(1);
        let start = (self.generation as usize) % n;
        let added = self
            .peers
            .iter()
            .cycle()
            .skip(start)
            .take(self.peers.len())
            .filter(|(a, _)| Some(**a) != me)
            .take(max)
            .map(|(a, (f, _))| (*a, *f))
            .collect();
        (
            Changes {
                added,
                dropped: Vec::new(),
            },
            self.generation,
        )
    }

    /// Updates the flags of an address already in the swarm (a repeated extension handshake
    /// at the same address): no join or leave is logged.
    pub fn set_flags(&mut self, addr: SocketAddr, flags: u8) {
        if let Some(e) = self.peers.get_mut(&addr) {
            e.0 = flags;
        }
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
        assert_eq!(
            next.dropped,
            vec![a(2)],
            "a(3) came and went: nothing to say"
        );
        let (none, _) = s.changes_since(Some(g2), Some(a(1)), 50);
        assert_eq!(none, Changes::default());
    }

    /// What the cap cuts comes in the next rounds: nobody is left out for good.
    #[test]
    fn changes_beyond_the_cap_come_in_later_rounds() {
        let mut s = Swarm::default();
        for p in 1..=120 {
            s.join(a(p), 0);
        }
        let mut heard = None;
        let mut told = std::collections::HashSet::new();
        for round in 0..3 {
            let (c, g) = s.changes_since(heard, None, 50);
            assert!(c.added.len() <= 50, "round {round}");
            told.extend(c.added.iter().map(|(p, _)| *p));
            heard = Some(g);
        }
        assert_eq!(told.len(), 120);
        // 60 leave: two rounds of drops.
        for p in 1..=60 {
            s.leave(a(p));
        }
        let (c, g) = s.changes_since(heard, None, 50);
        assert_eq!((c.added.len(), c.dropped.len()), (0, 50));
        let (c, _) = s.changes_since(Some(g), None, 50);
        assert_eq!((c.added.len(), c.dropped.len()), (0, 10));
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
