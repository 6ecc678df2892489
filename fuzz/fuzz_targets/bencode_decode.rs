//! Strict bencode decoding of arbitrary bytes.
//!
//! The decoder is strict (canonical input only), so whatever it accepts must re-encode to exactly
//! the input, and the top-level value must span the whole input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::bencode::{Kind, Value, decode, encode_value};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = decode(data) else {
        return;
    };
    assert_eq!(v.span, 0..data.len(), "top-level span does not cover the input");
    let mut out = Vec::with_capacity(data.len());
    encode_value(&v, &mut out);
    assert_eq!(out, data, "canonical re-encoding differs from the accepted input");
    check_spans(&v, data);
});

/// Every nested value's span must re-encode to exactly the bytes it claims.
fn check_spans(v: &Value<'_>, data: &[u8]) {
    let mut out = Vec::new();
    encode_value(v, &mut out);
    assert_eq!(&data[v.span.clone()], &out[..], "span of a nested value is wrong");
    match &v.kind {
        Kind::List(items) => items.iter().for_each(|x| check_spans(x, data)),
        Kind::Dict(entries) => {
            assert!(
                entries.windows(2).all(|w| w[0].0 < w[1].0),
                "dictionary keys not strictly sorted"
            );
            entries.iter().for_each(|(_, x)| check_spans(x, data));
        }
        Kind::Int(_) | Kind::Bytes(_) => {}
    }
}
