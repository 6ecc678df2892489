//! Recursive Length Prefix encoding (the Ethereum yellow paper, appendix B), encoding only.
//! Hand-written rather than a crate: a legacy transaction needs byte strings, unsigned integers
//! and one flat list, which is these few lines; a dependency would bring derive macros and
//! decoding the node never does.

/// The header of a string or list of `len` bytes: `base` is 0x80 for strings, 0xc0 for lists.
fn header(len: usize, base: u8, out: &mut Vec<u8>) {
    if len < 56 {
        out.push(base + len as u8);
    } else {
        let be = len.to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        out.push(base + 55 + (be.len() - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
}

/// A byte string: a single byte below 0x80 is itself; anything else gets a header.
pub fn bytes(b: &[u8]) -> Vec<u8> {
    if b.len() == 1 && b[0] < 0x80 {
        return vec![b[0]];
    }
    let mut out = Vec::with_capacity(b.len() + 9);
    header(b.len(), 0x80, &mut out);
    out.extend_from_slice(b);
    out
}

/// An unsigned integer given big-endian: its bytes without leading zeros (0 is the empty
/// string).
pub fn uint_be(be: &[u8]) -> Vec<u8> {
    let skip = be.iter().take_while(|b| **b == 0).count();
    bytes(&be[skip..])
}

pub fn uint(v: u128) -> Vec<u8> {
    uint_be(&v.to_be_bytes())
}

/// A list of already encoded items.
pub fn list(items: &[Vec<u8>]) -> Vec<u8> {
    let len = items.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(len + 9);
    header(len, 0xc0, &mut out);
    for i in items {
        out.extend_from_slice(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of the RLP specification.
    #[test]
    fn the_specification_examples() {
        assert_eq!(bytes(b"dog"), b"\x83dog");
        assert_eq!(list(&[bytes(b"cat"), bytes(b"dog")]), b"\xc8\x83cat\x83dog");
        assert_eq!(bytes(b""), [0x80]);
        assert_eq!(list(&[]), [0xc0]);
        assert_eq!(uint(0), [0x80]);
        assert_eq!(bytes(&[0]), [0x00]);
        assert_eq!(uint(15), [0x0f]);
        assert_eq!(uint(1024), [0x82, 0x04, 0x00]);
        let lorem = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit";
        let mut want = vec![0xb8, 0x38];
        want.extend_from_slice(lorem);
        assert_eq!(bytes(lorem), want);
        // [ [], [[]], [ [], [[]] ] ]
        let set = list(&[
            list(&[]),
            list(&[list(&[])]),
            list(&[list(&[]), list(&[list(&[])])]),
        ]);
        assert_eq!(set, [0xc7, 0xc0, 0xc1, 0xc0, 0xc3, 0xc0, 0xc1, 0xc0]);
        // A list longer than 55 bytes takes a length of its length.
        let long = list(&[bytes(&[0xaa; 60])]);
        assert_eq!(&long[..4], &[0xf8, 62, 0xb8, 60]);
    }
}
