//! BEP 10 extension handshake.

use std::net::IpAddr;

use crate::bencode::{self, Bencode, Limits};

/// Bounds for a peer's extension handshake: a small dictionary, nothing deep.
const LIMITS: Limits = Limits {
    max_depth: 4,
    max_items: 512,
};
/// Longest extension handshake accepted.
pub const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    #[error("extension handshake of {0} bytes is too long")]
    TooLong(usize),
    #[error("extension handshake is not valid bencode: {0}")]
    Bencode(#[from] bencode::DecodeError),
    #[error("extension handshake is not a dictionary")]
    NotADict,
}

/// The extension handshake (extended message id 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// `m`: extension name → message id the sender wants to receive it as (0 = disabled).
    pub m: Vec<(String, u8)>,
    /// `v`: client name and version.
    pub v: Option<String>,
    /// `reqq`: how many outstanding requests the sender accepts.
    pub reqq: Option<u32>,
    /// `yourip`: the receiver's address as the sender sees it.
    pub yourip: Option<IpAddr>,
    /// `p`: the sender's listening port.
    pub p: Option<u16>,
    /// BEP 9 `metadata_size`.
    pub metadata_size: Option<u64>,
    /// BEP 21 `upload_only`.
    pub upload_only: bool,
}

impl ExtHandshake {
    pub fn parse(payload: &[u8]) -> Result<Self, ExtensionError> {
        if payload.len() > MAX_HANDSHAKE_BYTES {
            return Err(ExtensionError::TooLong(payload.len()));
        }
        let v = bencode::decode_with(payload, LIMITS)?;
        if v.as_dict().is_none() {
            return Err(ExtensionError::NotADict);
        }
        let int = |k: &[u8]| v.get(k).and_then(|x| x.as_int());
        let m = v
            .get(b"m")
            .and_then(|m| m.as_dict())
            .map(|d| {
                d.iter()
                    .filter_map(|(k, id)| {
                        let id = u8::try_from(id.as_int()?).ok()?;
                        Some((String::from_utf8_lossy(k).into_owned(), id))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let yourip = v
            .get(b"yourip")
            .and_then(|b| b.as_bytes())
            .and_then(|b| match b.len() {
                4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
                _ => None,
            });
        Ok(ExtHandshake {
            m,
            v: v.get(b"v")
                .and_then(|s| s.as_bytes())
                .map(|s| String::from_utf8_lossy(&s[..s.len().min(128)]).into_owned()),
            reqq: int(b"reqq").and_then(|r| u32::try_from(r).ok()),
            yourip,
            p: int(b"p")
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0),
            metadata_size: int(b"metadata_size").and_then(|s| u64::try_from(s).ok()),
            upload_only: int(b"upload_only").is_some_and(|u| u != 0),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d = Bencode::dict();
        let mut m = Bencode::dict();
        for (name, id) in &self.m {
            m.insert(name, Bencode::Int(i64::from(*id)));
        }
        d.insert("m", m);
        if let Some(v) = &self.v {
            d.insert("v", Bencode::bytes(v));
        }
        if let Some(r) = self.reqq {
            d.insert("reqq", Bencode::Int(i64::from(r)));
        }
        if let Some(ip) = self.yourip {
            d.insert(
                "yourip",
                match ip {
                    IpAddr::V4(a) => Bencode::bytes(a.octets()),
                    IpAddr::V6(a) => Bencode::bytes(a.octets()),
                },
            );
        }
        if let Some(p) = self.p {
            d.insert("p", Bencode::Int(i64::from(p)));
        }
        if let Some(s) = self.metadata_size {
            d.insert("metadata_size", Bencode::Int(s as i64));
        }
        if self.upload_only {
            d.insert("upload_only", Bencode::Int(1));
        }
        d.encode()
    }

    /// The id under which the sender wants extension `name`, if it supports it.
    pub fn id_of(&self, name: &str) -> Option<u8> {
        self.m
            .iter()
            .find(|(n, id)| n == name && *id != 0)
            .map(|(_, id)| *id)
    }
}
