//! The RC4 streams of an MSE connection: keys derived from the shared secret and the torrent's
//! info-hash (`SKEY`), the first 1024 bytes of each keystream discarded (the spec's defence
//! against RC4's biased start). RC4 itself is RustCrypto's `rc4`.

use rc4::Rc4;
use rc4::cipher::{KeyInit, StreamCipher};
use sha1::{Digest, Sha1};

use super::dh::KEY_LEN;

/// Keystream bytes thrown away before use.
const DISCARD: usize = 1024;

/// `HASH(parts...)`: SHA-1 over the parts in order.
pub fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// One direction's RC4 stream.
pub struct Stream(Rc4);

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stream")
    }
}

impl Stream {
    /// The stream keyed with `HASH(label, S, SKEY)`, its first 1024 bytes discarded.
    fn new(label: &[u8], secret: &[u8; KEY_LEN], skey: &[u8; 20]) -> Stream {
        let key = hash(&[label, secret, skey]);
        // A 20-byte key is within RC4's 1..=256.
        let mut rc4 = match Rc4::new_from_slice(&key) {
            Ok(r) => r,
            Err(_) => unreachable!("RC4 takes keys of 1 to 256 bytes"),
        };
        let mut skip = [0u8; DISCARD];
        rc4.apply_keystream(&mut skip);
        Stream(rc4)
    }

    /// Encrypts or decrypts `buf` in place (RC4 is its own inverse).
    pub fn apply(&mut self, buf: &mut [u8]) {
        self.0.apply_keystream(buf);
    }
}

/// Both directions of a connection, from one side's point of view.
#[derive(Debug)]
pub struct Streams {
    /// What we send.
    pub out: Stream,
    /// What we receive.
    pub inc: Stream,
}

impl Streams {
    /// The initiator ("A") sends with `keyA` and receives with `keyB`; the receiver the other
    /// way round.
    pub fn new(initiator: bool, secret: &[u8; KEY_LEN], skey: &[u8; 20]) -> Streams {
        let a = Stream::new(b"keyA", secret, skey);
        let b = Stream::new(b"keyB", secret, skey);
        if initiator {
            Streams { out: a, inc: b }
        } else {
            Streams { out: b, inc: a }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_side_sends_the_other_reads() {
        let s = [3u8; KEY_LEN];
        let ih = [9u8; 20];
        let mut a = Streams::new(true, &s, &ih);
        let mut b = Streams::new(false, &s, &ih);
        let msg = b"\x13BitTorrent protocol".to_vec();
        let mut wire = msg.clone();
        a.out.apply(&mut wire);
        assert_ne!(wire, msg);
        b.inc.apply(&mut wire);
        assert_eq!(wire, msg);
        // And back, on the other key.
        let mut wire = msg.clone();
        b.out.apply(&mut wire);
        let mut other = wire.clone();
        a.inc.apply(&mut wire);
        assert_eq!(wire, msg);
        // keyA's stream does not read keyB's.
        Streams::new(true, &s, &ih).out.apply(&mut other);
        assert_ne!(other, msg);
    }

    /// RC4 with the key "Key" (the classic test vector: keystream EB 9F 77 81 B7 34 CA 72 A7 19):
    /// the crate is RC4, and our stream skips 1024 bytes of it.
    #[test]
    fn rc4_is_rc4_and_the_start_is_discarded() {
        let mut r = Rc4::new_from_slice(b"Key").unwrap();
        let mut ks = [0u8; 10];
        r.apply_keystream(&mut ks);
        assert_eq!(
            ks,
            [0xEB, 0x9F, 0x77, 0x81, 0xB7, 0x34, 0xCA, 0x72, 0xA7, 0x19]
        );
        let s = [1u8; KEY_LEN];
        let ih = [2u8; 20];
        let key = hash(&[b"keyA", &s, &ih]);
        let mut raw = Rc4::new_from_slice(&key).unwrap();
        let mut first = vec![0u8; DISCARD + 16];
        raw.apply_keystream(&mut first);
        let mut ours = [0u8; 16];
        Streams::new(true, &s, &ih).out.apply(&mut ours);
        assert_eq!(&ours[..], &first[DISCARD..]);
    }
}
