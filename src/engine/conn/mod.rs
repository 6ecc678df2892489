//! One peer connection's I/O state around its protocol machine ([`Peer`]): the socket, the
//! receive buffer and its framing (`recv.rs`), the send queue and upload jobs (`send.rs`), and
//! the count of operations in flight that keeps the slot alive.
//!
//! Every method takes the worker's [`Core`] (ring, settings, counters, job memory) beside the
//! connection, so a handler holds the connection and the worker's state at once and never looks
//! its slot up again.

mod crypt;
mod fetch;
mod recv;
mod send;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use socket2::SockAddr;

use super::Reason;
use super::Torrent;
use super::core::Core;
use super::encryption::Dial;
use super::peer::{Peer, Phase};
use super::upload::Job;
use crate::choking::SlotKind;
use crate::speed::peer::PeerSpeed;
use crate::uring::{Op, UserData, ops};

/// What the one send in flight carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sending {
    Nothing,
    Control,
    Job(u32),
}

const RECV_INITIAL: usize = 2048;
const RECV_SHRINK_ABOVE: usize = 64 << 10;

pub(super) struct Conn {
    pub fd: OwnedFd,
    pub addr: SocketAddr,
    /// For outgoing connects: the address the kernel reads until the connect completes.
    connect_addr: Option<Box<SockAddr>>,
    /// The protocol state.
    pub peer: Peer,
    pub torrent: Option<Arc<Torrent>>,
    /// Operations in flight that point into this connection; the slot is freed at zero.
    pub ops: u32,
    pub closing: Option<Reason>,
    recv: Vec<u8>,
    recv_len: usize,
    recv_posted: bool,
    /// Control messages waiting for the socket.
    pub ctrl: Vec<u8>,
    /// Control bytes handed to the kernel and how many went out so far.
    ctrl_inflight: Vec<u8>,
    ctrl_sent: usize,
    pub sending: Sending,
    pub jobs: VecDeque<Job>,
    next_seq: u32,
    /// The batch of its next mapped job, from the pace of its last one
    /// ([`crate::engine::mapped::next_batch`]; 0 before the first: the copy batch).
    mapped_batch: usize,
    /// Waiting in the worker's token queue for rate-limit tokens (served every tick, in turn).
    pub throttled: bool,
    /// Being served from the token queue (it may take tokens ahead of the queue).
    pub token_turn: bool,
    /// The bucket that last refused it tokens.
    pub throttled_by: Option<super::upload::Refused>,
    /// Queued for job memory.
    pub starved: bool,
    /// Being served from the memory queue (it may take memory ahead of the queue).
    pub memory_turn: bool,
    /// The slot it holds while unchoked.
    pub slot: Option<SlotKind>,
    /// A confirmed payer became interested: the worker admits it (see `Worker::admit_payer`).
    pub wants_paid_slot: bool,
    /// The peer unchoked us or announced pieces: ask it for blocks.
    pub wants_blocks: bool,
    /// A free peer became interested and every slot was held.
    pub slot_refused: bool,
    /// Set once the peer's extension handshake names `rs_speed` (and speed is enabled).
    pub speed: Option<Box<PeerSpeed>>,
    /// Where the peer listens, once known (its extension handshake's `p`, or the address we
    /// dialled): listed in its torrent's swarm for peer exchange while connected.
    pub listen_addr: Option<SocketAddr>,
    /// The peer speaks BEP 11 (and its torrent is public).
    pub pex: bool,
    /// The swarm generation this peer last heard (`None`: nothing yet).
    pub pex_heard: Option<u64>,
    /// It may own parts (download side; see `fetch.rs`): set when it starts or adopts one, so
    /// a choke or a snub looks for its parts only then.
    pub owns_parts: bool,
    /// Its requests wait for download-limit tokens (retried every tick).
    pub dl_waiting: bool,
    /// Since when the incomplete message at the front of the receive buffer has been arriving
    /// (`None`: the buffer holds no partial message). See `Settings::message_timeout`.
    pub partial_since: Option<Instant>,
    /// Bytes handed to the kernel in all (sends that completed).
    pub sent_total: u64,
    /// Bytes the peer has taken (`sent_total` less what is still in the socket's queue) when
    /// last seen growing, and when that was.
    delivered: u64,
    delivered_at: Instant,
    /// It has taken none of our bytes for a while (see [`Conn::check_delivery`]): it holds no
    /// upload slot and is left out of choking rounds until it reads again.
    pub reads_nothing: bool,
    /// Counted in the worker's per-address count of connections in their handshake.
    pub counted_handshake: bool,
    /// Counted in its torrent's per-address count of connections.
    pub counted_torrent: bool,
    /// MSE state: detecting, in the handshake, plain or RC4 (see `crypt.rs`).
    crypt: crypt::Crypt,
    /// Bytes at the front of `ctrl` already in wire form (written by the MSE handshake).
    ctrl_ready: usize,
    /// The upload job already encrypted (RC4 connections encrypt each job once).
    ciphered_job: Option<u32>,
    /// How an outgoing connection was dialled.
    pub dial: Dial,
    /// Dialled with MSE and its handshake not finished yet.
    dial_mse_pending: bool,
    /// The MSE dial failed and the policy allows one plain retry: the worker redials.
    pub retry_plain: bool,
}

impl Conn {
    pub fn incoming(fd: OwnedFd, addr: SocketAddr, now: Instant) -> Conn {
        let mut c = Conn::new(fd, addr, false, now);
        c.crypt = crypt::Crypt::Detect;
        c
    }

    /// An outgoing connection to `addr` for `torrent`, dialled plain or with MSE;
    /// [`Conn::post_connect`] starts it.
    pub fn outgoing(
        fd: OwnedFd,
        addr: SocketAddr,
        torrent: Arc<Torrent>,
        dial: Dial,
        now: Instant,
    ) -> Conn {
        let mut c = Conn::new(fd, addr, true, now);
        c.connect_addr = Some(Box::new(SockAddr::from(addr)));
        c.torrent = Some(torrent);
        c.dial = dial;
        c.dial_mse_pending = dial == Dial::Mse;
        c
    }

    fn new(fd: OwnedFd, addr: SocketAddr, outgoing: bool, now: Instant) -> Conn {
        Conn {
            fd,
            addr,
            connect_addr: None,
            peer: Peer::new(outgoing, now),
            torrent: None,
            ops: 0,
            closing: None,
            recv: vec![0; RECV_INITIAL],
            recv_len: 0,
            recv_posted: false,
            ctrl: Vec::new(),
            ctrl_inflight: Vec::new(),
            ctrl_sent: 0,
            sending: Sending::Nothing,
            jobs: VecDeque::new(),
            next_seq: 0,
            mapped_batch: 0,
            throttled: false,
            token_turn: false,
            throttled_by: None,
            starved: false,
            memory_turn: false,
            slot: None,
            wants_paid_slot: false,
            wants_blocks: false,
            slot_refused: false,
            speed: None,
            listen_addr: None,
            pex: false,
            pex_heard: None,
            owns_parts: false,
            dl_waiting: false,
            partial_since: None,
            sent_total: 0,
            delivered: 0,
            delivered_at: now,
            reads_nothing: false,
            counted_handshake: false,
            counted_torrent: false,
            crypt: crypt::Crypt::Plain,
            ctrl_ready: 0,
            ciphered_job: None,
            dial: Dial::Plain,
            dial_mse_pending: false,
            retry_plain: false,
        }
    }

    /// How long the peer has taken none of the bytes we gave it, while some wait: in the
    /// socket's queue (read with `SIOCOUTQ`) or in a send not yet taken by the kernel. The
    /// kernel's send buffer can hold megabytes, so a peer that stops reading is seen by what
    /// stays in the queue, not by our sends alone. Looked at once a second by the worker.
    pub fn check_delivery(&mut self, now: Instant) -> std::time::Duration {
        if self.delivered == self.sent_total && self.sending == Sending::Nothing {
            // All taken, nothing waiting: no system call for the idle many.
            self.delivered_at = now;
            return std::time::Duration::ZERO;
        }
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes one int through the pointer, which points to `queued`.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        let queued = if r == 0 { queued.max(0) as u64 } else { 0 };
        let delivered = self.sent_total.saturating_sub(queued);
        if delivered > self.delivered || (queued == 0 && self.sending == Sending::Nothing) {
            self.delivered = delivered;
            self.delivered_at = now;
        }
        now.saturating_duration_since(self.delivered_at)
    }

    /// The peer has taken every byte we sent and nothing waits to be sent (as of the last
    /// [`Conn::check_delivery`]). A peer still draining what it asked for uses its slot though
    /// it asks for nothing new: one that requested a megabyte and reads it slowly, say.
    pub fn all_taken(&self) -> bool {
        self.delivered == self.sent_total
            && self.sending == Sending::Nothing
            && self.jobs.is_empty()
    }

    /// It holds an upload slot it does not use: it has taken everything we sent
    /// ([`Conn::all_taken`]) and asked for nothing for `after`
    /// ([`super::peer::Peer::asks_nothing`]). Any peer that waits for a slot goes ahead of it.
    pub fn holds_unused_slot(&self, now: Instant, after: std::time::Duration) -> bool {
        self.slot.is_some() && self.all_taken() && self.peer.asks_nothing(now, after)
    }

    /// The connection encrypts with RC4: its uploads must take the copy path.
    pub fn rc4(&self) -> bool {
        self.crypt.is_rc4()
    }

    pub fn is_active(&self) -> bool {
        self.closing.is_none() && self.peer.phase() == Phase::Active
    }

    /// A payer whose bid the ledger confirmed (and whose channel is open).
    pub fn paying(&self) -> bool {
        self.speed.as_ref().is_some_and(|s| s.paying())
    }

    /// What the choker knows of this peer, under the worker's `key`, at `now`; a slot held
    /// unused for `stall` makes it idle.
    pub fn candidate(
        &self,
        key: usize,
        now: Instant,
        stall: std::time::Duration,
    ) -> crate::choking::Candidate {
        crate::choking::Candidate {
            key,
            unchoked: !self.peer.am_choking(),
            since: self.peer.choke_changed(),
            uploaded_since_unchoke: self.peer.uploaded_since_unchoke,
            // While we download, peers are rewarded for what they give us (tit for tat).
            recent_upload: if self.torrent.as_ref().is_some_and(|t| t.fetching()) {
                self.peer.downloaded_this_round()
            } else {
                self.peer.uploaded_this_round
            },
            idle: self.holds_unused_slot(now, stall),
        }
    }

    /// Posts the connect of an outgoing connection.
    pub fn post_connect(&mut self, slot: usize, core: &mut Core) {
        let Some(sa) = &self.connect_addr else { return };
        self.ops += 1;
        let e = ops::connect(self.fd.as_raw_fd(), sa, UserData::new(Op::Connect, 0, slot));
        // SAFETY: the address lives in the connection's Box until the connect completes
        // (`connect_addr` is dropped only in `on_connect`), and the slot outlives the op.
        unsafe { core.push(e) };
    }

    /// The outgoing connect completed.
    pub fn on_connect(&mut self, slot: usize, res: i32, core: &mut Core) {
        if res < 0 {
            self.close(slot, Reason::ConnectFailed, core);
            return;
        }
        core.stats.add(&core.stats.connected_out, 1);
        self.connect_addr = None;
        if let Some((id, v2)) = self.torrent.as_ref().map(|t| (t.id, t.v2_id.is_some())) {
            self.start_dial(id, v2, core);
        }
        self.pump_send(slot, core);
        self.post_recv(slot, core);
    }

    /// Starts closing: counts the reason, gives up its slot, and shuts the socket down so the
    /// operations in flight complete; the worker frees the slot when the last one has.
    pub fn close(&mut self, slot: usize, reason: Reason, core: &mut Core) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(reason);
        core.stats.add(&core.stats.disconnects[reason as usize], 1);
        // A peer that drops or garbles our MSE handshake may not speak MSE: one plain retry.
        self.retry_plain = self.dial_mse_pending
            && core.settings.encryption.retry_plain()
            && matches!(
                reason,
                Reason::PeerClosed
                    | Reason::IoError
                    | Reason::HandshakeTimeout
                    | Reason::BadMseHandshake
                    | Reason::MseNoSync
            );
        self.leave_fetch(slot, core);
        if let Some(kind) = self.slot.take() {
            core.held.release(kind);
            core.slot_opened = true;
        }
        let _ = nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if self.peer.phase() == Phase::Connecting {
            // Cancel the connect; the shutdown alone does not end it everywhere.
            let e = ops::async_cancel(
                UserData::new(Op::Connect, 0, slot),
                UserData::new(Op::Cancel, 0, slot),
            );
            // SAFETY: a cancel carries no buffers.
            unsafe { core.push(e) };
        }
    }

    /// Everything a freed connection gives back: its torrent's peer count, its swarm entry,
    /// its pieces' availability, its job buffers, the credit window of a bid.
    pub fn release(mut self, core: &mut Core) {
        if self.counted_handshake {
            core.handshaking.remove(self.addr.ip());
        }
        if let Some(t) = &self.torrent {
            if self.counted_torrent {
                t.ips.remove(self.addr.ip());
            }
            t.peers.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            if self.peer.outgoing() {
                super::lock(&t.fetch.dialled).remove(&self.addr);
            }
            if let Some(a) = self.listen_addr {
                super::lock(&t.swarm).leave(a);
            }
            self.peer.forget_pieces(&t.pieces);
        }
        for job in self.jobs.drain(..) {
            job.release(&mut core.memory);
        }
        // A connection that bid held a credit window on its channel; the verifier frees it.
        if let (Some(svc), Some(s)) = (&core.speed, &self.speed)
            && !s.channels_bid.is_empty()
        {
            svc.gone(s.to);
        }
    }

    /// Chokes or unchokes the peer, keeping the worker's count of held slots.
    pub fn set_choke(&mut self, choke: Option<SlotKind>, core: &mut Core) {
        let now = core.now;
        match choke {
            None => {
                if self.peer.choke(now, &mut self.ctrl)
                    && let Some(k) = self.slot.take()
                {
                    core.held.release(k);
                }
            }
            Some(kind) => {
                self.peer.unchoke(now, &mut self.ctrl);
                if self.slot != Some(kind) {
                    if let Some(old) = self.slot.take() {
                        core.held.release(old);
                    }
                    core.held.take(kind);
                    self.slot = Some(kind);
                }
            }
        }
    }
}
