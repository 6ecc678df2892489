//! The peer state machine (`engine::peer::Peer`) through arbitrary sequences of events, as a
//! worker drives it: up to four peers of one torrent connect (incoming or dialled, with or
//! without BEP 6 and BEP 10, IPv4 or IPv6), send messages (each kind built from the input and
//! mostly well-formed, so deep states are reached: requests for real blocks, blocks we asked
//! for, rejects, extension handshakes, metadata requests, peer exchange, `rs_speed`, or raw
//! bytes), and leave; in between the worker's own events: choking rounds, upload jobs that take
//! queued requests, our socket taking bytes, time passing (ticks: keep-alives, stalls, idle
//! peers), pieces verified (by these peers' blocks or elsewhere), cancels. The torrent is seeded
//! complete, downloaded partial (we ask for blocks through the real picker and assemble them in
//! real `Part`s), or partial and not downloading.
//!
//! After every step it checks, for every peer still connected:
//! - requests we queued for upload (and every one an upload job takes) name a whole range of a
//!   verified piece within the torrent, at most `max_request_len` long; at most `reqq` of them;
//!   while the peer is choked, only its allowed-fast pieces (BEP 6 peers only);
//! - its counters agree with what it announced: `peer_has_count` is the number of its pieces,
//!   no bit past the last piece, `wanted` says whether it has a piece we lack, our interest
//!   follows it while downloading, every piece's availability is the number of peers that have
//!   it; payload counted up and down is what jobs took and blocks brought;
//! - memory is bounded: the heap its state holds (`Peer::heap_bytes`) stays under a bound set by
//!   the rules and the torrent alone, the partial message buffered is under the largest message
//!   it may send, our answers to one message never pass the send backlog;
//! - cut-offs come with a reason of the right kind, and come: messages that change nothing past
//!   their budget, refused requests past theirs, silence past the idle timeout, our sends left
//!   unread past the send timeout; an accepted block is one we asked for (or cancelled), of the
//!   asked length; a metadata answer is never sent for a private torrent, nor more than allowed;
//! - whatever we send parses as wire messages.
//!
//! At the end every peer leaves and every piece's availability is back to 0.
#![no_main]

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use ringseed::download::part::{Part, Taken};
use ringseed::download::picker::{self, Strategy};
use ringseed::download::want::Want;
use ringseed::engine::Reason;
use ringseed::engine::peer::{Action, Asked, Peer, Phase, Queued, Rules, Tick, TorrentView};
use ringseed::metainfo::{FileEntry, FileLayout};
use ringseed::pieces::PieceTable;
use ringseed::wire::extension::{ExtHandshake, MAX_HANDSHAKE_BYTES};
use ringseed::wire::pex::PexMessage;
use ringseed::wire::{BLOCK_SIZE, BlockRequest, Handshake, Message, WireError, metadata};

/// Mirrors of the machine's budgets (engine/peer/mod.rs): the checks hold it to them.
const NOISE_BURST: u64 = 500;
const NOISE_PER_SEC: u64 = 50;
/// The worker's deadline for a peer that leaves our sends unread (`send_timeout`).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const UPLOAD_SLOTS: usize = 2;
const MAX_PEERS: usize = 4;
/// Steps per input: enough for long sessions, few enough that a run stays fast.
const MAX_STEPS: usize = 3000;
/// Requests we cancelled (or lost to a choke or a stall) whose blocks are still welcome, as the
/// harness remembers them: more than the machine does (it forgets the oldest past 1024), so
/// what the machine accepts is always among them.
const HARNESS_LATE: usize = 4096;

const ON_MESSAGE: &[Reason] = &[
    Reason::BadMessage,
    Reason::InvalidRequest,
    Reason::RequestFlood,
    Reason::SendBacklog,
    Reason::BothSeeds,
    Reason::UnrequestedBlock,
    Reason::MessageFlood,
];

struct Torrent {
    id: [u8; 20],
    layout: FileLayout,
    pieces: PieceTable,
    info: Vec<u8>,
    private: bool,
    /// Opened for download: pieces it lacks are fetched (until it is complete).
    downloads: bool,
}

impl Torrent {
    fn view(&self) -> TorrentView<'_> {
        TorrentView {
            id: self.id,
            v2_id: None,
            trees: None,
            pieces: &self.pieces,
            layout: &self.layout,
            info: &self.info,
            private: self.private,
            fetching: self.downloads && !self.pieces.verified.is_full(),
        }
    }

    fn n(&self) -> u32 {
        self.layout.num_pieces
    }
}

/// One connection as the worker holds it, plus what the harness remembers to check the machine.
struct Conn {
    peer: Peer,
    addr: IpAddr,
    /// Control bytes waiting for the socket, and whether our handshake is still at their front.
    out: Vec<u8>,
    handshake_queued: bool,
    /// Received bytes not yet a whole message.
    pending: Vec<u8>,
    last_drain: Instant,
    last_recv: Instant,
    connected: Instant,
    /// It announced its pieces (bitfield, have_all or have_none): another one is noise.
    announced: bool,
    /// It sent an extension handshake: another one is noise.
    ext_seen: bool,
    /// Accepted messages that change nothing (a subset of the machine's count: the checks hold
    /// the bound on it).
    noise: u64,
    refused_since_unchoke: u64,
    metadata_answers: u64,
    late: VecDeque<BlockRequest>,
    downloaded: u64,
    served: u64,
    /// The allowed-fast set we gave it (BEP 6: from its address).
    allowed_fast: Vec<u32>,
    wants_blocks: bool,
}

struct World {
    t: Torrent,
    rules: Rules,
    /// Pieces being assembled, by index (a `BTreeMap`: runs are reproducible).
    parts: BTreeMap<u32, Part>,
    conns: Vec<Option<Conn>>,
    now: Instant,
    rand: u64,
    /// Peers that ever connected: each has an address of its own.
    joined: u8,
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(mut w) = World::new(&mut u) {
        let _ = w.run(&mut u);
        w.finish();
    }
});

/// Up to `max` bytes of the input.
fn some_bytes(u: &mut Unstructured, max: usize) -> Result<Vec<u8>> {
    let len = u.int_in_range(0..=max)?;
    Ok(u.bytes(len)?.to_vec())
}

fn piece_index(u: &mut Unstructured, n: u32) -> Result<u32> {
    Ok(match u.int_in_range(0..=15u8)? {
        0 => n,
        1 => u.arbitrary()?,
        _ => u.int_in_range(0..=n - 1)?,
    })
}

impl World {
    fn new(u: &mut Unstructured) -> Result<World> {
        let n = u.int_in_range(1..=80u32)?;
        let piece = *u.choose(&[16u64 << 10, 32 << 10, 64 << 10])?;
        let last = u.int_in_range(1..=piece)?;
        let layout = FileLayout::new(
            vec![FileEntry {
                path: vec!["f".into()],
                length: u64::from(n - 1) * piece + last,
                offset: 0,
                pad: false,
                executable: false,
                pieces_root: None,
            }],
            piece,
        )
        .expect("a valid layout");
        assert_eq!(layout.num_pieces, n);
        let pieces = PieceTable::new(n);
        // 0: a seed; 1: a partial download; 2: partial, not downloading (paused or failed).
        let role = u.int_in_range(0..=2u8)?;
        let have: u128 = u.arbitrary()?;
        for i in 0..n {
            if role == 0 || have & (1 << (i % 128)) != 0 {
                pieces.verified.set(i);
            }
        }
        let info_len = u.int_in_range(1..=40_000usize)?;
        let t = Torrent {
            id: [7; 20],
            layout,
            pieces,
            info: vec![b'x'; info_len],
            private: u.arbitrary()?,
            downloads: role == 1,
        };
        // The config's bounds: 16..=10000; the advertised share is at least 8 (engine::reqq).
        let max_reqq = *u.choose(&[16usize, 32, 250, 2000])?;
        let rules = Rules {
            peer_id: [1; 20],
            port: 6881,
            client_name: "fuzz".into(),
            // The config's bounds: 16..=128 KiB.
            max_request_len: *u.choose(&[16u32 << 10, 128 << 10])?,
            max_reqq,
            advertised_reqq: u.int_in_range(8..=max_reqq)?,
            max_send_backlog: *u.choose(&[64usize << 10, 64 << 10, 20 << 10, 2 << 10])?,
            allowed_fast: u.int_in_range(0..=10)?,
            pex: u.arbitrary()?,
            speed: u.arbitrary()?,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(*u.choose(&[5u64, 20])?),
        };
        Ok(World {
            t,
            rules,
            parts: BTreeMap::new(),
            conns: (0..MAX_PEERS).map(|_| None).collect(),
            now: Instant::now(),
            rand: 0x9e37_79b9_7f4a_7c15,
            joined: 0,
        })
    }

    fn run(&mut self, u: &mut Unstructured) -> Result<()> {
        for _ in 0..MAX_STEPS {
            if u.is_empty() {
                break;
            }
            self.step(u)?;
            self.check();
        }
        Ok(())
    }

    fn live(&self) -> Vec<usize> {
        (0..self.conns.len())
            .filter(|&k| self.conns[k].is_some())
            .collect()
    }

    fn step(&mut self, u: &mut Unstructured) -> Result<()> {
        let op = u.int_in_range(0..=16u8)?;
        let live = self.live();
        if live.is_empty() || op == 0 {
            return self.connect(u);
        }
        let k = *u.choose(&live)?;
        match op {
            // Most steps: the peer sends one message, or a few.
            1..=6 => {
                let m = u.int_in_range(1..=3usize)?;
                let mut bytes = Vec::new();
                for _ in 0..m {
                    self.message(u, k, &mut bytes)?;
                }
                self.receive(k, &bytes);
            }
            7 => {
                let raw = some_bytes(u, 600)?;
                self.receive(k, &raw);
            }
            8 => self.tick(u)?,
            9 => self.choking_round(k),
            10 => self.upload_job(u, k)?,
            11 => self.drain(u, k)?,
            12 => self.verified_elsewhere(u)?,
            13 => self.cancel(u, k)?,
            14 => self.close(k, Reason::PeerClosed),
            15 => self.stranger(u)?,
            _ => {
                // A flood: one message again and again, in one receive.
                let mut one = Vec::new();
                self.message(u, k, &mut one)?;
                // At most 1 MiB of it.
                let times = u.int_in_range(1..=2000usize)?.min((1 << 20) / one.len());
                self.receive(k, &one.repeat(times));
            }
        }
        Ok(())
    }

    /// A peer connects and completes its handshake (or fails it, with the right reason).
    fn connect(&mut self, u: &mut Unstructured) -> Result<()> {
        let Some(k) = (0..self.conns.len()).find(|&k| self.conns[k].is_none()) else {
            return Ok(());
        };
        self.joined = self.joined.wrapping_add(1);
        let v4 = Ipv4Addr::new(10, 0, self.joined, 1);
        let addr = match u.int_in_range(0..=3u8)? {
            0 => IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0,
                0,
                0,
                0,
                0,
                0,
                u16::from(self.joined),
            )),
            // A v4 peer on a dual-stack listener.
            1 => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => IpAddr::V4(v4),
        };
        let outgoing: bool = u.arbitrary()?;
        let mut hs = Handshake::new(self.t.id, [2; 20]);
        hs.reserved = [0; 8];
        if u.arbitrary()? {
            hs.reserved[7] |= 0x04;
        }
        if u.arbitrary()? {
            hs.reserved[5] |= 0x10;
        }
        let mut peer = Peer::new(outgoing, self.now);
        let mut out = Vec::new();
        if outgoing {
            peer.connected(self.t.id, false, &self.rules, &mut out);
            assert_eq!(out.len(), Handshake::LEN);
        }
        match peer.on_handshake(&hs, self.t.view(), &self.rules, addr, &mut out) {
            Ok(()) => {}
            Err(r) => panic!("a good handshake refused: {r:?}"),
        }
        assert_eq!(peer.phase(), Phase::Active);
        let allowed_fast = if hs.supports_fast() && self.rules.allowed_fast > 0 {
            ringseed::wire::fast::allowed_fast_set(
                addr.to_canonical(),
                &self.t.id,
                self.t.n(),
                self.rules.allowed_fast,
            )
        } else {
            Vec::new()
        };
        self.conns[k] = Some(Conn {
            peer,
            addr,
            out,
            handshake_queued: outgoing,
            pending: Vec::new(),
            last_drain: self.now,
            last_recv: self.now,
            connected: self.now,
            announced: false,
            ext_seen: false,
            noise: 0,
            refused_since_unchoke: 0,
            metadata_answers: 0,
            late: VecDeque::new(),
            downloaded: 0,
            served: 0,
            allowed_fast,
            wants_blocks: false,
        });
        Ok(())
    }

    /// Peers that never become active: the deadline, a message too early, a wrong torrent,
    /// ourselves, a second handshake.
    fn stranger(&mut self, u: &mut Unstructured) -> Result<()> {
        let mut p = Peer::new(u.arbitrary()?, self.now);
        let mut out = Vec::new();
        if p.outgoing() {
            p.connected(self.t.id, false, &self.rules, &mut out);
        }
        let addr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
        let view = self.t.view();
        match u.int_in_range(0..=4u8)? {
            0 => {
                let later = self.now + self.rules.handshake_timeout + Duration::from_millis(1);
                assert_eq!(
                    p.on_tick(later, &self.rules, true, &mut out),
                    Err(Reason::HandshakeTimeout)
                );
            }
            1 => {
                let r = p.on_message(Message::Interested, view, &self.rules, self.now, &mut out);
                assert_eq!(r, Err(Reason::BadMessage));
            }
            2 => {
                let hs = Handshake::new([8; 20], [2; 20]);
                let r = p.on_handshake(&hs, view, &self.rules, addr, &mut out);
                assert_eq!(r, Err(Reason::UnknownTorrent));
            }
            3 => {
                let hs = Handshake::new(self.t.id, self.rules.peer_id);
                let r = p.on_handshake(&hs, view, &self.rules, addr, &mut out);
                assert_eq!(r, Err(Reason::SelfConnection));
            }
            _ => {
                let hs = Handshake::new(self.t.id, [2; 20]);
                assert_eq!(
                    p.on_handshake(&hs, view, &self.rules, addr, &mut out),
                    Ok(())
                );
                let r = p.on_handshake(&hs, view, &self.rules, addr, &mut out);
                assert_eq!(r, Err(Reason::BadHandshake));
                p.forget_pieces(&self.t.pieces);
            }
        }
        Ok(())
    }

    /// A block request, mostly one of a real block, sometimes anything.
    fn request(&self, u: &mut Unstructured) -> Result<BlockRequest> {
        let n = self.t.n();
        let index = piece_index(u, n)?;
        if index >= n || u.ratio(1, 12)? {
            return Ok(BlockRequest {
                index,
                begin: u.arbitrary()?,
                length: *u.choose(&[0, 1, 16 << 10, 128 << 10, (128 << 10) + 1, u32::MAX])?,
            });
        }
        let size = self.t.layout.piece_size(index) as u32;
        let blocks = size.div_ceil(BLOCK_SIZE);
        let b = u.int_in_range(0..=blocks - 1)?;
        let begin = b * BLOCK_SIZE;
        let mut length = BLOCK_SIZE.min(size - begin);
        if u.ratio(1, 10)? {
            length += 1;
        }
        Ok(BlockRequest {
            index,
            begin,
            length,
        })
    }

    /// One message from peer `k`, built from the input, appended to `bytes` in wire form.
    fn message(&mut self, u: &mut Unstructured, k: usize, bytes: &mut Vec<u8>) -> Result<()> {
        let n = self.t.n();
        let c = self.conns[k].as_ref().expect("a live peer");
        let bitfield_len = n.div_ceil(8) as usize;
        let mut payload: Vec<u8>;
        let msg = match u.int_in_range(0..=23u8)? {
            0 => Message::KeepAlive,
            1 => Message::Choke,
            2 => Message::Unchoke,
            3 => Message::Interested,
            4 => Message::NotInterested,
            5 => Message::Have(piece_index(u, n)?),
            6 => {
                let len = if u.ratio(1, 16)? {
                    u.int_in_range(0..=bitfield_len + 1)?
                } else {
                    bitfield_len
                };
                payload = match u.int_in_range(0..=3u8)? {
                    0 => vec![0; len],
                    1 => vec![0xff; len],
                    _ => u.bytes(len)?.to_vec(),
                };
                payload.resize(len, 0);
                // Mostly with the spare bits clear, as the protocol wants.
                let spare = (n.div_ceil(8) * 8 - n) as u8;
                if len == bitfield_len
                    && spare > 0
                    && !u.ratio(1, 8)?
                    && let Some(l) = payload.last_mut()
                {
                    *l &= !((1u8 << spare) - 1);
                }
                Message::Bitfield(&payload)
            }
            7 | 8 => Message::Request(self.request(u)?),
            9 | 10 => {
                // A block: mostly one we asked for or cancelled, of its length.
                let asked: Vec<BlockRequest> = c.peer.asked().iter().map(|a| a.req).collect();
                let r = match u.int_in_range(0..=5u8)? {
                    0 => self.request(u)?,
                    1 if !c.late.is_empty() => c.late[u.choose_index(c.late.len())?],
                    _ if !asked.is_empty() => asked[u.choose_index(asked.len())?],
                    _ => self.request(u)?,
                };
                let mut len = r.length.min(BLOCK_SIZE + 1) as usize;
                if u.ratio(1, 16)? {
                    len = len.saturating_sub(1);
                }
                payload = vec![0x5a; len];
                Message::Piece {
                    index: r.index,
                    begin: r.begin,
                    data: &payload,
                }
            }
            11 => {
                // A cancel: mostly of a request it queued.
                let r = match c.peer.requests().len() {
                    0 => self.request(u)?,
                    q => c.peer.requests()[u.choose_index(q)?].req,
                };
                Message::Cancel(r)
            }
            12 => Message::Port(u.arbitrary()?),
            13 => Message::Suggest(piece_index(u, n)?),
            14 => Message::HaveAll,
            15 => Message::HaveNone,
            16 => {
                let asked: Vec<BlockRequest> = c.peer.asked().iter().map(|a| a.req).collect();
                let r = match u.int_in_range(0..=3u8)? {
                    0 => self.request(u)?,
                    1 if !c.late.is_empty() => c.late[u.choose_index(c.late.len())?],
                    _ if !asked.is_empty() => asked[u.choose_index(asked.len())?],
                    _ => self.request(u)?,
                };
                Message::Reject(r)
            }
            17 => Message::AllowedFast(piece_index(u, n)?),
            18 => {
                payload = if u.ratio(1, 8)? {
                    some_bytes(u, 300)?
                } else {
                    let mut m = Vec::new();
                    for name in ["ut_metadata", "ut_pex", "rs_speed", "x_other"] {
                        if u.arbitrary()? {
                            m.push((name.to_string(), u.int_in_range(0..=4u8)?));
                        }
                    }
                    ExtHandshake {
                        m,
                        v: Some("fuzz 1.0".into()),
                        reqq: if u.arbitrary()? {
                            Some(u.arbitrary()?)
                        } else {
                            None
                        },
                        yourip: None,
                        p: Some(u.arbitrary()?).filter(|&p| p != 0),
                        metadata_size: Some(self.t.info.len() as u64),
                        upload_only: u.arbitrary()?,
                    }
                    .encode()
                };
                Message::Extended {
                    id: 0,
                    payload: &payload,
                }
            }
            19 => {
                let piece = u.int_in_range(0..=4u32)?;
                payload = match u.int_in_range(0..=5u8)? {
                    0 => metadata::reject_message(piece),
                    1 => some_bytes(u, 100)?,
                    _ => metadata::request_message(piece),
                };
                Message::Extended {
                    id: metadata::LOCAL_ID,
                    payload: &payload,
                }
            }
            20 => {
                payload = if u.ratio(1, 4)? {
                    some_bytes(u, 200)?
                } else {
                    let peers = u.int_in_range(0..=60usize)?;
                    let added = (0..peers)
                        .map(|i| {
                            let a =
                                SocketAddr::from(([10, 2, (i / 250) as u8, (i % 250) as u8], 6881));
                            (a, 0u8)
                        })
                        .collect();
                    PexMessage {
                        added,
                        dropped: Vec::new(),
                    }
                    .encode()
                };
                Message::Extended {
                    id: ringseed::wire::pex::LOCAL_ID,
                    payload: &payload,
                }
            }
            21 => {
                payload = some_bytes(u, 200)?;
                Message::Extended {
                    id: ringseed::speed::peer::LOCAL_ID,
                    payload: &payload,
                }
            }
            22 => {
                payload = some_bytes(u, 20)?;
                Message::Extended {
                    id: u.int_in_range(4..=255u8)?,
                    payload: &payload,
                }
            }
            _ => {
                payload = some_bytes(u, 20)?;
                Message::Unknown {
                    id: u.int_in_range(21..=255u8)?,
                    payload: &payload,
                }
            }
        };
        let at = bytes.len();
        msg.encode(bytes);
        // The codec gives back what it encoded (any length: the bound is the receiver's).
        let (back, used) = ringseed::wire::parse_message(&bytes[at..], u32::MAX)
            .expect("our own encoding parses")
            .expect("a whole message");
        assert_eq!(used, bytes.len() - at);
        assert_eq!(back, msg);
        Ok(())
    }

    /// Bytes arrive from peer `k`: every whole message is handled as the worker does (the
    /// machine, then what its answer asks of the worker, then the send backlog), then requests
    /// given back go back to their parts and the peer is asked for blocks.
    fn receive(&mut self, k: usize, bytes: &[u8]) {
        let now = self.now;
        let n = self.t.n();
        let Some(c) = self.conns[k].as_mut() else {
            return;
        };
        c.peer.received(now);
        c.last_recv = now;
        let mut buf = std::mem::take(&mut c.pending);
        buf.extend_from_slice(bytes);
        let mut pos = 0;
        let mut closed = None;
        loop {
            let Some(c) = self.conns[k].as_mut() else {
                break;
            };
            let max = c.peer.max_message_len(n, &self.rules);
            match ringseed::wire::parse_message(&buf[pos..], max) {
                Ok(Some((msg, used))) => {
                    pos += used;
                    if let Err(r) = self.handle(k, msg) {
                        closed = Some(r);
                        break;
                    }
                }
                Ok(None) => {
                    // What stays buffered is less than a message the peer may send.
                    assert!(buf.len() - pos < max as usize + 4);
                    break;
                }
                Err(WireError::TooLong { .. }) => {
                    closed = Some(Reason::MessageTooLong);
                    break;
                }
                Err(_) => {
                    closed = Some(Reason::BadMessage);
                    break;
                }
            }
        }
        if let Some(r) = closed {
            self.close(k, r);
            return;
        }
        if let Some(c) = self.conns[k].as_mut() {
            c.pending = buf[pos..].to_vec();
        }
        self.give_back(k);
        self.fill_requests(k);
    }

    /// One message through the machine, and the worker's part of its answer. `Err`: the peer
    /// must be cut off, for that reason.
    fn handle(&mut self, k: usize, msg: Message<'_>) -> std::result::Result<(), Reason> {
        let now = self.now;
        let rules = &self.rules;
        let c = self.conns[k].as_mut().expect("a live peer");
        let noise = changes_nothing(&msg, c, rules);
        let asked_before: Vec<BlockRequest> = c.peer.asked().iter().map(|a| a.req).collect();
        let queued_before = c.peer.requests().len();
        let was_choking = c.peer.am_choking();
        let fast = c.peer.fast();
        let view = self.t.view();
        let action = match c.peer.on_message(msg.clone(), view, rules, now, &mut c.out) {
            Ok(a) => a,
            Err(r) => {
                assert!(ON_MESSAGE.contains(&r), "{msg:?} cut off as {r:?}");
                return Err(r);
            }
        };
        assert!(
            c.out.len() <= rules.max_send_backlog,
            "{msg:?} left {} bytes to send",
            c.out.len()
        );
        if noise {
            c.noise += 1;
            let secs = now.saturating_duration_since(c.connected).as_secs();
            assert!(
                c.noise <= NOISE_BURST + NOISE_PER_SEC * secs,
                "{} messages that change nothing in {secs} s, not cut off",
                c.noise
            );
        }
        match msg {
            Message::Bitfield(_) | Message::HaveAll | Message::HaveNone => c.announced = true,
            Message::Extended { id: 0, .. } => c.ext_seen = true,
            Message::Choke if !fast => c.late.extend(asked_before.iter().copied()),
            Message::Reject(r) if !asked_before.contains(&r) => {
                // A reject of one we had cancelled: the machine forgot it.
                let pos = c.late.iter().position(|l| *l == r);
                c.late
                    .remove(pos.expect("a reject accepted for a request never made"));
            }
            _ => {}
        }
        while c.late.len() > HARNESS_LATE {
            c.late.pop_front();
        }
        match action {
            Action::Nothing => {}
            Action::WantsSlot => {
                assert!(was_choking && msg == Message::Interested);
                let unchoked = self
                    .conns
                    .iter()
                    .flatten()
                    .filter(|c| !c.peer.am_choking())
                    .count();
                let c = self.conns[k].as_mut().expect("a live peer");
                if unchoked < UPLOAD_SLOTS && c.peer.unchoke(now, &mut c.out) {
                    c.refused_since_unchoke = 0;
                }
            }
            Action::LeavesSlot => {
                assert!(!was_choking && msg == Message::NotInterested);
                self.choke(k);
            }
            Action::Queued => {
                let Message::Request(r) = msg else {
                    panic!("{msg:?} queued a request");
                };
                let q = c.peer.requests();
                assert_eq!(q.len(), queued_before + 1);
                assert_eq!(q.back().map(|q| q.req), Some(r));
            }
            Action::Refused { told } => {
                assert!(matches!(msg, Message::Request(_)));
                assert_eq!(told, fast);
                c.refused_since_unchoke += 1;
                assert!(
                    c.refused_since_unchoke <= 4 * rules.max_reqq as u64 + 1000,
                    "{} requests refused and not cut off",
                    c.refused_since_unchoke
                );
            }
            Action::Shed => {
                // Past the share we advertised, while the worker falls behind: rejected (BEP 6),
                // never queued; it spends the noise budget, so it is bounded like a refusal.
                assert!(matches!(msg, Message::Request(_)));
                assert!(fast, "a shed request without BEP 6 to tell the peer");
                assert!(queued_before >= rules.advertised_reqq);
                c.refused_since_unchoke += 1;
                assert!(
                    c.refused_since_unchoke <= 4 * rules.max_reqq as u64 + 1000,
                    "{} requests shed and not cut off",
                    c.refused_since_unchoke
                );
            }
            Action::ExtHandshake => {
                assert!(matches!(msg, Message::Extended { id: 0, .. }));
            }
            Action::Speed(payload) => {
                assert!(rules.speed);
                assert!(matches!(
                    msg,
                    Message::Extended {
                        id: ringseed::speed::peer::LOCAL_ID,
                        ..
                    }
                ));
                let _ = ringseed::speed::protocol::SpeedMessage::parse(payload);
            }
            Action::Pex(payload) => {
                assert!(!self.t.private, "peer exchange on a private torrent");
                if let Ok(m) = PexMessage::parse(payload) {
                    assert!(payload.len() <= ringseed::wire::pex::MAX_MESSAGE_BYTES);
                    let _ = m.added.len();
                }
            }
            // The harness's torrents are v1 (no merkle trees): every hash request is rejected.
            Action::HashesSent(_) => panic!("BEP 52 hashes answered for a v1 torrent"),
            Action::HashesRejected(_) => {
                assert!(matches!(
                    msg,
                    Message::Unknown {
                        id: ringseed::wire::hashes::HASH_REQUEST,
                        ..
                    }
                ));
            }
            Action::MetadataSent(bytes) => {
                assert!(!self.t.private, "metadata of a private torrent sent");
                assert!(c.peer.ext().is_some());
                assert!(bytes as usize <= metadata::MAX_MESSAGE_BYTES);
                c.metadata_answers += 1;
                let allowed = 4 * u64::from(metadata::piece_count(self.t.info.len())) + 4;
                assert!(
                    c.metadata_answers <= allowed,
                    "metadata answered past its budget"
                );
            }
            Action::MayRequest => c.wants_blocks = true,
            Action::Block { req, data, late } => {
                assert_eq!(req.length as usize, data.len(), "a block of another length");
                if late {
                    let pos = c.late.iter().position(|l| *l == req);
                    c.late.remove(pos.expect("a late block we never cancelled"));
                } else {
                    assert!(asked_before.contains(&req), "a block we never asked for");
                }
                c.downloaded += data.len() as u64;
                assert_eq!(c.peer.downloaded(), c.downloaded);
                let addr = c.addr;
                self.take_block(req, data, addr);
            }
        }
        // The worker's check after every message: answers past the backlog cut the peer off.
        match self.conns[k].as_ref() {
            Some(c) if c.out.len() > self.rules.max_send_backlog => Err(Reason::SendBacklog),
            _ => Ok(()),
        }
    }

    /// A block we asked for goes into its part; the piece is done when the part is.
    fn take_block(&mut self, req: BlockRequest, data: &[u8], from: IpAddr) {
        let Some(p) = self.parts.get_mut(&req.index) else {
            // Finished meanwhile (or verified elsewhere).
            return;
        };
        match p.take(req.begin, data, from) {
            Ok(Taken::Complete) => self.piece_done(req.index),
            Ok(Taken::Stored | Taken::Duplicate) => {}
            Err(e) => panic!("an accepted block does not fit its part: {e}"),
        }
    }

    /// Piece `i` is verified: every peer hears of it and our interest follows; a complete
    /// torrent parts with seeds and stops asking.
    fn piece_done(&mut self, i: u32) {
        self.parts.remove(&i);
        self.t.pieces.begin_write(i);
        if !self.t.pieces.verified.set(i) {
            return;
        }
        let n = self.t.n();
        let complete = self.t.pieces.verified.is_full();
        for k in self.live() {
            let c = self.conns[k].as_mut().expect("a live peer");
            if !c.peer.peer_has(i) {
                Message::Have(i).encode(&mut c.out);
            }
            c.peer.we_got(i);
            c.peer.update_interest(self.t.view(), &mut c.out);
            if complete && c.peer.peer_has_count() == n {
                self.close(k, Reason::BothSeeds);
            }
        }
        if complete {
            self.parts.clear();
            for k in self.live() {
                let c = self.conns[k].as_mut().expect("a live peer");
                let asked = c.peer.cancel_all(&mut c.out);
                c.late.extend(asked);
                let _ = c.peer.take_dropped();
                c.peer.update_interest(self.t.view(), &mut c.out);
            }
        }
    }

    /// Requests the peer gave back (a choke, a reject, a stall) are free for others.
    fn give_back(&mut self, k: usize) {
        let Some(c) = self.conns[k].as_mut() else {
            return;
        };
        for r in c.peer.take_dropped() {
            if let Some(p) = self.parts.get_mut(&r.index) {
                p.unrequest(r.begin / BLOCK_SIZE);
            }
        }
    }

    /// The worker asks the peer for blocks, its pipeline full: of parts under way first, then
    /// of a piece the picker claims.
    fn fill_requests(&mut self, k: usize) {
        let now = self.now;
        let Some(c) = self.conns[k].as_mut() else {
            return;
        };
        let wants = std::mem::take(&mut c.wants_blocks);
        let view = self.t.view();
        if !view.fetching || !c.peer.am_interested() {
            return;
        }
        if c.peer.peer_choking() && c.peer.allowed_fast_in().is_empty() {
            return;
        }
        let _ = wants;
        let target = c.peer.pipeline(self.rules.max_reqq);
        assert!(target >= 1 && target <= self.rules.max_reqq);
        // More may be in flight than the pipeline holds now (it shrinks when the peer lowers its
        // `reqq` or snubs us): then nothing more is asked.
        let before = c.peer.asked().len();
        while c.peer.asked().len() < target {
            let open = self
                .parts
                .iter_mut()
                .find(|(i, p)| c.peer.may_ask(**i) && p.has_missing())
                .and_then(|(_, p)| p.next_missing().map(|b| p.block(b)));
            let req = match open {
                Some(r) => r,
                None => {
                    self.rand ^= self.rand << 13;
                    self.rand ^= self.rand >> 7;
                    self.rand ^= self.rand << 17;
                    let strategy = Strategy::for_progress(self.t.pieces.verified.count(), 4);
                    let want = Want::everything(self.t.layout.num_pieces);
                    let Some(i) =
                        picker::claim(&self.t.pieces, c.peer.offer(), strategy, self.rand, &want)
                    else {
                        break;
                    };
                    assert!(c.peer.may_ask(i), "claimed piece {i} the peer cannot give");
                    assert!(!self.t.pieces.verified.get(i), "claimed verified piece {i}");
                    assert!(!self.parts.contains_key(&i), "claimed piece {i} twice");
                    let mut p = Part::new(i, self.t.layout.piece_size(i) as u32, false);
                    let b = p.next_missing().expect("a new part misses blocks");
                    let r = p.block(b);
                    self.parts.insert(i, p);
                    r
                }
            };
            c.peer.ask(req, now, &mut c.out);
        }
        assert!(c.peer.asked().len() <= target.max(before));
    }

    /// Time passes: the machine's deadlines (idle, stall, keep-alive), the rate sample, and
    /// the worker's send deadline.
    fn tick(&mut self, u: &mut Unstructured) -> Result<()> {
        let step = *u.choose(&[
            0u64, 50, 1000, 5000, 11_000, 21_000, 31_000, 61_000, 121_000,
        ])?;
        self.now += Duration::from_millis(step);
        let now = self.now;
        for k in self.live() {
            let c = self.conns[k].as_mut().expect("a live peer");
            if step >= 1000 {
                c.peer.sample_rate();
            }
            let asked_before: Vec<BlockRequest> = c.peer.asked().iter().map(|a| a.req).collect();
            let send_idle = c.out.is_empty();
            match c.peer.on_tick(now, &self.rules, send_idle, &mut c.out) {
                Err(r) => {
                    assert_eq!(r, Reason::IdleTimeout);
                    assert!(now.saturating_duration_since(c.last_recv) > self.rules.idle_timeout);
                    self.close(k, r);
                    continue;
                }
                Ok(Tick::Snubbed) => {
                    assert!(c.peer.asked().is_empty() && c.peer.snubbed());
                    c.late.extend(asked_before);
                    while c.late.len() > HARNESS_LATE {
                        c.late.pop_front();
                    }
                }
                Ok(Tick::KeepAlive) => assert!(send_idle),
                Ok(Tick::Nothing) => {}
            }
            // The machine cuts off silence; the worker cuts off a peer that does not read.
            assert!(now.saturating_duration_since(c.last_recv) <= self.rules.idle_timeout);
            if !c.out.is_empty() && now.saturating_duration_since(c.last_drain) > SEND_TIMEOUT {
                self.close(k, Reason::SendStalled);
                continue;
            }
            self.give_back(k);
            self.fill_requests(k);
        }
        Ok(())
    }

    fn choke(&mut self, k: usize) {
        let now = self.now;
        let Some(c) = self.conns[k].as_mut() else {
            return;
        };
        let before: Vec<BlockRequest> = c.peer.requests().iter().map(|q| q.req).collect();
        if c.peer.choke(now, &mut c.out) {
            // Only allowed-fast requests of a fast peer outlive a choke.
            for q in c.peer.requests() {
                assert!(c.peer.fast() && c.allowed_fast.contains(&q.req.index));
                assert!(before.contains(&q.req));
            }
        }
    }

    /// The worker's choking round touches this peer: it takes a free slot if interested, or
    /// gives its slot up.
    fn choking_round(&mut self, k: usize) {
        let now = self.now;
        let unchoked = self
            .conns
            .iter()
            .flatten()
            .filter(|c| !c.peer.am_choking())
            .count();
        let Some(c) = self.conns[k].as_mut() else {
            return;
        };
        c.peer.new_download_round();
        if c.peer.am_choking() {
            if c.peer.peer_interested()
                && unchoked < UPLOAD_SLOTS
                && c.peer.unchoke(now, &mut c.out)
            {
                c.refused_since_unchoke = 0;
            }
        } else {
            self.choke(k);
        }
    }

    /// An upload job takes queued requests: each is a range we can read and serve.
    fn upload_job(&mut self, u: &mut Unstructured, k: usize) -> Result<()> {
        let m = u.int_in_range(0..=8usize)?;
        let c = self.conns[k].as_mut().expect("a live peer");
        let taken: Vec<Queued> = c.peer.take_requests(m).collect();
        for q in taken {
            check_servable(&self.t, &self.rules, q.req);
            c.peer.served(u64::from(q.req.length));
            c.served += u64::from(q.req.length);
        }
        Ok(())
    }

    /// Our socket takes some whole messages of what waits for peer `k`; each must parse.
    fn drain(&mut self, u: &mut Unstructured, k: usize) -> Result<()> {
        let now = self.now;
        let n = self.t.n();
        let c = self.conns[k].as_mut().expect("a live peer");
        let mut pos = 0;
        if c.handshake_queued {
            let hs = Handshake::parse(&c.out[..Handshake::LEN]).expect("our handshake parses");
            assert_eq!(hs.map(|h| h.info_hash), Some(self.t.id));
            pos = Handshake::LEN;
            c.handshake_queued = false;
        }
        let mut m = u.int_in_range(0..=64usize)?;
        while m > 0 {
            match ringseed::wire::parse_message(&c.out[pos..], 1 << 20) {
                Ok(Some((msg, used))) => {
                    match msg {
                        Message::Have(i) | Message::AllowedFast(i) => assert!(i < n),
                        Message::Request(r) => {
                            assert!(r.index < n && r.length >= 1 && r.length <= BLOCK_SIZE);
                            assert!(
                                u64::from(r.begin) + u64::from(r.length)
                                    <= self.t.layout.piece_size(r.index)
                            );
                        }
                        Message::Bitfield(b) => assert_eq!(b.len(), n.div_ceil(8) as usize),
                        Message::Piece { .. } => panic!("a block in the control queue"),
                        _ => {}
                    }
                    pos += used;
                    m -= 1;
                }
                Ok(None) => {
                    assert_eq!(pos, c.out.len(), "a partial message in what we send");
                    break;
                }
                Err(e) => panic!("we sent something that does not parse: {e}"),
            }
        }
        c.out.drain(..pos);
        if pos > 0 {
            c.peer.sent(now);
            c.last_drain = now;
        }
        Ok(())
    }

    /// A piece we lacked is verified through another worker's peers.
    fn verified_elsewhere(&mut self, u: &mut Unstructured) -> Result<()> {
        let n = self.t.n();
        let i = u.int_in_range(0..=n - 1)?;
        if self.t.downloads && !self.t.pieces.verified.get(i) {
            self.t.pieces.claim(i);
            self.piece_done(i);
        }
        Ok(())
    }

    /// We cancel a request in flight (endgame), or all of them (the torrent stops).
    fn cancel(&mut self, u: &mut Unstructured, k: usize) -> Result<()> {
        let c = self.conns[k].as_mut().expect("a live peer");
        let asked: Vec<BlockRequest> = c.peer.asked().iter().map(|a| a.req).collect();
        let gone = if asked.is_empty() || u.ratio(1, 8)? {
            c.peer.cancel_all(&mut c.out)
        } else {
            let r = asked[u.choose_index(asked.len())?];
            assert!(c.peer.cancel(r, &mut c.out));
            vec![r]
        };
        for r in gone {
            c.late.push_back(r);
            if let Some(p) = self.parts.get_mut(&r.index) {
                p.unrequest(r.begin / BLOCK_SIZE);
            }
        }
        while c.late.len() > HARNESS_LATE {
            c.late.pop_front();
        }
        Ok(())
    }

    /// Peer `k` is gone (cut off with `reason`, or it left): its pieces no longer count, its
    /// requests go back to their parts.
    fn close(&mut self, k: usize, _reason: Reason) {
        let Some(mut c) = self.conns[k].take() else {
            return;
        };
        c.peer.forget_pieces(&self.t.pieces);
        assert_eq!(c.peer.peer_has_count(), 0);
        let mut back: Vec<BlockRequest> = c.peer.asked().iter().map(|a| a.req).collect();
        back.extend(c.peer.take_dropped());
        for r in back {
            if let Some(p) = self.parts.get_mut(&r.index) {
                p.unrequest(r.begin / BLOCK_SIZE);
            }
        }
    }

    fn check(&self) {
        let t = &self.t;
        let n = t.n();
        let view = t.view();
        let bound = heap_bound(n, &self.rules);
        for c in self.conns.iter().flatten() {
            let p = &c.peer;
            assert_eq!(p.phase(), Phase::Active);
            // Its queue: whole ranges of verified pieces; only allowed-fast ones while choked.
            assert!(p.requests().len() <= self.rules.max_reqq);
            for q in p.requests() {
                check_servable(t, &self.rules, q.req);
                if p.am_choking() {
                    assert!(p.fast() && c.allowed_fast.contains(&q.req.index));
                }
            }
            // Its pieces as announced.
            let has = (0..n).filter(|&i| p.peer_has(i)).count() as u32;
            assert_eq!(has, p.peer_has_count(), "count of its pieces");
            for i in n..n.div_ceil(8) * 8 + 8 {
                assert!(!p.peer_has(i), "a piece past the end: {i}");
            }
            let wants = (0..n).any(|i| p.peer_has(i) && !t.pieces.verified.get(i));
            assert_eq!(p.wanted(), wants, "whether it has a piece we lack");
            assert_eq!(p.am_interested(), view.fetching && wants, "our interest");
            if view.fetching || !p.asked().is_empty() {
                assert!(p.asked().len() <= self.rules.max_reqq);
            }
            for a in p.asked() {
                assert!(a.req.index < n && a.req.length <= BLOCK_SIZE);
            }
            // Counters.
            assert_eq!(p.uploaded, c.served);
            assert!(p.uploaded_since_unchoke <= p.uploaded);
            assert_eq!(p.downloaded(), c.downloaded);
            // Memory.
            assert!(
                p.heap_bytes() <= bound,
                "{} heap bytes, bound {bound}",
                p.heap_bytes()
            );
            assert!(c.pending.len() < p.max_message_len(n, &self.rules) as usize + 4);
        }
        for i in 0..n {
            let holders = self
                .conns
                .iter()
                .flatten()
                .filter(|c| c.peer.peer_has(i))
                .count();
            assert_eq!(
                usize::from(t.pieces.availability(i)),
                holders,
                "availability of piece {i}"
            );
        }
    }

    /// Everyone leaves: nothing stays counted.
    fn finish(&mut self) {
        for k in 0..self.conns.len() {
            self.close(k, Reason::PeerClosed);
        }
        assert_eq!(self.t.pieces.seeds(), 0);
        for i in 0..self.t.n() {
            assert_eq!(
                self.t.pieces.availability(i),
                0,
                "piece {i} still counted after every peer left"
            );
        }
    }
}

/// A request we may serve: a whole range of a verified piece within the torrent.
fn check_servable(t: &Torrent, rules: &Rules, r: BlockRequest) {
    assert!(r.index < t.n(), "request past the last piece: {r:?}");
    assert!(
        t.pieces.verified.get(r.index),
        "request for a piece we lack: {r:?}"
    );
    assert!(r.length >= 1 && r.length <= rules.max_request_len, "{r:?}");
    assert!(
        u64::from(r.begin) + u64::from(r.length) <= t.layout.piece_size(r.index),
        "request past the end of its piece: {r:?}"
    );
}

/// Whether the machine must count `msg` against the peer's noise budget (a subset of what it
/// counts: metadata requests past the answers allowed are left out).
fn changes_nothing(msg: &Message<'_>, c: &Conn, rules: &Rules) -> bool {
    let p = &c.peer;
    match *msg {
        Message::KeepAlive | Message::Port(_) | Message::Unknown { .. } | Message::Suggest(_) => {
            true
        }
        Message::Interested => p.peer_interested(),
        Message::NotInterested => !p.peer_interested(),
        Message::Choke => p.peer_choking(),
        Message::Unchoke => !p.peer_choking(),
        Message::Have(i) => p.peer_has(i),
        Message::Bitfield(_) | Message::HaveAll | Message::HaveNone => c.announced,
        Message::Cancel(r) => !p.requests().iter().any(|q| q.req == r),
        Message::Extended { id: 0, .. } => c.ext_seen,
        Message::Extended {
            id: ringseed::wire::pex::LOCAL_ID,
            ..
        } => true,
        // Anything but a request of a peer that named `ut_metadata` (requests past the
        // answers allowed are noise too; the harness leaves them out).
        Message::Extended {
            id: metadata::LOCAL_ID,
            payload,
        } => {
            p.ext()
                .and_then(|e| e.id_of(metadata::EXTENSION_NAME))
                .is_none()
                || !matches!(
                    metadata::MetadataMessage::parse(payload),
                    Ok(metadata::MetadataMessage::Request(_))
                )
        }
        Message::Extended { id, .. } => {
            id != 0
                && id != metadata::LOCAL_ID
                && id != ringseed::wire::pex::LOCAL_ID
                && !(rules.speed && id == ringseed::speed::peer::LOCAL_ID)
        }
        _ => false,
    }
}

/// The most heap one peer's state may hold: a function of the rules and the torrent only.
/// Growable collections may hold up to twice their longest length (plus a small minimum).
fn heap_bound(n: u32, rules: &Rules) -> usize {
    use std::mem::size_of;
    let grown = |len: usize, item: usize| 2 * (len + 8) * item;
    let req = size_of::<BlockRequest>();
    // The extension handshake: at most its bytes in names (each byte at worst a 3-byte
    // replacement character), 512 entries.
    let ext = 3 * MAX_HANDSHAKE_BYTES + grown(512, size_of::<(String, u8)>()) + 512 * 8 + 128 * 3;
    grown(rules.max_reqq, size_of::<Queued>())
        + grown(rules.allowed_fast, 4)
        + grown(64, 4)
        + grown(n.div_ceil(8) as usize, 1)
        + ext
        + grown(rules.max_reqq, size_of::<Asked>())
        + grown(1024, req)
        + grown(rules.max_reqq + 1024, req)
}
