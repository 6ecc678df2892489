//! Who sent bad data. A piece that fails its hash gives each address that sent some of its
//! blocks a strike: two when it sent the whole piece (it alone is the culprit), one when it
//! shared the piece with others (any of them may be). An address is banned at
//! [`BAN_AT`] strikes, by IP as libtorrent and qBittorrent ban (a new port is the same peer).
//!
//! Pieces are fetched whole from one peer outside endgame, so a corrupting peer is usually
//! alone on its bad pieces and banned at its first one; an honest peer that shared a bad piece
//! with it takes one strike, and would need several more such pieces to be banned.

use std::collections::HashMap;
use std::net::IpAddr;

/// Strikes that ban an address.
pub const BAN_AT: u32 = 2;
/// Addresses remembered at most (the oldest strikes are forgotten past it); bans are kept.
const MAX_TRACKED: usize = 4096;

/// Strikes and bans of one torrent.
#[derive(Debug, Default)]
pub struct Blame {
    strikes: HashMap<IpAddr, u32>,
    banned: std::collections::HashSet<IpAddr>,
    /// Pieces that failed their hash check.
    pub failed_pieces: u64,
}

impl Blame {
    /// A piece from `senders` failed its check: returns the addresses banned by it.
    pub fn piece_failed(&mut self, senders: &[IpAddr]) -> Vec<IpAddr> {
        self.failed_pieces += 1;
        if self.strikes.len() >= MAX_TRACKED {
            self.strikes.clear();
        }
        let weight = if senders.len() == 1 { BAN_AT } else { 1 };
        let mut banned = Vec::new();
        for &ip in senders {
            let s = self.strikes.entry(ip.to_canonical()).or_default();
            *s += weight;
            if *s >= BAN_AT && self.banned.insert(ip.to_canonical()) {
                banned.push(ip);
            }
        }
        banned
    }

    pub fn is_banned(&self, ip: IpAddr) -> bool {
        !self.banned.is_empty() && self.banned.contains(&ip.to_canonical())
    }

    /// Addresses banned so far.
    pub fn banned(&self) -> usize {
        self.banned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn a_sole_sender_is_banned_at_once_a_sharer_after_two() {
        let mut b = Blame::default();
        assert_eq!(b.piece_failed(&[ip(2)]), vec![ip(2)]);
        assert!(b.is_banned(ip(2)));
        assert!(b.piece_failed(&[ip(3), ip(4)]).is_empty());
        assert!(!b.is_banned(ip(3)));
        assert_eq!(b.piece_failed(&[ip(3), ip(5)]), vec![ip(3)]);
        assert_eq!(b.banned(), 2);
        assert_eq!(b.failed_pieces, 3);
        // A v4 peer on the dual-stack listener is the same peer.
        assert!(b.is_banned("::ffff:127.0.0.2".parse().unwrap()));
    }
}
