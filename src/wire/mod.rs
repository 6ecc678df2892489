//! The peer wire protocol as a pure codec: handshake, BEP 3 messages, BEP 6 fast extension and
//! BEP 10 extension messages. No I/O: bytes in, messages out, and back.
//!
//! Every length on the wire is checked against a bound before anything is buffered or
//! allocated for it, so a peer that announces a 2 GiB message is cut off at its first four bytes.

pub mod extension;
pub mod fast;
pub mod hashes;
pub mod metadata;
pub mod pex;

use std::fmt;

/// `pstr` of the BitTorrent handshake.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// BEP 3 block size; requests larger than this are refused unless configured otherwise.
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// Reserved-bit positions (byte index, mask).
const FAST_BIT: (usize, u8) = (7, 0x04);
const EXTENSION_BIT: (usize, u8) = (5, 0x10);
const DHT_BIT: (usize, u8) = (7, 0x01);
/// BEP 52: the sender speaks v2 (set by libtorrent 2.0 for v2 and hybrid torrents).
const V2_BIT: (usize, u8) = (7, 0x10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("handshake protocol string is not \"BitTorrent protocol\"")]
    BadProtocol,
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong { len: u32, max: u32 },
    #[error("message id {id} with a payload of {len} bytes (expected {expected})")]
    BadLength {
        id: u8,
        len: u32,
        expected: &'static str,
    },
}

/// Reserved bytes and info-hash: the part of a handshake that routes a connection.
pub type HandshakePrefix = ([u8; 8], [u8; 20]);

/// The 68-byte handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
}

impl Handshake {
    pub const LEN: usize = 68;

    /// A handshake advertising the fast and extension protocols.
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Self {
        let mut reserved = [0u8; 8];
        reserved[FAST_BIT.0] |= FAST_BIT.1;
        reserved[EXTENSION_BIT.0] |= EXTENSION_BIT.1;
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    /// Parses the first part of a handshake: `Ok(None)` until 48 bytes (through the info-hash)
    /// are there, so a listener can route by info-hash before the peer id arrives.
    pub fn parse_prefix(buf: &[u8]) -> Result<Option<HandshakePrefix>, WireError> {
        // Reject a wrong protocol string as soon as its first byte disagrees.
        let have = buf.len().min(20);
        let mut expected = [0u8; 20];
        expected[0] = 19;
        expected[1..].copy_from_slice(PROTOCOL);
        if buf[..have] != expected[..have] {
            return Err(WireError::BadProtocol);
        }
        if buf.len() < 48 {
            return Ok(None);
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&buf[20..28]);
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&buf[28..48]);
        Ok(Some((reserved, info_hash)))
    }

    /// Parses a whole handshake; `Ok(None)` while fewer than 68 bytes are buffered.
    pub fn parse(buf: &[u8]) -> Result<Option<Handshake>, WireError> {
        let Some((reserved, info_hash)) = Self::parse_prefix(buf)? else {
            return Ok(None);
        };
        if buf.len() < Self::LEN {
            return Ok(None);
        }
        let mut peer_id = [0u8; 20];
        peer_id.copy_from_slice(&buf[48..68]);
        Ok(Some(Handshake {
            reserved,
            info_hash,
            peer_id,
        }))
    }

    pub fn encode(&self) -> [u8; 68] {
        let mut out = [0u8; 68];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    pub fn supports_fast(&self) -> bool {
        self.reserved[FAST_BIT.0] & FAST_BIT.1 != 0
    }

    pub fn supports_extensions(&self) -> bool {
        self.reserved[EXTENSION_BIT.0] & EXTENSION_BIT.1 != 0
    }

    pub fn supports_dht(&self) -> bool {
        self.reserved[DHT_BIT.0] & DHT_BIT.1 != 0
    }

    /// The same handshake announcing BEP 52 (v2) support, for a v2 or hybrid torrent: a hybrid
    /// torrent's peer may then answer with the truncated v2 info-hash, upgrading the connection.
    pub fn with_v2(mut self, v2: bool) -> Self {
        if v2 {
            self.reserved[V2_BIT.0] |= V2_BIT.1;
        }
        self
    }

    pub fn supports_v2(&self) -> bool {
        self.reserved[V2_BIT.0] & V2_BIT.1 != 0
    }
}

/// A block request (also the payload of `cancel` and `reject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRequest {
    pub index: u32,
    pub begin: u32,
    pub length: u32,
}

/// One peer wire message, borrowing its payload from the receive buffer.
#[derive(Clone, PartialEq, Eq)]
pub enum Message<'a> {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(&'a [u8]),
    Request(BlockRequest),
    Piece {
        index: u32,
        begin: u32,
        data: &'a [u8],
    },
    Cancel(BlockRequest),
    /// DHT port (BEP 5).
    Port(u16),
    /// BEP 6.
    Suggest(u32),
    HaveAll,
    HaveNone,
    Reject(BlockRequest),
    AllowedFast(u32),
    /// BEP 10: extended message id (0 = extension handshake) and its payload.
    Extended {
        id: u8,
        payload: &'a [u8],
    },
    /// A message id this codec does not know; its payload is skipped, as BEP 3 asks.
    Unknown {
        id: u8,
        payload: &'a [u8],
    },
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Bitfield(b) => write!(f, "Bitfield({} bytes)", b.len()),
            Message::Piece { index, begin, data } => {
                write!(
                    f,
                    "Piece {{ index: {index}, begin: {begin}, len: {} }}",
                    data.len()
                )
            }
            Message::Extended { id, payload } => {
                write!(f, "Extended {{ id: {id}, len: {} }}", payload.len())
            }
            Message::Unknown { id, payload } => {
                write!(f, "Unknown {{ id: {id}, len: {} }}", payload.len())
            }
            Message::KeepAlive => f.write_str("KeepAlive"),
            Message::Choke => f.write_str("Choke"),
            Message::Unchoke => f.write_str("Unchoke"),
            Message::Interested => f.write_str("Interested"),
            Message::NotInterested => f.write_str("NotInterested"),
            Message::Have(i) => write!(f, "Have({i})"),
            Message::Request(r) => write!(f, "Request({r:?})"),
            Message::Cancel(r) => write!(f, "Cancel({r:?})"),
            Message::Port(p) => write!(f, "Port({p})"),
            Message::Suggest(i) => write!(f, "Suggest({i})"),
            Message::HaveAll => f.write_str("HaveAll"),
            Message::HaveNone => f.write_str("HaveNone"),
            Message::Reject(r) => write!(f, "Reject({r:?})"),
            Message::AllowedFast(i) => write!(f, "AllowedFast({i})"),
        }
    }
}

mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 0x0d;
    pub const HAVE_ALL: u8 = 0x0e;
    pub const HAVE_NONE: u8 = 0x0f;
    pub const REJECT: u8 = 0x10;
    pub const ALLOWED_FAST: u8 = 0x11;
    pub const EXTENDED: u8 = 20;
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses one message from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the message and the bytes it used.
/// `max_len` bounds the length prefix (payload + id); anything longer is an error at once.
///
/// ```
/// use ringseed::wire::{parse_message, Message};
/// let buf = [0, 0, 0, 5, 4, 0, 0, 0, 7, 0xff];
/// let (msg, used) = parse_message(&buf, 1 << 20).unwrap().unwrap();
/// assert_eq!(msg, Message::Have(7));
/// assert_eq!(used, 9);
/// ```
pub fn parse_message(buf: &[u8], max_len: u32) -> Result<Option<(Message<'_>, usize)>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = be32(buf);
    if len > max_len {
        return Err(WireError::TooLong { len, max: max_len });
    }
    let total = 4 + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    if len == 0 {
        return Ok(Some((Message::KeepAlive, 4)));
    }
    let id = buf[4];
    let p = &buf[5..total];
    let exact = |n: usize, expected: &'static str| {
        if p.len() == n {
            Ok(())
        } else {
            Err(WireError::BadLength {
                id,
                len: p.len() as u32,
                expected,
            })
        }
    };
    let block = |p: &[u8]| BlockRequest {
        index: be32(p),
        begin: be32(&p[4..]),
        length: be32(&p[8..]),
    };
    let msg = match id {
        id::CHOKE => exact(0, "0").map(|_| Message::Choke)?,
        id::UNCHOKE => exact(0, "0").map(|_| Message::Unchoke)?,
        id::INTERESTED => exact(0, "0").map(|_| Message::Interested)?,
        id::NOT_INTERESTED => exact(0, "0").map(|_| Message::NotInterested)?,
        id::HAVE_ALL => exact(0, "0").map(|_| Message::HaveAll)?,
        id::HAVE_NONE => exact(0, "0").map(|_| Message::HaveNone)?,
        id::HAVE => exact(4, "4").map(|_| Message::Have(be32(p)))?,
        id::SUGGEST => exact(4, "4").map(|_| Message::Suggest(be32(p)))?,
        id::ALLOWED_FAST => exact(4, "4").map(|_| Message::AllowedFast(be32(p)))?,
        id::REQUEST => exact(12, "12").map(|_| Message::Request(block(p)))?,
        id::CANCEL => exact(12, "12").map(|_| Message::Cancel(block(p)))?,
        id::REJECT => exact(12, "12").map(|_| Message::Reject(block(p)))?,
        id::PORT => exact(2, "2").map(|_| Message::Port(u16::from_be_bytes([p[0], p[1]])))?,
        id::BITFIELD => Message::Bitfield(p),
        id::PIECE => {
            if p.len() < 8 {
                return Err(WireError::BadLength {
                    id,
                    len: p.len() as u32,
                    expected: "at least 8",
                });
            }
            Message::Piece {
                index: be32(p),
                begin: be32(&p[4..]),
                data: &p[8..],
            }
        }
        id::EXTENDED => {
            if p.is_empty() {
                return Err(WireError::BadLength {
                    id,
                    len: 0,
                    expected: "at least 1",
                });
            }
            Message::Extended {
                id: p[0],
                payload: &p[1..],
            }
        }
        other => Message::Unknown {
            id: other,
            payload: p,
        },
    };
    Ok(Some((msg, total)))
}

impl Message<'_> {
    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut head = |len: usize, id: u8| {
            out.extend_from_slice(&((len + 1) as u32).to_be_bytes());
            out.push(id);
        };
        match self {
            Message::KeepAlive => out.extend_from_slice(&[0; 4]),
            Message::Choke => head(0, id::CHOKE),
            Message::Unchoke => head(0, id::UNCHOKE),
            Message::Interested => head(0, id::INTERESTED),
            Message::NotInterested => head(0, id::NOT_INTERESTED),
            Message::HaveAll => head(0, id::HAVE_ALL),
            Message::HaveNone => head(0, id::HAVE_NONE),
            Message::Have(i) => {
                head(4, id::HAVE);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Message::Suggest(i) => {
                head(4, id::SUGGEST);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Message::AllowedFast(i) => {
                head(4, id::ALLOWED_FAST);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Message::Request(r) | Message::Cancel(r) | Message::Reject(r) => {
                let id = match self {
                    Message::Request(_) => id::REQUEST,
                    Message::Cancel(_) => id::CANCEL,
                    _ => id::REJECT,
                };
                head(12, id);
                out.extend_from_slice(&r.index.to_be_bytes());
                out.extend_from_slice(&r.begin.to_be_bytes());
                out.extend_from_slice(&r.length.to_be_bytes());
            }
            Message::Port(p) => {
                head(2, id::PORT);
                out.extend_from_slice(&p.to_be_bytes());
            }
            Message::Bitfield(b) => {
                head(b.len(), id::BITFIELD);
                out.extend_from_slice(b);
            }
            Message::Piece { index, begin, data } => {
                out.extend_from_slice(&piece_header(*index, *begin, data.len() as u32));
                out.extend_from_slice(data);
            }
            Message::Extended { id: ext, payload } => {
                head(payload.len() + 1, id::EXTENDED);
                out.push(*ext);
                out.extend_from_slice(payload);
            }
            Message::Unknown { id, payload } => {
                head(payload.len(), *id);
                out.extend_from_slice(payload);
            }
        }
    }
}

/// The 13 bytes that precede a block in a `piece` message; the upload path sends them with the
/// block in one vectored write.
pub fn piece_header(index: u32, begin: u32, block_len: u32) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[..4].copy_from_slice(&(block_len + 9).to_be_bytes());
    h[4] = id::PIECE;
    h[5..9].copy_from_slice(&index.to_be_bytes());
    h[9..13].copy_from_slice(&begin.to_be_bytes());
    h
}

#[cfg(test)]
mod tests;
