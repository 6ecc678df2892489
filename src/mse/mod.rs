//! Message Stream Encryption / Protocol Encryption (MSE/PE), the obfuscated handshake and RC4
//! payload encryption that libtorrent, qBittorrent, Transmission and Vuze speak.
//!
//! - [`dh`]: the 768-bit Diffie-Hellman exchange (`crypto-bigint`).
//! - [`cipher`]: the RC4 streams and their keys (`rc4`).
//! - [`handshake`]: the initiator's and responder's state machines, with no I/O.
//!
//! The engine wiring (detecting MSE on the listening port, dialling encrypted, the policy
//! keys) is separate; this module only decides bytes.

pub mod cipher;
pub mod dh;
pub mod handshake;

pub use cipher::{Stream, Streams};
pub use dh::KeyPair;
pub use handshake::{Done, Initiator, Method, Methods, MseError, Responder, is_plain};

/// `HASH('req2', SKEY)`: how an MSE initiator names a torrent; a responder keeps this for each
/// torrent it serves to find the one asked for.
pub fn obfuscated(info_hash: &[u8; 20]) -> [u8; 20] {
    cipher::hash(&[b"req2", info_hash])
}

#[cfg(test)]
mod tests;
