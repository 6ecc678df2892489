//! What a worker counts: disconnect reasons, its counters and its latency histogram.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use hdrhistogram::Histogram;

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
    /// A block we never asked for (or no longer wait for), or one of the wrong length.
    UnrequestedBlock,
    /// It sent data that failed the hash check and is banned.
    BadData,
    /// Its address was banned for bad data earlier.
    Banned,
    /// The torrent stopped downloading with an error (a full disk, say).
    TorrentError,
    /// Neither side wants anything of the other (both complete, or a seed that only uploads to
    /// us and a download that finished).
    NotNeeded,
    /// A message started arriving and did not complete within `message_timeout` (a trickle).
    SlowMessage,
    /// Bytes waited for the socket with no progress for `send_timeout`: the peer does not read.
    SendStalled,
    /// Too many messages that change nothing (repeated interest, haves of known pieces, cancels
    /// of nothing, repeated bitfields, metadata requests past the answers allowed).
    MessageFlood,
    /// More connections from its address than `max_connections_per_ip`.
    TooManyFromIp,
    /// It kept sending vouchers that failed their signature check.
    ForgedVouchers,
    /// A plain BitTorrent handshake while `encryption_in` is `forced`.
    PlaintextRefused,
    /// An MSE handshake while `encryption_in` is `disabled`.
    EncryptionRefused,
    /// Its MSE handshake failed (a wrong key or VC, no common method, an unknown torrent).
    BadMseHandshake,
    /// No MSE synchronisation pattern within the padding the spec allows (an endless pad).
    MseNoSync,
}

impl Reason {
    pub const ALL: [Reason; 32] = [
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
        Reason::UnrequestedBlock,
        Reason::BadData,
        Reason::Banned,
        Reason::TorrentError,
        Reason::NotNeeded,
        Reason::SlowMessage,
        Reason::SendStalled,
        Reason::MessageFlood,
        Reason::TooManyFromIp,
        Reason::ForgedVouchers,
        Reason::PlaintextRefused,
        Reason::EncryptionRefused,
        Reason::BadMseHandshake,
        Reason::MseNoSync,
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
            Reason::UnrequestedBlock => "unrequested_block",
            Reason::BadData => "bad_data",
            Reason::Banned => "banned",
            Reason::TorrentError => "torrent_error",
            Reason::NotNeeded => "not_needed",
            Reason::SlowMessage => "slow_message",
            Reason::SendStalled => "send_stalled",
            Reason::MessageFlood => "message_flood",
            Reason::TooManyFromIp => "too_many_from_ip",
            Reason::ForgedVouchers => "forged_vouchers",
            Reason::PlaintextRefused => "plaintext_refused",
            Reason::EncryptionRefused => "encryption_refused",
            Reason::BadMseHandshake => "bad_mse_handshake",
            Reason::MseNoSync => "mse_no_sync",
        }
    }
}

/// Why a BEP 52 `hash request` got a `hash reject`; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashReject {
    /// The torrent has no tree for that root (a v1 torrent, an unknown file) or the request
    /// does not fit the tree.
    Invalid,
    /// The peer's budget of answers is spent for now.
    Budget,
    /// The answer would not fit the connection's send backlog.
    Backlog,
}

impl HashReject {
    pub const ALL: [HashReject; 3] = [HashReject::Invalid, HashReject::Budget, HashReject::Backlog];

    pub fn name(self) -> &'static str {
        match self {
            HashReject::Invalid => "invalid",
            HashReject::Budget => "budget",
            HashReject::Backlog => "backlog",
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
    /// Upload jobs sent from the files' mappings (the `mmap` path; the rest were copied).
    pub jobs_mapped: AtomicU64,
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    /// Of `rejected`: requests past the `reqq` a falling-behind worker told its peers
    /// ([`crate::engine::reqq`]), shed from their queues or on arrival.
    pub shed: AtomicU64,
    pub dropped_requests: AtomicU64,
    /// Piece payload received (every block, duplicates included).
    pub bytes_down: AtomicU64,
    pub blocks_down: AtomicU64,
    /// Blocks that arrived after another copy (endgame) or for a piece no longer fetched.
    pub wasted_blocks: AtomicU64,
    /// Pieces that failed their hash check.
    pub hash_failures: AtomicU64,
    /// Complete pieces whose SHA-1 was computed in batches of [`crate::sha1x16`] lanes.
    pub pieces_hashed_in_lanes: AtomicU64,
    /// Pieces written and verified.
    pub pieces_done: AtomicU64,
    /// Parts another peer of the worker continued (their peer left, choked or snubbed us).
    pub parts_adopted: AtomicU64,
    /// Parts nobody fetched whose claims were given up, their blocks kept.
    pub parts_released: AtomicU64,
    /// Parts nobody fetched that were freed (their claims given up).
    pub parts_dropped: AtomicU64,
    /// Endgame copies of pieces another worker claimed.
    pub endgame_copies: AtomicU64,
    /// Complete copies thrown away: another worker wrote the piece first (endgame).
    pub duplicate_pieces: AtomicU64,
    pub write_errors: AtomicU64,
    /// Downloaded bytes written with `O_DIRECT` (`download_writes = "direct"`).
    pub direct_write_bytes: AtomicU64,
    pub submissions: AtomicU64,
    pub completions: AtomicU64,
    /// MSE handshakes completed (either side), by the method chosen.
    pub mse_rc4: AtomicU64,
    pub mse_plaintext: AtomicU64,
    /// BEP 52 `hash request`s answered with `hashes`.
    pub hash_requests_answered: AtomicU64,
    /// BEP 52 `hash request`s rejected, by [`HashReject`].
    pub hash_requests_rejected: [AtomicU64; HashReject::ALL.len()],
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
            jobs_mapped: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            dropped_requests: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            blocks_down: AtomicU64::new(0),
            wasted_blocks: AtomicU64::new(0),
            hash_failures: AtomicU64::new(0),
            pieces_hashed_in_lanes: AtomicU64::new(0),
            pieces_done: AtomicU64::new(0),
            parts_adopted: AtomicU64::new(0),
            parts_released: AtomicU64::new(0),
            parts_dropped: AtomicU64::new(0),
            endgame_copies: AtomicU64::new(0),
            duplicate_pieces: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            direct_write_bytes: AtomicU64::new(0),
            submissions: AtomicU64::new(0),
            completions: AtomicU64::new(0),
            mse_rc4: AtomicU64::new(0),
            mse_plaintext: AtomicU64::new(0),
            hash_requests_answered: AtomicU64::new(0),
            hash_requests_rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            disconnects: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_us: Mutex::new(new_histogram()),
        }
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
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
    pub jobs_mapped: u64,
    pub requests: u64,
    pub rejected: u64,
    pub shed: u64,
    pub dropped_requests: u64,
    pub bytes_down: u64,
    pub blocks_down: u64,
    pub wasted_blocks: u64,
    pub hash_failures: u64,
    pub pieces_hashed_in_lanes: u64,
    pub pieces_done: u64,
    pub parts_adopted: u64,
    pub parts_released: u64,
    pub parts_dropped: u64,
    pub endgame_copies: u64,
    pub duplicate_pieces: u64,
    pub write_errors: u64,
    pub direct_write_bytes: u64,
    pub submissions: u64,
    pub completions: u64,
    pub mse_rc4: u64,
    pub mse_plaintext: u64,
    pub hash_requests_answered: u64,
    /// By [`HashReject::name`], every reason present (zeros included).
    pub hash_requests_rejected: HashMap<&'static str, u64>,
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
            jobs_mapped: r(&self.jobs_mapped),
            requests: r(&self.requests),
            rejected: r(&self.rejected),
            shed: r(&self.shed),
            dropped_requests: r(&self.dropped_requests),
            bytes_down: r(&self.bytes_down),
            blocks_down: r(&self.blocks_down),
            wasted_blocks: r(&self.wasted_blocks),
            hash_failures: r(&self.hash_failures),
            pieces_hashed_in_lanes: r(&self.pieces_hashed_in_lanes),
            pieces_done: r(&self.pieces_done),
            parts_adopted: r(&self.parts_adopted),
            parts_released: r(&self.parts_released),
            parts_dropped: r(&self.parts_dropped),
            endgame_copies: r(&self.endgame_copies),
            duplicate_pieces: r(&self.duplicate_pieces),
            write_errors: r(&self.write_errors),
            direct_write_bytes: r(&self.direct_write_bytes),
            submissions: r(&self.submissions),
            completions: r(&self.completions),
            mse_rc4: r(&self.mse_rc4),
            mse_plaintext: r(&self.mse_plaintext),
            hash_requests_answered: r(&self.hash_requests_answered),
            hash_requests_rejected: HashReject::ALL
                .iter()
                .map(|&k| (k.name(), r(&self.hash_requests_rejected[k as usize])))
                .collect(),
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

    pub(crate) fn add(&self, counter: &AtomicU64, n: u64) {
        let _ = self;
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` requests shed ([`crate::engine::peer::Peer::shed`] or on arrival): each is also a
    /// reject.
    pub(crate) fn add_shed(&self, n: u64) {
        self.add(&self.rejected, n);
        self.add(&self.shed, n);
    }
}
