//! The two state machines against each other, in every chunking, and against hostile input.

use super::handshake::{MAX_IA, MAX_PAD};
use super::*;

const IH: [u8; 20] = [0x42; 20];
const BT: &[u8] = b"\x13BitTorrent protocol\0\0\0\0\0\0\0\0 info-hash.........peer-id............";

fn lookup(h: &[u8; 20]) -> Option<[u8; 20]> {
    (*h == obfuscated(&IH)).then_some(IH)
}

/// Runs a handshake, delivering each side's bytes in chunks of `chunk` (then `extra` payload
/// from A after its handshake, before B has answered), and returns both ends.
fn run(
    provide: Methods,
    allow: Methods,
    prefer_rc4: bool,
    chunk: usize,
    extra: &[u8],
) -> (Done, Done) {
    let mut a_out = Vec::new();
    let mut a = Initiator::new(KeyPair::generate(), IH, provide, BT, &mut a_out);
    let mut b = Responder::new(KeyPair::generate(), allow, prefer_rc4);
    let (mut a_done, mut b_done) = (None, None);
    let mut b_out = Vec::new();
    let mut sent_extra = false;
    for _ in 0..10_000 {
        if a_done.is_some() && b_done.is_some() {
            break;
        }
        // A → B
        let take = a_out.len().min(chunk);
        let piece: Vec<u8> = a_out.drain(..take).collect();
        if b_done.is_none() {
            if let Some(d) = b.receive(&piece, &mut b_out, lookup).unwrap() {
                b_done = Some(d);
            }
        } else if let Some(d) = b_done.as_mut() {
            let mut p = piece;
            if let Some(s) = d.streams.as_mut() {
                s.inc.apply(&mut p);
            }
            d.payload.extend_from_slice(&p);
        }
        // B → A
        let take = b_out.len().min(chunk);
        let piece: Vec<u8> = b_out.drain(..take).collect();
        if a_done.is_none() {
            let before = a_out.len();
            if let Some(d) = a.receive(&piece, &mut a_out).unwrap() {
                a_done = Some(d);
            }
            if !sent_extra && a_out.len() > before {
                // Step 3 was just written: A pipelines payload right behind it, before B
                // answers (plaintext payload: only used with the plaintext method).
                a_out.extend_from_slice(extra);
                sent_extra = true;
            }
        }
    }
    (a_done.expect("A finished"), b_done.expect("B finished"))
}

#[test]
fn rc4_both_ways_in_any_chunking() {
    for chunk in [1, 7, 20, 96, 97, 500, 4096] {
        let (mut a, mut b) = run(Methods::BOTH, Methods::BOTH, true, chunk, b"");
        assert_eq!((a.method, b.method), (Method::Rc4, Method::Rc4));
        assert_eq!(b.skey, IH);
        assert_eq!(b.payload, BT, "B read A's initial payload");
        assert!(a.payload.is_empty());
        // The payload streams continue where the handshake left them.
        let (sa, sb) = (a.streams.as_mut().unwrap(), b.streams.as_mut().unwrap());
        let mut m = b"a block of data".to_vec();
        sa.out.apply(&mut m);
        sb.inc.apply(&mut m);
        assert_eq!(m, b"a block of data");
        let mut m = b"and an answer".to_vec();
        sb.out.apply(&mut m);
        sa.inc.apply(&mut m);
        assert_eq!(m, b"and an answer");
    }
}

#[test]
fn plaintext_after_an_obfuscated_handshake() {
    for chunk in [1, 13, 4096] {
        let (a, b) = run(
            Methods::BOTH,
            Methods::BOTH,
            false,
            chunk,
            b"\0\0\0\x01\x02",
        );
        assert_eq!((a.method, b.method), (Method::Plaintext, Method::Plaintext));
        assert!(a.streams.is_none() && b.streams.is_none());
        // IA was encrypted in the handshake, the pipelined bytes were not.
        assert_eq!(b.payload, [BT, b"\0\0\0\x01\x02"].concat());
    }
}

#[test]
fn the_responders_policy_decides() {
    let (a, _) = run(Methods::BOTH, Methods::RC4, false, 64, b"");
    assert_eq!(
        a.method,
        Method::Rc4,
        "plaintext not allowed: RC4 although not preferred"
    );
    let (a, _) = run(Methods::PLAINTEXT, Methods::BOTH, true, 64, b"");
    assert_eq!(a.method, Method::Plaintext, "only plaintext provided");
    let mut out = Vec::new();
    let mut a = Initiator::new(KeyPair::generate(), IH, Methods::PLAINTEXT, BT, &mut out);
    let mut b = Responder::new(KeyPair::generate(), Methods::RC4, false);
    let mut back = Vec::new();
    let r = b.receive(&out, &mut back, lookup);
    assert_eq!(r.unwrap().map(|d| d.method), None);
    out.clear();
    a.receive(&back, &mut out).unwrap();
    assert_eq!(
        b.receive(&out, &mut back, lookup).err(),
        Some(MseError::NoCommonMethod {
            provided: 1,
            allowed: 2
        })
    );
}

#[test]
fn an_unknown_torrent_is_refused() {
    let mut out = Vec::new();
    let mut a = Initiator::new(KeyPair::generate(), [1; 20], Methods::BOTH, BT, &mut out);
    let mut b = Responder::new(KeyPair::generate(), Methods::BOTH, true);
    let mut back = Vec::new();
    assert!(b.receive(&out, &mut back, lookup).unwrap().is_none());
    out.clear();
    assert!(a.receive(&back, &mut out).unwrap().is_none());
    assert_eq!(
        b.receive(&out, &mut back, lookup).err(),
        Some(MseError::UnknownTorrent)
    );
}

/// An endless pad instead of `HASH('req1', S)`: refused once the spec's 512 bytes (plus the
/// hash) are past, whatever the chunking; same for the initiator's search for `ENCRYPT(VC)`.
#[test]
fn endless_padding_is_cut_off_at_the_bound() {
    let ya = KeyPair::generate();
    let mut b = Responder::new(KeyPair::generate(), Methods::BOTH, true);
    let mut back = Vec::new();
    assert!(b.receive(ya.public(), &mut back, lookup).unwrap().is_none());
    let junk = vec![0x5au8; MAX_PAD + 19];
    assert!(b.receive(&junk, &mut back, lookup).unwrap().is_none());
    assert_eq!(
        b.receive(&[0x5a], &mut back, lookup).err(),
        Some(MseError::SyncNotFound)
    );

    let mut out = Vec::new();
    let mut a = Initiator::new(KeyPair::generate(), IH, Methods::BOTH, BT, &mut out);
    let yb = KeyPair::generate();
    let mut pad = yb.public().to_vec();
    pad.extend(vec![0u8; MAX_PAD + 7]);
    assert!(a.receive(&pad, &mut out).unwrap().is_none());
    assert_eq!(
        a.receive(&[0], &mut out).err(),
        Some(MseError::SyncNotFound)
    );
}

/// A responder that has answered a real `Ya`, and a step 3 for it built by hand with the real
/// secret: `HASH('req1', S)`, the obfuscated info-hash, then `body` encrypted with keyA (as an
/// initiator does) or, if not `as_initiator`, with keyB.
fn forged_step3(as_initiator: bool, mut body: Vec<u8>) -> (Responder, Vec<u8>) {
    let ka = KeyPair::generate();
    let mut b = Responder::new(KeyPair::generate(), Methods::BOTH, true);
    let mut back = Vec::new();
    b.receive(ka.public(), &mut back, lookup).unwrap();
    let mut yb = [0u8; 96];
    yb.copy_from_slice(&back[..96]);
    let s = ka.shared(&yb).unwrap();
    let mut msg = cipher::hash(&[b"req1", &s]).to_vec();
    let req3 = cipher::hash(&[b"req3", &s]);
    msg.extend(obfuscated(&IH).iter().zip(req3).map(|(x, y)| x ^ y));
    Streams::new(as_initiator, &s, &IH).out.apply(&mut body);
    msg.extend(body);
    (b, msg)
}

#[test]
fn degenerate_keys_and_long_fields_are_refused() {
    let mut b = Responder::new(KeyPair::generate(), Methods::BOTH, true);
    let mut back = Vec::new();
    let mut one = [0u8; 96];
    one[95] = 1;
    assert!(matches!(
        b.receive(&one, &mut back, lookup),
        Err(MseError::Key(_))
    ));
    // A forged step 3 with PadC of 513 bytes, and one with an IA past the bound: built with
    // the real keys, so only the length is wrong.
    for (pad, ia) in [(MAX_PAD + 1, 0), (0, MAX_IA + 1)] {
        let mut enc = vec![0u8; 8];
        enc.extend(3u32.to_be_bytes());
        enc.extend((pad as u16).to_be_bytes());
        enc.extend(vec![0u8; pad.min(MAX_PAD)]);
        enc.extend((ia as u16).to_be_bytes());
        let (mut b, msg) = forged_step3(true, enc);
        let mut back = Vec::new();
        let want = if pad > MAX_PAD {
            MseError::PadTooLong(pad)
        } else {
            MseError::PayloadTooLong(ia)
        };
        assert_eq!(b.receive(&msg, &mut back, lookup).err(), Some(want));
    }
}

#[test]
fn a_wrong_verification_constant_is_refused() {
    // Encrypted with keyB (the responder's own key) instead of keyA.
    let (mut b, msg) = forged_step3(false, vec![0u8; 14]);
    let mut back = Vec::new();
    assert_eq!(
        b.receive(&msg, &mut back, lookup).err(),
        Some(MseError::BadVc)
    );
}

#[test]
fn plain_handshakes_are_told_apart() {
    assert_eq!(is_plain(b""), None);
    assert_eq!(is_plain(b"\x13BitTor"), None);
    assert_eq!(is_plain(b"\x13BitTorrent protocol\0\0"), Some(true));
    assert_eq!(is_plain(b"\x13BitTorrenX"), Some(false));
    assert_eq!(is_plain(&[0x8f, 0x13]), Some(false));
}
