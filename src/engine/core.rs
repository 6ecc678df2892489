//! The worker's own state that connection handlers use beside their connection: the ring,
//! settings, counters, torrents, job memory, the token queue and the slot counts. The worker
//! (`worker.rs`) owns it and the connections (`conn/`); a handler gets `&mut Conn` and
//! `&mut Core` at once, so it never looks its slot up again.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use io_uring::{IoUring, squeue};

use super::peer::Rules;
use super::ratelimit::TokenBucket;
use super::upload::JobMemory;
use super::{Settings, Torrent, UploadPath, WorkerStats};
use crate::choking::{Held, Slots};
use crate::speed::service::SpeedService;

/// The worker's own state that connection handlers use beside their connection: the ring,
/// settings, counters, torrents, job memory and slot counts.
pub(crate) struct Core {
    pub(super) ring: IoUring,
    pub settings: Arc<Settings>,
    pub rules: Rules,
    pub stats: Arc<WorkerStats>,
    pub global_limit: Arc<TokenBucket>,
    pub torrents: HashMap<[u8; 20], Arc<Torrent>>,
    /// `HASH('req2', SKEY)` → SKEY for each torrent in `torrents` (its info-hash, and a hybrid's
    /// truncated v2 hash too): how an incoming MSE handshake names its torrent.
    pub obfuscated: HashMap<[u8; 20], [u8; 20]>,
    /// Hybrid torrents by their truncated v2 info-hash (BEP 52), to their `id` in `torrents`:
    /// v2 peers dial a hybrid torrent by that name.
    pub v2_ids: HashMap<[u8; 20], [u8; 20]>,
    pub memory: JobMemory,
    /// Residency and file sizes learned for the `mmap` path.
    pub memo: super::mapped::Memo,
    /// Peers waiting for rate-limit tokens, in turn (each once: its `throttled` flag).
    pub token_queue: VecDeque<usize>,
    /// Request → last byte into the socket, published to `stats` once a second.
    pub latency: Histogram<u64>,
    /// The time of the completions being handled (read once per batch).
    pub now: Instant,
    pub upload_path: UploadPath,
    pub slots: Slots,
    pub held: Held,
    /// A slot was given up between rounds (its holder left or lost interest): the worker holds
    /// a round at its next tick, so a peer that waits takes it then, not at the next interval.
    pub slot_opened: bool,
    pub speed: Option<Arc<SpeedService>>,
    pub id: usize,
    /// Tells connections apart for the speed verifier's answers.
    pub next_conn_id: u64,
    /// The pieces this worker downloads and writes.
    pub fetches: super::fetch::Fetches,
    pub download_limit: Arc<TokenBucket>,
    /// Connections per address still in their handshake, over all workers.
    pub handshaking: Arc<super::ip_limit::IpCounts>,
    /// Spreads piece picks.
    pub rng: u64,
}

impl Core {
    /// Queues a submission, flushing the queue to the kernel when it is full.
    ///
    /// # Safety
    /// Every buffer `entry` points to must stay valid and unmoved until its completion arrives.
    pub unsafe fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { crate::uring::push(&mut self.ring, &entry) }
    }
}
