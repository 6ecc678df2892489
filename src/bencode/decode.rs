//! Strict, bounded, zero-copy bencode decoder (BEP 3).
//!
//! Strict means canonical: dictionary keys sorted byte-wise and unique, integers without leading
//! zeros or `-0`, string lengths without leading zeros, nothing after the top-level value. Bounded
//! means a hostile input cannot make the decoder recurse, allocate or loop without limit: depth and
//! total item count are capped by [`Limits`], and a string can never claim more bytes than remain.

use std::ops::Range;

use super::{DecodeError, ErrorKind};

/// Caps that keep a stranger's bytes from exhausting stack or memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists and dictionaries accepted (the top level is depth 1).
    pub max_depth: usize,
    /// Most values (integers, strings, lists, dictionaries) accepted in one document.
    pub max_items: usize,
}

impl Default for Limits {
    /// 128 levels are far beyond any real torrent (BEP 52 file trees nest one level per path
    /// component) and keep recursion a few KiB of stack. Four million items cover a .torrent with a
    /// million files while capping the node vector at well under a GiB.
    fn default() -> Self {
        Limits {
            max_depth: 128,
            max_items: 4_000_000,
        }
    }
}

/// A decoded value that borrows from the input and knows the raw bytes it came from.
///
/// ```
/// use ringseed::bencode::{decode, Kind};
/// let input = b"d4:infod6:lengthi3eee";
/// let v = decode(input).unwrap();
/// let info = v.get(b"info").unwrap();
/// assert_eq!(&input[info.span.clone()], b"d6:lengthi3ee");
/// assert!(matches!(info.get(b"length").unwrap().kind, Kind::Int(3)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value<'a> {
    pub kind: Kind<'a>,
    /// Byte range of this value in the decoded input, delimiters included.
    pub span: Range<usize>,
}

/// The four bencode types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Entries in input order, which a strict decode guarantees is sorted and unique.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl<'a> Value<'a> {
    /// Looks a key up in a dictionary (binary search: keys are sorted). `None` for non-dicts.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match &self.kind {
            Kind::Dict(entries) => entries
                .binary_search_by(|(k, _)| (*k).cmp(key))
                .ok()
                .map(|i| &entries[i].1),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self.kind {
            Kind::Int(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match &self.kind {
            Kind::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(&'a [u8], Value<'a>)]> {
        match &self.kind {
            Kind::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Int(_) => "integer",
            Kind::Bytes(_) => "string",
            Kind::List(_) => "list",
            Kind::Dict(_) => "dictionary",
        }
    }
}

/// Decodes exactly one value that must fill the whole input.
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    decode_with(input, Limits::default())
}

/// [`decode`] with explicit limits.
pub fn decode_with(input: &[u8], limits: Limits) -> Result<Value<'_>, DecodeError> {
    let (value, end) = decode_prefix_with(input, limits)?;
    if end != input.len() {
        return Err(DecodeError::new(ErrorKind::TrailingData, end));
    }
    Ok(value)
}

/// Decodes one value at the start of `input` and returns it with the offset just past it.
/// Used where a bencoded header is followed by raw data (BEP 9 metadata pieces).
pub fn decode_prefix_with(input: &[u8], limits: Limits) -> Result<(Value<'_>, usize), DecodeError> {
    let mut d = Decoder {
        input,
        pos: 0,
        items: 0,
        limits,
    };
    let v = d.value(1)?;
    Ok((v, d.pos))
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    items: usize,
    limits: Limits,
}

impl<'a> Decoder<'a> {
    fn err(&self, kind: ErrorKind) -> DecodeError {
        DecodeError::new(kind, self.pos)
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.err(ErrorKind::UnexpectedEnd))
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        self.items += 1;
        if self.items > self.limits.max_items {
            return Err(self.err(ErrorKind::TooManyItems(self.limits.max_items)));
        }
        let start = self.pos;
        let kind = match self.peek()? {
            b'i' => Kind::Int(self.int()?),
            b'0'..=b'9' => Kind::Bytes(self.bytes()?),
            b'l' | b'd' if depth > self.limits.max_depth => {
                return Err(self.err(ErrorKind::TooDeep(self.limits.max_depth)));
            }
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Kind::List(items)
            }
            b'd' => {
                self.pos += 1;
                let mut entries: Vec<(&'a [u8], Value<'a>)> = Vec::new();
                while self.peek()? != b'e' {
                    let key_at = self.pos;
                    if !self.peek()?.is_ascii_digit() {
                        return Err(self.err(ErrorKind::KeyNotString));
                    }
                    let key = self.bytes()?;
                    if let Some((prev, _)) = entries.last() {
                        match (*prev).cmp(key) {
                            std::cmp::Ordering::Less => {}
                            std::cmp::Ordering::Equal => {
                                return Err(DecodeError::new(
                                    ErrorKind::DuplicateKey(lossy(key)),
                                    key_at,
                                ));
                            }
                            std::cmp::Ordering::Greater => {
                                return Err(DecodeError::new(
                                    ErrorKind::UnsortedKey(lossy(key)),
                                    key_at,
                                ));
                            }
                        }
                    }
                    let v = self.value(depth + 1)?;
                    entries.push((key, v));
                }
                self.pos += 1;
                Kind::Dict(entries)
            }
            other => return Err(self.err(ErrorKind::UnexpectedByte(other))),
        };
        Ok(Value {
            kind,
            span: start..self.pos,
        })
    }

    fn int(&mut self) -> Result<i64, DecodeError> {
        self.pos += 1; // 'i'
        let start = self.pos;
        let rest = &self.input[start..];
        let Some(len) = rest.iter().position(|&b| b == b'e') else {
            return Err(DecodeError::new(ErrorKind::UnexpectedEnd, self.input.len()));
        };
        let digits = &rest[..len];
        let (neg, body) = match digits.split_first() {
            Some((b'-', body)) => (true, body),
            _ => (false, digits),
        };
        if body.is_empty() || !body.iter().all(u8::is_ascii_digit) {
            return Err(self.err(ErrorKind::BadInteger));
        }
        if body.len() > 1 && body[0] == b'0' {
            return Err(self.err(ErrorKind::LeadingZero));
        }
        if neg && body == b"0" {
            return Err(self.err(ErrorKind::NegativeZero));
        }
        let mut v: i64 = 0;
        for &c in body {
            let d = i64::from(c - b'0');
            v = v
                .checked_mul(10)
                .and_then(|v| {
                    if neg {
                        v.checked_sub(d)
                    } else {
                        v.checked_add(d)
                    }
                })
                .ok_or_else(|| self.err(ErrorKind::IntegerOverflow))?;
        }
        self.pos = start + len + 1;
        Ok(v)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let rest = &self.input[start..];
        let Some(colon) = rest.iter().position(|&b| b == b':') else {
            return Err(DecodeError::new(ErrorKind::UnexpectedEnd, self.input.len()));
        };
        let digits = &rest[..colon];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(self.err(ErrorKind::BadLength));
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(self.err(ErrorKind::LeadingZero));
        }
        // More than 19 digits cannot fit; anything longer than what remains is truncated input.
        let remaining = rest.len() - colon - 1;
        let len = if digits.len() > 19 {
            None
        } else {
            digits.iter().try_fold(0u64, |acc, &c| {
                acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
            })
        };
        let len = match len {
            Some(l) if l <= remaining as u64 => l as usize,
            _ => {
                return Err(self.err(ErrorKind::LengthBeyondInput {
                    claimed: lossy(digits),
                    remaining,
                }));
            }
        };
        let body_start = start + colon + 1;
        self.pos = body_start + len;
        Ok(&self.input[body_start..self.pos])
    }
}

fn lossy(b: &[u8]) -> String {
    const SHOW: usize = 64;
    let s = String::from_utf8_lossy(&b[..b.len().min(SHOW)]).into_owned();
    if b.len() > SHOW { s + "…" } else { s }
}
