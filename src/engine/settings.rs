//! Engine settings: what the workers need to know, resolved from the config file.

use std::net::SocketAddr;
use std::time::Duration;

use crate::choking::SeedChoker;

/// How piece data travels from disk to a peer's socket. Splice (file → pipe → socket) and
/// `send_zc` were measured against these two on loopback and over a veth pair and lost at every
/// load (docs/design.md, "Upload paths"), so they were removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadPath {
    /// Let the engine choose: `mmap`, which measured fastest and cheapest at 1, 64 and 1024
    /// peers on loopback and over veth (docs/design.md).
    Auto,
    /// io_uring vectored read of the blocks into a per-peer buffer, one send of headers and
    /// blocks together: two copies (page cache → buffer → socket).
    Copy,
    /// Block data is sent from the files' shared read-only mappings by `sendmsg`: one copy
    /// (page cache → socket buffer), no read into user memory. Jobs whose pages are not cached
    /// take the copy path, whose io_uring read waits for the disk instead of the worker.
    Mmap,
}

impl UploadPath {
    /// The path actually used.
    pub fn resolve(self) -> UploadPath {
        match self {
            UploadPath::Auto => UploadPath::Mmap,
            p => p,
        }
    }
}

/// How downloaded pieces go to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadWrites {
    /// Through the page cache (the kernel copies each piece and writes it back later).
    #[default]
    Buffered,
    /// The whole pages of each piece with `O_DIRECT` from the piece buffer (no page-cache
    /// copy); the unaligned head and tail of a file's span through the page cache. A
    /// filesystem that refuses `O_DIRECT` turns its torrent back to buffered writes.
    Direct,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Worker threads (0 = one per available core).
    pub workers: usize,
    /// Pin worker i to core i (mod cores).
    pub pin_workers: bool,
    pub listen: SocketAddr,
    /// Upload slots over all workers (0 = unlimited).
    pub upload_slots: usize,
    pub choker: SeedChoker,
    pub rechoke_interval: Duration,
    /// An optimistic unchoke every this many rechokes.
    pub optimistic_every: u32,
    /// Bytes after which a round-robin slot is handed on.
    pub round_robin_quota: u64,
    pub upload_path: UploadPath,
    /// Largest upload job (headers + blocks) read and sent at once.
    pub batch_bytes: usize,
    /// Largest upload job sent at once from the files' mappings (the `mmap` path): it takes
    /// no job memory, and fewer, larger sends cost less CPU per GiB.
    pub mapped_batch_bytes: usize,
    /// Upload jobs a peer may have in flight (reading while the previous one sends; a mapped
    /// job, with nothing to read, goes alone).
    pub jobs_per_peer: usize,
    /// Bytes of upload-job buffers one worker may have out at once; peers beyond it wait.
    pub job_memory: usize,
    /// Largest block a peer may request.
    pub max_request_len: u32,
    /// Requests queued per peer; more are rejected (fast extension) or dropped.
    pub max_reqq: usize,
    /// Blocks of requests a worker holds before it shares `reqq` among its peers and sheds
    /// the rest (see [`super::reqq`]).
    pub queue_budget_blocks: usize,
    /// Bytes a peer's socket may hold not yet sent (`TCP_NOTSENT_LOWAT`; 0: the kernel's
    /// default, no limit).
    pub unsent_bytes: u32,
    /// Control bytes queued for a peer that does not read before it is cut off.
    pub max_send_backlog: usize,
    pub ring_entries: u32,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub keepalive_interval: Duration,
    pub max_peers_per_worker: usize,
    /// Global upload limit in bytes/s (0 = unlimited).
    pub upload_rate_limit: u64,
    /// BEP 6 allowed-fast set size.
    pub allowed_fast: usize,
    pub peer_id: [u8; 20],
    pub client_name: String,
    /// How often each peer that speaks BEP 11 hears which peers joined and left its torrent's
    /// swarm (public torrents only); zero turns peer exchange off.
    pub pex_interval: Duration,
    /// Bytes of pieces being downloaded one worker may hold at once (each piece in flight is a
    /// buffer of the piece's size until it is written); a worker always has room for one.
    pub download_memory: usize,
    /// Reserve each downloaded file's size with `fallocate` when it is created (never
    /// zero-filled); otherwise files are sparse.
    pub preallocate: bool,
    /// Buffered or `O_DIRECT` piece writes.
    pub download_writes: DownloadWrites,
    /// Our requests wait this long for a block before the peer counts as snubbing us (its
    /// requests go to other peers).
    pub request_timeout: Duration,
    /// Pieces picked at random before rarest first starts.
    pub random_first_pieces: u32,
    /// Connections per torrent (incoming and outgoing); more are refused. A seed serves
    /// thousands of leechers of one torrent, so this is high.
    pub max_peers_per_torrent: usize,
    /// Outgoing connections per torrent: its dial loop stops here.
    pub max_dials_per_torrent: usize,
    /// Global download limit in bytes/s (0 = unlimited).
    pub download_rate_limit: u64,
    /// A message that started arriving must be whole within this long (a peer trickling a
    /// length prefix or a body byte by byte is cut off as `slow_message`).
    pub message_timeout: Duration,
    /// Bytes waiting for a peer's socket must make progress within this long (a peer that
    /// stops reading is cut off as `send_stalled`; its upload slot is given up much sooner).
    pub send_timeout: Duration,
    /// Connections from one IP address to one torrent, and connections from one IP address
    /// still in their handshake (not yet tied to a torrent); more are refused.
    pub max_connections_per_ip: usize,
    /// MSE/PE: policies both ways and the crypto methods allowed.
    pub encryption: super::encryption::Encryption,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            workers: 0,
            pin_workers: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 6881)),
            upload_slots: 100,
            choker: SeedChoker::RoundRobin,
            rechoke_interval: Duration::from_secs(10),
            optimistic_every: 3,
            round_robin_quota: 4 << 20,
            upload_path: UploadPath::Auto,
            batch_bytes: 256 << 10,
            mapped_batch_bytes: 1 << 20,
            jobs_per_peer: 2,
            job_memory: 64 << 20,
            max_request_len: 16 << 10,
            max_reqq: 2000,
            unsent_bytes: 64 << 10,
            queue_budget_blocks: super::reqq::DEFAULT_BUDGET_BLOCKS,
            max_send_backlog: 64 << 10,
            ring_entries: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(60),
            max_peers_per_worker: 20_000,
            upload_rate_limit: 0,
            allowed_fast: 10,
            peer_id: super::new_peer_id(),
            client_name: format!("ringseed {}", env!("CARGO_PKG_VERSION")),
            pex_interval: Duration::from_secs(60),
            download_memory: 64 << 20,
            preallocate: false,
            download_writes: DownloadWrites::Buffered,
            request_timeout: Duration::from_secs(20),
            random_first_pieces: 4,
            max_peers_per_torrent: 5000,
            max_dials_per_torrent: 100,
            download_rate_limit: 0,
            message_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_connections_per_ip: 8,
            encryption: super::encryption::Encryption::default(),
        }
    }
}

impl Settings {
    pub fn worker_count(&self) -> usize {
        crate::threads_or_cores(self.workers)
    }
}
