//! Credit windows held on channels checked on chain (`[speed] rpc`). A connection whose bid is
//! confirmed may take one credit window of paid-slot service before its next voucher; several
//! connections bidding on one channel at once would each get theirs, all owed from one deposit.
//! So the verifier keeps, per channel, the window of every live connection whose bid on it was
//! confirmed (or is at the ledger), and a new bid must leave room for the others' windows
//! ([`crate::speed::ledger::Funds::held`]). A window ends when its connection closes
//! ([`super::SpeedService::gone`]) or moves to another channel.
//!
//! Pure bookkeeping, no I/O: the verifier thread owns it.

use std::collections::{HashMap, HashSet, VecDeque};

use super::PeerRef;
use crate::speed::voucher::{Amount, ChannelId};

/// Closed connections remembered so that a bid still in the on-chain check when its connection
/// closed holds no window afterwards (the close notice can overtake it). Ids are never reused,
/// so forgetting the oldest only matters for a bid older than this many closes.
const MAX_GONE: usize = 1 << 16;

/// What a bid's window replaced, to put back if the bid is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    before: Option<Amount>,
}

/// Windows by channel and by connection.
#[derive(Debug, Default)]
pub struct Windows {
    /// Channel → (connection, its window in base units at its bid's price).
    by_channel: HashMap<ChannelId, Vec<(PeerRef, Amount)>>,
    /// Connection → channels it holds a window on: its confirmed one and, while a bid on
    /// another is at the ledger, that one too.
    by_peer: HashMap<PeerRef, Vec<ChannelId>>,
    gone: HashSet<PeerRef>,
    gone_order: VecDeque<PeerRef>,
}

impl Windows {
    /// What the windows of connections other than `to` hold on `channel`.
    pub fn held_by_others(&self, channel: &ChannelId, to: PeerRef) -> Amount {
        self.by_channel.get(channel).map_or(0, |w| {
            w.iter()
                .filter(|(p, _)| *p != to)
                .fold(0, |sum: Amount, (_, a)| sum.saturating_add(*a))
        })
    }

    /// Holds `window` on `channel` for `to`, replacing its window there. Returns what to hand
    /// [`Windows::undo`] if the bid is refused (`Some` of the window it replaced), or `None`,
    /// holding nothing, when `to` is already closed.
    pub fn hold(&mut self, channel: ChannelId, to: PeerRef, window: Amount) -> Option<Held> {
        if self.gone.contains(&to) {
            return None;
        }
        let w = self.by_channel.entry(channel).or_default();
        let before = match w.iter_mut().find(|(p, _)| *p == to) {
            Some(e) => Some(std::mem::replace(&mut e.1, window)),
            None => {
                w.push((to, window));
                None
            }
        };
        let chans = self.by_peer.entry(to).or_default();
        if !chans.contains(&channel) {
            chans.push(channel);
        }
        Some(Held { before })
    }

    /// The bid that [`Windows::hold`] answered with `held` was refused: `to`'s window on
    /// `channel` goes back to what it was (none, or its confirmed bid's).
    pub fn undo(&mut self, channel: ChannelId, to: PeerRef, held: Held) {
        match held.before {
            None => self.release(channel, to),
            Some(window) => {
                if let Some(e) = self
                    .by_channel
                    .get_mut(&channel)
                    .and_then(|w| w.iter_mut().find(|(p, _)| *p == to))
                {
                    e.1 = window;
                }
            }
        }
    }

    /// `to`'s bid on `channel` was confirmed: its windows on other channels end (its debt moves
    /// with it to the new channel, as the worker counts it).
    pub fn confirmed(&mut self, channel: ChannelId, to: PeerRef) {
        let others: Vec<ChannelId> = self
            .by_peer
            .get(&to)
            .map(|c| c.iter().filter(|c| **c != channel).copied().collect())
            .unwrap_or_default();
        for c in others {
            self.release(c, to);
        }
    }

    /// `to`'s window on `channel` ends (its bid there was refused).
    pub fn release(&mut self, channel: ChannelId, to: PeerRef) {
        if let Some(w) = self.by_channel.get_mut(&channel) {
            w.retain(|(p, _)| *p != to);
            if w.is_empty() {
                self.by_channel.remove(&channel);
            }
        }
        if let Some(c) = self.by_peer.get_mut(&to) {
            c.retain(|c| *c != channel);
            if c.is_empty() {
                self.by_peer.remove(&to);
            }
        }
    }

    /// `to` closed: every window it held ends, and it holds none from now on.
    pub fn gone(&mut self, to: PeerRef) {
        for c in self.by_peer.remove(&to).unwrap_or_default() {
            if let Some(w) = self.by_channel.get_mut(&c) {
                w.retain(|(p, _)| *p != to);
                if w.is_empty() {
                    self.by_channel.remove(&c);
                }
            }
        }
        if self.gone.insert(to) {
            self.gone_order.push_back(to);
            while self.gone_order.len() > MAX_GONE {
                if let Some(old) = self.gone_order.pop_front() {
                    self.gone.remove(&old);
                }
            }
        }
    }

    /// Connections holding a window (for tests and bounds).
    pub fn holders(&self) -> usize {
        self.by_peer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(conn_id: u64) -> PeerRef {
        PeerRef {
            worker: 0,
            slot: conn_id as usize,
            conn_id,
        }
    }

    #[test]
    fn a_channel_holds_the_windows_of_its_other_live_connections() {
        let (a, b) = (ChannelId([1; 32]), ChannelId([2; 32]));
        let mut w = Windows::default();
        assert!(w.hold(a, peer(1), 100).is_some());
        assert!(w.hold(a, peer(2), 40).is_some());
        assert_eq!(
            w.held_by_others(&a, peer(1)),
            40,
            "its own window is not counted"
        );
        assert_eq!(w.held_by_others(&a, peer(3)), 140);
        assert_eq!(w.held_by_others(&b, peer(3)), 0);
        // A re-bid at another price replaces the window.
        assert!(w.hold(a, peer(2), 60).is_some());
        assert_eq!(w.held_by_others(&a, peer(1)), 60);
        // Moving to another channel: both are held until the new bid is confirmed.
        assert!(w.hold(b, peer(2), 10).is_some());
        assert_eq!(w.held_by_others(&a, peer(1)), 60);
        w.confirmed(b, peer(2));
        assert_eq!(w.held_by_others(&a, peer(1)), 0);
        assert_eq!(w.held_by_others(&b, peer(1)), 10);
        // A refused re-bid puts the window back as it was; a refused first bid holds nothing.
        let held = w.hold(b, peer(2), 99).unwrap();
        w.undo(b, peer(2), held);
        assert_eq!(w.held_by_others(&b, peer(1)), 10);
        let held = w.hold(a, peer(2), 99).unwrap();
        w.undo(a, peer(2), held);
        assert_eq!(w.held_by_others(&a, peer(1)), 0);
        w.release(b, peer(2));
        assert_eq!(w.held_by_others(&b, peer(1)), 0);
        assert_eq!(w.holders(), 1);
        w.gone(peer(1));
        assert_eq!(w.holders(), 0);
        assert!(w.by_channel.is_empty());
    }

    #[test]
    fn a_closed_connection_holds_nothing_even_when_its_bid_arrives_late() {
        let a = ChannelId([1; 32]);
        let mut w = Windows::default();
        w.gone(peer(7));
        assert!(
            w.hold(a, peer(7), 100).is_none(),
            "the close overtook the bid"
        );
        assert_eq!(w.held_by_others(&a, peer(1)), 0);
        // Only the newest closes are remembered.
        for n in 0..MAX_GONE as u64 {
            w.gone(peer(1_000 + n));
        }
        assert!(w.gone.len() <= MAX_GONE && w.gone_order.len() <= MAX_GONE);
        assert!(
            w.hold(a, peer(7), 100).is_some(),
            "forgotten after MAX_GONE later closes"
        );
    }
}
