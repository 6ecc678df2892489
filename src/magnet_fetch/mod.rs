//! BEP 9, the fetching side: the info dictionary of a magnet link's torrent, from its peers.
//!
//! This runs on the control thread's tokio runtime, not on the io_uring workers: metadata is
//! small (kilobytes, rarely a few MiB) and fetched once per magnet link, after which the workers
//! connect to the swarm for the data.
//!
//! Every peer gets its own connection and assembles the whole metadata by itself
//! ([`peer`]); the first set that hashes to the info-hash wins and the other attempts are
//! dropped. Pieces are not split across peers: a set that fails the hash then has exactly one
//! author, who is recorded as bad, and the cost (up to `parallel_peers` copies of a few hundred
//! KiB) is small. Everything a peer sends is bounded ([`FetchOptions`]): the advertised size, each
//! message's length, the data messages per piece, the messages and bytes without progress, the
//! time without progress and the time in all.
//!
//! ```no_run
//! # async fn add(uri: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use ringseed::magnet_fetch::{FetchOptions, fetch_metadata, metainfo_from_info};
//! let magnet = ringseed::metainfo::Magnet::parse(uri)?;
//! let (peers, rx) = tokio::sync::mpsc::channel(64);
//! peers.send("127.0.0.1:6881".parse()?).await?;
//! drop(peers); // no more addresses: the fetch ends once these are tried
//! let fetched = fetch_metadata(&magnet.info_hash, rx, FetchOptions::default()).await?;
//! let metainfo = metainfo_from_info(&fetched.info, &magnet.trackers)?;
//! println!("{} from {}", metainfo.info.name, fetched.from);
//! # Ok(()) }
//! ```

mod assembly;
mod peer;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::metainfo::{Info, InfoHash, Metainfo, MetainfoError, hex};
use crate::wire::WireError;
use crate::wire::extension::ExtensionError;
use crate::wire::metadata::MetadataError;

/// BEP 52 piece layers by `pieces root`, as [`crate::metainfo::Info::piece_layers`] holds them.
pub type PieceLayers = HashMap<[u8; 32], Vec<[u8; 32]>>;

/// Addresses remembered to ignore duplicates; once this many have arrived, later ones are
/// dropped. Trackers and PEX (which a peer controls) feed the channel, so the set is bounded; a
/// magnet whose first 4096 peers cannot serve its metadata will not be saved by the 4097th.
pub const MAX_PEERS_CONSIDERED: usize = 4096;

/// How a fetch treats its peers. Every bound is on something a peer controls.
///
/// ```
/// use std::time::Duration;
/// use ringseed::magnet_fetch::FetchOptions;
/// let opts = FetchOptions { listen_port: 6881, peer_timeout: Duration::from_secs(10), ..Default::default() };
/// assert_eq!(opts.parallel_peers, 4);
/// ```
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Our peer id in handshakes.
    pub peer_id: [u8; 20],
    /// Our listening port, told to peers in the extension handshake (`p`) so they can connect
    /// back later; 0 = don't tell.
    pub listen_port: u16,
    /// Largest `metadata_size` accepted; a peer advertising more is dropped ("too_large").
    /// Default: 30 MiB, libtorrent 2.0's `max_metadata_size`, so we refuse nothing the reference
    /// client accepts (a v1 info dictionary of 30 MiB lists 1.5 M pieces). Memory is taken as
    /// pieces arrive, not on the peer's word, so a peer only costs what it really sends: at most
    /// `parallel_peers` × this. Values over [`crate::metainfo::MAX_TORRENT_BYTES`] act as that
    /// bound, which the parser enforces anyway.
    pub max_metadata_bytes: usize,
    /// Peers tried at once (0 acts as 1). Default 4.
    pub parallel_peers: usize,
    /// Longest wait for a TCP connection. Default 5 s: a peer from a tracker or PEX that does not
    /// answer SYNs holds one of the `parallel_peers` slots for this long.
    pub connect_timeout: Duration,
    /// Longest a peer may go without progress (its handshake, its extension handshake, a
    /// requested piece). Default 20 s.
    pub peer_timeout: Duration,
    /// Longest one attempt may take in all, progress or not: a peer that trickles one piece just
    /// within `peer_timeout` is still cut off. Default 120 s.
    pub peer_deadline: Duration,
    /// Data messages a peer may send, as a multiple of the metadata's piece count. Unrequested
    /// and repeated pieces are dropped; a peer past this budget is cut off
    /// ("too_many_data_messages"), so an endless stream of pieces ends. Default 2: one wasted
    /// message per piece.
    pub data_messages_per_piece: u32,
    /// Messages a peer may send without progress (keep-alives, haves, bitfields, other
    /// extensions' messages, dropped pieces). Default 1000: a seeder sends a handful.
    pub max_messages_without_progress: u32,
    /// Bytes a peer may send without progress. Default 4 MiB: a bitfield of the largest torrents
    /// (1 MiB = 8 M pieces) fits with room to spare.
    pub max_bytes_without_progress: usize,
    /// How peers are dialled, the engine's `[engine] encryption_*` (only the outgoing policy,
    /// the level and the method offered matter here): with `enabled` MSE first and one plain
    /// retry, with `forced` MSE only, with `disabled` plain only. Default: libtorrent's, as the
    /// engine's.
    pub encryption: crate::engine::encryption::Encryption,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            peer_id: crate::engine::new_peer_id(),
            listen_port: 0,
            max_metadata_bytes: 30 << 20,
            parallel_peers: 4,
            connect_timeout: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(20),
            peer_deadline: Duration::from_secs(120),
            data_messages_per_piece: 2,
            max_messages_without_progress: 1000,
            max_bytes_without_progress: 4 << 20,
            encryption: crate::engine::encryption::Encryption::default(),
        }
    }
}

impl FetchOptions {
    /// The defaults, dialling as `engine` does: its peer id, its port (told to peers) and its
    /// encryption policy.
    pub fn for_engine(engine: &crate::engine::Engine) -> FetchOptions {
        let s = engine.settings();
        FetchOptions {
            peer_id: s.peer_id,
            listen_port: engine.local_addr().port(),
            encryption: s.encryption,
            ..FetchOptions::default()
        }
    }
}

/// Why one peer could not give us the metadata. [`PeerFailure::kind`] is a short stable name for
/// counting; the message has the details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerFailure {
    #[error("connect: {0}")]
    Connect(String),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("connection closed while waiting for {0}")]
    Closed(&'static str),
    #[error("connection error while waiting for {stage}: {error}")]
    Io { stage: &'static str, error: String },
    #[error("no progress for {timeout:?} while waiting for {stage}")]
    Timeout {
        stage: &'static str,
        timeout: Duration,
    },
    #[error("not done within the per-peer deadline of {0:?}")]
    Deadline(Duration),
    #[error("bad handshake: {0}")]
    BadHandshake(WireError),
    #[error("handshake names another torrent, {}", hex(.0))]
    WrongInfoHash([u8; 20]),
    #[error("the peer does not support the extension protocol (BEP 10)")]
    NoExtensions,
    #[error("bad extension handshake: {0}")]
    BadExtHandshake(ExtensionError),
    #[error("the peer does not offer ut_metadata")]
    NoUtMetadata,
    #[error("the peer's extension handshake has no (or a zero) metadata_size")]
    NoMetadataSize,
    #[error("metadata_size {size} is over the {max}-byte limit")]
    TooLarge { size: u64, max: usize },
    #[error("bad message: {0}")]
    BadMessage(WireError),
    #[error("bad ut_metadata message: {0}")]
    BadMetadataMessage(MetadataError),
    #[error("the peer rejected metadata piece {0}")]
    Rejected(u32),
    #[error("a data message says total_size {got}, the extension handshake said {advertised}")]
    WrongTotalSize { got: u64, advertised: u64 },
    #[error("metadata piece {piece} has {got} bytes, expected {expected}")]
    WrongPieceLength {
        piece: u32,
        got: usize,
        expected: usize,
    },
    #[error("more than {max} ut_metadata data messages")]
    TooManyDataMessages { max: u32 },
    #[error("{messages} messages ({bytes} bytes) without progress")]
    NoProgress { messages: u32, bytes: usize },
    #[error("the assembled metadata does not match the {0} info-hash")]
    HashMismatch(&'static str),
    #[error("the peer rejected a request for a piece layer")]
    HashesRejected,
    #[error("bad piece layer hashes: {0}")]
    BadHashes(String),
    #[error("MSE handshake: {0}")]
    Mse(crate::mse::MseError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl PeerFailure {
    /// A short stable name of the failure, for counting (`too_large`, `hash_mismatch`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            PeerFailure::Connect(_) => "connect",
            PeerFailure::ConnectTimeout(_) => "connect_timeout",
            PeerFailure::Closed(_) => "closed",
            PeerFailure::Io { .. } => "io",
            PeerFailure::Timeout { .. } => "timeout",
            PeerFailure::Deadline(_) => "deadline",
            PeerFailure::BadHandshake(_) => "bad_handshake",
            PeerFailure::WrongInfoHash(_) => "wrong_info_hash",
            PeerFailure::NoExtensions => "no_extensions",
            PeerFailure::BadExtHandshake(_) => "bad_ext_handshake",
            PeerFailure::NoUtMetadata => "no_ut_metadata",
            PeerFailure::NoMetadataSize => "no_metadata_size",
            PeerFailure::TooLarge { .. } => "too_large",
            PeerFailure::BadMessage(_) => "bad_message",
            PeerFailure::BadMetadataMessage(_) => "bad_metadata_message",
            PeerFailure::Rejected(_) => "rejected",
            PeerFailure::WrongTotalSize { .. } => "wrong_total_size",
            PeerFailure::WrongPieceLength { .. } => "wrong_piece_length",
            PeerFailure::TooManyDataMessages { .. } => "too_many_data_messages",
            PeerFailure::NoProgress { .. } => "no_progress",
            PeerFailure::HashMismatch(_) => "hash_mismatch",
            PeerFailure::HashesRejected => "hashes_rejected",
            PeerFailure::BadHashes(_) => "bad_hashes",
            PeerFailure::Mse(_) => "mse",
            PeerFailure::Internal(_) => "internal",
        }
    }

    /// True when the peer never spoke BitTorrent to us: it says nothing about the torrent.
    fn unreachable(&self) -> bool {
        matches!(
            self,
            PeerFailure::Connect(_)
                | PeerFailure::ConnectTimeout(_)
                | PeerFailure::Closed(peer::HANDSHAKE)
                | PeerFailure::Io {
                    stage: peer::HANDSHAKE,
                    ..
                }
                | PeerFailure::Timeout {
                    stage: peer::HANDSHAKE | peer::MSE,
                    ..
                }
                | PeerFailure::Closed(peer::MSE)
                | PeerFailure::Io {
                    stage: peer::MSE,
                    ..
                }
                | PeerFailure::Mse(_)
        )
    }
}

/// How many failures of each kind, e.g. `{"hash_mismatch": 1, "timeout": 2}`.
pub fn count_by_kind(failures: &[(SocketAddr, PeerFailure)]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for (_, f) in failures {
        *counts.entry(f.kind()).or_default() += 1;
    }
    counts
}

/// Why no metadata was fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the info-hash has neither a v1 nor a v2 hash to check the metadata against")]
    NoInfoHash,
    #[error("the peer channel closed before any usable peer address arrived")]
    NoPeers,
    /// Every peer that spoke advertised more than the limit: the torrent really is that large.
    #[error("peers advertise metadata of {size} bytes, over the {max}-byte limit")]
    TooLarge { size: u64, max: usize },
    /// Every peer that spoke sent metadata that failed the hash (a wrong magnet link, or a swarm
    /// of liars).
    #[error("the metadata of {peers} peer(s) did not match the info-hash")]
    HashMismatch { peers: usize },
    #[error("all {tried} peer(s) failed; the last, {last}")]
    AllPeersFailed {
        tried: usize,
        /// The last failure, `address: reason`.
        last: String,
        failures: Vec<(SocketAddr, PeerFailure)>,
    },
}

impl FetchError {
    /// Every peer's failure when the fetch gave up after trying peers (empty otherwise).
    pub fn failures(&self) -> &[(SocketAddr, PeerFailure)] {
        match self {
            FetchError::AllPeersFailed { failures, .. } => failures,
            _ => &[],
        }
    }
}

/// Verified metadata and how it was found.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The raw info dictionary, whose hash matched every hash the caller knew.
    pub info: Vec<u8>,
    /// For a v2 or hybrid torrent, the piece layer of each file longer than a piece, each
    /// verified against its `pieces root` (BEP 52): what the info dictionary lacks to verify
    /// those files' pieces. Empty for v1.
    pub piece_layers: PieceLayers,
    /// The peer it came from.
    pub from: SocketAddr,
    /// Attempts started, one per peer, the winning one included (others may still have been
    /// under way when it won).
    pub peers_tried: usize,
    /// The peers that failed before it came, each with its reason.
    pub bad_peers: Vec<(SocketAddr, PeerFailure)>,
}

/// Fetches the info dictionary of `hash` from peers arriving on `peers` (the caller feeds the
/// addresses it learns from `x.pe`, `--peer`, trackers and PEX; duplicates are ignored), trying up
/// to `parallel_peers` at once, until one peer's pieces hash to the info-hash: SHA-1 against `v1`
/// and SHA-256 against `v2`, both when both are known.
///
/// Gives up once the channel is closed and every peer has failed. While the channel stays open it
/// waits for more peers: bound the whole fetch with `tokio::time::timeout` (dropping the future
/// closes every connection). Must run inside a tokio runtime (it spawns one task per peer).
pub async fn fetch_metadata(
    hash: &InfoHash,
    mut peers: mpsc::Receiver<SocketAddr>,
    opts: FetchOptions,
) -> Result<Fetched, FetchError> {
    if hash.v1.is_none() && hash.v2.is_none() {
        return Err(FetchError::NoInfoHash);
    }
    let parallel = opts.parallel_peers.max(1);
    let target = Arc::new(peer::Target { hash: *hash, opts });
    let mut seen = HashSet::new();
    let mut waiting = VecDeque::new();
    let mut running = JoinSet::new();
    let mut address_of = HashMap::new();
    let mut failures = Vec::new();
    let mut tried = 0;
    let mut open = true;
    loop {
        while running.len() < parallel
            && let Some(addr) = waiting.pop_front()
        {
            let target = Arc::clone(&target);
            let task = running.spawn(peer::fetch_from(addr, target));
            address_of.insert(task.id(), addr);
            tried += 1;
        }
        if running.is_empty() && !open {
            return Err(give_up(tried, failures));
        }
        tokio::select! {
            next = peers.recv(), if open => match next {
                Some(addr) => {
                    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                    if usable(addr) && seen.len() < MAX_PEERS_CONSIDERED && seen.insert(addr) {
                        waiting.push_back(addr);
                    }
                }
                None => open = false,
            },
            Some(done) = running.join_next_with_id() => {
                let (id, result) = match done {
                    Ok((id, result)) => (id, result),
                    // Only a bug panics a peer's task; record it and go on with the others.
                    Err(e) => (e.id(), Err(PeerFailure::Internal(e.to_string()))),
                };
                let Some(addr) = address_of.remove(&id) else {
                    continue;
                };
                match result {
                    Ok((info, piece_layers)) => {
                        return Ok(Fetched {
                            info,
                            piece_layers,
                            from: addr,
                            peers_tried: tried,
                            bad_peers: failures,
                        });
                    }
                    Err(f) => {
                        tracing::debug!(peer = %addr, reason = %f, "metadata fetch: peer failed");
                        failures.push((addr, f));
                    }
                }
            }
            // Both branches off: the channel is closed and nothing runs (handled above).
            else => return Err(give_up(tried, failures)),
        }
    }
}

/// An address worth dialling: not port 0, and not an unspecified (which Linux connects to
/// localhost), multicast or broadcast IP, which a hostile PEX message could offer.
fn usable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

/// The error once every peer has failed: the one reason all peers that spoke agree on (too
/// large, or a hash mismatch), else the whole list.
fn give_up(tried: usize, failures: Vec<(SocketAddr, PeerFailure)>) -> FetchError {
    let spoke: Vec<&PeerFailure> = failures
        .iter()
        .map(|(_, f)| f)
        .filter(|f| !f.unreachable())
        .collect();
    if !spoke.is_empty() {
        let too_large: Option<Vec<(u64, usize)>> = spoke
            .iter()
            .map(|f| match f {
                PeerFailure::TooLarge { size, max } => Some((*size, *max)),
                _ => None,
            })
            .collect();
        if let Some((size, max)) = too_large.and_then(|s| s.into_iter().min()) {
            return FetchError::TooLarge { size, max };
        }
        if spoke
            .iter()
            .all(|f| matches!(f, PeerFailure::HashMismatch(_)))
        {
            return FetchError::HashMismatch { peers: spoke.len() };
        }
    }
    match failures.last() {
        None => FetchError::NoPeers,
        Some((addr, f)) => FetchError::AllPeersFailed {
            tried,
            last: format!("{addr}: {f}"),
            failures,
        },
    }
}

/// A [`Metainfo`] for a torrent added by magnet link: the fetched info dictionary, parsed by the
/// .torrent parser ([`Info::from_bytes`]), and the magnet's trackers, each in its own tier as
/// libtorrent does with a magnet's `tr` parameters (blank and repeated URLs are dropped).
///
/// ```
/// use ringseed::magnet_fetch::metainfo_from_info;
/// let info = b"d6:lengthi5e4:name5:a.txt12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
/// let m = metainfo_from_info(info, &["udp://t.example:6969".into()]).unwrap();
/// assert_eq!(m.info.name, "a.txt");
/// assert_eq!(m.trackers, [["udp://t.example:6969"]]);
/// ```
pub fn metainfo_from_info(info: &[u8], trackers: &[String]) -> Result<Metainfo, MetainfoError> {
    let info = Info::from_bytes(info)?;
    let mut tiers: Vec<Vec<String>> = Vec::new();
    for url in trackers.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if !tiers.iter().flatten().any(|t| t == url) {
            tiers.push(vec![url.to_owned()]);
        }
    }
    Ok(Metainfo {
        info,
        trackers: tiers,
        url_list: Vec::new(),
        comment: None,
        created_by: None,
        creation_date: None,
    })
}

#[cfg(test)]
mod tests;
