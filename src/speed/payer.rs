//! The paying side of `rs_speed`, as a state machine without I/O: it bids when the seeder's offer
//! arrives and signs a new cumulative voucher as data comes in, never past its budget. Used by
//! `ringseed bench --pay` and by the tests' leechers.
//!
//! ```
//! use ringseed::speed::payer::Payer;
//! use ringseed::speed::protocol::{Offer, SpeedMessage};
//! use ringseed::speed::voucher::ChannelId;
//! use ringseed::speed::wallet::{Address, Wallet};
//! let mut p = Payer::new(Wallet::from_secret([1; 32]).unwrap(), ChannelId([9; 32]), 1 << 20, 1_000_000);
//! let offer = SpeedMessage::Offer(Offer { chain_id: 199, contract: Address([3; 20]), payee: Address([2; 20]), min_price: 1, credit_window: 1 << 20 });
//! let out = p.on_message(&offer.encode());
//! assert!(matches!(SpeedMessage::parse(&out[0]), Ok(SpeedMessage::Bid(_))));
//! ```

use super::protocol::{Bid, Offer, SpeedMessage};
use super::voucher::{Amount, ChannelId, Voucher};
use super::wallet::{Address, Wallet};
use crate::choking::auction::cost;

/// Fewest bytes between two vouchers, whatever the seeder's credit window: each voucher costs
/// the seeder a signature check and a ledger write, so tiny windows must not flood it.
pub const MIN_VOUCHER_INTERVAL: u64 = 64 << 10;

/// Bytes between two vouchers for a seeder offering `credit_window`: half of it. The other half
/// covers what is in flight while a voucher travels and is committed, so an honest payer never
/// falls behind; and the seeder checks one voucher per half window (per 16 MiB at the default
/// 32 MiB), which keeps its cost per GiB small.
pub fn voucher_interval(credit_window: u64) -> u64 {
    (credit_window / 2).max(MIN_VOUCHER_INTERVAL)
}

pub struct Payer {
    wallet: Wallet,
    channel: ChannelId,
    price: Amount,
    budget: Amount,
    offer: Option<Offer>,
    /// Set by the first receipt after the bid: the channel's durable amount at that moment.
    base: Option<Amount>,
    /// Payload bytes received since the bid was confirmed.
    received: u64,
    unpaid_bytes: u64,
    /// Highest cumulative amount signed and sent.
    signed: Amount,
    /// Highest cumulative amount the seeder acknowledged (durable).
    acked: Amount,
    refusals: u64,
    last_refusal: Option<String>,
    /// Vouchers signed and sent.
    vouchers: u64,
    /// The contract the channel was opened on, when known: offers naming another are ignored.
    contract: Option<Address>,
}

impl Payer {
    /// `price` per MiB; `budget` is the channel's cap (the most it ever pays in total).
    pub fn new(wallet: Wallet, channel: ChannelId, price: Amount, budget: Amount) -> Payer {
        Payer {
            wallet,
            channel,
            price,
            budget,
            offer: None,
            base: None,
            received: 0,
            unpaid_bytes: 0,
            signed: 0,
            acked: 0,
            refusals: 0,
            last_refusal: None,
            vouchers: 0,
            contract: None,
        }
    }

    /// Pins the contract the channel lives on: an offer naming another contract gets no bid.
    pub fn on_contract(mut self, contract: Address) -> Payer {
        self.contract = Some(contract);
        self
    }

    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// The highest amount the seeder acknowledged as durable.
    pub fn acked(&self) -> Amount {
        self.acked
    }

    /// Whether the seeder confirmed the bid (its first receipt arrived).
    pub fn confirmed(&self) -> bool {
        self.base.is_some()
    }

    pub fn signed(&self) -> Amount {
        self.signed
    }

    pub fn refusals(&self) -> u64 {
        self.refusals
    }

    /// Vouchers signed and sent so far.
    pub fn vouchers(&self) -> u64 {
        self.vouchers
    }

    /// The reason named by the seeder's latest refusal.
    pub fn last_refusal(&self) -> Option<&str> {
        self.last_refusal.as_deref()
    }

    /// Handles a speed message from the seeder; returns payloads to send back.
    pub fn on_message(&mut self, payload: &[u8]) -> Vec<Vec<u8>> {
        let Ok(msg) = SpeedMessage::parse(payload) else {
            return Vec::new();
        };
        match msg {
            SpeedMessage::Offer(o) => {
                // A payer whose channel lives on one contract pays no seeder that claims on
                // another: its vouchers would be worthless there, and the seeder would serve
                // on credit for nothing.
                if self.contract.is_some_and(|c| c != o.contract) {
                    self.last_refusal = Some("other_contract".to_string());
                    return Vec::new();
                }
                self.offer = Some(o);
                let bid = Bid::sign(
                    &self.wallet,
                    o.domain(),
                    o.payee,
                    self.price,
                    self.channel,
                    self.budget,
                );
                vec![SpeedMessage::Bid(bid).encode()]
            }
            SpeedMessage::Receipt(r) if r.channel == self.channel => {
                self.acked = self.acked.max(r.accepted);
                if self.base.is_none() {
                    self.base = Some(r.accepted);
                    self.signed = self.signed.max(r.accepted);
                }
                Vec::new()
            }
            SpeedMessage::Refusal(r) => {
                self.refusals += 1;
                self.last_refusal = Some(r.reason.clone());
                // Resynchronise on the seeder's durable amount.
                if let Some(a) = r.accepted {
                    self.acked = self.acked.max(a);
                    self.signed = a.max(self.acked);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// `n` payload bytes arrived; returns a voucher to send when one is due.
    pub fn on_bytes(&mut self, n: u64) -> Option<Vec<u8>> {
        let base = self.base?;
        let offer = self.offer?;
        self.received += n;
        self.unpaid_bytes += n;
        if self.unpaid_bytes < voucher_interval(offer.credit_window) {
            return None;
        }
        self.unpaid_bytes = 0;
        let due = base
            .saturating_add(cost(self.price, self.received))
            .min(self.budget);
        if due <= self.signed {
            return None;
        }
        self.signed = due;
        self.vouchers += 1;
        let v = Voucher::sign(&self.wallet, offer.domain(), self.channel, offer.payee, due);
        Some(SpeedMessage::Voucher(v).encode())
    }

    /// A voucher for an explicit amount (tests use it to replay or go backwards).
    pub fn voucher_for(&self, amount: Amount) -> Option<Vec<u8>> {
        let offer = self.offer?;
        let v = Voucher::sign(
            &self.wallet,
            offer.domain(),
            self.channel,
            offer.payee,
            amount,
        );
        Some(SpeedMessage::Voucher(v).encode())
    }
}

/// Our id for `rs_speed` in a paying leecher's extension handshake.
pub const PAYER_LOCAL_ID: u8 = 7;

/// A [`Payer`] wired to a leecher's byte stream, for `ringseed bench --pay`: the leecher hands it
/// extended messages and block sizes, and sends whatever it appends to `out`.
pub struct WirePayer {
    payer: Payer,
    their_id: Option<u8>,
}

impl WirePayer {
    /// A payer with a fresh random key and channel id.
    pub fn random(price: Amount, budget: Amount) -> Option<WirePayer> {
        let wallet = Wallet::generate().ok()?;
        let mut channel = [0u8; 32];
        getrandom::fill(&mut channel).ok()?;
        Some(WirePayer {
            payer: Payer::new(wallet, ChannelId(channel), price, budget),
            their_id: None,
        })
    }

    /// A given payer (e.g. paying from a channel opened on chain).
    pub fn with(payer: Payer) -> WirePayer {
        WirePayer {
            payer,
            their_id: None,
        }
    }

    /// The extension handshake that announces `rs_speed` (send it right after the handshake).
    pub fn handshake(out: &mut Vec<u8>) {
        let ext = crate::wire::extension::ExtHandshake {
            m: vec![(super::protocol::EXTENSION_NAME.to_string(), PAYER_LOCAL_ID)],
            ..Default::default()
        }
        .encode();
        crate::wire::Message::Extended {
            id: 0,
            payload: &ext,
        }
        .encode(out);
    }

    /// An extended message from the seeder.
    pub fn on_extended(&mut self, id: u8, payload: &[u8], out: &mut Vec<u8>) {
        if id == 0 {
            let ext = crate::wire::extension::ExtHandshake::parse(payload).ok();
            self.their_id = ext.and_then(|e| e.id_of(super::protocol::EXTENSION_NAME));
        } else if id == PAYER_LOCAL_ID {
            for reply in self.payer.on_message(payload) {
                self.send(&reply, out);
            }
        }
    }

    /// A block of `len` bytes arrived.
    pub fn on_block(&mut self, len: u64, out: &mut Vec<u8>) {
        if let Some(v) = self.payer.on_bytes(len) {
            self.send(&v, out);
        }
    }

    /// The payer behind the wire, for its totals.
    pub fn payer(&self) -> &Payer {
        &self.payer
    }

    fn send(&self, payload: &[u8], out: &mut Vec<u8>) {
        if let Some(id) = self.their_id {
            crate::wire::Message::Extended { id, payload }.encode(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speed::protocol::{Receipt, Refusal};
    use crate::speed::voucher::Rejection;
    use crate::speed::wallet::Address;

    #[test]
    fn pays_as_data_arrives_and_stops_at_the_budget() {
        let payer = Wallet::from_secret([1; 32]).unwrap();
        const EVERY: u64 = 1 << 19;
        let budget = 5 * u128::from(EVERY) + 7;
        let mut p = Payer::new(payer, ChannelId([9; 32]), 1 << 20, budget);
        let offer = Offer {
            chain_id: 199,
            contract: Address([3; 20]),
            payee: Address([2; 20]),
            min_price: 1,
            credit_window: 1 << 20,
        };
        assert_eq!(p.on_bytes(1 << 20), None, "nothing before the offer");
        p.on_message(&SpeedMessage::Offer(offer).encode());
        assert_eq!(
            p.on_bytes(1 << 20),
            None,
            "nothing before the bid is confirmed"
        );
        let receipt = |a| {
            SpeedMessage::Receipt(Receipt {
                channel: ChannelId([9; 32]),
                served: 0,
                accepted: a,
            })
            .encode()
        };
        p.on_message(&receipt(100));
        assert_eq!(voucher_interval(offer.credit_window), EVERY);
        assert_eq!(p.on_bytes(EVERY - 1), None, "not before half the window");
        let v = p.on_bytes(1).unwrap();
        let Ok(SpeedMessage::Voucher(v)) = SpeedMessage::parse(&v) else {
            panic!("not a voucher")
        };
        // 1 unit per byte: base 100 + one interval.
        assert_eq!(v.cumulative, 100 + EVERY as u128);
        assert_eq!(v.payee, offer.payee);
        assert!(p.on_bytes(10).is_none());
        for _ in 0..10 {
            p.on_bytes(EVERY);
        }
        assert_eq!(p.signed(), budget, "capped at the budget");
        assert!(p.on_bytes(EVERY).is_none());
        p.on_message(
            &SpeedMessage::Refusal(Refusal::new(
                Some(ChannelId([9; 32])),
                Rejection::Forged,
                Some(500),
            ))
            .encode(),
        );
        assert_eq!((p.refusals(), p.signed(), p.acked()), (1, 500, 500));
    }
}
