//! One worker: an io_uring event loop that owns its listener and its peers.
//!
//! Everything a peer does is a completion: accept, recv, disk read, send. Peer state lives in a
//! slab indexed by the `user_data` of each submission; a slot is freed only once every operation
//! that points into it has completed, so the kernel never writes into freed memory.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use nix::sys::eventfd::EventFd;
use socket2::{Domain, SockAddr, Socket, Type};

use super::choker::{self, Candidate};
use super::coalesce;
use super::ratelimit::TokenBucket;
use super::{Command, Settings, Torrent, UploadPath};
use crate::speed::peer::PeerSpeed;
use crate::speed::service::Outcome;
use crate::wire::extension::ExtHandshake;
use crate::wire::{self, BlockRequest, Handshake, Message, WireError};

/// Why a peer was disconnected; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(usize)]
pub enum Reason {
    PeerClosed,
    IoError,
    HandshakeTimeout,
    IdleTimeout,
    BadHandshake,
    UnknownTorrent,
    SelfConnection,
    MessageTooLong,
    BadMessage,
    InvalidRequest,
    RequestFlood,
    SendBacklog,
    DiskError,
    BothSeeds,
    TorrentRemoved,
    TooManyPeers,
    ConnectFailed,
    Shutdown,
}

impl Reason {
    pub const ALL: [Reason; 18] = [
        Reason::PeerClosed,
        Reason::IoError,
        Reason::HandshakeTimeout,
        Reason::IdleTimeout,
        Reason::BadHandshake,
        Reason::UnknownTorrent,
        Reason::SelfConnection,
        Reason::MessageTooLong,
        Reason::BadMessage,
        Reason::InvalidRequest,
        Reason::RequestFlood,
        Reason::SendBacklog,
        Reason::DiskError,
        Reason::BothSeeds,
        Reason::TorrentRemoved,
        Reason::TooManyPeers,
        Reason::ConnectFailed,
        Reason::Shutdown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::PeerClosed => "peer_closed",
            Reason::IoError => "io_error",
            Reason::HandshakeTimeout => "handshake_timeout",
            Reason::IdleTimeout => "idle_timeout",
            Reason::BadHandshake => "bad_handshake",
            Reason::UnknownTorrent => "unknown_torrent",
            Reason::SelfConnection => "self_connection",
            Reason::MessageTooLong => "message_too_long",
            Reason::BadMessage => "bad_message",
            Reason::InvalidRequest => "invalid_request",
            Reason::RequestFlood => "request_flood",
            Reason::SendBacklog => "send_backlog",
            Reason::DiskError => "disk_error",
            Reason::BothSeeds => "both_seeds",
            Reason::TorrentRemoved => "torrent_removed",
            Reason::TooManyPeers => "too_many_peers",
            Reason::ConnectFailed => "connect_failed",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// Counters of one worker. Only that worker writes them (Relaxed: statistics); anyone reads.
#[derive(Debug)]
pub struct WorkerStats {
    pub accepted: AtomicU64,
    pub connected_out: AtomicU64,
    pub peers: AtomicI64,
    pub handshakes: AtomicU64,
    pub bytes_up: AtomicU64,
    pub blocks_up: AtomicU64,
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub dropped_requests: AtomicU64,
    pub submissions: AtomicU64,
    pub completions: AtomicU64,
    pub disconnects: [AtomicU64; Reason::ALL.len()],
    /// Request → last byte handed to the socket, microseconds. Published by the worker once a
    /// second from its private histogram, so the lock is never taken on the peer path.
    pub latency_us: Mutex<Histogram<u64>>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            accepted: AtomicU64::new(0),
            connected_out: AtomicU64::new(0),
            peers: AtomicI64::new(0),
            handshakes: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            blocks_up: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped_requests: AtomicU64::new(0),
            submissions: AtomicU64::new(0),
            completions: AtomicU64::new(0),
            disconnects: Default::default(),
            latency_us: Mutex::new(new_histogram()),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// A copy of one worker's counters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsSnapshot {
    pub accepted: u64,
    pub connected_out: u64,
    pub peers: i64,
    pub handshakes: u64,
    pub bytes_up: u64,
    pub blocks_up: u64,
    pub requests: u64,
    pub rejected: u64,
    pub dropped_requests: u64,
    pub submissions: u64,
    pub completions: u64,
    pub disconnects: HashMap<&'static str, u64>,
    #[serde(skip)]
    pub latency_us: Histogram<u64>,
}

impl WorkerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            accepted: r(&self.accepted),
            connected_out: r(&self.connected_out),
            peers: self.peers.load(Ordering::Relaxed),
            handshakes: r(&self.handshakes),
            bytes_up: r(&self.bytes_up),
            blocks_up: r(&self.blocks_up),
            requests: r(&self.requests),
            rejected: r(&self.rejected),
            dropped_requests: r(&self.dropped_requests),
            submissions: r(&self.submissions),
            completions: r(&self.completions),
            disconnects: Reason::ALL
                .iter()
                .map(|&k| (k.name(), r(&self.disconnects[k as usize])))
                .filter(|(_, v)| *v > 0)
                .collect(),
            latency_us: self
                .latency_us
                .lock()
                .map(|h| h.clone())
                .unwrap_or_else(|_| new_histogram()),
        }
    }

    fn add(&self, counter: &AtomicU64, n: u64) {
        let _ = self;
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A listening socket with SO_REUSEPORT, so every worker can bind the same port.
pub(crate) fn listener(addr: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s)
}

pub(crate) struct WorkerContext {
    pub id: usize,
    pub settings: Arc<Settings>,
    pub listener: Socket,
    pub commands: Receiver<Command>,
    pub wake: Arc<EventFd>,
    pub stats: Arc<WorkerStats>,
    pub global_limit: Arc<TokenBucket>,
}

// user_data layout: kind (8 bits) | job sequence (24 bits) | slot (32 bits). The sequence must
// not wrap while a job of the same number can still complete: a zero-copy notification can
// arrive many jobs later, and an 8-bit sequence once matched a new job and freed its buffer
// while the kernel still sent from it.
const ACCEPT: u8 = 1;
const WAKE: u8 = 2;
const TICK: u8 = 3;
const RECV: u8 = 4;
const SEND: u8 = 5;
const READ: u8 = 6;
const CONNECT: u8 = 7;
/// A zero-copy send of a job: completes once with the result and once with the notification.
const SEND_ZC: u8 = 8;
/// Splice path: file → the peer's pipe, and pipe → socket.
const SPLICE_IN: u8 = 9;
const SPLICE_OUT: u8 = 10;

const SEQ_MASK: u32 = (1 << 24) - 1;

fn ud(kind: u8, seq: u32, slot: usize) -> u64 {
    (u64::from(kind) << 56) | (u64::from(seq & SEQ_MASK) << 32) | (slot as u64 & 0xffff_ffff)
}

fn ud_parts(ud: u64) -> (u8, u32, usize) {
    (
        (ud >> 56) as u8,
        (ud >> 32) as u32 & SEQ_MASK,
        (ud & 0xffff_ffff) as usize,
    )
}

const TICK_EVERY: Duration = Duration::from_millis(50);
const RECV_INITIAL: usize = 2048;
/// Sent zero-copy jobs whose buffers a peer may have waiting for the kernel's notification.
const MAX_ZC_HELD: usize = 16;
const RECV_SHRINK_ABOVE: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Handshake,
    Active,
}

/// What the one send in flight carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    Nothing,
    Control,
    Job(u32),
}

/// One upload job: headers and blocks laid out back to back, ready for one send.
struct Job {
    seq: u32,
    buf: Vec<u8>,
    len: usize,
    /// Kept alive while reads are in flight: the kernel reads these iovecs.
    iovecs: Vec<libc::iovec>,
    reads_pending: u32,
    read_expected: usize,
    read_done: usize,
    read_failed: bool,
    sent: usize,
    /// (request, time it arrived) for latency and accounting.
    blocks: Vec<(BlockRequest, Instant)>,
    /// Zero-copy sends: the buffer stays with the kernel until the notification.
    zc_notifs_pending: u32,
    /// Splice path: the job is sent segment by segment instead of from `buf` alone.
    splice: Option<SpliceJob>,
}

/// A job on the splice path: headers (and pad zeros) go from the buffer, block data goes
/// file → pipe → socket without passing through user space.
struct SpliceJob {
    segs: Vec<Seg>,
    seg: usize,
    seg_done: usize,
    /// Bytes spliced into the pipe and not yet out to the socket.
    in_pipe: usize,
}

enum Seg {
    Mem { start: usize, len: usize },
    File { fd: RawFd, offset: u64, len: usize },
}

impl SpliceJob {
    /// `n` more bytes of the current segment reached the socket.
    fn advance(&mut self, n: usize) {
        self.seg_done += n;
        if self
            .segs
            .get(self.seg)
            .is_some_and(|s| self.seg_done >= s.len())
        {
            self.seg += 1;
            self.seg_done = 0;
        }
    }
}

impl Seg {
    fn len(&self) -> usize {
        match *self {
            Seg::Mem { len, .. } | Seg::File { len, .. } => len,
        }
    }
}

/// A connection's pipe for the splice path.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // A pipe as large as an upload batch moves a whole job per splice pair; if the system
        // refuses (pipe-max-size), the default 64 KiB works, in more steps.
        let capacity = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(256 << 10))
            .map_or(64 << 10, |c| c as usize);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

struct Conn {
    fd: OwnedFd,
    addr: SocketAddr,
    /// For outgoing connects: the address the kernel reads until the connect completes.
    connect_addr: Option<Box<SockAddr>>,
    phase: Phase,
    torrent: Option<Arc<Torrent>>,
    ops: u32,
    closing: Option<Reason>,
    recv: Vec<u8>,
    recv_len: usize,
    recv_posted: bool,
    /// Control messages waiting for the socket.
    ctrl: Vec<u8>,
    /// Control bytes handed to the kernel and how many went out so far.
    ctrl_inflight: Vec<u8>,
    ctrl_sent: usize,
    sending: Sending,
    jobs: VecDeque<Job>,
    /// Jobs fully sent whose zero-copy notification is still due.
    zc_done: Vec<Job>,
    /// Splice path only, made on the first job.
    pipe: Option<Pipe>,
    next_seq: u32,
    requests: VecDeque<(BlockRequest, Instant)>,
    fast: bool,
    extensions: bool,
    peer_interested: bool,
    am_choking: bool,
    choke_changed: Instant,
    uploaded: u64,
    uploaded_since_unchoke: u64,
    uploaded_this_round: u64,
    allowed_fast: Vec<u32>,
    peer_has: u32,
    peer_bitfield: Option<Vec<u8>>,
    ext: Option<ExtHandshake>,
    rejected_total: u64,
    /// Requests refused because the queue was full, since it was last below half.
    overflow: u64,
    connected_at: Instant,
    last_recv: Instant,
    last_send: Instant,
    throttled: bool,
    /// Queued in `starved`, waiting for job memory.
    starved: bool,
    optimistic: bool,
    /// Set once the peer's extension handshake names `rs_speed` (and speed is enabled).
    speed: Option<Box<PeerSpeed>>,
    /// BEP 9 metadata pieces answered on this connection (bounded, see `metadata_message`).
    metadata_answers: u32,
    outgoing: bool,
    /// Where the peer listens, once known (its extension handshake's `p`, or the address we
    /// dialled): listed in its torrent's swarm for peer exchange while connected.
    listen_addr: Option<SocketAddr>,
    /// The peer speaks BEP 11 (and its torrent is public).
    pex: bool,
    /// The swarm generation this peer last heard (`None`: nothing yet).
    pex_heard: Option<u64>,
}

impl Conn {
    fn new(fd: OwnedFd, addr: SocketAddr, outgoing: bool, now: Instant) -> Self {
        Conn {
            fd,
            addr,
            connect_addr: None,
            phase: if outgoing {
                Phase::Connecting
            } else {
                Phase::Handshake
            },
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
            zc_done: Vec::new(),
            pipe: None,
            next_seq: 0,
            requests: VecDeque::new(),
            fast: false,
            extensions: false,
            peer_interested: false,
            am_choking: true,
            choke_changed: now,
            uploaded: 0,
            uploaded_since_unchoke: 0,
            uploaded_this_round: 0,
            allowed_fast: Vec::new(),
            peer_has: 0,
            peer_bitfield: None,
            ext: None,
            rejected_total: 0,
            overflow: 0,
            connected_at: now,
            last_recv: now,
            last_send: now,
            throttled: false,
            starved: false,
            optimistic: false,
            speed: None,
            metadata_answers: 0,
            outgoing,
            listen_addr: None,
            pex: false,
            pex_heard: None,
        }
    }

    fn queue(&mut self, m: Message<'_>) {
        m.encode(&mut self.ctrl);
    }
}

struct Worker {
    /// The port we listen on (the bound one, when 0 was configured), told to peers as `p`.
    port: u16,
    settings: Arc<Settings>,
    ring: IoUring,
    listener: Socket,
    commands: Receiver<Command>,
    wake: Arc<EventFd>,
    wake_buf: Box<[u8; 8]>,
    tick_ts: Box<types::Timespec>,
    stats: Arc<WorkerStats>,
    global_limit: Arc<TokenBucket>,
    torrents: HashMap<[u8; 20], Arc<Torrent>>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    buffers: Vec<Vec<u8>>,
    /// Bytes of job buffers handed out (in flight or held for zero-copy notifications).
    job_bytes: usize,
    /// Peers waiting for job memory, oldest first.
    starved: VecDeque<usize>,
    latency: Histogram<u64>,
    now: Instant,
    last_second: Instant,
    last_rechoke: Instant,
    last_pex: Instant,
    rechokes: u64,
    slots: usize,
    stopping: bool,
    accept_posted: bool,
    upload_path: UploadPath,
    rng: u64,
    id: usize,
    /// Answers of the speed verifier, and a counter that tells connections apart for them.
    speed_outcomes: Option<Receiver<Outcome>>,
    next_conn_id: u64,
}

/// Thread body of a worker: builds the ring, reports readiness, runs the loop.
pub(crate) fn run(ctx: WorkerContext, ready: Sender<std::io::Result<()>>) {
    let settings = ctx.settings.clone();
    if settings.pin_workers {
        pin_to_core(ctx.id);
    }
    let ring = match crate::uring::build_ring(settings.ring_entries) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let workers = settings.worker_count().max(1);
    let slots = if settings.upload_slots == 0 {
        0
    } else {
        settings.upload_slots.div_ceil(workers)
    };
    let now = Instant::now();
    let port = ctx
        .listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(0, |a| a.port());
    let mut w = Worker {
        port,
        ring,
        listener: ctx.listener,
        commands: ctx.commands,
        wake: ctx.wake.clone(),
        wake_buf: Box::new([0; 8]),
        tick_ts: Box::new(types::Timespec::from(TICK_EVERY)),
        stats: ctx.stats,
        global_limit: ctx.global_limit,
        torrents: HashMap::new(),
        conns: Vec::new(),
        free: Vec::new(),
        live: 0,
        buffers: Vec::new(),
        job_bytes: 0,
        starved: VecDeque::new(),
        latency: new_histogram(),
        now,
        last_second: now,
        last_rechoke: now,
        last_pex: now,
        rechokes: 0,
        slots,
        stopping: false,
        accept_posted: false,
        upload_path: settings.upload_path.resolve(),
        rng: (ctx.id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ now.elapsed().as_nanos() as u64,
        id: ctx.id,
        speed_outcomes: settings
            .speed
            .as_ref()
            .map(|s| s.register_worker(ctx.id, ctx.wake.clone())),
        next_conn_id: 0,
        settings,
    };
    let _ = ready.send(Ok(()));
    w.event_loop();
}

fn pin_to_core(worker: usize) {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    // The worker-th CPU this process may use (taskset, cgroup cpusets), not the machine's
    // worker-th CPU: under `taskset -c 1`, worker 0 was pinned to CPU 0, outside the set.
    let Ok(allowed) = sched_getaffinity(Pid::from_raw(0)) else {
        return;
    };
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    let Some(&cpu) = cpus.get(worker % cpus.len().max(1)) else {
        return;
    };
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

impl Worker {
    fn event_loop(&mut self) {
        self.post_accept();
        self.post_wake();
        self.post_tick();
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(n) => self.stats.add(&self.stats.submissions, n as u64),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(_) => break,
            }
            self.now = Instant::now();
            cqes.clear();
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            self.stats.add(&self.stats.completions, cqes.len() as u64);
            for &(user_data, res, flags) in &cqes {
                self.complete(user_data, res, flags);
            }
            if self.stopping && self.live == 0 {
                break;
            }
        }
        self.publish_latency();
    }

    /// Queues a submission, flushing the queue to the kernel when it is full.
    ///
    /// # Safety
    /// Every buffer `entry` points to must stay valid and unmoved until its completion arrives.
    unsafe fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { crate::uring::push(&mut self.ring, &entry) }
    }

    fn post_accept(&mut self) {
        if self.stopping || self.accept_posted {
            return;
        }
        let e = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ud(ACCEPT, 0, 0));
        // SAFETY: accept writes no user memory (no address buffer is passed).
        unsafe { self.push(e) };
        self.accept_posted = true;
    }

    fn post_wake(&mut self) {
        let e = opcode::Read::new(
            types::Fd(self.wake.as_fd_raw()),
            self.wake_buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(ud(WAKE, 0, 0));
        // SAFETY: wake_buf is a Box owned by the worker, alive for the whole loop.
        unsafe { self.push(e) };
    }

    fn post_tick(&mut self) {
        let e = opcode::Timeout::new(&*self.tick_ts as *const types::Timespec)
            .build()
            .user_data(ud(TICK, 0, 0));
        // SAFETY: tick_ts is a Box owned by the worker, alive for the whole loop.
        unsafe { self.push(e) };
    }

    fn complete(&mut self, user_data: u64, res: i32, flags: u32) {
        let (kind, seq, slot) = ud_parts(user_data);
        match kind {
            ACCEPT => {
                if !cqueue::more(flags) {
                    self.accept_posted = false;
                }
                if res >= 0 {
                    // SAFETY: a successful accept returns a new descriptor that we now own.
                    let fd = unsafe { OwnedFd::from_raw_fd(res) };
                    self.accepted(fd);
                    if !self.stopping {
                        self.post_accept();
                    }
                }
                // After a failure (EMFILE when out of descriptors, say) the next tick re-arms
                // the accept, rather than spinning on an error that persists.
            }
            WAKE => {
                self.drain_commands();
                self.drain_speed();
                if !self.stopping {
                    self.post_wake();
                }
            }
            TICK => {
                self.tick();
                self.post_tick();
            }
            RECV | SEND | SEND_ZC | READ | CONNECT | SPLICE_IN | SPLICE_OUT => {
                // A zero-copy send completes twice: the result (flagged MORE when a
                // notification follows) and the notification that the buffer is free. The
                // operation ends with the last of them.
                let more = kind == SEND_ZC && cqueue::more(flags);
                let notif = kind == SEND_ZC && cqueue::notif(flags);
                let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                    return;
                };
                if !more {
                    conn.ops -= 1;
                }
                let closing = conn.closing.is_some();
                if notif {
                    self.zc_notified(slot, seq);
                    if !closing {
                        // A freed buffer may unblock a peer held at MAX_ZC_HELD.
                        self.pump_uploads(slot);
                        self.pump_send(slot);
                    }
                } else {
                    if kind == SEND_ZC && !more {
                        // The send failed or was cut short: no notification will come.
                        self.zc_notified(slot, seq);
                    }
                    if !closing {
                        match kind {
                            RECV => self.on_recv(slot, res),
                            SEND | SEND_ZC => self.on_send(slot, seq, res),
                            READ => self.on_read(slot, seq, res),
                            SPLICE_IN | SPLICE_OUT => self.on_splice(slot, seq, res, kind),
                            _ => self.on_connect(slot, res),
                        }
                    } else if kind == READ
                        && let Some(j) = self
                            .conn(slot)
                            .and_then(|c| c.jobs.iter_mut().find(|j| j.seq == seq))
                    {
                        j.reads_pending = j.reads_pending.saturating_sub(1);
                    }
                }
                self.maybe_free(slot);
            }
            _ => {}
        }
    }

    fn peer_states(&self) -> super::PeerStates {
        let mut s = super::PeerStates::default();
        for c in self.conns.iter().flatten().filter(|c| c.closing.is_none()) {
            let n = match (c.phase, c.am_choking, c.peer_interested) {
                (Phase::Connecting | Phase::Handshake, _, _) => &mut s.connecting,
                (Phase::Active, false, _) => &mut s.unchoked,
                (Phase::Active, true, true) => &mut s.interested_choked,
                (Phase::Active, true, false) => &mut s.idle,
            };
            *n += 1;
        }
        s
    }

    fn peers_of(&self, torrent: [u8; 20]) -> Vec<super::PeerInfo> {
        let now = Instant::now();
        self.conns
            .iter()
            .flatten()
            .filter(|c| c.closing.is_none() && c.torrent.as_ref().is_some_and(|t| t.id == torrent))
            .map(|c| super::PeerInfo {
                addr: c.addr,
                client: c.ext.as_ref().and_then(|e| e.v.clone()),
                uploaded: c.uploaded,
                interested: c.peer_interested,
                choked: c.am_choking,
                queued_requests: c.requests.len(),
                connected_s: now.duration_since(c.connected_at).as_secs(),
            })
            .collect()
    }

    fn conn(&mut self, slot: usize) -> Option<&mut Conn> {
        self.conns.get_mut(slot).and_then(Option::as_mut)
    }

    fn drain_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::AddTorrent(t) => {
                    self.torrents.insert(t.id, t);
                }
                Command::RemoveTorrent(id) => {
                    self.torrents.remove(&id);
                    let victims: Vec<usize> =
                        self.slots_where(|c| c.torrent.as_ref().is_some_and(|t| t.id == id));
                    for s in victims {
                        self.close(s, Reason::TorrentRemoved);
                    }
                }
                Command::Connect { addr, torrent } => self.connect(addr, torrent),
                Command::Peers { torrent, reply } => {
                    let _ = reply.send(self.peers_of(torrent));
                }
                Command::PeerStates(reply) => {
                    let _ = reply.send(self.peer_states());
                }
                Command::Shutdown => {
                    self.stopping = true;
                    let all = self.slots_where(|_| true);
                    for s in all {
                        self.close(s, Reason::Shutdown);
                    }
                    // Stop accepting: closing the listener ends the multishot accept.
                    let _ = nix::sys::socket::shutdown(
                        self.listener.as_raw_fd(),
                        nix::sys::socket::Shutdown::Both,
                    );
                }
            }
        }
    }

    fn slots_where(&self, f: impl Fn(&Conn) -> bool) -> Vec<usize> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().filter(|c| f(c)).map(|_| i))
            .collect()
    }

    fn insert(&mut self, conn: Conn) -> usize {
        self.live += 1;
        self.stats.peers.fetch_add(1, Ordering::Relaxed);
        match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        }
    }

    fn accepted(&mut self, fd: OwnedFd) {
        self.stats.add(&self.stats.accepted, 1);
        let sock = socket2::SockRef::from(&fd);
        let addr = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let _ = sock.set_tcp_nodelay(true);
        let slot = self.insert(Conn::new(fd, addr, false, self.now));
        if self.stopping {
            self.close(slot, Reason::Shutdown);
        } else if self.live > self.settings.max_peers_per_worker {
            self.close(slot, Reason::TooManyPeers);
        } else {
            self.post_recv(slot);
        }
        self.maybe_free(slot);
    }

    fn connect(&mut self, addr: SocketAddr, torrent: [u8; 20]) {
        let Some(t) = self.torrents.get(&torrent).cloned() else {
            return;
        };
        let Ok(sock) = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None) else {
            return;
        };
        let _ = sock.set_tcp_nodelay(true);
        let fd: OwnedFd = sock.into();
        let mut conn = Conn::new(fd, addr, true, self.now);
        let sa = Box::new(SockAddr::from(addr));
        let (ptr, len) = (sa.as_ptr(), sa.len());
        conn.connect_addr = Some(sa);
        conn.torrent = Some(t.clone());
        let raw = conn.fd.as_raw_fd();
        let slot = self.insert(conn);
        t.peers.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.conn(slot) {
            c.ops += 1;
        }
        let e = opcode::Connect::new(types::Fd(raw), ptr.cast(), len)
            .build()
            .user_data(ud(CONNECT, 0, slot));
        // SAFETY: the address lives in the connection's Box until the slot is freed, which waits
        // for this operation to complete.
        unsafe { self.push(e) };
    }

    fn on_connect(&mut self, slot: usize, res: i32) {
        if res < 0 {
            self.close(slot, Reason::ConnectFailed);
            return;
        }
        self.stats.add(&self.stats.connected_out, 1);
        let peer_id = self.settings.peer_id;
        let Some(c) = self.conn(slot) else { return };
        c.phase = Phase::Handshake;
        c.connect_addr = None;
        if let Some(t) = &c.torrent {
            let hs = Handshake::new(t.id, peer_id).encode();
            c.ctrl.extend_from_slice(&hs);
        }
        self.pump_send(slot);
        self.post_recv(slot);
    }

    fn post_recv(&mut self, slot: usize) {
        let Some(c) = self.conn(slot) else { return };
        if c.recv_posted || c.closing.is_some() {
            return;
        }
        if c.recv_len == c.recv.len() {
            // Full with an incomplete message: grow (its length was checked against the bound
            // before we get here).
            let new_len = (c.recv.len() * 2).max(RECV_INITIAL);
            c.recv.resize(new_len, 0);
        }
        let ptr = c.recv[c.recv_len..].as_mut_ptr();
        let len = (c.recv.len() - c.recv_len) as u32;
        let raw = c.fd.as_raw_fd();
        c.recv_posted = true;
        c.ops += 1;
        let e = opcode::Recv::new(types::Fd(raw), ptr, len)
            .build()
            .user_data(ud(RECV, 0, slot));
        // SAFETY: the receive buffer is not resized or freed while recv_posted is set (we only
        // touch it after this completion), and the slot outlives the op (ops > 0).
        unsafe { self.push(e) };
    }

    fn on_recv(&mut self, slot: usize, res: i32) {
        let now = self.now;
        let Some(c) = self.conn(slot) else { return };
        c.recv_posted = false;
        if res == 0 {
            self.close(slot, Reason::PeerClosed);
            return;
        }
        if res < 0 {
            let reason = if res == -libc::ECONNRESET {
                Reason::PeerClosed
            } else {
                Reason::IoError
            };
            self.close(slot, reason);
            return;
        }
        c.recv_len += res as usize;
        c.last_recv = now;
        if let Err(reason) = self.process_input(slot) {
            self.close(slot, reason);
            return;
        }
        self.pump_uploads(slot);
        self.pump_send(slot);
        self.post_recv(slot);
    }

    /// Parses everything complete in the receive buffer.
    fn process_input(&mut self, slot: usize) -> Result<(), Reason> {
        let mut pos = 0;
        loop {
            let Some(c) = self.conn(slot) else {
                return Ok(());
            };
            if c.closing.is_some() {
                return Ok(());
            }
            let buf = &c.recv[pos..c.recv_len];
            match c.phase {
                Phase::Connecting => return Ok(()),
                Phase::Handshake => {
                    let prefix = Handshake::parse_prefix(buf).map_err(|_| Reason::BadHandshake)?;
                    let Some((_, info_hash)) = prefix else { break };
                    if c.torrent.is_none() {
                        let t = self
                            .torrents
                            .get(&info_hash)
                            .cloned()
                            .ok_or(Reason::UnknownTorrent)?;
                        t.peers.fetch_add(1, Ordering::Relaxed);
                        let c = self.conn(slot).ok_or(Reason::IoError)?;
                        c.torrent = Some(t);
                        // Answer at once: some peers wait for our handshake before sending
                        // their peer id.
                        let hs = Handshake::new(info_hash, self.settings.peer_id).encode();
                        let c = self.conn(slot).ok_or(Reason::IoError)?;
                        c.ctrl.extend_from_slice(&hs);
                    } else if c.torrent.as_ref().is_some_and(|t| t.id != info_hash) {
                        return Err(Reason::UnknownTorrent);
                    }
                    let c = self.conn(slot).ok_or(Reason::IoError)?;
                    let Some(hs) = Handshake::parse(&c.recv[pos..c.recv_len])
                        .map_err(|_| Reason::BadHandshake)?
                    else {
                        break;
                    };
                    if hs.peer_id == self.settings.peer_id {
                        return Err(Reason::SelfConnection);
                    }
                    pos += Handshake::LEN;
                    self.handshake_done(slot, hs);
                }
                Phase::Active => {
                    let max = self.max_message_len(slot);
                    let c = self.conn(slot).ok_or(Reason::IoError)?;
                    let buf = &c.recv[pos..c.recv_len];
                    match wire::parse_message(buf, max) {
                        Ok(Some((msg, used))) => {
                            // Copy out what the handler needs so the buffer borrow ends.
                            let owned = OwnedMsg::from(&msg);
                            pos += used;
                            self.handle_message(slot, owned)?;
                        }
                        Ok(None) => {
                            // Incomplete: make sure a whole message fits once it arrives.
                            if buf.len() >= 4 {
                                let need = 4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])
                                    as usize;
                                if need > c.recv.len() - pos {
                                    let keep = c.recv_len - pos;
                                    c.recv.copy_within(pos..c.recv_len, 0);
                                    c.recv_len = keep;
                                    pos = 0;
                                    c.recv.resize(need.max(RECV_INITIAL), 0);
                                }
                            }
                            break;
                        }
                        Err(WireError::TooLong { .. }) => return Err(Reason::MessageTooLong),
                        Err(_) => return Err(Reason::BadMessage),
                    }
                }
            }
        }
        if let Some(c) = self.conn(slot) {
            c.recv.copy_within(pos..c.recv_len, 0);
            c.recv_len -= pos;
            if c.recv_len == 0 && c.recv.len() > RECV_SHRINK_ABOVE {
                c.recv = vec![0; RECV_INITIAL];
            }
        }
        Ok(())
    }

    fn max_message_len(&mut self, slot: usize) -> u32 {
        let max_req = self.settings.max_request_len;
        let Some(c) = self.conn(slot) else { return 0 };
        let bitfield = c
            .torrent
            .as_ref()
            .map_or(0, |t| t.pieces.num_pieces().div_ceil(8) + 1);
        bitfield
            .max(max_req + 9)
            .max(crate::wire::extension::MAX_HANDSHAKE_BYTES as u32 + 2)
    }

    fn handshake_done(&mut self, slot: usize, hs: Handshake) {
        self.stats.add(&self.stats.handshakes, 1);
        let settings = self.settings.clone();
        let port = self.port;
        let Some(c) = self.conn(slot) else { return };
        c.phase = Phase::Active;
        c.fast = hs.supports_fast();
        c.extensions = hs.supports_extensions();
        let Some(t) = c.torrent.clone() else { return };
        if c.extensions {
            let mut m = Vec::new();
            // BEP 9 for public torrents: a peer that came from a magnet link fetches the info
            // dictionary from us. A private torrent's metadata travels only in its .torrent.
            let public = !t.meta.info.private;
            if public {
                let name = crate::wire::metadata::EXTENSION_NAME;
                m.push((name.to_string(), crate::wire::metadata::LOCAL_ID));
                if !settings.pex_interval.is_zero() {
                    let name = crate::wire::pex::EXTENSION_NAME;
                    m.push((name.to_string(), crate::wire::pex::LOCAL_ID));
                }
            }
            if settings.speed.is_some() {
                let name = crate::speed::protocol::EXTENSION_NAME;
                m.push((name.to_string(), crate::speed::peer::LOCAL_ID));
            }
            let ext = ExtHandshake {
                m,
                v: Some(settings.client_name.clone()),
                reqq: Some(settings.max_reqq as u32),
                yourip: Some(c.addr.ip()),
                p: Some(port).filter(|&p| p != 0),
                metadata_size: public.then_some(t.meta.info.raw.len() as u64),
                upload_only: t.pieces.verified.is_full(),
            };
            let payload = ext.encode();
            c.queue(Message::Extended {
                id: 0,
                payload: &payload,
            });
        }
        let verified = &t.pieces.verified;
        if c.fast && verified.is_full() {
            c.queue(Message::HaveAll);
        } else if c.fast && verified.count() == 0 {
            c.queue(Message::HaveNone);
        } else {
            let bits = verified.to_wire();
            c.queue(Message::Bitfield(&bits));
        }
        if c.fast && settings.allowed_fast > 0 {
            let ip = match c.addr.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            };
            let set = crate::wire::fast::allowed_fast_set(
                ip,
                &t.id,
                t.pieces.num_pieces(),
                settings.allowed_fast,
            );
            for &i in &set {
                if verified.get(i) {
                    c.queue(Message::AllowedFast(i));
                }
            }
            c.allowed_fast = set;
        }
    }

    fn handle_message(&mut self, slot: usize, msg: OwnedMsg) -> Result<(), Reason> {
        let now = self.now;
        let max_request_len = self.settings.max_request_len;
        let max_reqq = self.settings.max_reqq;
        let c = self.conn(slot).ok_or(Reason::IoError)?;
        let t = c.torrent.clone().ok_or(Reason::IoError)?;
        let n = t.pieces.num_pieces();
        match msg {
            OwnedMsg::Simple(Message::KeepAlive)
            | OwnedMsg::Simple(Message::Choke)
            | OwnedMsg::Simple(Message::Unchoke) => {}
            OwnedMsg::Simple(Message::Interested) => {
                c.peer_interested = true;
                self.try_unchoke_now(slot);
            }
            OwnedMsg::Simple(Message::NotInterested) => {
                c.peer_interested = false;
                if !c.am_choking {
                    self.set_choke(slot, true);
                }
            }
            OwnedMsg::Simple(Message::Have(i)) => {
                if i >= n {
                    return Err(Reason::BadMessage);
                }
                let newly = match &mut c.peer_bitfield {
                    Some(b) => {
                        let (byte, bit) = ((i / 8) as usize, 0x80u8 >> (i % 8));
                        let was = b[byte] & bit != 0;
                        b[byte] |= bit;
                        !was
                    }
                    None => {
                        let mut b = vec![0u8; n.div_ceil(8) as usize];
                        b[(i / 8) as usize] |= 0x80 >> (i % 8);
                        c.peer_bitfield = Some(b);
                        true
                    }
                };
                if newly {
                    c.peer_has += 1;
                    t.pieces.peer_has(i);
                }
                if c.peer_has == n && t.pieces.verified.is_full() {
                    return Err(Reason::BothSeeds);
                }
            }
            OwnedMsg::Bitfield(bits) => {
                if bits.len() != n.div_ceil(8) as usize {
                    return Err(Reason::BadMessage);
                }
                let spare = (n.div_ceil(8) * 8 - n) as u8;
                if spare > 0 && bits.last().is_some_and(|&l| l & ((1u8 << spare) - 1) != 0) {
                    return Err(Reason::BadMessage);
                }
                // BEP 3 sends the bitfield once, first; aria2 sends fresh ones as it completes
                // pieces. Accept a later one as a replacement of the peer's state.
                if let Some(old) = c.peer_bitfield.take() {
                    for_each_set(&old, n, |i| t.pieces.peer_lost(i));
                }
                let mut count = 0;
                for_each_set(&bits, n, |i| {
                    t.pieces.peer_has(i);
                    count += 1;
                });
                c.peer_has = count;
                c.peer_bitfield = Some(bits);
                if count == n && n > 0 && t.pieces.verified.is_full() {
                    return Err(Reason::BothSeeds);
                }
            }
            OwnedMsg::Simple(Message::HaveAll) | OwnedMsg::Simple(Message::HaveNone) => {
                if !c.fast {
                    return Err(Reason::BadMessage);
                }
                if matches!(msg, OwnedMsg::Simple(Message::HaveAll)) {
                    if t.pieces.verified.is_full() {
                        return Err(Reason::BothSeeds);
                    }
                    c.peer_has = n;
                    c.peer_bitfield = Some(vec![0xff; n.div_ceil(8) as usize]);
                    for i in 0..n {
                        t.pieces.peer_has(i);
                    }
                }
            }
            OwnedMsg::Simple(Message::Request(r)) => {
                self.stats.add(&self.stats.requests, 1);
                if r.length == 0 || r.length > max_request_len || r.index >= n {
                    return Err(Reason::InvalidRequest);
                }
                let size = t.info().layout.piece_size(r.index);
                if u64::from(r.begin) + u64::from(r.length) > size {
                    return Err(Reason::InvalidRequest);
                }
                let c = self.conn(slot).ok_or(Reason::IoError)?;
                let allowed = !c.am_choking || c.allowed_fast.contains(&r.index);
                let full = c.requests.len() >= max_reqq;
                if !t.pieces.verified.get(r.index) || !allowed || full {
                    c.rejected_total += 1;
                    if full {
                        c.overflow += 1;
                    }
                    if c.fast {
                        c.queue(Message::Reject(r));
                        self.stats.add(&self.stats.rejected, 1);
                    } else {
                        self.stats.add(&self.stats.dropped_requests, 1);
                    }
                    // A peer that keeps requesting past the queue we advertised (`reqq`), or
                    // while choked, ignores the protocol and only costs us memory and sends.
                    let c = self.conn(slot).ok_or(Reason::IoError)?;
                    if c.overflow > (max_reqq as u64 / 2).max(16)
                        || c.rejected_total > 4 * max_reqq as u64 + 1000
                    {
                        return Err(Reason::RequestFlood);
                    }
                } else {
                    if c.requests.len() < max_reqq / 2 {
                        c.overflow = 0;
                    }
                    c.requests.push_back((r, now));
                }
            }
            OwnedMsg::Simple(Message::Cancel(r)) => {
                if let Some(pos) = c.requests.iter().position(|(q, _)| *q == r) {
                    c.requests.remove(pos);
                    if c.fast {
                        // BEP 6: a cancelled request is answered with a reject.
                        c.queue(Message::Reject(r));
                    }
                }
            }
            OwnedMsg::Simple(Message::Piece { .. }) => return Err(Reason::BadMessage),
            OwnedMsg::Simple(Message::Suggest(_))
            | OwnedMsg::Simple(Message::AllowedFast(_))
            | OwnedMsg::Simple(Message::Reject(_)) => {
                if !c.fast {
                    return Err(Reason::BadMessage);
                }
            }
            OwnedMsg::Extended { id: 0, payload } => {
                // A bad extension handshake disables extensions for this peer; it is no reason
                // to drop a peer that speaks BEP 3 correctly.
                c.ext = ExtHandshake::parse(&payload).ok();
                self.pex_join(slot, &t);
                self.speed_start(slot);
            }
            OwnedMsg::Extended {
                id: crate::speed::peer::LOCAL_ID,
                payload,
            } => self.speed_message(slot, &payload, t.id),
            OwnedMsg::Extended {
                id: crate::wire::metadata::LOCAL_ID,
                payload,
            } => self.metadata_message(slot, &payload, &t),
            OwnedMsg::Simple(_) | OwnedMsg::Extended { .. } => {}
        }
        let ctrl_len = self.conn(slot).map_or(0, |c| c.ctrl.len());
        if ctrl_len > self.settings.max_send_backlog {
            return Err(Reason::SendBacklog);
        }
        Ok(())
    }

    fn try_unchoke_now(&mut self, slot: usize) {
        let unchoked = self
            .conns
            .iter()
            .flatten()
            .filter(|c| !c.am_choking && c.closing.is_none())
            .count();
        let Some(c) = self.conn(slot) else { return };
        if c.am_choking && (self.slots == 0 || unchoked < self.slots) {
            self.set_choke(slot, false);
        }
    }

    fn set_choke(&mut self, slot: usize, choke: bool) {
        let now = self.now;
        let Some(c) = self.conn(slot) else { return };
        if c.am_choking == choke {
            return;
        }
        c.am_choking = choke;
        c.choke_changed = now;
        if choke {
            c.queue(Message::Choke);
            c.optimistic = false;
            // Queued requests die with the choke; fast peers are told so, except for pieces
            // in their allowed-fast set, which stay served.
            let fast = c.fast;
            let allowed = std::mem::take(&mut c.allowed_fast);
            let mut kept = VecDeque::new();
            for (r, at) in std::mem::take(&mut c.requests) {
                if fast && allowed.contains(&r.index) {
                    kept.push_back((r, at));
                } else if fast {
                    c.queue(Message::Reject(r));
                }
            }
            c.requests = kept;
            c.allowed_fast = allowed;
        } else {
            c.queue(Message::Unchoke);
            c.uploaded_since_unchoke = 0;
        }
    }

    /// Starts upload jobs for queued requests, as far as job slots and rate limits allow.
    fn pump_uploads(&mut self, slot: usize) {
        let path = self.upload_path;
        loop {
            let jobs_per_peer = self.settings.jobs_per_peer;
            let batch = self.settings.batch_bytes;
            let now = self.now;
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            // Zero-copy buffers stay with the kernel until their notification, which on loopback
            // comes only once the receiver has read the data: bound what one peer can pin.
            if c.closing.is_some()
                || c.requests.is_empty()
                || c.jobs.len() >= jobs_per_peer
                || c.zc_done.len() >= MAX_ZC_HELD
            {
                return;
            }
            let Some(t) = c.torrent.clone() else { return };
            let (take, total) =
                coalesce::take_for_batch(c.requests.iter().map(|r| r.0.length), batch);
            let payload = (total - 13 * take) as u64;
            if !self.global_limit.try_take(payload, now) {
                c.throttled = true;
                return;
            }
            if !t.upload_limit.try_take(payload, now) {
                self.global_limit.give_back(payload);
                let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                    return;
                };
                c.throttled = true;
                return;
            }
            // Job memory is bounded per worker: past the budget a peer waits its turn, so
            // thousands of busy peers cannot each pin a fresh batch buffer.
            let size = total.max(batch);
            if self.job_bytes + size > self.settings.job_memory {
                self.global_limit.give_back(payload);
                t.upload_limit.give_back(payload);
                let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                    return;
                };
                if !c.starved {
                    c.starved = true;
                    self.starved.push_back(slot);
                }
                return;
            }
            let mut buf = self.buffers.pop().unwrap_or_default();
            if buf.len() < size {
                buf.resize(size, 0);
            }
            self.job_bytes += buf.len();
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                self.recycle(buf);
                return;
            };
            c.throttled = false;
            let splice_mode = path == UploadPath::Splice;
            if splice_mode && c.pipe.is_none() {
                match Pipe::new() {
                    Ok(p) => c.pipe = Some(p),
                    Err(_) => {
                        self.recycle(buf);
                        self.close(slot, Reason::IoError);
                        return;
                    }
                }
            }
            let blocks: Vec<(BlockRequest, Instant)> = c.requests.drain(..take).collect();
            let seq = c.next_seq;
            c.next_seq = c.next_seq.wrapping_add(1) & SEQ_MASK;
            // Lay out headers and plan the reads: one readv per run of file-contiguous spans.
            let reqs: Vec<BlockRequest> = blocks.iter().map(|b| b.0).collect();
            let plan = coalesce::plan_job(&t.info().layout, &reqs);
            let mut iovecs: Vec<libc::iovec> = Vec::new();
            let mut failed = false;
            let mut segs: Vec<Seg> = Vec::new();
            // Splice path: bytes from the buffer, extending the previous buffer segment.
            let mem = |segs: &mut Vec<Seg>, start: usize, len: usize| match segs.last_mut() {
                Some(Seg::Mem { start: s, len: l }) if *s + *l == start => *l += len,
                _ => segs.push(Seg::Mem { start, len }),
            };
            for part in &plan.parts {
                match *part {
                    coalesce::Part::Header { at, req: r } => {
                        buf[at..at + 13]
                            .copy_from_slice(&wire::piece_header(r.index, r.begin, r.length));
                        if splice_mode {
                            mem(&mut segs, at, 13);
                        }
                    }
                    coalesce::Part::Pad { at, len } => {
                        buf[at..at + len].fill(0);
                        if splice_mode {
                            mem(&mut segs, at, len);
                        }
                    }
                    coalesce::Part::File {
                        at,
                        file,
                        offset,
                        len,
                    } => match t.files.raw_fd(file) {
                        Some(fd) if splice_mode => segs.push(Seg::File { fd, offset, len }),
                        Some(_) => iovecs.push(libc::iovec {
                            iov_base: buf[at..].as_mut_ptr().cast(),
                            iov_len: len,
                        }),
                        None => failed = true,
                    },
                }
            }
            let at = plan.len;
            // fd, offset, first iovec, count, bytes; the splice path reads nothing.
            let runs: Vec<(RawFd, u64, usize, usize, usize)> = if splice_mode || failed {
                Vec::new()
            } else {
                plan.runs
                    .iter()
                    .filter_map(|r| {
                        let fd = t.files.raw_fd(r.file)?;
                        Some((fd, r.offset, r.first, r.count, r.bytes))
                    })
                    .collect()
            };
            let mut job = Job {
                seq,
                buf,
                len: at,
                iovecs,
                reads_pending: runs.len() as u32,
                read_expected: runs.iter().map(|r| r.4).sum(),
                read_done: 0,
                read_failed: failed,
                sent: 0,
                blocks,
                zc_notifs_pending: 0,
                splice: splice_mode.then_some(SpliceJob {
                    segs,
                    seg: 0,
                    seg_done: 0,
                    in_pipe: 0,
                }),
            };
            if failed {
                job.reads_pending = 0;
            }
            let base = job.iovecs.as_ptr();
            let nruns = if failed { 0 } else { runs.len() };
            c.ops += nruns as u32;
            c.jobs.push_back(job);
            for &(fd, offset, first, count, _) in &runs[..nruns] {
                // SAFETY: `first + count` is within the job's iovec vector, built above.
                let iov = unsafe { base.add(first) };
                let e = opcode::Readv::new(types::Fd(fd), iov, count as u32)
                    .offset(offset)
                    .build()
                    .user_data(ud(READ, seq, slot));
                // SAFETY: the iovec vector and the buffer it points into belong to the job, which
                // stays in the connection (unmoved heap allocations) until its reads complete.
                unsafe { self.push(e) };
            }
            if failed {
                self.close(slot, Reason::DiskError);
                return;
            }
        }
    }

    fn on_read(&mut self, slot: usize, seq: u32, res: i32) {
        let Some(c) = self.conn(slot) else { return };
        let Some(job) = c.jobs.iter_mut().find(|j| j.seq == seq) else {
            return;
        };
        job.reads_pending -= 1;
        if res < 0 {
            job.read_failed = true;
        } else {
            job.read_done += res as usize;
        }
        if job.reads_pending == 0 && (job.read_failed || job.read_done != job.read_expected) {
            self.close(slot, Reason::DiskError);
            return;
        }
        self.pump_send(slot);
    }

    /// Posts the next send if none is in flight: control messages first, then the oldest job
    /// whose reads are done.
    fn pump_send(&mut self, slot: usize) {
        let path = self.upload_path;
        let Some(c) = self.conn(slot) else { return };
        if c.sending != Sending::Nothing || c.closing.is_some() || c.phase == Phase::Connecting {
            return;
        }
        let raw = c.fd.as_raw_fd();
        // Messages must not interleave: a piece message already on its way finishes before any
        // control message goes, and control bytes already handed out finish before a job.
        let job_midway = c.jobs.front().is_some_and(|j| j.sent > 0);
        let ctrl_pending = c.ctrl_sent < c.ctrl_inflight.len() || !c.ctrl.is_empty();
        let (ptr, len, what) = if ctrl_pending && !job_midway {
            if c.ctrl_sent >= c.ctrl_inflight.len() {
                c.ctrl_inflight.clear();
                c.ctrl_sent = 0;
                std::mem::swap(&mut c.ctrl, &mut c.ctrl_inflight);
            }
            let rest = &c.ctrl_inflight[c.ctrl_sent..];
            (rest.as_ptr(), rest.len(), Sending::Control)
        } else if let Some(job) = c.jobs.front().filter(|j| j.reads_pending == 0) {
            if let Some(sj) = &job.splice {
                let seq = job.seq;
                let Some(pipe) = &c.pipe else { return };
                let e = match sj.segs.get(sj.seg) {
                    Some(&Seg::Mem { start, len }) => {
                        let rest = &job.buf[start + sj.seg_done..start + len];
                        opcode::Send::new(types::Fd(raw), rest.as_ptr(), rest.len() as u32)
                            .flags(libc::MSG_NOSIGNAL | libc::MSG_MORE)
                            .build()
                            .user_data(ud(SEND, seq, slot))
                    }
                    Some(&Seg::File { .. }) if sj.in_pipe > 0 => opcode::Splice::new(
                        types::Fd(pipe.read.as_raw_fd()),
                        -1,
                        types::Fd(raw),
                        -1,
                        sj.in_pipe as u32,
                    )
                    .build()
                    .user_data(ud(SPLICE_OUT, seq, slot)),
                    Some(&Seg::File { fd, offset, len }) => opcode::Splice::new(
                        types::Fd(fd),
                        (offset + sj.seg_done as u64) as i64,
                        types::Fd(pipe.write.as_raw_fd()),
                        -1,
                        (len - sj.seg_done).min(pipe.capacity) as u32,
                    )
                    .build()
                    .user_data(ud(SPLICE_IN, seq, slot)),
                    None => return,
                };
                c.sending = Sending::Job(seq);
                c.ops += 1;
                // SAFETY: header bytes live in the front job's buffer, untouched until this
                // operation completes; the pipe and file descriptors outlive the connection's
                // operations (the slot is freed only when none is in flight).
                unsafe { self.push(e) };
                return;
            }
            let rest = &job.buf[job.sent..job.len];
            (rest.as_ptr(), rest.len(), Sending::Job(job.seq))
        } else {
            return;
        };
        let seq = match what {
            Sending::Job(s) => s,
            _ => 0,
        };
        c.sending = what;
        c.ops += 1;
        let zerocopy = path == UploadPath::Zerocopy && matches!(what, Sending::Job(_));
        if zerocopy && let Some(j) = c.jobs.front_mut() {
            j.zc_notifs_pending += 1;
        }
        let e = if zerocopy {
            opcode::SendZc::new(types::Fd(raw), ptr, len as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            opcode::Send::new(types::Fd(raw), ptr, len as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        }
        .user_data(ud(if zerocopy { SEND_ZC } else { SEND }, seq, slot));
        // SAFETY: the bytes live in ctrl_inflight or the front job's buffer; neither is touched
        // until this send completes (sending != Nothing), and zero-copy buffers are held until
        // their notification.
        unsafe { self.push(e) };
    }

    fn on_send(&mut self, slot: usize, seq: u32, res: i32) {
        let now = self.now;
        let Some(c) = self.conn(slot) else { return };
        let what = std::mem::replace(&mut c.sending, Sending::Nothing);
        if res < 0 {
            let reason = if res == -libc::EPIPE || res == -libc::ECONNRESET {
                Reason::PeerClosed
            } else {
                Reason::IoError
            };
            self.close(slot, reason);
            return;
        }
        let n = res as usize;
        c.last_send = now;
        match what {
            Sending::Control => c.ctrl_sent += n,
            Sending::Job(s) if s == seq => {
                let Some(job) = c.jobs.front_mut() else {
                    return;
                };
                job.sent += n;
                if let Some(sj) = &mut job.splice {
                    sj.advance(n);
                }
                if job.sent == job.len {
                    self.finish_front_job(slot);
                }
            }
            _ => {}
        }
        self.pump_uploads(slot);
        self.pump_send(slot);
    }

    /// A splice into the pipe (`SPLICE_IN`) or out of it to the socket (`SPLICE_OUT`) completed.
    fn on_splice(&mut self, slot: usize, seq: u32, res: i32, kind: u8) {
        let now = self.now;
        let Some(c) = self.conn(slot) else { return };
        c.sending = Sending::Nothing;
        if res <= 0 {
            // Nothing read means the file is shorter than the torrent says.
            let reason = match (kind, res) {
                (SPLICE_IN, _) => Reason::DiskError,
                (_, r) if r == -libc::EPIPE || r == -libc::ECONNRESET => Reason::PeerClosed,
                _ => Reason::IoError,
            };
            self.close(slot, reason);
            return;
        }
        let n = res as usize;
        let Some(job) = c.jobs.front_mut().filter(|j| j.seq == seq) else {
            return;
        };
        let Some(sj) = &mut job.splice else { return };
        if kind == SPLICE_IN {
            sj.in_pipe = n;
        } else {
            c.last_send = now;
            sj.in_pipe -= n.min(sj.in_pipe);
            sj.advance(n);
            job.sent += n;
            if job.sent == job.len {
                self.finish_front_job(slot);
                self.pump_uploads(slot);
            }
        }
        self.pump_send(slot);
    }

    /// The front job is fully sent: account it and release its buffer.
    fn finish_front_job(&mut self, slot: usize) {
        let now = self.now;
        let Some(c) = self.conn(slot) else { return };
        let Some(job) = c.jobs.pop_front() else {
            return;
        };
        let payload = (job.len - 13 * job.blocks.len()) as u64;
        c.uploaded += payload;
        c.uploaded_since_unchoke += payload;
        c.uploaded_this_round += payload;
        if let Some(t) = &c.torrent {
            t.uploaded.fetch_add(payload, Ordering::Relaxed);
        }
        for (_, at) in &job.blocks {
            let us = now.saturating_duration_since(*at).as_micros() as u64;
            let _ = self.latency.record(us.max(1));
        }
        self.stats.add(&self.stats.bytes_up, payload);
        self.stats
            .add(&self.stats.blocks_up, job.blocks.len() as u64);
        if let (Some(svc), Some(c)) = (&self.settings.speed, self.conns[slot].as_ref())
            && c.speed.as_ref().is_some_and(|s| s.paying())
        {
            svc.stats.bytes_sold.fetch_add(payload, Ordering::Relaxed);
        }
        if job.zc_notifs_pending > 0 {
            if let Some(c) = self.conn(slot) {
                c.zc_done.push(job);
            }
        } else {
            self.recycle(job.buf);
        }
    }

    fn zc_notified(&mut self, slot: usize, seq: u32) {
        let Some(c) = self.conn(slot) else { return };
        if let Some(j) = c.jobs.iter_mut().find(|j| j.seq == seq) {
            j.zc_notifs_pending = j.zc_notifs_pending.saturating_sub(1);
            return;
        }
        if let Some(i) = c.zc_done.iter().position(|j| j.seq == seq) {
            c.zc_done[i].zc_notifs_pending = c.zc_done[i].zc_notifs_pending.saturating_sub(1);
            if c.zc_done[i].zc_notifs_pending == 0 {
                let job = c.zc_done.swap_remove(i);
                self.recycle(job.buf);
            }
        }
    }

    /// Takes a job buffer back: keeps it for the next job while the pool is under half the
    /// job-memory budget (fresh buffers cost the kernel page zeroing), and lets waiting peers
    /// start jobs with the memory it frees.
    fn recycle(&mut self, buf: Vec<u8>) {
        self.job_bytes = self.job_bytes.saturating_sub(buf.len());
        let pooled: usize = self.buffers.iter().map(Vec::len).sum();
        if pooled + buf.len() <= self.settings.job_memory / 2 {
            self.buffers.push(buf);
        }
        let mut budget_left = self.settings.job_memory.saturating_sub(self.job_bytes);
        while budget_left >= self.settings.batch_bytes {
            let Some(slot) = self.starved.pop_front() else {
                break;
            };
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            c.starved = false;
            if c.closing.is_some() {
                continue;
            }
            budget_left = budget_left.saturating_sub(self.settings.batch_bytes);
            self.pump_uploads(slot);
            self.pump_send(slot);
        }
    }

    /// Starts closing a connection: counts the reason and shuts the socket down so operations
    /// in flight complete; the slot is freed when the last one has.
    fn close(&mut self, slot: usize, reason: Reason) {
        let stats = self.stats.clone();
        let Some(c) = self.conn(slot) else { return };
        if c.closing.is_some() {
            return;
        }
        c.closing = Some(reason);
        stats.add(&stats.disconnects[reason as usize], 1);
        let _ = nix::sys::socket::shutdown(c.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if c.phase == Phase::Connecting {
            // Cancel the connect; the shutdown alone does not end it everywhere.
            let e = opcode::AsyncCancel::new(ud(CONNECT, 0, slot))
                .build()
                .user_data(0);
            // SAFETY: a cancel carries no buffers.
            unsafe { self.push(e) };
        }
    }

    fn maybe_free(&mut self, slot: usize) {
        let Some(c) = self.conn(slot) else { return };
        if c.closing.is_none() || c.ops > 0 {
            return;
        }
        let Some(c) = self.conns[slot].take() else {
            return;
        };
        if let Some(t) = &c.torrent {
            t.peers.fetch_sub(1, Ordering::Relaxed);
            if let Some(a) = c.listen_addr {
                lock(&t.swarm).leave(a);
            }
            if let Some(b) = &c.peer_bitfield {
                for_each_set(b, t.pieces.num_pieces(), |i| t.pieces.peer_lost(i));
            }
        }
        for job in c.jobs.into_iter().chain(c.zc_done) {
            self.recycle(job.buf);
        }
        self.free.push(slot);
        self.live -= 1;
        self.stats.peers.fetch_sub(1, Ordering::Relaxed);
    }

    fn tick(&mut self) {
        if !self.stopping {
            self.post_accept();
        }
        self.drain_speed();
        // Throttled peers retry as tokens refill.
        let throttled = self.slots_where(|c| c.throttled && c.closing.is_none());
        for s in throttled {
            self.pump_uploads(s);
            self.pump_send(s);
        }
        if self.now.duration_since(self.last_second) >= Duration::from_secs(1) {
            self.last_second = self.now;
            self.timeouts();
            self.publish_latency();
        }
        if self.now.duration_since(self.last_rechoke) >= self.settings.rechoke_interval {
            self.last_rechoke = self.now;
            self.rechoke();
        }
        if !self.settings.pex_interval.is_zero()
            && self.now.duration_since(self.last_pex) >= self.settings.pex_interval
        {
            self.last_pex = self.now;
            self.pex_round();
        }
    }

    /// The peer's extension handshake arrived: a peer of a public torrent whose listening
    /// address we know joins the torrent's swarm for peer exchange, and starts hearing it.
    fn pex_join(&mut self, slot: usize, t: &Torrent) {
        use crate::wire::pex;
        let off = self.settings.pex_interval.is_zero();
        let Some(c) = self.conn(slot) else { return };
        if t.meta.info.private || off {
            return;
        }
        let Some(ext) = c.ext.as_ref() else { return };
        c.pex = ext.id_of(pex::EXTENSION_NAME).is_some();
        // An IPv4 peer on a dual-stack listener shows as ::ffff:a.b.c.d; peers know it by its
        // IPv4 address.
        let ip = c.addr.ip().to_canonical();
        // A peer we dialled is listed where we reached it (its `p` may be wrong behind NAT).
        let listen = if c.outgoing {
            Some(SocketAddr::new(ip, c.addr.port()))
        } else {
            ext.p.map(|p| SocketAddr::new(ip, p))
        };
        let flags = if ext.upload_only { pex::FLAG_SEED } else { 0 };
        let Some(listen) = listen else { return };
        let mut swarm = lock(&t.swarm);
        match c.listen_addr {
            // A repeated handshake at the same address changes only the flags (no churn in
            // the log that could push other peers behind it).
            Some(old) if old == listen => swarm.set_flags(listen, flags),
            // One that moves the peer: its count at the old address goes.
            Some(old) => {
                swarm.leave(old);
                swarm.join(listen, flags);
                c.listen_addr = Some(listen);
            }
            None => {
                swarm.join(listen, flags);
                c.listen_addr = Some(listen);
            }
        }
    }

    /// Tells each peer that speaks BEP 11 who joined and left its torrent's swarm since it last
    /// heard (at most 50 of each; never itself; nothing when nothing changed).
    fn pex_round(&mut self) {
        use crate::wire::pex::{self, PexMessage};
        let slots = self.slots_where(|c| c.phase == Phase::Active && c.closing.is_none() && c.pex);
        for slot in slots {
            let Some(c) = self.conn(slot) else { continue };
            let (Some(t), Some(their_id)) = (
                c.torrent.clone(),
                c.ext.as_ref().and_then(|e| e.id_of(pex::EXTENSION_NAME)),
            ) else {
                continue;
            };
            let (changes, heard) =
                lock(&t.swarm).changes_since(c.pex_heard, c.listen_addr, pex::MAX_PEERS);
            c.pex_heard = Some(heard);
            let msg = PexMessage {
                added: changes.added,
                dropped: changes.dropped,
            };
            if msg.is_empty() {
                continue;
            }
            c.queue(Message::Extended {
                id: their_id,
                payload: &msg.encode(),
            });
            self.pump_send(slot);
        }
    }

    fn timeouts(&mut self) {
        let s = self.settings.clone();
        let now = self.now;
        let mut victims = Vec::new();
        let mut keepalive = Vec::new();
        for (i, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            if c.closing.is_some() {
                continue;
            }
            match c.phase {
                Phase::Connecting | Phase::Handshake => {
                    if now.duration_since(c.connected_at) > s.handshake_timeout {
                        victims.push((i, Reason::HandshakeTimeout));
                    }
                }
                Phase::Active => {
                    if now.duration_since(c.last_recv) > s.idle_timeout {
                        victims.push((i, Reason::IdleTimeout));
                    } else if now.duration_since(c.last_send) > s.keepalive_interval
                        && c.sending == Sending::Nothing
                    {
                        keepalive.push(i);
                    }
                }
            }
        }
        for (i, r) in victims {
            self.close(i, r);
            self.maybe_free(i);
        }
        for i in keepalive {
            if let Some(c) = self.conn(i) {
                c.queue(Message::KeepAlive);
            }
            self.pump_send(i);
        }
    }

    fn rechoke(&mut self) {
        self.rechokes += 1;
        let mut cands: Vec<Candidate> =
            self.conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let c = c.as_ref()?;
                    (c.closing.is_none() && c.phase == Phase::Active && c.peer_interested)
                        .then_some(Candidate {
                            key: i,
                            unchoked: !c.am_choking,
                            since: c.choke_changed,
                            uploaded_since_unchoke: c.uploaded_since_unchoke,
                            recent_upload: c.uploaded_this_round,
                        })
                })
                .collect();
        let keep: std::collections::HashSet<usize> = self.choose(&mut cands).into_iter().collect();
        // One optimistic unchoke beyond the slots, rotated every few rounds.
        let rotate = self
            .rechokes
            .is_multiple_of(u64::from(self.settings.optimistic_every.max(1)));
        let mut optimistic: Option<usize> = self
            .conns
            .iter()
            .enumerate()
            .find(|(_, c)| c.as_ref().is_some_and(|c| c.optimistic && !c.am_choking))
            .map(|(i, _)| i);
        if self.slots > 0 && (rotate || optimistic.is_none()) {
            let waiting: Vec<usize> = cands
                .iter()
                .filter(|c| !keep.contains(&c.key))
                .map(|c| c.key)
                .collect();
            if !waiting.is_empty() {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                optimistic = Some(waiting[(self.rng % waiting.len() as u64) as usize]);
            }
        }
        let all: Vec<usize> = self.slots_where(|c| c.phase == Phase::Active && c.closing.is_none());
        for i in all {
            let unchoke = keep.contains(&i) || optimistic == Some(i);
            self.set_choke(i, !unchoke);
            if let Some(c) = self.conn(i) {
                c.optimistic = optimistic == Some(i) && !keep.contains(&i);
                c.uploaded_this_round = 0;
            }
            self.pump_uploads(i);
            self.pump_send(i);
        }
    }

    /// This round's unchoked peers: the seed choker alone, or with speed the paid slots by
    /// auction and the rest by the seed choker.
    fn choose(&mut self, cands: &mut [Candidate]) -> Vec<usize> {
        let (algo, quota) = (self.settings.choker, self.settings.round_robin_quota);
        let Some(svc) = self.settings.speed.clone() else {
            return choker::choose(algo, cands, self.slots, quota);
        };
        let mut bidders: Vec<crate::speed::auction::Bidder> = cands
            .iter()
            .filter_map(|cand| {
                let c = self.conns.get(cand.key)?.as_ref()?;
                c.speed.as_ref()?.bidder(cand.key, c.uploaded)
            })
            .collect();
        // Like the upload slots, the paid slots are split over the workers.
        let workers = self.settings.worker_count().max(1);
        let terms = crate::speed::auction::Terms {
            paid_slots: svc.terms.paid_slots.div_ceil(workers),
            ..svc.terms
        };
        let picked =
            crate::speed::auction::choose(&terms, algo, cands, &mut bidders, self.slots, quota);
        for b in bidders {
            if let Some(s) = self.conn(b.key).and_then(|c| c.speed.as_mut()) {
                s.credit = b.credit;
            }
        }
        picked
    }

    /// The peer's extension handshake arrived: if it speaks `rs_speed`, send our offer.
    fn speed_start(&mut self, slot: usize) {
        let Some(svc) = self.settings.speed.clone() else {
            return;
        };
        let (worker, conn_id) = (self.id, self.next_conn_id);
        let Some(c) = self.conn(slot) else { return };
        let name = crate::speed::protocol::EXTENSION_NAME;
        let Some(their_id) = c.ext.as_ref().and_then(|e| e.id_of(name)) else {
            return;
        };
        if c.speed.is_some() {
            return;
        }
        let to = crate::speed::service::PeerRef {
            worker,
            slot,
            conn_id,
        };
        c.speed = Some(Box::new(PeerSpeed::new(to, c.addr.ip(), their_id)));
        let offer = crate::speed::protocol::SpeedMessage::Offer(svc.offer).encode();
        c.queue(Message::Extended {
            id: their_id,
            payload: &offer,
        });
        self.next_conn_id += 1;
    }

    /// A BEP 9 message: a request is answered with the piece of the info dictionary, or a
    /// reject for a piece that does not exist, a private torrent, a peer that has asked for
    /// more than a few copies of the whole, or one whose queued answers fill its send backlog
    /// (each answer is 16 KiB queued on our side).
    fn metadata_message(&mut self, slot: usize, payload: &[u8], t: &Torrent) {
        use crate::wire::metadata::{self, MetadataMessage};
        let max_backlog = self.settings.max_send_backlog;
        let Some(c) = self.conn(slot) else { return };
        let Some(their_id) = c
            .ext
            .as_ref()
            .and_then(|e| e.id_of(metadata::EXTENSION_NAME))
        else {
            return;
        };
        // Data and rejects: we never ask. A malformed message gets no answer either.
        let Ok(MetadataMessage::Request(piece)) = MetadataMessage::parse(payload) else {
            return;
        };
        let raw = &t.meta.info.raw;
        let allowed = 4 * metadata::piece_count(raw.len()) + 4;
        // A piece that would push the queued control bytes past the send backlog (the peer
        // asked for many at once) is rejected rather than cutting the peer off; it asks again.
        let room = c.ctrl.len() + metadata::PIECE_BYTES + 128 <= max_backlog;
        let answer = if t.meta.info.private || c.metadata_answers >= allowed || !room {
            None
        } else {
            metadata::data_message(raw, piece)
        };
        if answer.is_some() {
            c.metadata_answers = c.metadata_answers.saturating_add(1);
        }
        let reply = answer.unwrap_or_else(|| metadata::reject_message(piece));
        c.queue(Message::Extended {
            id: their_id,
            payload: &reply,
        });
        self.pump_send(slot);
    }

    fn speed_message(&mut self, slot: usize, payload: &[u8], torrent: [u8; 20]) {
        let Some(svc) = self.settings.speed.clone() else {
            return;
        };
        let Some(c) = self.conn(slot) else { return };
        let Some(s) = c.speed.as_mut() else { return };
        if let Some(reply) = s.on_message(payload, &svc, torrent) {
            let id = s.their_id;
            c.queue(Message::Extended {
                id,
                payload: &reply.encode(),
            });
        }
    }

    /// Applies the verifier's answers: receipts (the voucher is durable) and refusals.
    fn drain_speed(&mut self) {
        let Some(rx) = self.speed_outcomes.clone() else {
            return;
        };
        while let Ok(o) = rx.try_recv() {
            let to = o.to();
            let Some(c) = self.conn(to.slot) else {
                continue;
            };
            let served = c.uploaded;
            let Some(s) = c.speed.as_mut().filter(|s| s.to == to) else {
                continue;
            };
            if let Some(reply) = s.on_outcome(&o, served) {
                let id = s.their_id;
                c.queue(Message::Extended {
                    id,
                    payload: &reply.encode(),
                });
                self.pump_send(to.slot);
            }
        }
    }

    fn publish_latency(&mut self) {
        if self.latency.is_empty() {
            return;
        }
        if let Ok(mut shared) = self.stats.latency_us.try_lock() {
            let _ = shared.add(&self.latency);
            self.latency.reset();
        }
    }
}

/// A torrent's shared state behind a mutex; a poisoned lock (a panic elsewhere mid-update) still
/// holds usable data here, so it is taken as it is.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Calls `f` for every piece index below `n` whose bit is set in a wire-form bitfield.
fn for_each_set(bits: &[u8], n: u32, mut f: impl FnMut(u32)) {
    for i in 0..n {
        if bits
            .get((i / 8) as usize)
            .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
        {
            f(i);
        }
    }
}

/// A parsed message detached from the receive buffer.
enum OwnedMsg {
    Simple(Message<'static>),
    Bitfield(Vec<u8>),
    Extended { id: u8, payload: Vec<u8> },
}

impl From<&Message<'_>> for OwnedMsg {
    fn from(m: &Message<'_>) -> Self {
        match *m {
            Message::Bitfield(b) => OwnedMsg::Bitfield(b.to_vec()),
            Message::Extended { id, payload } => OwnedMsg::Extended {
                id,
                payload: payload.to_vec(),
            },
            // Payload-carrying messages we do not use keep only their header fields.
            Message::Piece { index, begin, .. } => OwnedMsg::Simple(Message::Piece {
                index,
                begin,
                data: &[],
            }),
            Message::Unknown { id, .. } => OwnedMsg::Simple(Message::Unknown { id, payload: &[] }),
            Message::KeepAlive => OwnedMsg::Simple(Message::KeepAlive),
            Message::Choke => OwnedMsg::Simple(Message::Choke),
            Message::Unchoke => OwnedMsg::Simple(Message::Unchoke),
            Message::Interested => OwnedMsg::Simple(Message::Interested),
            Message::NotInterested => OwnedMsg::Simple(Message::NotInterested),
            Message::Have(i) => OwnedMsg::Simple(Message::Have(i)),
            Message::Request(r) => OwnedMsg::Simple(Message::Request(r)),
            Message::Cancel(r) => OwnedMsg::Simple(Message::Cancel(r)),
            Message::Port(p) => OwnedMsg::Simple(Message::Port(p)),
            Message::Suggest(i) => OwnedMsg::Simple(Message::Suggest(i)),
            Message::HaveAll => OwnedMsg::Simple(Message::HaveAll),
            Message::HaveNone => OwnedMsg::Simple(Message::HaveNone),
            Message::Reject(r) => OwnedMsg::Simple(Message::Reject(r)),
            Message::AllowedFast(i) => OwnedMsg::Simple(Message::AllowedFast(i)),
        }
    }
}

trait RawEventFd {
    fn as_fd_raw(&self) -> RawFd;
}

impl RawEventFd for EventFd {
    fn as_fd_raw(&self) -> RawFd {
        use std::os::fd::AsFd;
        self.as_fd().as_raw_fd()
    }
}
