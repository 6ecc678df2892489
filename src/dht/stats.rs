//! The DHT's counters: written by the lookups and announces, read by `/metrics` and the API.

use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use super::filter::{QueryCounts, Verdict};

/// Counters of one DHT node. All monotonic except `nodes` (the routing table's size when last
/// looked at) and `port`.
#[derive(Debug, Default)]
pub struct DhtStats {
    /// The UDP port the DHT listens on.
    pub port: AtomicU64,
    /// Nodes in the routing table (refreshed every few seconds).
    pub nodes: AtomicU64,
    pub lookups_started: AtomicU64,
    /// Lookups that ended on their own (the DHT had no closer node to ask).
    pub lookups_finished: AtomicU64,
    /// Lookups cut off by `lookup_timeout` (their peers so far were used).
    pub lookups_timed_out: AtomicU64,
    /// Announces (announce_peer rounds) started.
    pub announces: AtomicU64,
    /// Announces that stored us on no node.
    pub announces_failed: AtomicU64,
    /// Distinct addresses taken from lookups and handed to the torrents.
    pub peers_found: AtomicU64,
    /// Addresses dropped because a lookup had already taken `max_peers_per_lookup`.
    pub peers_dropped: AtomicU64,
    /// Incoming queries by what the node did with them (answered, or why not), counted by the
    /// node's query filter.
    pub query_counts: Arc<QueryCounts>,
}

/// The DHT as the API shows it (`GET /api/v1/stats`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DhtStatus {
    pub port: u16,
    pub nodes: u64,
    pub lookups_started: u64,
    pub lookups_finished: u64,
    pub lookups_timed_out: u64,
    pub announces: u64,
    pub announces_failed: u64,
    pub peers_found: u64,
}

impl DhtStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Incoming queries so far with `verdict`.
    pub fn queries(&self, verdict: Verdict) -> u64 {
        self.query_counts.get(verdict)
    }

    pub fn status(&self) -> DhtStatus {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DhtStatus {
            port: u16::try_from(r(&self.port)).unwrap_or(0),
            nodes: r(&self.nodes),
            lookups_started: r(&self.lookups_started),
            lookups_finished: r(&self.lookups_finished),
            lookups_timed_out: r(&self.lookups_timed_out),
            announces: r(&self.announces),
            announces_failed: r(&self.announces_failed),
            peers_found: r(&self.peers_found),
        }
    }
}
