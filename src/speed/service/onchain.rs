//! The on-chain check of bids (`[speed] rpc`): before a bid reaches the verifier, a small pool
//! of threads reads its channel with `channels(id)` and refuses it unless the contract shows a
//! channel that can pay this seeder ([`crate::speed::chain::confirm`]). Never on a worker: the worker
//! only queues (bounded; full = a counted `overloaded` refusal). Each RPC is bounded in time
//! ([`RPC_TIMEOUT`]) and in number ([`THREADS`] at once); replies are cached per channel
//! ([`CACHE_CHANNELS`], [`CACHE_TTL`]). A failed read refuses the bid (`chain_unavailable`)
//! rather than trusting it: trusting would hand an unfunded channel a credit window whenever
//! the node is slow, and the payer may simply bid again.
//!
//! ```text
//!  worker ─try_send─► check pool (signature, cache or channels(id), verdict)
//!                        ├─ confirmed ─► verifier queue (as without rpc)
//!                        └─ refused ───► the worker's outcome channel + wake
//! ```

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::EventFd;

use super::{Job, Outcome, PeerRef, SpeedStats};
use crate::speed::chain::abi;
use crate::speed::chain::confirm::{ChannelCache, Rules, judge, least_left};
use crate::speed::chain::rpc::Rpc;
use crate::speed::ledger::Funds;
use crate::speed::protocol::Bid;
use crate::speed::voucher::{Domain, Rejection};
use crate::speed::wallet::Address;

/// RPC reads at once (one per thread).
pub const THREADS: usize = 2;
/// Bids waiting for a read before workers refuse them `overloaded`.
pub const QUEUE_DEPTH: usize = 256;
/// Each `channels(id)` read's deadline, connecting included.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Channels whose reply is remembered.
pub const CACHE_CHANNELS: usize = 4096;
/// How long a reply is trusted (a top-up or a claim shows after at most this long).
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// Where the node's chain is (`[speed] rpc`, `[speed] min_channel_life_s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCheck {
    pub url: String,
    pub min_channel_life_s: u64,
}

pub(crate) type WorkerLinks = Arc<Mutex<Vec<Option<(Sender<Outcome>, Arc<EventFd>)>>>>;

pub(crate) struct BidJob {
    pub to: PeerRef,
    pub bid: Bid,
    pub fresh_from: Option<std::net::IpAddr>,
}

/// What the pool's threads share.
struct Shared {
    url: String,
    contract: Address,
    domain: Domain,
    rules: Rules,
    cache: Mutex<ChannelCache>,
    verifier: Sender<Job>,
    links: WorkerLinks,
    stats: Arc<SpeedStats>,
}

/// The running pool; dropping the sender ([`CheckPool::stop`]) ends its threads.
pub(crate) struct CheckPool {
    jobs: Mutex<Option<Sender<BidJob>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl CheckPool {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        check: &ChainCheck,
        domain: Domain,
        me: Address,
        credit_window: u64,
        verifier: Sender<Job>,
        links: WorkerLinks,
        stats: Arc<SpeedStats>,
    ) -> std::io::Result<CheckPool> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        let shared = Arc::new(Shared {
            url: check.url.clone(),
            contract: domain.contract,
            domain,
            rules: Rules {
                me,
                credit_window,
                min_life_s: check.min_channel_life_s,
            },
            cache: Mutex::new(ChannelCache::new(CACHE_CHANNELS, CACHE_TTL)),
            verifier,
            links,
            stats,
        });
        let mut threads = Vec::with_capacity(THREADS);
        for i in 0..THREADS {
            let (rx, shared) = (rx.clone(), shared.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ringseed-chain-{i}"))
                    .spawn(move || check_loop(rx, &shared))?,
            );
        }
        Ok(CheckPool {
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Queues a bid without blocking; a full queue is an `overloaded` refusal (the caller
    /// counts it).
    pub fn submit(&self, job: BidJob) -> Result<(), Rejection> {
        let Ok(jobs) = self.jobs.lock() else {
            return Err(Rejection::Overloaded);
        };
        let Some(jobs) = jobs.as_ref() else {
            return Err(Rejection::Overloaded);
        };
        jobs.try_send(job).map_err(|_| Rejection::Overloaded)
    }

    /// Lets the queued bids finish (each waits at most one RPC timeout), then joins.
    pub fn stop(&self) {
        if let Ok(mut j) = self.jobs.lock() {
            j.take();
        }
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn check_loop(rx: Receiver<BidJob>, shared: &Shared) {
    // One client per thread (a client is not shared between threads); a bad URL was refused
    // by the config, so a failure here only means every bid is refused `chain_unavailable`.
    let rpc = Rpc::with_timeout(&shared.url, RPC_TIMEOUT)
        .map_err(|e| tracing::warn!(error = %e, "speed: the chain RPC client cannot start"))
        .ok();
    while let Ok(job) = rx.recv() {
        let verdict = verdict(rpc.as_ref(), shared, &job.bid);
        match verdict {
            Ok(ch) => {
                let to = job.to;
                // The ledger subtracts what it accepted on the channel and the chain has not
                // seen claimed yet (it alone knows), before the bid takes a paid slot.
                let funds = Funds {
                    deposit: ch.deposit,
                    claimed: ch.claimed,
                    least_left: least_left(&job.bid, shared.rules.credit_window),
                    // The verifier fills it in: it alone knows the channel's other windows.
                    held: 0,
                };
                let forwarded = shared.verifier.try_send(Job::Bid {
                    to: job.to,
                    bid: job.bid,
                    fresh_from: job.fresh_from,
                    funds: Some(funds),
                });
                if forwarded.is_err() {
                    refuse(shared, to, Rejection::Overloaded);
                }
            }
            Err(r) => refuse(shared, job.to, r),
        }
    }
}

/// Signature first (free to check, and a forged bid costs no RPC), then the channel, which is
/// returned when the bid passes.
fn verdict(
    rpc: Option<&Rpc>,
    shared: &Shared,
    bid: &Bid,
) -> Result<abi::OnChainChannel, Rejection> {
    if !bid.signed_by_payer(&shared.domain, shared.rules.me) {
        return Err(Rejection::Forged);
    }
    let cached = shared
        .cache
        .lock()
        .ok()
        .and_then(|c| c.get(&bid.channel, Instant::now()));
    let ch = match cached {
        Some(ch) => ch,
        None => {
            let rpc = rpc.ok_or(Rejection::ChainUnavailable)?;
            let ret = rpc
                .eth_call(&shared.contract, &abi::channels_calldata(&bid.channel))
                .map_err(|e| {
                    tracing::debug!(error = %e, "speed: channels(id) failed");
                    Rejection::ChainUnavailable
                })?;
            let ch = abi::decode_channel(&ret).ok_or(Rejection::ChainUnavailable)?;
            if let Ok(mut c) = shared.cache.lock() {
                c.put(bid.channel, ch, Instant::now());
            }
            ch
        }
    };
    judge(&ch, bid, &shared.rules, now_unix()).map(|()| ch)
}

/// Answers the worker directly with a refusal, counted.
fn refuse(shared: &Shared, to: PeerRef, r: Rejection) {
    shared.stats.reject(r);
    let Ok(links) = shared.links.lock() else {
        return;
    };
    if let Some(Some((tx, fd))) = links.get(to.worker) {
        let outcome = Outcome::Bid { to, result: Err(r) };
        if tx.send_timeout(outcome, Duration::from_secs(1)).is_err() {
            tracing::warn!(
                worker = to.worker,
                "speed outcome dropped: the worker's queue stayed full"
            );
        }
        let _ = nix::unistd::write(fd.as_fd(), &1u64.to_ne_bytes());
    }
}
