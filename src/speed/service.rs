//! The speed layer inside a running node: the verifier thread that checks voucher signatures off
//! the workers' hot path and hands accepted vouchers to the ledger, and the counters.
//!
//! ```text
//!  worker ──try_send (bounded; full = counted drop)──► verifier thread ──► ledger (DbWriter)
//!    ▲                                                   │ waits for the durable commit
//!    └──── outcome channel + eventfd wake ◄──────────────┘
//! ```
//!
//! A worker never waits: it parses, pre-checks against what it knows of the peer's channel, and
//! queues. The verifier takes jobs in batches (one recovery per bid and per peer's highest
//! voucher of a channel, then every ledger job of the batch queued before the first reply is
//! awaited, so the database commits the batch with one fsync), and answers each worker through
//! its own channel, waking its ring.

/// Checking bids on chain (`[speed] rpc`), off the workers.
pub mod onchain;
/// Credit windows held on channels checked on chain, so concurrent bids share one deposit.
pub mod windows;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use nix::sys::eventfd::EventFd;

use super::admission::Admission;
use super::ledger::{Accepted, Funds, Ledger, Verified};
use super::protocol::{Bid, Offer};
use super::voucher::{Channel, Rejection, Voucher};
use crate::choking::auction::Terms;

/// Jobs waiting for the verifier before workers start dropping them (each a counted
/// `overloaded` refusal the payer may retry).
const QUEUE_DEPTH: usize = 8192;
/// Most jobs the verifier takes in one batch.
const BATCH: usize = 512;
/// How long the verifier gathers jobs after the first of a batch. It bounds the database's
/// voucher commits to 40 per second whatever the number of payers, and adds at most this much
/// to a receipt's delay (a payer's credit window is megabytes: tens of milliseconds of
/// service even at a whole link's rate).
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(25);

/// Where an answer goes: the worker, and the connection by slot and a per-worker unique id
/// (slots are reused; the id is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerRef {
    pub worker: usize,
    pub slot: usize,
    pub conn_id: u64,
}

#[derive(Debug)]
pub enum Job {
    Bid {
        to: PeerRef,
        bid: Bid,
        /// The peer's address when this bid would open a fresh credit window (the connection's
        /// first): it takes one from the address's allowance ([`super::admission`]).
        fresh_from: Option<std::net::IpAddr>,
        /// What the chain says the channel holds: filled in by the on-chain check (`[speed]
        /// rpc`) before the bid reaches the ledger; `None` without it.
        funds: Option<Funds>,
    },
    Voucher {
        to: PeerRef,
        voucher: Voucher,
        payer: super::wallet::Address,
        /// The cap of the peer's bid: the channel's row takes it when this voucher creates it.
        cap: super::voucher::Amount,
        torrent: [u8; 20],
    },
    Stop,
}

/// What the verifier answers a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Bid {
        to: PeerRef,
        result: Result<Channel, Rejection>,
    },
    Voucher {
        to: PeerRef,
        result: Result<Accepted, Rejection>,
    },
    /// A voucher covered by a higher one of the same channel, which was answered first.
    Superseded { to: PeerRef },
}

impl Outcome {
    pub fn to(&self) -> PeerRef {
        match *self {
            Outcome::Bid { to, .. } | Outcome::Voucher { to, .. } | Outcome::Superseded { to } => {
                to
            }
        }
    }
}

/// Counters of the speed layer, shared by the workers and the verifier (Relaxed: statistics).
#[derive(Debug, Default)]
pub struct SpeedStats {
    pub bids: AtomicU64,
    pub vouchers_accepted: AtomicU64,
    /// Vouchers answered by a higher one of the same channel checked in the same batch.
    pub vouchers_superseded: AtomicU64,
    pub rejected: [AtomicU64; Rejection::ALL.len()],
    /// Payload bytes served to peers with a confirmed bid.
    pub bytes_sold: AtomicU64,
    /// Live connections holding a credit window on a channel checked on chain (a gauge).
    pub windows_held: AtomicU64,
    /// Base units accepted since start (only the verifier writes it; a lock off the hot path).
    pub earned: Mutex<u128>,
}

impl SpeedStats {
    pub fn reject(&self, r: Rejection) {
        self.rejected[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, r: Rejection) -> u64 {
        self.rejected[r as usize].load(Ordering::Relaxed)
    }

    pub fn earned(&self) -> u128 {
        self.earned.lock().map_or(0, |e| *e)
    }
}

type WorkerLink = (Sender<Outcome>, Arc<EventFd>);

/// The running speed layer: the seeder's offer, the auction terms, the verifier thread.
pub struct SpeedService {
    pub offer: Offer,
    pub terms: Terms,
    pub stats: Arc<SpeedStats>,
    jobs: Sender<Job>,
    /// Connections that closed after bidding, for the verifier's windows. Unbounded so that a
    /// notice is never lost: each stands for a bid the verifier took, so they come no faster.
    gone: Sender<PeerRef>,
    links: Arc<Mutex<Vec<Option<WorkerLink>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// With `[speed] rpc`: bids go through the on-chain check first.
    chain: Option<onchain::CheckPool>,
}

impl std::fmt::Debug for SpeedService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeedService")
            .field("offer", &self.offer)
            .field("terms", &self.terms)
            .finish_non_exhaustive()
    }
}

impl SpeedService {
    pub fn start(ledger: Ledger, terms: Terms) -> std::io::Result<Arc<SpeedService>> {
        SpeedService::start_with_chain(ledger, terms, None)
    }

    /// [`SpeedService::start`], with bids checked on chain first when `chain` is given.
    pub fn start_with_chain(
        ledger: Ledger,
        terms: Terms,
        chain: Option<&onchain::ChainCheck>,
    ) -> std::io::Result<Arc<SpeedService>> {
        let (domain, me) = (ledger.domain(), ledger.payee());
        let offer = Offer {
            chain_id: ledger.chain_id(),
            contract: ledger.domain().contract,
            payee: ledger.payee(),
            min_price: terms.min_price,
            credit_window: terms.credit_window,
        };
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        let (gone, gone_rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(SpeedStats::default());
        let links: Arc<Mutex<Vec<Option<WorkerLink>>>> = Arc::default();
        let (s, l) = (stats.clone(), links.clone());
        let thread = std::thread::Builder::new()
            .name("ringseed-verify".into())
            .spawn(move || verify_loop(rx, gone_rx, ledger, s, l))?;
        let chain = match chain {
            Some(c) => Some(onchain::CheckPool::start(
                c,
                domain,
                me,
                terms.credit_window,
                tx.clone(),
                links.clone(),
                stats.clone(),
            )?),
            None => None,
        };
        Ok(Arc::new(SpeedService {
            offer,
            terms,
            stats,
            jobs: tx,
            gone,
            links,
            thread: Mutex::new(Some(thread)),
            chain,
        }))
    }

    /// A worker's channel for outcomes; `wake` is written after each batch of outcomes for it.
    pub fn register_worker(&self, worker: usize, wake: Arc<EventFd>) -> Receiver<Outcome> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        if let Ok(mut links) = self.links.lock() {
            if links.len() <= worker {
                links.resize_with(worker + 1, || None);
            }
            links[worker] = Some((tx, wake));
        }
        rx
    }

    /// Queues a job without blocking; a full queue is an `overloaded` refusal, counted.
    pub fn submit(&self, job: Job) -> Result<(), Rejection> {
        let job = match (job, &self.chain) {
            (
                Job::Bid {
                    to,
                    bid,
                    fresh_from,
                    funds: _,
                },
                Some(pool),
            ) => {
                let queued = pool.submit(onchain::BidJob {
                    to,
                    bid,
                    fresh_from,
                });
                if let Err(r) = queued {
                    self.stats.reject(r);
                }
                return queued;
            }
            (job, _) => job,
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.reject(Rejection::Overloaded);
                Err(Rejection::Overloaded)
            }
        }
    }

    /// A connection that bid has closed: the credit window it held on its channel ends, so
    /// another connection of the same payer can take one from the deposit. Windows are kept
    /// only for bids checked on chain (`[speed] rpc`); without it there is nothing to end.
    pub fn gone(&self, to: PeerRef) {
        if self.chain.is_some() {
            let _ = self.gone.send(to);
        }
    }

    /// Finishes every queued job (their ledger writes included), then stops the thread.
    pub fn stop(&self) {
        // The check pool first: the bids it confirms still go to the verifier.
        if let Some(pool) = &self.chain {
            pool.stop();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = self.jobs.send(Job::Stop);
            let _ = t.join();
        }
    }
}

impl Drop for SpeedService {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Pending {
    /// A bid's ledger lookup, and what its checks took that a refusal gives back: the address
    /// charged for a fresh window, and whether this bid made the channel's reservation.
    Bid {
        to: PeerRef,
        /// Boxed: the largest of the variants by far.
        bid: Box<Bid>,
        reply: BidReply,
        charged: Option<std::net::IpAddr>,
        reserved: bool,
        /// The credit window this bid holds on its channel while the ledger decides (bids
        /// checked on chain only).
        window: Option<windows::Held>,
    },
    Voucher(
        PeerRef,
        Result<crate::db::Reply<Result<Accepted, Rejection>>, Rejection>,
    ),
    /// Covered by a higher voucher of the same peer and channel, answered just before it.
    Superseded(PeerRef),
}

type BidReply = Result<crate::db::Reply<Result<Channel, Rejection>>, Rejection>;

/// Checks a bid and queues its channel's lookup on the ledger. Only the payer's key may open or
/// change a channel: an unsigned or foreign bid could register a channel under the wrong payer
/// (locking the real one out) or shrink someone's cap. A bid that opens a fresh credit window
/// takes one from its address's allowance: keys and channel ids cost nothing, so without it a
/// peer could reconnect for window after window of paid-slot service it never pays for (and
/// each window's channel could become a ledger row).
fn check_bid(
    to: PeerRef,
    bid: Bid,
    fresh_from: Option<std::net::IpAddr>,
    funds: Option<Funds>,
    ledger: &Ledger,
    guards: &mut BidGuards,
) -> Pending {
    let refused = |reply| Pending::Bid {
        to,
        bid: Box::new(bid),
        reply,
        charged: None,
        reserved: false,
        window: None,
    };
    if !ledger.bid_is_signed(&bid) || guards.reserved_for_another(&bid) {
        return refused(Err(Rejection::Forged));
    }
    if let Some(ip) = fresh_from
        && !guards.admission.admit(ip, std::time::Instant::now())
    {
        return refused(Err(Rejection::TooManyChannels));
    }
    let reserved = guards.reserve(&bid);
    // The channel's other live connections may each still take their window unpaid: the
    // deposit must cover theirs and this one. This bid's window is held from now on, so a bid
    // of another connection later in the same batch counts it too.
    let (funds, window) = match funds {
        Some(f) => {
            let held = guards.windows.held_by_others(&bid.channel, to);
            let window = guards.windows.hold(bid.channel, to, f.least_left);
            (Some(Funds { held, ..f }), window)
        }
        None => (None, None),
    };
    Pending::Bid {
        to,
        bid: Box::new(bid),
        reply: ledger
            .open_channel(bid, funds)
            .map_err(|_| Rejection::Overloaded),
        charged: fresh_from,
        reserved,
        window,
    }
}

/// Channels reserved by a bid and not written yet, at most this many (oldest forgotten first).
const MAX_RESERVED: usize = 1 << 16;

/// What the verifier keeps to judge bids: the allowance of fresh credit windows per address, and
/// which payer bid first on each channel that has no ledger row yet. A channel's row is written
/// with its first voucher, half a credit window after its bid, so without the reservation a
/// stranger who learnt the id could bid on it with its own key, pay one unit first and lock the
/// real payer out (its vouchers refused `forged`). A reservation ends when the ledger refuses
/// the bid that made it or accepts a voucher of the channel (the row decides from then on); it
/// lives in memory, so after a restart the first bid wins again.
#[derive(Default)]
struct BidGuards {
    admission: Admission,
    windows: windows::Windows,
    /// Channel → (payer, the reservation's number).
    reserved: std::collections::HashMap<super::voucher::ChannelId, (super::wallet::Address, u64)>,
    /// Reservations oldest first; an entry whose number no longer matches the map's was
    /// released (and maybe made again) and is skipped.
    order: std::collections::VecDeque<(super::voucher::ChannelId, u64)>,
    made: u64,
}

impl BidGuards {
    fn reserved_for_another(&self, bid: &Bid) -> bool {
        self.reserved
            .get(&bid.channel)
            .is_some_and(|(p, _)| *p != bid.payer)
    }

    /// Reserves the bid's channel for its payer; `true` when this bid made the reservation.
    fn reserve(&mut self, bid: &Bid) -> bool {
        if self.reserved.contains_key(&bid.channel) {
            return false;
        }
        self.made += 1;
        self.reserved.insert(bid.channel, (bid.payer, self.made));
        self.order.push_back((bid.channel, self.made));
        while self.order.len() > MAX_RESERVED {
            if let Some((old, n)) = self.order.pop_front()
                && self.reserved.get(&old).is_some_and(|(_, m)| *m == n)
            {
                self.reserved.remove(&old);
            }
        }
        true
    }

    fn release(&mut self, channel: &super::voucher::ChannelId) {
        self.reserved.remove(channel);
    }
}

/// Where an answer goes among a batch's answers: the arrival index of its job (of a voucher
/// group's earliest job), then its rank within the group.
type Order = (usize, usize);

/// A voucher job as the verifier batches it.
struct QueuedVoucher {
    to: PeerRef,
    voucher: Voucher,
    payer: super::wallet::Address,
    cap: super::voucher::Amount,
    torrent: [u8; 20],
}

/// What a batch's job comes to once signatures are checked, before the ledger sees it.
enum Task {
    Bid {
        to: PeerRef,
        bid: Bid,
        fresh_from: Option<std::net::IpAddr>,
        funds: Option<Funds>,
    },
    Accept {
        to: PeerRef,
        voucher: Verified,
        cap: super::voucher::Amount,
        torrent: [u8; 20],
    },
    Refused(PeerRef, Rejection),
    Superseded(PeerRef),
}

/// Checks a batch's voucher signatures. Vouchers are cumulative, so of several from one peer
/// for one channel only the highest whose signature holds needs the ledger: the lower ones are
/// superseded (answered without a check; the receipt of the higher one covers them). When the
/// verifier falls behind, its backlog shrinks to one signature check and one ledger write per
/// paying peer. A group's answers sit where its earliest voucher arrived: each of its vouchers
/// was judged by the worker against the channel as it was before any bid the peer sent later.
fn group_vouchers(mut vouchers: Vec<(usize, QueuedVoucher)>, tasks: &mut Vec<(Order, Task)>) {
    let key = |q: &QueuedVoucher| (q.to.worker, q.to.conn_id, q.voucher.channel.0);
    vouchers.sort_by(|(_, a), (_, b)| {
        key(a)
            .cmp(&key(b))
            .then(b.voucher.cumulative.cmp(&a.voucher.cumulative))
    });
    let mut start = 0;
    while start < vouchers.len() {
        let group_key = key(&vouchers[start].1);
        let end = vouchers[start..]
            .iter()
            .position(|(_, q)| key(q) != group_key)
            .map_or(vouchers.len(), |n| start + n);
        let at = vouchers[start..end]
            .iter()
            .map(|(i, _)| *i)
            .min()
            .unwrap_or(0);
        let mut covered = false;
        for (rank, (_, q)) in vouchers[start..end].iter().enumerate() {
            let task = if covered {
                Task::Superseded(q.to)
            } else {
                match Verified::check(q.voucher, q.payer) {
                    Ok(voucher) => {
                        covered = true;
                        Task::Accept {
                            to: q.to,
                            voucher,
                            cap: q.cap,
                            torrent: q.torrent,
                        }
                    }
                    Err(r) => Task::Refused(q.to, r),
                }
            };
            tasks.push(((at, rank + 1), task));
        }
        start = end;
    }
}

/// Turns a batch into ledger jobs, queued in the order the answers will go back in, so the
/// ledger sees a peer's bids and vouchers in the order the worker will apply their answers.
fn submit_batch(batch: Vec<Job>, ledger: &Ledger, guards: &mut BidGuards) -> Vec<Pending> {
    let mut tasks: Vec<(Order, Task)> = Vec::with_capacity(batch.len());
    let mut vouchers = Vec::new();
    for (i, job) in batch.into_iter().enumerate() {
        match job {
            Job::Bid {
                to,
                bid,
                fresh_from,
                funds,
            } => tasks.push((
                (i, 0),
                Task::Bid {
                    to,
                    bid,
                    fresh_from,
                    funds,
                },
            )),
            Job::Voucher {
                to,
                voucher,
                payer,
                cap,
                torrent,
            } => vouchers.push((
                i,
                QueuedVoucher {
                    to,
                    voucher,
                    payer,
                    cap,
                    torrent,
                },
            )),
            Job::Stop => {}
        }
    }
    group_vouchers(vouchers, &mut tasks);
    tasks.sort_by_key(|(order, _)| *order);
    // A full or stopped database queue: not acknowledged; the payer may resend.
    let db_full = |_: crate::db::DbError| Rejection::Overloaded;
    tasks
        .into_iter()
        .map(|(_, t)| match t {
            Task::Bid {
                to,
                bid,
                fresh_from,
                funds,
            } => check_bid(to, bid, fresh_from, funds, ledger, guards),
            Task::Accept {
                to,
                voucher,
                cap,
                torrent,
            } => Pending::Voucher(to, ledger.accept(voucher, cap, torrent).map_err(db_full)),
            Task::Refused(to, r) => Pending::Voucher(to, Err(r)),
            Task::Superseded(to) => Pending::Superseded(to),
        })
        .collect()
}

fn verify_loop(
    rx: Receiver<Job>,
    gone: Receiver<PeerRef>,
    ledger: Ledger,
    stats: Arc<SpeedStats>,
    links: Arc<Mutex<Vec<Option<WorkerLink>>>>,
) {
    let mut guards = BidGuards::default();
    let mut stopping = false;
    while !stopping {
        let mut batch = Vec::with_capacity(BATCH);
        // A close notice is applied as it comes, so the windows (and their gauge) are current
        // between bids too.
        crossbeam_channel::select! {
            recv(rx) -> job => match job {
                Ok(Job::Stop) | Err(_) => stopping = true,
                Ok(job) => batch.push(job),
            },
            recv(gone) -> to => {
                match to {
                    Ok(to) => {
                        guards.windows.gone(to);
                        stats
                            .windows_held
                            .store(guards.windows.holders() as u64, Ordering::Relaxed);
                    }
                    // Its sender lives in the service, as the jobs' does: the service is gone.
                    Err(_) => stopping = true,
                }
                continue;
            },
        }
        // Gather for a short window: each batch costs a wake-up and a commit (an fsync) however
        // small it is, and a peer's vouchers that arrive together are checked as one.
        let deadline = std::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < BATCH && !stopping {
            match rx.recv_deadline(deadline) {
                Ok(Job::Stop) => stopping = true,
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Windows of connections closed by now end before the batch's bids are judged.
        for to in gone.try_iter() {
            guards.windows.gone(to);
        }
        // Every ledger job of the batch is queued before the first answer is awaited: the
        // writer commits them together.
        let pending = submit_batch(batch, &ledger, &mut guards);
        let outcomes = resolve(pending, &stats, &mut guards);
        stats
            .windows_held
            .store(guards.windows.holders() as u64, Ordering::Relaxed);
        let Ok(links) = links.lock() else { continue };
        let mut woken = vec![false; links.len()];
        for (worker, o) in outcomes {
            if let Some(Some((tx, fd))) = links.get(worker) {
                if let Err(crossbeam_channel::TrySendError::Full(o)) = tx.try_send(o) {
                    // A lost answer would leave the peer's in-flight count (or its pending bid)
                    // stuck, and every later voucher of it refused as `overloaded`: wake the
                    // worker to drain its queue and wait for room. Only a worker stalled for a
                    // second loses the answer (its voucher is durable all the same).
                    let _ = nix::unistd::write(fd.as_fd(), &1u64.to_ne_bytes());
                    if tx
                        .send_timeout(o, std::time::Duration::from_secs(1))
                        .is_err()
                    {
                        tracing::warn!(
                            worker,
                            "speed outcome dropped: the worker's queue stayed full"
                        );
                    }
                }
                woken[worker] = true;
            }
        }
        for (i, w) in woken.iter().enumerate() {
            if let (true, Some(Some((_, fd)))) = (*w, links.get(i)) {
                let _ = nix::unistd::write(fd.as_fd(), &1u64.to_ne_bytes());
            }
        }
    }
}

/// Waits for a batch's ledger answers (durable once they arrive) and turns them into outcomes
/// for the workers, in order. A database failure is not the payer's fault, but it must not be
/// acknowledged.
fn resolve(
    pending: Vec<Pending>,
    stats: &SpeedStats,
    guards: &mut BidGuards,
) -> Vec<(usize, Outcome)> {
    let mut outcomes = Vec::with_capacity(pending.len());
    for p in pending {
        match p {
            Pending::Bid {
                to,
                bid,
                reply,
                charged,
                reserved,
                window,
            } => {
                let result =
                    reply.and_then(|r| r.recv_result().unwrap_or(Err(Rejection::Overloaded)));
                match &result {
                    Ok(_) => {
                        stats.bids.fetch_add(1, Ordering::Relaxed);
                        if window.is_some() {
                            guards.windows.confirmed(bid.channel, to);
                        }
                    }
                    Err(r) => {
                        // Refused after its checks: it opened no window and holds no channel.
                        if reserved {
                            guards.release(&bid.channel);
                        }
                        if let Some(held) = window {
                            guards.windows.undo(bid.channel, to, held);
                        }
                        if let Some(ip) = charged {
                            guards.admission.refund(ip);
                        }
                        stats.reject(*r);
                    }
                }
                outcomes.push((to.worker, Outcome::Bid { to, result }));
            }
            Pending::Voucher(to, reply) => {
                let result =
                    reply.and_then(|r| r.recv_result().unwrap_or(Err(Rejection::Overloaded)));
                match &result {
                    Ok(a) => {
                        stats.vouchers_accepted.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut e) = stats.earned.lock() {
                            *e = e.saturating_add(a.increment);
                        }
                        // The channel has its row now: the ledger decides who owns it.
                        guards.release(&a.channel);
                    }
                    Err(r) => stats.reject(*r),
                }
                outcomes.push((to.worker, Outcome::Voucher { to, result }));
            }
            Pending::Superseded(to) => {
                stats.vouchers_superseded.fetch_add(1, Ordering::Relaxed);
                outcomes.push((to.worker, Outcome::Superseded { to }));
            }
        }
    }
    outcomes
}

/// What a node needs to earn: where its database and key are, and its terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeedSetup {
    pub db_path: std::path::PathBuf,
    pub key_path: std::path::PathBuf,
    pub terms: Terms,
    pub chain_id: u64,
    /// The payment-channel contract vouchers are signed for and claimed on (`[speed] contract`).
    pub contract: super::wallet::Address,
    /// `[speed] rpc`: check each bid's channel on chain before confirming it; `None` trusts
    /// bids up to their cap (see docs/speed.md §5).
    pub chain: Option<onchain::ChainCheck>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpeedStartError {
    #[error(transparent)]
    Wallet(#[from] super::wallet::WalletError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("starting the voucher verifier: {0}")]
    Thread(std::io::Error),
}

/// Loads (or creates) the wallet, opens the ledger on the node's database writer and starts the
/// verifier. The caller stops the service before the writer, so every queued voucher is
/// committed (and only then acknowledged).
pub fn start_node(
    setup: &SpeedSetup,
    db: crate::db::DbHandle,
) -> Result<Arc<SpeedService>, SpeedStartError> {
    let (wallet, _) = super::wallet::Wallet::load_or_create(&setup.key_path)?;
    let domain = super::voucher::Domain {
        chain_id: setup.chain_id,
        contract: setup.contract,
    };
    let ledger = Ledger::new(db, wallet.address(), domain);
    SpeedService::start_with_chain(ledger, setup.terms, setup.chain.as_ref())
        .map_err(SpeedStartError::Thread)
}

/// [`start_node`] on a database writer of its own at `setup.db_path` (the bench's in-process
/// seeder and tests, which run no session). Stop the service before the writer.
pub fn start_standalone(
    setup: &SpeedSetup,
) -> Result<(Arc<SpeedService>, crate::db::DbWriter), SpeedStartError> {
    let writer = crate::db::DbWriter::start(&setup.db_path, crate::DB_COMPONENTS)?;
    let svc = start_node(setup, writer.handle())?;
    Ok((svc, writer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speed::ledger;
    use crate::speed::voucher::ChannelId;
    use crate::speed::voucher::Domain;
    use crate::speed::wallet::{Address, Wallet};

    const DOMAIN: Domain = Domain {
        chain_id: 199,
        contract: Address([0x32; 20]),
    };

    struct Rig {
        _dir: tempfile::TempDir,
        writer: crate::db::DbWriter,
        ledger: Ledger,
        seeder: Wallet,
        guards: BidGuards,
        stats: SpeedStats,
    }

    fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let writer = crate::db::DbWriter::start(
            &dir.path().join("ringseed.db"),
            &[(ledger::COMPONENT, ledger::MIGRATIONS)],
        )
        .unwrap();
        let seeder = Wallet::from_secret([2; 32]).unwrap();
        Rig {
            ledger: Ledger::new(writer.handle(), seeder.address(), DOMAIN),
            _dir: dir,
            writer,
            seeder,
            guards: BidGuards {
                admission: Admission::new(2, std::time::Duration::from_secs(3600), 16),
                ..Default::default()
            },
            stats: SpeedStats::default(),
        }
    }

    fn peer(conn_id: u64) -> PeerRef {
        PeerRef {
            worker: 0,
            slot: conn_id as usize,
            conn_id,
        }
    }

    impl Rig {
        fn voucher(&self, conn_id: u64, signer: &Wallet, payer: &Wallet, ch: u8, a: u128) -> Job {
            Job::Voucher {
                to: peer(conn_id),
                voucher: Voucher::sign(
                    signer,
                    DOMAIN,
                    ChannelId([ch; 32]),
                    self.seeder.address(),
                    a,
                ),
                payer: payer.address(),
                cap: 1_000,
                torrent: [1; 20],
            }
        }

        fn bid(&self, conn_id: u64, payer: &Wallet, ch: u8, fresh: Option<&str>) -> Job {
            let channel = ChannelId([ch; 32]);
            Job::Bid {
                to: peer(conn_id),
                bid: Bid::sign(payer, DOMAIN, self.seeder.address(), 1, channel, 1_000),
                fresh_from: fresh.map(|s| s.parse().unwrap()),
                funds: None,
            }
        }

        /// Runs a batch; each answer as (connection, what).
        fn run(&mut self, batch: Vec<Job>) -> Vec<(u64, String)> {
            let pending = submit_batch(batch, &self.ledger, &mut self.guards);
            resolve(pending, &self.stats, &mut self.guards)
                .into_iter()
                .map(|(_, o)| match o {
                    Outcome::Bid { to, result } => (
                        to.conn_id,
                        match result {
                            Ok(c) => format!("bid {} at {}", c.id.0[0], c.accepted),
                            Err(e) => format!("bid {}", e.name()),
                        },
                    ),
                    Outcome::Voucher { to, result } => (
                        to.conn_id,
                        match result {
                            Ok(a) => format!("accepted {}", a.cumulative),
                            Err(e) => e.name().to_string(),
                        },
                    ),
                    Outcome::Superseded { to } => (to.conn_id, "superseded".into()),
                })
                .collect()
        }
    }

    fn answers(v: &[(u64, String)]) -> Vec<(u64, &str)> {
        v.iter().map(|(c, a)| (*c, a.as_str())).collect()
    }

    /// Of one peer's vouchers for a channel in a batch, only the highest whose signature holds
    /// is checked into the ledger; the lower ones are answered right after it as superseded,
    /// and the group answers where its first voucher arrived.
    #[test]
    fn a_batch_checks_one_voucher_per_peer_and_channel() {
        let mut r = rig();
        let payer = Wallet::from_secret([3; 32]).unwrap();
        let thief = Wallet::from_secret([4; 32]).unwrap();
        // Peer 1 sent 10, 30, 20 and a forged 40; peer 2 (the same channel on another
        // connection) sent 25 in between.
        let batch = vec![
            r.voucher(1, &payer, &payer, 7, 10),
            r.voucher(2, &payer, &payer, 7, 25),
            r.voucher(1, &payer, &payer, 7, 30),
            r.voucher(1, &thief, &payer, 7, 40),
            r.voucher(1, &payer, &payer, 7, 20),
        ];
        let got = r.run(batch);
        let expected = [
            (1, "forged"),
            (1, "accepted 30"),
            (1, "superseded"),
            (1, "superseded"),
            (2, "decreasing"),
        ];
        assert_eq!(answers(&got), expected);
        assert_eq!(r.stats.vouchers_superseded.load(Ordering::Relaxed), 2);
        r.writer.shutdown();
    }

    /// The ledger sees a peer's bids and vouchers in the order their answers go back: a
    /// voucher sent before a re-bid on its channel is written (and answered) before the bid
    /// is, so the bid's answer carries the amount the voucher made durable.
    #[test]
    fn bids_and_vouchers_reach_the_ledger_in_answer_order() {
        let mut r = rig();
        let payer = Wallet::from_secret([3; 32]).unwrap();
        let b = r.bid(1, &payer, 7, Some("192.0.2.1"));
        assert_eq!(answers(&r.run(vec![b])), [(1, "bid 7 at 0")]);
        let batch = vec![
            r.voucher(1, &payer, &payer, 7, 150),
            r.bid(1, &payer, 7, None),
            r.voucher(1, &payer, &payer, 7, 200),
        ];
        let got = r.run(batch);
        assert_eq!(
            answers(&got),
            [(1, "accepted 200"), (1, "superseded"), (1, "bid 7 at 200")]
        );
        r.writer.shutdown();
    }

    /// A connection's first bid opens a fresh credit window and takes one from its address's
    /// allowance (given back if the ledger refuses the bid); a later bid on the connection
    /// (which carries its debt) takes none.
    #[test]
    fn fresh_credit_windows_are_admitted_per_address() {
        let mut r = rig();
        let payer = Wallet::from_secret([3; 32]).unwrap();
        let a = Some("192.0.2.1");
        let batch = vec![
            r.bid(1, &payer, 1, a),
            r.bid(2, &payer, 2, a),
            r.bid(3, &payer, 3, a),
            r.bid(1, &payer, 3, None),
        ];
        let got = r.run(batch);
        let expected = [
            (1, "bid 1 at 0"),
            (2, "bid 2 at 0"),
            (3, "bid too_many_channels"),
            (1, "bid 3 at 0"),
        ];
        assert_eq!(answers(&got), expected);
        // An unsigned bid is refused before it can spend anyone's allowance.
        let Job::Bid { to, bid, .. } = r.bid(4, &payer, 4, None) else {
            unreachable!()
        };
        let unsigned = Job::Bid {
            to,
            bid: Bid {
                signature: [0; 65],
                ..bid
            },
            fresh_from: Some("192.0.2.9".parse().unwrap()),
            funds: None,
        };
        assert_eq!(answers(&r.run(vec![unsigned])), [(4, "bid forged")]);
        let b = Some("192.0.2.9");
        let got = r.run(vec![r.bid(5, &payer, 5, b), r.bid(6, &payer, 6, b)]);
        assert_eq!(answers(&got), [(5, "bid 5 at 0"), (6, "bid 6 at 0")]);
        let got = r.run(vec![r.bid(7, &payer, 7, b)]);
        assert_eq!(answers(&got), [(7, "bid too_many_channels")]);
        r.writer.shutdown();
    }

    /// Until a channel's first voucher writes its row, the payer that bid first holds it: a
    /// stranger's own signed bid is refused. Once the row exists the ledger decides, and a
    /// stranger's refused bid leaves no reservation behind to lock the payer out.
    #[test]
    fn the_first_bidder_holds_a_channel_until_its_row_decides() {
        let mut r = rig();
        let payer = Wallet::from_secret([3; 32]).unwrap();
        let thief = Wallet::from_secret([9; 32]).unwrap();
        let got = r.run(vec![r.bid(1, &payer, 1, None), r.bid(2, &thief, 1, None)]);
        assert_eq!(answers(&got), [(1, "bid 1 at 0"), (2, "bid forged")]);
        let got = r.run(vec![r.voucher(1, &payer, &payer, 1, 5)]);
        assert_eq!(answers(&got), [(1, "accepted 5")]);
        assert!(r.guards.reserved.is_empty(), "the row decides now");
        // The thief's bid is refused by the ledger (the row is the payer's) and reserves
        // nothing: the payer can still bid on its channel.
        let got = r.run(vec![r.bid(2, &thief, 1, None)]);
        assert_eq!(answers(&got), [(2, "bid forged")]);
        let got = r.run(vec![r.bid(3, &payer, 1, None)]);
        assert_eq!(answers(&got), [(3, "bid 1 at 5")]);
        r.writer.shutdown();
    }
}
