//! Strict, bounded, zero-copy bencode decoder (BEP 3).
//!
//! Strict means canonical: dictionary keys sorted byte-wise and unique, integers without leading
//! zeros or `-0`, string lengths without leading zeros, nothing after the top-level value. Bounded
//! means a hostile input cannot make the decoder recurse, allocate or loop without limit: depth and
//! total item count are capped by [`Limits`], and a string can never claim more bytes than remain.
//!
//! Decoding takes two passes. The first walks the input without building any value (an explicit
//! stack no deeper than [`Limits::max_depth`], and a count of four bytes per container): it
//! finds every error, enforces both limits and counts the elements of each list and dictionary.
//! Only input that passed is built, each list and dictionary in one allocation of its exact
//! size. So refusing a document costs at most those counts, and an accepted one costs exactly
//! its values (40 bytes each, 56 for a dictionary entry) plus the counts, with no growth slack
//! or reallocation copies.

use std::ops::Range;

use super::{DecodeError, ErrorKind};

/// Caps that keep a stranger's bytes from exhausting stack or memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists and dictionaries accepted (the top level is depth 1).
    pub max_depth: usize,
    /// Most values (integers, strings, lists, dictionaries; not dictionary keys) accepted in one
    /// document.
    pub max_items: usize,
}

impl Limits {
    /// The limits for .torrent files and info dictionaries, and the default. They follow
    /// libtorrent's (`load_torrent_limits`), so we refuse nothing the reference client loads:
    /// - Depth 100, its `max_decode_depth`. The deepest real structure is a BEP 52 file tree
    ///   (one level per path component, at most [`crate::metainfo::path::MAX_COMPONENTS`] = 64,
    ///   plus six levels around it).
    /// - 1.5 M values. libtorrent's `max_decode_tokens` is 3 M, but it counts dictionary keys
    ///   and the end of every list and dictionary as tokens too: a torrent's structures come to
    ///   about two of its tokens per value of ours (a v1 file entry is 9 tokens and 5 values, a
    ///   hybrid torrent's file with its pad about 32 and 16). So both stop a hybrid torrent
    ///   near 95 000 files, and v1 and v2 torrents reach
    ///   [`crate::metainfo::layout::MAX_FILES`] first. A document over the bound is refused by
    ///   the first pass before any value is built; the worst accepted one costs
    ///   1.5 M × 56 bytes = 80 MiB while decoded (a dictionary of that many entries), a real
    ///   torrent a small part of that (20 000 files: about 5 MiB).
    pub const TORRENT: Limits = Limits {
        max_depth: 100,
        max_items: 1_500_000,
    };
}

impl Default for Limits {
    /// [`Limits::TORRENT`].
    fn default() -> Self {
        Limits::TORRENT
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
    List(Box<[Value<'a>]>),
    /// Entries in input order, which a strict decode guarantees is sorted and unique.
    Dict(Box<[(&'a [u8], Value<'a>)]>),
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
    let (end, counts) = scan(input, limits)?;
    let mut d = Decoder {
        input: &input[..end],
        pos: 0,
        counts: counts.into_iter(),
    };
    let v = d.value()?;
    Ok((v, d.pos))
}

/// An open list or dictionary during the first pass.
struct Frame<'a> {
    dict: bool,
    /// Index of this container's element count in the counts vector.
    slot: usize,
    elements: u32,
    /// The previous key (dictionaries), to check order and uniqueness.
    last_key: Option<&'a [u8]>,
}

/// The first pass: validates the value at the start of `input` against the grammar and
/// `limits`, without recursion, allocating one frame per open container and one count per
/// container. Returns the offset just past the value and each container's element count, in
/// the order the containers open.
fn scan(input: &[u8], limits: Limits) -> Result<(usize, Vec<u32>), DecodeError> {
    let mut d = Decoder {
        input,
        pos: 0,
        counts: Vec::new().into_iter(),
    };
    let mut counts: Vec<u32> = Vec::new();
    let mut stack: Vec<Frame<'_>> = Vec::with_capacity(limits.max_depth.min(128));
    let mut items = 0usize;
    loop {
        // At the start of a value, a key, or the end of a container.
        if let Some(top) = stack.last_mut() {
            if d.peek()? == b'e' {
                d.pos += 1;
                counts[top.slot] = top.elements;
                stack.pop();
                if stack.is_empty() {
                    return Ok((d.pos, counts));
                }
                continue;
            }
            top.elements = top.elements.saturating_add(1);
            if top.dict {
                let key_at = d.pos;
                if !d.peek()?.is_ascii_digit() {
                    return Err(d.err(ErrorKind::KeyNotString));
                }
                let key = d.bytes()?;
                match top.last_key.map(|prev| prev.cmp(key)) {
                    None | Some(std::cmp::Ordering::Less) => {}
                    Some(std::cmp::Ordering::Equal) => {
                        return Err(DecodeError::new(
                            ErrorKind::DuplicateKey(lossy(key)),
                            key_at,
                        ));
                    }
                    Some(std::cmp::Ordering::Greater) => {
                        return Err(DecodeError::new(ErrorKind::UnsortedKey(lossy(key)), key_at));
                    }
                }
                top.last_key = Some(key);
            }
        }
        items += 1;
        if items > limits.max_items {
            return Err(d.err(ErrorKind::TooManyItems(limits.max_items)));
        }
        match d.peek()? {
            b'i' => {
                d.int()?;
            }
            b'0'..=b'9' => {
                d.bytes()?;
            }
            c @ (b'l' | b'd') => {
                if stack.len() + 1 > limits.max_depth {
                    return Err(d.err(ErrorKind::TooDeep(limits.max_depth)));
                }
                d.pos += 1;
                stack.push(Frame {
                    dict: c == b'd',
                    slot: counts.len(),
                    elements: 0,
                    last_key: None,
                });
                counts.push(0);
                continue;
            }
            other => return Err(d.err(ErrorKind::UnexpectedByte(other))),
        }
        if stack.is_empty() {
            return Ok((d.pos, counts));
        }
    }
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    /// Element counts of the containers, in the order they open (the second pass only).
    counts: std::vec::IntoIter<u32>,
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

    /// The second pass: builds the value that [`scan`] accepted. Its recursion is as deep as
    /// the input's nesting, which the first pass bounded.
    fn value(&mut self) -> Result<Value<'a>, DecodeError> {
        let start = self.pos;
        let kind = match self.peek()? {
            b'i' => Kind::Int(self.int()?),
            b'0'..=b'9' => Kind::Bytes(self.bytes()?),
            c @ (b'l' | b'd') => {
                self.pos += 1;
                let n = self.counts.next().unwrap_or(0) as usize;
                if c == b'l' {
                    let mut items = Vec::with_capacity(n);
                    while self.peek()? != b'e' {
                        items.push(self.value()?);
                    }
                    self.pos += 1;
                    Kind::List(items.into_boxed_slice())
                } else {
                    let mut entries = Vec::with_capacity(n);
                    while self.peek()? != b'e' {
                        let key = self.bytes()?;
                        entries.push((key, self.value()?));
                    }
                    self.pos += 1;
                    Kind::Dict(entries.into_boxed_slice())
                }
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
