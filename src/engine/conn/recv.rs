//! The receive side of a connection: one recv in flight into a growing buffer, the framing of
//! handshakes and messages, and carrying out what the protocol machine answers.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use super::{Conn, RECV_INITIAL, RECV_SHRINK_ABOVE};
use crate::choking::{self, SlotKind};
use crate::engine::Reason;
use crate::engine::core::Core;
use crate::engine::peer::{Action, Phase, TorrentView};
use crate::speed::peer::PeerSpeed;
use crate::uring::{Op, UserData, ops};
use crate::wire::{self, Handshake, Message, WireError};

/// Receive buffer of a connection we download from.
const DOWNLOAD_RECV: usize = 256 << 10;

impl Conn {
    pub fn post_recv(&mut self, slot: usize, core: &mut Core) {
        if self.recv_posted || self.closing.is_some() {
            return;
        }
        if self.recv.len() < DOWNLOAD_RECV && !self.peer.asked().is_empty() {
            // Blocks are on their way: room for many per receive, not one message at a time.
            self.recv.resize(DOWNLOAD_RECV, 0);
        }
        if self.recv_len == self.recv.len() {
            // Full with an incomplete message: grow (its length was checked against the bound
            // before we get here).
            let new_len = (self.recv.len() * 2).max(RECV_INITIAL);
            self.recv.resize(new_len, 0);
        }
        let fd = self.fd.as_raw_fd();
        let e = ops::recv(
            fd,
            &mut self.recv[self.recv_len..],
            UserData::new(Op::Recv, 0, slot),
        );
        self.recv_posted = true;
        self.ops += 1;
        // SAFETY: the receive buffer is not resized or freed while recv_posted is set (we only
        // touch it after this completion), and the slot outlives the op (ops > 0).
        unsafe { core.push(e) };
    }

    pub fn on_recv(&mut self, slot: usize, res: i32, core: &mut Core) {
        self.recv_posted = false;
        if res <= 0 {
            let reason = if res == 0 || res == -libc::ECONNRESET {
                Reason::PeerClosed
            } else {
                Reason::IoError
            };
            self.close(slot, reason, core);
            return;
        }
        let from = self.recv_len;
        self.recv_len += res as usize;
        self.peer.received(core.now);
        let input = match self.crypt_input(from, core) {
            Ok(true) => self.process_input(slot, core),
            Ok(false) => Ok(()),
            Err(reason) => Err(reason),
        };
        if let Err(reason) = input {
            self.close(slot, reason, core);
            return;
        }
        self.give_back_requests(slot, core);
        if std::mem::take(&mut self.wants_blocks) || !self.peer.asked().is_empty() {
            self.fill_requests(slot, core);
        }
        self.pump_uploads(slot, core);
        self.pump_send(slot, core);
        self.post_recv(slot, core);
    }

    /// Handles everything complete in the receive buffer, then keeps the incomplete rest.
    fn process_input(&mut self, slot: usize, core: &mut Core) -> Result<(), Reason> {
        let mut pos = 0;
        let result = loop {
            if self.closing.is_some() {
                break Ok(());
            }
            let step = match self.peer.phase() {
                Phase::Connecting => break Ok(()),
                Phase::Handshake => self.handshake_input(pos, core),
                Phase::Active => self.message_input(pos, slot, core),
            };
            match step {
                Ok(Some(used)) => pos += used,
                Ok(None) => break Ok(()),
                Err(r) => break Err(r),
            }
        };
        // Keep the incomplete rest at the front.
        self.recv.copy_within(pos..self.recv_len, 0);
        self.recv_len -= pos;
        // The deadline runs per message: from when the first byte of the incomplete one came.
        if self.recv_len == 0 {
            self.partial_since = None;
        } else if pos > 0 || self.partial_since.is_none() {
            self.partial_since = Some(core.now);
        }
        if self.recv_len == 0 && self.recv.len() > RECV_SHRINK_ABOVE && self.peer.asked().is_empty()
        {
            self.recv = vec![0; RECV_INITIAL];
        }
        if result.is_ok() {
            self.fit_next_message(core);
        }
        result
    }

    /// Grows the buffer toward the size of the partial message at its front, at most to twice
    /// the bytes that have arrived (memory follows what the peer sent, not what its length
    /// prefix claims), and only up to the largest message the peer may send (a longer one is
    /// refused when parsed). A large message takes a few receives to fit.
    fn fit_next_message(&mut self, core: &Core) {
        if self.recv_len < 4 || self.peer.phase() != Phase::Active {
            return;
        }
        let Some(t) = self.torrent.as_deref() else {
            return;
        };
        let max = self
            .peer
            .max_message_len(t.pieces.num_pieces(), &core.rules) as usize;
        let b = &self.recv;
        let need = 4 + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let target = need.min((2 * self.recv_len).max(RECV_INITIAL));
        if target > self.recv.len() && need <= max + 4 {
            self.recv.resize(target, 0);
        }
    }

    /// The peer's handshake, from `pos`: `Some(bytes used)` once whole, `None` while partial.
    fn handshake_input(&mut self, pos: usize, core: &mut Core) -> Result<Option<usize>, Reason> {
        let buf = &self.recv[pos..self.recv_len];
        let prefix = Handshake::parse_prefix(buf).map_err(|_| Reason::BadHandshake)?;
        let Some((reserved, info_hash)) = prefix else {
            return Ok(None);
        };
        if self.torrent.is_none() {
            let t = core
                .torrents
                .get(&info_hash)
                .or_else(|| {
                    core.v2_ids
                        .get(&info_hash)
                        .and_then(|id| core.torrents.get(id))
                })
                .cloned()
                .ok_or(Reason::UnknownTorrent)?;
            if t.peers.load(Ordering::Relaxed) as usize >= core.settings.max_peers_per_torrent {
                return Err(Reason::TooManyPeers);
            }
            if crate::engine::lock(&t.fetch.blame).is_banned(self.addr.ip()) {
                t.fetch.banned_refusals.fetch_add(1, Ordering::Relaxed);
                return Err(Reason::Banned);
            }
            let ip = self.addr.ip();
            if !t.ips.try_add(ip, core.settings.max_connections_per_ip) {
                return Err(Reason::TooManyFromIp);
            }
            self.counted_torrent = true;
            // Tied to a torrent now: it no longer counts among the handshakes of its address.
            if std::mem::take(&mut self.counted_handshake) {
                core.handshaking.remove(ip);
            }
            t.peers.fetch_add(1, Ordering::Relaxed);
            let v2_id = t.v2_id;
            self.torrent = Some(t);
            // Answer at once: some peers wait for our handshake before sending their peer id.
            let reply = crate::engine::peer::reply_hash(&reserved, info_hash, v2_id);
            self.ctrl.extend_from_slice(
                &Handshake::new(reply, core.rules.peer_id)
                    .with_v2(v2_id.is_some())
                    .encode(),
            );
        }
        let buf = &self.recv[pos..self.recv_len];
        let Some(hs) = Handshake::parse(buf).map_err(|_| Reason::BadHandshake)? else {
            return Ok(None);
        };
        let t = self.torrent.as_deref().ok_or(Reason::UnknownTorrent)?;
        let ip = self.addr.ip();
        self.peer
            .on_handshake(&hs, TorrentView::of(t), &core.rules, ip, &mut self.ctrl)?;
        core.stats.add(&core.stats.handshakes, 1);
        Ok(Some(Handshake::LEN))
    }

    /// One message from `pos`: `Some(bytes used)`, or `None` while incomplete.
    fn message_input(
        &mut self,
        pos: usize,
        slot: usize,
        core: &mut Core,
    ) -> Result<Option<usize>, Reason> {
        let t = self.torrent.as_deref().ok_or(Reason::UnknownTorrent)?;
        let view = TorrentView::of(t);
        let max = self
            .peer
            .max_message_len(view.pieces.num_pieces(), &core.rules);
        let (msg, used) = match wire::parse_message(&self.recv[pos..self.recv_len], max) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(WireError::TooLong { .. }) => return Err(Reason::MessageTooLong),
            Err(_) => return Err(Reason::BadMessage),
        };
        if matches!(msg, Message::Request(_)) {
            core.stats.add(&core.stats.requests, 1);
        }
        let action = self
            .peer
            .on_message(msg, view, &core.rules, core.now, &mut self.ctrl)?;
        match action {
            Action::Nothing => {}
            Action::Queued => {}
            Action::Refused { told: true } => core.stats.add(&core.stats.rejected, 1),
            Action::Refused { told: false } => core.stats.add(&core.stats.dropped_requests, 1),
            Action::Shed => core.stats.add_shed(1),
            // The payload borrows the receive buffer: only disjoint fields are touched here.
            Action::Speed(payload) => {
                speed_message(&mut self.speed, &mut self.ctrl, payload, core, view.id)
            }
            Action::WantsSlot => {
                if self.paying() {
                    // A payer may displace a free peer: the worker, which sees them all, decides.
                    self.wants_paid_slot = true;
                } else if choking::admit_free(&core.slots, core.held) {
                    self.set_choke(Some(SlotKind::Free), core);
                } else {
                    // No slot: the worker checks whether payers hold them all.
                    self.slot_refused = true;
                }
            }
            Action::LeavesSlot => {
                core.slot_opened |= self.slot.is_some();
                self.set_choke(None, core);
            }
            Action::ExtHandshake => {
                self.pex_join(core);
                self.speed_start(slot, core);
            }
            // The block borrows the receive buffer: only disjoint fields are touched here.
            Action::Block { req, data, late: _ } => {
                super::fetch::take_block(&self.torrent, self.addr, req, data, core)?
            }
            Action::MayRequest => self.wants_blocks = true,
            Action::Pex(payload) => pex_learn(&self.torrent, payload, core),
            Action::HashesRejected(why) => {
                let stats = &core.stats;
                stats.add(&stats.hash_requests_rejected[why as usize], 1);
            }
            Action::MetadataSent(n) | Action::HashesSent(n) => {
                if matches!(action, Action::HashesSent(_)) {
                    core.stats.add(&core.stats.hash_requests_answered, 1);
                }
                core.global_limit.charge(n, core.now);
                if let Some(t) = &self.torrent {
                    t.upload_limit.charge(n, core.now);
                }
            }
        }
        if self.ctrl.len() > core.rules.max_send_backlog {
            return Err(Reason::SendBacklog);
        }
        Ok(Some(used))
    }

    /// The peer's extension handshake arrived: a peer of a public torrent whose listening
    /// address we know joins the torrent's swarm for peer exchange, and starts hearing it.
    fn pex_join(&mut self, core: &Core) {
        use crate::wire::pex;
        let Some(t) = &self.torrent else { return };
        if t.meta.info.private || !core.rules.pex {
            return;
        }
        let Some(ext) = self.peer.ext() else { return };
        self.pex = ext.id_of(pex::EXTENSION_NAME).is_some();
        // An IPv4 peer on a dual-stack listener shows as ::ffff:a.b.c.d; peers know it by its
        // IPv4 address.
        let ip = self.addr.ip().to_canonical();
        // A peer we dialled is listed where we reached it (its `p` may be wrong behind NAT).
        let listen = if self.peer.outgoing() {
            Some(SocketAddr::new(ip, self.addr.port()))
        } else {
            ext.p.map(|p| SocketAddr::new(ip, p))
        };
        let flags = if ext.upload_only { pex::FLAG_SEED } else { 0 };
        let Some(listen) = listen else { return };
        let mut swarm = crate::engine::lock(&t.swarm);
        match self.listen_addr {
            // A repeated handshake at the same address changes only the flags (no churn in
            // the log that could push other peers behind it).
            Some(old) if old == listen => swarm.set_flags(listen, flags),
            // One that moves the peer: its count at the old address goes.
            Some(old) => {
                swarm.leave(old);
                swarm.join(listen, flags);
                self.listen_addr = Some(listen);
            }
            None => {
                swarm.join(listen, flags);
                self.listen_addr = Some(listen);
            }
        }
    }

    /// The peer's extension handshake arrived: if it speaks `rs_speed`, send our offer.
    fn speed_start(&mut self, slot: usize, core: &mut Core) {
        let Some(svc) = &core.speed else { return };
        let name = crate::speed::protocol::EXTENSION_NAME;
        let Some(their_id) = self.peer.ext().and_then(|e| e.id_of(name)) else {
            return;
        };
        if self.speed.is_some() {
            return;
        }
        let to = crate::speed::service::PeerRef {
            worker: core.id,
            slot,
            conn_id: core.next_conn_id,
        };
        core.next_conn_id += 1;
        self.speed = Some(Box::new(PeerSpeed::new(to, self.addr.ip(), their_id)));
        let offer = crate::speed::protocol::SpeedMessage::Offer(svc.offer).encode();
        Message::Extended {
            id: their_id,
            payload: &offer,
        }
        .encode(&mut self.ctrl);
    }
}

/// An `rs_speed` message for the connection's speed state; a refusal goes back at once.
fn speed_message(
    speed: &mut Option<Box<PeerSpeed>>,
    ctrl: &mut Vec<u8>,
    payload: &[u8],
    core: &Core,
    torrent: [u8; 20],
) {
    let (Some(svc), Some(s)) = (&core.speed, speed.as_mut()) else {
        return;
    };
    if let Some(reply) = s.on_message(payload, svc, torrent) {
        Message::Extended {
            id: s.their_id,
            payload: &reply.encode(),
        }
        .encode(ctrl);
    }
}

/// Peers a BEP 11 message names, kept for the control thread to dial while the torrent
/// downloads (bounded: a peer cannot grow the list past [`MAX_LEARNED`]).
fn pex_learn(
    torrent: &Option<std::sync::Arc<crate::engine::Torrent>>,
    payload: &[u8],
    _core: &Core,
) {
    let Some(t) = torrent else { return };
    let Ok(msg) = crate::wire::pex::PexMessage::parse(payload) else {
        return;
    };
    let mut learned = crate::engine::lock(&t.fetch.learned);
    for (addr, _) in msg.added {
        if learned.len() >= MAX_LEARNED {
            break;
        }
        if !learned.contains(&addr) {
            learned.push(addr);
        }
    }
}

/// Addresses learned by peer exchange waiting for the control thread.
const MAX_LEARNED: usize = 1000;
