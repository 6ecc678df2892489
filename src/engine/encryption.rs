//! The MSE/PE policy: which connections are obfuscated or encrypted, as pure decisions the
//! connection code (`conn/crypt.rs`) carries out. The names and defaults are libtorrent's
//! (`in_enc_policy`, `out_enc_policy`, `allowed_enc_level`, `prefer_rc4`), so a seedbox moved
//! from qBittorrent behaves the same.

use crate::mse::{Methods, is_plain};

/// How one direction treats MSE (libtorrent's `enc_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Plain BitTorrent only: incoming MSE is refused, dials are plain.
    Disabled,
    /// Both: incoming either way; dials try MSE first and retry plain once if that fails.
    Enabled,
    /// MSE only: incoming plaintext is refused, dials are MSE and never retried plain.
    Forced,
}

/// Which crypto methods an MSE handshake may choose (libtorrent's `allowed_enc_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// RC4 on the whole stream.
    Rc4,
    /// Only the handshake is obfuscated; the payload goes as it is.
    Plaintext,
    /// Either; the responder picks (RC4 if `prefer_rc4`).
    Both,
}

/// The engine's MSE settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encryption {
    pub incoming: Policy,
    pub outgoing: Policy,
    pub level: Level,
    /// Offered both methods, the responder picks RC4 (else plaintext, which costs no CPU).
    pub prefer_rc4: bool,
}

impl Default for Encryption {
    /// libtorrent's defaults: enabled both ways, both methods, plaintext preferred.
    fn default() -> Self {
        Encryption {
            incoming: Policy::Enabled,
            outgoing: Policy::Enabled,
            level: Level::Both,
            prefer_rc4: false,
        }
    }
}

/// What to do with an incoming connection, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Too few bytes to tell.
    NeedMore,
    /// A plain BitTorrent handshake, allowed.
    Plain,
    /// An MSE handshake, allowed: run the responder.
    Mse,
    /// Plain, but the policy forces MSE.
    RefusePlain,
    /// MSE, but the policy disables it.
    RefuseMse,
}

/// How to dial a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dial {
    Plain,
    Mse,
}

impl Encryption {
    /// The incoming connection whose first bytes are `first`.
    pub fn incoming(&self, first: &[u8]) -> Incoming {
        match (is_plain(first), self.incoming) {
            (None, _) => Incoming::NeedMore,
            (Some(true), Policy::Forced) => Incoming::RefusePlain,
            (Some(true), _) => Incoming::Plain,
            (Some(false), Policy::Disabled) => Incoming::RefuseMse,
            (Some(false), _) => Incoming::Mse,
        }
    }

    /// The first dial of a peer.
    pub fn dial(&self) -> Dial {
        match self.outgoing {
            Policy::Disabled => Dial::Plain,
            Policy::Enabled | Policy::Forced => Dial::Mse,
        }
    }

    /// Whether an MSE dial that failed before its handshake finished is tried once more in
    /// plain (only with `enabled`: the peer may not speak MSE at all).
    pub fn retry_plain(&self) -> bool {
        self.outgoing == Policy::Enabled
    }

    /// Methods an initiator offers and a responder accepts.
    pub fn allowed(&self) -> Methods {
        match self.level {
            Level::Rc4 => Methods::RC4,
            Level::Plaintext => Methods::PLAINTEXT,
            Level::Both => Methods::BOTH,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &[u8] = b"\x13BitTorrent protocol\0\0\0\0\0\0\0\0";

    fn enc(incoming: Policy, outgoing: Policy) -> Encryption {
        Encryption {
            incoming,
            outgoing,
            ..Encryption::default()
        }
    }

    #[test]
    fn incoming_by_first_bytes_and_policy() {
        let mse = [0x55u8; 96];
        for p in [Policy::Disabled, Policy::Enabled, Policy::Forced] {
            let e = enc(p, Policy::Enabled);
            // A prefix of the plain handshake cannot be told from MSE yet.
            assert_eq!(e.incoming(&PLAIN[..5]), Incoming::NeedMore);
            assert_eq!(e.incoming(&[]), Incoming::NeedMore);
        }
        let e = enc(Policy::Enabled, Policy::Enabled);
        assert_eq!(e.incoming(PLAIN), Incoming::Plain);
        assert_eq!(e.incoming(&mse), Incoming::Mse);
        // One differing byte is enough to tell.
        assert_eq!(e.incoming(b"\x13BitTorrent prX"), Incoming::Mse);
        let e = enc(Policy::Forced, Policy::Enabled);
        assert_eq!(e.incoming(PLAIN), Incoming::RefusePlain);
        assert_eq!(e.incoming(&mse), Incoming::Mse);
        let e = enc(Policy::Disabled, Policy::Enabled);
        assert_eq!(e.incoming(PLAIN), Incoming::Plain);
        assert_eq!(e.incoming(&mse), Incoming::RefuseMse);
    }

    #[test]
    fn dialling_and_the_plain_retry() {
        let e = enc(Policy::Enabled, Policy::Disabled);
        assert_eq!(e.dial(), Dial::Plain);
        assert!(!e.retry_plain());
        let e = enc(Policy::Enabled, Policy::Enabled);
        assert_eq!(e.dial(), Dial::Mse);
        assert!(e.retry_plain());
        let e = enc(Policy::Enabled, Policy::Forced);
        assert_eq!(e.dial(), Dial::Mse);
        assert!(!e.retry_plain(), "forced never falls back to plaintext");
    }

    #[test]
    fn methods_by_level() {
        let mut e = Encryption::default();
        assert_eq!(e.allowed(), Methods::BOTH);
        e.level = Level::Plaintext;
        assert_eq!(e.allowed(), Methods::PLAINTEXT);
        e.level = Level::Rc4;
        assert_eq!(e.allowed(), Methods::RC4);
    }
}
