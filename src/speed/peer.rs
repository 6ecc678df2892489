//! What a worker keeps about one peer that speaks `rs_speed`, and how it reacts to the peer's
//! messages and to the verifier's answers. No I/O: the worker sends what these functions return.

use super::protocol::{Bid, Receipt, Refusal, SpeedMessage};
use super::service::{Job, Outcome, PeerRef, SpeedService};
use super::voucher::{Amount, Channel, Rejection, check_fields};
use crate::choking::auction::Bidder;

/// Our id for `rs_speed` in the handshake's `m`: peers send us speed messages under it.
pub const LOCAL_ID: u8 = 3;
/// Vouchers of one peer waiting for the verifier and the ledger; more are refused
/// (`overloaded`) so one peer cannot fill the verifier's queue.
const MAX_IN_FLIGHT: u32 = 64;
/// Distinct channels one connection may bid on, and bids it may send that need a signature
/// check (a re-price on the same channel and cap needs none): each costs the verifier a
/// recovery, and each channel can become a ledger row.
pub const MAX_CHANNELS_PER_CONNECTION: usize = 4;
pub const MAX_BIDS_PER_CONNECTION: u32 = 16;

#[derive(Debug, Clone)]
pub struct PeerSpeed {
    pub to: PeerRef,
    /// The peer's address: fresh credit windows are admitted per address.
    pub ip: std::net::IpAddr,
    /// Channels this connection bid on, and bids sent to the verifier.
    pub channels_bid: Vec<super::voucher::ChannelId>,
    pub bids_checked: u32,
    /// The id the peer wants `rs_speed` messages under.
    pub their_id: u8,
    /// Bid sent to the ledger, not yet confirmed.
    pub pending_bid: Option<Bid>,
    pub bid: Option<Bid>,
    /// The channel as the ledger confirmed it, `accepted` kept current by receipts.
    pub channel: Option<Channel>,
    /// What the channel had accepted when the bid was confirmed, and the bytes served by then:
    /// the auction compares what was paid and served since.
    pub accepted_at_bid: Amount,
    pub served_at_bid: u64,
    /// What earlier channels of this connection paid since their bids: a peer that switches
    /// (or re-bids) channels keeps its debt instead of starting a fresh credit window.
    pub paid_before: Amount,
    /// Highest voucher amount queued and not answered yet.
    pub highest_queued: Amount,
    pub in_flight: u32,
    /// Auction credit and priority over free peers, kept between rounds.
    pub credit: u64,
    pub priority: u64,
    /// Bids and vouchers of this connection whose signature did not recover to the payer.
    pub forged: u32,
}

/// Forged bids or vouchers after which a connection is cut off: each costs the single verifier
/// an ECDSA recovery (about 50 µs), and an honest payer never sends one; a few are tolerated so
/// a client with one bad signing bug is told why (`forged`) before it is dropped.
pub const MAX_FORGED: u32 = 8;

impl PeerSpeed {
    pub fn new(to: PeerRef, ip: std::net::IpAddr, their_id: u8) -> PeerSpeed {
        PeerSpeed {
            to,
            ip,
            channels_bid: Vec::new(),
            bids_checked: 0,
            their_id,
            pending_bid: None,
            bid: None,
            channel: None,
            accepted_at_bid: 0,
            served_at_bid: 0,
            paid_before: 0,
            highest_queued: 0,
            in_flight: 0,
            credit: 0,
            priority: 0,
            forged: 0,
        }
    }

    /// It sent [`MAX_FORGED`] bids or vouchers that failed their signature check.
    pub fn forger(&self) -> bool {
        self.forged >= MAX_FORGED
    }

    /// Handles one message from the peer. Returns what to send back right away (a refusal), if
    /// anything; jobs go to the verifier.
    pub fn on_message(
        &mut self,
        payload: &[u8],
        svc: &SpeedService,
        torrent: [u8; 20],
    ) -> Option<SpeedMessage> {
        let refuse = |s: &PeerSpeed, r: Rejection| {
            svc.stats.reject(r);
            Some(SpeedMessage::Refusal(Refusal::new(
                s.channel.map(|c| c.id),
                r,
                s.channel.map(|c| c.accepted),
            )))
        };
        let msg = match SpeedMessage::parse(payload) {
            Ok(m) => m,
            Err(_) => return refuse(self, Rejection::Malformed),
        };
        match msg {
            SpeedMessage::Bid(bid) => {
                if self.pending_bid.is_some() {
                    return refuse(self, Rejection::Overloaded);
                }
                // A new bid on the same channel only changes the price; another channel
                // starts over once the ledger confirms it.
                if let (Some(c), Some(old)) = (self.channel, self.bid)
                    && c.id == bid.channel
                    && c.payer == bid.payer
                    && old.cap == bid.cap
                {
                    self.bid = Some(bid);
                    return None;
                }
                let new_channel = !self.channels_bid.contains(&bid.channel);
                if self.bids_checked >= MAX_BIDS_PER_CONNECTION
                    || (new_channel && self.channels_bid.len() >= MAX_CHANNELS_PER_CONNECTION)
                {
                    return refuse(self, Rejection::TooManyChannels);
                }
                // The connection's first bid opens a fresh credit window (later ones carry the
                // debt): that is what an address's allowance counts.
                let fresh_from = (self.channel.is_none()).then_some(self.ip);
                if let Err(r) = svc.submit(Job::Bid {
                    to: self.to,
                    bid,
                    fresh_from,
                    funds: None,
                }) {
                    return refuse(self, r);
                }
                self.bids_checked += 1;
                if new_channel {
                    self.channels_bid.push(bid.channel);
                }
                self.pending_bid = Some(bid);
                None
            }
            SpeedMessage::Voucher(v) => {
                let Some(c) = self.channel else {
                    return refuse(self, Rejection::UnknownChannel);
                };
                // Pre-check against what is known here, counting vouchers already queued.
                let view = Channel {
                    accepted: c.accepted.max(self.highest_queued),
                    ..c
                };
                if let Err(r) = check_fields(&v, svc.offer.payee, &svc.offer.domain(), Some(&view))
                {
                    return refuse(self, r);
                }
                if self.in_flight >= MAX_IN_FLIGHT {
                    return refuse(self, Rejection::Overloaded);
                }
                let job = Job::Voucher {
                    to: self.to,
                    voucher: v,
                    payer: c.payer,
                    cap: c.cap,
                    torrent,
                };
                if let Err(r) = svc.submit(job) {
                    return refuse(self, r);
                }
                self.in_flight += 1;
                self.highest_queued = v.cumulative;
                None
            }
            // A seeder has no use for offers or receipts; refusals are informational.
            SpeedMessage::Offer(_) | SpeedMessage::Receipt(_) | SpeedMessage::Refusal(_) => None,
        }
    }

    /// Applies the verifier's answer; returns the receipt or refusal to send. `served` is the
    /// payload bytes sent to this peer so far.
    pub fn on_outcome(&mut self, o: &Outcome, served: u64) -> Option<SpeedMessage> {
        if matches!(
            *o,
            Outcome::Bid {
                result: Err(Rejection::Forged),
                ..
            } | Outcome::Voucher {
                result: Err(Rejection::Forged),
                ..
            }
        ) {
            self.forged = self.forged.saturating_add(1);
        }
        match *o {
            Outcome::Bid { result, .. } => {
                let bid = self.pending_bid.take()?;
                match result {
                    Ok(mut ch) => {
                        // The same channel again (a re-cap): never step back from what this
                        // connection already saw accepted (it would be counted twice) or
                        // queued (its vouchers are still in flight).
                        let same = self.channel.filter(|o| o.id == ch.id);
                        if let Some(old) = same {
                            ch.accepted = ch.accepted.max(old.accepted);
                        }
                        match self.channel {
                            // Only the first bid of a connection starts the count of bytes
                            // served; a later one (another channel or cap) carries what was
                            // paid so far, so re-bidding cannot reset a debt.
                            Some(old) => {
                                self.paid_before = self.paid_before.saturating_add(
                                    old.accepted.saturating_sub(self.accepted_at_bid),
                                );
                            }
                            None => self.served_at_bid = served,
                        }
                        self.bid = Some(bid);
                        self.channel = Some(ch);
                        self.accepted_at_bid = ch.accepted;
                        self.highest_queued = match same {
                            Some(_) => self.highest_queued.max(ch.accepted),
                            None => ch.accepted,
                        };
                        self.credit = 0;
                        // The payer learns where its channel stands (after a restart, say).
                        Some(SpeedMessage::Receipt(Receipt {
                            channel: ch.id,
                            served: 0,
                            accepted: ch.accepted,
                        }))
                    }
                    Err(r) => Some(SpeedMessage::Refusal(Refusal::new(
                        Some(bid.channel),
                        r,
                        None,
                    ))),
                }
            }
            Outcome::Superseded { .. } => {
                self.voucher_answered();
                None
            }
            Outcome::Voucher { result, .. } => {
                self.voucher_answered();
                let c = self.channel.as_mut()?;
                match result {
                    Ok(a) if a.channel == c.id => {
                        c.accepted = c.accepted.max(a.cumulative);
                        Some(SpeedMessage::Receipt(Receipt {
                            channel: c.id,
                            served: served.saturating_sub(self.served_at_bid),
                            accepted: c.accepted,
                        }))
                    }
                    // A voucher of a channel this connection bid away from, answered after the
                    // switch: durable all the same, so it counts toward what was paid.
                    Ok(a) => {
                        self.paid_before = self.paid_before.saturating_add(a.increment);
                        Some(SpeedMessage::Receipt(Receipt {
                            channel: a.channel,
                            served: served.saturating_sub(self.served_at_bid),
                            accepted: a.cumulative,
                        }))
                    }
                    Err(r) => {
                        if r == Rejection::ChannelClosed {
                            c.closed = true;
                        }
                        Some(SpeedMessage::Refusal(Refusal::new(
                            Some(c.id),
                            r,
                            Some(c.accepted),
                        )))
                    }
                }
            }
        }
    }

    /// One queued voucher was answered. With none left in flight, later vouchers are judged
    /// from the durable amount: a refused one (or one superseded by a refused one, whose
    /// answer comes first) must not count as queued, or the payer's resend of it would be
    /// refused `replayed` for ever.
    fn voucher_answered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0
            && let Some(c) = self.channel
        {
            self.highest_queued = c.accepted;
        }
    }

    /// This peer as an auction bidder, once its bid is confirmed.
    pub fn bidder(&self, key: usize, served: u64) -> Option<Bidder> {
        let (bid, c) = (self.bid?, self.channel?);
        if c.closed {
            return None;
        }
        Some(Bidder {
            key,
            price: bid.price,
            served: served.saturating_sub(self.served_at_bid),
            paid: self
                .paid_before
                .saturating_add(c.accepted.saturating_sub(self.accepted_at_bid)),
            credit: self.credit,
            priority: self.priority,
        })
    }

    /// Whether its bytes count as sold.
    pub fn paying(&self) -> bool {
        self.channel.is_some_and(|c| !c.closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speed::voucher::{Channel, ChannelId};
    use crate::speed::wallet::Address;

    fn fresh_peer() -> (PeerRef, PeerSpeed) {
        let to = PeerRef {
            worker: 0,
            slot: 0,
            conn_id: 1,
        };
        (
            to,
            PeerSpeed::new(to, std::net::Ipv4Addr::LOCALHOST.into(), 3),
        )
    }

    fn confirm(p: &mut PeerSpeed, channel: u8, accepted: Amount, served: u64) {
        let bid = Bid {
            price: 1 << 20,
            channel: ChannelId([channel; 32]),
            payer: Address([1; 20]),
            cap: 1 << 40,
            signature: [0; 65],
        };
        p.pending_bid = Some(bid);
        let ch = Channel {
            id: bid.channel,
            payer: bid.payer,
            cap: bid.cap,
            accepted,
            closed: false,
        };
        let to = p.to;
        assert!(matches!(
            p.on_outcome(&Outcome::Bid { to, result: Ok(ch) }, served),
            Some(SpeedMessage::Receipt(_))
        ));
    }

    /// A refused voucher, and those it superseded, leave nothing counted as queued: the payer's
    /// resend of the same amount is judged against the durable amount, not refused `replayed`.
    #[test]
    fn a_refused_voucher_does_not_stay_counted_as_queued() {
        let (to, mut p) = fresh_peer();
        confirm(&mut p, 1, 10, 0);
        // 19 and 20 were queued; 20 came back refused (database queue full), then 19 as
        // superseded by it.
        (p.in_flight, p.highest_queued) = (2, 20);
        let refused = Outcome::Voucher {
            to,
            result: Err(Rejection::Overloaded),
        };
        assert!(matches!(
            p.on_outcome(&refused, 0),
            Some(SpeedMessage::Refusal(_))
        ));
        assert_eq!(p.highest_queued, 20, "19 is still in flight");
        assert_eq!(p.on_outcome(&Outcome::Superseded { to }, 0), None);
        assert_eq!((p.in_flight, p.highest_queued), (0, 10));
    }

    /// A voucher of the connection's previous channel, answered after the switch to another,
    /// still counts as paid (it is durable) and gets its receipt.
    #[test]
    fn a_late_voucher_of_the_previous_channel_counts() {
        let (to, mut p) = fresh_peer();
        confirm(&mut p, 1, 0, 0);
        p.in_flight = 1;
        confirm(&mut p, 2, 0, 1 << 20);
        let late = Outcome::Voucher {
            to,
            result: Ok(crate::speed::ledger::Accepted {
                channel: ChannelId([1; 32]),
                increment: 300,
                cumulative: 300,
            }),
        };
        let Some(SpeedMessage::Receipt(r)) = p.on_outcome(&late, 2 << 20) else {
            panic!("no receipt")
        };
        assert_eq!((r.channel, r.accepted), (ChannelId([1; 32]), 300));
        assert_eq!(p.bidder(0, 2 << 20).unwrap().paid, 300);
    }

    /// A re-cap answered with an older durable amount than the connection already saw must
    /// not count the difference twice.
    #[test]
    fn a_re_cap_never_steps_back_from_what_was_seen_accepted() {
        let (_, mut p) = fresh_peer();
        confirm(&mut p, 1, 0, 0);
        if let Some(c) = p.channel.as_mut() {
            c.accepted = 200;
        }
        confirm(&mut p, 1, 100, 1 << 20);
        assert_eq!(p.bidder(0, 1 << 20).unwrap().paid, 200);
    }

    #[test]
    fn a_new_bid_does_not_reset_what_is_owed() {
        let (_, mut p) = fresh_peer();
        confirm(&mut p, 1, 0, 5 << 20);
        // 10 MiB served since the first bid, 4 MiB worth paid on channel 1.
        if let Some(c) = p.channel.as_mut() {
            c.accepted = 4 << 20;
        }
        let before = p.bidder(0, 15 << 20).unwrap();
        assert_eq!((before.served, before.paid), (10 << 20, 4 << 20));
        // Switching to a fresh channel (which already had 100 accepted elsewhere) keeps the
        // debt: still 10 MiB served, still 4 MiB paid.
        confirm(&mut p, 2, 100, 15 << 20);
        let after = p.bidder(0, 15 << 20).unwrap();
        assert_eq!((after.served, after.paid), (10 << 20, 4 << 20));
    }
}
