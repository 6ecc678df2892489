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

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use nix::sys::eventfd::EventFd;

use super::admission::Admission;
use super::auction::Terms;
use super::ledger::{Accepted, Ledger, Verified};
use super::protocol::{Bid, Offer};
use super::voucher::{Channel, Rejection, Voucher};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    links: Arc<Mutex<Vec<Option<WorkerLink>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
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
        let offer = Offer {
            chain_id: ledger.chain_id(),
            payee: ledger.payee(),
            min_price: terms.min_price,
            credit_window: terms.credit_window,
        };
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        let stats = Arc::new(SpeedStats::default());
        let links: Arc<Mutex<Vec<Option<WorkerLink>>>> = Arc::default();
        let (s, l) = (stats.clone(), links.clone());
        let thread = std::thread::Builder::new()
            .name("ringseed-verify".into())
            .spawn(move || verify_loop(rx, ledger, s, l))?;
        Ok(Arc::new(SpeedService {
            offer,
            terms,
            stats,
            jobs: tx,
            links,
            thread: Mutex::new(Some(thread)),
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
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.reject(Rejection::Overloaded);
                Err(Rejection::Overloaded)
            }
        }
    }

    /// Finishes every queued job (their ledger writes included), then stops the thread.
    pub fn stop(&self) {
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
    Bid(PeerRef, BidReply),
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
    bid: Bid,
    fresh_from: Option<std::net::IpAddr>,
    ledger: &Ledger,
    guards: &mut BidGuards,
) -> BidReply {
    if !ledger.bid_is_signed(&bid) || guards.reserved_for_another(&bid) {
        return Err(Rejection::Forged);
    }
    if let Some(ip) = fresh_from
        && !guards.admission.admit(ip, std::time::Instant::now())
    {
        return Err(Rejection::TooManyChannels);
    }
    guards.reserve(&bid);
    ledger.open_channel(bid).map_err(|_| Rejection::Overloaded)
}

/// Channels reserved by a bid and not written yet, at most this many (oldest forgotten first).
const MAX_RESERVED: usize = 1 << 18;

/// What the verifier keeps to judge bids: the allowance of fresh credit windows per address, and
/// which payer bid first on each channel that has no ledger row yet. A channel's row is written
/// with its first voucher, half a credit window after its bid, so without the reservation a
/// stranger who learnt the id could bid on it with its own key, pay one unit first and lock the
/// real payer out (its vouchers refused `forged`). The ledger decides once the row exists; the
/// reservations live in memory, so after a restart the first bid wins again.
#[derive(Default)]
struct BidGuards {
    admission: Admission,
    reserved: std::collections::HashMap<super::voucher::ChannelId, super::wallet::Address>,
    order: std::collections::VecDeque<super::voucher::ChannelId>,
}

impl BidGuards {
    fn reserved_for_another(&self, bid: &Bid) -> bool {
        self.reserved
            .get(&bid.channel)
            .is_some_and(|p| *p != bid.payer)
    }

    fn reserve(&mut self, bid: &Bid) {
        if self.reserved.insert(bid.channel, bid.payer).is_none() {
            self.order.push_back(bid.channel);
            while self.order.len() > MAX_RESERVED {
                if let Some(old) = self.order.pop_front() {
                    self.reserved.remove(&old);
                }
            }
        }
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

/// Checks a batch's vouchers and queues the good ones on the ledger. Vouchers are cumulative, so
/// of several from one peer for one channel only the highest whose signature holds needs the
/// ledger: the lower ones are superseded (answered without a check; the receipt of the higher
/// one covers them). When the verifier falls behind, its backlog shrinks to one signature check
/// and one ledger write per paying peer.
fn check_vouchers(
    mut vouchers: Vec<(usize, QueuedVoucher)>,
    ledger: &Ledger,
    pending: &mut Vec<(Order, Pending)>,
) {
    let db_full = |_: crate::db::DbError| Rejection::Overloaded;
    let key = |q: &QueuedVoucher| (q.to.worker, q.to.conn_id, q.voucher.channel.0);
    vouchers.sort_by(|(_, a), (_, b)| {
        key(a)
            .cmp(&key(b))
            .then(b.voucher.cumulative.cmp(&a.voucher.cumulative))
    });
    // A group's answers go where its earliest voucher arrived: a bid the peer sent after that
    // voucher must be answered after it, or the worker would credit the payment to the wrong
    // channel (or to none).
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
        let mut rank = 0;
        let mut covered = false;
        for (_, q) in &vouchers[start..end] {
            rank += 1;
            let answer = if covered {
                Pending::Superseded(q.to)
            } else {
                match Verified::check(q.voucher, q.payer) {
                    Ok(v) => {
                        covered = true;
                        Pending::Voucher(q.to, ledger.accept(v, q.cap, q.torrent).map_err(db_full))
                    }
                    Err(r) => Pending::Voucher(q.to, Err(r)),
                }
            };
            pending.push(((at, rank), answer));
        }
        start = end;
    }
}

fn verify_loop(
    rx: Receiver<Job>,
    ledger: Ledger,
    stats: Arc<SpeedStats>,
    links: Arc<Mutex<Vec<Option<WorkerLink>>>>,
) {
    let mut guards = BidGuards::default();
    let mut stopping = false;
    while !stopping {
        let mut batch = Vec::with_capacity(BATCH);
        match rx.recv() {
            Ok(Job::Stop) | Err(_) => stopping = true,
            Ok(job) => batch.push(job),
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
        // Queue every ledger job of the batch first: the writer commits them together.
        // A full or stopped database queue: not acknowledged; the payer may resend.
        let mut pending: Vec<(Order, Pending)> = Vec::with_capacity(batch.len());
        let mut vouchers = Vec::new();
        for (i, job) in batch.into_iter().enumerate() {
            match job {
                Job::Bid {
                    to,
                    bid,
                    fresh_from,
                } => pending.push((
                    (i, 0),
                    Pending::Bid(to, check_bid(bid, fresh_from, &ledger, &mut guards)),
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
        check_vouchers(vouchers, &ledger, &mut pending);
        // Answers in the order the jobs arrived (see `check_vouchers`).
        pending.sort_by_key(|(order, _)| *order);
        let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(pending.len());
        // A database failure is not the payer's fault, but it must not be acknowledged.
        for (_, p) in pending {
            match p {
                Pending::Bid(to, reply) => {
                    let result =
                        reply.and_then(|r| r.recv_result().unwrap_or(Err(Rejection::Overloaded)));
                    if result.is_ok() {
                        stats.bids.fetch_add(1, Ordering::Relaxed);
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

/// What a node needs to earn: where its database and key are, and its terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeedSetup {
    pub db_path: std::path::PathBuf,
    pub key_path: std::path::PathBuf,
    pub terms: Terms,
    pub chain_id: u64,
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
    let ledger = Ledger::new(db, wallet.address(), setup.chain_id);
    SpeedService::start(ledger, setup.terms).map_err(SpeedStartError::Thread)
}

/// [`start_node`] on a database writer of its own at `setup.db_path` (the bench's in-process
/// seeder and tests, which run no session). Stop the service before the writer.
pub fn start_standalone(
    setup: &SpeedSetup,
) -> Result<(Arc<SpeedService>, crate::db::DbWriter), SpeedStartError> {
    let writer = crate::db::DbWriter::start(&setup.db_path, crate::session::DB_COMPONENTS)?;
    let svc = start_node(setup, writer.handle())?;
    Ok((svc, writer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speed::ledger;
    use crate::speed::voucher::ChannelId;
    use crate::speed::wallet::Wallet;

    /// Of one peer's vouchers for a channel in a batch, only the highest whose signature holds
    /// is checked into the ledger; the lower ones are answered right after it as superseded.
    #[test]
    fn a_batch_checks_one_voucher_per_peer_and_channel() {
        let dir = tempfile::tempdir().unwrap();
        let writer = crate::db::DbWriter::start(
            &dir.path().join("ringseed.db"),
            &[(ledger::COMPONENT, ledger::MIGRATIONS)],
        )
        .unwrap();
        let seeder = Wallet::from_secret([2; 32]).unwrap();
        let l = Ledger::new(writer.handle(), seeder.address(), 199);
        let payer = Wallet::from_secret([3; 32]).unwrap();
        let thief = Wallet::from_secret([4; 32]).unwrap();
        let ch = ChannelId([7; 32]);
        let peer = |conn_id| PeerRef {
            worker: 0,
            slot: conn_id as usize,
            conn_id,
        };
        let q = |conn_id, signer: &Wallet, amount| QueuedVoucher {
            to: peer(conn_id),
            voucher: Voucher::sign(signer, 199, ch, seeder.address(), amount),
            payer: payer.address(),
            cap: 1_000,
            torrent: [1; 20],
        };
        // Peer 1 sent 10, 30, 20 and a forged 40; peer 2 (the same channel on another
        // connection) sent 25.
        let batch = vec![
            q(1, &payer, 10),
            q(2, &payer, 25),
            q(1, &payer, 30),
            q(1, &thief, 40),
            q(1, &payer, 20),
        ];
        let mut pending = Vec::new();
        check_vouchers(batch.into_iter().enumerate().collect(), &l, &mut pending);
        pending.sort_by_key(|(order, _)| *order);
        let answers: Vec<(Order, u64, String)> = pending
            .into_iter()
            .map(|(order, p)| match p {
                Pending::Voucher(to, r) => {
                    let r = r.and_then(|reply| reply.recv_result().unwrap());
                    let a = match r {
                        Ok(a) => format!("accepted {}", a.cumulative),
                        Err(e) => e.name().to_string(),
                    };
                    (order, to.conn_id, a)
                }
                Pending::Superseded(to) => (order, to.conn_id, "superseded".into()),
                Pending::Bid(..) => unreachable!(),
            })
            .collect();
        // Peer 1's answers all sit where its first voucher arrived (job 0), so a bid it sent
        // after that voucher (job 1 here would be one) is answered after them.
        let expected = [
            ((0, 1), 1, "forged"),
            ((0, 2), 1, "accepted 30"),
            ((0, 3), 1, "superseded"),
            ((0, 4), 1, "superseded"),
            ((1, 1), 2, "decreasing"),
        ];
        let answers: Vec<(Order, u64, &str)> = answers
            .iter()
            .map(|(o, c, a)| (*o, *c, a.as_str()))
            .collect();
        assert_eq!(answers, expected);
        writer.shutdown();
    }

    /// A connection's first bid opens a fresh credit window and takes one from its address's
    /// allowance; a later bid on the connection (which carries its debt) takes none.
    #[test]
    fn fresh_credit_windows_are_admitted_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let writer = crate::db::DbWriter::start(
            &dir.path().join("ringseed.db"),
            &[(ledger::COMPONENT, ledger::MIGRATIONS)],
        )
        .unwrap();
        let seeder = Wallet::from_secret([2; 32]).unwrap();
        let l = Ledger::new(writer.handle(), seeder.address(), 199);
        let payer = Wallet::from_secret([3; 32]).unwrap();
        let bid = |ch: u8| Bid::sign(&payer, 199, seeder.address(), 1, ChannelId([ch; 32]), 99);
        let mut guards = BidGuards {
            admission: Admission::new(2, std::time::Duration::from_secs(3600), 16),
            ..Default::default()
        };
        let mut answer = |b: Bid, fresh_from: Option<&str>| {
            let from = fresh_from.map(|s| s.parse().unwrap());
            check_bid(b, from, &l, &mut guards)
                .and_then(|r| r.recv_result().unwrap())
                .map(|c| c.id)
        };
        let a = Some("192.0.2.1");
        assert_eq!(answer(bid(1), a), Ok(ChannelId([1; 32])));
        assert_eq!(answer(bid(2), a), Ok(ChannelId([2; 32])));
        assert_eq!(answer(bid(3), a), Err(Rejection::TooManyChannels));
        assert_eq!(answer(bid(3), None), Ok(ChannelId([3; 32])), "not fresh");
        // An unsigned bid is refused before it can spend anyone's allowance.
        let unsigned = Bid {
            signature: [0; 65],
            ..bid(4)
        };
        let b = Some("192.0.2.9");
        assert_eq!(answer(unsigned, b), Err(Rejection::Forged));
        assert_eq!(answer(bid(4), b), Ok(ChannelId([4; 32])));
        assert_eq!(answer(bid(5), b), Ok(ChannelId([5; 32])));
        assert_eq!(answer(bid(6), b), Err(Rejection::TooManyChannels));
        // Channel 1 has no ledger row yet (no voucher), but its payer bid first: a stranger's
        // own signed bid on it is refused, the payer's own re-bid is not.
        let thief = Wallet::from_secret([9; 32]).unwrap();
        let stolen = Bid::sign(&thief, 199, seeder.address(), 1, ChannelId([1; 32]), 99);
        assert_eq!(answer(stolen, None), Err(Rejection::Forged));
        assert_eq!(answer(bid(1), None), Ok(ChannelId([1; 32])));
        writer.shutdown();
    }
}
