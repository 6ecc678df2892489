//! The protocol state of one peer connection, with no I/O: the worker feeds it what arrived
//! (a handshake, a parsed message, the passing of time) and does what it answers.
//!
//! Control messages it decides to send are encoded straight into the caller's send buffer
//! (`out`); everything else it wants done comes back as an [`Action`], and a protocol violation
//! as the [`Reason`] to close with. It reads no clock (time is passed in), touches no socket and
//! no ring, and keeps no pointer into the worker, so the tests beside it drive it message by
//! message.
//!
//! Both directions live here. The upload side: interest, choking (the worker decides who is
//! unchoked, see [`crate::choking`]; [`Peer::choke`] and [`Peer::unchoke`] carry it out), the
//! peer's request queue with BEP 6 rejects and allowed-fast pieces, BEP 9 metadata answers. The
//! download side (`fetch.rs`): what the peer has and whether that interests us, the requests we
//! have in flight to it, which blocks it may send (anything else closes the connection), the
//! requests a choke, a reject or a stall gave back ([`Peer::take_dropped`]), and its rate.
//!
//! ```text
//!  Connecting ──connected()──► Handshake ──on_handshake()──► Active ──(close: Reason)
//!  (outgoing)                  (incoming)                    on_message / on_tick
//! ```

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::Reason;
use crate::merkle::Trees;
use crate::metainfo::FileLayout;
use crate::pieces::PieceTable;
use crate::wire::extension::ExtHandshake;
use crate::wire::{BlockRequest, Handshake, Message};

mod fetch;
mod hashes;
#[cfg(test)]
mod tests;

pub use fetch::Asked;
pub use hashes::reply_hash;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Outgoing, the TCP connect not yet done.
    Connecting,
    /// Waiting for the peer's handshake.
    Handshake,
    /// Handshakes exchanged: messages flow.
    Active,
}

/// What a worker's peers share: its settings as the protocol needs them.
#[derive(Debug, Clone)]
pub struct Rules {
    pub peer_id: [u8; 20],
    /// The port we listen on, told to peers as `p` (0: not told).
    pub port: u16,
    pub client_name: String,
    pub max_request_len: u32,
    /// Requests queued per peer at most (more are refused).
    pub max_reqq: usize,
    /// The `reqq` we advertise now: `max_reqq` shared among the worker's unchoked peers (see
    /// [`crate::engine::reqq`]).
    pub advertised_reqq: usize,
    /// Control bytes queued for one peer before it is cut off (`send_backlog`).
    pub max_send_backlog: usize,
    /// Allowed-fast pieces given to BEP 6 peers.
    pub allowed_fast: usize,
    /// Offer BEP 11 peer exchange (public torrents only).
    pub pex: bool,
    /// Offer `rs_speed`.
    pub speed: bool,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub keepalive_interval: Duration,
    /// Our requests wait this long for a block before the peer counts as snubbing us.
    pub request_timeout: Duration,
}

impl Rules {
    pub fn new(s: &super::Settings, port: u16, speed: bool) -> Rules {
        Rules {
            peer_id: s.peer_id,
            port,
            client_name: s.client_name.clone(),
            max_request_len: s.max_request_len,
            max_reqq: s.max_reqq,
            advertised_reqq: s.max_reqq,
            max_send_backlog: s.max_send_backlog,
            allowed_fast: s.allowed_fast,
            pex: !s.pex_interval.is_zero(),
            speed,
            handshake_timeout: s.handshake_timeout,
            idle_timeout: s.idle_timeout,
            keepalive_interval: s.keepalive_interval,
            request_timeout: s.request_timeout,
        }
    }
}

/// What the machine reads of a torrent: borrowed for one call, so no reference count is touched
/// per message.
#[derive(Clone, Copy)]
pub struct TorrentView<'a> {
    pub id: [u8; 20],
    /// Its truncated v2 info-hash, for a v2 or hybrid torrent (a v2 peer's name for it).
    pub v2_id: Option<[u8; 20]>,
    /// Its files' merkle trees, for v2 peers' hash requests (`None`: a v1 torrent).
    pub trees: Option<&'a Trees>,
    pub pieces: &'a PieceTable,
    pub layout: &'a FileLayout,
    /// The info dictionary's exact bytes (BEP 9 serves them).
    pub info: &'a [u8],
    pub private: bool,
    /// We are downloading it: pieces we lack make a peer interesting.
    pub fetching: bool,
}

impl<'a> TorrentView<'a> {
    pub fn of(t: &'a super::Torrent) -> TorrentView<'a> {
        TorrentView {
            id: t.id,
            v2_id: t.v2_id,
            trees: t.v2_id.is_some().then_some(&t.hash_trees),
            pieces: &t.pieces,
            layout: &t.meta.info.layout,
            info: &t.meta.info.raw,
            private: t.meta.info.private,
            fetching: t.fetching(),
        }
    }

    fn num_pieces(&self) -> u32 {
        self.pieces.num_pieces()
    }

    fn is_seed(&self) -> bool {
        self.pieces.verified.is_full()
    }
}

/// A request the peer queued with us, and when it arrived (for latency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub req: BlockRequest,
    pub at: Instant,
}

/// What the worker must do after a message (beyond sending what went into `out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'m> {
    Nothing,
    /// The peer became interested while choked: it may take a slot now.
    WantsSlot,
    /// The peer lost interest while unchoked: choke it, its slot is free.
    LeavesSlot,
    /// A request was queued for upload.
    Queued,
    /// A request was refused: `told` when a reject went back (BEP 6), else dropped.
    Refused {
        told: bool,
    },
    /// A request past the `reqq` we told the peer while the worker falls behind was rejected
    /// (see [`Peer::shed`]).
    Shed,
    /// The extension handshake arrived (now in [`Peer::ext`]): peer exchange and `rs_speed`
    /// start from it.
    ExtHandshake,
    /// An `rs_speed` message, for the connection's speed state.
    Speed(&'m [u8]),
    /// A block we asked for (`late`: one we had cancelled or lost to a choke, still welcome).
    Block {
        req: BlockRequest,
        data: &'m [u8],
        late: bool,
    },
    /// The peer unchoked us, or allowed us a piece, or announced a piece: requests may go out.
    MayRequest,
    /// A BEP 11 peer exchange message.
    Pex(&'m [u8]),
    /// A BEP 9 answer of this many bytes went into `out`: it counts against the upload limits.
    MetadataSent(u64),
    /// A BEP 52 `hashes` answer of this many bytes went into `out`: it counts likewise.
    HashesSent(u64),
    /// A BEP 52 `hash reject` went into `out`, for this reason (counted).
    HashesRejected(crate::engine::stats::HashReject),
}

/// What a tick found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Nothing,
    /// A keep-alive went into `out`.
    KeepAlive,
    /// Our requests waited too long: the peer is snubbing us; they were cancelled (see
    /// [`Peer::take_dropped`]).
    Snubbed,
}

/// The peer's pieces as it announced them.
#[derive(Debug, Clone, Default)]
struct PeerPieces {
    /// Wire form; `None` until the peer says anything about its pieces.
    bits: Option<Vec<u8>>,
    count: u32,
    /// It said `have_all`: it counts in the table's seeds, not in each piece's availability.
    all: bool,
}

/// Messages that change nothing (see [`Peer::on_message`]) a peer may send in a burst, and
/// per second after it. Honest clients send a few: a keep-alive a minute, a cancel that
/// crossed our block, aria2's fresh bitfields (one instead of 20 or more haves). A flood of
/// them costs us parsing and, for some, work per message, so past the budget the peer is cut
/// off (`message_flood`).
const NOISE_BURST: u32 = 500;
/// Requests a choked peer may have queued for its allowed-fast pieces (BEP 6): enough to keep
/// one batch going, not enough to pin upload memory while it holds no slot.
const MAX_FAST_QUEUED: usize = 32;
const NOISE_PER_SEC: u32 = 50;

/// Allowed-fast pieces a peer may give us (BEP 6 suggests 10); more are ignored, so a peer
/// cannot grow our memory with them.
const MAX_ALLOWED_FAST_IN: usize = 64;

/// The protocol state of one connection.
#[derive(Debug, Clone)]
pub struct Peer {
    phase: Phase,
    outgoing: bool,
    /// BEP 6 and BEP 10, from both handshakes' reserved bits.
    fast: bool,
    extensions: bool,
    // Our side toward the peer.
    am_choking: bool,
    choke_changed: Instant,
    am_interested: bool,
    // The peer's side toward us.
    peer_choking: bool,
    peer_interested: bool,
    have: PeerPieces,
    /// It sent a bitfield, `have_all` or `have_none` (another one changes nothing new).
    announced: bool,
    /// Its requests waiting for upload, oldest first.
    requests: VecDeque<Queued>,
    /// When it last asked for a block we could serve, or was unchoked (see
    /// [`Peer::asks_nothing`]).
    last_asked: Instant,
    /// The allowed-fast set we gave it (served while choked).
    allowed_fast: Vec<u32>,
    /// Pieces it allows us to request while it chokes us.
    allowed_fast_in: Vec<u32>,
    rejected_total: u64,
    /// Requests refused because the queue was full, since it was last below half.
    overflow: u64,
    ext: Option<ExtHandshake>,
    /// It sent an extension handshake (another one may update it, BEP 10, but a stream of them
    /// is noise).
    ext_seen: bool,
    /// BEP 9 pieces answered (bounded), and requests answered with a reject.
    metadata_answers: u32,
    metadata_rejects: u32,
    /// BEP 52 hash requests it may still have answered, and when that budget was refilled.
    hash_tokens: u32,
    hash_at: Instant,
    /// What is left of the budget for messages that change nothing, and when it was refilled.
    noise_tokens: u32,
    noise_at: Instant,
    connected_at: Instant,
    last_recv: Instant,
    last_send: Instant,
    /// Piece payload sent to it: in all, since its last unchoke, and this choking round.
    pub uploaded: u64,
    pub uploaded_since_unchoke: u64,
    pub uploaded_this_round: u64,
    /// The download side (`fetch.rs`).
    fetch: fetch::FetchState,
}

impl Peer {
    pub fn new(outgoing: bool, now: Instant) -> Peer {
        Peer {
            phase: if outgoing {
                Phase::Connecting
            } else {
                Phase::Handshake
            },
            outgoing,
            fast: false,
            extensions: false,
            am_choking: true,
            choke_changed: now,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            have: PeerPieces::default(),
            announced: false,
            requests: VecDeque::new(),
            last_asked: now,
            allowed_fast: Vec::new(),
            allowed_fast_in: Vec::new(),
            rejected_total: 0,
            overflow: 0,
            ext: None,
            ext_seen: false,
            metadata_answers: 0,
            metadata_rejects: 0,
            hash_tokens: hashes::BURST,
            hash_at: now,
            noise_tokens: NOISE_BURST,
            noise_at: now,
            connected_at: now,
            last_recv: now,
            last_send: now,
            uploaded: 0,
            uploaded_since_unchoke: 0,
            uploaded_this_round: 0,
            fetch: fetch::FetchState::new(now),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn outgoing(&self) -> bool {
        self.outgoing
    }
    pub fn fast(&self) -> bool {
        self.fast
    }
    pub fn am_choking(&self) -> bool {
        self.am_choking
    }
    pub fn choke_changed(&self) -> Instant {
        self.choke_changed
    }
    pub fn am_interested(&self) -> bool {
        self.am_interested
    }
    pub fn peer_choking(&self) -> bool {
        self.peer_choking
    }
    pub fn peer_interested(&self) -> bool {
        self.peer_interested
    }
    /// Pieces the peer has announced.
    pub fn peer_has_count(&self) -> u32 {
        self.have.count
    }
    /// Whether the peer announced piece `i`.
    pub fn peer_has(&self, i: u32) -> bool {
        self.have
            .bits
            .as_ref()
            .and_then(|b| b.get((i / 8) as usize))
            .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
    }
    pub fn allowed_fast_in(&self) -> &[u32] {
        &self.allowed_fast_in
    }
    pub fn requests(&self) -> &VecDeque<Queued> {
        &self.requests
    }
    pub fn ext(&self) -> Option<&ExtHandshake> {
        self.ext.as_ref()
    }
    pub fn connected_at(&self) -> Instant {
        self.connected_at
    }

    /// Heap bytes this peer's protocol state holds (capacities, not lengths): its queued
    /// requests, its pieces, both allowed-fast sets, its extension handshake and our requests
    /// to it (in flight, recently cancelled, given back). Each is bounded by the rules and the
    /// torrent, never by how many messages the peer sends; the `peer_session` fuzz target
    /// checks that after every step.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let ext = self.ext.as_ref().map_or(0, |e| {
            e.m.capacity() * size_of::<(String, u8)>()
                + e.m.iter().map(|(name, _)| name.capacity()).sum::<usize>()
                + e.v.as_ref().map_or(0, String::capacity)
        });
        self.requests.capacity() * size_of::<Queued>()
            + (self.allowed_fast.capacity() + self.allowed_fast_in.capacity()) * size_of::<u32>()
            + self.have.bits.as_ref().map_or(0, Vec::capacity)
            + ext
            + self.fetch.heap_bytes()
    }

    /// The outgoing connect completed: our handshake goes first, announcing BEP 52 for a v2
    /// or hybrid torrent (`v2`), so that a v2 peer answers a hybrid torrent's v1 name with its
    /// v2 one and serves us hashes.
    pub fn connected(&mut self, info_hash: [u8; 20], v2: bool, rules: &Rules, out: &mut Vec<u8>) {
        if self.phase == Phase::Connecting {
            self.phase = Phase::Handshake;
            out.extend_from_slice(
                &Handshake::new(info_hash, rules.peer_id)
                    .with_v2(v2)
                    .encode(),
            );
        }
    }

    /// Bytes arrived (of any kind): the peer is alive.
    pub fn received(&mut self, now: Instant) {
        self.last_recv = now;
    }

    /// Bytes went out.
    pub fn sent(&mut self, now: Instant) {
        self.last_send = now;
    }

    /// The largest message the peer may send us: a request, our bitfield's size, or an
    /// extension message, whichever is largest.
    pub fn max_message_len(&self, num_pieces: u32, rules: &Rules) -> u32 {
        (num_pieces.div_ceil(8) + 1)
            .max(rules.max_request_len + 9)
            .max(crate::wire::extension::MAX_HANDSHAKE_BYTES as u32 + 2)
    }

    /// The peer's whole handshake arrived, for torrent `t` (the worker found it by the
    /// info-hash and has answered with our handshake when the peer dialled us). Sends our
    /// extension handshake, our pieces and the allowed-fast set.
    pub fn on_handshake(
        &mut self,
        hs: &Handshake,
        t: TorrentView<'_>,
        rules: &Rules,
        addr: IpAddr,
        out: &mut Vec<u8>,
    ) -> Result<(), Reason> {
        if self.phase != Phase::Handshake {
            return Err(Reason::BadHandshake);
        }
        if hs.info_hash != t.id && Some(hs.info_hash) != t.v2_id {
            return Err(Reason::UnknownTorrent);
        }
        if hs.peer_id == rules.peer_id {
            return Err(Reason::SelfConnection);
        }
        self.phase = Phase::Active;
        self.fast = hs.supports_fast();
        self.extensions = hs.supports_extensions();
        if self.extensions {
            Message::Extended {
                id: 0,
                payload: &self.our_extensions(t, rules, addr).encode(),
            }
            .encode(out);
        }
        let verified = &t.pieces.verified;
        if self.fast && verified.is_full() {
            Message::HaveAll.encode(out);
        } else if self.fast && verified.count() == 0 {
            Message::HaveNone.encode(out);
        } else {
            Message::Bitfield(&verified.to_wire()).encode(out);
        }
        if self.fast && rules.allowed_fast > 0 {
            // BEP 6 computes the set from the IPv4 address; a v4 peer on a dual-stack listener
            // shows as ::ffff:a.b.c.d.
            let ip = addr.to_canonical();
            let set =
                crate::wire::fast::allowed_fast_set(ip, &t.id, t.num_pieces(), rules.allowed_fast);
            for &i in &set {
                if verified.get(i) {
                    Message::AllowedFast(i).encode(out);
                }
            }
            self.allowed_fast = set;
        }
        Ok(())
    }

    /// Our BEP 10 handshake once more, with the `reqq` advertised now (BEP 10 allows a
    /// handshake to be sent again; libtorrent takes `reqq` from each). False, and nothing
    /// written, for a peer without BEP 10 or still in the handshakes.
    pub fn readvertise(
        &self,
        t: TorrentView<'_>,
        rules: &Rules,
        addr: IpAddr,
        out: &mut Vec<u8>,
    ) -> bool {
        if self.phase != Phase::Active || !self.extensions {
            return false;
        }
        Message::Extended {
            id: 0,
            payload: &self.our_extensions(t, rules, addr).encode(),
        }
        .encode(out);
        true
    }

    /// Our BEP 10 handshake: BEP 9 and BEP 11 for public torrents only (a private torrent's
    /// metadata travels only in its .torrent, and it has no peer exchange), `rs_speed` when on.
    fn our_extensions(&self, t: TorrentView<'_>, rules: &Rules, addr: IpAddr) -> ExtHandshake {
        let mut m = Vec::new();
        let public = !t.private;
        if public {
            let name = crate::wire::metadata::EXTENSION_NAME;
            m.push((name.to_string(), crate::wire::metadata::LOCAL_ID));
            if rules.pex {
                m.push((
                    crate::wire::pex::EXTENSION_NAME.to_string(),
                    crate::wire::pex::LOCAL_ID,
                ));
            }
        }
        if rules.speed {
            m.push((
                crate::speed::protocol::EXTENSION_NAME.to_string(),
                crate::speed::peer::LOCAL_ID,
            ));
        }
        ExtHandshake {
            m,
            v: Some(rules.client_name.clone()),
            reqq: Some(rules.advertised_reqq as u32),
            // A v4 peer on the dual-stack listener shows as ::ffff:a.b.c.d; BEP 10 tells it
            // its 4-byte address.
            yourip: Some(addr.to_canonical()),
            p: Some(rules.port).filter(|&p| p != 0),
            metadata_size: public.then_some(t.info.len() as u64),
            upload_only: t.is_seed(),
        }
    }

    /// One message from the peer. Answers go into `out`; the result says what else to do, or
    /// why the connection must close.
    pub fn on_message<'m>(
        &mut self,
        msg: Message<'m>,
        t: TorrentView<'_>,
        rules: &Rules,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Action<'m>, Reason> {
        if self.phase != Phase::Active {
            return Err(Reason::BadMessage);
        }
        let n = t.num_pieces();
        if self.changes_nothing(&msg, t, rules) {
            self.spend_noise(now)?;
        }
        let action = match msg {
            Message::Unknown { id, payload } if id == crate::wire::hashes::HASH_REQUEST => {
                self.on_hash_request(payload, t, rules, now, out)?
            }
            Message::KeepAlive | Message::Port(_) | Message::Unknown { .. } => Action::Nothing,
            Message::Choke => {
                self.peer_choking = true;
                self.on_choked();
                Action::Nothing
            }
            Message::Unchoke => {
                self.peer_choking = false;
                Action::MayRequest
            }
            Message::Interested => {
                self.peer_interested = true;
                if self.am_choking {
                    Action::WantsSlot
                } else {
                    Action::Nothing
                }
            }
            Message::NotInterested => {
                self.peer_interested = false;
                if self.am_choking {
                    Action::Nothing
                } else {
                    Action::LeavesSlot
                }
            }
            Message::Have(i) => self.on_have(i, t)?,
            Message::Bitfield(bits) => self.on_bitfield(bits, t)?,
            Message::HaveAll => {
                if !self.fast {
                    return Err(Reason::BadMessage);
                }
                self.on_have_all(t)?
            }
            Message::HaveNone => {
                if !self.fast {
                    return Err(Reason::BadMessage);
                }
                self.forget_pieces(t.pieces);
                self.announced = true;
                self.fetch.wanted = 0;
                Action::Nothing
            }
            Message::Request(r) => self.on_request(r, t, rules, now, out)?,
            Message::Cancel(r) => {
                if let Some(pos) = self.requests.iter().position(|q| q.req == r) {
                    self.requests.remove(pos);
                    if self.fast {
                        // BEP 6: a cancelled request is answered with a reject.
                        Message::Reject(r).encode(out);
                    }
                }
                Action::Nothing
            }
            Message::Piece { index, begin, data } => self.on_block(index, begin, data, now)?,
            Message::Suggest(_) => {
                if !self.fast {
                    return Err(Reason::BadMessage);
                }
                Action::Nothing
            }
            Message::Reject(r) => {
                if !self.fast {
                    return Err(Reason::BadMessage);
                }
                self.on_reject(r)?;
                Action::MayRequest
            }
            Message::AllowedFast(i) => {
                if !self.fast {
                    return Err(Reason::BadMessage);
                }
                if i < n
                    && self.allowed_fast_in.len() < MAX_ALLOWED_FAST_IN
                    && !self.allowed_fast_in.contains(&i)
                {
                    self.allowed_fast_in.push(i);
                }
                Action::MayRequest
            }
            Message::Extended { id: 0, payload } => {
                // A bad extension handshake disables extensions for this peer; it is no reason
                // to drop a peer that speaks BEP 3 correctly.
                self.ext = ExtHandshake::parse(payload).ok();
                self.ext_seen = true;
                Action::ExtHandshake
            }
            Message::Extended {
                id: crate::speed::peer::LOCAL_ID,
                payload,
            } if rules.speed => Action::Speed(payload),
            Message::Extended {
                id: crate::wire::metadata::LOCAL_ID,
                payload,
            } => match self.on_metadata(payload, t, rules, out) {
                0 => Action::Nothing,
                n => Action::MetadataSent(n),
            },
            Message::Extended {
                id: crate::wire::pex::LOCAL_ID,
                payload,
            } if !t.private => Action::Pex(payload),
            Message::Extended { .. } => Action::Nothing,
        };
        if t.fetching {
            self.update_interest(t, out);
        }
        if out.len() > rules.max_send_backlog {
            return Err(Reason::SendBacklog);
        }
        Ok(action)
    }

    /// Whether `msg` would change nothing: a state the peer is already in, a piece it already
    /// announced, a second announcement of all its pieces, a cancel of nothing queued, a
    /// metadata request past the answers it is allowed, a keep-alive or a message we do not
    /// know. Each of these spends the noise budget. So do messages an honest peer sends
    /// rarely, which cost a parse and, for some, a lock shared with other workers: every
    /// extension handshake after the first (BEP 10 lets a peer update its own; libtorrent
    /// sends another when it becomes a seed), every peer exchange message (BEP 11: at most one
    /// a minute), and every `ut_metadata` message but a request we answer (we never ask, so
    /// data and rejects are unwanted; requests answered with a reject, for a piece that does
    /// not exist or a private torrent, count once past the answers allowed). Streams of each
    /// of these were never cut off.
    fn changes_nothing(&self, msg: &Message<'_>, t: TorrentView<'_>, rules: &Rules) -> bool {
        match *msg {
            // Judged by `on_hash_request`: noise only when it is not answered.
            Message::Unknown {
                id: crate::wire::hashes::HASH_REQUEST,
                ..
            } => false,
            Message::KeepAlive | Message::Port(_) | Message::Unknown { .. } => true,
            Message::Suggest(_) => true,
            Message::Interested => self.peer_interested,
            Message::NotInterested => !self.peer_interested,
            Message::Choke => self.peer_choking,
            Message::Unchoke => !self.peer_choking,
            Message::Have(i) => self.peer_has(i),
            Message::Bitfield(_) | Message::HaveAll | Message::HaveNone => self.announced,
            Message::Cancel(r) => !self.requests.iter().any(|q| q.req == r),
            Message::Extended {
                id: crate::wire::metadata::LOCAL_ID,
                payload,
            } => !self.metadata_request_due(payload, t),
            Message::Extended { id: 0, .. } => self.ext_seen,
            Message::Extended {
                id: crate::wire::pex::LOCAL_ID,
                ..
            } => true,
            Message::Extended { id, .. } => {
                id != 0
                    && id != crate::wire::metadata::LOCAL_ID
                    && id != crate::wire::pex::LOCAL_ID
                    && !(rules.speed && id == crate::speed::peer::LOCAL_ID)
            }
            _ => false,
        }
    }

    /// Takes one message from the noise budget, refilled at [`NOISE_PER_SEC`] up to
    /// [`NOISE_BURST`].
    fn spend_noise(&mut self, now: Instant) -> Result<(), Reason> {
        let secs = now.saturating_duration_since(self.noise_at).as_secs();
        if secs > 0 {
            let refill = (secs.min(u64::from(NOISE_BURST)) as u32) * NOISE_PER_SEC;
            self.noise_tokens = self.noise_tokens.saturating_add(refill).min(NOISE_BURST);
            self.noise_at = now;
        }
        self.noise_tokens = self
            .noise_tokens
            .checked_sub(1)
            .ok_or(Reason::MessageFlood)?;
        Ok(())
    }

    /// Whether a `ut_metadata` message is a request we answer within the bounds: the peer named
    /// `ut_metadata`, has had fewer answers than allowed, and fewer rejects.
    fn metadata_request_due(&self, payload: &[u8], t: TorrentView<'_>) -> bool {
        use crate::wire::metadata::{self, MetadataMessage};
        let allowed = Self::metadata_allowed(t);
        self.metadata_answers < allowed
            && self.metadata_rejects < allowed
            && self
                .ext
                .as_ref()
                .is_some_and(|e| e.id_of(metadata::EXTENSION_NAME).is_some())
            && matches!(
                MetadataMessage::parse(payload),
                Ok(MetadataMessage::Request(_))
            )
    }

    /// BEP 9 answers one peer may have: a few copies of the whole info dictionary.
    fn metadata_allowed(t: TorrentView<'_>) -> u32 {
        4 * crate::wire::metadata::piece_count(t.info.len()) + 4
    }

    fn on_have(&mut self, i: u32, t: TorrentView<'_>) -> Result<Action<'static>, Reason> {
        let n = t.num_pieces();
        if i >= n {
            return Err(Reason::BadMessage);
        }
        let bits = self
            .have
            .bits
            .get_or_insert_with(|| vec![0; n.div_ceil(8) as usize]);
        let (byte, bit) = ((i / 8) as usize, 0x80u8 >> (i % 8));
        if bits[byte] & bit == 0 {
            bits[byte] |= bit;
            self.have.count += 1;
            t.pieces.peer_has(i);
            if self.have.count == n && !self.have.all {
                t.pieces.peer_completed();
            }
            if !t.pieces.verified.get(i) {
                self.fetch.wanted += 1;
            }
        }
        if self.have.count == n && t.is_seed() {
            return Err(Reason::BothSeeds);
        }
        Ok(if t.fetching {
            Action::MayRequest
        } else {
            Action::Nothing
        })
    }

    /// BEP 3 sends the bitfield once, first; aria2 sends fresh ones as it completes pieces, so a
    /// later one replaces the peer's state. Its length must match, and spare bits be clear.
    fn on_bitfield(&mut self, bits: &[u8], t: TorrentView<'_>) -> Result<Action<'static>, Reason> {
        let n = t.num_pieces();
        if bits.len() != n.div_ceil(8) as usize {
            return Err(Reason::BadMessage);
        }
        let spare = (n.div_ceil(8) * 8 - n) as u8;
        if spare > 0 && bits.last().is_some_and(|&l| l & ((1u8 << spare) - 1) != 0) {
            return Err(Reason::BadMessage);
        }
        self.forget_pieces(t.pieces);
        let mut count = 0;
        for_each_set(bits, n, |i| {
            t.pieces.peer_has(i);
            count += 1;
        });
        self.have = PeerPieces {
            bits: Some(bits.to_vec()),
            count,
            all: false,
        };
        if count == n && n > 0 {
            t.pieces.peer_completed();
        }
        self.announced = true;
        if count == n && n > 0 && t.is_seed() {
            return Err(Reason::BothSeeds);
        }
        self.count_wanted(t);
        Ok(if t.fetching {
            Action::MayRequest
        } else {
            Action::Nothing
        })
    }

    fn on_have_all(&mut self, t: TorrentView<'_>) -> Result<Action<'static>, Reason> {
        if t.is_seed() {
            return Err(Reason::BothSeeds);
        }
        let n = t.num_pieces();
        self.forget_pieces(t.pieces);
        t.pieces.seed_joined();
        self.have = PeerPieces {
            bits: Some(full_bitfield(n)),
            count: n,
            all: true,
        };
        self.announced = true;
        self.fetch.wanted = n - t.pieces.verified.count().min(n);
        Ok(if t.fetching {
            Action::MayRequest
        } else {
            Action::Nothing
        })
    }

    fn on_request(
        &mut self,
        r: BlockRequest,
        t: TorrentView<'_>,
        rules: &Rules,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Action<'static>, Reason> {
        if r.length == 0 || r.length > rules.max_request_len || r.index >= t.num_pieces() {
            return Err(Reason::InvalidRequest);
        }
        if u64::from(r.begin) + u64::from(r.length) > t.layout.piece_size(r.index) {
            return Err(Reason::InvalidRequest);
        }
        let allowed = !self.am_choking
            || (self.allowed_fast.contains(&r.index) && self.requests.len() < MAX_FAST_QUEUED);
        let full = self.requests.len() >= rules.max_reqq;
        let servable = t.pieces.verified.get(r.index) && allowed && !full;
        if servable && self.heard_reqq() && self.requests.len() >= rules.advertised_reqq {
            // Past the share we told it: a request that crossed our smaller `reqq` on the wire.
            // It is rejected rather than queued behind the worker's whole backlog, so the peer
            // asks again, or elsewhere. Not a flood (it could not know), but it spends the
            // noise budget, so a peer that ignores `reqq` for good is cut off.
            self.spend_noise(now)?;
            self.last_asked = now;
            Message::Reject(r).encode(out);
            return Ok(Action::Shed);
        }
        if servable {
            if self.requests.len() < rules.max_reqq / 2 {
                self.overflow = 0;
            }
            self.last_asked = now;
            self.requests.push_back(Queued { req: r, at: now });
            return Ok(Action::Queued);
        }
        self.rejected_total += 1;
        if full {
            self.overflow += 1;
        }
        if self.fast {
            Message::Reject(r).encode(out);
        }
        // A peer that keeps requesting past the queue we advertised (`reqq`), or while choked,
        // ignores the protocol and only costs us memory and sends.
        if self.overflow > (rules.max_reqq as u64 / 2).max(16)
            || self.rejected_total > 4 * rules.max_reqq as u64 + 1000
        {
            return Err(Reason::RequestFlood);
        }
        Ok(Action::Refused { told: self.fast })
    }

    /// A BEP 9 message: a request is answered with the piece of the info dictionary, or a
    /// reject for a piece that does not exist, a private torrent, a peer that has asked for
    /// more than a few copies of the whole, or one whose queued answers would fill its send
    /// backlog (each answer is 16 KiB queued on our side; it asks again). We never ask, so data
    /// and rejects get no answer, nor does a malformed message.
    /// Returns the bytes of info dictionary answered (0 for a reject or nothing).
    fn on_metadata(
        &mut self,
        payload: &[u8],
        t: TorrentView<'_>,
        rules: &Rules,
        out: &mut Vec<u8>,
    ) -> u64 {
        use crate::wire::metadata::{self, MetadataMessage};
        let Some(their_id) = self
            .ext
            .as_ref()
            .and_then(|e| e.id_of(metadata::EXTENSION_NAME))
        else {
            return 0;
        };
        let Ok(MetadataMessage::Request(piece)) = MetadataMessage::parse(payload) else {
            return 0;
        };
        let allowed = Self::metadata_allowed(t);
        let room = out.len() + metadata::PIECE_BYTES + 128 <= rules.max_send_backlog;
        let answer = if t.private || self.metadata_answers >= allowed || !room {
            None
        } else {
            metadata::data_message(t.info, piece)
        };
        let sent = answer.as_ref().map_or(0, |a| a.len() as u64);
        if answer.is_some() {
            self.metadata_answers = self.metadata_answers.saturating_add(1);
        } else {
            self.metadata_rejects = self.metadata_rejects.saturating_add(1);
        }
        let reply = answer.unwrap_or_else(|| metadata::reject_message(piece));
        Message::Extended {
            id: their_id,
            payload: &reply,
        }
        .encode(out);
        sent
    }

    /// Whether it holds an unchoke it does not use: nothing of its requests is queued and it
    /// has asked for nothing we could serve for `after`, since its unchoke or its last request.
    /// Interested and reading, it would otherwise keep its upload slot for as long as it likes
    /// (it never reaches the round-robin quota), with peers that want data waiting.
    pub fn asks_nothing(&self, now: Instant, after: Duration) -> bool {
        !self.am_choking
            && self.requests.is_empty()
            && now.saturating_duration_since(self.last_asked) >= after
    }

    /// Chokes the peer (no-op when choked already). Its queued requests die with the choke;
    /// fast peers are told so, except for pieces in their allowed-fast set, which stay served.
    pub fn choke(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.am_choking {
            return false;
        }
        self.am_choking = true;
        self.choke_changed = now;
        Message::Choke.encode(out);
        let fast = self.fast;
        let allowed = &self.allowed_fast;
        self.requests.retain(|q| {
            let keep = fast && allowed.contains(&q.req.index);
            if fast && !keep {
                Message::Reject(q.req).encode(out);
            }
            keep
        });
        true
    }

    /// Unchokes the peer (no-op when unchoked already).
    pub fn unchoke(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if !self.am_choking {
            return false;
        }
        self.am_choking = false;
        self.choke_changed = now;
        self.last_asked = now;
        self.uploaded_since_unchoke = 0;
        // Requests refused while choked were in flight across our choke, not a flood: a peer
        // choked and unchoked many times over a long connection is not cut off for them.
        self.rejected_total = 0;
        Message::Unchoke.encode(out);
        true
    }

    /// Whether the peer heard our `reqq` and can be told no: it speaks BEP 10 (our handshake
    /// carries `reqq`) and BEP 6 (a reject; without it a refused request is lost to the peer).
    fn heard_reqq(&self) -> bool {
        self.fast && self.extensions && self.phase == Phase::Active
    }

    /// Sheds the peer's queue down to the `reqq` it was told (`rules.advertised_reqq`, smaller
    /// than `max_reqq` while the worker falls behind): the newest requests past it are rejected
    /// (BEP 6), so what the worker holds stays within its budget however early the peer
    /// queued, and the oldest keep their turn. Only unchoked peers that heard `reqq` and can be
    /// told no; their rejects spend nothing of theirs (the shrink was ours). Returns how many.
    pub fn shed(&mut self, rules: &Rules, out: &mut Vec<u8>) -> usize {
        if self.am_choking || !self.heard_reqq() || self.requests.len() <= rules.advertised_reqq {
            return 0;
        }
        let past = self.requests.split_off(rules.advertised_reqq);
        for q in &past {
            Message::Reject(q.req).encode(out);
        }
        past.len()
    }

    /// Takes the first `n` queued requests for an upload job.
    pub fn take_requests(&mut self, n: usize) -> impl Iterator<Item = Queued> + '_ {
        let n = n.min(self.requests.len());
        self.requests.drain(..n)
    }

    /// `payload` bytes of blocks reached the socket.
    pub fn served(&mut self, payload: u64) {
        self.uploaded += payload;
        self.uploaded_since_unchoke += payload;
        self.uploaded_this_round += payload;
    }

    /// Time passed: the handshake or the peer may have timed out, or a keep-alive is due (only
    /// when `send_idle`: nothing is on its way to the socket).
    pub fn on_tick(
        &mut self,
        now: Instant,
        rules: &Rules,
        send_idle: bool,
        out: &mut Vec<u8>,
    ) -> Result<Tick, Reason> {
        match self.phase {
            Phase::Connecting | Phase::Handshake => {
                if now.saturating_duration_since(self.connected_at) > rules.handshake_timeout {
                    return Err(Reason::HandshakeTimeout);
                }
                Ok(Tick::Nothing)
            }
            Phase::Active => {
                if now.saturating_duration_since(self.last_recv) > rules.idle_timeout {
                    return Err(Reason::IdleTimeout);
                }
                if self.check_stall(now, rules.request_timeout, out) {
                    return Ok(Tick::Snubbed);
                }
                if send_idle
                    && out.is_empty()
                    && now.saturating_duration_since(self.last_send) > rules.keepalive_interval
                {
                    Message::KeepAlive.encode(out);
                    return Ok(Tick::KeepAlive);
                }
                Ok(Tick::Nothing)
            }
        }
    }

    /// The connection is gone: the pieces it announced no longer count as available.
    pub fn forget_pieces(&mut self, pieces: &PieceTable) {
        if let Some(bits) = self.have.bits.take() {
            if std::mem::take(&mut self.have.all) {
                pieces.seed_left();
            } else {
                let n = pieces.num_pieces();
                if n > 0 && self.have.count == n {
                    pieces.complete_peer_left();
                }
                for_each_set(&bits, n, |i| pieces.peer_lost(i));
            }
        }
        self.have.count = 0;
    }
}

fn full_bitfield(n: u32) -> Vec<u8> {
    let mut b = vec![0xff; n.div_ceil(8) as usize];
    let spare = n.div_ceil(8) * 8 - n;
    if let Some(last) = b.last_mut()
        && spare > 0
    {
        *last &= 0xff << spare;
    }
    b
}

/// Calls `f` for every piece index below `n` whose bit is set in a wire-form bitfield.
fn for_each_set(bits: &[u8], n: u32, mut f: impl FnMut(u32)) {
    for (byte_i, &byte) in bits.iter().enumerate() {
        if byte == 0 {
            continue;
        }
        for bit in 0..8u32 {
            let i = byte_i as u32 * 8 + bit;
            if i < n && byte & (0x80 >> bit) != 0 {
                f(i);
            }
        }
    }
}
