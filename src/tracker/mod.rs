//! Tracker client: HTTP(S) (BEP 3, 23, 7, 48) and UDP (BEP 15) announces and scrapes, and the
//! per-torrent announce schedule over BEP 12 tiers.
//!
//! The codecs ([`http`], [`udp`]) are pure functions over bytes: they build requests and parse
//! replies, hold no sockets and no clocks, and are fuzzed. [`TrackerClient`] does the I/O on the
//! control thread's tokio runtime, and [`Announcer`] is the state machine that decides when to
//! announce, with which event, to which tracker.
//!
//! Everything a tracker sends is bounded: reply size ([`MAX_REPLY_BYTES`]), peers per reply
//! ([`MAX_PEERS`]), and intervals, which are clamped to [`MIN_INTERVAL`]..=[`MAX_INTERVAL`].

pub mod announcer;
pub mod client;
pub mod http;
pub mod report;
pub mod udp;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub use announcer::{
    AnnounceOutcome, Announcer, AnnouncerConfig, Clock, TrackerStatus, TransferStats,
};
pub use client::{AnnounceTransport, ClientConfig, TrackerClient};

use crate::bencode::DecodeError;

/// Largest tracker reply accepted, HTTP body or UDP datagram.
pub const MAX_REPLY_BYTES: usize = 1 << 20;
/// Most peers taken from one reply (IPv4 and IPv6 together); the rest are dropped.
pub const MAX_PEERS: usize = 2000;
/// Shortest re-announce interval honoured, whatever the tracker says.
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Longest re-announce interval honoured, whatever the tracker says.
pub const MAX_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// Interval used when an HTTP tracker's reply has none (BEP 3 requires one; some omit it).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1800);
/// Most info-hashes in one scrape: what fits one UDP scrape datagram (BEP 15 says about 74).
pub const MAX_SCRAPE_HASHES: usize = 74;

/// The event an announce reports (BEP 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Event {
    /// A regular, periodic announce.
    #[default]
    None,
    /// The first announce of a torrent to a tracker.
    Started,
    /// The download finished while the client was running.
    Completed,
    /// The client stops serving the torrent.
    Stopped,
}

impl Event {
    /// The value of the HTTP `event` parameter; `None` for a regular announce (no parameter).
    pub fn as_http(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Started => Some("started"),
            Event::Completed => Some("completed"),
            Event::Stopped => Some("stopped"),
        }
    }

    /// The event code of a BEP 15 announce.
    pub fn as_udp(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }
}

/// What one announce tells a tracker. The transfer figures must be the engine's truthful totals
/// for this torrent since it was started (`left` is the bytes still missing).
///
/// ```
/// use ringseed::tracker::{AnnounceRequest, Event};
/// let req = AnnounceRequest {
///     event: Event::Started,
///     left: 1 << 20,
///     ..AnnounceRequest::new([1; 20], *b"-RS0001-abcdefghijkl", 6881)
/// };
/// assert_eq!(req.numwant, Some(50));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    /// The port peers should connect to.
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    /// Peers wanted; `None` lets the tracker choose.
    pub numwant: Option<u32>,
    /// BEP 7 `key`: lets the tracker recognise this client across address changes.
    pub key: u32,
    /// The `tracker id` this tracker gave in an earlier reply, sent back as `trackerid`.
    pub tracker_id: Option<Vec<u8>>,
}

impl AnnounceRequest {
    /// A regular announce with zero transfer figures, 50 peers wanted and key 0.
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20], port: u16) -> Self {
        AnnounceRequest {
            info_hash,
            peer_id,
            port,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: Event::None,
            numwant: Some(50),
            key: 0,
            tracker_id: None,
        }
    }
}

/// A tracker's answer to an announce, bounded and clamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// Time until the next regular announce, clamped to [`MIN_INTERVAL`]..=[`MAX_INTERVAL`].
    pub interval: Duration,
    /// The tracker's floor for announces, clamped to at most [`MAX_INTERVAL`].
    pub min_interval: Option<Duration>,
    /// To be sent back as `trackerid` in later announces (HTTP only).
    pub tracker_id: Option<Vec<u8>>,
    /// Seeders, when the tracker says.
    pub complete: Option<u32>,
    /// Leechers, when the tracker says.
    pub incomplete: Option<u32>,
    /// Peers, IPv4 then IPv6, at most [`MAX_PEERS`], without port-0 entries.
    pub peers: Vec<SocketAddr>,
    /// The tracker's `warning message`, when it gave one.
    pub warning: Option<String>,
}

/// Swarm figures for one torrent from a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    /// Seeders.
    pub complete: u32,
    /// Completed downloads the tracker has counted.
    pub downloaded: u32,
    /// Leechers.
    pub incomplete: u32,
}

/// A scrape reply: figures per info-hash the tracker knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScrapeResponse {
    pub files: BTreeMap<[u8; 20], ScrapeStats>,
}

/// Everything that can go wrong talking to a tracker. Each variant says what was wrong and with
/// which value; [`TrackerError::Failure`] carries the tracker's own text verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// The tracker refused the request (`failure reason`, or a BEP 15 error packet).
    #[error("tracker refused: {0}")]
    Failure(String),
    /// The client itself could not be set up (TLS configuration).
    #[error("cannot set up the tracker client: {0}")]
    Setup(String),
    #[error("tracker URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("tracker URL {0:?} has an unsupported scheme (http, https and udp are)")]
    UnsupportedScheme(String),
    #[error("tracker {0:?} has no scrape URL (its last path component is not `announce`)")]
    ScrapeUnsupported(String),
    #[error("scrape of {0} info-hashes asked; at most {MAX_SCRAPE_HASHES} per request")]
    TooManyHashes(usize),
    #[error("tracker reply is not valid bencode: {0}")]
    Bencode(#[from] DecodeError),
    #[error("tracker reply field `{field}`: {reason}")]
    Reply { field: &'static str, reason: String },
    #[error("tracker reply is larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("tracker answered HTTP status {status} without a failure reason")]
    HttpStatus { status: u16 },
    #[error("UDP tracker packet: {0}")]
    UdpPacket(String),
    #[error("cannot resolve tracker host {host:?}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("network error talking to {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("tracker {url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
}

impl TrackerError {
    pub(crate) fn reply(field: &'static str, reason: impl Into<String>) -> Self {
        TrackerError::Reply {
            field,
            reason: reason.into(),
        }
    }
}

/// Text a tracker sent, for error messages and warnings: lossy UTF-8, at most 1024 bytes shown.
pub(crate) fn tracker_text(b: &[u8]) -> String {
    const SHOW: usize = 1024;
    let s = String::from_utf8_lossy(&b[..b.len().min(SHOW)]).into_owned();
    if b.len() > SHOW { s + "…" } else { s }
}

/// Clamps a tracker's interval in seconds to the honoured range.
pub(crate) fn clamp_interval(secs: i64) -> Duration {
    let secs = u64::try_from(secs).unwrap_or(0);
    Duration::from_secs(secs).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

#[cfg(test)]
mod tests;
