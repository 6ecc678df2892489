//! Canonical bencode encoder.

use std::collections::BTreeMap;

use super::{Kind, Value};

/// An owned bencode value, for building documents. Dictionaries are `BTreeMap`s, so encoding
/// always emits keys in the sorted order BEP 3 requires.
///
/// ```
/// use ringseed::bencode::Bencode;
/// let mut d = Bencode::dict();
/// d.insert("b", Bencode::Int(-2));
/// d.insert("a", Bencode::bytes("x"));
/// assert_eq!(d.encode(), b"d1:a1:x1:bi-2ee");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bencode {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Bencode>),
    Dict(BTreeMap<Vec<u8>, Bencode>),
}

impl Bencode {
    pub fn dict() -> Self {
        Bencode::Dict(BTreeMap::new())
    }

    pub fn bytes(b: impl AsRef<[u8]>) -> Self {
        Bencode::Bytes(b.as_ref().to_vec())
    }

    /// Inserts into a dictionary; a no-op on other types (a programming error, not input).
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: Bencode) {
        debug_assert!(matches!(self, Bencode::Dict(_)), "insert on non-dict");
        if let Bencode::Dict(d) = self {
            d.insert(key.as_ref().to_vec(), value);
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Bencode::Int(i) => put_int(out, *i),
            Bencode::Bytes(b) => put_bytes(out, b),
            Bencode::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Bencode::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    put_bytes(out, k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }
}

impl From<&Value<'_>> for Bencode {
    fn from(v: &Value<'_>) -> Self {
        match &v.kind {
            Kind::Int(i) => Bencode::Int(*i),
            Kind::Bytes(b) => Bencode::Bytes(b.to_vec()),
            Kind::List(l) => Bencode::List(l.iter().map(Bencode::from).collect()),
            Kind::Dict(d) => Bencode::Dict(
                d.iter()
                    .map(|(k, v)| (k.to_vec(), Bencode::from(v)))
                    .collect(),
            ),
        }
    }
}

/// Encodes a borrowed value. For a strictly decoded value this reproduces its input span exactly.
pub fn encode_value(v: &Value<'_>, out: &mut Vec<u8>) {
    match &v.kind {
        Kind::Int(i) => put_int(out, *i),
        Kind::Bytes(b) => put_bytes(out, b),
        Kind::List(l) => {
            out.push(b'l');
            for x in l {
                encode_value(x, out);
            }
            out.push(b'e');
        }
        Kind::Dict(d) => {
            out.push(b'd');
            for (k, x) in d {
                put_bytes(out, k);
                encode_value(x, out);
            }
            out.push(b'e');
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

fn put_int(out: &mut Vec<u8>, i: i64) {
    out.push(b'i');
    out.extend_from_slice(i.to_string().as_bytes());
    out.push(b'e');
}
