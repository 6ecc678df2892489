//! BEP 11 `ut_pex`: peer exchange. A message lists peers added to and dropped from the sender's
//! swarm since its last message, in compact form (`added`/`dropped`: 6 bytes per IPv4 peer,
//! `added6`/`dropped6`: 18 bytes per IPv6 peer) with one flag byte per added peer.
//!
//! ```
//! use ringseed::wire::pex::PexMessage;
//! let m = PexMessage {
//!     added: vec![("192.0.2.1:6881".parse().unwrap(), 0x02)],
//!     dropped: vec!["[2001:db8::1]:51413".parse().unwrap()],
//! };
//! assert_eq!(PexMessage::parse(&m.encode()), Ok(m));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bencode::{self, Bencode, Limits};

/// The extension's name in the handshake's `m`.
pub const EXTENSION_NAME: &str = "ut_pex";
/// Our id for it in the handshake's `m`.
pub const LOCAL_ID: u8 = 1;
/// Most peers one message adds, and most it drops (BEP 11 asks for no more than 50 of each).
pub const MAX_PEERS: usize = 50;
/// Flag of an added peer that is a seed (or upload-only).
pub const FLAG_SEED: u8 = 0x02;
/// Longest message accepted: 4 lists of `MAX_PEERS` at 18 bytes, flags, keys and room.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

const LIMITS: Limits = Limits {
    max_depth: 2,
    max_items: 16,
};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Peers added, with their flags.
    pub added: Vec<(SocketAddr, u8)>,
    pub dropped: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PexError {
    #[error("ut_pex message of {0} bytes is too long")]
    TooLong(usize),
    #[error("ut_pex message is not valid bencode: {0}")]
    Bencode(#[from] bencode::DecodeError),
    #[error("ut_pex message is not a dictionary")]
    NotADict,
    #[error("ut_pex {0} is not a whole number of compact peers")]
    Compact(&'static str),
}

fn compact(addrs: impl Iterator<Item = SocketAddr>, v6: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for a in addrs {
        match (a.ip(), v6) {
            (IpAddr::V4(ip), false) => out.extend_from_slice(&ip.octets()),
            (IpAddr::V6(ip), true) => out.extend_from_slice(&ip.octets()),
            _ => continue,
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
    out
}

fn peers(b: &[u8], v6: bool, what: &'static str) -> Result<Vec<SocketAddr>, PexError> {
    let each = if v6 { 18 } else { 6 };
    if !b.len().is_multiple_of(each) {
        return Err(PexError::Compact(what));
    }
    Ok(b.chunks_exact(each)
        .map(|c| {
            let port = u16::from_be_bytes([c[each - 2], c[each - 1]]);
            let ip = if v6 {
                let mut o = [0u8; 16];
                o.copy_from_slice(&c[..16]);
                IpAddr::V6(Ipv6Addr::from(o))
            } else {
                IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            };
            SocketAddr::new(ip, port)
        })
        .collect())
}

impl PexMessage {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.dropped.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d = Bencode::dict();
        for v6 in [false, true] {
            let sfx = if v6 { "6" } else { "" };
            let added: Vec<&(SocketAddr, u8)> = self
                .added
                .iter()
                .filter(|(a, _)| a.is_ipv6() == v6)
                .collect();
            let dropped = self.dropped.iter().copied().filter(|a| a.is_ipv6() == v6);
            d.insert(
                format!("added{sfx}"),
                Bencode::bytes(compact(added.iter().map(|(a, _)| *a), v6)),
            );
            let flags: Vec<u8> = added.iter().map(|(_, f)| *f).collect();
            d.insert(format!("added{sfx}.f"), Bencode::bytes(flags));
            d.insert(
                format!("dropped{sfx}"),
                Bencode::bytes(compact(dropped, v6)),
            );
        }
        d.encode()
    }

    /// Parses a peer's message. Missing lists are empty; flags beyond the peers are ignored and
    /// missing flags are 0.
    pub fn parse(payload: &[u8]) -> Result<PexMessage, PexError> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(PexError::TooLong(payload.len()));
        }
        let v = bencode::decode_with(payload, LIMITS)?;
        if v.as_dict().is_none() {
            return Err(PexError::NotADict);
        }
        let bytes = |k: &[u8]| v.get(k).and_then(|x| x.as_bytes()).unwrap_or(&[]);
        let mut m = PexMessage::default();
        for (v6, added, flags, dropped) in [
            (false, "added", "added.f", "dropped"),
            (true, "added6", "added6.f", "dropped6"),
        ] {
            let f = bytes(flags.as_bytes());
            for (i, a) in peers(bytes(added.as_bytes()), v6, added)?
                .into_iter()
                .enumerate()
            {
                m.added.push((a, f.get(i).copied().unwrap_or(0)));
            }
            m.dropped
                .extend(peers(bytes(dropped.as_bytes()), v6, dropped)?);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_round_trip_and_bad_lists_are_errors() {
        let m = PexMessage {
            added: vec![
                ("10.0.0.1:1".parse().unwrap(), 0),
                ("[::1]:2".parse().unwrap(), FLAG_SEED),
                ("10.0.0.2:65535".parse().unwrap(), FLAG_SEED),
            ],
            dropped: vec!["10.9.9.9:9".parse().unwrap()],
        };
        let back = PexMessage::parse(&m.encode()).unwrap();
        // Grouped by family on the wire.
        assert_eq!(back.added.len(), 3);
        for p in &m.added {
            assert!(back.added.contains(p), "{p:?}");
        }
        assert_eq!(back.dropped, m.dropped);
        assert_eq!(PexMessage::parse(b"de"), Ok(PexMessage::default()));
        assert!(PexMessage::parse(b"d5:added5:12345e").is_err());
        assert!(PexMessage::parse(b"le").is_err());
        assert!(PexMessage::parse(&vec![b'0'; MAX_MESSAGE_BYTES + 1]).is_err());
    }
}
