//! The MSE/PE handshake as two explicit state machines with no I/O: the initiator ("A", who
//! dials) and the responder ("B"). Each is fed the bytes that arrive and writes what to send;
//! it ends with [`Done`] (the crypto method chosen, the torrent, the RC4 streams if any, and
//! the payload bytes that came with the handshake) or an [`MseError`].
//!
//! ```text
//! A → B  Ya, PadA                                   (PadA, PadB: 0–512 random bytes)
//! B → A  Yb, PadB
//! A → B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!        ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! B → A  ENCRYPT(VC, crypto_select, len(PadD), PadD), then the payload stream
//! A → B  the payload stream
//! ```
//!
//! `S` is the Diffie-Hellman secret, `SKEY` the info-hash, `VC` eight zero bytes, `IA` the
//! initial payload (our BitTorrent handshake). The only searches are bounded as the spec says:
//! B looks for `HASH('req1', S)` within the 512 + 20 bytes after `Ya`, A for `ENCRYPT(VC)`
//! within the 512 + 8 bytes after `Yb`. Bytes are decrypted exactly as far as the handshake
//! reaches: with the plaintext method chosen, what follows is left as it came.

use super::cipher::{Streams, hash};
use super::dh::{KEY_LEN, KeyError, KeyPair};

/// The verification constant.
const VC: [u8; 8] = [0; 8];
/// Longest padding (PadA–PadD).
pub const MAX_PAD: usize = 512;
/// Longest initial payload accepted (a BitTorrent handshake is 68 bytes; libtorrent also
/// sends nothing more in IA).
pub const MAX_IA: usize = 1024;
/// Most bytes a handshake takes before it must be done (a peer that sends more is pipelining
/// payload, which is fine; one that sends this much without completing is not).
const MAX_HANDSHAKE: usize = KEY_LEN + MAX_PAD + 20 + 20 + 14 + MAX_PAD + 2 + MAX_IA;
/// Most bytes held while the handshake is incomplete (the handshake and a read's worth more).
const MAX_BUFFERED: usize = MAX_HANDSHAKE + (64 << 10);

/// Crypto methods (`crypto_provide` / `crypto_select` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Methods(u32);

impl Methods {
    pub const PLAINTEXT: Methods = Methods(0x01);
    pub const RC4: Methods = Methods(0x02);
    pub const BOTH: Methods = Methods(0x03);

    pub fn bits(self) -> u32 {
        self.0
    }

    fn has(self, m: Method) -> bool {
        self.0 & m.bit() != 0
    }
}

/// The method a connection uses after its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The handshake was obfuscated; the payload is not.
    Plaintext,
    /// The payload is RC4-encrypted both ways.
    Rc4,
}

impl Method {
    fn bit(self) -> u32 {
        match self {
            Method::Plaintext => 0x01,
            Method::Rc4 => 0x02,
        }
    }
}

/// Why a handshake failed. Each closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no synchronisation pattern within the padding the spec allows")]
    SyncNotFound,
    #[error("the peer asked for a torrent we do not serve")]
    UnknownTorrent,
    #[error("the verification constant is wrong (another key or a corrupt stream)")]
    BadVc,
    #[error("no crypto method in common (the peer provides {provided:#x}, we allow {allowed:#x})")]
    NoCommonMethod { provided: u32, allowed: u32 },
    #[error("the peer selected crypto method {0:#x}, which is not exactly one we provided")]
    BadSelect(u32),
    #[error("padding of {0} bytes (at most 512)")]
    PadTooLong(usize),
    #[error("initial payload of {0} bytes (at most {MAX_IA})")]
    PayloadTooLong(usize),
    #[error("the handshake went on past {MAX_BUFFERED} bytes")]
    TooLong,
}

/// A finished handshake.
#[derive(Debug)]
pub struct Done {
    pub method: Method,
    /// The torrent's info-hash (the responder learns it from the handshake).
    pub skey: [u8; 20],
    /// Both RC4 streams, positioned after the handshake, when the method is RC4.
    pub streams: Option<Streams>,
    /// Payload stream bytes that arrived with the handshake, decrypted: the initial payload
    /// and what followed it (responder), or what followed PadD (initiator).
    pub payload: Vec<u8>,
}

/// Whether the first bytes of an incoming connection are a plain BitTorrent handshake
/// (`Some(true)`), an MSE one (`Some(false)`: anything else), or too few to tell (`None`).
/// `Ya` begins with the 20 bytes of a plain handshake once in 2^160.
pub fn is_plain(first: &[u8]) -> Option<bool> {
    const PLAIN: &[u8; 20] = b"\x13BitTorrent protocol";
    let n = first.len().min(PLAIN.len());
    if first[..n] != PLAIN[..n] {
        return Some(false);
    }
    (n == PLAIN.len()).then_some(true)
}

fn random_pad(out: &mut Vec<u8>) {
    let mut len = [0u8; 2];
    let _ = getrandom::fill(&mut len);
    let n = usize::from(u16::from_be_bytes(len)) % (MAX_PAD + 1);
    let start = out.len();
    out.resize(start + n, 0);
    // Random bytes hide the padding's end; zeros on failure still interoperate.
    let _ = getrandom::fill(&mut out[start..]);
}

/// Decrypts `buf[from..to]` in place if not done yet; returns the new decrypted mark.
fn decrypt_to(streams: &mut Streams, buf: &mut [u8], from: usize, to: usize) -> usize {
    if to > from {
        streams.inc.apply(&mut buf[from..to]);
        to
    } else {
        from
    }
}

/// Adds what arrived to the handshake's buffer, within its bound.
fn take(buf: &mut Vec<u8>, input: &[u8]) -> Result<(), MseError> {
    if buf.len() + input.len() > MAX_BUFFERED {
        return Err(MseError::TooLong);
    }
    buf.extend_from_slice(input);
    Ok(())
}

/// The other side's public key, once its 96 bytes are here.
fn their_key(buf: &[u8]) -> Option<[u8; KEY_LEN]> {
    let mut y = [0u8; KEY_LEN];
    y.copy_from_slice(buf.get(..KEY_LEN)?);
    Some(y)
}

fn be16(b: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([b[0], b[1]]))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The initiator's state.
#[derive(Debug)]
enum AState {
    /// Sent Ya and PadA; waiting for Yb.
    Key,
    /// Sent step 3; looking for ENCRYPT(VC) after Yb.
    Sync {
        pattern: [u8; 8],
        streams: Box<Streams>,
    },
    /// Found it at `at` (bytes up to `at + 8` are read): waiting for crypto_select, PadD.
    Select {
        at: usize,
        streams: Box<Streams>,
    },
    Finished,
}

/// The side that dialled.
#[derive(Debug)]
pub struct Initiator {
    keys: KeyPair,
    skey: [u8; 20],
    provide: Methods,
    ia: Vec<u8>,
    secret: [u8; KEY_LEN],
    buf: Vec<u8>,
    state: AState,
}

impl Initiator {
    /// Starts a handshake for torrent `skey`, offering `provide`, with `ia` (at most
    /// [`MAX_IA`] bytes; our BitTorrent handshake) as the initial payload. Writes Ya and PadA.
    pub fn new(
        keys: KeyPair,
        skey: [u8; 20],
        provide: Methods,
        ia: &[u8],
        out: &mut Vec<u8>,
    ) -> Initiator {
        out.extend_from_slice(keys.public());
        random_pad(out);
        Initiator {
            keys,
            skey,
            provide,
            ia: ia[..ia.len().min(MAX_IA)].to_vec(),
            secret: [0; KEY_LEN],
            buf: Vec::new(),
            state: AState::Key,
        }
    }

    /// Takes what arrived; writes what to send. `Ok(None)`: more bytes are needed.
    pub fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Option<Done>, MseError> {
        take(&mut self.buf, input)?;
        loop {
            match std::mem::replace(&mut self.state, AState::Finished) {
                AState::Key => {
                    let Some(yb) = their_key(&self.buf) else {
                        self.state = AState::Key;
                        return Ok(None);
                    };
                    self.secret = self.keys.shared(&yb)?;
                    let s = &self.secret;
                    out.extend_from_slice(&hash(&[b"req1", s]));
                    let req2 = hash(&[b"req2", &self.skey]);
                    let req3 = hash(&[b"req3", s]);
                    out.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
                    let mut streams = Box::new(Streams::new(true, s, &self.skey));
                    let start = out.len();
                    out.extend_from_slice(&VC);
                    out.extend_from_slice(&self.provide.bits().to_be_bytes());
                    out.extend_from_slice(&0u16.to_be_bytes()); // len(PadC)
                    out.extend_from_slice(&(self.ia.len() as u16).to_be_bytes());
                    out.extend_from_slice(&self.ia);
                    streams.out.apply(&mut out[start..]);
                    // ENCRYPT(VC) as B's stream starts; the real stream then skips it.
                    let mut pattern = VC;
                    Streams::new(true, s, &self.skey).inc.apply(&mut pattern);
                    let mut skip = VC;
                    streams.inc.apply(&mut skip);
                    self.state = AState::Sync { pattern, streams };
                }
                AState::Sync { pattern, streams } => {
                    let after = &self.buf[KEY_LEN..];
                    match after.windows(8).position(|w| w == pattern) {
                        Some(p) => {
                            self.state = AState::Select {
                                at: KEY_LEN + p,
                                streams,
                            }
                        }
                        None if after.len() >= MAX_PAD + 8 => return Err(MseError::SyncNotFound),
                        None => {
                            self.state = AState::Sync { pattern, streams };
                            return Ok(None);
                        }
                    }
                }
                AState::Select { at, mut streams } => {
                    let head = at + 8;
                    if self.buf.len() < head + 6 {
                        self.state = AState::Select { at, streams };
                        return Ok(None);
                    }
                    // Decrypt select and len(PadD) once, then PadD once it is all here.
                    let mut fields = [0u8; 6];
                    fields.copy_from_slice(&self.buf[head..head + 6]);
                    let mut probe = Streams::new(true, &self.secret, &self.skey).inc;
                    let mut skip = [0u8; 8];
                    probe.apply(&mut skip);
                    probe.apply(&mut fields);
                    let select = be32(&fields[..4]);
                    let pad = be16(&fields[4..]);
                    if pad > MAX_PAD {
                        return Err(MseError::PadTooLong(pad));
                    }
                    let method = match select {
                        0x01 => Method::Plaintext,
                        0x02 => Method::Rc4,
                        _ => return Err(MseError::BadSelect(select)),
                    };
                    if !self.provide.has(method) {
                        return Err(MseError::BadSelect(select));
                    }
                    let end = head + 6 + pad;
                    if self.buf.len() < end {
                        self.state = AState::Select { at, streams };
                        return Ok(None);
                    }
                    decrypt_to(&mut streams, &mut self.buf, head, end);
                    let mut payload = self.buf.split_off(end);
                    let streams = match method {
                        Method::Rc4 => {
                            streams.inc.apply(&mut payload);
                            Some(*streams)
                        }
                        Method::Plaintext => None,
                    };
                    self.buf = Vec::new();
                    return Ok(Some(Done {
                        method,
                        skey: self.skey,
                        streams,
                        payload,
                    }));
                }
                AState::Finished => return Ok(None),
            }
        }
    }
}

/// The responder's state.
#[derive(Debug)]
enum BState {
    /// Waiting for Ya.
    Key,
    /// Sent Yb and PadB; looking for HASH('req1', S) after Ya.
    Sync {
        req1: [u8; 20],
    },
    /// Found it at `at`: waiting for the obfuscated SKEY.
    Skey {
        at: usize,
    },
    /// Know the torrent; bytes from `from` are encrypted, up to `dec` decrypted.
    Provide {
        from: usize,
        dec: usize,
        skey: [u8; 20],
        streams: Box<Streams>,
    },
    Finished,
}

/// The side that accepted.
#[derive(Debug)]
pub struct Responder {
    keys: KeyPair,
    allow: Methods,
    prefer_rc4: bool,
    secret: [u8; KEY_LEN],
    buf: Vec<u8>,
    state: BState,
}

impl Responder {
    /// A responder that allows `allow` and, offered both, picks RC4 if `prefer_rc4`.
    pub fn new(keys: KeyPair, allow: Methods, prefer_rc4: bool) -> Responder {
        Responder {
            keys,
            allow,
            prefer_rc4,
            secret: [0; KEY_LEN],
            buf: Vec::new(),
            state: BState::Key,
        }
    }

    /// Takes what arrived; writes what to send. `torrent` maps `HASH('req2', SKEY)` to the
    /// info-hash of a torrent we serve. `Ok(None)`: more bytes are needed.
    pub fn receive(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        torrent: impl Fn(&[u8; 20]) -> Option<[u8; 20]>,
    ) -> Result<Option<Done>, MseError> {
        take(&mut self.buf, input)?;
        loop {
            match std::mem::replace(&mut self.state, BState::Finished) {
                BState::Key => {
                    let Some(ya) = their_key(&self.buf) else {
                        self.state = BState::Key;
                        return Ok(None);
                    };
                    self.secret = self.keys.shared(&ya)?;
                    out.extend_from_slice(self.keys.public());
                    random_pad(out);
                    let req1 = hash(&[b"req1", &self.secret]);
                    self.state = BState::Sync { req1 };
                }
                BState::Sync { req1 } => {
                    let after = &self.buf[KEY_LEN..];
                    match after.windows(20).position(|w| w == req1) {
                        Some(p) => {
                            self.state = BState::Skey {
                                at: KEY_LEN + p + 20,
                            }
                        }
                        None if after.len() >= MAX_PAD + 20 => {
                            return Err(MseError::SyncNotFound);
                        }
                        None => {
                            self.state = BState::Sync { req1 };
                            return Ok(None);
                        }
                    }
                }
                BState::Skey { at } => {
                    if self.buf.len() < at + 20 {
                        self.state = BState::Skey { at };
                        return Ok(None);
                    }
                    let req3 = hash(&[b"req3", &self.secret]);
                    let mut req2 = [0u8; 20];
                    for (i, r) in req2.iter_mut().enumerate() {
                        *r = self.buf[at + i] ^ req3[i];
                    }
                    let skey = torrent(&req2).ok_or(MseError::UnknownTorrent)?;
                    let streams = Box::new(Streams::new(false, &self.secret, &skey));
                    self.state = BState::Provide {
                        from: at + 20,
                        dec: at + 20,
                        skey,
                        streams,
                    };
                }
                BState::Provide {
                    from,
                    mut dec,
                    skey,
                    mut streams,
                } => {
                    // VC (8), crypto_provide (4), len(PadC) (2), PadC, len(IA) (2), IA:
                    // decrypted only as far as each length says.
                    let mut need = from + 14;
                    let mut lengths = None;
                    if self.buf.len() >= need {
                        dec = decrypt_to(&mut streams, &mut self.buf, dec, need);
                        let h = &self.buf[from..from + 14];
                        if h[..8] != VC {
                            return Err(MseError::BadVc);
                        }
                        let provide = be32(&h[8..12]);
                        let pad = be16(&h[12..14]);
                        if pad > MAX_PAD {
                            return Err(MseError::PadTooLong(pad));
                        }
                        need += pad + 2;
                        if self.buf.len() >= need {
                            dec = decrypt_to(&mut streams, &mut self.buf, dec, need);
                            let ia = be16(&self.buf[need - 2..need]);
                            if ia > MAX_IA {
                                return Err(MseError::PayloadTooLong(ia));
                            }
                            lengths = Some((provide, ia));
                        }
                    }
                    let Some((provide, ia)) = lengths else {
                        self.state = BState::Provide {
                            from,
                            dec,
                            skey,
                            streams,
                        };
                        return Ok(None);
                    };
                    let method = self.select(provide)?;
                    if self.buf.len() < need + ia {
                        self.state = BState::Provide {
                            from,
                            dec,
                            skey,
                            streams,
                        };
                        return Ok(None);
                    }
                    decrypt_to(&mut streams, &mut self.buf, dec, need + ia);
                    let mut rest = self.buf.split_off(need + ia);
                    let mut payload = self.buf.split_off(need);
                    let start = out.len();
                    out.extend_from_slice(&VC);
                    out.extend_from_slice(&method.bit().to_be_bytes());
                    out.extend_from_slice(&0u16.to_be_bytes()); // len(PadD)
                    streams.out.apply(&mut out[start..]);
                    let streams = match method {
                        Method::Rc4 => {
                            streams.inc.apply(&mut rest);
                            Some(*streams)
                        }
                        Method::Plaintext => None,
                    };
                    payload.extend_from_slice(&rest);
                    self.buf = Vec::new();
                    return Ok(Some(Done {
                        method,
                        skey,
                        streams,
                        payload,
                    }));
                }
                BState::Finished => return Ok(None),
            }
        }
    }

    fn select(&self, provide: u32) -> Result<Method, MseError> {
        let offered = Methods(provide & self.allow.0);
        let rc4 = offered.has(Method::Rc4);
        let plain = offered.has(Method::Plaintext);
        match (rc4, plain) {
            (true, true) if self.prefer_rc4 => Ok(Method::Rc4),
            (_, true) => Ok(Method::Plaintext),
            (true, false) => Ok(Method::Rc4),
            (false, false) => Err(MseError::NoCommonMethod {
                provided: provide,
                allowed: self.allow.0,
            }),
        }
    }
}
