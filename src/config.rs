//! The TOML config: every key, its default, its bound and its documentation in one place.
//!
//! `ringseed config print-default` prints [`print_default`]: the defaults with each key's doc as
//! a comment. A test checks that every key has a doc and that the printed text parses back to the
//! defaults, so the printed file can never drift from the code.

use serde::{Deserialize, Serialize};

use crate::choking::SeedChoker;
use crate::engine::{DownloadWrites, Settings, UploadPath};
use crate::metainfo::Version;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("`{key}` = {value}: {allowed}")]
    OutOfRange {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub engine: EngineConfig,
    pub trackers: Trackers,
    pub torrents: Torrents,
    pub metrics: Metrics,
    pub control: Control,
    pub state: State,
    pub speed: Speed,
    pub hashing: Hashing,
    pub create: Create,
    pub dht: DhtConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    pub workers: u32,
    pub pin_workers: bool,
    pub listen: String,
    pub upload_slots: u32,
    pub choker: SeedChoker,
    pub rechoke_interval_s: u32,
    pub upload_path: UploadPath,
    pub upload_rate_limit_kib: u64,
    pub torrent_upload_rate_limit_kib: u64,
    pub max_request_kib: u32,
    pub max_reqq: u32,
    pub batch_kib: u32,
    pub mapped_batch_kib: u32,
    pub job_memory_mib: u32,
    pub unsent_kib: u32,
    pub queue_budget_mib: u32,
    pub ring_entries: u32,
    pub handshake_timeout_s: u32,
    pub idle_timeout_s: u32,
    pub max_peers_per_worker: u32,
    pub pex_interval_s: u32,
    pub download_rate_limit_kib: u64,
    pub torrent_download_rate_limit_kib: u64,
    pub download_memory_mib: u32,
    pub preallocate: bool,
    pub download_writes: DownloadWrites,
    pub request_timeout_s: u32,
    pub max_peers_per_torrent: u32,
    pub max_dials_per_torrent: u32,
    pub message_timeout_s: u32,
    pub send_timeout_s: u32,
    pub max_connections_per_ip: u32,
    pub encryption_in: crate::engine::encryption::Policy,
    pub encryption_out: crate::engine::encryption::Policy,
    pub encryption_level: crate::engine::encryption::Level,
    pub encryption_prefer_rc4: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let s = Settings::default();
        EngineConfig {
            workers: 0,
            pin_workers: s.pin_workers,
            listen: s.listen.to_string(),
            upload_slots: s.upload_slots as u32,
            choker: s.choker,
            rechoke_interval_s: s.rechoke_interval.as_secs() as u32,
            upload_path: s.upload_path,
            upload_rate_limit_kib: 0,
            torrent_upload_rate_limit_kib: 0,
            max_request_kib: s.max_request_len >> 10,
            max_reqq: s.max_reqq as u32,
            batch_kib: (s.batch_bytes >> 10) as u32,
            mapped_batch_kib: (s.mapped_batch_bytes >> 10) as u32,
            job_memory_mib: (s.job_memory >> 20) as u32,
            unsent_kib: s.unsent_bytes >> 10,
            queue_budget_mib: (s.queue_budget_blocks >> 6) as u32,
            ring_entries: s.ring_entries,
            handshake_timeout_s: s.handshake_timeout.as_secs() as u32,
            idle_timeout_s: s.idle_timeout.as_secs() as u32,
            max_peers_per_worker: s.max_peers_per_worker as u32,
            pex_interval_s: s.pex_interval.as_secs() as u32,
            download_rate_limit_kib: 0,
            torrent_download_rate_limit_kib: 0,
            download_memory_mib: (s.download_memory >> 20) as u32,
            preallocate: s.preallocate,
            download_writes: s.download_writes,
            request_timeout_s: s.request_timeout.as_secs() as u32,
            max_peers_per_torrent: s.max_peers_per_torrent as u32,
            max_dials_per_torrent: s.max_dials_per_torrent as u32,
            message_timeout_s: s.message_timeout.as_secs() as u32,
            send_timeout_s: s.send_timeout.as_secs() as u32,
            max_connections_per_ip: s.max_connections_per_ip as u32,
            encryption_in: s.encryption.incoming,
            encryption_out: s.encryption.outgoing,
            encryption_level: s.encryption.level,
            encryption_prefer_rc4: s.encryption.prefer_rc4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trackers {
    pub enabled: bool,
    pub numwant: u32,
    pub http_timeout_s: u32,
    pub udp_retry_base_s: u32,
    pub udp_retries: u32,
}

impl Default for Trackers {
    fn default() -> Self {
        Trackers {
            enabled: true,
            numwant: 50,
            http_timeout_s: 30,
            udp_retry_base_s: 15,
            udp_retries: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    pub listen: String,
    pub top_torrents: u32,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: "127.0.0.1:9707".into(),
            top_torrents: 20,
        }
    }
}

/// The control API (`ringseed ctl` talks to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Control {
    pub listen: String,
    pub token: String,
    pub token_file: String,
    pub no_token_from: Vec<String>,
    pub hosts: Vec<String>,
    pub max_connections: u32,
    pub header_timeout_s: u32,
    pub idle_timeout_s: u32,
    /// The qBittorrent Web API's login name (`/api/v2/auth/login`).
    pub username: String,
    /// File whose first line is the qBittorrent Web API's login password; "" = the API token.
    pub password_file: String,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            listen: "127.0.0.1:9708".into(),
            token: String::new(),
            token_file: String::new(),
            no_token_from: Vec::new(),
            hosts: Vec::new(),
            max_connections: 64,
            header_timeout_s: 10,
            idle_timeout_s: 60,
            username: "admin".into(),
            password_file: String::new(),
        }
    }
}

/// The file the node writes its generated API token to when neither `control.token` nor
/// `control.token_file` is set.
pub const TOKEN_FILE_NAME: &str = "api-token";

impl Control {
    /// Where the API token lives: `token_file`, else `api-token` in the state directory (the
    /// node generates it there on first start).
    pub fn token_path(&self, state: &State) -> std::path::PathBuf {
        if self.token_file.is_empty() {
            std::path::Path::new(&state.dir).join(TOKEN_FILE_NAME)
        } else {
            std::path::PathBuf::from(&self.token_file)
        }
    }

    /// The token a client (`ctl`) sends: `token`, else the first line of the token file
    /// ([`Control::token_path`]); `None` when that file does not exist (then the client sends
    /// none, which a node only accepts from `no_token_from`).
    pub fn client_token(&self, state: &State) -> Result<Option<String>, ConfigError> {
        if !self.token.is_empty() {
            return Ok(Some(self.token.clone()));
        }
        let path = self.token_path(state);
        match read_token_file(&path) {
            Err(ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            other => other.map(Some),
        }
    }
}

/// Largest token file read (a token is a line of a few dozen bytes).
const MAX_TOKEN_FILE: u64 = 4096;

/// The first line of a token file, trimmed; an empty one is an error.
pub fn read_token_file(path: &std::path::Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read = |source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_TOKEN_FILE)
        .read_to_string(&mut text)
        .map_err(read)?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(ConfigError::OutOfRange {
            key: "control.token_file",
            value: format!("{:?}", path.display().to_string()),
            allowed: "a file whose first line is the token",
        });
    }
    Ok(token)
}

/// Whether `h` is a DNS name a `Host` header may carry (`control.hosts`): labels of letters,
/// digits and '-', separated by dots, at most 253 bytes.
fn valid_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An IP network in CIDR notation (`127.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = s.split_once('/')?;
        let addr: std::net::IpAddr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        let bits = |net: u128, ip: u128, width: u32| {
            let p = u32::from(self.prefix);
            p == 0 || (net ^ ip) >> (width - p) == 0
        };
        match (self.addr, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(i)) => {
                bits(u128::from(u32::from(n)), u128::from(u32::from(i)), 32)
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(i)) => {
                bits(u128::from(n), u128::from(i), 128)
            }
            _ => false,
        }
    }
}

/// The DHT (BEP 5, `src/dht/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhtConfig {
    pub enabled: bool,
    pub port: u16,
    pub bootstrap: Vec<String>,
    pub nodes_file: String,
    pub max_queries_per_ip: u32,
    pub max_queries: u32,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            enabled: true,
            port: 0,
            bootstrap: vec![
                "router.bittorrent.com:6881".into(),
                "dht.transmissionbt.com:6881".into(),
                "router.utorrent.com:6881".into(),
            ],
            nodes_file: String::new(),
            max_queries_per_ip: 5,
            max_queries: 500,
        }
    }
}

impl DhtConfig {
    /// Where the routing table is kept: `nodes_file`, or `dht-nodes` in the state directory.
    pub fn nodes_path(&self, state: &State) -> std::path::PathBuf {
        if self.nodes_file.is_empty() {
            std::path::Path::new(&state.dir).join("dht-nodes")
        } else {
            self.nodes_file.clone().into()
        }
    }
}

/// Whether `s` is a DHT node as `host:port`: a host of 1 to 253 bytes (a name or an IPv4
/// address; IPv6 as `[addr]:port`) and a port 1..=65535.
fn valid_node(s: &str) -> bool {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return a.port() != 0;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            (1..=253).contains(&host.len())
                && valid_host_name(host)
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

/// Where the node keeps what must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct State {
    pub dir: String,
    pub save_interval_s: u32,
}

impl Default for State {
    fn default() -> Self {
        State {
            dir: "/var/lib/ringseed".into(),
            save_interval_s: 60,
        }
    }
}

impl State {
    /// The node's one SQLite database (see [`crate::db`]).
    pub fn db_path(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.dir).join("ringseed.db")
    }
}

/// The BTT incentive layer (`src/speed/`, `docs/speed.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Speed {
    pub enabled: bool,
    pub paid_slots: u32,
    pub min_price: u64,
    pub credit_window_kib: u32,
    pub chain_id: u64,
    pub key_file: String,
    /// The payment-channel contract (`0x…`); required when `enabled`.
    pub contract: String,
    /// JSON-RPC endpoint (`http://…`/`https://…`) bids' channels are read from; "" = bids are
    /// trusted up to their cap, as before.
    pub rpc: String,
    /// With `rpc`: seconds a bid's channel must still run.
    pub min_channel_life_s: u32,
}

impl Default for Speed {
    fn default() -> Self {
        Speed {
            enabled: false,
            paid_slots: 4,
            min_price: 0,
            credit_window_kib: 32768,
            chain_id: 199,
            key_file: String::new(),
            contract: String::new(),
            rpc: String::new(),
            min_channel_life_s: 3600,
        }
    }
}

/// `[speed] rpc`: an http(s) URL with a host, at most 2048 bytes.
fn valid_rpc_url(s: &str) -> bool {
    s.len() <= 2048
        && reqwest::Url::parse(s)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

impl Speed {
    /// The contract address, when `contract` is a valid, non-zero one (`0x…` or `T…`).
    pub fn contract_address(&self) -> Option<crate::speed::wallet::Address> {
        crate::speed::wallet::Address::parse(&self.contract)
            .ok()
            .filter(|a| a.0 != [0; 20])
    }

    /// The wallet key: `key_file`, or `wallet.key` in the state directory.
    pub fn key_path(&self, state: &State) -> std::path::PathBuf {
        if self.key_file.is_empty() {
            std::path::Path::new(&state.dir).join("wallet.key")
        } else {
            std::path::PathBuf::from(&self.key_file)
        }
    }

    pub fn terms(&self) -> crate::choking::auction::Terms {
        crate::choking::auction::Terms {
            paid_slots: self.paid_slots as usize,
            min_price: u128::from(self.min_price),
            credit_window: u64::from(self.credit_window_kib) << 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Torrents {
    pub dir: String,
    pub data_dir: String,
    pub incomplete_dir: String,
    pub watch_interval_s: u32,
    pub skip_check: bool,
    pub ratio_limit_percent: u32,
    pub seed_time_limit_min: u32,
    pub limit_action: LimitAction,
    pub inactive_seed_time_limit_min: u32,
    pub queueing: bool,
    pub max_active_downloads: i32,
    pub max_active_uploads: i32,
    pub max_active_torrents: i32,
    pub list: Vec<TorrentEntry>,
}

impl Default for Torrents {
    fn default() -> Self {
        Torrents {
            dir: String::new(),
            data_dir: String::new(),
            incomplete_dir: String::new(),
            watch_interval_s: 10,
            skip_check: false,
            ratio_limit_percent: 0,
            seed_time_limit_min: 0,
            limit_action: LimitAction::Stop,
            inactive_seed_time_limit_min: 0,
            queueing: false,
            max_active_downloads: 3,
            max_active_uploads: 3,
            max_active_torrents: 5,
            list: Vec::new(),
        }
    }
}

/// What happens to a torrent that reaches its ratio or seed-time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitAction {
    /// Pause it (it stays in the list; its data stays).
    Stop,
    /// Remove it from the list (its data stays).
    Remove,
    /// Remove it and delete its files (those another torrent names stay).
    #[serde(rename = "remove_data")]
    RemoveData,
}

impl LimitAction {
    /// Its name in the config and the API.
    pub fn name(self) -> &'static str {
        match self {
            LimitAction::Stop => "stop",
            LimitAction::Remove => "remove",
            LimitAction::RemoveData => "remove_data",
        }
    }

    pub fn from_name(s: &str) -> Option<LimitAction> {
        [
            LimitAction::Stop,
            LimitAction::Remove,
            LimitAction::RemoveData,
        ]
        .into_iter()
        .find(|a| a.name() == s)
    }
}

/// One torrent to seed: its .torrent file and its download directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorrentEntry {
    pub torrent: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hashing {
    pub threads: u32,
    pub batch_kib: u32,
}

impl Default for Hashing {
    fn default() -> Self {
        Hashing {
            threads: 0,
            batch_kib: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Create {
    pub version: CreateVersion,
    pub piece_kib: u32,
}

impl Default for Create {
    fn default() -> Self {
        Create {
            version: CreateVersion::V1,
            piece_kib: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CreateVersion {
    V1,
    V2,
    Hybrid,
}

impl From<CreateVersion> for Version {
    fn from(v: CreateVersion) -> Self {
        match v {
            CreateVersion::V1 => Version::V1,
            CreateVersion::V2 => Version::V2,
            CreateVersion::Hybrid => Version::Hybrid,
        }
    }
}

/// Documentation of every key, in print order: (`section.key`, comment lines).
const DOCS: &[(&str, &str)] = &[
    (
        "engine",
        "The seeding engine: one io_uring worker thread per core, each owning its peers.",
    ),
    (
        "engine.workers",
        "Worker threads; 0 means one per available core. Range 0..=256.",
    ),
    ("engine.pin_workers", "Pin worker i to core i."),
    (
        "engine.listen",
        "Address every worker listens on (SO_REUSEPORT); \"[::]:6881\" for IPv6 too.",
    ),
    (
        "engine.upload_slots",
        "Peers unchoked at once over all workers; 0 means every interested peer. Range 0..=100000.",
    ),
    (
        "engine.choker",
        "Seed choking: \"round_robin\" (rotate slots after each peer's quota) or\n\
         \"fastest_upload\" (slots to the peers that take data fastest).",
    ),
    (
        "engine.rechoke_interval_s",
        "Seconds between choking rounds. Range 1..=300.",
    ),
    (
        "engine.upload_path",
        "How piece data reaches sockets: \"auto\" (measured best: \"mmap\"), \"copy\" (io_uring\n\
         read into a buffer + send) or \"mmap\" (send straight from the files' mappings, one\n\
         copy fewer; data not in the page cache is read as with \"copy\").",
    ),
    (
        "engine.upload_rate_limit_kib",
        "Global upload limit in KiB/s; 0 means unlimited.",
    ),
    (
        "engine.torrent_upload_rate_limit_kib",
        "Upload limit of each torrent in KiB/s; 0 means unlimited.",
    ),
    (
        "engine.max_request_kib",
        "Largest block a peer may request, in KiB (BEP 3 says 16). Range 16..=128.",
    ),
    (
        "engine.max_reqq",
        "Requests queued per peer (advertised as reqq); a peer that overruns it is cut off.\n\
         A worker that falls behind advertises a share of its queue instead (down to 8) and\n\
         rejects (BEP 6) what peers queued past it. Range 16..=10000.",
    ),
    (
        "engine.batch_kib",
        "Most KiB read from disk and sent to one peer at once. Range 16..=4096.",
    ),
    (
        "engine.mapped_batch_kib",
        "Most KiB sent to one peer at once straight from the page cache (upload_path mmap or\n\
         auto): such a job holds only its headers, so it takes no job memory, and fewer,\n\
         larger sends cost less CPU per GiB. Range 16..=8192.",
    ),
    (
        "engine.job_memory_mib",
        "MiB of upload-job buffers each worker may have out at once; busy peers beyond it wait\n\
         their turn. Range 1..=16384, and at least 4 x batch_kib.",
    ),
    (
        "engine.unsent_kib",
        "KiB each peer's socket may hold that the peer's window has not taken yet\n\
         (TCP_NOTSENT_LOWAT); what a peer asked for beyond it waits in its request queue,\n\
         where chokes, paying peers' turns and the shedding of an overloaded worker still\n\
         reach it. 0 leaves the kernel's default (no limit). Range 0 or 16..=65536.",
    ),
    (
        "engine.queue_budget_mib",
        "MiB of block requests (16 KiB each) one worker holds before it shares the reqq it\n\
         advertises among its unchoked peers (down to 8 each) and rejects what they queued\n\
         past it: the longest a request waits is about this over the upload rate.\n\
         Range 1..=16384.",
    ),
    (
        "engine.ring_entries",
        "Submission queue entries of each worker's io_uring. Power of two, 64..=32768.",
    ),
    (
        "engine.handshake_timeout_s",
        "Seconds a new connection has to complete its handshake. Range 1..=300.",
    ),
    (
        "engine.idle_timeout_s",
        "Seconds without a message before a peer is dropped. Range 10..=3600.",
    ),
    (
        "engine.max_peers_per_worker",
        "Connections one worker holds at most. Range 1..=1000000.",
    ),
    (
        "engine.pex_interval_s",
        "Seconds between peer-exchange messages (BEP 11): peers of public torrents hear who\n\
         joined and left the swarm. 0 turns peer exchange off. Range 0 or 60..=3600.",
    ),
    (
        "engine.download_rate_limit_kib",
        "The whole node's download limit in KiB/s (0 = unlimited).",
    ),
    (
        "engine.torrent_download_rate_limit_kib",
        "Each torrent's download limit in KiB/s (0 = unlimited).",
    ),
    (
        "engine.download_memory_mib",
        "MiB of pieces being downloaded one worker may hold (each is a buffer of the piece's\n\
         size until it is written), spare buffers kept for new pieces included (freed after\n\
         10 s with nothing in flight). Range 4..=16384.",
    ),
    (
        "engine.preallocate",
        "Reserve each downloaded file's whole size with fallocate when it is created (never\n\
         zero-filled); otherwise files are sparse and grow as pieces arrive.",
    ),
    (
        "engine.download_writes",
        "How downloaded pieces are written: \"buffered\" (through the page cache) or \"direct\"\n\
         (O_DIRECT from the piece buffer for each file's whole 4 KiB pages, the page cache only\n\
         for a file's unaligned head and tail; a filesystem that refuses O_DIRECT falls back to\n\
         buffered for that torrent, with a warning).",
    ),
    (
        "engine.request_timeout_s",
        "Seconds our requests wait for a block before the peer counts as snubbing us and\n\
         they go to other peers. Range 2..=600.",
    ),
    (
        "engine.max_peers_per_torrent",
        "Connections per torrent, incoming and outgoing; more are refused. Range 1..=1000000.",
    ),
    (
        "engine.max_dials_per_torrent",
        "Outgoing connections per torrent: peers from trackers, peer exchange and by hand are\n\
         dialled up to this many. Range 1..=10000.",
    ),
    (
        "engine.message_timeout_s",
        "Seconds a peer's message may take to arrive once it has started; a peer trickling\n\
         bytes is cut off. Range 5..=600.",
    ),
    (
        "engine.send_timeout_s",
        "Seconds data for a peer may wait without the peer reading any of it before the peer\n\
         is cut off (it loses its upload slot after a few seconds). Range 5..=600.",
    ),
    (
        "engine.max_connections_per_ip",
        "Connections from one IP address to one torrent, and from one IP address still in\n\
         their handshake; more are refused. Range 1..=100000.",
    ),
    (
        "engine.encryption_in",
        "MSE/PE (protocol encryption) on incoming connections, told apart by their first\n\
         bytes on the same port: \"disabled\" (plain BitTorrent only), \"enabled\" (either) or\n\
         \"forced\" (MSE only; plain handshakes are refused and counted as plaintext_refused).\n\
         libtorrent's and qBittorrent's default: enabled.",
    ),
    (
        "engine.encryption_out",
        "MSE/PE on the connections we dial: \"disabled\" (plain), \"enabled\" (MSE first, and\n\
         once more in plain if the peer drops the MSE handshake) or \"forced\" (MSE only).",
    ),
    (
        "engine.encryption_level",
        "Crypto methods an MSE handshake may choose: \"rc4\" (the whole stream encrypted; the\n\
         upload then takes the copy path, as every byte passes through the cipher),\n\
         \"plaintext\" (only the handshake obfuscated) or \"both\".",
    ),
    (
        "engine.encryption_prefer_rc4",
        "Offered both methods by a peer, choose RC4 (else plaintext, which costs no CPU).",
    ),
    (
        "trackers",
        "Tracker announces (HTTP, HTTPS and UDP; BEP 3, 12, 15, 23).",
    ),
    ("trackers.enabled", "Announce torrents to their trackers."),
    (
        "trackers.numwant",
        "Peers asked for per announce. Range 0..=1000.",
    ),
    (
        "trackers.http_timeout_s",
        "Timeout of one HTTP(S) announce. Range 1..=300.",
    ),
    (
        "trackers.udp_retry_base_s",
        "BEP 15 retransmission base: the n-th UDP send waits base * 2^n s. Range 1..=60.",
    ),
    (
        "trackers.udp_retries",
        "UDP retransmissions before giving up. Range 0..=8.",
    ),
    (
        "dht",
        "The DHT (BEP 5): public torrents announce themselves and find peers, magnets find\n\
         their metadata's peers. Private torrents (BEP 27) never use it. IPv4 only.",
    ),
    (
        "dht.enabled",
        "Run a DHT node (server mode: it answers other nodes), as libtorrent and qBittorrent\n\
         do by default.",
    ),
    (
        "dht.port",
        "UDP port of the DHT; 0 means the engine's listening port (any free port if that is\n\
         taken). The node binds the engine's listening address when it is IPv4.",
    ),
    (
        "dht.bootstrap",
        "Nodes (\"host:port\") a node with no saved routing table starts from. At most 64. A\n\
         node bound to a loopback address uses only loopback ones.",
    ),
    (
        "dht.nodes_file",
        "Where the routing table is saved (every 10 minutes and at shutdown) and read back at\n\
         start; \"\" = `dht-nodes` in the state directory (`seed` and `download` save it\n\
         only where that directory exists).",
    ),
    (
        "dht.max_queries_per_ip",
        "Queries a second the node answers one source address, after a burst of 20 (as\n\
         libtorrent's dht_block_ratelimit). A source that asks faster gets no answer at all for\n\
         5 minutes. Range 1..=1000.",
    ),
    (
        "dht.max_queries",
        "Queries a second the node answers over all sources; past it, queries go unanswered\n\
         (no reply, so a flood from spoofed addresses cannot turn the node into an amplifier).\n\
         Range 1..=100000.",
    ),
    (
        "state",
        "What survives a restart: the node's database `ringseed.db` (one SQLite file, WAL:\n\
         resume state and the BTT earnings ledger) and its wallet key live here.",
    ),
    (
        "state.dir",
        "State directory; created if missing. The systemd unit's StateDirectory=ringseed\n\
         makes it /var/lib/ringseed.",
    ),
    (
        "state.save_interval_s",
        "Seconds between saves of upload totals and seeding time (changes through the API are\n\
         saved at once, and everything at shutdown). Range 1..=3600.",
    ),
    (
        "control",
        "The control API (HTTP/JSON) that `ringseed ctl` drives: add, remove, pause, resume,\n\
         recheck, list, peers, limits.",
    ),
    (
        "control.listen",
        "Address of the control API; \"\" turns it off.",
    ),
    (
        "control.token",
        "Bearer token every client outside `no_token_from` must send (\"Authorization: Bearer\n\
         TOKEN\"). Prefer `token_file`: this file may be world-readable. With neither set, the\n\
         node generates a token on first start into `api-token` in the state directory (mode\n\
         0600), where `ringseed ctl` reads it.",
    ),
    (
        "control.token_file",
        "File whose first line is the token (used when `token` is \"\"); it must exist, and\n\
         must not be readable by every user. \"\" = the state directory's `api-token`.",
    ),
    (
        "control.no_token_from",
        "Networks (CIDR) whose clients need no token: an explicit opt-out, none by default (on\n\
         a shared box any local user, and any web page through the operator's browser, can\n\
         reach loopback). At most 64.",
    ),
    (
        "control.hosts",
        "Host names (besides IP addresses and `localhost`) that requests may name in their\n\
         `Host` header, e.g. the box's DNS name behind a reverse proxy. Any other name is\n\
         refused: that is what stops DNS rebinding. At most 64.",
    ),
    (
        "control.username",
        "Login name of the qBittorrent Web API (/api/v2/auth/login), for Sonarr, Radarr,\n\
         qbittorrent-api and the like. 1 to 128 bytes.",
    ),
    (
        "control.password_file",
        "File whose first line is the qBittorrent Web API's password; it must exist and must\n\
         not be readable by every user. \"\" = the API token is the password.",
    ),
    (
        "control.max_connections",
        "Open connections at most, on the control API and on /metrics each; when full, the\n\
         connection idle the longest is closed for a new one. Range 4..=4096.",
    ),
    (
        "control.header_timeout_s",
        "Seconds a client has to send a request's headers, on the control API and /metrics.\n\
         Range 1..=300.",
    ),
    (
        "control.idle_timeout_s",
        "Seconds a connection may stay open with no request, on the control API and /metrics.\n\
         Range 1..=3600.",
    ),
    (
        "speed",
        "Earn BTT (docs/speed.md): downloaders bid for paid upload slots and pay with signed\n\
         vouchers, acknowledged only once they are durable in the ledger (ringseed.db).\n\
         Everyone else is still served from the free slots.",
    ),
    (
        "speed.enabled",
        "Offer paid slots through the rs_speed extension (needs a wallet key; see key_file).",
    ),
    (
        "speed.paid_slots",
        "Upload slots (out of engine.upload_slots) shared by paying peers in proportion to\n\
         their price; what they leave unused stays free. Range 0..=10000.",
    ),
    (
        "speed.min_price",
        "Least price, in BTT base units (10^-18 BTT) per MiB, that can win a paid slot.",
    ),
    (
        "speed.credit_window_kib",
        "KiB served to a payer ahead of its payment; a payer further behind drops back to the\n\
         free slots. Payers send a voucher every half window, so a smaller window costs more\n\
         signature checks per GiB. Also the most a crash can cost per payer. Range 128..=1048576.",
    ),
    (
        "speed.chain_id",
        "Chain the vouchers are claimed on (199 = BTTC mainnet); part of the signed digest.",
    ),
    (
        "speed.key_file",
        "The node's secp256k1 wallet key; \"\" means <state.dir>/wallet.key. Created (mode\n\
         0600) on first use; a key file that group or others may read is refused.",
    ),
    (
        "speed.contract",
        "The payment-channel contract (contracts/PaymentChannel.sol) vouchers are signed for and\n\
         claimed on, \"0x…\"; part of the signed digest (EIP-712 verifyingContract), so a voucher\n\
         pays on this deployment only. Required when enabled.",
    ),
    (
        "speed.rpc",
        "JSON-RPC endpoint (\"http://…\" or \"https://…\") of the chain the contract is on. When set,\n\
         a bid is confirmed only if channels(id) on the contract shows the bid's payer, this\n\
         node as payee, one credit window at the bid's price still in the deposit (and a cap\n\
         not above it) and an expiry min_channel_life_s ahead; a failed read refuses the bid\n\
         (chain_unavailable). \"\" (default): the chain is not read and bids are trusted up to\n\
         their cap (a payer can take at most one credit window per connection unpaid).",
    ),
    (
        "speed.min_channel_life_s",
        "With speed.rpc: seconds a bid's channel must still run before its expiry, time to settle\n\
         before the payer can reclaim. Range 0..=31536000.",
    ),
    (
        "metrics",
        "Prometheus metrics (GET /metrics) for `seed` and `run`.",
    ),
    (
        "metrics.listen",
        "Address of the metrics endpoint; \"\" turns it off. Keep it on localhost or a private\n\
         network: it has no authentication.",
    ),
    (
        "metrics.top_torrents",
        "Torrents with their own series (the busiest by upload); the rest are summed under\n\
         torrent=\"other\". Range 0..=1000.",
    ),
    ("torrents", "What `ringseed run` seeds."),
    (
        "torrents.dir",
        "Directory whose .torrent files are all seeded, their data in `data_dir`; \"\" for none.",
    ),
    (
        "torrents.data_dir",
        "Download directory of the torrents found in `dir`.",
    ),
    (
        "torrents.incomplete_dir",
        "Where torrents download until complete; each then moves to its data directory (a\n\
         rename, or a copy to another file system). Empty: they download in place.",
    ),
    (
        "torrents.watch_interval_s",
        "Seconds between looks into `dir` for new .torrent files; 0 means only at start and on\n\
         SIGHUP. Range 0..=86400.",
    ),
    (
        "torrents.ratio_limit_percent",
        "Global ratio limit in percent of the torrent's size uploaded (150 = ratio 1.5); 0 means\n\
         none. A torrent's own limit (set through the API) wins. Range 0..=100000.",
    ),
    (
        "torrents.seed_time_limit_min",
        "Global seeding-time limit in minutes; 0 means none. Range 0..=5256000 (10 years).",
    ),
    (
        "torrents.limit_action",
        "At a ratio, seed-time or inactive-seed-time limit: \"stop\" (pause, keep it listed),\n\
         \"remove\" (drop it from the list, keep its data) or \"remove_data\" (drop it and delete\n\
         its files, except those another torrent names).",
    ),
    (
        "torrents.inactive_seed_time_limit_min",
        "Global inactive-seeding limit in minutes: seeding this long without sending or\n\
         receiving payload; 0 means none. Range 0..=5256000.",
    ),
    (
        "torrents.queueing",
        "Queue torrents: at most `max_active_downloads` downloading, `max_active_uploads`\n\
         seeding and `max_active_torrents` in all are served; the others wait (state \"queued\",\n\
         no peers, no announces) in queue order. Force-started torrents skip the queue.",
    ),
    (
        "torrents.max_active_downloads",
        "With `queueing`: most torrents downloading at once; -1 means no limit. Range -1..=100000.",
    ),
    (
        "torrents.max_active_uploads",
        "With `queueing`: most complete torrents seeding at once; -1 means no limit.\n\
         Range -1..=100000.",
    ),
    (
        "torrents.max_active_torrents",
        "With `queueing`: most torrents served at once; -1 means no limit. Range -1..=100000.",
    ),
    (
        "torrents.skip_check",
        "Trust data on disk without hashing it at start (only for data known to be complete).",
    ),
    (
        "torrents.list",
        "Torrents listed one by one: [{ torrent = \"a.torrent\", data = \"/srv/data\" }, ...].",
    ),
    (
        "hashing",
        "Piece hashing for `verify`, `create` and rechecks.",
    ),
    (
        "hashing.threads",
        "Threads that hash pieces; 0 means one per available core. Range 0..=1024.",
    ),
    (
        "hashing.batch_kib",
        "KiB each hashing thread reads at once (rounded to whole pieces). Larger batches mean\n\
         fewer system calls; each thread holds one batch in memory. On a CPU with AVX-512 a\n\
         batch holds at least 16 pieces within 16 MiB, hashed together. Range 64..=1048576.",
    ),
    ("create", "Defaults for `ringseed create`."),
    (
        "create.version",
        "Torrent format: \"v1\" (every client), \"v2\" (BEP 52 only) or \"hybrid\" (both,\n\
         with BEP 47 pad files so each file starts on a piece boundary).",
    ),
    (
        "create.piece_kib",
        "Piece length in KiB; 0 picks a power of two giving about 1000-2000 pieces (16 KiB to\n\
         16 MiB). Otherwise a multiple of 16 up to 262144; v2 and hybrid need a power of two.",
    ),
];

impl Config {
    /// Parses and validates a config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Checks every bound; the error names the key and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |key, value: u32, ok: bool, allowed: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    key,
                    value: value.to_string(),
                    allowed,
                })
            }
        };
        let e = &self.engine;
        range(
            "engine.workers",
            e.workers,
            e.workers <= 256,
            "allowed 0..=256",
        )?;
        range(
            "engine.upload_slots",
            e.upload_slots,
            e.upload_slots <= 100_000,
            "allowed 0..=100000",
        )?;
        range(
            "engine.rechoke_interval_s",
            e.rechoke_interval_s,
            (1..=300).contains(&e.rechoke_interval_s),
            "allowed 1..=300",
        )?;
        range(
            "engine.pex_interval_s",
            e.pex_interval_s,
            e.pex_interval_s == 0 || (60..=3600).contains(&e.pex_interval_s),
            "allowed 0 (off) or 60..=3600 (BEP 11: at most one message a minute)",
        )?;
        range(
            "engine.max_request_kib",
            e.max_request_kib,
            (16..=128).contains(&e.max_request_kib),
            "allowed 16..=128",
        )?;
        range(
            "engine.max_reqq",
            e.max_reqq,
            (16..=10_000).contains(&e.max_reqq),
            "allowed 16..=10000",
        )?;
        range(
            "engine.batch_kib",
            e.batch_kib,
            (16..=4096).contains(&e.batch_kib),
            "allowed 16..=4096",
        )?;
        range(
            "engine.mapped_batch_kib",
            e.mapped_batch_kib,
            (16..=8192).contains(&e.mapped_batch_kib),
            "allowed 16..=8192",
        )?;
        range(
            "engine.job_memory_mib",
            e.job_memory_mib,
            (1..=16_384).contains(&e.job_memory_mib)
                && u64::from(e.job_memory_mib) << 10 >= 4 * u64::from(e.batch_kib),
            "allowed 1..=16384 and at least 4 x engine.batch_kib",
        )?;
        range(
            "engine.unsent_kib",
            e.unsent_kib,
            e.unsent_kib == 0 || (16..=65_536).contains(&e.unsent_kib),
            "allowed 0 or 16..=65536",
        )?;
        range(
            "engine.queue_budget_mib",
            e.queue_budget_mib,
            (1..=16_384).contains(&e.queue_budget_mib),
            "allowed 1..=16384",
        )?;
        range(
            "engine.ring_entries",
            e.ring_entries,
            (64..=32768).contains(&e.ring_entries) && e.ring_entries.is_power_of_two(),
            "a power of two in 64..=32768",
        )?;
        range(
            "engine.handshake_timeout_s",
            e.handshake_timeout_s,
            (1..=300).contains(&e.handshake_timeout_s),
            "allowed 1..=300",
        )?;
        range(
            "engine.idle_timeout_s",
            e.idle_timeout_s,
            (10..=3600).contains(&e.idle_timeout_s),
            "allowed 10..=3600",
        )?;
        range(
            "engine.max_peers_per_worker",
            e.max_peers_per_worker,
            (1..=1_000_000).contains(&e.max_peers_per_worker),
            "allowed 1..=1000000",
        )?;
        range(
            "engine.download_memory_mib",
            e.download_memory_mib,
            (4..=16_384).contains(&e.download_memory_mib),
            "allowed 4..=16384",
        )?;
        range(
            "engine.request_timeout_s",
            e.request_timeout_s,
            (2..=600).contains(&e.request_timeout_s),
            "allowed 2..=600",
        )?;
        range(
            "engine.max_peers_per_torrent",
            e.max_peers_per_torrent,
            (1..=1_000_000).contains(&e.max_peers_per_torrent),
            "allowed 1..=1000000",
        )?;
        range(
            "engine.max_dials_per_torrent",
            e.max_dials_per_torrent,
            (1..=10_000).contains(&e.max_dials_per_torrent),
            "allowed 1..=10000",
        )?;
        range(
            "engine.message_timeout_s",
            e.message_timeout_s,
            (5..=600).contains(&e.message_timeout_s),
            "allowed 5..=600",
        )?;
        range(
            "engine.send_timeout_s",
            e.send_timeout_s,
            (5..=600).contains(&e.send_timeout_s),
            "allowed 5..=600",
        )?;
        range(
            "engine.max_connections_per_ip",
            e.max_connections_per_ip,
            (1..=100_000).contains(&e.max_connections_per_ip),
            "allowed 1..=100000",
        )?;
        if e.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::OutOfRange {
                key: "engine.listen",
                value: format!("{:?}", e.listen),
                allowed: "an IP address and port, like \"0.0.0.0:6881\" or \"[::]:6881\"",
            });
        }
        let t = &self.trackers;
        range(
            "trackers.numwant",
            t.numwant,
            t.numwant <= 1000,
            "allowed 0..=1000",
        )?;
        range(
            "trackers.http_timeout_s",
            t.http_timeout_s,
            (1..=300).contains(&t.http_timeout_s),
            "allowed 1..=300",
        )?;
        range(
            "trackers.udp_retry_base_s",
            t.udp_retry_base_s,
            (1..=60).contains(&t.udp_retry_base_s),
            "allowed 1..=60",
        )?;
        range(
            "dht.max_queries_per_ip",
            self.dht.max_queries_per_ip,
            (1..=1000).contains(&self.dht.max_queries_per_ip),
            "allowed 1..=1000",
        )?;
        range(
            "dht.max_queries",
            self.dht.max_queries,
            (1..=100_000).contains(&self.dht.max_queries),
            "allowed 1..=100000",
        )?;
        range(
            "trackers.udp_retries",
            t.udp_retries,
            t.udp_retries <= 8,
            "allowed 0..=8",
        )?;
        let t = &self.torrents;
        range(
            "torrents.watch_interval_s",
            t.watch_interval_s,
            t.watch_interval_s <= 86_400,
            "allowed 0..=86400",
        )?;
        range(
            "torrents.ratio_limit_percent",
            t.ratio_limit_percent,
            t.ratio_limit_percent <= 100_000,
            "allowed 0..=100000",
        )?;
        range(
            "torrents.seed_time_limit_min",
            t.seed_time_limit_min,
            t.seed_time_limit_min <= 5_256_000,
            "allowed 0..=5256000",
        )?;
        range(
            "torrents.inactive_seed_time_limit_min",
            t.inactive_seed_time_limit_min,
            t.inactive_seed_time_limit_min <= 5_256_000,
            "allowed 0..=5256000",
        )?;
        for (key, v) in [
            ("torrents.max_active_downloads", t.max_active_downloads),
            ("torrents.max_active_uploads", t.max_active_uploads),
            ("torrents.max_active_torrents", t.max_active_torrents),
        ] {
            if !(-1..=100_000).contains(&v) {
                return Err(ConfigError::OutOfRange {
                    key,
                    value: v.to_string(),
                    allowed: "allowed -1..=100000",
                });
            }
        }
        range(
            "state.save_interval_s",
            self.state.save_interval_s,
            (1..=3600).contains(&self.state.save_interval_s),
            "allowed 1..=3600",
        )?;
        let c = &self.control;
        if !c.listen.is_empty() && c.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::OutOfRange {
                key: "control.listen",
                value: format!("{:?}", c.listen),
                allowed: "\"\" or an IP address and port, like \"127.0.0.1:9708\"",
            });
        }
        if c.no_token_from.len() > 64 {
            return Err(ConfigError::OutOfRange {
                key: "control.no_token_from",
                value: format!("{} networks", c.no_token_from.len()),
                allowed: "at most 64",
            });
        }
        if c.hosts.len() > 64 {
            return Err(ConfigError::OutOfRange {
                key: "control.hosts",
                value: format!("{} names", c.hosts.len()),
                allowed: "at most 64",
            });
        }
        if let Some(bad) = c.hosts.iter().find(|h| !valid_host_name(h)) {
            return Err(ConfigError::OutOfRange {
                key: "control.hosts",
                value: format!("{bad:?}"),
                allowed: "DNS names (letters, digits, '-', '.'), without a port",
            });
        }
        if c.username.is_empty() || c.username.len() > 128 || c.username.contains(['\n', '\0']) {
            return Err(ConfigError::OutOfRange {
                key: "control.username",
                value: format!("{:?}", c.username),
                allowed: "1 to 128 bytes, no newline or NUL",
            });
        }
        range(
            "control.max_connections",
            c.max_connections,
            (4..=4096).contains(&c.max_connections),
            "allowed 4..=4096",
        )?;
        range(
            "control.header_timeout_s",
            c.header_timeout_s,
            (1..=300).contains(&c.header_timeout_s),
            "allowed 1..=300",
        )?;
        range(
            "control.idle_timeout_s",
            c.idle_timeout_s,
            (1..=3600).contains(&c.idle_timeout_s),
            "allowed 1..=3600",
        )?;
        if let Some(bad) = c.no_token_from.iter().find(|n| IpNet::parse(n).is_none()) {
            return Err(ConfigError::OutOfRange {
                key: "control.no_token_from",
                value: format!("{bad:?}"),
                allowed: "networks in CIDR notation, like \"127.0.0.0/8\" or \"::1/128\"",
            });
        }
        if !self.torrents.dir.is_empty() && self.torrents.data_dir.is_empty() {
            return Err(ConfigError::OutOfRange {
                key: "torrents.data_dir",
                value: "\"\"".into(),
                allowed: "required when torrents.dir is set",
            });
        }
        let h = &self.hashing;
        range(
            "hashing.threads",
            h.threads,
            h.threads <= 1024,
            "allowed 0..=1024",
        )?;
        range(
            "hashing.batch_kib",
            h.batch_kib,
            (64..=1 << 20).contains(&h.batch_kib),
            "allowed 64..=1048576",
        )?;
        range(
            "speed.paid_slots",
            self.speed.paid_slots,
            self.speed.paid_slots <= 10_000,
            "allowed 0..=10000",
        )?;
        range(
            "speed.credit_window_kib",
            self.speed.credit_window_kib,
            (128..=1 << 20).contains(&self.speed.credit_window_kib),
            "allowed 128..=1048576 (payers pay every half window, at least every 64 KiB)",
        )?;
        range(
            "speed.min_channel_life_s",
            self.speed.min_channel_life_s,
            self.speed.min_channel_life_s <= 31_536_000,
            "allowed 0..=31536000 (a year)",
        )?;
        if !self.speed.rpc.is_empty() && !valid_rpc_url(&self.speed.rpc) {
            return Err(ConfigError::OutOfRange {
                key: "speed.rpc",
                value: format!("{:?}", self.speed.rpc.chars().take(64).collect::<String>()),
                allowed: "\"\" or an http:// or https:// URL with a host",
            });
        }
        if self.speed.enabled && self.speed.contract_address().is_none() {
            return Err(ConfigError::OutOfRange {
                key: "speed.contract",
                value: format!(
                    "{:?}",
                    self.speed.contract.chars().take(64).collect::<String>()
                ),
                allowed: "a non-zero contract address (0x + 40 hex digits) when speed is enabled",
            });
        }
        if self.speed.chain_id > i64::MAX as u64 {
            return Err(ConfigError::OutOfRange {
                key: "speed.chain_id",
                value: self.speed.chain_id.to_string(),
                allowed: "at most 2^63 - 1",
            });
        }
        if self.dht.bootstrap.len() > crate::dht::node::MAX_BOOTSTRAP {
            return Err(ConfigError::OutOfRange {
                key: "dht.bootstrap",
                value: format!("{} nodes", self.dht.bootstrap.len()),
                allowed: "at most 64",
            });
        }
        if let Some(bad) = self.dht.bootstrap.iter().find(|n| !valid_node(n)) {
            return Err(ConfigError::OutOfRange {
                key: "dht.bootstrap",
                value: format!("{bad:?}"),
                allowed: "\"host:port\" entries (a DNS name or an IP address, port 1..=65535)",
            });
        }
        let p = self.create.piece_kib;
        range(
            "create.piece_kib",
            p,
            p == 0 || (p.is_multiple_of(16) && p <= 262_144),
            "allowed 0 (auto) or a multiple of 16 up to 262144",
        )?;
        if p != 0 && self.create.version != CreateVersion::V1 && !p.is_power_of_two() {
            return Err(ConfigError::OutOfRange {
                key: "create.piece_kib",
                value: p.to_string(),
                allowed: "v2 and hybrid torrents need a power of two",
            });
        }
        Ok(())
    }

    /// Engine settings from the `[engine]` section (validated, so the listen address parses).
    pub fn engine_settings(&self) -> Settings {
        let e = &self.engine;
        let d = Settings::default();
        Settings {
            workers: e.workers as usize,
            pin_workers: e.pin_workers,
            listen: e.listen.parse().unwrap_or(d.listen),
            upload_slots: e.upload_slots as usize,
            choker: e.choker,
            rechoke_interval: std::time::Duration::from_secs(u64::from(e.rechoke_interval_s)),
            upload_path: e.upload_path,
            upload_rate_limit: e.upload_rate_limit_kib << 10,
            max_request_len: e.max_request_kib << 10,
            max_reqq: e.max_reqq as usize,
            batch_bytes: (e.batch_kib as usize) << 10,
            mapped_batch_bytes: (e.mapped_batch_kib as usize) << 10,
            job_memory: (e.job_memory_mib as usize) << 20,
            unsent_bytes: e.unsent_kib << 10,
            queue_budget_blocks: (e.queue_budget_mib as usize) << 6,
            ring_entries: e.ring_entries,
            handshake_timeout: std::time::Duration::from_secs(u64::from(e.handshake_timeout_s)),
            idle_timeout: std::time::Duration::from_secs(u64::from(e.idle_timeout_s)),
            max_peers_per_worker: e.max_peers_per_worker as usize,
            pex_interval: std::time::Duration::from_secs(u64::from(e.pex_interval_s)),
            download_rate_limit: e.download_rate_limit_kib << 10,
            download_memory: (e.download_memory_mib as usize) << 20,
            preallocate: e.preallocate,
            download_writes: e.download_writes,
            request_timeout: std::time::Duration::from_secs(u64::from(e.request_timeout_s)),
            max_peers_per_torrent: e.max_peers_per_torrent as usize,
            max_dials_per_torrent: e.max_dials_per_torrent as usize,
            message_timeout: std::time::Duration::from_secs(u64::from(e.message_timeout_s)),
            send_timeout: std::time::Duration::from_secs(u64::from(e.send_timeout_s)),
            max_connections_per_ip: e.max_connections_per_ip as usize,
            encryption: crate::engine::encryption::Encryption {
                incoming: e.encryption_in,
                outgoing: e.encryption_out,
                level: e.encryption_level,
                prefer_rc4: e.encryption_prefer_rc4,
            },
            ..d
        }
    }

    /// Control-plane options from the `[trackers]` section.
    pub fn session_options(&self) -> crate::session::SessionOptions {
        let t = &self.trackers;
        let mut o = crate::session::SessionOptions {
            announce: t.enabled,
            ..Default::default()
        };
        o.tracker_client.http_timeout = std::time::Duration::from_secs(u64::from(t.http_timeout_s));
        o.tracker_client.udp_retry_base =
            std::time::Duration::from_secs(u64::from(t.udp_retry_base_s));
        o.tracker_client.udp_retries = t.udp_retries;
        o.announcer.numwant = Some(t.numwant);
        o.metrics_listen = self.metrics.listen.parse().ok();
        o.metrics_top_torrents = self.metrics.top_torrents as usize;
        o.speed = self
            .speed
            .enabled
            .then(|| crate::speed::service::SpeedSetup {
                db_path: self.state.db_path(),
                key_path: self.speed.key_path(&self.state),
                terms: self.speed.terms(),
                chain_id: self.speed.chain_id,
                contract: self
                    .speed
                    .contract_address()
                    .unwrap_or(crate::speed::wallet::Address([0; 20])),
                chain: (!self.speed.rpc.is_empty()).then(|| crate::speed::onchain::ChainCheck {
                    url: self.speed.rpc.clone(),
                    min_channel_life_s: u64::from(self.speed.min_channel_life_s),
                }),
            });
        o.dht = self.dht.enabled.then(|| crate::dht::DhtOptions {
            port: self.dht.port,
            bind: None,
            bootstrap: self.dht.bootstrap.clone(),
            nodes_file: Some(self.dht.nodes_path(&self.state)),
            limits: crate::dht::DhtLimits {
                queries: crate::dht::filter::QueryLimits {
                    per_ip_per_s: self.dht.max_queries_per_ip,
                    total_per_s: self.dht.max_queries,
                    ..Default::default()
                },
                ..Default::default()
            },
        });
        o
    }

    pub fn hash_options(&self) -> crate::verify::HashOptions {
        crate::verify::HashOptions {
            threads: self.hashing.threads as usize,
            batch_bytes: u64::from(self.hashing.batch_kib) << 10,
        }
    }
}

/// The default config as TOML with every key documented, in the order of [`DOCS`].
pub fn print_default() -> String {
    let value = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut out = String::from(
        "# ringseed configuration. Every key is optional; shown here with its default.\n",
    );
    for (name, doc) in DOCS {
        let comment: String = doc
            .lines()
            .map(|l| format!("# {}\n", l.trim_start()))
            .collect();
        match name.split_once('.') {
            None => out.push_str(&format!("\n{comment}[{name}]\n")),
            Some((section, key)) => {
                if let Some(v) = value.get(section).and_then(|t| t.get(key)) {
                    out.push_str(&format!("{comment}{key} = {v}\n"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_default_round_trips_and_documents_every_key() {
        let text = print_default();
        assert_eq!(Config::parse(&text).unwrap(), Config::default());
        let table = toml::Table::try_from(Config::default()).unwrap();
        for (section, body) in &table {
            assert!(
                DOCS.iter().any(|(k, _)| k == section),
                "{section} undocumented"
            );
            for key in body.as_table().unwrap().keys() {
                let full = format!("{section}.{key}");
                assert!(DOCS.iter().any(|(k, _)| *k == full), "{full} undocumented");
            }
        }
        assert!(text.contains("# Threads that hash pieces"));
    }

    #[test]
    fn bad_configs_say_which_key() {
        let e = Config::parse("[hashing]\nthreadz = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("threadz"), "{e}");
        let e = Config::parse("[hashing]\nbatch_kib = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hashing.batch_kib") && e.contains("64..=1048576"),
            "{e}"
        );
        for bad in [8, 8193] {
            let e = Config::parse(&format!("[engine]\nmapped_batch_kib = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("engine.mapped_batch_kib") && e.contains("16..=8192"),
                "{e}"
            );
        }
        // A mapped batch below the copy batch is allowed: mapped jobs then stay at it.
        Config::parse("[engine]\nmapped_batch_kib = 16\nbatch_kib = 256\n").unwrap();
        for (key, bad, allowed) in [
            ("max_queries_per_ip", 0, "1..=1000"),
            ("max_queries_per_ip", 1001, "1..=1000"),
            ("max_queries", 0, "1..=100000"),
            ("max_queries", 100_001, "1..=100000"),
        ] {
            let e = Config::parse(&format!("[dht]\n{key} = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("dht.{key}")) && e.contains(allowed),
                "{e}"
            );
        }
        let c = Config::parse("[dht]\nmax_queries_per_ip = 7\nmax_queries = 900\n").unwrap();
        let q = c
            .session_options()
            .dht
            .expect("dht on by default")
            .limits
            .queries;
        assert_eq!((q.per_ip_per_s, q.total_per_s), (7, 900));
        let e = Config::parse("[create]\nversion = \"v3\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("v3"), "{e}");
        let e = Config::parse("[create]\nversion = \"v2\"\npiece_kib = 48\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("power of two"), "{e}");
        let e = Config::parse("[hashing]\nthreads = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("threads"), "{e}");
        assert!(Config::parse("").is_ok());
        let e = Config::parse("[control]\nno_token_from = [\"10.0.0.0\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("control.no_token_from") && e.contains("CIDR"),
            "{e}"
        );
        let e = Config::parse("[control]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("control.listen"), "{e}");
        let e = Config::parse("[state]\nsave_interval_s = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("state.save_interval_s"), "{e}");
        let e = Config::parse("[torrents]\nlimit_action = \"explode\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("explode"), "{e}");
        let e = Config::parse("[engine]\npex_interval_s = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("engine.pex_interval_s"), "{e}");
        let e = Config::parse("[speed]\ncredit_window_kib = 64\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("speed.credit_window_kib"), "{e}");
        let e = Config::parse("[dht]\nbootstrap = [\"router.bittorrent.com\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dht.bootstrap"), "{e}");
        for bad in ["x:0", ":6881", "a b:1", "1.2.3.4:70000"] {
            let text = format!("[dht]\nbootstrap = [{bad:?}]\n");
            assert!(Config::parse(&text).is_err(), "{bad}");
        }
        let text =
            "[dht]\nbootstrap = [\"127.0.0.1:6881\", \"[::1]:6881\", \"dht.example.org:1\"]\n";
        assert!(Config::parse(text).is_ok());
        let e = Config::parse("[dht]\nport = 70000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
        let off = Config::parse("[engine]\npex_interval_s = 0\n").unwrap();
        assert!(off.engine_settings().pex_interval.is_zero());
    }

    #[test]
    fn networks_contain_what_they_should() {
        let n = IpNet::parse("127.0.0.0/8").unwrap();
        assert!(n.contains("127.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!n.contains("128.0.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let one = IpNet::parse("::1/128").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in ["1.2.3.4", "1.2.3.4/33", "::/129", "x/8", "1.2.3.4/-1"] {
            assert!(IpNet::parse(bad).is_none(), "{bad}");
        }
    }
}
