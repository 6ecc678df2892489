//! Bencode (BEP 3): a strict, bounded, zero-copy decoder and a canonical encoder.
//!
//! The decoder keeps the raw byte span of every value, so the info-hash is computed over the
//! exact bytes of the `info` dictionary as received, never over a re-encoding.

mod decode;
mod encode;

pub use decode::{Kind, Limits, Value, decode, decode_prefix_with, decode_with};
pub use encode::{Bencode, encode_value};

/// What was wrong with the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("input ends in the middle of a value")]
    UnexpectedEnd,
    #[error("unexpected byte 0x{0:02x} where a value should start")]
    UnexpectedByte(u8),
    #[error("malformed integer")]
    BadInteger,
    #[error("integer does not fit in 64 bits")]
    IntegerOverflow,
    #[error("number has a leading zero")]
    LeadingZero,
    #[error("integer is negative zero")]
    NegativeZero,
    #[error("malformed string length")]
    BadLength,
    #[error("string claims {claimed} bytes but only {remaining} remain")]
    LengthBeyondInput { claimed: String, remaining: usize },
    #[error("dictionary key is not a string")]
    KeyNotString,
    #[error("dictionary key {0:?} is out of sorted order")]
    UnsortedKey(String),
    #[error("dictionary key {0:?} appears twice")]
    DuplicateKey(String),
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("more than {0} values in one document")]
    TooManyItems(usize),
    #[error("data after the end of the top-level value")]
    TrailingData,
}

/// A decode failure: what and at which byte offset of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bencode error at byte {offset}: {kind}")]
pub struct DecodeError {
    pub kind: ErrorKind,
    pub offset: usize,
}

impl DecodeError {
    pub(crate) fn new(kind: ErrorKind, offset: usize) -> Self {
        DecodeError { kind, offset }
    }
}

#[cfg(test)]
mod tests;
