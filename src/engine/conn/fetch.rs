//! The download side of a connection: which blocks to ask the peer for (its own pieces first,
//! then pieces nobody on this worker fetches, then a new claim, then endgame copies), blocks
//! that arrive, and requests that come back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Conn;
use crate::download::part::{Part, Taken};
use crate::download::picker::{self, Strategy};
use crate::engine::core::Core;
use crate::engine::{Reason, Torrent};
use crate::wire::{BLOCK_SIZE, BlockRequest};

/// Peers asked for one block at most, in endgame.
const ENDGAME_COPIES: u8 = 2;

impl Conn {
    /// Asks the peer for blocks until its pipeline is full, as far as its choking, our memory
    /// budget and the download limits allow.
    pub fn fill_requests(&mut self, slot: usize, core: &mut Core) {
        if self.closing.is_some() || !self.is_active() {
            return;
        }
        let Some(t) = self.torrent.clone() else {
            return;
        };
        if !t.fetching() || !self.peer.am_interested() {
            return;
        }
        if self.peer.peer_choking() && self.peer.allowed_fast_in().is_empty() {
            return;
        }
        let target = self.peer.pipeline(core.settings.max_reqq);
        self.dl_waiting = false;
        let before = self.peer.asked().len();
        while self.peer.asked().len() < target {
            // Both buckets, or neither (the global tokens go back if the torrent's refuse).
            let len = u64::from(BLOCK_SIZE);
            if !core.download_limit.try_take(len, core.now) {
                self.dl_waiting = true;
                break;
            }
            if !t.fetch.download_limit.try_take(len, core.now) {
                core.download_limit.give_back(len);
                self.dl_waiting = true;
                break;
            }
            let Some(req) = self.next_block(slot, &t, core) else {
                core.download_limit.give_back(len);
                t.fetch.download_limit.give_back(len);
                break;
            };
            self.peer.ask(req, core.now, &mut self.ctrl);
        }
        if self.peer.asked().len() > before {
            self.pump_send(slot, core);
        }
    }

    /// The next block to ask this peer for, marked asked in its part.
    fn next_block(
        &mut self,
        slot: usize,
        t: &Arc<Torrent>,
        core: &mut Core,
    ) -> Option<BlockRequest> {
        let peer = &self.peer;
        let now = core.now;
        let f = core.fetches.torrents.entry(t.id).or_default();
        let may_ask = |i| peer.may_ask(i);
        // Its own pieces first (a piece comes whole from one peer where it can), then partial
        // pieces nobody fetches (their peer left, choked or snubbed us), which it adopts:
        // finished before new ones are started. A peer that snubs us owns no part (its parts
        // were disowned at the snub, and it adopts none): it gets one block at a time of a new
        // piece, the rest of which others adopt, or, with nothing new, a block of someone
        // else's orphan.
        let snubbed = peer.snubbed();
        if !snubbed && let Some((req, adopted)) = f.next_open(slot, may_ask, true, &t.pieces, now) {
            if adopted {
                self.owns_parts = true;
                core.stats.add(&core.stats.parts_adopted, 1);
            }
            return Some(req);
        }
        // A new piece, while the memory budget allows; with the budget spent the peer waits
        // for parts to be written (endgame is for when nothing is left to claim, not for a
        // full budget: it would only duplicate requests).
        let size = t.meta.info.layout.piece_length;
        let room = core.fetches.has_room(size);
        if room {
            let strategy = Strategy::for_progress(
                t.pieces.verified.count(),
                core.settings.random_first_pieces,
            );
            core.rng = next_rand(core.rng);
            let want = t.want();
            if let Some(i) = picker::claim(&t.pieces, peer.offer(), strategy, core.rng, &want) {
                return Some(self.start_part(slot, t, i, true, !snubbed, core));
            }
        }
        if snubbed {
            let f = core.fetches.torrents.entry(t.id).or_default();
            let may_ask = |i| self.peer.may_ask(i);
            if let Some((req, _)) = f.next_open(slot, may_ask, false, &t.pieces, now) {
                return Some(req);
            }
        }
        // Endgame copies are for peers that deliver: a snubbed one would only hold a copy
        // slot (two snubbed peers taking turns at the last block kept the one peer that
        // answers from ever being asked it).
        if !room || snubbed {
            return None;
        }
        // Endgame: nothing is left to claim from this peer. Blocks asked of others go to it too
        // (each of at most two peers), so the last pieces do not wait on the slowest one.
        let f = core.fetches.torrents.entry(t.id).or_default();
        let peer = &self.peer;
        let asked = |index: u32, b: u32| {
            peer.asked()
                .iter()
                .any(|a| a.req.index == index && a.req.begin == b * BLOCK_SIZE)
        };
        if let Some(req) = f.next_copy(|i| peer.may_ask(i), asked, ENDGAME_COPIES, now) {
            return Some(req);
        }
        // A piece another worker claimed, copied here (endgame across workers). Never one that
        // is verified or being written by any worker (`picker::copy_candidate`): its bytes are
        // complete and checked, a copy would only race its write.
        if core.fetches.has_room(size) {
            core.rng = next_rand(core.rng);
            let fetches = &core.fetches;
            let i = picker::copy_candidate(
                &t.pieces,
                self.peer.offer(),
                |i| fetches.has_part(&t.id, i),
                core.rng,
                &t.want(),
            )?;
            core.stats.add(&core.stats.endgame_copies, 1);
            return Some(self.start_part(slot, t, i, false, true, core));
        }
        None
    }

    /// A new part for piece `i`, owned by this peer if `owned`; returns its first block,
    /// asked.
    fn start_part(
        &mut self,
        slot: usize,
        t: &Torrent,
        i: u32,
        claimed: bool,
        owned: bool,
        core: &mut Core,
    ) -> BlockRequest {
        let size = t.meta.info.layout.piece_size(i) as u32;
        let buf = core.fetches.buffer(size as usize);
        // SHA-1 as the blocks arrive, unless complete pieces are hashed together in lanes.
        let lanes = core.fetches.hash_in_lanes(t.meta.info.layout.piece_length);
        let mut p = Part::with_buffer(i, buf, t.meta.info.version.has_v1() && !lanes);
        p.owner = owned.then_some(slot);
        p.claimed = claimed;
        self.owns_parts |= owned;
        let b = p.next_missing().unwrap_or(0);
        let req = p.block(b);
        core.fetches
            .torrents
            .entry(t.id)
            .or_default()
            .insert(p, core.now);
        req
    }

    /// Requests the peer gave back (choke, reject, stall): their blocks are free for others.
    /// A peer that chokes or snubs us no longer owns its parts: others of the worker continue
    /// them (or, if none can, the sweep gives them up).
    pub fn give_back_requests(&mut self, slot: usize, core: &mut Core) {
        let disown = self.owns_parts && (self.peer.peer_choking() || self.peer.snubbed());
        if !self.peer.has_dropped() && !disown {
            return;
        }
        let dropped = self.peer.take_dropped();
        let Some(t) = &self.torrent else { return };
        let Some(f) = core.fetches.torrents.get_mut(&t.id) else {
            return;
        };
        f.give_back(&dropped);
        if disown {
            f.disown(slot);
            self.owns_parts = false;
        }
    }

    /// The connection is closing: its requests and its pieces go back to the worker.
    pub fn leave_fetch(&mut self, slot: usize, core: &mut Core) {
        let Some(t) = self.torrent.clone() else {
            return;
        };
        let mut asked: Vec<BlockRequest> = self.peer.asked().iter().map(|a| a.req).collect();
        asked.extend(self.peer.take_dropped());
        if let Some(f) = core.fetches.torrents.get_mut(&t.id) {
            f.give_back(&asked);
            if self.owns_parts {
                f.disown(slot);
                self.owns_parts = false;
            }
        }
    }
}

/// A block we asked for arrived from `addr` (a free function over the connection's fields, as
/// the block still borrows its receive buffer).
pub(super) fn take_block(
    torrent: &Option<Arc<Torrent>>,
    addr: std::net::SocketAddr,
    req: BlockRequest,
    data: &[u8],
    core: &mut Core,
) -> Result<(), Reason> {
    let Some(t) = torrent else {
        return Ok(());
    };
    let n = data.len() as u64;
    core.stats.add(&core.stats.bytes_down, n);
    core.stats.add(&core.stats.blocks_down, 1);
    // Relaxed: a statistic.
    t.downloaded.fetch_add(n, Ordering::Relaxed);
    let Some(p) = core
        .fetches
        .torrents
        .get_mut(&t.id)
        .and_then(|f| f.parts.get_mut(&req.index))
    else {
        // The piece was finished (or given up) meanwhile.
        core.stats.add(&core.stats.wasted_blocks, 1);
        return Ok(());
    };
    let shared = p.asked_of_others(req.begin / BLOCK_SIZE);
    p.touched = Some(core.now);
    match p.take(req.begin, data, addr.ip()) {
        Err(_) => return Err(Reason::UnrequestedBlock),
        Ok(Taken::Duplicate) => core.stats.add(&core.stats.wasted_blocks, 1),
        Ok(Taken::Stored) => {}
        Ok(Taken::Complete) => {
            let io = crate::engine::fetch::Io {
                ring: &mut core.ring,
                stats: &core.stats,
                now: core.now,
            };
            core.fetches.piece_complete(io, t, req.index);
        }
    }
    if shared {
        core.fetches.cancels.push((t.id, req));
    }
    Ok(())
}

/// xorshift64: spreads peers over the torrent when picking.
fn next_rand(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}
