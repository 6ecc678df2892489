//! BEP 52 hash messages: `hash request` (21), `hashes` (22) and `hash reject` (23), with which
//! v2 peers fetch the merkle hashes a torrent's info dictionary does not carry (the piece
//! layers, or a piece's block hashes) together with the proof that anchors them to a file's
//! `pieces root`.
//!
//! A request and a reject are the same 48 bytes: the pieces root (32), then the base layer
//! (how many layers above the 16 KiB block layer the hashes start), the index of the first hash
//! in that layer, how many hashes, and how many proof layers above the base to cover (each a
//! 4-byte big-endian integer). `hashes` repeats those fields, then carries the `length` base
//! hashes followed by one uncle hash per proof layer that the base hashes do not imply
//! themselves: the first `log2(length)` layers above the base are computed from the base
//! hashes, so `proof layers + 1 - log2(length)` uncles follow (libtorrent 2.0's arithmetic,
//! which the spec's "first log2(length)-1 proof layers are omitted" describes with the layers
//! counted from one).
//!
//! Parsing here checks the frame (exact lengths, a hash count that agrees with the header);
//! [`HashRequest::check`] checks what holds for any file (a power-of-two length of at most
//! [`MAX_COUNT`], an aligned index, layers below [`MAX_LAYERS`]); whether a request fits a given
//! file's tree is [`crate::merkle`]'s business.
//!
//! ```
//! use ringseed::wire::hashes::{HashMessage, HashRequest, parse};
//! let req = HashRequest { root: [7; 32], base: 2, index: 512, count: 512, proof_layers: 10 };
//! let mut out = Vec::new();
//! HashMessage::Request(req).encode(&mut out);
//! // 4-byte length, the id, then the payload.
//! assert_eq!(out.len(), 4 + 1 + 48);
//! assert_eq!(parse(out[4], &out[5..]), Ok(HashMessage::Request(req)));
//! assert_eq!(req.uncle_count(), 2);
//! ```

use std::fmt;

/// Message ids (BEP 52).
pub const HASH_REQUEST: u8 = 21;
pub const HASHES: u8 = 22;
pub const HASH_REJECT: u8 = 23;

/// Bytes of a request, a reject, and the header of `hashes`.
pub const HEADER_LEN: usize = 32 + 4 * 4;

/// Most base hashes one message may carry: libtorrent 2.0's bound (`validate_hash_request`),
/// which lets a peer ask for all the block hashes of a 128 MiB piece. The spec says a length
/// SHOULD NOT exceed 512, and 512 is what libtorrent asks of the piece layer.
pub const MAX_COUNT: u32 = 8192;

/// Layers above the block layer a request may name (base and proof layers alike). A file's tree
/// is at most 35 layers tall (2^48 bytes, `metainfo::layout::MAX_TOTAL_LENGTH`, is 2^34 blocks),
/// so 64 refuses only what no file has, and keeps every shift by a layer count in range.
pub const MAX_LAYERS: u32 = 64;

/// Longest `hashes` payload: a header, [`MAX_COUNT`] base hashes and an uncle per layer.
pub const MAX_HASHES_PAYLOAD: usize = HEADER_LEN + (MAX_COUNT as usize + MAX_LAYERS as usize) * 32;

/// The fields of a `hash request` (and of a `hash reject`, and the header of `hashes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashRequest {
    /// The `pieces root` of the file whose tree is meant.
    pub root: [u8; 32],
    /// Layers above the block layer (0 = the 16 KiB block hashes).
    pub base: u32,
    /// First hash, counted in the base layer.
    pub index: u32,
    /// Hashes asked for from the base layer.
    pub count: u32,
    /// Layers above the base the proof covers.
    pub proof_layers: u32,
}

/// Why a request breaks the rules that hold for any file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("length {0} is not a power of two from 1 to {MAX_COUNT}")]
    Count(u32),
    #[error("index {index} is not a multiple of the length {count}")]
    Unaligned { index: u32, count: u32 },
    #[error("layer {0} is above the {MAX_LAYERS} layers any file has")]
    Layer(u32),
}

impl HashRequest {
    /// Checks what holds for any file: the length a power of two of at most [`MAX_COUNT`] (the
    /// spec allows a length cut by the end of the layer, but every client pads the layer to a
    /// power of two and asks for whole, aligned runs of it, as libtorrent 2.0 does), the index a
    /// multiple of the length, the layers within [`MAX_LAYERS`].
    pub fn check(&self) -> Result<(), Invalid> {
        if !self.count.is_power_of_two() || self.count > MAX_COUNT {
            return Err(Invalid::Count(self.count));
        }
        if !self.index.is_multiple_of(self.count) {
            return Err(Invalid::Unaligned {
                index: self.index,
                count: self.count,
            });
        }
        for layer in [self.base, self.proof_layers] {
            if layer >= MAX_LAYERS {
                return Err(Invalid::Layer(layer));
            }
        }
        Ok(())
    }

    /// Uncle hashes a `hashes` answer carries after the base hashes: one per proof layer from
    /// the first the base hashes do not imply (`log2(count)` layers up) to `proof_layers`.
    /// Meaningful for a request that passes [`HashRequest::check`].
    pub fn uncle_count(&self) -> u32 {
        let implied = self.count.max(1).trailing_zeros();
        (self.proof_layers + 1).saturating_sub(implied)
    }

    fn encode_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.root);
        for v in [self.base, self.index, self.count, self.proof_layers] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    fn parse_header(p: &[u8]) -> Option<HashRequest> {
        let root: [u8; 32] = p.get(..32)?.try_into().ok()?;
        let field = |i: usize| {
            let b = p.get(32 + 4 * i..36 + 4 * i)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        Some(HashRequest {
            root,
            base: field(0)?,
            index: field(1)?,
            count: field(2)?,
            proof_layers: field(3)?,
        })
    }
}

/// One BEP 52 hash message, borrowing its hashes from the receive buffer.
#[derive(Clone, PartialEq, Eq)]
pub enum HashMessage<'a> {
    Request(HashRequest),
    /// The answer: `hashes` is `req.count` base hashes then `req.uncle_count()` uncles, 32
    /// bytes each.
    Hashes {
        req: HashRequest,
        hashes: &'a [u8],
    },
    Reject(HashRequest),
}

impl fmt::Debug for HashMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashMessage::Request(r) => write!(f, "Request({r:?})"),
            HashMessage::Hashes { req, hashes } => {
                write!(f, "Hashes({req:?}, {} hashes)", hashes.len() / 32)
            }
            HashMessage::Reject(r) => write!(f, "Reject({r:?})"),
        }
    }
}

/// Why a frame is not a well-formed hash message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HashesError {
    #[error("message id {0} is not a BEP 52 hash message")]
    NotHashMessage(u8),
    #[error("payload of {len} bytes, expected {expected}")]
    Length { len: usize, expected: &'static str },
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{got} hashes, the header says {expected}")]
    HashCount { got: usize, expected: u64 },
}

/// Whether a message id is one of BEP 52's hash messages.
pub fn is_hash_message(id: u8) -> bool {
    matches!(id, HASH_REQUEST | HASHES | HASH_REJECT)
}

/// Parses the payload of message `id` (as [`crate::wire::parse_message`] hands it over, in
/// `Message::Unknown`). A request or reject must be exactly [`HEADER_LEN`] bytes (their fields
/// are judged by whoever answers: a bad request earns a reject, not a closed connection);
/// `hashes` must pass [`HashRequest::check`] and carry exactly the hashes its header implies.
pub fn parse(id: u8, payload: &[u8]) -> Result<HashMessage<'_>, HashesError> {
    let header = HashRequest::parse_header(payload);
    match id {
        HASH_REQUEST | HASH_REJECT => {
            let req =
                header
                    .filter(|_| payload.len() == HEADER_LEN)
                    .ok_or(HashesError::Length {
                        len: payload.len(),
                        expected: "48",
                    })?;
            Ok(if id == HASH_REQUEST {
                HashMessage::Request(req)
            } else {
                HashMessage::Reject(req)
            })
        }
        HASHES => {
            let req = header
                .filter(|_| payload.len() <= MAX_HASHES_PAYLOAD)
                .filter(|_| (payload.len() - HEADER_LEN).is_multiple_of(32))
                .ok_or(HashesError::Length {
                    len: payload.len(),
                    expected: "48 + 32 × hashes, within the bound",
                })?;
            req.check()?;
            let hashes = &payload[HEADER_LEN..];
            let expected = u64::from(req.count) + u64::from(req.uncle_count());
            if hashes.len() as u64 != expected * 32 {
                return Err(HashesError::HashCount {
                    got: hashes.len() / 32,
                    expected,
                });
            }
            Ok(HashMessage::Hashes { req, hashes })
        }
        other => Err(HashesError::NotHashMessage(other)),
    }
}

impl HashMessage<'_> {
    /// Appends the whole message (length prefix and id included) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (id, req, hashes): (u8, &HashRequest, &[u8]) = match self {
            HashMessage::Request(r) => (HASH_REQUEST, r, &[]),
            HashMessage::Hashes { req, hashes } => (HASHES, req, hashes),
            HashMessage::Reject(r) => (HASH_REJECT, r, &[]),
        };
        out.extend_from_slice(&((1 + HEADER_LEN + hashes.len()) as u32).to_be_bytes());
        out.push(id);
        req.encode_header(out);
        out.extend_from_slice(hashes);
    }
}

/// Encodes a `hashes` answer to `req` from the hashes themselves.
pub fn encode_hashes(req: &HashRequest, hashes: &[[u8; 32]], out: &mut Vec<u8>) {
    out.extend_from_slice(&((1 + HEADER_LEN + hashes.len() * 32) as u32).to_be_bytes());
    out.push(HASHES);
    req.encode_header(out);
    for h in hashes {
        out.extend_from_slice(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Message, parse_message};

    fn req(base: u32, index: u32, count: u32, proof_layers: u32) -> HashRequest {
        HashRequest {
            root: [0xab; 32],
            base,
            index,
            count,
            proof_layers,
        }
    }

    /// Through the general message parser, as the engine and the magnet fetch receive them.
    fn roundtrip(m: &HashMessage<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out);
        let (msg, used) = parse_message(&out, 1 << 20).unwrap().unwrap();
        assert_eq!(used, out.len());
        let Message::Unknown { id, payload } = msg else {
            panic!("{msg:?}");
        };
        assert!(is_hash_message(id));
        assert_eq!(&parse(id, payload).unwrap(), m);
        out
    }

    #[test]
    fn request_reject_and_hashes_survive_encoding() {
        let r = req(2, 1024, 512, 10);
        let bytes = roundtrip(&HashMessage::Request(r));
        // The wire form, field by field.
        assert_eq!(&bytes[..5], &[0, 0, 0, 49, 21]);
        assert_eq!(&bytes[5..37], &[0xab; 32]);
        assert_eq!(
            &bytes[37..],
            &[0, 0, 0, 2, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0, 10]
        );
        roundtrip(&HashMessage::Reject(r));
        // 512 base hashes imply 9 layers: proof layers 9 and 10 bring an uncle each.
        let hashes: Vec<[u8; 32]> = (0..514u32).map(|i| [i as u8; 32]).collect();
        let mut out = Vec::new();
        encode_hashes(&r, &hashes, &mut out);
        let flat: Vec<u8> = hashes.concat();
        let m = HashMessage::Hashes {
            req: r,
            hashes: &flat,
        };
        assert_eq!(roundtrip(&m), out);
    }

    #[test]
    fn uncles_follow_libtorrents_arithmetic() {
        // The whole layer of 4 hashes under a root 2 layers up: nothing to prove.
        assert_eq!(req(0, 0, 4, 1).uncle_count(), 0);
        assert_eq!(req(0, 0, 4, 0).uncle_count(), 0);
        // 512 of a larger layer, proof up to layer 9 above the base: the bucket root's sibling.
        assert_eq!(req(2, 0, 512, 9).uncle_count(), 1);
        assert_eq!(req(2, 0, 512, 8).uncle_count(), 0);
        // One hash: even its own sibling is an uncle.
        assert_eq!(req(0, 5, 1, 0).uncle_count(), 1);
        assert_eq!(req(0, 5, 1, 3).uncle_count(), 4);
    }

    #[test]
    fn fields_are_bounded() {
        assert_eq!(req(0, 0, 0, 0).check(), Err(Invalid::Count(0)));
        assert_eq!(req(0, 0, 3, 0).check(), Err(Invalid::Count(3)));
        assert_eq!(req(0, 0, 16384, 0).check(), Err(Invalid::Count(16384)));
        assert_eq!(
            req(0, 2, 4, 0).check(),
            Err(Invalid::Unaligned { index: 2, count: 4 })
        );
        assert_eq!(req(64, 0, 4, 0).check(), Err(Invalid::Layer(64)));
        assert_eq!(
            req(0, 0, 4, u32::MAX).check(),
            Err(Invalid::Layer(u32::MAX))
        );
        assert_eq!(req(63, 8192, 8192, 63).check(), Ok(()));
    }

    #[test]
    fn malformed_frames_are_refused() {
        let mut payload = vec![0u8; HEADER_LEN];
        assert!(parse(HASH_REQUEST, &payload).is_ok());
        // A request is exactly 48 bytes.
        assert!(matches!(
            parse(HASH_REQUEST, &payload[..47]),
            Err(HashesError::Length { .. })
        ));
        payload.push(0);
        assert!(matches!(
            parse(HASH_REJECT, &payload),
            Err(HashesError::Length { .. })
        ));
        assert_eq!(parse(7, &payload), Err(HashesError::NotHashMessage(7)));
        // `hashes`: the header must be valid and the count must agree with it.
        let r = req(0, 0, 2, 0);
        let mut out = Vec::new();
        encode_hashes(&r, &[[1; 32], [2; 32]], &mut out);
        assert!(parse(HASHES, &out[5..]).is_ok());
        assert_eq!(
            parse(HASHES, &out[5..out.len() - 32]),
            Err(HashesError::HashCount {
                got: 1,
                expected: 2
            })
        );
        assert!(matches!(
            parse(HASHES, &out[5..out.len() - 1]),
            Err(HashesError::Length { .. })
        ));
        let mut bad = Vec::new();
        encode_hashes(&req(0, 1, 2, 0), &[[1; 32], [2; 32]], &mut bad);
        assert_eq!(
            parse(HASHES, &bad[5..]),
            Err(HashesError::Invalid(Invalid::Unaligned {
                index: 1,
                count: 2
            }))
        );
        // A payload over the bound is refused before its hashes are counted.
        let huge = vec![0u8; MAX_HASHES_PAYLOAD + 32];
        assert!(matches!(
            parse(HASHES, &huge),
            Err(HashesError::Length { .. })
        ));
    }
}
