//! One bench worker: an io_uring loop driving its share of the synthetic leechers.
//!
//! Each leecher is a small state machine (connect → handshake → interested → unchoked →
//! requesting) in a slab indexed by the `user_data` of its operations, as in the engine's
//! worker. Slots are never reused during a run, and the slab is dropped only after every
//! operation has completed, so the kernel never writes into freed memory.
//!
//! Block data is counted where it lies in the receive buffer; only the blocks of sampled pieces
//! are copied, into that piece's assembly buffer, and hashed when the piece is complete.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use io_uring::{IoUring, squeue, types};
use socket2::{Domain, SockAddr, Socket, Type};

use super::{ErrorKind, Pattern, Stop};
use crate::uring::{Op, UserData, ops};
use crate::wire::{self, BlockRequest, Handshake, Message};

// user_data: `crate::uring::UserData` with sequence 0. Slots are never reused within a run, so
// no sequence number is needed to tell an old operation from a new one.

const TICK_EVERY: Duration = Duration::from_millis(50);
/// Connects in flight at once per worker: a burst of 10 000 SYNs overflows the seeder's accept
/// backlog and turns into one-second SYN retransmissions.
const MAX_CONNECTING: usize = 128;
/// No assembly: the block is counted, not kept.
const NO_ASSEMBLY: u32 = u32::MAX;

/// One torrent the swarm downloads.
pub(crate) struct TorrentPlan {
    pub info_hash: [u8; 20],
    pub piece_length: u64,
    pub total_length: u64,
    pub num_pieces: u32,
    pub hashes: Vec<[u8; 20]>,
    /// Rarest-first: how many leechers hold each piece (have requested all of it) now. The
    /// swarm's own progress is the availability that makes rarest-first differ from random.
    pub swarm_have: Vec<AtomicU32>,
}

impl TorrentPlan {
    pub fn new(info: &crate::metainfo::Info, rarest: bool) -> TorrentPlan {
        let layout = &info.layout;
        TorrentPlan {
            info_hash: info.hash.wire_id(),
            piece_length: layout.piece_length,
            total_length: layout.total_length,
            num_pieces: layout.num_pieces,
            hashes: info.pieces.clone(),
            swarm_have: if rarest {
                (0..layout.num_pieces).map(|_| AtomicU32::new(0)).collect()
            } else {
                Vec::new()
            },
        }
    }

    fn piece_size(&self, index: u32) -> u64 {
        let start = u64::from(index) * self.piece_length;
        self.total_length
            .saturating_sub(start)
            .min(self.piece_length)
    }
}

/// What every worker of one run reads; built once by [`super::run`].
pub(crate) struct Plan {
    pub addr: SocketAddr,
    /// Leecher `i` downloads torrent `i % torrents.len()`.
    pub torrents: Vec<TorrentPlan>,
    pub peers: usize,
    pub reqq: usize,
    pub block_len: u32,
    pub pattern: Pattern,
    /// Verify one piece in this many (1 = every piece).
    pub verify_every: u64,
    pub stop: Stop,
    pub started: Instant,
    pub timeout: Duration,
    pub drain_timeout: Duration,
    pub recv_size: usize,
    /// Bind leecher `i` to source address `source_base + i`.
    pub source_base: Option<std::net::Ipv4Addr>,
    /// Leechers only connect and hold their connection: no interest, no requests.
    pub idle: bool,
    /// Bytes reserved by requests so far (byte-budget runs).
    pub requested: AtomicU64,
    /// Set when no more requests may be sent (deadline or budget reached).
    pub requests_over: AtomicBool,
    /// `--pay PRICE --budget N`: leechers bid and pay (see `speed::payer`).
    pub pay: Option<(u128, u128)>,
    /// With `pay`: leechers numbered below this pay, the others are free.
    pub paying_peers: usize,
    /// Leechers speak MSE/PE with RC4 (`--encrypt`).
    pub encrypt: bool,
    /// With `--rpc`: the on-chain channels paying leechers pay from.
    pub channels: Option<std::sync::Arc<super::chain_pay::PaidChannels>>,
}

impl Plan {
    pub fn max_message(&self) -> u32 {
        let pieces = self
            .torrents
            .iter()
            .map(|t| t.num_pieces)
            .max()
            .unwrap_or(0);
        max_message(self.block_len, pieces)
    }
}

/// Largest message a seeder may send us: a block, a bitfield, or 32 KiB for anything else (an
/// extension handshake is a few hundred bytes).
pub(crate) fn max_message(block_len: u32, num_pieces: u32) -> u32 {
    (block_len + 9)
        .max(num_pieces.div_ceil(8) + 1)
        .max(32 << 10)
}

/// Counters one worker updates as it goes (Relaxed: statistics read once a second).
#[derive(Debug, Default)]
pub(crate) struct LiveStats {
    pub bytes: AtomicU64,
    pub blocks: AtomicU64,
    pub held: AtomicI64,
    pub connected: AtomicU64,
    pub errors: AtomicU64,
}

/// What the paying leechers of a run did, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaymentTotals {
    pub payers: u64,
    /// Payers whose bid the seeder confirmed (its first receipt arrived).
    pub confirmed: u64,
    pub vouchers: u64,
    pub refusals: u64,
    /// Cumulative amounts signed, and acknowledged by the seeder as durable.
    pub signed: u128,
    pub acked: u128,
}

impl PaymentTotals {
    pub fn add_payer(&mut self, p: &crate::speed::payer::Payer) {
        self.payers += 1;
        self.confirmed += u64::from(p.confirmed());
        self.vouchers += p.vouchers();
        self.refusals += p.refusals();
        self.signed = self.signed.saturating_add(p.signed());
        self.acked = self.acked.saturating_add(p.acked());
    }

    pub fn merge(&mut self, o: &PaymentTotals) {
        self.payers += o.payers;
        self.confirmed += o.confirmed;
        self.vouchers += o.vouchers;
        self.refusals += o.refusals;
        self.signed = self.signed.saturating_add(o.signed);
        self.acked = self.acked.saturating_add(o.acked);
    }
}

/// What a worker hands back when it ends.
pub(crate) struct WorkerResult {
    pub bytes: u64,
    /// Payload bytes per torrent of the plan.
    pub bytes_by_torrent: Vec<u64>,
    pub blocks: u64,
    pub connected: u64,
    pub held_at_end: u64,
    pub errors: [u64; ErrorKind::ALL.len()],
    pub pieces_verified: u64,
    pub bad_pieces: Vec<u32>,
    pub latency_us: Histogram<u64>,
    /// When the first and the last block arrived.
    pub first_block: Option<Instant>,
    pub last_block: Option<Instant>,
    /// CPU time of the worker's thread over its whole life.
    pub cpu_seconds: Option<f64>,
    /// With `--pay`: what the leechers' payers did.
    pub payment: PaymentTotals,
    /// Requests still unanswered when the run ended (the drain timed out).
    pub unanswered: u64,
    /// Requests the seeder rejected (BEP 6); each was asked again, and its latency counts
    /// from that request.
    pub rejected: u64,
    /// With `pay`: the paying leechers ([`PAYING`]) and the free ones ([`FREE`]) apart.
    pub groups: [GroupTotals; 2],
}

/// Index of the paying leechers in [`WorkerResult::groups`].
pub(crate) const PAYING: usize = 0;
/// Index of the free leechers in [`WorkerResult::groups`].
pub(crate) const FREE: usize = 1;

/// What one group of leechers (paying or free) of one worker got; filled only in `--pay` runs,
/// so a run without payers records nothing more per block than before.
pub(crate) struct GroupTotals {
    pub leechers: u64,
    pub bytes: u64,
    /// For each leecher that got a block: its first block, from the run's start.
    pub first_block: Vec<Duration>,
    /// Payers whose bid the seeder confirmed (the first receipt answering it arrived).
    pub confirmed: u64,
    /// For each confirmed payer that got a block after its confirmation: confirmation → that
    /// block.
    pub confirm_to_first_block: Vec<Duration>,
    pub latency_us: Histogram<u64>,
}

impl GroupTotals {
    pub fn new() -> GroupTotals {
        GroupTotals {
            leechers: 0,
            bytes: 0,
            first_block: Vec::new(),
            confirmed: 0,
            confirm_to_first_block: Vec::new(),
            latency_us: new_histogram(),
        }
    }

    pub fn merge(&mut self, o: &GroupTotals) {
        self.leechers += o.leechers;
        self.bytes += o.bytes;
        self.first_block.extend_from_slice(&o.first_block);
        self.confirmed += o.confirmed;
        self.confirm_to_first_block
            .extend_from_slice(&o.confirm_to_first_block);
        let _ = self.latency_us.add(&o.latency_us);
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Connecting,
    Handshake,
    Active,
    Done,
}

struct Outstanding {
    req: BlockRequest,
    at: Instant,
    assembly: u32,
}

/// A sampled piece being put together for its hash check.
struct Assembly {
    index: u32,
    buf: Vec<u8>,
    blocks_left: u32,
}

/// The piece a leecher is currently requesting, block by block.
struct Cursor {
    index: u32,
    begin: u32,
    size: u32,
    assembly: u32,
}

struct Leecher {
    /// Global peer number (0 … peers-1): spreads start pieces and samples.
    id: usize,
    /// Index of its torrent in the plan.
    torrent: usize,
    /// The pieces the seeder announced (bitfield, have, have-all); `None` until it says, which
    /// counts as everything (BEP 3 lets a seeder with no pieces skip its bitfield, but a
    /// seeder is expected to have them).
    seeder_has: Option<Vec<u8>>,
    /// Rarest-first: pieces this leecher has requested in full, and how many.
    have: Vec<u8>,
    have_count: u32,
    fd: Option<OwnedFd>,
    addr: Box<SockAddr>,
    phase: Phase,
    ops: u32,
    recv: Vec<u8>,
    start: usize,
    end: usize,
    recv_posted: bool,
    /// Bytes handed to the kernel (untouched until the send completes) and how many went out.
    out: Vec<u8>,
    out_sent: usize,
    sending: bool,
    /// Messages waiting for the next send.
    pending: Vec<u8>,
    unchoked: bool,
    /// The request queue the seeder advertised (BEP 10 `reqq`, from its latest extension
    /// handshake): outstanding requests stay within it and the run's `reqq`, as libtorrent's
    /// do.
    seeder_reqq: Option<usize>,
    /// The seeder speaks BEP 6: it rejects what a choke cancels, instead of dropping it.
    seeder_fast: bool,
    outstanding: VecDeque<Outstanding>,
    /// Rejected requests, asked for again before new ones.
    retry: VecDeque<(BlockRequest, u32)>,
    cursor: Option<Cursor>,
    next_piece: u32,
    pieces_started: u64,
    rng: u64,
    assemblies: Vec<Option<Assembly>>,
    since: Instant,
    last_progress: Instant,
    /// `--pay`: bids and pays through `rs_speed`.
    payer: Option<Box<crate::speed::payer::WirePayer>>,
    /// Counted with the paying group (it had a payer; `payer` is taken when it ends).
    paying: bool,
    first_block: Option<Instant>,
    /// `--encrypt`: the MSE handshake, then RC4.
    crypt: Option<super::crypt::LeecherCrypt>,
    /// Bytes at the front of `pending` already in wire form (written by the MSE handshake).
    pending_ready: usize,
    /// When the seeder's receipt confirmed this payer's bid.
    confirmed_at: Option<Instant>,
    /// From `confirmed_at` to the first block after it.
    confirm_to_first_block: Option<Duration>,
}

impl Leecher {
    fn new(id: usize, plan: &Plan, now: Instant) -> Leecher {
        let torrents = plan.torrents.len().max(1);
        let torrent = id % torrents;
        let n = plan
            .torrents
            .get(torrent)
            .map_or(1, |t| u64::from(t.num_pieces.max(1)));
        // Leechers of one torrent start spread evenly over it.
        let (nth, of) = (id / torrents, plan.peers.div_ceil(torrents).max(1));
        let payer = plan
            .pay
            .filter(|_| id < plan.paying_peers)
            .and_then(|(price, budget)| match &plan.channels {
                Some(c) => c.wire_payer(id, price, budget),
                None => crate::speed::payer::WirePayer::random(price, budget),
            })
            .map(Box::new);
        Leecher {
            id,
            torrent,
            seeder_has: None,
            have: Vec::new(),
            have_count: 0,
            fd: None,
            addr: Box::new(SockAddr::from(plan.addr)),
            phase: Phase::Waiting,
            ops: 0,
            recv: Vec::new(),
            start: 0,
            end: 0,
            recv_posted: false,
            out: Vec::new(),
            out_sent: 0,
            sending: false,
            pending: Vec::new(),
            unchoked: false,
            seeder_fast: false,
            outstanding: VecDeque::new(),
            retry: VecDeque::new(),
            cursor: None,
            next_piece: (nth as u64 * n / of as u64) as u32,
            pieces_started: 0,
            rng: (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            assemblies: Vec::new(),
            since: now,
            last_progress: now,
            paying: payer.is_some(),
            seeder_reqq: None,
            payer,
            first_block: None,
            confirmed_at: None,
            confirm_to_first_block: None,
            crypt: None,
            pending_ready: 0,
        }
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn seeder_has(&self, index: u32) -> bool {
        self.seeder_has.as_ref().is_none_or(|b| bit(b, index))
    }

    /// Rarest-first: among the pieces the seeder has and this leecher has not, the one fewest
    /// leechers of the swarm hold, scanning from a random piece so ties spread. When the leecher
    /// holds everything the seeder has, it starts over (drops its pieces), so a timed run goes on.
    fn pick_rarest(&mut self, t: &TorrentPlan) -> Option<u32> {
        let n = t.num_pieces;
        if n == 0 {
            return None;
        }
        if self.have.is_empty() {
            self.have = vec![0; n.div_ceil(8) as usize];
        }
        for _ in 0..2 {
            let start = (self.random() % u64::from(n)) as u32;
            let mut best: Option<(u32, u32)> = None;
            for k in 0..n {
                let i = (start + k) % n;
                if bit(&self.have, i) || !self.seeder_has(i) {
                    continue;
                }
                let holders = t.swarm_have.get(i as usize).map_or(0, |a| {
                    // Relaxed: availability is a hint for choosing, not a synchronisation.
                    a.load(Ordering::Relaxed)
                });
                if best.is_none_or(|(_, b)| holders < b) {
                    best = Some((i, holders));
                    if holders == 0 {
                        break;
                    }
                }
            }
            if let Some((i, _)) = best {
                set_bit(&mut self.have, i);
                self.have_count += 1;
                if let Some(a) = t.swarm_have.get(i as usize) {
                    a.fetch_add(1, Ordering::Relaxed);
                }
                return Some(i);
            }
            if self.have_count == 0 {
                // The seeder has nothing this leecher could ask for.
                return None;
            }
            self.drop_pieces(t);
        }
        None
    }

    /// Rarest-first: gives up every piece held, for the swarm's counts and for a new round.
    fn drop_pieces(&mut self, t: &TorrentPlan) {
        if self.have_count == 0 {
            return;
        }
        for i in 0..t.num_pieces {
            if bit(&self.have, i)
                && let Some(a) = t.swarm_have.get(i as usize)
            {
                a.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.have.fill(0);
        self.have_count = 0;
    }

    /// The next block to ask for, opening a new piece when the current one is fully requested;
    /// `None` when the seeder has nothing to ask for.
    fn next_block(&mut self, plan: &Plan) -> Option<(BlockRequest, u32)> {
        let t = plan.torrents.get(self.torrent)?;
        if self.cursor.as_ref().is_none_or(|c| c.begin >= c.size) {
            let n = t.num_pieces.max(1);
            let index = match plan.pattern {
                Pattern::Sequential => {
                    let i = self.next_piece;
                    self.next_piece = (i + 1) % n;
                    i
                }
                Pattern::Random | Pattern::ManyTorrents => (self.random() % u64::from(n)) as u32,
                Pattern::RarestFirst => self.pick_rarest(t)?,
            };
            let size = t.piece_size(index) as u32;
            let sampled = (self.pieces_started + self.id as u64).is_multiple_of(plan.verify_every);
            self.pieces_started += 1;
            let assembly = if sampled {
                let a = Assembly {
                    index,
                    buf: vec![0; size as usize],
                    blocks_left: size.div_ceil(plan.block_len),
                };
                match self.assemblies.iter().position(Option::is_none) {
                    Some(i) => {
                        self.assemblies[i] = Some(a);
                        i as u32
                    }
                    None => {
                        self.assemblies.push(Some(a));
                        (self.assemblies.len() - 1) as u32
                    }
                }
            } else {
                NO_ASSEMBLY
            };
            self.cursor = Some(Cursor {
                index,
                begin: 0,
                size,
                assembly,
            });
        }
        let Some(c) = self.cursor.as_mut() else {
            unreachable!("a cursor was just opened")
        };
        let length = (c.size - c.begin).min(plan.block_len);
        let req = BlockRequest {
            index: c.index,
            begin: c.begin,
            length,
        };
        c.begin += length;
        Some((req, c.assembly))
    }
}

fn bit(bits: &[u8], i: u32) -> bool {
    bits.get((i / 8) as usize)
        .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
}

fn set_bit(bits: &mut [u8], i: u32) {
    if let Some(b) = bits.get_mut((i / 8) as usize) {
        *b |= 0x80 >> (i % 8);
    }
}

/// What a parsed message asks the loop to do, detached from the receive buffer.
enum Event {
    Unchoke,
    Choke,
    Piece {
        index: u32,
        begin: u32,
        at: usize,
        len: usize,
    },
    Reject(BlockRequest),
    Have(u32),
    /// The seeder's bitfield, at this place in the receive buffer.
    Bitfield {
        at: usize,
        len: usize,
    },
    HaveAll,
    HaveNone,
    Extended(u8, Vec<u8>),
    Other,
}

pub(crate) struct Worker {
    plan: Arc<Plan>,
    live: Arc<LiveStats>,
    ring: IoUring,
    tick_ts: Box<types::Timespec>,
    conns: Vec<Leecher>,
    /// Slots not yet connecting, in order.
    waiting: VecDeque<usize>,
    connecting: usize,
    result: WorkerResult,
    now: Instant,
    last_timeouts: Instant,
    /// All leechers are being shut down; the loop ends once no operation is in flight.
    closing_all: bool,
    ops: usize,
    drain_started: Option<Instant>,
}

impl Worker {
    /// A worker for the leechers numbered `ids`.
    pub(crate) fn new(
        plan: Arc<Plan>,
        live: Arc<LiveStats>,
        ids: impl Iterator<Item = usize>,
    ) -> std::io::Result<Worker> {
        let ring = crate::uring::build_ring(4096)?;
        let now = Instant::now();
        let plan_torrents = plan.torrents.len();
        let conns: Vec<Leecher> = ids.map(|id| Leecher::new(id, &plan, now)).collect();
        Ok(Worker {
            waiting: (0..conns.len()).collect(),
            conns,
            plan,
            live,
            ring,
            tick_ts: Box::new(types::Timespec::from(TICK_EVERY)),
            result: WorkerResult {
                bytes: 0,
                bytes_by_torrent: vec![0; plan_torrents],
                blocks: 0,
                connected: 0,
                held_at_end: 0,
                errors: [0; ErrorKind::ALL.len()],
                pieces_verified: 0,
                bad_pieces: Vec::new(),
                latency_us: new_histogram(),
                first_block: None,
                last_block: None,
                cpu_seconds: None,
                unanswered: 0,
                rejected: 0,
                payment: PaymentTotals::default(),
                groups: [GroupTotals::new(), GroupTotals::new()],
            },
            now,
            last_timeouts: now,
            closing_all: false,
            connecting: 0,
            ops: 0,
            drain_started: None,
        })
    }

    pub(crate) fn run(mut self) -> WorkerResult {
        self.start_connects();
        self.post_tick();
        let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(1024);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                // A ring that refuses to submit cannot finish its operations; leaking the slab
                // keeps any buffer the kernel may still hold alive.
                Err(_) => {
                    std::mem::forget(std::mem::take(&mut self.conns));
                    break;
                }
            }
            self.now = Instant::now();
            cqes.clear();
            cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            for &(user_data, res) in &cqes {
                self.complete(user_data, res);
            }
            if self.closing_all && self.ops == 0 {
                break;
            }
        }
        self.result.cpu_seconds = super::procstat::this_thread_cpu_seconds();
        self.collect_groups();
        self.result
    }

    /// With `pay`: each leecher's first-block times into its group's totals.
    fn collect_groups(&mut self) {
        if self.plan.pay.is_none() {
            return;
        }
        let started = self.plan.started;
        for c in &self.conns {
            let g = &mut self.result.groups[if c.paying { PAYING } else { FREE }];
            g.leechers += 1;
            if let Some(t) = c.first_block {
                g.first_block.push(t.saturating_duration_since(started));
            }
            g.confirmed += u64::from(c.confirmed_at.is_some());
            g.confirm_to_first_block.extend(c.confirm_to_first_block);
        }
    }

    /// Queues a submission, flushing the queue to the kernel when it is full.
    ///
    /// # Safety
    /// Every buffer `entry` points to must stay valid and unmoved until its completion arrives.
    unsafe fn push(&mut self, entry: squeue::Entry) {
        self.ops += 1;
        // SAFETY: the caller's guarantee, passed on.
        unsafe { crate::uring::push(&mut self.ring, &entry) }
    }

    fn post_tick(&mut self) {
        let e = ops::timeout(&self.tick_ts, UserData::new(Op::Tick, 0, 0));
        // SAFETY: tick_ts is a Box owned by the worker, alive for the whole loop.
        unsafe { self.push(e) };
    }

    fn complete(&mut self, user_data: u64, res: i32) {
        self.ops = self.ops.saturating_sub(1);
        let Some(UserData { op, slot, .. }) = UserData::decode(user_data) else {
            return;
        };
        if op == Op::Cancel {
            return;
        }
        if op == Op::Tick {
            self.tick();
            if !self.closing_all {
                self.post_tick();
            }
            return;
        }
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        c.ops = c.ops.saturating_sub(1);
        if c.phase == Phase::Done {
            if op == Op::Connect {
                self.connect_finished();
            }
            return;
        }
        match op {
            Op::Connect => {
                self.connect_finished();
                self.on_connect(slot, res);
            }
            Op::Recv => self.on_recv(slot, res),
            Op::Send => self.on_send(slot, res),
            _ => {}
        }
    }

    fn connect_finished(&mut self) {
        self.connecting = self.connecting.saturating_sub(1);
        self.start_connects();
    }

    fn start_connects(&mut self) {
        while self.connecting < MAX_CONNECTING && !self.closing_all {
            let Some(slot) = self.waiting.pop_front() else {
                return;
            };
            let now = self.now;
            let sock = match Socket::new(
                Domain::for_address(self.plan.addr),
                Type::STREAM.cloexec(),
                None,
            ) {
                Ok(s) => s,
                Err(_) => {
                    self.fail(slot, ErrorKind::ConnectFailed);
                    continue;
                }
            };
            let _ = sock.set_tcp_nodelay(true);
            if let Some(base) = self.plan.source_base {
                let id = self.conns[slot].id as u32;
                let src = std::net::Ipv4Addr::from(u32::from(base).wrapping_add(id));
                if sock.bind(&SocketAddr::from((src, 0)).into()).is_err() {
                    self.fail(slot, ErrorKind::ConnectFailed);
                    continue;
                }
            }
            let fd: OwnedFd = sock.into();
            let c = &mut self.conns[slot];
            let raw = fd.as_raw_fd();
            c.fd = Some(fd);
            c.phase = Phase::Connecting;
            c.since = now;
            c.ops += 1;
            let e = ops::connect(raw, &c.addr, UserData::new(Op::Connect, 0, slot));
            self.connecting += 1;
            // SAFETY: the address is boxed in the leecher, which lives until the worker ends,
            // after every operation has completed.
            unsafe { self.push(e) };
        }
    }

    fn on_connect(&mut self, slot: usize, res: i32) {
        if res < 0 {
            let kind = match -res {
                libc::ECONNREFUSED => ErrorKind::ConnectRefused,
                libc::ETIMEDOUT => ErrorKind::Timeout,
                _ => ErrorKind::ConnectFailed,
            };
            self.fail(slot, kind);
            return;
        }
        let plan = self.plan.clone();
        let c = &mut self.conns[slot];
        c.phase = Phase::Handshake;
        c.since = self.now;
        c.last_progress = self.now;
        // An idle leecher only ever reads a handshake, a bitfield and keep-alives.
        c.recv = vec![0; if plan.idle { 64 << 10 } else { plan.recv_size }];
        let peer_id = crate::engine::new_peer_id();
        let Some(t) = plan.torrents.get(c.torrent) else {
            self.fail(slot, ErrorKind::Protocol);
            return;
        };
        // The handshake alone: other messages wait for the seeder's handshake (aria2 closes a
        // connection whose first packet holds more than the handshake).
        let hs = Handshake::new(t.info_hash, peer_id).encode();
        if plan.encrypt {
            // Ya and PadA first; our handshake rides in the MSE handshake's initial payload.
            let crypt = super::crypt::LeecherCrypt::start(t.info_hash, &hs, &mut c.pending);
            c.crypt = Some(crypt);
            c.pending_ready = c.pending.len();
        } else {
            c.pending.extend_from_slice(&hs);
        }
        self.pump_send(slot);
        self.post_recv(slot);
    }

    fn post_recv(&mut self, slot: usize) {
        let max = self.plan.max_message() as usize + 4;
        let c = &mut self.conns[slot];
        if c.recv_posted || c.phase == Phase::Done {
            return;
        }
        let Some(fd) = &c.fd else { return };
        let raw = fd.as_raw_fd();
        if c.start == c.end {
            c.start = 0;
            c.end = 0;
        } else if c.recv.len() - c.start < max {
            // Too little room left behind a partial message for the largest one: move it to the
            // front (at most one block's worth of bytes).
            c.recv.copy_within(c.start..c.end, 0);
            c.end -= c.start;
            c.start = 0;
        }
        let e = ops::recv(raw, &mut c.recv[c.end..], UserData::new(Op::Recv, 0, slot));
        c.recv_posted = true;
        c.ops += 1;
        // SAFETY: the receive buffer is neither resized nor freed while recv_posted is set, and
        // leechers outlive every operation (the worker ends only when none is in flight).
        unsafe { self.push(e) };
    }

    fn on_recv(&mut self, slot: usize, res: i32) {
        let c = &mut self.conns[slot];
        c.recv_posted = false;
        if res == 0 || res == -libc::ECONNRESET || res == -libc::EPIPE {
            self.fail(slot, ErrorKind::ClosedBySeeder);
            return;
        }
        if res < 0 {
            self.fail(slot, ErrorKind::Io);
            return;
        }
        let from = c.end;
        c.end += res as usize;
        if let Some(crypt) = c.crypt.as_mut() {
            let handshaking = matches!(crypt, super::crypt::LeecherCrypt::Handshake(_));
            if crypt
                .input(&mut c.recv, from, &mut c.end, &mut c.pending)
                .is_err()
            {
                self.fail(slot, ErrorKind::Protocol);
                return;
            }
            if handshaking {
                c.pending_ready = c.pending.len();
            }
        }
        let before = (self.result.bytes, self.result.blocks);
        if let Err(kind) = self.process_input(slot) {
            self.fail(slot, kind);
            return;
        }
        let live = &self.live;
        live.bytes
            .fetch_add(self.result.bytes - before.0, Ordering::Relaxed);
        live.blocks
            .fetch_add(self.result.blocks - before.1, Ordering::Relaxed);
        self.fill_requests(slot);
        self.pump_send(slot);
        self.post_recv(slot);
    }

    /// Handles every complete message in the receive buffer.
    fn process_input(&mut self, slot: usize) -> Result<(), ErrorKind> {
        let plan = self.plan.clone();
        let max = plan.max_message();
        let now = self.now;
        loop {
            let c = &mut self.conns[slot];
            if c.phase == Phase::Handshake {
                let Some(hs) =
                    Handshake::parse(&c.recv[c.start..c.end]).map_err(|_| ErrorKind::Protocol)?
                else {
                    return Ok(());
                };
                if plan.torrents.get(c.torrent).map(|t| t.info_hash) != Some(hs.info_hash) {
                    return Err(ErrorKind::Protocol);
                }
                c.start += Handshake::LEN;
                c.seeder_fast = hs.supports_fast();
                c.phase = Phase::Active;
                if !plan.idle {
                    if c.payer.is_some() {
                        crate::speed::payer::WirePayer::handshake(&mut c.pending);
                    }
                    Message::Interested.encode(&mut c.pending);
                }
                self.result.connected += 1;
                self.live.connected.fetch_add(1, Ordering::Relaxed);
                self.live.held.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let base = c.start;
            let Some((msg, used)) =
                wire::parse_message(&c.recv[base..c.end], max).map_err(|_| ErrorKind::Protocol)?
            else {
                return Ok(());
            };
            let event = match msg {
                Message::Unchoke => Event::Unchoke,
                Message::Choke => Event::Choke,
                Message::Piece { index, begin, data } => Event::Piece {
                    index,
                    begin,
                    at: base + used - data.len(),
                    len: data.len(),
                },
                Message::Reject(r) => Event::Reject(r),
                Message::Have(i) => Event::Have(i),
                Message::Bitfield(b) => Event::Bitfield {
                    at: base + used - b.len(),
                    len: b.len(),
                },
                Message::HaveAll => Event::HaveAll,
                Message::HaveNone => Event::HaveNone,
                Message::Extended { id, payload } if id == 0 || c.payer.is_some() => {
                    Event::Extended(id, payload.to_vec())
                }
                _ => Event::Other,
            };
            c.start += used;
            match event {
                Event::Unchoke => c.unchoked = true,
                Event::Have(i) => {
                    let n = plan.torrents.get(c.torrent).map_or(0, |t| t.num_pieces);
                    if i >= n {
                        return Err(ErrorKind::Protocol);
                    }
                    let has = c
                        .seeder_has
                        .get_or_insert_with(|| vec![0; n.div_ceil(8) as usize]);
                    set_bit(has, i);
                }
                Event::Bitfield { at, len } => {
                    let n = plan.torrents.get(c.torrent).map_or(0, |t| t.num_pieces);
                    if len != n.div_ceil(8) as usize {
                        return Err(ErrorKind::Protocol);
                    }
                    c.seeder_has = Some(c.recv[at..at + len].to_vec());
                }
                Event::HaveAll => c.seeder_has = None,
                Event::HaveNone => {
                    let n = plan.torrents.get(c.torrent).map_or(0, |t| t.num_pieces);
                    c.seeder_has = Some(vec![0; n.div_ceil(8) as usize]);
                }
                Event::Choke => {
                    c.unchoked = false;
                    // Without the fast extension a choke silently drops every request (BEP 3);
                    // with it, the seeder rejects what it will not serve.
                    if !c.seeder_fast {
                        let dropped: Vec<_> = c
                            .outstanding
                            .drain(..)
                            .map(|o| (o.req, o.assembly))
                            .collect();
                        c.retry.extend(dropped);
                    }
                }
                Event::Reject(r) => {
                    let Some(pos) = c.outstanding.iter().position(|o| o.req == r) else {
                        return Err(ErrorKind::Protocol);
                    };
                    if let Some(o) = c.outstanding.remove(pos) {
                        c.retry.push_back((o.req, o.assembly));
                    }
                    self.result.rejected += 1;
                }
                Event::Piece {
                    index,
                    begin,
                    at,
                    len,
                } => {
                    // The seeder serves in order, so the block is nearly always the oldest.
                    let Some(pos) = c.outstanding.iter().position(|o| {
                        o.req.index == index && o.req.begin == begin && o.req.length as usize == len
                    }) else {
                        return Err(ErrorKind::Protocol);
                    };
                    let Some(o) = c.outstanding.remove(pos) else {
                        return Err(ErrorKind::Protocol);
                    };
                    let us = now.saturating_duration_since(o.at).as_micros() as u64;
                    let _ = self.result.latency_us.record(us.max(1));
                    self.result.bytes += len as u64;
                    if let Some(b) = self.result.bytes_by_torrent.get_mut(c.torrent) {
                        *b += len as u64;
                    }
                    self.result.blocks += 1;
                    if let Some(p) = c.payer.as_mut() {
                        p.on_block(len as u64, &mut c.pending);
                    }
                    if plan.pay.is_some() {
                        let g = &mut self.result.groups[if c.paying { PAYING } else { FREE }];
                        g.bytes += len as u64;
                        let _ = g.latency_us.record(us.max(1));
                        c.first_block.get_or_insert(now);
                        if let Some(at) = c.confirmed_at
                            && c.confirm_to_first_block.is_none()
                        {
                            c.confirm_to_first_block = Some(now.saturating_duration_since(at));
                        }
                    }
                    self.result.last_block = Some(now);
                    self.result.first_block.get_or_insert(now);
                    c.last_progress = now;
                    if o.assembly != NO_ASSEMBLY
                        && let Some(slot_a) = c.assemblies.get_mut(o.assembly as usize)
                        && let Some(a) = slot_a
                    {
                        let b = begin as usize;
                        a.buf[b..b + len].copy_from_slice(&c.recv[at..at + len]);
                        a.blocks_left = a.blocks_left.saturating_sub(1);
                        if a.blocks_left == 0 {
                            let good = plan
                                .torrents
                                .get(c.torrent)
                                .and_then(|t| t.hashes.get(a.index as usize))
                                .is_some_and(|h| *h == crate::hash::sha1(&a.buf));
                            self.result.pieces_verified += 1;
                            if !good {
                                self.result.errors[ErrorKind::BadPiece as usize] += 1;
                                self.live.errors.fetch_add(1, Ordering::Relaxed);
                                self.result.bad_pieces.push(a.index);
                            }
                            *slot_a = None;
                        }
                    }
                }
                Event::Extended(id, payload) => {
                    if id == 0 {
                        let ext = crate::wire::extension::ExtHandshake::parse(&payload).ok();
                        if let Some(q) = ext.and_then(|e| e.reqq).filter(|&q| q > 0) {
                            c.seeder_reqq = Some(q as usize);
                        }
                    }
                    if let Some(p) = c.payer.as_mut() {
                        let was = p.payer().confirmed();
                        p.on_extended(id, &payload, &mut c.pending);
                        // The receipt answering the bid: from here on the seeder counts this
                        // leecher as paying.
                        if !was && p.payer().confirmed() {
                            c.confirmed_at = Some(now);
                        }
                    }
                }
                Event::Other => {}
            }
        }
    }

    /// Keeps `reqq` requests outstanding while unchoked and the run allows more.
    fn fill_requests(&mut self, slot: usize) {
        let plan = self.plan.clone();
        let now = self.now;
        let c = &mut self.conns[slot];
        if !c.unchoked || c.phase != Phase::Active {
            return;
        }
        // The wait for a block starts with the first request out, not at the handshake: a
        // seeder may keep a leecher choked for its first rechoke round (Transmission: 10 s).
        if c.outstanding.is_empty() {
            c.last_progress = now;
        }
        let reqq = c.seeder_reqq.map_or(plan.reqq, |q| q.min(plan.reqq));
        while c.outstanding.len() < reqq {
            let (req, assembly) = match c.retry.pop_front() {
                Some(r) => r,
                None => {
                    if plan.requests_over.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Stop::Bytes(budget) = plan.stop {
                        // Reserve the next block's bytes; peek its length first so a refused
                        // reservation does not advance the cursor.
                        let len = u64::from(plan.block_len);
                        let before = plan.requested.fetch_add(len, Ordering::Relaxed);
                        if before + len > budget {
                            // Relaxed: a stop hint; each worker rechecks its own requests.
                            plan.requests_over.store(true, Ordering::Relaxed);
                            break;
                        }
                        let Some((req, a)) = c.next_block(&plan) else {
                            plan.requested.fetch_sub(len, Ordering::Relaxed);
                            break;
                        };
                        // A short last block of a piece gives back what it did not use.
                        plan.requested
                            .fetch_sub(len - u64::from(req.length), Ordering::Relaxed);
                        (req, a)
                    } else {
                        match c.next_block(&plan) {
                            Some(b) => b,
                            None => break,
                        }
                    }
                }
            };
            Message::Request(req).encode(&mut c.pending);
            c.outstanding.push_back(Outstanding {
                req,
                at: now,
                assembly,
            });
        }
        if c.outstanding.is_empty() {
            c.last_progress = now;
        }
    }

    fn pump_send(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if c.sending || c.pending.is_empty() || c.phase == Phase::Done {
            return;
        }
        let Some(fd) = &c.fd else { return };
        let raw = fd.as_raw_fd();
        std::mem::swap(&mut c.out, &mut c.pending);
        c.pending.clear();
        c.out_sent = 0;
        let ready = std::mem::take(&mut c.pending_ready).min(c.out.len());
        if let Some(crypt) = c.crypt.as_mut() {
            crypt.output(&mut c.out[ready..]);
        }
        self.post_send(slot, raw);
    }

    fn post_send(&mut self, slot: usize, raw: i32) {
        let c = &mut self.conns[slot];
        let e = ops::send(
            raw,
            &c.out[c.out_sent..],
            libc::MSG_NOSIGNAL,
            UserData::new(Op::Send, 0, slot),
        );
        c.sending = true;
        c.ops += 1;
        // SAFETY: `out` is not touched while `sending` is set, and leechers outlive every
        // operation.
        unsafe { self.push(e) };
    }

    fn on_send(&mut self, slot: usize, res: i32) {
        let c = &mut self.conns[slot];
        c.sending = false;
        if res < 0 {
            let kind = if res == -libc::EPIPE || res == -libc::ECONNRESET {
                ErrorKind::ClosedBySeeder
            } else {
                ErrorKind::Io
            };
            self.fail(slot, kind);
            return;
        }
        c.out_sent += res as usize;
        if c.out_sent < c.out.len() {
            if let Some(raw) = c.fd.as_ref().map(AsRawFd::as_raw_fd) {
                self.post_send(slot, raw);
            }
            return;
        }
        c.out.clear();
        self.pump_send(slot);
    }

    /// Ends a leecher with an error of `kind`.
    fn fail(&mut self, slot: usize, kind: ErrorKind) {
        if self.conns[slot].phase == Phase::Done {
            return;
        }
        self.result.errors[kind as usize] += 1;
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        self.shut(slot);
    }

    /// Shuts a leecher's socket so its operations complete; the descriptor closes when the
    /// worker ends.
    fn shut(&mut self, slot: usize) {
        let plan = self.plan.clone();
        let c = &mut self.conns[slot];
        if let Some(t) = plan.torrents.get(c.torrent) {
            c.drop_pieces(t);
        }
        if c.phase == Phase::Active {
            self.live.held.fetch_sub(1, Ordering::Relaxed);
        }
        let was_connecting = c.phase == Phase::Connecting;
        c.phase = Phase::Done;
        if let Some(p) = c.payer.take() {
            self.result.payment.add_payer(p.payer());
        }
        c.assemblies.clear();
        if let Some(fd) = &c.fd {
            let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            if was_connecting {
                // A connect in progress is not always ended by the shutdown.
                let e = ops::async_cancel(
                    UserData::new(Op::Connect, 0, slot),
                    UserData::new(Op::Cancel, 0, 0),
                );
                // SAFETY: a cancel carries no buffers.
                unsafe { self.push(e) };
            }
        }
    }

    fn tick(&mut self) {
        let plan = self.plan.clone();
        let now = self.now;
        if let Stop::Duration(d) = plan.stop
            && now.duration_since(plan.started) >= d
        {
            plan.requests_over.store(true, Ordering::Relaxed);
        }
        if self.closing_all {
            return;
        }
        let over = plan.requests_over.load(Ordering::Relaxed);
        if over && self.drain_started.is_none() {
            self.drain_started = Some(now);
        }
        let drained = self
            .conns
            .iter()
            .all(|c| c.phase == Phase::Done || c.outstanding.is_empty());
        let all_done = self.waiting.is_empty() && self.conns.iter().all(|c| c.phase == Phase::Done);
        let drain_expired = self
            .drain_started
            .is_some_and(|t| now.duration_since(t) >= plan.drain_timeout);
        if all_done || (over && (drained || drain_expired)) {
            self.finish();
            return;
        }
        if now.duration_since(self.last_timeouts) >= Duration::from_millis(250) {
            self.last_timeouts = now;
            let mut victims = Vec::new();
            for (i, c) in self.conns.iter().enumerate() {
                let late = match c.phase {
                    Phase::Connecting | Phase::Handshake => {
                        now.duration_since(c.since) > plan.timeout
                    }
                    Phase::Active => {
                        !c.outstanding.is_empty()
                            && now.duration_since(c.last_progress) > plan.timeout
                    }
                    Phase::Waiting | Phase::Done => false,
                };
                if late {
                    victims.push(i);
                }
            }
            for i in victims {
                self.fail(i, ErrorKind::Timeout);
            }
        }
    }

    /// The run is over: counts who is still held and shuts every socket.
    fn finish(&mut self) {
        self.closing_all = true;
        self.result.held_at_end = self
            .conns
            .iter()
            .filter(|c| c.phase == Phase::Active)
            .count() as u64;
        // Blocks still outstanding when the drain timed out are reported, not counted as errors:
        // a slow seeder shows in the latency, and the run's end is ours.
        self.result.unanswered = self
            .conns
            .iter()
            .filter(|c| c.phase != Phase::Done)
            .map(|c| c.outstanding.len() as u64)
            .sum();
        for i in 0..self.conns.len() {
            self.shut(i);
        }
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(total: u64, piece: u64, block: u32, pattern: Pattern) -> Plan {
        let num_pieces = total.div_ceil(piece) as u32;
        Plan {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            torrents: vec![TorrentPlan {
                info_hash: [0; 20],
                piece_length: piece,
                total_length: total,
                num_pieces,
                hashes: Vec::new(),
                swarm_have: (0..num_pieces).map(|_| AtomicU32::new(0)).collect(),
            }],
            peers: 4,
            reqq: 8,
            block_len: block,
            pattern,
            verify_every: 2,
            stop: Stop::Bytes(total),
            started: Instant::now(),
            timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(1),
            recv_size: 1 << 16,
            source_base: None,
            idle: false,
            requested: AtomicU64::new(0),
            requests_over: AtomicBool::new(false),
            pay: None,
            paying_peers: 0,
            encrypt: false,
            channels: None,
        }
    }

    #[test]
    fn blocks_tile_every_piece_including_a_short_last_one() {
        // 3 pieces of 40 000 bytes and a last one of 5 000; blocks of 16 KiB do not divide them.
        let p = plan(125_000, 40_000, 16 << 10, Pattern::Sequential);
        let mut l = Leecher::new(0, &p, Instant::now());
        let mut covered = vec![0u64; 4];
        let mut sampled = 0;
        let mut seen = 0;
        while seen < 4 {
            let (r, a) = l.next_block(&p).unwrap();
            let t = &p.torrents[0];
            assert!(r.length > 0 && r.length <= 16 << 10);
            assert!(u64::from(r.begin + r.length) <= t.piece_size(r.index));
            covered[r.index as usize] += u64::from(r.length);
            if r.begin + r.length == t.piece_size(r.index) as u32 {
                seen += 1;
                sampled += usize::from(a != NO_ASSEMBLY);
            }
        }
        assert_eq!(covered, vec![40_000, 40_000, 40_000, 5_000]);
        // One piece in two is assembled for its hash check.
        assert_eq!(sampled, 2);
    }

    #[test]
    fn leechers_start_spread_over_the_torrent() {
        let p = plan(64 * 16384, 16384, 16384, Pattern::Sequential);
        let starts: Vec<u32> = (0..4)
            .map(|id| {
                Leecher::new(id, &p, Instant::now())
                    .next_block(&p)
                    .unwrap()
                    .0
                    .index
            })
            .collect();
        assert_eq!(starts, vec![0, 16, 32, 48]);
    }

    #[test]
    fn random_pieces_stay_in_range() {
        let p = plan(10 * 16384 + 1, 16384, 16384, Pattern::Random);
        let mut l = Leecher::new(3, &p, Instant::now());
        for _ in 0..1000 {
            let (r, _) = l.next_block(&p).unwrap();
            assert!(r.index < p.torrents[0].num_pieces);
        }
    }

    /// Every block of a piece, as a leecher walking it would request them.
    fn whole_piece(l: &mut Leecher, p: &Plan) -> u32 {
        let (first, _) = l.next_block(p).unwrap();
        let size = p.torrents[0].piece_size(first.index) as u32;
        let mut got = first.length;
        while got < size {
            let (r, _) = l.next_block(p).unwrap();
            assert_eq!(r.index, first.index);
            got += r.length;
        }
        first.index
    }

    #[test]
    fn rarest_first_takes_the_pieces_fewest_leechers_hold() {
        let p = plan(8 * 16384, 16384, 16384, Pattern::RarestFirst);
        let t = &p.torrents[0];
        // Every piece is held by two leechers except piece 5, held by one.
        for (i, a) in t.swarm_have.iter().enumerate() {
            a.store(if i == 5 { 1 } else { 2 }, Ordering::Relaxed);
        }
        let mut l = Leecher::new(0, &p, Instant::now());
        assert_eq!(whole_piece(&mut l, &p), 5);
        // Now every piece is held by two; the leecher never takes one it already has, and after
        // all eight it starts over, giving its pieces back to the swarm's counts.
        let mut seen: Vec<u32> = (0..7).map(|_| whole_piece(&mut l, &p)).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 6, 7]);
        let held = |i: usize| t.swarm_have[i].load(Ordering::Relaxed);
        assert!((0..8).all(|i| held(i) == if i == 5 { 2 } else { 3 }));
        // Holding everything, it starts over: its eight pieces leave the counts, and the
        // rarest again is piece 5.
        assert_eq!(whole_piece(&mut l, &p), 5);
        assert_eq!(l.have_count, 1);
        assert!((0..8).all(|i| held(i) == 2));
    }

    #[test]
    fn rarest_first_asks_only_for_what_the_seeder_has() {
        let p = plan(16 * 16384, 16384, 16384, Pattern::RarestFirst);
        let mut l = Leecher::new(1, &p, Instant::now());
        let mut has = vec![0u8; 2];
        set_bit(&mut has, 3);
        set_bit(&mut has, 12);
        l.seeder_has = Some(has);
        for _ in 0..10 {
            let i = whole_piece(&mut l, &p);
            assert!(i == 3 || i == 12, "asked for piece {i}");
        }
        l.seeder_has = Some(vec![0u8; 2]);
        l.cursor = None;
        assert!(l.next_block(&p).is_none());
    }

    #[test]
    fn many_torrents_spread_leechers_over_the_torrents() {
        let mut p = plan(4 * 16384, 16384, 16384, Pattern::ManyTorrents);
        let second = TorrentPlan {
            info_hash: [1; 20],
            piece_length: 16384,
            total_length: 2 * 16384,
            num_pieces: 2,
            hashes: Vec::new(),
            swarm_have: Vec::new(),
        };
        p.torrents.push(second);
        for id in 0..4 {
            let mut l = Leecher::new(id, &p, Instant::now());
            assert_eq!(l.torrent, id % 2);
            for _ in 0..50 {
                let (r, _) = l.next_block(&p).unwrap();
                assert!(r.index < p.torrents[l.torrent].num_pieces);
            }
        }
    }
}
