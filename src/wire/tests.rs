use super::extension::ExtHandshake;
use super::*;
use proptest::prelude::*;

#[test]
fn handshake_round_trip_and_bits() {
    let h = Handshake::new([1; 20], *b"-RS0100-abcdefghijkl");
    let bytes = h.encode();
    assert!(h.supports_fast() && h.supports_extensions() && !h.supports_dht());
    assert_eq!(Handshake::parse(&bytes).unwrap(), Some(h));
    assert_eq!(Handshake::parse(&bytes[..67]).unwrap(), None);
    assert_eq!(
        Handshake::parse_prefix(&bytes[..48]).unwrap(),
        Some((h.reserved, [1; 20]))
    );
    let mut bad = bytes;
    bad[3] = b'x';
    assert_eq!(Handshake::parse(&bad[..4]), Err(WireError::BadProtocol));
    assert_eq!(
        Handshake::parse(b"GET / HTTP/1.1"),
        Err(WireError::BadProtocol)
    );
    assert_eq!(Handshake::parse(&[]).unwrap(), None);
}

#[test]
fn lengths_are_bounded_before_buffering() {
    let huge = [0x80, 0, 0, 0];
    assert_eq!(
        parse_message(&huge, 1 << 20),
        Err(WireError::TooLong {
            len: 1 << 31,
            max: 1 << 20
        })
    );
    assert_eq!(
        parse_message(&[0, 0, 0, 2, 4, 0], 100).unwrap_err(),
        WireError::BadLength {
            id: 4,
            len: 1,
            expected: "4"
        }
    );
    assert_eq!(
        parse_message(&[0, 0, 0, 1, 7], 100).unwrap_err(),
        WireError::BadLength {
            id: 7,
            len: 0,
            expected: "at least 8"
        }
    );
    assert_eq!(
        parse_message(&[0, 0, 0, 1, 20], 100).unwrap_err(),
        WireError::BadLength {
            id: 20,
            len: 0,
            expected: "at least 1"
        }
    );
    assert_eq!(parse_message(&[0, 0, 0], 100).unwrap(), None);
    assert_eq!(parse_message(&[0, 0, 0, 5, 4, 0], 100).unwrap(), None);
    let (m, n) = parse_message(&[0, 0, 0, 3, 99, 1, 2], 100)
        .unwrap()
        .unwrap();
    assert_eq!(
        m,
        Message::Unknown {
            id: 99,
            payload: &[1, 2]
        }
    );
    assert_eq!(n, 7);
}

fn arb_message() -> impl Strategy<Value = (u8, u32, u32, u32, Vec<u8>)> {
    (
        0u8..22,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
}

fn build<'a>(kind: u8, a: u32, b: u32, c: u32, data: &'a [u8]) -> Message<'a> {
    let r = BlockRequest {
        index: a,
        begin: b,
        length: c,
    };
    match kind {
        0 => Message::KeepAlive,
        1 => Message::Choke,
        2 => Message::Unchoke,
        3 => Message::Interested,
        4 => Message::NotInterested,
        5 => Message::Have(a),
        6 => Message::Bitfield(data),
        7 => Message::Request(r),
        8 => Message::Piece {
            index: a,
            begin: b,
            data,
        },
        9 => Message::Cancel(r),
        10 => Message::Port(a as u16),
        11 => Message::Suggest(a),
        12 => Message::HaveAll,
        13 => Message::HaveNone,
        14 => Message::Reject(r),
        15 => Message::AllowedFast(a),
        16 => Message::Extended {
            id: a as u8,
            payload: data,
        },
        _ => Message::Unknown {
            id: 100 + kind,
            payload: data,
        },
    }
}

proptest! {
    #[test]
    fn messages_round_trip((kind, a, b, c, data) in arb_message()) {
        let m = build(kind, a, b, c, &data);
        let mut out = Vec::new();
        m.encode(&mut out);
        out.extend_from_slice(b"next");
        let (parsed, used) = parse_message(&out, 1 << 20).unwrap().unwrap();
        prop_assert_eq!(parsed, m);
        prop_assert_eq!(&out[used..], b"next");
        // Every strict prefix asks for more bytes rather than misparsing.
        for cut in 0..used {
            prop_assert_eq!(parse_message(&out[..cut], 1 << 20).unwrap(), None);
        }
    }

    #[test]
    fn garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = parse_message(&buf, 1 << 16);
        let _ = Handshake::parse(&buf);
        let _ = ExtHandshake::parse(&buf);
    }
}

#[test]
fn extension_handshake_round_trip() {
    let h = ExtHandshake {
        m: vec![("ut_metadata".into(), 2), ("ut_pex".into(), 1)],
        v: Some("ringseed 0.1".into()),
        reqq: Some(2000),
        yourip: Some("127.0.0.5".parse().unwrap()),
        p: Some(6881),
        metadata_size: Some(31_337),
        upload_only: true,
    };
    let bytes = h.encode();
    let mut back = ExtHandshake::parse(&bytes).unwrap();
    back.m.sort();
    let mut want = h.clone();
    want.m.sort();
    assert_eq!(back, want);
    assert_eq!(h.id_of("ut_pex"), Some(1));
    assert_eq!(h.id_of("lt_donthave"), None);
    assert!(ExtHandshake::parse(b"i1e").is_err());
    assert!(ExtHandshake::parse(&[b'l'; 100]).is_err());
}
