//! MSE/PE handshakes from a stranger (`ringseed::mse`): neither side ever panics or holds
//! more than its bound, whatever arrives and however it is split; a handshake that completes
//! names the torrent we serve and a method both sides allow.
//!
//! Input: a mode byte, a chunk-size byte, 20 bytes of private key, then the bytes. Mode 0
//! feeds them raw to a responder, mode 1 raw to an initiator (after a real `Yb`-sized
//! prefix), mode 2 builds a real initiator's first and third messages for the responder and
//! flips the input's bytes into them (so the deep states are reached: sync, SKEY, VC,
//! crypto_provide, PadC, IA).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::mse::{Initiator, KeyPair, Methods, Responder, obfuscated};

const IH: [u8; 20] = [0x5a; 20];
const IA: &[u8] = b"\x13BitTorrent protocol\0\0\0\0\0\0\0\0ZZZZZZZZZZZZZZZZZZZZ-RS0000-fuzz-00000";

fn lookup(h: &[u8; 20]) -> Option<[u8; 20]> {
    (*h == obfuscated(&IH)).then_some(IH)
}

fn feed_responder(b: &mut Responder, bytes: &[u8], chunk: usize) {
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk) {
        match b.receive(piece, &mut out, lookup) {
            Ok(Some(done)) => {
                assert_eq!(done.skey, IH);
                return;
            }
            Ok(None) => {}
            Err(_) => return,
        }
        // Yb, PadB, then VC, crypto_select, len(PadD): never more.
        assert!(out.len() <= 96 + 512 + 14);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 22 {
        return;
    }
    let (mode, chunk) = (data[0] % 3, usize::from(data[1]).max(1));
    let mut private = [0u8; 20];
    private.copy_from_slice(&data[2..22]);
    let rest = &data[22..];
    match mode {
        0 => {
            let mut b = Responder::new(KeyPair::from_private(private), Methods::BOTH, true);
            feed_responder(&mut b, rest, chunk);
        }
        1 => {
            let mut out = Vec::new();
            let mut a = Initiator::new(KeyPair::from_private(private), IH, Methods::BOTH, IA, &mut out);
            for piece in rest.chunks(chunk) {
                match a.receive(piece, &mut out) {
                    Ok(Some(done)) => {
                        assert!(done.streams.is_some() == (done.method == ringseed::mse::Method::Rc4));
                        return;
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
            }
        }
        _ => {
            // A real initiator (its key from the input) against a real responder (a fixed
            // key), its bytes then flipped where the input says.
            let mut a_out = Vec::new();
            let mut a = Initiator::new(KeyPair::from_private(private), IH, Methods::BOTH, IA, &mut a_out);
            let mut b = Responder::new(KeyPair::from_private([7; 20]), Methods::BOTH, false);
            let mut b_out = Vec::new();
            if b.receive(&a_out, &mut b_out, lookup).is_err() {
                return;
            }
            let mut step3 = Vec::new();
            if a.receive(&b_out, &mut step3).is_err() {
                return;
            }
            for pair in rest.chunks(3) {
                if let [hi, lo, x] = *pair {
                    let at = usize::from(u16::from_be_bytes([hi, lo])) % (step3.len() + 1);
                    if let Some(byte) = step3.get_mut(at) {
                        *byte ^= x;
                    }
                }
            }
            feed_responder(&mut b, &step3, chunk);
        }
    }
});
