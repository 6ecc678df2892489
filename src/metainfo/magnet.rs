//! Magnet URIs (BEP 9, with BEP 52's `urn:btmh:`).

use super::{InfoHash, hex};

/// Longest magnet URI accepted.
pub const MAX_MAGNET_LEN: usize = 64 * 1024;
/// Most parameters accepted in one magnet URI.
pub const MAX_PARAMS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("not a magnet URI (must start with `magnet:?`)")]
    NotMagnet,
    #[error("magnet URI is {0} bytes, longer than {MAX_MAGNET_LEN}")]
    TooLong(usize),
    #[error("magnet URI has more than {MAX_PARAMS} parameters")]
    TooManyParams,
    #[error("bad percent-encoding in parameter `{0}`")]
    BadEscape(String),
    #[error("bad `xt` {0:?}: {1}")]
    BadTopic(String, &'static str),
    #[error("magnet URI has no `urn:btih:` or `urn:btmh:` exact topic")]
    NoInfoHash,
}

/// A parsed magnet link.
///
/// ```
/// use ringseed::metainfo::Magnet;
/// let m = Magnet::parse(
///     "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=demo&tr=udp%3A%2F%2F127.0.0.1%3A6969",
/// ).unwrap();
/// assert_eq!(m.name.as_deref(), Some("demo"));
/// assert_eq!(m.trackers, ["udp://127.0.0.1:6969"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    /// `dn`: display name.
    pub name: Option<String>,
    /// `tr`: trackers, in order.
    pub trackers: Vec<String>,
    /// `x.pe`: peer addresses (`host:port`) to connect to directly.
    pub peers: Vec<String>,
    /// `ws`: web seeds.
    pub web_seeds: Vec<String>,
}

impl Magnet {
    pub fn parse(uri: &str) -> Result<Self, MagnetError> {
        if uri.len() > MAX_MAGNET_LEN {
            return Err(MagnetError::TooLong(uri.len()));
        }
        let query = uri
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("magnet:?"))
            .map(|_| &uri[8..])
            .ok_or(MagnetError::NotMagnet)?;
        let mut m = Magnet {
            info_hash: InfoHash { v1: None, v2: None },
            name: None,
            trackers: Vec::new(),
            peers: Vec::new(),
            web_seeds: Vec::new(),
        };
        for (n, param) in query.split('&').filter(|p| !p.is_empty()).enumerate() {
            if n >= MAX_PARAMS {
                return Err(MagnetError::TooManyParams);
            }
            let (key, raw) = param.split_once('=').unwrap_or((param, ""));
            // BEP 9 allows numbered keys (`tr.1`, `xt.2`) for repeated parameters.
            let base = match key.split_once('.') {
                Some((b, idx)) if idx.bytes().all(|c| c.is_ascii_digit()) => b,
                _ => key,
            };
            let value = || {
                percent_decode(raw, base == "dn")
                    .ok_or_else(|| MagnetError::BadEscape(key.to_owned()))
            };
            match base {
                "xt" => m.topic(&value()?)?,
                "dn" => m.name = Some(value()?),
                "tr" => m.trackers.push(value()?),
                "x.pe" => m.peers.push(value()?),
                "ws" => m.web_seeds.push(value()?),
                _ => {} // unknown parameters are ignored, as every client does
            }
        }
        if m.info_hash.v1.is_none() && m.info_hash.v2.is_none() {
            return Err(MagnetError::NoInfoHash);
        }
        // Percent-encoding can triple a value: bound the canonical form too, so every magnet
        // we accept can be written out and read back.
        let canonical = m.to_uri().len();
        if canonical > MAX_MAGNET_LEN {
            return Err(MagnetError::TooLong(canonical));
        }
        Ok(m)
    }

    fn topic(&mut self, xt: &str) -> Result<(), MagnetError> {
        let bad = |why| MagnetError::BadTopic(xt.to_owned(), why);
        if let Some(h) = strip_prefix_ci(xt, "urn:btih:") {
            let hash = match h.len() {
                40 => unhex(h).ok_or_else(|| bad("not 40 hex digits"))?,
                32 => unbase32(h).ok_or_else(|| bad("not 32 base32 digits"))?,
                _ => return Err(bad("info-hash must be 40 hex or 32 base32 digits")),
            };
            self.info_hash.v1 = Some(hash.try_into().map_err(|_| bad("wrong length"))?);
        } else if let Some(h) = strip_prefix_ci(xt, "urn:btmh:") {
            // A multihash: 0x12 (sha2-256), 0x20 (32 bytes), then the digest.
            let mh = unhex(h).ok_or_else(|| bad("multihash is not hex"))?;
            match mh.as_slice() {
                [0x12, 0x20, digest @ ..] if digest.len() == 32 => {
                    self.info_hash.v2 = Some(digest.try_into().map_err(|_| bad("wrong length"))?);
                }
                _ => return Err(bad("multihash is not a 32-byte sha2-256 digest")),
            }
        }
        // Other URNs (ed2k, sha1 of files...) are legal in magnets and irrelevant here.
        Ok(())
    }

    /// Formats the magnet back into a URI.
    pub fn to_uri(&self) -> String {
        let mut s = String::from("magnet:?");
        let mut sep = "";
        if let Some(v1) = self.info_hash.v1 {
            s += &format!("xt=urn:btih:{}", hex(&v1));
            sep = "&";
        }
        if let Some(v2) = self.info_hash.v2 {
            s += &format!("{sep}xt=urn:btmh:1220{}", hex(&v2));
        }
        if let Some(n) = &self.name {
            s += &format!("&dn={}", percent_encode(n));
        }
        for (k, list) in [
            ("tr", &self.trackers),
            ("x.pe", &self.peers),
            ("ws", &self.web_seeds),
        ] {
            for v in list {
                s += &format!("&{k}={}", percent_encode(v));
            }
        }
        s
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

/// RFC 4648 base32 without padding (the alphabet is case-insensitive in magnets).
fn unbase32(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut acc, mut bits) = (0u64, 0u32);
    for c in s.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                out.push(unhex(std::str::from_utf8(h).ok()?)?[0]);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    #[test]
    fn hex_and_base32_agree() {
        let a = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
        let b = Magnet::parse("magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
        assert_eq!(a.info_hash, b.info_hash);
        assert_eq!(hex(&a.info_hash.v1.unwrap()), HEX);
        let lower = Magnet::parse("MAGNET:?xt=urn:btih:yex6dqdlxisuvhoj6um3gnnkpqjwpkek").unwrap();
        assert_eq!(lower.info_hash, a.info_hash);
    }

    #[test]
    fn hybrid_peers_and_round_trip() {
        let v2 = "1220".to_owned() + &"ab".repeat(32);
        let uri = format!(
            "magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:{v2}&dn=my+file%20x&tr.1=http%3A%2F%2Fa%2Fannounce&tr.2=udp://b:1&x.pe=127.0.0.1:6881&ws=http://w/&foo=bar"
        );
        let m = Magnet::parse(&uri).unwrap();
        assert_eq!(m.info_hash.v2, Some([0xab; 32]));
        assert_eq!(m.name.as_deref(), Some("my file x"));
        assert_eq!(m.trackers, ["http://a/announce", "udp://b:1"]);
        assert_eq!(m.peers, ["127.0.0.1:6881"]);
        assert_eq!(m.web_seeds, ["http://w/"]);
        assert_eq!(Magnet::parse(&m.to_uri()).unwrap(), m);
        let v2only = Magnet::parse(&format!("magnet:?xt=urn:btmh:{v2}")).unwrap();
        assert_eq!(v2only.info_hash.wire_id(), [0xab; 20]);
    }

    #[test]
    fn bad_magnets() {
        use MagnetError::*;
        assert_eq!(Magnet::parse("http://x").unwrap_err(), NotMagnet);
        assert_eq!(Magnet::parse("magnet:?dn=x").unwrap_err(), NoInfoHash);
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:btih:zz").unwrap_err(),
            BadTopic(..)
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{}", "g".repeat(40))).unwrap_err(),
            BadTopic(..)
        ));
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:btmh:1114aa").unwrap_err(),
            BadTopic(..)
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=%4")).unwrap_err(),
            BadEscape(_)
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=%zz")).unwrap_err(),
            BadEscape(_)
        ));
        let many = format!("magnet:?xt=urn:btih:{HEX}{}", "&tr=x".repeat(2000));
        assert_eq!(Magnet::parse(&many).unwrap_err(), TooManyParams);
        assert!(matches!(
            Magnet::parse(&"a".repeat(70_000)).unwrap_err(),
            TooLong(_)
        ));
        // Found by fuzzing: 30 000 `+` decode to spaces that re-encode as 90 000 bytes.
        let spaces = format!("magnet:?xt=urn:btih:{HEX}&dn={}", "+".repeat(30_000));
        assert!(matches!(Magnet::parse(&spaces).unwrap_err(), TooLong(_)));
        // Multi-byte characters right after the scheme must not split a char.
        assert_eq!(Magnet::parse("magnet:é").unwrap_err(), NotMagnet);
    }
}
