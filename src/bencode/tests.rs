use super::*;
use proptest::prelude::*;

fn err(input: &[u8]) -> DecodeError {
    decode(input).expect_err("input must be rejected")
}

#[test]
fn decodes_all_types_with_spans() {
    let input = b"d1:ai-42e1:bl3:xyzi0ee1:cd0:0:ee";
    let v = decode(input).unwrap();
    assert_eq!(v.span, 0..input.len());
    assert_eq!(v.get(b"a").unwrap().as_int(), Some(-42));
    let b = v.get(b"b").unwrap();
    assert_eq!(&input[b.span.clone()], b"l3:xyzi0ee");
    assert_eq!(b.as_list().unwrap()[0].as_bytes(), Some(&b"xyz"[..]));
    let c = v.get(b"c").unwrap();
    assert_eq!(c.get(b"").unwrap().as_bytes(), Some(&b""[..]));
    assert!(v.get(b"zz").is_none());
}

#[test]
fn integer_edges() {
    assert_eq!(
        decode(b"i9223372036854775807e").unwrap().as_int(),
        Some(i64::MAX)
    );
    assert_eq!(
        decode(b"i-9223372036854775808e").unwrap().as_int(),
        Some(i64::MIN)
    );
    assert_eq!(
        err(b"i9223372036854775808e").kind,
        ErrorKind::IntegerOverflow
    );
    assert_eq!(
        err(b"i-9223372036854775809e").kind,
        ErrorKind::IntegerOverflow
    );
    assert_eq!(err(b"i-0e").kind, ErrorKind::NegativeZero);
    assert_eq!(err(b"i03e").kind, ErrorKind::LeadingZero);
    assert_eq!(err(b"i-03e").kind, ErrorKind::LeadingZero);
    assert_eq!(err(b"ie").kind, ErrorKind::BadInteger);
    assert_eq!(err(b"i-e").kind, ErrorKind::BadInteger);
    assert_eq!(err(b"i1.5e").kind, ErrorKind::BadInteger);
    assert_eq!(err(b"i+1e").kind, ErrorKind::BadInteger);
    assert_eq!(err(b"i12").kind, ErrorKind::UnexpectedEnd);
}

#[test]
fn string_edges() {
    assert_eq!(err(b"02:ab").kind, ErrorKind::LeadingZero);
    assert!(matches!(
        err(b"5:abc").kind,
        ErrorKind::LengthBeyondInput { .. }
    ));
    assert!(matches!(
        err(b"99999999999999999999999:a").kind,
        ErrorKind::LengthBeyondInput { .. }
    ));
    assert_eq!(err(b"3").kind, ErrorKind::UnexpectedEnd);
    assert_eq!(err(b"-1:a").kind, ErrorKind::UnexpectedByte(b'-'));
}

#[test]
fn dict_strictness_with_offsets() {
    let e = err(b"d1:bi1e1:ai2ee");
    assert_eq!(e.kind, ErrorKind::UnsortedKey("a".into()));
    assert_eq!(e.offset, 7);
    let e = err(b"d1:ai1e1:ai2ee");
    assert_eq!(e.kind, ErrorKind::DuplicateKey("a".into()));
    assert_eq!(err(b"di1ei2ee").kind, ErrorKind::KeyNotString);
    assert_eq!(err(b"d1:a").kind, ErrorKind::UnexpectedEnd);
    // Byte-wise order, not string order: "Z" (0x5a) sorts before "a" (0x61).
    assert!(decode(b"d1:Zi1e1:ai2ee").is_ok());
}

#[test]
fn trailing_and_empty() {
    assert_eq!(err(b"i1ei2e").kind, ErrorKind::TrailingData);
    assert_eq!(err(b"").kind, ErrorKind::UnexpectedEnd);
    let (v, end) = decode_prefix_with(b"d1:ai1eeRAW", Limits::default()).unwrap();
    assert_eq!(end, 8);
    assert_eq!(v.get(b"a").unwrap().as_int(), Some(1));
}

#[test]
fn million_deep_nesting_is_an_error_not_a_crash() {
    let mut input = vec![b'l'; 1_000_000];
    input.extend(std::iter::repeat_n(b'e', 1_000_000));
    let e = err(&input);
    assert_eq!(e.kind, ErrorKind::TooDeep(100));
    assert_eq!(e.offset, 100);
    let mut dicts = Vec::new();
    for _ in 0..1_000_000 {
        dicts.extend_from_slice(b"d1:a");
    }
    assert!(matches!(err(&dicts).kind, ErrorKind::TooDeep(_)));
}

#[test]
fn item_limit() {
    let mut input = b"l".to_vec();
    for _ in 0..100 {
        input.extend_from_slice(b"i1e");
    }
    input.push(b'e');
    let limits = Limits {
        max_depth: 8,
        max_items: 50,
    };
    assert_eq!(
        decode_with(&input, limits).unwrap_err().kind,
        ErrorKind::TooManyItems(50)
    );
    assert!(decode(&input).is_ok());
}

#[test]
fn values_are_small_and_containers_exact() {
    // The memory bounds in `Limits::TORRENT` count on these sizes.
    assert_eq!(std::mem::size_of::<Value<'_>>(), 40);
    assert_eq!(std::mem::size_of::<(&[u8], Value<'_>)>(), 56);
    // Containers are sized by the first pass: nested lists and dictionaries keep their exact
    // element counts, in document order.
    let v = decode(b"ld1:ai1e1:bli1ei2ei3eee0:ldeee").unwrap();
    let l = v.as_list().unwrap();
    assert_eq!(l.len(), 3);
    assert_eq!(l[0].as_dict().unwrap().len(), 2);
    assert_eq!(l[0].get(b"b").unwrap().as_list().unwrap().len(), 3);
    assert_eq!(l[2].as_list().unwrap()[0].as_dict().unwrap().len(), 0);
}

#[test]
fn the_first_pass_finds_errors_deep_inside_and_at_the_limits() {
    // An unsorted key three levels down, after a sibling list: reported where it sits.
    let e = err(b"ld1:ald1:bi1e1:ai2eeee");
    assert_eq!(e.kind, ErrorKind::UnsortedKey("a".into()));
    assert_eq!(e.offset, 13);
    // Exactly at each limit is fine; one past is refused at the value that passes it.
    let limits = Limits {
        max_depth: 3,
        max_items: 4,
    };
    assert!(decode_with(b"lllee1:ae", limits).is_ok());
    let e = decode_with(b"llllee1:ae", limits).unwrap_err();
    assert_eq!((e.kind, e.offset), (ErrorKind::TooDeep(3), 3));
    let e = decode_with(b"lllee1:ai1ee", limits).unwrap_err();
    assert_eq!((e.kind, e.offset), (ErrorKind::TooManyItems(4), 8));
    // A long flat list decodes whole.
    let mut input = b"l".to_vec();
    for _ in 0..100_000 {
        input.extend_from_slice(b"i7e");
    }
    input.push(b'e');
    assert_eq!(decode(&input).unwrap().as_list().unwrap().len(), 100_000);
}

#[test]
fn errors_read_well() {
    let e = err(b"d1:bi1e1:ai2ee");
    assert_eq!(
        e.to_string(),
        "bencode error at byte 7: dictionary key \"a\" is out of sorted order"
    );
}

fn arb_bencode() -> impl Strategy<Value = Bencode> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Bencode::Int),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Bencode::Bytes),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Bencode::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..6),
                inner,
                0..8
            )
            .prop_map(Bencode::Dict),
        ]
    })
}

proptest! {
    #[test]
    fn encode_decode_round_trip(v in arb_bencode()) {
        let bytes = v.encode();
        let decoded = decode(&bytes).unwrap();
        prop_assert_eq!(decoded.span.clone(), 0..bytes.len());
        prop_assert_eq!(Bencode::from(&decoded), v);
        let mut again = Vec::new();
        encode_value(&decoded, &mut again);
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(v) = decode(&input) {
            // Anything accepted is canonical, so it re-encodes to itself.
            let mut again = Vec::new();
            encode_value(&v, &mut again);
            prop_assert_eq!(again, input);
        }
    }
}
