//! BEP 9 `ut_metadata`: the info dictionary in 16 KiB pieces, so a peer that starts from a
//! magnet link can fetch it from us (and `magnet_fetch` can fetch it from others). Each message is a bencoded dictionary (`msg_type`, `piece`,
//! and for data `total_size`), a data message followed by the piece's raw bytes.
//!
//! ```
//! use ringseed::wire::metadata::{MetadataMessage, data_message};
//! let req = b"d8:msg_typei0e5:piecei0ee";
//! assert_eq!(MetadataMessage::parse(req), Ok(MetadataMessage::Request(0)));
//! let info = b"d4:name3:abce";
//! let msg = data_message(info, 0).unwrap();
//! assert_eq!(&msg[..], &b"d8:msg_typei1e5:piecei0e10:total_sizei13eed4:name3:abce"[..]);
//! ```

use crate::bencode::{self, Bencode, Limits};

/// The extension's name in the handshake's `m`.
pub const EXTENSION_NAME: &str = "ut_metadata";
/// Our id for it in the handshake's `m`: peers send us `ut_metadata` messages under it.
pub const LOCAL_ID: u8 = 2;
/// Bytes per metadata piece (the last may be shorter).
pub const PIECE_BYTES: usize = 16 * 1024;
/// Longest message accepted from a peer: a request or a reject is a few dozen bytes; data is its
/// dictionary and one piece.
pub const MAX_MESSAGE_BYTES: usize = PIECE_BYTES + 256;

const LIMITS: Limits = Limits {
    max_depth: 2,
    max_items: 16,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMessage {
    Request(u32),
    /// A piece follows the dictionary; `total_size` is the whole metadata's.
    Data {
        piece: u32,
        total_size: u64,
    },
    Reject(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("ut_metadata message of {0} bytes is too long")]
    TooLong(usize),
    #[error("ut_metadata message is not valid bencode: {0}")]
    Bencode(#[from] bencode::DecodeError),
    #[error("ut_metadata message lacks a valid {0}")]
    Field(&'static str),
    #[error("unknown ut_metadata msg_type {0}")]
    UnknownType(i64),
}

impl MetadataMessage {
    /// Parses a message's dictionary (a data message's trailing bytes are not looked at).
    pub fn parse(payload: &[u8]) -> Result<MetadataMessage, MetadataError> {
        Self::parse_with_piece(payload).map(|(m, _)| m)
    }

    /// Parses a message and returns the bytes after its dictionary too: the piece of a data
    /// message (for the other kinds they mean nothing and a caller ignores them).
    ///
    /// ```
    /// use ringseed::wire::metadata::{MetadataMessage, data_message};
    /// let msg = data_message(b"d4:name3:abce", 0).unwrap();
    /// let (m, piece) = MetadataMessage::parse_with_piece(&msg).unwrap();
    /// assert_eq!(m, MetadataMessage::Data { piece: 0, total_size: 13 });
    /// assert_eq!(piece, b"d4:name3:abce");
    /// ```
    pub fn parse_with_piece(payload: &[u8]) -> Result<(MetadataMessage, &[u8]), MetadataError> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(MetadataError::TooLong(payload.len()));
        }
        let (v, dict_len) = bencode::decode_prefix_with(payload, LIMITS)?;
        let rest = payload.get(dict_len..).unwrap_or_default();
        let int = |k: &[u8]| v.get(k).and_then(|x| x.as_int());
        let kind = int(b"msg_type").ok_or(MetadataError::Field("msg_type"))?;
        let piece = int(b"piece")
            .and_then(|p| u32::try_from(p).ok())
            .ok_or(MetadataError::Field("piece"))?;
        let message = match kind {
            0 => MetadataMessage::Request(piece),
            1 => {
                let total_size = int(b"total_size")
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or(MetadataError::Field("total_size"))?;
                MetadataMessage::Data { piece, total_size }
            }
            2 => MetadataMessage::Reject(piece),
            other => return Err(MetadataError::UnknownType(other)),
        };
        Ok((message, rest))
    }
}

/// How many pieces metadata of `len` bytes has.
pub fn piece_count(len: usize) -> u32 {
    len.div_ceil(PIECE_BYTES) as u32
}

fn header(kind: i64, piece: u32, total_size: Option<usize>) -> Vec<u8> {
    let mut d = Bencode::dict();
    d.insert("msg_type", Bencode::Int(kind));
    d.insert("piece", Bencode::Int(i64::from(piece)));
    if let Some(t) = total_size {
        d.insert("total_size", Bencode::Int(t as i64));
    }
    d.encode()
}

/// The data message for `piece` of `metadata`, or `None` when there is no such piece.
pub fn data_message(metadata: &[u8], piece: u32) -> Option<Vec<u8>> {
    let start = (piece as usize).checked_mul(PIECE_BYTES)?;
    if start >= metadata.len() {
        return None;
    }
    let end = (start + PIECE_BYTES).min(metadata.len());
    let mut out = header(1, piece, Some(metadata.len()));
    out.extend_from_slice(&metadata[start..end]);
    Some(out)
}

/// The request message for `piece`: what a peer that starts from a magnet link sends.
pub fn request_message(piece: u32) -> Vec<u8> {
    header(0, piece, None)
}

/// The reject message for `piece`.
pub fn reject_message(piece: u32) -> Vec<u8> {
    header(2, piece, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_metadata_exactly() {
        let meta: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        assert_eq!(piece_count(meta.len()), 3);
        let mut joined = Vec::new();
        for p in 0..3 {
            let m = data_message(&meta, p).unwrap();
            let (_, dict_len) = bencode::decode_prefix_with(&m, LIMITS).unwrap();
            assert_eq!(
                MetadataMessage::parse(&m),
                Ok(MetadataMessage::Data {
                    piece: p,
                    total_size: 40_000
                })
            );
            joined.extend_from_slice(&m[dict_len..]);
        }
        assert_eq!(joined, meta);
        let m = data_message(&meta, 2).unwrap();
        let (_, piece) = MetadataMessage::parse_with_piece(&m).unwrap();
        assert_eq!(piece, &meta[2 * PIECE_BYTES..]);
        assert_eq!(data_message(&meta, 3), None);
        assert_eq!(data_message(&meta, u32::MAX), None);
        assert_eq!(piece_count(0), 0);
        assert_eq!(piece_count(PIECE_BYTES), 1);
    }

    #[test]
    fn bad_messages_are_errors() {
        assert_eq!(
            MetadataMessage::parse(&reject_message(7)),
            Ok(MetadataMessage::Reject(7))
        );
        assert_eq!(
            MetadataMessage::parse(&request_message(u32::MAX)),
            Ok(MetadataMessage::Request(u32::MAX))
        );
        for bad in [
            &b""[..],
            b"le",
            b"d5:piecei0ee",
            b"d8:msg_typei0ee",
            b"d8:msg_typei0e5:piecei-1ee",
            b"d8:msg_typei0e5:piecei4294967296ee",
            b"d8:msg_typei9e5:piecei0ee",
            b"d8:msg_typei1e5:piecei0ee",
            b"d8:msg_typei0e5:piece",
        ] {
            assert!(MetadataMessage::parse(bad).is_err(), "{bad:?}");
        }
        assert!(MetadataMessage::parse(&vec![b'x'; MAX_MESSAGE_BYTES + 1]).is_err());
    }
}
