//! BEP 52 on the serving side: which info-hash a v2 peer is answered with, and its `hash
//! request`s answered from the torrent's merkle trees ([`crate::merkle::Trees`]) with `hashes`,
//! or refused with `hash reject`.
//!
//! Bounds: answers come from a budget of [`BURST`] requests refilled at [`PER_SEC`] (libtorrent
//! keeps two requests in flight and needs one per 512 pieces of a file, so an honest peer stays
//! far inside it); a request past the budget, or one whose answer would not fit the send
//! backlog, is rejected (the peer asks again later, as libtorrent does after a reject), and
//! every reject spends the peer's budget of messages that change nothing, so a flood of them
//! ends the connection (`message_flood`). Each answer is at most [`crate::merkle::MAX_SERVED`]
//! hashes (16.4 KiB) and counts against the upload limits like a BEP 9 answer.

use std::time::Instant;

use super::{Action, Peer, Reason, Rules, TorrentView};
use crate::engine::stats::HashReject;
use crate::wire::hashes::{self, HashMessage, HashRequest};

/// Hash requests answered at once before the refill rate applies.
pub(super) const BURST: u32 = 256;
/// Hash requests answered per second after the burst.
pub(super) const PER_SEC: u32 = 32;

/// The info-hash our handshake answers a peer's with. A peer that dialled a v2 or hybrid
/// torrent by its truncated v2 hash gets that back; a peer that used a hybrid torrent's v1 hash
/// but set the v2 bit gets the v2 hash: BEP 52's upgrade, as libtorrent 2.0 answers (it marks
/// such a connection v2 and then asks it for hashes). Anything else is answered in kind.
pub fn reply_hash(reserved: &[u8; 8], theirs: [u8; 20], v2_id: Option<[u8; 20]>) -> [u8; 20] {
    let upgrade = crate::wire::Handshake {
        reserved: *reserved,
        info_hash: theirs,
        peer_id: [0; 20],
    }
    .supports_v2();
    match v2_id {
        Some(v2) if upgrade => v2,
        _ => theirs,
    }
}

impl Peer {
    /// A `hash request`: answered with `hashes` when the torrent has the file's tree, the
    /// request fits it and the budgets allow, else rejected. A frame of the wrong size closes
    /// the connection (`bad_message`, as libtorrent does).
    pub(super) fn on_hash_request(
        &mut self,
        payload: &[u8],
        t: TorrentView<'_>,
        rules: &Rules,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Action<'static>, Reason> {
        let Ok(HashMessage::Request(req)) = hashes::parse(hashes::HASH_REQUEST, payload) else {
            return Err(Reason::BadMessage);
        };
        let answer = match t.trees.and_then(|trees| trees.answer(&req).ok()) {
            None => Err(HashReject::Invalid),
            Some(a)
                if out.len() + 5 + hashes::HEADER_LEN + a.len() * 32 > rules.max_send_backlog =>
            {
                Err(HashReject::Backlog)
            }
            Some(_) if !self.take_hash_token(now) => Err(HashReject::Budget),
            Some(a) => Ok(a),
        };
        match answer {
            Ok(a) => {
                let before = out.len();
                hashes::encode_hashes(&req, &a, out);
                Ok(Action::HashesSent((out.len() - before) as u64))
            }
            Err(why) => {
                self.spend_noise(now)?;
                reject(&req, out);
                Ok(Action::HashesRejected(why))
            }
        }
    }

    /// Takes one answer from the budget, refilled at [`PER_SEC`] up to [`BURST`].
    fn take_hash_token(&mut self, now: Instant) -> bool {
        let secs = now.saturating_duration_since(self.hash_at).as_secs();
        if secs > 0 {
            let refill = (secs.min(u64::from(BURST)) as u32).saturating_mul(PER_SEC);
            self.hash_tokens = self.hash_tokens.saturating_add(refill).min(BURST);
            self.hash_at = now;
        }
        match self.hash_tokens.checked_sub(1) {
            Some(left) => {
                self.hash_tokens = left;
                true
            }
            None => false,
        }
    }
}

fn reject(req: &HashRequest, out: &mut Vec<u8>) {
    HashMessage::Reject(*req).encode(out);
}
