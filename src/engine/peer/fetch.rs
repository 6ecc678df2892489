//! The download side of a peer: whether it interests us, the requests we have in flight to it,
//! which blocks it may send, and what a choke, a reject or a stall gives back.
//!
//! A block is accepted only if we asked for it: from the requests in flight, or from the
//! recently cancelled ones (a cancel or a choke crosses blocks already on the wire; BEP 3 says
//! such blocks may still come). Anything else, or a block of another length than asked, closes
//! the connection (`unrequested_block`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Peer, Reason, TorrentView};
use crate::download::picker::Offer;
use crate::wire::{BlockRequest, Message};

/// Cancelled requests whose blocks are still welcome; older ones are forgotten (a block for
/// them then counts as unrequested).
const MAX_LATE: usize = 1024;

/// A request in flight to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    pub req: BlockRequest,
    pub at: Instant,
}

#[derive(Debug, Clone)]
pub(super) struct FetchState {
    /// Pieces the peer has that we lack (kept as haves arrive and as we verify pieces).
    pub wanted: u32,
    asked: VecDeque<Asked>,
    late: VecDeque<BlockRequest>,
    /// Requests given back since the worker last looked (choke, reject, stall).
    dropped: Vec<BlockRequest>,
    /// Piece payload received from it: in all, and since the last rate sample.
    pub downloaded: u64,
    pub downloaded_this_round: u64,
    sampled: u64,
    /// Bytes per second, smoothed over the last seconds.
    rate: u64,
    last_block: Instant,
    snubbed: bool,
}

impl FetchState {
    pub fn new(now: Instant) -> FetchState {
        FetchState {
            wanted: 0,
            asked: VecDeque::new(),
            late: VecDeque::new(),
            dropped: Vec::new(),
            downloaded: 0,
            downloaded_this_round: 0,
            sampled: 0,
            rate: 0,
            last_block: now,
            snubbed: false,
        }
    }

    /// Heap bytes of our requests to the peer: in flight, recently cancelled, given back.
    pub fn heap_bytes(&self) -> usize {
        self.asked.capacity() * std::mem::size_of::<Asked>()
            + (self.late.capacity() + self.dropped.capacity()) * std::mem::size_of::<BlockRequest>()
    }

    fn remember_late(&mut self, r: BlockRequest) {
        if self.late.len() >= MAX_LATE {
            self.late.pop_front();
        }
        self.late.push_back(r);
    }
}

impl Peer {
    /// Requests in flight to the peer.
    pub fn asked(&self) -> &VecDeque<Asked> {
        &self.fetch.asked
    }

    /// Whether the peer has a piece we lack.
    pub fn wanted(&self) -> bool {
        self.fetch.wanted > 0
    }

    pub fn downloaded(&self) -> u64 {
        self.fetch.downloaded
    }

    pub fn downloaded_this_round(&self) -> u64 {
        self.fetch.downloaded_this_round
    }

    pub fn new_download_round(&mut self) {
        self.fetch.downloaded_this_round = 0;
    }

    /// Its download rate, bytes per second (updated by [`Peer::sample_rate`]).
    pub fn download_rate(&self) -> u64 {
        self.fetch.rate
    }

    /// It let our requests wait past the request timeout; cleared by its next block.
    pub fn snubbed(&self) -> bool {
        self.fetch.snubbed
    }

    /// Whether we may ask it for a block of piece `i` now: it unchoked us, or allows the piece
    /// while choking (BEP 6).
    pub fn may_ask(&self, i: u32) -> bool {
        (!self.peer_choking || self.allowed_fast_in.contains(&i)) && self.peer_has(i)
    }

    /// The pieces it can give us now, for the picker: what it announced, only its allowed-fast
    /// ones while it chokes us.
    pub fn offer(&self) -> Offer<'_> {
        Offer {
            bits: self.have.bits.as_deref().unwrap_or_default(),
            only: self.peer_choking.then_some(self.allowed_fast_in.as_slice()),
        }
    }

    /// Requests to keep in flight: about three seconds of its rate (libtorrent's
    /// `request_queue_time`), at least 16 (1 while it snubs us), at most its advertised `reqq`
    /// and `cap`. Half a second was too little: a peer that answers in batches every half
    /// second (Transmission) never got past 16 blocks in flight, so its rate stayed at
    /// 16 blocks per half second (512 KiB/s) and the pipeline, sized from that rate, never grew.
    pub fn pipeline(&self, cap: usize) -> usize {
        if self.fetch.snubbed {
            return 1;
        }
        let reqq = self
            .ext
            .as_ref()
            .and_then(|e| e.reqq)
            .map_or(250, |q| q.clamp(1, 2000) as usize);
        let by_rate = (self.fetch.rate * 3 / u64::from(crate::wire::BLOCK_SIZE)) as usize;
        by_rate.clamp(16, cap.max(4)).min(reqq)
    }

    /// Asks the peer for a block.
    pub fn ask(&mut self, req: BlockRequest, now: Instant, out: &mut Vec<u8>) {
        if self.fetch.asked.is_empty() {
            // The wait for a block starts with the first request, not at the last block.
            self.fetch.last_block = now;
        }
        Message::Request(req).encode(out);
        self.fetch.asked.push_back(Asked { req, at: now });
    }

    /// Cancels one request in flight (endgame: another peer delivered the block). Returns
    /// whether it was in flight.
    pub fn cancel(&mut self, req: BlockRequest, out: &mut Vec<u8>) -> bool {
        let Some(pos) = self.fetch.asked.iter().position(|a| a.req == req) else {
            return false;
        };
        self.fetch.asked.remove(pos);
        Message::Cancel(req).encode(out);
        self.fetch.remember_late(req);
        true
    }

    /// Cancels every request in flight and returns them (the peer is given up on, or the
    /// torrent stopped downloading).
    pub fn cancel_all(&mut self, out: &mut Vec<u8>) -> Vec<BlockRequest> {
        let asked: Vec<BlockRequest> = self.fetch.asked.drain(..).map(|a| a.req).collect();
        for &r in &asked {
            Message::Cancel(r).encode(out);
            self.fetch.remember_late(r);
        }
        asked
    }

    /// Requests that came back since the last call (a choke without BEP 6, a reject, a stall):
    /// their blocks must be asked of someone else.
    pub fn take_dropped(&mut self) -> Vec<BlockRequest> {
        std::mem::take(&mut self.fetch.dropped)
    }

    /// Whether requests came back since [`Peer::take_dropped`] was last called.
    pub fn has_dropped(&self) -> bool {
        !self.fetch.dropped.is_empty()
    }

    /// We verified piece `i`: the peer may no longer have anything we want.
    pub fn we_got(&mut self, i: u32) {
        if self.peer_has(i) {
            self.fetch.wanted = self.fetch.wanted.saturating_sub(1);
        }
    }

    /// Says `interested` or `not interested` when that changed: interested while it has a
    /// piece we lack and we are downloading.
    pub fn update_interest(&mut self, t: TorrentView<'_>, out: &mut Vec<u8>) {
        let want = t.fetching && self.fetch.wanted > 0;
        if want != self.am_interested {
            self.am_interested = want;
            if want {
                Message::Interested.encode(out);
            } else {
                Message::NotInterested.encode(out);
            }
        }
    }

    /// Once a second: the rate sample (smoothed over a few seconds).
    pub fn sample_rate(&mut self) {
        let f = &mut self.fetch;
        let got = f.downloaded - f.sampled;
        f.sampled = f.downloaded;
        f.rate = (f.rate * 3 + got) / 4;
    }

    /// Counts the pieces it has that we lack (after a bitfield or have-all).
    pub(super) fn count_wanted(&mut self, t: TorrentView<'_>) {
        let mut wanted = 0;
        if let Some(bits) = &self.have.bits {
            super::for_each_set(bits, t.num_pieces(), |i| {
                if !t.pieces.verified.get(i) {
                    wanted += 1;
                }
            });
        }
        self.fetch.wanted = wanted;
    }

    /// The peer choked us: without BEP 6 our requests are gone (blocks already sent may still
    /// come); with it, the peer rejects the ones it will not serve.
    pub(super) fn on_choked(&mut self) {
        if self.fast {
            return;
        }
        let f = &mut self.fetch;
        while let Some(a) = f.asked.pop_front() {
            f.dropped.push(a.req);
            f.remember_late(a.req);
        }
    }

    pub(super) fn on_reject(&mut self, r: BlockRequest) -> Result<(), Reason> {
        let f = &mut self.fetch;
        if let Some(pos) = f.asked.iter().position(|a| a.req == r) {
            f.asked.remove(pos);
            f.dropped.push(r);
            return Ok(());
        }
        if let Some(pos) = f.late.iter().position(|l| *l == r) {
            f.late.remove(pos);
            return Ok(());
        }
        // A reject of something we never asked: BEP 6 says to close.
        Err(Reason::UnrequestedBlock)
    }

    pub(super) fn on_block<'m>(
        &mut self,
        index: u32,
        begin: u32,
        data: &'m [u8],
        now: Instant,
    ) -> Result<super::Action<'m>, Reason> {
        let f = &mut self.fetch;
        let same = |r: &BlockRequest| r.index == index && r.begin == begin;
        let (req, late) = if let Some(pos) = f.asked.iter().position(|a| same(&a.req)) {
            let a = f.asked.remove(pos).ok_or(Reason::UnrequestedBlock)?;
            (a.req, false)
        } else if let Some(pos) = f.late.iter().position(same) {
            (f.late.remove(pos).ok_or(Reason::UnrequestedBlock)?, true)
        } else {
            return Err(Reason::UnrequestedBlock);
        };
        if req.length as usize != data.len() {
            return Err(Reason::UnrequestedBlock);
        }
        f.downloaded += data.len() as u64;
        f.downloaded_this_round += data.len() as u64;
        f.last_block = now;
        f.snubbed = false;
        Ok(super::Action::Block { req, data, late })
    }

    /// Whether our requests have waited longer than `timeout` with no block: then they are
    /// cancelled and given back, and the peer is snubbed until it sends a block.
    pub(super) fn check_stall(
        &mut self,
        now: Instant,
        timeout: Duration,
        out: &mut Vec<u8>,
    ) -> bool {
        if self.fetch.asked.is_empty()
            || now.saturating_duration_since(self.fetch.last_block) <= timeout
        {
            return false;
        }
        let given_back = self.cancel_all(out);
        self.fetch.dropped.extend(given_back);
        self.fetch.snubbed = true;
        true
    }

    /// Piece payload the peer sent that we count (for the torrent's totals).
    pub fn peer_sent(&self) -> u64 {
        self.fetch.downloaded
    }
}
