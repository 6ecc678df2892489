//! One worker: an io_uring event loop that owns its listener and its peers.
//!
//! Everything a peer does is a completion: accept, recv, disk read, send. Connections live in a
//! slab indexed by the `user_data` of each submission; a slot is freed only once every
//! operation that points into it has completed, so the kernel never writes into freed memory.
//! The worker routes each completion to its connection ([`Conn`]) together with the worker's
//! own state ([`Core`]), runs the timers (ticks, choking rounds, peer exchange) and the
//! commands of the engine handle.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use io_uring::{cqueue, types};
use nix::sys::eventfd::EventFd;
use socket2::{Domain, Socket, Type};

use super::conn::Conn;
use super::core::Core;
use super::encryption::Dial;
use super::peer::{Phase, Rules, Tick};
use super::ratelimit::TokenBucket;
use super::stats::new_histogram;
use super::upload::JobMemory;
use super::{Command, Reason, Settings, WorkerStats};
use crate::choking::{self, Candidate, Held, PayerAdmission, Policy, SlotKind, Slots};
use crate::speed::service::{Outcome, SpeedService};
use crate::uring::{Op, UserData, ops};
use crate::wire::Message;

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
    pub speed: Option<Arc<SpeedService>>,
    pub listener: Socket,
    pub commands: Receiver<Command>,
    /// Torrents to start or stop serving (never full; drained first).
    pub torrents: Receiver<Command>,
    pub wake: Arc<EventFd>,
    pub stats: Arc<WorkerStats>,
    pub global_limit: Arc<TokenBucket>,
    pub download_limit: Arc<TokenBucket>,
    /// Connections per address still in their handshake, over all workers.
    pub handshaking: Arc<super::ip_limit::IpCounts>,
}

const TICK_EVERY: Duration = Duration::from_millis(50);

/// A round-robin slot is held for at most this many `rechoke_interval`s while peers wait,
/// whatever its holder moved (its quota ends it sooner): 30 s by default, about what the
/// 4 MiB quota takes at 140 KB/s.
const ROUND_ROBIN_TURN: u32 = 3;

struct Worker {
    core: Core,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    listener: Socket,
    commands: Receiver<Command>,
    torrents: Receiver<Command>,
    wake: Arc<EventFd>,
    wake_buf: Box<[u8; 8]>,
    tick_ts: Box<types::Timespec>,
    last_second: Instant,
    last_rechoke: Instant,
    /// The last round (or a payer's admission) left free peers with no slot but the
    /// optimistic unchoke: the next round comes sooner.
    free_starved: bool,
    /// A free peer was refused a slot since the last tick: `free_starved` is looked at again.
    starved_stale: bool,
    /// A round at the next tick, between the regular ones: a slot was taken from a peer that
    /// stopped reading, one stands unused while peers wait, or one was given up.
    rechoke_soon: bool,
    last_pex: Instant,
    /// Until when the advertised `reqq` is a share of the queue budget (see
    /// [`super::reqq::CONGESTION_HOLD`]).
    congested_until: Option<Instant>,
    /// The worker's request count when it last looked at its queue for `reqq`: a burst of
    /// [`super::reqq::burst`] since makes it look again before the tick.
    requests_at_reqq: u64,
    rechokes: u64,
    stopping: bool,
    accept_posted: bool,
    rng: u64,
    /// Answers of the speed verifier.
    speed_outcomes: Option<Receiver<Outcome>>,
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
    let workers = settings.worker_count();
    let paid = ctx.speed.as_ref().map_or(0, |s| s.terms.paid_slots);
    let now = Instant::now();
    let port = ctx
        .listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(0, |a| a.port());
    let core = Core {
        ring,
        rules: Rules::new(&settings, port, ctx.speed.is_some()),
        stats: ctx.stats,
        global_limit: ctx.global_limit,
        download_limit: ctx.download_limit,
        handshaking: ctx.handshaking,
        fetches: super::fetch::Fetches::new(
            settings.download_memory,
            settings.download_writes == super::settings::DownloadWrites::Direct,
        ),
        rng: (ctx.id as u64 + 7).wrapping_mul(0x2545_f491_4f6c_dd1d) | 1,
        torrents: HashMap::default(),
        obfuscated: HashMap::default(),
        v2_ids: HashMap::default(),
        memory: JobMemory::new(settings.job_memory, settings.batch_bytes),
        memo: Default::default(),
        token_queue: VecDeque::new(),
        latency: new_histogram(),
        now,
        upload_path: settings.upload_path.resolve(),
        slots: Slots::per_worker(settings.upload_slots, paid, workers),
        held: Held::default(),
        slot_opened: false,
        speed: ctx.speed.clone(),
        id: ctx.id,
        next_conn_id: 0,
        settings,
    };
    let mut w = Worker {
        core,
        conns: Vec::new(),
        free: Vec::new(),
        live: 0,
        listener: ctx.listener,
        commands: ctx.commands,
        torrents: ctx.torrents,
        wake: ctx.wake.clone(),
        wake_buf: Box::new([0; 8]),
        tick_ts: Box::new(types::Timespec::from(TICK_EVERY)),
        last_second: now,
        last_rechoke: now,
        free_starved: false,
        starved_stale: false,
        rechoke_soon: false,
        last_pex: now,
        congested_until: None,
        requests_at_reqq: 0,
        rechokes: 0,
        stopping: false,
        accept_posted: false,
        rng: (ctx.id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ now.elapsed().as_nanos() as u64,
        speed_outcomes: ctx
            .speed
            .as_ref()
            .map(|s| s.register_worker(ctx.id, ctx.wake.clone())),
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

/// A peer's socket as the engine wants it: no Nagle delay (blocks go as soon as they are
/// whole), and at most `unsent_bytes` waiting in the kernel for the peer's window
/// (`TCP_NOTSENT_LOWAT`): what a peer asked for beyond that stays in its request queue, where
/// a choke, a paying peer's turn or a shed still reach it, instead of behind megabytes the
/// socket already holds. Both are advice: a socket that refuses them still works.
fn tune_socket(sock: &socket2::SockRef<'_>, settings: &Settings) {
    let _ = sock.set_tcp_nodelay(true);
    if settings.unsent_bytes > 0 {
        let _ = sock.set_tcp_notsent_lowat(settings.unsent_bytes);
    }
}

impl Worker {
    fn event_loop(&mut self) {
        self.post_accept();
        self.post_wake();
        self.post_tick();
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            match self.core.ring.submit_and_wait(1) {
                Ok(n) => self.core.stats.add(&self.core.stats.submissions, n as u64),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(_) => break,
            }
            self.core.now = Instant::now();
            cqes.clear();
            cqes.extend(
                self.core
                    .ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            let stats = &self.core.stats;
            stats.add(&stats.completions, cqes.len() as u64);
            for &(user_data, res, flags) in &cqes {
                self.complete(user_data, res, flags);
            }
            let core = &mut self.core;
            core.fetches.hash_due(super::fetch::Io {
                ring: &mut core.ring,
                stats: &core.stats,
                now: core.now,
            });
            self.fetch_events();
            self.wake_starved();
            let asked = self.core.stats.requests.load(Ordering::Relaxed);
            let budget = self.core.settings.queue_budget_blocks;
            if asked.wrapping_sub(self.requests_at_reqq) >= super::reqq::burst(budget) {
                self.advertise_reqq();
            }
            if self.stopping && self.live == 0 && !self.core.fetches.writes_in_flight() {
                break;
            }
        }
        self.publish_latency();
    }

    fn post_accept(&mut self) {
        if self.stopping || self.accept_posted {
            return;
        }
        let e = ops::accept_multishot(self.listener.as_raw_fd(), UserData::new(Op::Accept, 0, 0));
        // SAFETY: accept writes no user memory (no address buffer is passed).
        unsafe { self.core.push(e) };
        self.accept_posted = true;
    }

    fn post_wake(&mut self) {
        let fd = self.wake.as_fd_raw();
        let e = ops::read(fd, &mut self.wake_buf[..], UserData::new(Op::Wake, 0, 0));
        // SAFETY: wake_buf is a Box owned by the worker, alive for the whole loop.
        unsafe { self.core.push(e) };
    }

    fn post_tick(&mut self) {
        let e = ops::timeout(&self.tick_ts, UserData::new(Op::Tick, 0, 0));
        // SAFETY: tick_ts is a Box owned by the worker, alive for the whole loop.
        unsafe { self.core.push(e) };
    }

    fn complete(&mut self, user_data: u64, res: i32, flags: u32) {
        let Some(ud) = UserData::decode(user_data) else {
            return;
        };
        match ud.op {
            Op::Accept => {
                if !cqueue::more(flags) {
                    self.accept_posted = false;
                }
                if res >= 0 {
                    // SAFETY: a successful accept returns a new descriptor that we now own.
                    let fd = unsafe { OwnedFd::from_raw_fd(res) };
                    self.accepted(fd);
                    self.post_accept();
                }
                // After a failure (EMFILE when out of descriptors, say) the next tick re-arms
                // the accept, rather than spinning on an error that persists.
            }
            Op::Wake => {
                self.drain_commands();
                self.drain_speed();
                if !self.stopping {
                    self.post_wake();
                }
            }
            Op::Tick => {
                self.tick();
                self.post_tick();
            }
            // A cancel's own completion needs nothing.
            Op::Cancel => {}
            Op::Write => {
                let core = &mut self.core;
                let io = super::fetch::Io {
                    ring: &mut core.ring,
                    stats: &core.stats,
                    now: core.now,
                };
                core.fetches.write_done(io, ud.slot, ud.seq as usize, res);
            }
            _ => self.conn_completion(ud, res),
        }
    }

    /// A completion of one connection's operation.
    fn conn_completion(&mut self, ud: UserData, res: i32) {
        let (slot, seq) = (ud.slot, ud.seq);
        let core = &mut self.core;
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        c.ops -= 1;
        let closing = c.closing.is_some();
        {
            match ud.op {
                Op::Read if closing => c.on_read_closing(seq),
                _ if closing => {}
                Op::Recv => c.on_recv(slot, res, core),
                Op::Send => c.on_send(slot, seq, res, core),
                Op::Read => c.on_read(slot, seq, res, core),
                Op::Connect => c.on_connect(slot, res, core),
                Op::Accept | Op::Wake | Op::Tick | Op::Cancel | Op::Write => {}
            }
            if std::mem::take(&mut c.wants_paid_slot) {
                self.admit_payer(slot);
                self.check_free_starved();
            } else if std::mem::take(&mut c.slot_refused) {
                // Looked at once per tick, not per message: a peer flipping its interest must
                // not make every message scan the worker's connections.
                self.starved_stale = true;
            }
        }
        self.maybe_free(slot);
        // Memory a finished job (or a freed connection) gave back goes to waiting peers now, and
        // tokens refilled since go to the peers waiting for them.
        self.wake_starved();
        if !self.core.token_queue.is_empty() {
            self.serve_token_queue();
        }
    }

    /// Peers waiting for rate-limit tokens take them in turn, as long as the global bucket
    /// gives any: after every completion and every tick, so the queue never waits for a tick
    /// while tokens are there. One refused again goes to the back; a refusal by the global
    /// bucket ends the turn (nobody else would get any either), one by a torrent's bucket does
    /// not (peers of other torrents may).
    fn serve_token_queue(&mut self) {
        for _ in 0..self.core.token_queue.len() {
            let core = &mut self.core;
            let Some(slot) = core.token_queue.pop_front() else {
                break;
            };
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if !c.throttled || c.closing.is_some() {
                continue;
            }
            c.throttled = false;
            c.token_turn = true;
            c.pump_uploads(slot, core);
            c.token_turn = false;
            c.pump_send(slot, core);
            if c.throttled && c.throttled_by == Some(super::upload::Refused::Global) {
                break;
            }
        }
    }

    /// Peers waiting for job memory try again as buffers come back.
    fn wake_starved(&mut self) {
        for slot in self.core.memory.wake() {
            let core = &mut self.core;
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            c.starved = false;
            if c.closing.is_none() {
                c.memory_turn = true;
                c.pump_uploads(slot, core);
                c.memory_turn = false;
                c.pump_send(slot, core);
            }
        }
    }

    fn peer_states(&self) -> super::PeerStates {
        let mut s = super::PeerStates::default();
        for c in self.conns.iter().flatten().filter(|c| c.closing.is_none()) {
            let p = &c.peer;
            let n = match (p.phase(), p.am_choking(), p.peer_interested()) {
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
                client: c.peer.ext().and_then(|e| e.v.clone()),
                uploaded: c.peer.uploaded,
                interested: c.peer.peer_interested(),
                choked: c.peer.am_choking(),
                queued_requests: c.peer.requests().len(),
                connected_s: now.duration_since(c.peer.connected_at()).as_secs(),
            })
            .collect()
    }

    fn drain_commands(&mut self) {
        // Torrents first: a dial queued after an add finds its torrent.
        while let Ok(cmd) = self.torrents.try_recv() {
            self.command(cmd);
        }
        while let Ok(cmd) = self.commands.try_recv() {
            self.command(cmd);
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::AddTorrent(t) => {
                self.core
                    .obfuscated
                    .insert(crate::mse::obfuscated(&t.id), t.id);
                if let Some(v2) = t.v2_id.filter(|v2| *v2 != t.id) {
                    self.core.v2_ids.insert(v2, t.id);
                    // An MSE peer of a hybrid torrent may name it by its v2 hash too; that
                    // hash is then the handshake's SKEY, so it is what the lookup answers.
                    self.core.obfuscated.insert(crate::mse::obfuscated(&v2), v2);
                }
                self.core.torrents.insert(t.id, t);
            }
            Command::RemoveTorrent(id) => {
                self.core.obfuscated.remove(&crate::mse::obfuscated(&id));
                if let Some(t) = self.core.torrents.remove(&id) {
                    if let Some(v2) = t.v2_id {
                        self.core.v2_ids.remove(&v2);
                        self.core.obfuscated.remove(&crate::mse::obfuscated(&v2));
                    }
                    self.core.fetches.drop_torrent(&t);
                }
                self.close_where(Reason::TorrentRemoved, |c| {
                    c.torrent.as_ref().is_some_and(|t| t.id == id)
                });
            }
            Command::Connect { addr, torrent } => {
                let dial = self.core.settings.encryption.dial();
                self.connect(addr, torrent, dial)
            }
            Command::Peers { torrent, reply } => {
                let _ = reply.send(self.peers_of(torrent));
            }
            Command::PeerStates(reply) => {
                let _ = reply.send(self.peer_states());
            }
            Command::Shutdown => {
                self.stopping = true;
                self.close_where(Reason::Shutdown, |_| true);
                // Stop accepting: closing the listener ends the multishot accept.
                let _ = nix::sys::socket::shutdown(
                    self.listener.as_raw_fd(),
                    nix::sys::socket::Shutdown::Both,
                );
            }
        }
    }

    /// Closes every connection `f` picks.
    fn close_where(&mut self, reason: Reason, f: impl Fn(&Conn) -> bool) {
        for slot in 0..self.conns.len() {
            if let Some(c) = self.conns[slot].as_mut().filter(|c| f(c)) {
                c.close(slot, reason, &mut self.core);
            }
            self.maybe_free(slot);
        }
    }

    fn insert(&mut self, conn: Conn) -> usize {
        self.live += 1;
        self.core.stats.peers.fetch_add(1, Ordering::Relaxed);
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
        self.core.stats.add(&self.core.stats.accepted, 1);
        let sock = socket2::SockRef::from(&fd);
        let addr = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        tune_socket(&sock, &self.core.settings);
        let slot = self.insert(Conn::incoming(fd, addr, self.core.now));
        let too_many = self.live > self.core.settings.max_peers_per_worker;
        let core = &mut self.core;
        if let Some(c) = self.conns[slot].as_mut() {
            if self.stopping {
                c.close(slot, Reason::Shutdown, core);
            } else if too_many {
                c.close(slot, Reason::TooManyPeers, core);
            } else if !core
                .handshaking
                .try_add(addr.ip(), core.settings.max_connections_per_ip)
            {
                c.close(slot, Reason::TooManyFromIp, core);
            } else {
                c.counted_handshake = true;
                c.post_recv(slot, core);
            }
        }
        self.maybe_free(slot);
    }

    /// Dials `addr` for `torrent`, plain or with MSE.
    fn connect(&mut self, addr: SocketAddr, torrent: [u8; 20], dial: Dial) {
        let Some(t) = self.core.torrents.get(&torrent).cloned() else {
            return;
        };
        if super::lock(&t.fetch.blame).is_banned(addr.ip()) {
            t.fetch.banned_refusals.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(sock) = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None) else {
            return;
        };
        if t.peers.load(Ordering::Relaxed) as usize >= self.core.settings.max_peers_per_torrent
            || !super::lock(&t.fetch.dialled).insert(addr)
        {
            return;
        }
        if !t
            .ips
            .try_add(addr.ip(), self.core.settings.max_connections_per_ip)
        {
            super::lock(&t.fetch.dialled).remove(&addr);
            return;
        }
        tune_socket(&socket2::SockRef::from(&sock), &self.core.settings);
        t.peers.fetch_add(1, Ordering::Relaxed);
        let slot = self.insert(Conn::outgoing(sock.into(), addr, t, dial, self.core.now));
        if let Some(c) = self.conns[slot].as_mut() {
            c.counted_torrent = true;
            c.post_connect(slot, &mut self.core);
        }
    }

    fn maybe_free(&mut self, slot: usize) {
        let done = self
            .conns
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.closing.is_some() && c.ops == 0);
        if !done {
            return;
        }
        let Some(c) = self.conns[slot].take() else {
            return;
        };
        let retry = c
            .retry_plain
            .then(|| (c.addr, c.torrent.as_ref().map(|t| t.id)));
        c.release(&mut self.core);
        self.free.push(slot);
        self.live -= 1;
        self.core.stats.peers.fetch_sub(1, Ordering::Relaxed);
        // Its MSE dial failed and the policy is `enabled`: once more in plain (released
        // first, so the address is no longer counted as dialled).
        if let Some((addr, Some(id))) = retry
            && !self.stopping
        {
            self.connect(addr, id, Dial::Plain);
        }
    }

    fn tick(&mut self) {
        self.post_accept();
        if std::mem::take(&mut self.starved_stale) {
            self.check_free_starved();
        }
        self.drain_speed();
        self.serve_token_queue();
        let now = self.core.now;
        if now.duration_since(self.last_second) >= Duration::from_secs(1) {
            self.last_second = now;
            self.timeouts();
            self.publish_latency();
            self.fetch_second();
            self.core.fetches.second(now);
            self.core.memo.prune(now);
        }
        self.tell_haves();
        self.refill_requests();
        self.advertise_reqq();
        let interval =
            choking::next_round_in(self.core.settings.rechoke_interval, self.free_starved);
        let regular = now.duration_since(self.last_rechoke) >= interval;
        // With unlimited slots (0) nobody waits for the one given up.
        let opened = std::mem::take(&mut self.core.slot_opened) && self.core.slots.total != 0;
        let soon = std::mem::take(&mut self.rechoke_soon) | opened;
        if regular {
            self.last_rechoke = now;
        }
        if regular || soon {
            self.rechoke(regular);
        }
        let pex = self.core.settings.pex_interval;
        if !pex.is_zero() && now.duration_since(self.last_pex) >= pex {
            self.last_pex = now;
            self.pex_round();
        }
    }

    /// Once a second: handshake and idle timeouts, keep-alives; slots that stand unused.
    fn timeouts(&mut self) {
        // A slot held unused while a peer waits for one: a round gives it to the peer.
        let (mut unused, mut waiting) = (false, false);
        let stall = slot_stall(&self.core.settings);
        for slot in 0..self.conns.len() {
            let core = &mut self.core;
            let Some(c) = self.conns[slot].as_mut().filter(|c| c.closing.is_none()) else {
                continue;
            };
            let idle = c.sending == super::conn::Sending::Nothing;
            let undelivered = c.check_delivery(core.now);
            c.reads_nothing = undelivered >= stall;
            if let Some(reason) = stalled(c, undelivered, core) {
                c.close(slot, reason, core);
                self.maybe_free(slot);
                continue;
            }
            if c.slot.is_some() && c.reads_nothing {
                // It reads nothing: its slot goes to a peer that does, in a round right away
                // (it may win one back in a later round once it reads again).
                c.set_choke(None, core);
                c.pump_send(slot, core);
                self.rechoke_soon = true;
            }
            unused |= c.holds_unused_slot(core.now, stall);
            waiting |=
                c.slot.is_none() && !c.reads_nothing && c.is_active() && c.peer.peer_interested();
            match c.peer.on_tick(core.now, &core.rules, idle, &mut c.ctrl) {
                Ok(Tick::KeepAlive) => c.pump_send(slot, core),
                Ok(Tick::Snubbed) => {
                    c.give_back_requests(slot, core);
                    c.fill_requests(slot, core);
                }
                Ok(Tick::Nothing) => {}
                Err(reason) => c.close(slot, reason, core),
            }
            self.maybe_free(slot);
        }
        if unused && waiting {
            self.rechoke_soon = true;
        }
    }

    /// A choking round over this worker's interested peers (see [`crate::choking::round`]).
    /// A `regular` one, every `rechoke_interval`, also starts the next measuring interval (the
    /// bytes each peer moved) and rotates the optimistic unchoke every `optimistic_every`
    /// rounds; one held between them (a slot given up or unused) keeps both, so however many
    /// there are, rates are compared over whole intervals and the rotation keeps its pace.
    fn rechoke(&mut self, regular: bool) {
        if regular {
            self.rechokes += 1;
        }
        let mut cands: Vec<Candidate> = Vec::new();
        let mut bidders = Vec::new();
        let mut optimistic = None;
        let (now, stall) = (self.core.now, slot_stall(&self.core.settings));
        for (i, c) in self.conns.iter().enumerate() {
            let Some(c) = c.as_ref().filter(|c| c.is_active()) else {
                continue;
            };
            if c.slot == Some(SlotKind::Optimistic) {
                optimistic = Some(i);
            }
            if !c.peer.peer_interested() || c.reads_nothing {
                continue;
            }
            cands.push(c.candidate(i, now, stall));
            if let Some(b) = c.speed.as_ref().and_then(|s| s.bidder(i, c.peer.uploaded)) {
                bidders.push(b);
            }
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let s = &self.core.settings;
        let policy = Policy {
            algo: s.choker,
            quota: s.round_robin_quota,
            turn_ended: self
                .core
                .now
                .checked_sub(s.rechoke_interval * ROUND_ROBIN_TURN),
            slots: self.core.slots,
            terms: self.core.speed.as_ref().map(|svc| choking::auction::Terms {
                paid_slots: self.core.slots.paid,
                ..svc.terms
            }),
            rotate_optimistic: regular
                && self
                    .rechokes
                    .is_multiple_of(u64::from(s.optimistic_every.max(1))),
        };
        let choice = choking::round(&policy, &mut cands, &mut bidders, optimistic, self.rng);
        self.free_starved = choice.free_starved;
        for b in &bidders {
            if let Some(s) = self.conns[b.key].as_mut().and_then(|c| c.speed.as_mut()) {
                s.credit = b.credit;
                s.priority = b.priority;
            }
        }
        // Chokes first, so the held counts never exceed the slots midway.
        for pass_unchoke in [false, true] {
            for slot in 0..self.conns.len() {
                let core = &mut self.core;
                let Some(c) = self.conns[slot].as_mut().filter(|c| c.is_active()) else {
                    continue;
                };
                let kind = choice.slot_of(slot);
                if kind.is_some() != pass_unchoke {
                    continue;
                }
                c.set_choke(kind, core);
                c.pump_uploads(slot, core);
                c.pump_send(slot, core);
            }
        }
        if regular {
            for c in self.conns.iter_mut().flatten() {
                c.peer.uploaded_this_round = 0;
                c.peer.new_download_round();
            }
        }
    }

    /// A payer's bid was confirmed: a slot at once if it is interested and holds no paid slot
    /// (see [`choking::admit_payer`]); a free slot it holds already becomes paid when one is
    /// left.
    fn admit_payer(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_ref() else {
            return;
        };
        let wanted = c.is_active()
            && c.peer.peer_interested()
            && c.slot != Some(SlotKind::Paid)
            && c.paying();
        if !wanted {
            return;
        }
        let mut held = self.core.held;
        if let Some(own) = c.slot {
            // Its own slot is given up first, so it never displaces anyone to keep it.
            held.release(own);
        }
        // Free peers (not payers) holding slots: the ones a payer may displace.
        let (now, stall) = (self.core.now, slot_stall(&self.core.settings));
        let holders: Vec<Candidate> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                let free_holder = c.is_active() && c.slot == Some(SlotKind::Free) && !c.paying();
                (i != slot && free_holder).then(|| c.candidate(i, now, stall))
            })
            .collect();
        let (victim, kind) = match choking::admit_payer(&self.core.slots, held, &holders) {
            PayerAdmission::Wait => return,
            PayerAdmission::Unchoke(kind) => (None, kind),
            PayerAdmission::Replace(v, kind) => (Some(v), kind),
        };
        if kind == SlotKind::Free && c.slot.is_some() {
            // It holds a slot already and no paid one is left: nothing to gain.
            return;
        }
        let core = &mut self.core;
        if let Some(v) = victim
            && let Some(c) = self.conns[v].as_mut()
        {
            c.set_choke(None, core);
            c.pump_send(v, core);
        }
        if let Some(c) = self.conns[slot].as_mut() {
            c.set_choke(Some(kind), core);
            c.pump_uploads(slot, core);
            c.pump_send(slot, core);
        }
    }

    /// Whether free peers wait while payers hold every slot: they then have only the optimistic
    /// unchoke, so rounds come sooner (`choking::next_round_in`). Checked when a free peer finds
    /// no slot and after a payer's admission; each round sets it again.
    fn check_free_starved(&mut self) {
        // Without the speed layer nobody pays, so a free peer holds every held slot: no scan.
        if self.core.speed.is_none() {
            self.free_starved = false;
            return;
        }
        let (mut waiting, mut served) = (false, false);
        for c in self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.is_active() && !c.paying())
        {
            served |= c.slot == Some(SlotKind::Free);
            waiting |= c.slot.is_none() && c.peer.peer_interested();
        }
        self.free_starved = waiting && !served;
    }

    /// Every tick, and after a burst of requests: the `reqq` for this many unchoked peers and
    /// this long a queue; told again to every peer when it moved by a quarter (see
    /// [`super::reqq`]). Ticks, not seconds: while a thousand peers arrive in half a second, the ones already in must hear the smaller share
    /// before they have queued a second's worth at the larger. While it is below
    /// `engine.max_reqq` (the worker falls behind), every queue longer than the share is shed
    /// to it ([`super::peer::Peer::shed`]): what peers queued before they heard it would
    /// otherwise keep every request waiting behind it for as long as it takes to drain.
    fn advertise_reqq(&mut self) {
        self.requests_at_reqq = self.core.stats.requests.load(Ordering::Relaxed);
        let queued: usize = self
            .conns
            .iter()
            .flatten()
            .map(|c| c.peer.requests().len())
            .sum();
        let t = self.core.now;
        let budget = self.core.settings.queue_budget_blocks;
        if super::reqq::congested(queued, budget) {
            self.congested_until = Some(t + super::reqq::CONGESTION_HOLD);
        }
        let congested = self.congested_until.is_some_and(|until| t < until);
        let rules = &self.core.rules;
        let now =
            super::reqq::advertised(self.core.held.total(), rules.max_reqq, congested, budget);
        let tell = super::reqq::worth_telling(rules.advertised_reqq, now);
        if tell {
            self.core.rules.advertised_reqq = now;
        }
        let shed = super::reqq::shedding(self.core.rules.advertised_reqq, self.core.rules.max_reqq);
        if !tell && !shed {
            return;
        }
        for slot in 0..self.conns.len() {
            let core = &mut self.core;
            let Some(c) = self.conns[slot].as_mut().filter(|c| c.is_active()) else {
                continue;
            };
            let mut wrote = false;
            if tell {
                let Some(t) = c.torrent.clone() else { continue };
                let view = super::peer::TorrentView::of(&t);
                wrote = c
                    .peer
                    .readvertise(view, &core.rules, c.addr.ip(), &mut c.ctrl);
            }
            if shed {
                let n = c.peer.shed(&core.rules, &mut c.ctrl) as u64;
                if n > 0 {
                    core.stats.add_shed(n);
                    wrote = true;
                }
            }
            if wrote {
                c.pump_send(slot, core);
            }
        }
    }

    /// Tells each peer that speaks BEP 11 who joined and left its torrent's swarm since it last
    /// heard (at most 50 of each; never itself; nothing when nothing changed).
    fn pex_round(&mut self) {
        use crate::wire::pex::{self, PexMessage};
        for slot in 0..self.conns.len() {
            let core = &mut self.core;
            let Some(c) = self.conns[slot].as_mut().filter(|c| c.is_active() && c.pex) else {
                continue;
            };
            let (Some(t), Some(their_id)) = (
                c.torrent.as_deref(),
                c.peer.ext().and_then(|e| e.id_of(pex::EXTENSION_NAME)),
            ) else {
                continue;
            };
            let (changes, heard) =
                super::lock(&t.swarm).changes_since(c.pex_heard, c.listen_addr, pex::MAX_PEERS);
            c.pex_heard = Some(heard);
            let msg = PexMessage {
                added: changes.added,
                dropped: changes.dropped,
            };
            if msg.is_empty() {
                continue;
            }
            Message::Extended {
                id: their_id,
                payload: &msg.encode(),
            }
            .encode(&mut c.ctrl);
            c.pump_send(slot, core);
        }
    }

    /// Applies the verifier's answers: receipts (the voucher is durable) and refusals; a
    /// confirmed bid takes a paid slot at once.
    fn drain_speed(&mut self) {
        let Some(rx) = self.speed_outcomes.clone() else {
            return;
        };
        while let Ok(o) = rx.try_recv() {
            let to = o.to();
            let core = &mut self.core;
            let Some(c) = self.conns.get_mut(to.slot).and_then(Option::as_mut) else {
                continue;
            };
            let served = c.peer.uploaded;
            let Some(s) = c.speed.as_mut().filter(|s| s.to == to) else {
                continue;
            };
            let was_paying = s.paying();
            let reply = s.on_outcome(&o, served);
            if s.forger() {
                c.close(to.slot, Reason::ForgedVouchers, core);
                self.maybe_free(to.slot);
                continue;
            }
            let confirmed = matches!(o, Outcome::Bid { result: Ok(_), .. }) && s.paying();
            if let Some(reply) = reply {
                Message::Extended {
                    id: s.their_id,
                    payload: &reply.encode(),
                }
                .encode(&mut c.ctrl);
                c.pump_send(to.slot, core);
            }
            if confirmed && !was_paying {
                self.admit_payer(to.slot);
                self.check_free_starved();
            }
        }
    }

    /// After a batch of completions: closes banned peers, cancels endgame requests another
    /// peer answered, and tells peers of pieces just written.
    fn fetch_events(&mut self) {
        let f = &mut self.core.fetches;
        if !f.news && f.banned.is_empty() && f.cancels.is_empty() {
            return;
        }
        let banned = std::mem::take(&mut f.banned);
        let cancels = std::mem::take(&mut f.cancels);
        for (id, ip) in banned {
            let ip = ip.to_canonical();
            self.close_where(Reason::BadData, |c| {
                c.addr.ip().to_canonical() == ip && c.torrent.as_ref().is_some_and(|t| t.id == id)
            });
        }
        if !cancels.is_empty() {
            for slot in 0..self.conns.len() {
                let core = &mut self.core;
                let Some(c) = self.conns[slot].as_mut().filter(|c| c.is_active()) else {
                    continue;
                };
                let Some(id) = c.torrent.as_ref().map(|t| t.id) else {
                    continue;
                };
                let mut any = false;
                for (_, req) in cancels.iter().filter(|(t, _)| *t == id) {
                    any |= c.peer.cancel(*req, &mut c.ctrl);
                }
                if any {
                    c.fill_requests(slot, core);
                    c.pump_send(slot, core);
                }
            }
        }
        self.tell_haves();
    }

    /// Tells this worker's peers of the pieces any worker verified since they were last told
    /// (skipping peers that have the piece), updates our interest in them, and parts with
    /// seeds once a torrent is complete.
    fn tell_haves(&mut self) {
        self.core.fetches.news = false;
        let mut news: Vec<([u8; 20], Vec<u32>)> = Vec::new();
        for t in self.core.torrents.values().filter(|t| t.downloads()) {
            let f = self.core.fetches.torrents.entry(t.id).or_default();
            if t.fetch.done_len.load(Ordering::Acquire) <= f.told {
                continue;
            }
            let log = super::lock(&t.fetch.done_log);
            if log.len() > f.told {
                news.push((t.id, log[f.told..].to_vec()));
                f.told = log.len();
            }
        }
        if news.is_empty() {
            return;
        }
        for slot in 0..self.conns.len() {
            let core = &mut self.core;
            let Some(c) = self.conns[slot].as_mut().filter(|c| c.is_active()) else {
                continue;
            };
            let Some(t) = c.torrent.clone() else { continue };
            let Some((_, pieces)) = news.iter().find(|(id, _)| *id == t.id) else {
                continue;
            };
            for &i in pieces {
                if !c.peer.peer_has(i) {
                    Message::Have(i).encode(&mut c.ctrl);
                }
                c.peer.we_got(i);
            }
            c.peer
                .update_interest(super::peer::TorrentView::of(&t), &mut c.ctrl);
            let n = t.pieces.num_pieces();
            if t.pieces.verified.is_full() && n > 0 && c.peer.peer_has_count() == n {
                c.close(slot, Reason::BothSeeds, core);
            } else {
                c.pump_send(slot, core);
            }
            self.maybe_free(slot);
        }
    }

    /// Every tick: peers whose pipelines have room (or that waited for download tokens) ask
    /// for more blocks.
    fn refill_requests(&mut self) {
        if self.core.fetches.torrents.is_empty() {
            return;
        }
        for slot in 0..self.conns.len() {
            let core = &mut self.core;
            let Some(c) = self.conns[slot].as_mut().filter(|c| c.is_active()) else {
                continue;
            };
            if c.torrent.as_ref().is_some_and(|t| t.fetching()) {
                c.fill_requests(slot, core);
            }
        }
    }

    /// Once a second: download rates, parts nobody fetches (given up after a while, see
    /// `download::orphan`), and the parts of torrents that stopped downloading.
    fn fetch_second(&mut self) {
        for c in self.conns.iter_mut().flatten() {
            c.peer.sample_rate();
        }
        // A download that wants pieces again (a file made wanted after it finished) says it is
        // interested without waiting for the peer to send something first.
        for slot in 0..self.conns.len() {
            let core = &mut self.core;
            let Some(c) = self.conns[slot].as_mut().filter(|c| c.is_active()) else {
                continue;
            };
            let Some(t) = c.torrent.clone().filter(|t| t.fetching()) else {
                continue;
            };
            if !c.peer.am_interested() && c.peer.wanted() {
                c.peer
                    .update_interest(super::peer::TorrentView::of(&t), &mut c.ctrl);
                c.pump_send(slot, core);
            }
        }
        let fetching: Vec<_> = self
            .core
            .torrents
            .values()
            .filter(|t| t.fetching() && self.core.fetches.torrents.contains_key(&t.id))
            .cloned()
            .collect();
        for t in fetching {
            let conns = &self.conns;
            // A peer of this worker that has the piece (it may be choking us): it might still
            // finish the part.
            let usable = |i: u32| {
                conns.iter().flatten().any(|c| {
                    c.closing.is_none()
                        && c.torrent.as_ref().is_some_and(|x| x.id == t.id)
                        && c.peer.peer_has(i)
                })
            };
            let core = &mut self.core;
            let timeout = core.settings.request_timeout;
            core.fetches
                .sweep(&t, core.now, timeout, &core.stats, usable);
        }
        let stopped: Vec<_> = self
            .core
            .torrents
            .values()
            .filter(|t| {
                t.downloads() && !t.fetching() && self.core.fetches.torrents.contains_key(&t.id)
            })
            .filter(|t| {
                self.core
                    .fetches
                    .torrents
                    .get(&t.id)
                    .is_some_and(|f| !f.parts.is_empty())
            })
            .cloned()
            .collect();
        for t in stopped {
            self.core.fetches.drop_torrent(&t);
            for slot in 0..self.conns.len() {
                let core = &mut self.core;
                let Some(c) = self.conns[slot].as_mut().filter(|c| c.is_active()) else {
                    continue;
                };
                if c.torrent.as_ref().is_some_and(|x| x.id == t.id) {
                    c.peer.cancel_all(&mut c.ctrl);
                    c.owns_parts = false;
                    c.peer
                        .update_interest(super::peer::TorrentView::of(&t), &mut c.ctrl);
                    c.pump_send(slot, core);
                }
            }
        }
    }

    fn publish_latency(&mut self) {
        if self.core.latency.is_empty() {
            return;
        }
        if let Ok(mut shared) = self.core.stats.latency_us.try_lock() {
            let _ = shared.add(&self.core.latency);
            self.core.latency.reset();
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

/// How long an unchoked peer may leave our sends waiting before its upload slot goes to
/// someone else: a few seconds, well before it is cut off (`send_timeout`).
fn slot_stall(s: &Settings) -> Duration {
    (s.send_timeout / 4).min(Duration::from_secs(5))
}

/// The per-connection deadlines the tick checks beside the protocol's own: a message that
/// started arriving and never completes, and sends the peer never reads.
fn stalled(c: &Conn, undelivered: Duration, core: &Core) -> Option<Reason> {
    let s = &core.settings;
    if c.partial_since
        .is_some_and(|t| core.now.saturating_duration_since(t) > s.message_timeout)
    {
        return Some(Reason::SlowMessage);
    }
    (undelivered > s.send_timeout).then_some(Reason::SendStalled)
}
