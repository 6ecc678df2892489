//! The peer wire codec on a stranger's bytes: a handshake, then a stream of messages, then an
//! extension handshake. Whatever parses must re-encode to exactly the bytes it came from, and
//! no length may be trusted beyond the bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::wire::extension::ExtHandshake;
use ringseed::wire::{Handshake, Message, parse_message};

const MAX: u32 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(h)) = Handshake::parse(data) {
        assert_eq!(&h.encode()[..], &data[..Handshake::LEN]);
    }
    let mut pos = 0;
    while pos < data.len() {
        match parse_message(&data[pos..], MAX) {
            Ok(Some((msg, used))) => {
                assert!(used >= 4 && used <= 4 + MAX as usize && pos + used <= data.len());
                let mut again = Vec::new();
                msg.encode(&mut again);
                assert_eq!(again, &data[pos..pos + used], "{msg:?}");
                if let Message::Extended { id: 0, payload } = msg {
                    if let Ok(ext) = ExtHandshake::parse(payload) {
                        // What we understood survives our own encoding.
                        let back = ExtHandshake::parse(&ext.encode()).expect("own encoding parses");
                        assert_eq!(back.reqq, ext.reqq);
                        assert_eq!(back.p, ext.p);
                    }
                }
                pos += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
