//! The `rs_speed` BEP 10 extension messages: each is one bencoded dictionary whose `t` key names
//! its type. Pure codec, bounded and fuzzed; `docs/speed.md` is the specification.
//!
//! ```
//! use ringseed::speed::protocol::{Offer, SpeedMessage};
//! use ringseed::speed::wallet::Address;
//! let m = SpeedMessage::Offer(Offer { chain_id: 199, contract: Address([3; 20]), payee: Address([1; 20]), min_price: 5, credit_window: 1 << 20 });
//! assert_eq!(SpeedMessage::parse(&m.encode()).unwrap(), m);
//! ```

use crate::bencode::{self, Bencode, Limits};

use super::voucher::{Amount, ChannelId, Domain, Rejection, Voucher};
use super::wallet::{Address, Signature65};

/// The extension's name in the BEP 10 handshake's `m` dictionary.
pub const EXTENSION_NAME: &str = "rs_speed";
/// Longest message accepted; the largest real one (a voucher) is under 250 bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Most decimal digits of an amount (2^128 - 1 has 39).
pub const MAX_AMOUNT_DIGITS: usize = 39;
/// Largest credit window a seeder may advertise.
pub const MAX_CREDIT_WINDOW: u64 = 1 << 30;
/// Longest free-text `msg` of an error.
pub const MAX_ERROR_TEXT: usize = 200;

/// A flat dictionary of at most 16 values: nothing nests.
const LIMITS: Limits = Limits {
    max_depth: 1,
    max_items: 17,
};

/// The seeder's terms, sent once after the extension handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub chain_id: u64,
    /// The payment-channel contract vouchers are claimed on (the EIP-712 `verifyingContract`):
    /// payer and seeder must agree on it before the first bid. An offer without it (a v1
    /// seeder) does not parse, so a payer never pays one.
    pub contract: Address,
    /// Where vouchers must pay.
    pub payee: Address,
    /// Least price per MiB (BTT base units) that can win a paid slot.
    pub min_price: Amount,
    /// Bytes the seeder serves a payer ahead of payment.
    pub credit_window: u64,
}

impl Offer {
    /// The EIP-712 domain every bid and voucher for this seeder is signed under.
    pub fn domain(&self) -> Domain {
        Domain {
            chain_id: self.chain_id,
            contract: self.contract,
        }
    }
}

/// A downloader's bid: the price it pays per MiB from a payment channel it funds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bid {
    pub price: Amount,
    pub channel: ChannelId,
    pub payer: Address,
    /// The most the channel can pay in total (its deposit).
    pub cap: Amount,
    /// The payer's signature over [`super::voucher::bid_digest`] for this seeder.
    pub signature: Signature65,
}

impl Bid {
    /// The payer's side: a bid for `payee`'s paid slots on `chain_id`, signed by `payer`.
    pub fn sign(
        payer: &super::wallet::Wallet,
        domain: Domain,
        payee: Address,
        price: Amount,
        channel: ChannelId,
        cap: Amount,
    ) -> Bid {
        let digest = super::voucher::bid_digest(&domain, &channel, &payee, price, cap);
        Bid {
            price,
            channel,
            payer: payer.address(),
            cap,
            signature: payer.sign(digest),
        }
    }

    /// Whether the bid's `payer` signed it for this seeder (`me` under `domain`), in the
    /// canonical form (`v` 27/28, low `s`). The costly part (a point recovery): the verifier
    /// thread calls it, never a worker.
    pub fn signed_by_payer(&self, domain: &Domain, me: Address) -> bool {
        let digest = super::voucher::bid_digest(domain, &self.channel, &me, self.price, self.cap);
        super::wallet::is_canonical(&self.signature)
            && super::wallet::recover_digest(&self.signature, digest) == Some(self.payer)
    }
}

/// The seeder's durable acknowledgement: sent only after the voucher is committed to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub channel: ChannelId,
    /// Payload bytes served to this peer on this connection so far.
    pub served: u64,
    /// The cumulative amount of the channel's latest accepted (durable) voucher.
    pub accepted: Amount,
}

/// A refused bid or voucher, with the reason's name and the channel's accepted amount, so the
/// payer can resynchronise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub channel: Option<ChannelId>,
    pub reason: String,
    pub accepted: Option<Amount>,
}

impl Refusal {
    pub fn new(channel: Option<ChannelId>, reason: Rejection, accepted: Option<Amount>) -> Self {
        Refusal {
            channel,
            reason: reason.name().to_string(),
            accepted,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpeedMessage {
    Offer(Offer),
    Bid(Bid),
    Voucher(Voucher),
    Receipt(Receipt),
    Refusal(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("speed message of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte bound")]
    TooLong(usize),
    #[error("speed message is not valid bencode: {0}")]
    Bencode(#[from] bencode::DecodeError),
    #[error("speed message is not a dictionary")]
    NotADict,
    #[error("speed message type {0:?} is unknown")]
    UnknownType(String),
    #[error("speed message lacks `{0}`")]
    Missing(&'static str),
    #[error("speed message field `{0}` is malformed or out of range")]
    BadField(&'static str),
}

type Dict<'a, 'b> = &'b bencode::Value<'a>;

fn bytes<'a>(d: Dict<'a, '_>, key: &'static str) -> Result<&'a [u8], ProtocolError> {
    d.get(key.as_bytes())
        .ok_or(ProtocolError::Missing(key))?
        .as_bytes()
        .ok_or(ProtocolError::BadField(key))
}

/// A 65-byte `sig`. A raw recovery id (0/1) is taken as 27/28, so what the ledger stores and
/// `settle` exports is what a contract's `ecrecover` accepts: a voucher stored with v = 0/1
/// could never be claimed.
fn signature(d: Dict<'_, '_>) -> Result<Signature65, ProtocolError> {
    let mut sig: Signature65 = fixed(d, "sig")?;
    if sig[64] < 2 {
        sig[64] += 27;
    }
    Ok(sig)
}

fn fixed<const N: usize>(d: Dict<'_, '_>, key: &'static str) -> Result<[u8; N], ProtocolError> {
    bytes(d, key)?
        .try_into()
        .map_err(|_| ProtocolError::BadField(key))
}

fn uint(d: Dict<'_, '_>, key: &'static str, max: u64) -> Result<u64, ProtocolError> {
    let i = d
        .get(key.as_bytes())
        .ok_or(ProtocolError::Missing(key))?
        .as_int()
        .ok_or(ProtocolError::BadField(key))?;
    u64::try_from(i)
        .ok()
        .filter(|&v| v <= max)
        .ok_or(ProtocolError::BadField(key))
}

/// An amount: a decimal string of ASCII digits, no sign, no leading zero (except "0" itself).
pub fn parse_amount(s: &[u8]) -> Option<Amount> {
    if s.is_empty()
        || s.len() > MAX_AMOUNT_DIGITS
        || (s.len() > 1 && s[0] == b'0')
        || !s.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn amount(d: Dict<'_, '_>, key: &'static str) -> Result<Amount, ProtocolError> {
    parse_amount(bytes(d, key)?).ok_or(ProtocolError::BadField(key))
}

fn amount_value(a: Amount) -> Bencode {
    Bencode::bytes(a.to_string())
}

impl SpeedMessage {
    pub fn parse(payload: &[u8]) -> Result<SpeedMessage, ProtocolError> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(ProtocolError::TooLong(payload.len()));
        }
        let d = bencode::decode_with(payload, LIMITS)?;
        if d.as_dict().is_none() {
            return Err(ProtocolError::NotADict);
        }
        let d = &d;
        let t = bytes(d, "t")?;
        Ok(match t {
            b"offer" => SpeedMessage::Offer(Offer {
                chain_id: uint(d, "chain", i64::MAX as u64)?,
                contract: Address(fixed(d, "contract")?),
                payee: Address(fixed(d, "payee")?),
                min_price: amount(d, "price")?,
                credit_window: uint(d, "window", MAX_CREDIT_WINDOW)?,
            }),
            b"bid" => SpeedMessage::Bid(Bid {
                price: amount(d, "price")?,
                channel: ChannelId(fixed(d, "channel")?),
                payer: Address(fixed(d, "payer")?),
                cap: amount(d, "cap")?,
                signature: signature(d)?,
            }),
            b"voucher" => {
                let signature = signature(d)?;
                SpeedMessage::Voucher(Voucher {
                    domain: Domain {
                        chain_id: uint(d, "chain", i64::MAX as u64)?,
                        contract: Address(fixed(d, "contract")?),
                    },
                    channel: ChannelId(fixed(d, "channel")?),
                    payee: Address(fixed(d, "payee")?),
                    cumulative: amount(d, "amount")?,
                    signature,
                })
            }
            b"receipt" => SpeedMessage::Receipt(Receipt {
                channel: ChannelId(fixed(d, "channel")?),
                served: uint(d, "served", i64::MAX as u64)?,
                accepted: amount(d, "accepted")?,
            }),
            b"refusal" => {
                let reason = bytes(d, "reason")?;
                if reason.is_empty() || reason.len() > 32 || !reason.is_ascii() {
                    return Err(ProtocolError::BadField("reason"));
                }
                SpeedMessage::Refusal(Refusal {
                    channel: match d.get(b"channel") {
                        Some(_) => Some(ChannelId(fixed(d, "channel")?)),
                        None => None,
                    },
                    reason: String::from_utf8_lossy(reason).into_owned(),
                    accepted: match d.get(b"accepted") {
                        Some(_) => Some(amount(d, "accepted")?),
                        None => None,
                    },
                })
            }
            other => {
                return Err(ProtocolError::UnknownType(
                    String::from_utf8_lossy(&other[..other.len().min(32)]).into_owned(),
                ));
            }
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d = Bencode::dict();
        match self {
            SpeedMessage::Offer(o) => {
                d.insert("t", Bencode::bytes("offer"));
                d.insert("chain", Bencode::Int(o.chain_id as i64));
                d.insert("contract", Bencode::bytes(o.contract.0));
                d.insert("payee", Bencode::bytes(o.payee.0));
                d.insert("price", amount_value(o.min_price));
                d.insert("window", Bencode::Int(o.credit_window as i64));
            }
            SpeedMessage::Bid(b) => {
                d.insert("t", Bencode::bytes("bid"));
                d.insert("price", amount_value(b.price));
                d.insert("channel", Bencode::bytes(b.channel.0));
                d.insert("payer", Bencode::bytes(b.payer.0));
                d.insert("cap", amount_value(b.cap));
                d.insert("sig", Bencode::bytes(b.signature));
            }
            SpeedMessage::Voucher(v) => {
                d.insert("t", Bencode::bytes("voucher"));
                d.insert("chain", Bencode::Int(v.domain.chain_id as i64));
                d.insert("contract", Bencode::bytes(v.domain.contract.0));
                d.insert("channel", Bencode::bytes(v.channel.0));
                d.insert("payee", Bencode::bytes(v.payee.0));
                d.insert("amount", amount_value(v.cumulative));
                d.insert("sig", Bencode::bytes(v.signature));
            }
            SpeedMessage::Receipt(r) => {
                d.insert("t", Bencode::bytes("receipt"));
                d.insert("channel", Bencode::bytes(r.channel.0));
                d.insert("served", Bencode::Int(r.served as i64));
                d.insert("accepted", amount_value(r.accepted));
            }
            SpeedMessage::Refusal(r) => {
                d.insert("t", Bencode::bytes("refusal"));
                if let Some(c) = r.channel {
                    d.insert("channel", Bencode::bytes(c.0));
                }
                d.insert("reason", Bencode::bytes(&r.reason));
                if let Some(a) = r.accepted {
                    d.insert("accepted", amount_value(a));
                }
            }
        }
        d.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speed::wallet::Wallet;

    const DOMAIN: Domain = Domain {
        chain_id: 199,
        contract: Address([3; 20]),
    };

    fn all() -> Vec<SpeedMessage> {
        let payer = Wallet::from_secret([1; 32]).unwrap();
        let v = Voucher::sign(
            &payer,
            DOMAIN,
            ChannelId([7; 32]),
            Address([2; 20]),
            u128::MAX,
        );
        vec![
            SpeedMessage::Offer(Offer {
                chain_id: 199,
                contract: DOMAIN.contract,
                payee: Address([2; 20]),
                min_price: 0,
                credit_window: MAX_CREDIT_WINDOW,
            }),
            SpeedMessage::Bid(Bid::sign(
                &payer,
                DOMAIN,
                Address([2; 20]),
                10u128.pow(15),
                ChannelId([7; 32]),
                10u128.pow(21),
            )),
            SpeedMessage::Voucher(v),
            SpeedMessage::Receipt(Receipt {
                channel: ChannelId([7; 32]),
                served: 1 << 40,
                accepted: 12345,
            }),
            SpeedMessage::Refusal(Refusal::new(
                Some(ChannelId([7; 32])),
                Rejection::OverCap,
                Some(5),
            )),
            SpeedMessage::Refusal(Refusal::new(None, Rejection::Malformed, None)),
        ]
    }

    #[test]
    fn every_message_round_trips_within_the_bound() {
        for m in all() {
            let bytes = m.encode();
            assert!(bytes.len() < 300, "{} bytes: {m:?}", bytes.len());
            assert_eq!(SpeedMessage::parse(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn a_raw_recovery_id_is_stored_as_27_or_28() {
        let Some(SpeedMessage::Voucher(v)) = all()
            .into_iter()
            .find(|m| matches!(m, SpeedMessage::Voucher(_)))
        else {
            panic!("no voucher in the sample");
        };
        assert!(v.signature[64] >= 27);
        let mut raw = v;
        raw.signature[64] -= 27;
        assert_eq!(
            SpeedMessage::parse(&SpeedMessage::Voucher(raw).encode()).unwrap(),
            SpeedMessage::Voucher(v)
        );
    }

    #[test]
    fn malformed_messages_name_the_problem() {
        let e = |b: &[u8]| SpeedMessage::parse(b).unwrap_err();
        assert!(matches!(e(b"i3e"), ProtocolError::NotADict));
        assert!(matches!(e(b"d1:t3:fooe"), ProtocolError::UnknownType(_)));
        assert!(matches!(e(b"de"), ProtocolError::Missing("t")));
        assert!(matches!(e(b"d1:t"), ProtocolError::Bencode(_)));
        assert!(matches!(
            e(&vec![b'x'; MAX_MESSAGE_BYTES + 1]),
            ProtocolError::TooLong(_)
        ));
        // Nested values are refused by the depth bound.
        assert!(matches!(
            e(b"d1:ad1:bi1ee1:t3:bide"),
            ProtocolError::Bencode(_)
        ));
        // Amount edge cases: leading zero, sign, too many digits, over 2^128.
        for bad in [
            "01",
            "-1",
            "+1",
            "",
            "1e3",
            "340282366920938463463374607431768211456",
        ] {
            assert_eq!(parse_amount(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(parse_amount(b"0"), Some(0));
        assert_eq!(
            parse_amount(b"340282366920938463463374607431768211455"),
            Some(u128::MAX)
        );
        // A voucher whose signature is one byte short.
        let SpeedMessage::Voucher(v) = &all()[2] else {
            unreachable!()
        };
        let mut d = Bencode::dict();
        d.insert("t", Bencode::bytes("voucher"));
        d.insert("chain", Bencode::Int(199));
        d.insert("contract", Bencode::bytes(DOMAIN.contract.0));
        d.insert("channel", Bencode::bytes(v.channel.0));
        d.insert("payee", Bencode::bytes(v.payee.0));
        d.insert("amount", Bencode::bytes("5"));
        d.insert("sig", Bencode::bytes(&v.signature[..64]));
        assert_eq!(e(&d.encode()), ProtocolError::BadField("sig"));
        // Window beyond its bound.
        let mut d = Bencode::dict();
        d.insert("t", Bencode::bytes("offer"));
        d.insert("chain", Bencode::Int(1));
        d.insert("contract", Bencode::bytes([3; 20]));
        d.insert("payee", Bencode::bytes([0; 20]));
        d.insert("price", Bencode::bytes("1"));
        d.insert("window", Bencode::Int(MAX_CREDIT_WINDOW as i64 + 1));
        assert_eq!(e(&d.encode()), ProtocolError::BadField("window"));
        // An offer without a contract (a v1 seeder's) is refused: nobody can pay it.
        let mut d = Bencode::dict();
        d.insert("t", Bencode::bytes("offer"));
        d.insert("chain", Bencode::Int(1));
        d.insert("payee", Bencode::bytes([0; 20]));
        d.insert("price", Bencode::bytes("1"));
        d.insert("window", Bencode::Int(1 << 20));
        assert_eq!(e(&d.encode()), ProtocolError::Missing("contract"));
    }
}
