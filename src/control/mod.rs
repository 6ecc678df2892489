//! The control service of `ringseed run`: the list of torrents with their state, kept in the
//! node's database (see [`crate::state`]), and the operations the control API offers on it.
//!
//! - Start: torrents from the state whose files still have the size and mtime of their last
//!   check seed at once with their saved bitfield; the others are queued for a check, as are
//!   new torrents from the config. Checks run one at a time on a thread of their own (each
//!   check hashes on every core already), so start-up never waits for hashing.
//! - Changes (add, remove, pause, resume, limits) are written to the state first and take
//!   effect only once that write is durable, one change at a time (the state lock): a change
//!   the state refused (a full disk) leaves the node as it was, and one answered as done
//!   survives a restart or a `kill -9`. Checks and downloads save what they find about the
//!   data (bitfield, file stamps) in writes of their own that never touch what a change sets;
//!   upload totals and seeding time are written every `save_interval` from the control thread
//!   without waiting, and once more at shutdown.
//! - A tick on the control thread enforces ratio and seed-time limits, looks into the watch
//!   directory and saves progress.

pub mod api;
pub mod client;
pub mod file_ops;
pub mod node;
pub mod org_api;
pub mod org_ops;
pub mod organise;
pub mod qbt;
pub mod qbt_ops;
mod respond;
pub mod token;
pub mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::LimitAction;
use crate::db::{DbError, DbHandle};
use crate::engine::torrent::Start;
use crate::engine::{PeerInfo, Torrent};
use crate::metainfo::{ContentLayout, Metainfo, hex};
use crate::session::{Session, SessionError, SessionHandle};
use crate::state::{
    self, FileStamp, GlobalLimits, GlobalSettings, Limits, Organisation, Progress, TorrentRecord,
};
use crate::verify::HashOptions;
use organise::{QueueItem, QueueLimits, QueueMove};

/// Largest .torrent accepted through the API (a path or an upload).
pub const MAX_TORRENT_FILE: usize = 16 << 20;
/// Most torrents one node holds; adds beyond it are refused.
pub const MAX_TORRENTS: usize = 1_000_000;

/// What went wrong with a control request. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no torrent with info-hash {0}")]
    NotFound(String),
    #[error("torrent {0} is already added")]
    AlreadyAdded(String),
    #[error("save path {path:?} is outside the data directory {root}")]
    OutsideDataDir { path: String, root: String },
    #[error("{0}")]
    Unauthorized(String),
    /// Refused before the token is looked at (wrong `Host`, cross-site `Origin`, not JSON),
    /// with the HTTP status to answer.
    #[error("{1}")]
    Refused(axum::http::StatusCode, String),
    #[error("state database: {0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Session(#[from] SessionError),
    #[error("{0}")]
    Io(String),
    /// qBittorrent: 409 `Incorrect category name` (setCategory) / `Unable to edit category`.
    #[error("unknown category {0:?}")]
    UnknownCategory(String),
    /// qBittorrent: 409 `Unable to create category`.
    #[error("category {0:?} exists already")]
    CategoryExists(String),
    /// A category name or tag that breaks the rules (qBittorrent: 409 `Incorrect category
    /// name` for a category, 400 `Category cannot be empty` for an empty one).
    #[error("{0}")]
    InvalidName(String),
    /// qBittorrent: 409 `Torrent queueing must be enabled`.
    #[error("torrent queueing must be enabled")]
    QueueingDisabled,
}

/// Why a torrent is being hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckReason {
    /// Never checked (new torrent, or no bitfield in the state).
    New,
    /// A file's size or mtime differs from the last check.
    Changed,
    /// Asked for through the API.
    Requested,
}

impl CheckReason {
    pub fn name(self) -> &'static str {
        match self {
            CheckReason::New => "new",
            CheckReason::Changed => "changed",
            CheckReason::Requested => "requested",
        }
    }
}

/// Counters of the service, read by `/metrics` and `GET /api/v1/stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Torrents that started seeding from their saved bitfield, without hashing.
    pub resumed: AtomicU64,
    pub checks_new: AtomicU64,
    pub checks_changed: AtomicU64,
    pub checks_requested: AtomicU64,
    /// Checks that could not open the data at all.
    pub check_failures: AtomicU64,
    /// Torrents in the saved state that no longer parse (saved by an older version with looser
    /// bounds), skipped at start.
    pub state_skipped: AtomicU64,
    /// Periodic saves skipped because the database writer's queue was full.
    pub saves_dropped: AtomicU64,
    /// Database writes that failed.
    pub db_errors: AtomicU64,
    /// .torrent files in the watch directory that could not be added.
    pub watch_errors: AtomicU64,
    /// Torrents stopped or removed by a ratio or seed-time limit.
    pub limits_reached: AtomicU64,
    /// API requests refused for a missing or wrong token.
    pub api_unauthorized: AtomicU64,
    /// API requests answered with a client error (4xx).
    pub api_bad_requests: AtomicU64,
    /// `fdatasync` rounds of downloaded files before a resume save, and their total time.
    pub resume_syncs: AtomicU64,
    pub resume_sync_us: AtomicU64,
    /// `fdatasync`s that failed (the download stops with the error).
    pub sync_errors: AtomicU64,
    /// Connections the API's HTTP server closed for its bounds ([`crate::httpd`]).
    pub api_http: Arc<crate::httpd::HttpStats>,
}

impl Counters {
    fn check(&self, reason: CheckReason) -> &AtomicU64 {
        match reason {
            CheckReason::New => &self.checks_new,
            CheckReason::Changed => &self.checks_changed,
            CheckReason::Requested => &self.checks_requested,
        }
    }
}

/// Settings of the service (from `[torrents]` and `[state]`; SIGHUP replaces the limits).
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Where data added through the API must be: save paths are checked to stay inside it.
    pub data_root: Option<PathBuf>,
    /// Polled for new .torrent files (their data in `data_root`).
    pub watch_dir: Option<PathBuf>,
    /// Zero: only at start and on SIGHUP.
    pub watch_interval: Duration,
    /// Trust new torrents' data without hashing.
    pub skip_check: bool,
    pub hash: HashOptions,
    /// The whole node's upload limit (bytes/s, 0 = unlimited).
    pub upload_rate: u64,
    /// Upload limit of a torrent without its own (bytes/s, 0 = unlimited).
    pub torrent_upload_rate: u64,
    /// Ratio and seed-time limits of torrents without their own.
    pub global_limits: Limits,
    pub limit_action: LimitAction,
    pub save_interval: Duration,
    /// Reserve downloaded files' sizes with fallocate.
    pub preallocate: bool,
    /// Download limit of a torrent without its own (bytes/s, 0 = unlimited).
    pub torrent_download_rate: u64,
    /// The whole node's download limit (bytes/s, 0 = unlimited).
    pub download_rate: u64,
    /// Downloads happen here and move to their data directory once complete.
    pub incomplete_dir: Option<PathBuf>,
    /// Queueing of active torrents (`[torrents] queueing`, `max_active_*`).
    pub queue: QueueLimits,
}

impl ServiceOptions {
    pub fn from_config(c: &crate::config::Config) -> ServiceOptions {
        let t = &c.torrents;
        let non_empty = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        ServiceOptions {
            data_root: non_empty(&t.data_dir),
            watch_dir: non_empty(&t.dir),
            watch_interval: Duration::from_secs(u64::from(t.watch_interval_s)),
            skip_check: t.skip_check,
            hash: c.hash_options(),
            upload_rate: c.engine.upload_rate_limit_kib << 10,
            torrent_upload_rate: c.engine.torrent_upload_rate_limit_kib << 10,
            global_limits: Limits {
                upload_rate: None,
                download_rate: None,
                ratio: (t.ratio_limit_percent > 0)
                    .then(|| f64::from(t.ratio_limit_percent) / 100.0),
                seed_time_s: (t.seed_time_limit_min > 0)
                    .then(|| u64::from(t.seed_time_limit_min) * 60),
                inactive_seed_time_s: (t.inactive_seed_time_limit_min > 0)
                    .then(|| u64::from(t.inactive_seed_time_limit_min) * 60),
            },
            limit_action: t.limit_action,
            save_interval: Duration::from_secs(u64::from(c.state.save_interval_s)),
            preallocate: c.engine.preallocate,
            torrent_download_rate: c.engine.torrent_download_rate_limit_kib << 10,
            download_rate: c.engine.download_rate_limit_kib << 10,
            incomplete_dir: non_empty(&t.incomplete_dir),
            queue: QueueLimits {
                enabled: t.queueing,
                downloads: i64::from(t.max_active_downloads),
                uploads: i64::from(t.max_active_uploads),
                torrents: i64::from(t.max_active_torrents),
            },
        }
    }
}

/// Where a torrent is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Checking,
    Ready,
    Error(String),
    /// Its data is being moved (`setLocation`) by a mover thread, its torrent object closed.
    Moving(Moving),
}

/// A torrent whose data moves: where to, and what it had when its torrent object closed (shown
/// meanwhile, and opened again at the new place).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Moving {
    to: PathBuf,
    /// The verified pieces (a bitfield), `None` if no torrent object was open.
    bits: Option<Vec<u8>>,
    verified: u32,
    left: u64,
    downloads: bool,
    /// Served when the move began: served again after it unless paused meanwhile.
    was_serving: bool,
    /// A recheck asked for during the move, run once it is over.
    recheck: bool,
}

/// One torrent of the service.
struct Entry {
    meta: Metainfo,
    torrent_bytes: Arc<Vec<u8>>,
    source: Option<String>,
    data_dir: PathBuf,
    added_at: i64,
    paused: bool,
    stopped_by: Option<String>,
    limits: Limits,
    /// Uploaded by earlier runs and by torrent objects replaced by a recheck.
    uploaded_base: u64,
    seeding_base: u64,
    /// Set while the torrent is being served.
    seeding_since: Option<Instant>,
    /// The opened torrent, served by the engine unless paused.
    torrent: Option<Arc<Torrent>>,
    status: Status,
    verified: Option<Vec<u8>>,
    files: Vec<Option<FileStamp>>,
    /// Checks of this torrent by this process.
    checks: u32,
    /// Started from its saved bitfield without hashing.
    resumed: bool,
    /// Its data is incomplete and being downloaded (seeding time counts once it completes).
    downloading: bool,
    /// Received bytes per second, sampled every second.
    download_rate: f64,
    rate_sample: Option<(Instant, u64)>,
    /// Verified pieces at the last save of the bitfield.
    saved_pieces: u32,
    /// Peers to dial when it is served (not saved: trackers and peer exchange find more).
    peers: Vec<std::net::SocketAddr>,
    /// Where it downloads, when not in `data_dir` (`incomplete_dir`).
    download_dir: Option<PathBuf>,
    /// Category, tags, queue position, force start, activity and completion times.
    org: Organisation,
    /// Waiting for a slot of the queue: not served (see [`organise::plan`]).
    queued: bool,
    /// Payload bytes sent and received by its torrent object at the last look, to notice
    /// activity once a second without the engine timing anything.
    activity_sample: u64,
}

impl Entry {
    fn uploaded(&self) -> u64 {
        self.uploaded_base + self.torrent.as_ref().map_or(0, |t| t.uploaded())
    }

    /// Seconds seeded: served while complete (the download's time does not count).
    fn seeding_s(&self) -> u64 {
        self.seeding_base
            + self
                .seeding_since
                .filter(|_| !self.downloading)
                .map_or(0, |s| s.elapsed().as_secs())
    }

    fn downloaded(&self) -> u64 {
        self.torrent.as_ref().map_or(0, |t| t.downloaded())
    }

    /// Downloaded over every run.
    fn downloaded_total(&self) -> u64 {
        self.org.downloaded_base + self.downloaded()
    }

    fn record(&self, info_hash: [u8; 20]) -> TorrentRecord {
        TorrentRecord {
            info_hash,
            torrent: self.torrent_bytes.as_ref().clone(),
            source: self.source.clone(),
            data_dir: self.data_dir.display().to_string(),
            added_at: self.added_at,
            paused: self.paused,
            stopped_by: self.stopped_by.clone(),
            limits: self.limits,
            uploaded: self.uploaded(),
            seeding_s: self.seeding_s(),
            verified: self.verified.clone(),
            files: self.files.clone(),
            download_dir: self.download_dir.as_ref().map(|d| d.display().to_string()),
            // Not written by a record's save: only the mover notes and ends a move.
            moving_to: None,
            org: self.org.clone(),
        }
    }

    fn serving(&self) -> bool {
        self.seeding_since.is_some()
    }

    /// What changes set (saved by [`state::save_settings`]).
    fn settings(&self) -> state::Settings {
        state::Settings {
            paused: self.paused,
            stopped_by: self.stopped_by.clone(),
            limits: self.limits,
            category: self.org.category.clone(),
            tags: self.org.tags.clone(),
            force_start: self.org.force_start,
        }
    }

    /// Seconds since its last payload activity (or since it was added, if none yet).
    fn inactive_s(&self, now: i64) -> u64 {
        let since = self.org.last_activity.unwrap_or(self.added_at);
        u64::try_from(now.saturating_sub(since)).unwrap_or(0)
    }

    /// Whether the queue would serve it if it had a slot.
    fn wants_to_run(&self) -> bool {
        self.status == Status::Ready && !self.paused && self.torrent.is_some()
    }

    /// Where its files are: its data directory, and where it is being downloaded if elsewhere.
    fn dirs(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.data_dir.as_path()).chain(self.download_dir.as_deref())
    }

    /// The first component of each of its files' paths that is present in `dir`: what moves
    /// when its data moves from there.
    fn tops_at(&self, dir: &Path) -> BTreeSet<String> {
        tops_at(&self.meta, dir)
    }
}

/// A torrent built and checked, to join the node once its record is durable
/// ([`Service::add_new`]).
struct NewTorrent {
    id: [u8; 20],
    entry: Entry,
    skip_check: bool,
    /// The fetch of the magnet that found its metadata.
    from_fetch: Option<u64>,
}

/// What a removal did besides removing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Files left in place because another torrent names them (cross-seeding).
    pub kept: Vec<PathBuf>,
    /// Files that could not be deleted, each with why. The torrent is removed all the same.
    pub not_deleted: Vec<String>,
}

/// How a torrent is added.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    /// Download directory; `None` is the data root.
    pub save_path: Option<String>,
    pub paused: bool,
    /// Trust the data without hashing (default: the config's `skip_check`).
    pub skip_check: Option<bool>,
    /// Where the .torrent came from (config list or watch directory).
    pub source: Option<String>,
    /// The save path comes from the operator's config, not from the API: not confined to the
    /// data root.
    pub trusted_path: bool,
    /// Peers to dial once it is served (a magnet's `x.pe`, the peer that gave its metadata).
    pub peers: Vec<std::net::SocketAddr>,
    /// Its category, which must exist; without a save path it is saved in the category's.
    pub category: Option<String>,
    /// Its tags (checked; unknown ones join the node's set).
    pub tags: Vec<String>,
    /// Where its files sit beneath its save path (qBittorrent's `contentLayout`).
    pub content_layout: ContentLayout,
}

/// A torrent as the API lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct TorrentView {
    pub info_hash: String,
    pub name: String,
    /// "checking", "downloading", "stalled" (downloading, nothing arriving), "seeding",
    /// "paused" or "error".
    pub state: String,
    pub error: Option<String>,
    pub stopped_by: Option<String>,
    pub data_dir: String,
    pub size: u64,
    pub pieces: u32,
    pub verified_pieces: u32,
    /// Total over every run.
    pub uploaded: u64,
    pub ratio: f64,
    pub seeding_s: u64,
    pub peers: u32,
    pub limits: Limits,
    pub added_at: i64,
    pub checks: u32,
    pub resumed: bool,
    /// Fraction of the data verified and on disk (0–1).
    #[serde(default)]
    pub progress: f64,
    /// Piece payload received from peers by this run.
    #[serde(default)]
    pub downloaded: u64,
    /// Received bytes per second.
    #[serde(default)]
    pub download_rate: f64,
    /// Seconds until complete at the current rate, while downloading.
    #[serde(default)]
    pub eta_s: Option<u64>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// 1-based place among the incomplete torrents in the queue; 0: not in the queue (complete,
    /// or queueing off), as qBittorrent's `priority`.
    #[serde(default)]
    pub queue_position: i64,
    #[serde(default)]
    pub force_start: bool,
    /// Unix seconds of its last payload sent or received (its `added_at` if none yet).
    #[serde(default)]
    pub last_activity: i64,
    /// Unix seconds it was first complete.
    #[serde(default)]
    pub completed_at: Option<i64>,
    /// Piece payload received from peers over every run.
    #[serde(default)]
    pub downloaded_total: u64,
    /// What the qBittorrent API set on it (name, flags, trackers); not in `/api/v1`.
    #[serde(skip)]
    pub qbt: state::QbtSettings,
}

/// A category as the API lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    /// As given: `""` is the data root, a relative path is under it.
    pub save_path: String,
}

/// The global share-limit and queueing settings in force (config and API together).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct OrgSettings {
    pub queueing: bool,
    pub max_active_downloads: i64,
    pub max_active_uploads: i64,
    pub max_active_torrents: i64,
    pub limit_action: LimitAction,
    pub ratio: Option<f64>,
    pub seed_time_s: Option<u64>,
    pub inactive_seed_time_s: Option<u64>,
}

/// The service's counters as the API shows them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ServiceStats {
    pub torrents: usize,
    pub resumed: u64,
    pub checks_new: u64,
    pub checks_changed: u64,
    pub checks_requested: u64,
    pub check_failures: u64,
    pub uploaded: u64,
    /// The DHT node's port, routing-table size and lookups; absent when the DHT is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dht: Option<crate::dht::DhtStatus>,
}

/// The control service. Cheap to clone; every clone is the same service.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("torrents", &self.lock().len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    session: SessionHandle,
    db: DbHandle,
    options: Mutex<ServiceOptions>,
    /// Global limits set through the API; they win over `options` until set back to null.
    global: Mutex<GlobalLimits>,
    /// Global share-limit and queueing settings set through the API, likewise.
    settings: Mutex<GlobalSettings>,
    /// Categories: name → save path as given. Changed under the state lock only.
    categories: Mutex<BTreeMap<String, String>>,
    /// The node's set of tags. Changed under the state lock only.
    tags: Mutex<BTreeSet<String>>,
    torrents: Mutex<HashMap<[u8; 20], Entry>>,
    /// The state lock: held by every change (add, remove, pause, resume, limits, magnet peers)
    /// from its state write to its effect, so changes reach the state in the order they take
    /// effect and nothing changes a torrent between its write and its effect. Taken before
    /// `torrents` when both are; never held by checks, downloads or periodic saves.
    changes: Mutex<()>,
    /// .torrent paths already seen (added or refused), so a watch directory is read cheaply.
    sources: Mutex<HashSet<PathBuf>>,
    /// .torrent files that could not be added, with their size and mtime then: tried again
    /// once they change (a file polled while still being copied in).
    failed: Mutex<HashMap<PathBuf, Option<(u64, std::time::SystemTime)>>>,
    checks: crossbeam_channel::Sender<([u8; 20], CheckReason)>,
    counters: Arc<Counters>,
    /// Magnets whose metadata is being fetched. Never holds an info-hash `torrents` holds;
    /// locked after `torrents` when both are.
    pending: Mutex<HashMap<[u8; 20], Pending>>,
    /// Numbers the metadata fetches, so the result of a stopped one is recognised and dropped.
    fetches: AtomicU64,
}

/// A magnet waiting for its metadata. Its record is in the state from the moment it is added
/// until the torrent it becomes replaces it (or it is removed).
struct Pending {
    magnet: crate::metainfo::Magnet,
    /// As the state keeps it: the URI and the options it was added with.
    rec: state::MagnetRecord,
    name: String,
    /// Why its fetch failed; the fetch has then ended (new peers start another).
    error: Option<String>,
    /// The number of its current fetch.
    fetch: u64,
    /// Dropping it stops the current fetch.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Most magnets waiting for metadata at once (each fetch has a thread); adds beyond are refused.
pub const MAX_PENDING_MAGNETS: usize = 1000;
/// Most peers kept for a magnet or a torrent from the API (`POST …/peers`).
pub const MAX_GIVEN_PEERS: usize = 200;
/// How long one metadata fetch looks for peers that have it before the magnet shows `error`.
const METADATA_FETCH_LIMIT: Duration = Duration::from_secs(600);

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Parses a 40-hex-digit info-hash.
pub fn parse_info_hash(s: &str) -> Result<[u8; 20], ControlError> {
    let bad = || ControlError::BadRequest(format!("{s:?} is not an info-hash (40 hex digits)"));
    if s.len() != 40 {
        return Err(bad());
    }
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The directory a save path names, checked to be inside `root`: no `..`, an absolute path
/// only below `root`, and no symlink on the way that leads out of it.
pub fn confine_save_path(root: &Path, requested: &str) -> Result<PathBuf, ControlError> {
    let outside = || ControlError::OutsideDataDir {
        path: requested.to_string(),
        root: root.display().to_string(),
    };
    if requested.is_empty() || requested.len() > 4096 || requested.contains('\0') {
        return Err(ControlError::BadRequest(format!(
            "save path {requested:?}: must be 1 to 4096 bytes without NUL"
        )));
    }
    let p = Path::new(requested);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(outside());
    }
    let joined = if p.is_absolute() {
        if !p.starts_with(root) {
            return Err(outside());
        }
        p.to_path_buf()
    } else {
        root.join(p)
    };
    let real_root = root
        .canonicalize()
        .map_err(|e| ControlError::Io(format!("data directory {}: {e}", root.display())))?;
    // The deepest part that exists decides where symlinks lead.
    let mut existing = joined.as_path();
    while !existing.exists() {
        existing = existing.parent().ok_or_else(outside)?;
    }
    let real = existing.canonicalize().map_err(|_| outside())?;
    if !real.starts_with(&real_root) {
        return Err(outside());
    }
    Ok(joined)
}

/// Which limit a torrent has reached, if any: its own limits first, then the global ones (a
/// limit of 0 is none). `inactive_s`: seconds since its last payload activity.
pub fn limit_reached(
    own: &Limits,
    global: &Limits,
    uploaded: u64,
    size: u64,
    seeding_s: u64,
    inactive_s: u64,
) -> Option<&'static str> {
    let ratio = own.ratio.or(global.ratio).filter(|r| *r > 0.0);
    if let Some(r) = ratio
        && size > 0
        && uploaded as f64 / size as f64 >= r
    {
        return Some("ratio");
    }
    let seed_time = own.seed_time_s.or(global.seed_time_s).filter(|s| *s > 0);
    if let Some(s) = seed_time
        && seeding_s >= s
    {
        return Some("seed_time");
    }
    let inactive = own
        .inactive_seed_time_s
        .or(global.inactive_seed_time_s)
        .filter(|s| *s > 0);
    if let Some(s) = inactive
        && inactive_s >= s
    {
        return Some("inactive_seed_time");
    }
    None
}

impl Service {
    /// Loads the state, starts what can start, queues the checks, and starts the service's tick
    /// on the control thread. `config_torrents` are the (.torrent, data directory) pairs of the
    /// config; those already in the state are matched by path and not read again.
    pub fn start(
        session: &Session,
        options: ServiceOptions,
        config_torrents: &[(PathBuf, PathBuf)],
        counters: Arc<Counters>,
    ) -> Result<Service, ControlError> {
        let db = session.db().ok_or_else(|| {
            ControlError::BadRequest("the session has no database: set [state] dir".into())
        })?;
        let (check_tx, check_rx) = crossbeam_channel::unbounded();
        let service = Service {
            inner: Arc::new(Inner {
                session: session.handle(),
                db: db.clone(),
                options: Mutex::new(options),
                global: Mutex::new(GlobalLimits::default()),
                settings: Mutex::new(GlobalSettings::default()),
                categories: Mutex::new(BTreeMap::new()),
                tags: Mutex::new(BTreeSet::new()),
                torrents: Mutex::new(HashMap::new()),
                changes: Mutex::new(()),
                sources: Mutex::new(HashSet::new()),
                failed: Mutex::new(HashMap::new()),
                checks: check_tx,
                counters,
                pending: Mutex::new(HashMap::new()),
                fetches: AtomicU64::new(0),
            }),
        };
        let global = db.call(state::load_global)?.recv_result()?;
        service.apply_global(global);
        let settings = db.call(state::load_settings)?.recv_result()?;
        *crate::engine::lock(&service.inner.settings) = settings;
        let categories = db.call(state::load_categories)?.recv_result()?;
        crate::engine::lock(&service.inner.categories).extend(categories);
        let tags = db.call(state::load_tags)?.recv_result()?;
        crate::engine::lock(&service.inner.tags).extend(tags);
        let records = db.call(state::load_all)?.recv_result()?;
        let loaded = records.len();
        for rec in records {
            service.load_record(rec);
        }
        let magnets = db.call(state::load_magnets)?.recv_result()?;
        let waiting = magnets.len();
        for m in magnets {
            service.load_magnet(m);
        }
        tracing::info!(
            torrents = loaded,
            magnets = waiting,
            resumed = service.inner.counters.resumed.load(Ordering::Relaxed),
            "resume state loaded"
        );
        let (_, failed) = service.add_files(config_torrents);
        for (path, e) in failed {
            tracing::error!("skipping {}: {e}", path.display());
        }
        service.normalise_queue();
        service.apply_queue();
        let checker = service.clone();
        std::thread::Builder::new()
            .name("ringseed-check".into())
            .spawn(move || {
                while let Ok((id, reason)) = check_rx.recv() {
                    checker.run_check(id, reason);
                }
            })
            .map_err(|e| ControlError::Io(format!("starting the check thread: {e}")))?;
        let ticker = service.clone();
        session.handle().spawn(Box::pin(ticker.tick_loop()))?;
        Ok(service)
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.inner.counters
    }

    /// The state lock (see [`Inner::changes`]).
    fn changes(&self) -> MutexGuard<'_, ()> {
        self.inner.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 20], Entry>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .torrents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The options in force: the config's, with the global limits set through the API.
    fn options(&self) -> ServiceOptions {
        let mut o = self
            .inner
            .options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let g = self.global_limits();
        o.upload_rate = g.upload_rate.unwrap_or(o.upload_rate);
        o.torrent_upload_rate = g.torrent_upload_rate.unwrap_or(o.torrent_upload_rate);
        o.download_rate = g.download_rate.unwrap_or(o.download_rate);
        o.torrent_download_rate = g.torrent_download_rate.unwrap_or(o.torrent_download_rate);
        o.global_limits.ratio = g.ratio.or(o.global_limits.ratio);
        o.global_limits.seed_time_s = g.seed_time_s.or(o.global_limits.seed_time_s);
        let s = *crate::engine::lock(&self.inner.settings);
        o.global_limits.inactive_seed_time_s = s
            .inactive_seed_time_s
            .or(o.global_limits.inactive_seed_time_s);
        o.limit_action = s.limit_action.unwrap_or(o.limit_action);
        o.queue.enabled = s.queueing.unwrap_or(o.queue.enabled);
        o.queue.downloads = s.max_active_downloads.unwrap_or(o.queue.downloads);
        o.queue.uploads = s.max_active_uploads.unwrap_or(o.queue.uploads);
        o.queue.torrents = s.max_active_torrents.unwrap_or(o.queue.torrents);
        o
    }

    /// The global limits set through the API (`None`: the config's value).
    pub fn global_limits(&self) -> GlobalLimits {
        *self.inner.global.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The global limits in force (config and API together).
    pub fn effective_global_limits(&self) -> GlobalLimits {
        let o = self.options();
        GlobalLimits {
            upload_rate: Some(o.upload_rate),
            torrent_upload_rate: Some(o.torrent_upload_rate),
            download_rate: Some(o.download_rate),
            torrent_download_rate: Some(o.torrent_download_rate),
            ratio: o.global_limits.ratio,
            seed_time_s: o.global_limits.seed_time_s,
        }
    }

    /// Sets the global limits (API) and saves them; waits for the save.
    pub fn set_global_limits(&self, g: GlobalLimits) -> Result<(), ControlError> {
        let _changing = self.changes();
        self.inner
            .db
            .call(move |c| state::put_global(c, &g))?
            .recv_result()?;
        self.apply_global(g);
        Ok(())
    }

    fn apply_global(&self, g: GlobalLimits) {
        *self.inner.global.lock().unwrap_or_else(|e| e.into_inner()) = g;
        self.apply_rates();
    }

    /// Replaces the options (SIGHUP); the rate limits follow at once.
    pub fn set_options(&self, options: ServiceOptions) {
        *self.inner.options.lock().unwrap_or_else(|e| e.into_inner()) = options;
        self.apply_rates();
    }

    /// Applies the node's and the torrents' rate limits in force.
    fn apply_rates(&self) {
        let options = self.options();
        let rate = options.torrent_upload_rate;
        let engine = self.inner.session.engine();
        engine.set_upload_limit(options.upload_rate);
        engine.set_download_limit(options.download_rate);
        for e in self.lock().values() {
            if let Some(t) = &e.torrent {
                t.upload_limit
                    .set_rate(e.limits.upload_rate.unwrap_or(rate));
                t.fetch.download_limit.set_rate(
                    e.limits
                        .download_rate
                        .unwrap_or(options.torrent_download_rate),
                );
            }
        }
    }

    /// Notes in the state, and waits until it is durable, that `id`'s data is about to move to
    /// `to`; `false` (logged) when it could not be.
    fn note_move(&self, id: [u8; 20], to: &Path) -> bool {
        let to_s = to.display().to_string();
        let noted = self
            .inner
            .db
            .call(move |c| state::save_moving_to(c, &id, &to_s))
            .map_err(ControlError::from)
            .and_then(|r| Ok(r.recv_result()?));
        if let Err(err) = &noted {
            tracing::error!("noting the move of {} in the state: {err}", hex(&id));
        }
        noted.is_ok()
    }

    /// A move that a stop (a crash, a kill) cut short: its data is at the old place, at the new
    /// one, or (cut between two top-level items, or while the old copy was being removed)
    /// partly at both. The new place wins when it holds some of the torrent's items and the old
    /// one none; otherwise the data stays at the old place, and nothing is removed (the check
    /// that follows a change finds what is missing). Our unfinished copies at the new place
    /// (`.NAME.ringseed-moving`, whose sources are whole) are removed, and the place is saved.
    fn recover_move(&self, meta: &Metainfo, rec: &mut TorrentRecord, to: &Path) {
        let completing = rec.download_dir.is_some() && Path::new(&rec.data_dir) == to;
        let from = match (&rec.download_dir, completing) {
            (Some(d), true) => PathBuf::from(d),
            _ => PathBuf::from(&rec.data_dir),
        };
        for top in &tops(meta) {
            let tmp = to.join(format!(".{top}.ringseed-moving"));
            if tmp.symlink_metadata().is_ok() {
                match remove_tree(&tmp) {
                    Ok(()) => tracing::info!("removed {}, a copy cut short", tmp.display()),
                    Err(e) => tracing::warn!("removing {}: {e}", tmp.display()),
                }
            }
        }
        let (here, there) = (tops_at(meta, &from), tops_at(meta, to));
        let moved = here.is_empty() && !there.is_empty();
        if moved {
            if completing {
                rec.download_dir = None;
                // It had completed; its last saved bitfield may be from before: check it.
                rec.verified = None;
            } else {
                rec.data_dir = to.display().to_string();
            }
        } else if !here.is_empty() && !there.is_empty() {
            tracing::warn!(
                "{}: its move to {} was cut short with its data partly in both places; it stays at {} ({} of its items there, {} at the target, nothing removed)",
                meta.info.name,
                to.display(),
                from.display(),
                here.len(),
                there.len()
            );
        }
        tracing::info!(
            torrent = %meta.info.name,
            at = %if moved { to.display() } else { from.display() },
            "a move cut short by the last stop: the data is taken where it is"
        );
        let (id, data_dir, download_dir) = (
            rec.info_hash,
            rec.data_dir.clone(),
            rec.download_dir.clone(),
        );
        let saved = self
            .inner
            .db
            .call(move |c| state::save_place(c, &id, &data_dir, download_dir.as_deref()))
            .map_err(ControlError::from)
            .and_then(|r| Ok(r.recv_result()?));
        if let Err(e) = saved {
            tracing::error!("saving the place of {}: {e}", meta.info.name);
        }
    }

    /// Takes one torrent from the state: seeds it at once when its files match the last check.
    fn load_record(&self, mut rec: TorrentRecord) {
        let meta = match Metainfo::from_bytes(&rec.torrent) {
            // Its files where its content layout put them when it was added.
            Ok(mut m) => {
                m.info.layout = rec.org.content_layout.apply(&m.info.layout);
                // and where renames put them since
                file_ops::apply_paths(&mut m.info.layout, &rec.org.qbt.file_paths);
                m
            }
            Err(e) => {
                // Saved by an older version whose parser was looser: the record stays in the
                // state untouched, and the node starts without it.
                tracing::error!(
                    "state: torrent {} no longer parses, skipped: {e}",
                    hex(&rec.info_hash)
                );
                self.inner
                    .counters
                    .state_skipped
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if let Some(to) = rec.moving_to.take() {
            self.recover_move(&meta, &mut rec, Path::new(&to));
        }
        let data_dir = PathBuf::from(&rec.data_dir);
        if let Some(s) = &rec.source {
            self.remember_source(Path::new(s));
        }
        let now_files = state::stamp_files(&meta.info.layout, &data_dir);
        let pieces = meta.info.layout.num_pieces;
        let bitfield_ok = rec
            .verified
            .as_ref()
            .is_some_and(|v| v.len() == pieces.div_ceil(8) as usize);
        let unchanged = bitfield_ok && now_files == rec.files;
        // A download in progress: its files changed after the last save by design, and every
        // piece in the saved bitfield was written before it was saved.
        let partial = bitfield_ok
            && rec
                .verified
                .as_ref()
                .is_some_and(|v| crate::pieces::count_wire(v, pieces) < pieces);
        let mut entry = Entry {
            meta: meta.clone(),
            torrent_bytes: Arc::new(rec.torrent),
            source: rec.source,
            data_dir: data_dir.clone(),
            added_at: rec.added_at,
            paused: rec.paused,
            stopped_by: rec.stopped_by,
            limits: rec.limits,
            uploaded_base: rec.uploaded,
            seeding_base: rec.seeding_s,
            seeding_since: None,
            torrent: None,
            status: Status::Checking,
            verified: rec.verified,
            files: rec.files,
            checks: 0,
            resumed: false,
            downloading: false,
            download_rate: 0.0,
            rate_sample: None,
            saved_pieces: 0,
            peers: Vec::new(),
            download_dir: None,
            queued: self.options().queue.enabled && !rec.org.force_start,
            org: rec.org,
            activity_sample: 0,
        };
        let id = rec.info_hash;
        entry.download_dir = rec.download_dir.map(PathBuf::from);
        if !partial && !unchanged {
            let reason = if bitfield_ok {
                CheckReason::Changed
            } else {
                CheckReason::New
            };
            tracing::info!(
                torrent = %meta.info.name,
                reason = reason.name(),
                "data differs from the last check: rechecking"
            );
            self.lock().insert(id, entry);
            let _ = self.inner.checks.send((id, reason));
            return;
        }
        // Resume from the saved bitfield: a download in progress fetches the rest; a complete
        // torrent whose files are unchanged seeds the pieces it had.
        let bits = entry.verified.clone().unwrap_or_default();
        let opened = if partial {
            let dir = entry.download_dir.clone().unwrap_or(data_dir.clone());
            let preallocate = self.options().preallocate;
            Torrent::open_download(meta, &dir, Start::Trust(bits), preallocate)
        } else {
            Torrent::open(meta, &data_dir, None).inspect(|(t, _)| {
                for i in 0..pieces {
                    let byte = bits.get(i as usize / 8).copied().unwrap_or(0);
                    if byte & (0x80 >> (i % 8)) == 0 {
                        t.pieces.verified.clear(i);
                    }
                }
            })
        };
        match opened {
            Ok((t, _)) => {
                entry.saved_pieces = t.pieces.verified.count();
                entry.downloading = partial;
                entry.torrent = Some(Arc::new(t));
                // skipped files: a finished download is seen as one at its first tick
                self.apply_want(id, &mut entry);
                entry.status = Status::Ready;
                entry.resumed = true;
                self.inner.counters.resumed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => entry.status = Status::Error(format!("opening the data: {e}")),
        }
        let mut all = self.lock();
        if !entry.paused {
            self.serve(id, &mut entry);
        }
        all.insert(id, entry);
    }

    fn remember_source(&self, p: &Path) -> bool {
        self.inner
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.to_path_buf())
    }

    /// Starts serving an opened torrent (with its rate limit) unless it already is.
    fn serve(&self, id: [u8; 20], e: &mut Entry) {
        if e.torrent.is_none() || e.serving() || e.queued {
            return;
        }
        // a torrent object opened since (recheck, move, restart) follows the file priorities
        self.apply_want(id, e);
        let Some(t) = &e.torrent else { return };
        // a torrent object opened since (recheck, move) announces to the edited trackers too
        t.set_tiers(e.org.qbt.trackers.clone());
        let options = self.options();
        t.upload_limit
            .set_rate(e.limits.upload_rate.unwrap_or(options.torrent_upload_rate));
        t.fetch.download_limit.set_rate(
            e.limits
                .download_rate
                .unwrap_or(options.torrent_download_rate),
        );
        // The workers' torrent queues are never full: this fails only at shutdown.
        match self.inner.session.add_torrent(t.clone()) {
            Ok(()) => {
                e.seeding_since = Some(Instant::now());
                if !e.peers.is_empty() {
                    let _ = self.inner.session.add_peers(id, e.peers.clone());
                }
            }
            Err(err) => {
                tracing::error!("serving {}: {err}", hex(&id));
                e.status = Status::Error(format!("serving: {err}"));
            }
        }
    }

    /// Stops serving, folding the seeding time into the total.
    fn unserve(&self, id: [u8; 20], e: &mut Entry) {
        if let Some(since) = e.seeding_since.take() {
            if !e.downloading {
                e.seeding_base += since.elapsed().as_secs();
            }
            if let Err(err) = self.inner.session.remove_torrent(id) {
                tracing::warn!("stopping {}: {err}", hex(&id));
            }
        }
    }

    /// Writes a magnet's record to the state and waits until it is durable.
    fn save_magnet(&self, rec: state::MagnetRecord) -> Result<(), ControlError> {
        self.inner
            .db
            .call(move |c| state::put_magnet(c, &rec))?
            .recv_result()?;
        Ok(())
    }

    /// Adds a magnet link: its metadata is fetched from peers (the magnet's trackers and `x.pe`
    /// addresses, and peers given through the API) on a thread of its own, then it is added as
    /// its .torrent would be and downloads. Meanwhile the list shows it in state `metadata` (or
    /// `error`, with the reason, when no peer gave the metadata within ten minutes). It is saved
    /// in the state before this returns, so a restart (or a `kill -9`) fetches it again.
    pub fn add_magnet(&self, uri: &str, mut add: AddOptions) -> Result<[u8; 20], ControlError> {
        let m = crate::metainfo::Magnet::parse(uri)
            .map_err(|e| ControlError::BadRequest(format!("magnet link: {e}")))?;
        let id = m.info_hash.wire_id();
        // The save path is checked now, so a bad one is refused at once.
        if let (Some(p), Some(root), false) =
            (&add.save_path, &self.options().data_root, add.trusted_path)
        {
            confine_save_path(root, p)?;
        }
        let mut peers = Vec::new();
        for p in std::mem::take(&mut add.peers) {
            if peers.len() < MAX_GIVEN_PEERS && !peers.contains(&p) {
                peers.push(p);
            }
        }
        self.check_add_organisation(&add)?;
        if add.save_path.is_none()
            && let Some(c) = &add.category
            && let (Some(p), Some(root)) = (self.category_save_path(c)?, &self.options().data_root)
        {
            confine_save_path(root, &p)?;
        }
        let rec = state::MagnetRecord {
            info_hash: id,
            uri: uri.to_string(),
            added_at: now_unix(),
            save_path: add.save_path,
            paused: add.paused,
            skip_check: add.skip_check,
            source: add.source,
            trusted_path: add.trusted_path,
            peers,
            category: add.category,
            tags: add.tags,
            content_layout: add.content_layout,
        };
        let _changing = self.changes();
        {
            let all = self.lock();
            if all.contains_key(&id) {
                return Err(ControlError::AlreadyAdded(hex(&id)));
            }
            let pending = crate::engine::lock(&self.inner.pending);
            // One whose fetch failed may be added again (a new fetch).
            if pending.get(&id).is_some_and(|p| p.error.is_none()) {
                return Err(ControlError::AlreadyAdded(hex(&id)));
            }
            if pending.len() >= MAX_PENDING_MAGNETS && !pending.contains_key(&id) {
                return Err(ControlError::BadRequest(format!(
                    "{MAX_PENDING_MAGNETS} magnets are waiting for their metadata, the most this \
                     node fetches at once"
                )));
            }
            if all.len() + pending.len() >= MAX_TORRENTS {
                return Err(ControlError::BadRequest(format!(
                    "this node holds {MAX_TORRENTS} torrents, the most it takes"
                )));
            }
        }
        // Saved first: a magnet the state refused is not added (nor fetched).
        let saved = rec.clone();
        self.inner
            .db
            .call(move |c| {
                state::put_magnet(c, &saved)?;
                state::add_tag_names(c, &saved.tags)
            })?
            .recv_result()?;
        crate::engine::lock(&self.inner.tags).extend(rec.tags.iter().cloned());
        {
            let _all = self.lock();
            let mut pending = crate::engine::lock(&self.inner.pending);
            let name = m.name.clone().unwrap_or_else(|| hex(&id));
            let mut p = Pending {
                magnet: m,
                rec,
                name,
                error: None,
                fetch: 0,
                stop: None,
            };
            self.start_fetch(id, &mut p);
            // Replaces one whose fetch failed (its thread has ended).
            pending.insert(id, p);
        }
        tracing::info!(info_hash = %hex(&id), "magnet added: fetching its metadata");
        Ok(id)
    }

    /// Takes a magnet waiting for its metadata from the state and fetches it again.
    fn load_magnet(&self, rec: state::MagnetRecord) {
        let id = rec.info_hash;
        let m = match crate::metainfo::Magnet::parse(&rec.uri) {
            Ok(m) if m.info_hash.wire_id() == id => m,
            Ok(_) => {
                tracing::error!(
                    "state: magnet {} names another info-hash, skipped",
                    hex(&id)
                );
                return;
            }
            Err(e) => {
                tracing::error!("state: magnet {} no longer parses, skipped: {e}", hex(&id));
                return;
            }
        };
        let all = self.lock();
        if all.contains_key(&id) {
            // Its torrent is there (added from the config as well): the magnet is done.
            drop(all);
            let _ = self.inner.db.call(move |c| state::delete_magnet(c, &id));
            return;
        }
        let mut pending = crate::engine::lock(&self.inner.pending);
        let name = m.name.clone().unwrap_or_else(|| hex(&id));
        let mut p = Pending {
            magnet: m,
            rec,
            name,
            error: None,
            fetch: 0,
            stop: None,
        };
        self.start_fetch(id, &mut p);
        pending.insert(id, p);
    }

    /// Starts a metadata fetch for `p` (under the `pending` lock), stopping the one it had.
    fn start_fetch(&self, id: [u8; 20], p: &mut Pending) {
        let fetch = self.inner.fetches.fetch_add(1, Ordering::Relaxed) + 1;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Replacing the sender drops the old one: the old fetch stops.
        p.stop = Some(stop);
        p.fetch = fetch;
        p.error = None;
        let m = p.magnet.clone();
        let given = p.rec.peers.clone();
        let mut add = AddOptions {
            save_path: p.rec.save_path.clone(),
            paused: p.rec.paused,
            skip_check: p.rec.skip_check,
            source: p.rec.source.clone(),
            trusted_path: p.rec.trusted_path,
            peers: given.clone(),
            category: p.rec.category.clone(),
            tags: p.rec.tags.clone(),
            content_layout: p.rec.content_layout,
        };
        let engine = self.inner.session.engine().clone();
        let dht = self.inner.session.dht().cloned();
        let s = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ringseed-magnet".into())
            .spawn(move || {
                let resolved = crate::leecher::magnet::resolve_with_dht(
                    &m,
                    &given,
                    crate::magnet_fetch::FetchOptions::for_engine(&engine),
                    METADATA_FETCH_LIMIT,
                    async move {
                        let _ = stopped.await;
                    },
                    dht,
                );
                let added = resolved.and_then(|r| {
                    add.peers.extend(
                        m.peers
                            .iter()
                            .filter_map(|p| p.parse::<std::net::SocketAddr>().ok()),
                    );
                    add.peers.push(r.from);
                    s.new_torrent(r.torrent, add, Some(fetch))
                        .and_then(|n| s.add_one(n))
                        .map_err(|e| e.to_string())
                });
                if let Err(e) = added {
                    let mut pending = crate::engine::lock(&s.inner.pending);
                    // Only the current fetch of a magnet still waiting tells its error; a
                    // stopped one ends quietly.
                    if let Some(p) = pending.get_mut(&id).filter(|p| p.fetch == fetch) {
                        tracing::error!(info_hash = %hex(&id), "magnet: {e}");
                        p.error = Some(e);
                        p.stop = None;
                    }
                }
            });
        if let Err(e) = spawned {
            p.error = Some(format!("starting the metadata fetch: {e}"));
            p.stop = None;
        }
    }

    /// Peers given through the API. A magnet waiting for its metadata keeps them (in the state
    /// too) and starts its fetch over with every peer it knows, so an address that failed
    /// before is tried again; a torrent dials them (and again whenever it is served).
    pub fn add_peers(
        &self,
        id: [u8; 20],
        peers: Vec<std::net::SocketAddr>,
    ) -> Result<(), ControlError> {
        let merge = |into: &mut Vec<std::net::SocketAddr>| {
            for p in &peers {
                if !into.contains(p) {
                    into.push(*p);
                }
            }
            // The newest count most.
            let over = into.len().saturating_sub(MAX_GIVEN_PEERS);
            into.drain(..over);
        };
        let _changing = self.changes();
        let saved = {
            let mut all = self.lock();
            if let Some(e) = all.get_mut(&id) {
                // A torrent's given peers are not saved: trackers and peer exchange find more.
                merge(&mut e.peers);
                if e.serving() {
                    self.inner.session.add_peers(id, peers.clone())?;
                }
                return Ok(());
            }
            let pending = crate::engine::lock(&self.inner.pending);
            let p = pending.get(&id).ok_or(ControlError::NotFound(hex(&id)))?;
            let mut rec = p.rec.clone();
            merge(&mut rec.peers);
            rec
        };
        // A magnet keeps them in the state: saved before its fetch starts over with them.
        self.save_magnet(saved.clone())?;
        {
            let _all = self.lock();
            let mut pending = crate::engine::lock(&self.inner.pending);
            // The state lock kept it waiting meanwhile.
            if let Some(p) = pending.get_mut(&id) {
                p.rec = saved;
                self.start_fetch(id, p);
            }
        }
        tracing::info!(info_hash = %hex(&id), peers = peers.len(), "magnet: peers given, fetching again");
        Ok(())
    }

    /// A magnet still waiting for its metadata, as the list shows it.
    fn pending_view(id: &[u8; 20], p: &Pending) -> TorrentView {
        let added_at = p.rec.added_at;
        TorrentView {
            info_hash: hex(id),
            name: p.name.clone(),
            state: if p.error.is_some() {
                "error"
            } else {
                "metadata"
            }
            .into(),
            error: p.error.clone(),
            stopped_by: None,
            data_dir: String::new(),
            size: 0,
            pieces: 0,
            verified_pieces: 0,
            uploaded: 0,
            ratio: 0.0,
            seeding_s: 0,
            peers: 0,
            limits: Limits::default(),
            added_at,
            checks: 0,
            resumed: false,
            progress: 0.0,
            downloaded: 0,
            download_rate: 0.0,
            eta_s: None,
            category: p.rec.category.clone(),
            tags: p.rec.tags.clone(),
            queue_position: 0,
            force_start: false,
            last_activity: added_at,
            completed_at: None,
            downloaded_total: 0,
            qbt: state::QbtSettings::default(),
        }
    }

    /// Reads a .torrent file (config list or watch directory) with its data in `data` and
    /// builds its torrent. `None` when the path was seen already. A file that cannot be read or
    /// parsed is remembered with its size and mtime, and tried again once they change.
    fn torrent_from_file(
        &self,
        path: &Path,
        data: &Path,
        trusted_path: bool,
    ) -> Result<Option<NewTorrent>, ControlError> {
        if !self.remember_source(path) {
            return Ok(None);
        }
        let stamp = file_stamp(path);
        let add = AddOptions {
            save_path: Some(data.display().to_string()),
            source: Some(path.display().to_string()),
            trusted_path,
            ..AddOptions::default()
        };
        match read_bounded(path).and_then(|bytes| self.new_torrent(bytes, add, None)) {
            Ok(n) => Ok(Some(n)),
            Err(e) => {
                self.forget_source(path);
                self.inner
                    .failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(path.to_path_buf(), stamp);
                Err(e)
            }
        }
    }

    fn forget_source(&self, path: &Path) {
        self.inner
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
    }

    /// Adds the .torrent files `list` names (with their data directories), saving them in one
    /// batch. Returns how many were added and the files that failed, with why; a file whose
    /// torrent is already in the node is neither. A file the state refused to save is tried
    /// again at the next look (its path is forgotten).
    fn add_files(&self, list: &[(PathBuf, PathBuf)]) -> (usize, Vec<(PathBuf, ControlError)>) {
        let mut failed = Vec::new();
        let mut batch = Vec::new();
        let mut paths = Vec::new();
        for (path, data) in list {
            match self.torrent_from_file(path, data, true) {
                Ok(Some(n)) => {
                    batch.push(n);
                    paths.push(path);
                }
                Ok(None) => {}
                Err(e) => failed.push((path.clone(), e)),
            }
        }
        let mut added = 0;
        for (path, result) in paths.into_iter().zip(self.add_new(batch)) {
            match result {
                Ok(_) => added += 1,
                Err(ControlError::AlreadyAdded(_)) => {}
                Err(e) => {
                    self.forget_source(path);
                    failed.push((path.clone(), e));
                }
            }
        }
        (added, failed)
    }

    /// Builds a torrent to add: parses it, confines its save path, and opens its data when it
    /// is trusted without a check. Saves nothing and changes nothing.
    fn new_torrent(
        &self,
        bytes: Vec<u8>,
        add: AddOptions,
        from_fetch: Option<u64>,
    ) -> Result<NewTorrent, ControlError> {
        let mut meta = Metainfo::from_bytes(&bytes)
            .map_err(|e| ControlError::BadRequest(format!("not a valid .torrent: {e}")))?;
        // Every open, check, move and delete follows the paths of its content layout.
        meta.info.layout = add.content_layout.apply(&meta.info.layout);
        let options = self.options();
        let mut add = add;
        if from_fetch.is_some()
            && let Some(c) = &add.category
            && !crate::engine::lock(&self.inner.categories).contains_key(c)
        {
            // Its category was removed while its metadata was fetched: it joins without one,
            // as the torrents of a removed category are left.
            add.category = None;
        }
        self.check_add_organisation(&add)?;
        if add.save_path.is_none()
            && let Some(c) = &add.category
        {
            // Without its own save path a torrent goes to its category's ("" = the data root).
            add.save_path = self.category_save_path(c)?;
        }
        let data_dir = match (&add.save_path, add.trusted_path, &options.data_root) {
            (Some(p), true, _) => PathBuf::from(p),
            (Some(p), false, Some(root)) => confine_save_path(root, p)?,
            (None, _, Some(root)) => root.clone(),
            (_, _, None) => {
                return Err(ControlError::BadRequest(
                    "[torrents] data_dir is not set: it is the directory torrents added through \
                     the API are seeded from"
                        .into(),
                ));
            }
        };
        let id = meta.info.hash.wire_id();
        let skip_check = add.skip_check.unwrap_or(options.skip_check);
        let mut entry = Entry {
            meta: meta.clone(),
            torrent_bytes: Arc::new(bytes),
            source: add.source,
            data_dir: data_dir.clone(),
            added_at: now_unix(),
            paused: add.paused,
            stopped_by: None,
            limits: Limits::default(),
            uploaded_base: 0,
            seeding_base: 0,
            seeding_since: None,
            torrent: None,
            status: Status::Checking,
            verified: None,
            files: Vec::new(),
            checks: 0,
            resumed: false,
            downloading: false,
            download_rate: 0.0,
            rate_sample: None,
            saved_pieces: 0,
            peers: add.peers,
            download_dir: None,
            queued: options.queue.enabled,
            org: Organisation {
                category: add.category,
                tags: add.tags,
                content_layout: add.content_layout,
                ..Organisation::default()
            },
            activity_sample: 0,
        };
        if skip_check {
            entry.files = state::stamp_files(&meta.info.layout, &data_dir);
            let (t, _) = Torrent::open(meta, &data_dir, None)
                .map_err(|e| ControlError::Io(format!("opening {}: {e}", data_dir.display())))?;
            entry.verified = Some(t.pieces.verified.to_wire());
            entry.torrent = Some(Arc::new(t));
            entry.status = Status::Ready;
        }
        Ok(NewTorrent {
            id,
            entry,
            skip_check,
            from_fetch,
        })
    }

    /// Saves new torrents, and adds to the node those whose save is durable: only then is one
    /// served (or queued for its check). One answer per torrent, in order; a torrent the state
    /// refused changes nothing. A magnet of the same info-hash waiting for its metadata is
    /// replaced (in the state by the same job that saves the torrent); a torrent found by a
    /// magnet's fetch (`from_fetch`) is dropped when that fetch was stopped meanwhile (the
    /// magnet removed or given new peers).
    fn add_new(&self, list: Vec<NewTorrent>) -> Vec<Result<[u8; 20], ControlError>> {
        let _changing = self.changes();
        let mut answers: Vec<Result<[u8; 20], ControlError>> = Vec::with_capacity(list.len());
        let mut saving = Vec::new();
        {
            let all = self.lock();
            let pending = crate::engine::lock(&self.inner.pending);
            let mut taken = HashSet::new();
            let mut next_pos = all.values().map(|e| e.org.queue_pos).max().unwrap_or(0) + 1;
            for mut n in list {
                let id = n.id;
                let refused = if all.contains_key(&id) || taken.contains(&id) {
                    Some(ControlError::AlreadyAdded(hex(&id)))
                } else if all.len() + taken.len() >= MAX_TORRENTS {
                    Some(ControlError::BadRequest(format!(
                        "this node holds {MAX_TORRENTS} torrents, the most it takes"
                    )))
                } else if let Some(fetch) = n.from_fetch
                    && pending.get(&id).is_none_or(|p| p.fetch != fetch)
                {
                    Some(ControlError::Io(
                        "the magnet was removed or its fetch started over".into(),
                    ))
                } else {
                    None
                };
                if let Some(e) = refused {
                    answers.push(Err(e));
                    continue;
                }
                n.entry.org.queue_pos = next_pos;
                next_pos += 1;
                let rec = n.entry.record(id);
                let job = move |c: &rusqlite::Connection| {
                    state::put_from_magnet(c, &rec)?;
                    state::add_tag_names(c, &rec.org.tags)
                };
                match self.inner.db.call(job) {
                    Ok(reply) => {
                        taken.insert(id);
                        answers.push(Ok(id));
                        saving.push((answers.len() - 1, n, reply));
                    }
                    Err(e) => answers.push(Err(e.into())),
                }
            }
        }
        for (at, n, reply) in saving {
            if let Err(e) = reply.recv_result() {
                tracing::error!(torrent = %n.entry.meta.info.name, "not added: saving it failed: {e}");
                answers[at] = Err(e.into());
                continue;
            }
            let NewTorrent {
                id,
                mut entry,
                skip_check,
                ..
            } = n;
            crate::engine::lock(&self.inner.tags).extend(entry.org.tags.iter().cloned());
            let mut all = self.lock();
            // Stops its fetch, if another one found the metadata (or a .torrent came first).
            crate::engine::lock(&self.inner.pending).remove(&id);
            if skip_check && !entry.paused {
                self.serve(id, &mut entry);
            }
            tracing::info!(torrent = %entry.meta.info.name, info_hash = %hex(&id), "added");
            all.insert(id, entry);
            drop(all);
            if !skip_check {
                let _ = self.inner.checks.send((id, CheckReason::New));
            }
        }
        self.apply_queue();
        answers
    }

    /// [`Service::add_new`] of one torrent.
    fn add_one(&self, n: NewTorrent) -> Result<[u8; 20], ControlError> {
        self.add_new(vec![n])
            .pop()
            .unwrap_or_else(|| Err(ControlError::Io("no answer".into())))
    }

    /// Adds a torrent given as bytes (API upload); returns once it is saved and added.
    pub fn add(&self, bytes: Vec<u8>, add: AddOptions) -> Result<[u8; 20], ControlError> {
        self.add_one(self.new_torrent(bytes, add, None)?)
    }

    /// Adds the .torrent file at `path` (read by the service); returns once it is saved and
    /// added.
    pub fn add_path(&self, path: &Path, add: AddOptions) -> Result<[u8; 20], ControlError> {
        let bytes = read_bounded(path)?;
        self.add(bytes, add)
    }

    /// Hashes a torrent's data (on the check thread) and serves what verifies.
    fn run_check(&self, id: [u8; 20], reason: CheckReason) {
        let (meta, dir) = {
            let all = self.lock();
            let Some(e) = all.get(&id) else { return };
            (e.meta.clone(), e.data_dir.clone())
        };
        self.inner
            .counters
            .check(reason)
            .fetch_add(1, Ordering::Relaxed);
        // Stamped before hashing: a file written during the check reads as changed next time.
        let files = state::stamp_files(&meta.info.layout, &dir);
        let started = Instant::now();
        let opened = Torrent::open(meta.clone(), &dir, Some(self.options().hash));
        // Data missing or partial: the torrent downloads the rest, keeping what verified.
        let options = self.options();
        let mut download_dir = None;
        let opened = opened.and_then(|(t, r)| {
            if t.pieces.verified.is_full() {
                return Ok((t, r));
            }
            let Some(inc) = &options.incomplete_dir else {
                let bits = t.verified_bitfield();
                drop(t);
                return Torrent::open_download(meta, &dir, Start::Trust(bits), options.preallocate)
                    .map(|(t, _)| (t, r));
            };
            // Downloads live in the incomplete directory until complete: what is there (an
            // interrupted download) is hashed and kept.
            drop(t);
            download_dir = Some(inc.clone());
            Torrent::open_download(meta, inc, Start::Check(options.hash), options.preallocate)
                .map(|(t, _)| (t, r))
        });
        // A partial download's pieces found by hashing may be only in the page cache (written
        // by a run killed before it synced them): on the device before the bits are saved.
        let opened = opened.and_then(|(t, r)| {
            if t.downloads() {
                t.files
                    .sync()
                    .map_err(|e| std::io::Error::new(e.kind(), format!("syncing the data: {e}")))?;
            }
            Ok((t, r))
        });
        let mut all = self.lock();
        let Some(e) = all.get_mut(&id) else { return };
        if e.data_dir != dir {
            // Removed and added again elsewhere while it was hashed: this result describes the
            // old directory, and the new entry has a check of its own queued.
            tracing::info!(torrent = %e.meta.info.name, "moved during its check; result dropped");
            return;
        }
        e.checks += 1;
        match opened {
            Ok((t, report)) => {
                let good = report.as_ref().map_or(0, |r| r.good);
                tracing::info!(
                    torrent = %e.meta.info.name,
                    reason = reason.name(),
                    good,
                    pieces = e.meta.info.layout.num_pieces,
                    seconds = started.elapsed().as_secs_f64(),
                    "checked"
                );
                let was_serving = e.serving();
                self.unserve(id, e);
                if let Some(old) = e.torrent.take() {
                    e.uploaded_base += old.uploaded();
                    e.org.downloaded_base += old.downloaded();
                }
                e.verified = Some(t.pieces.verified.to_wire());
                e.files = files;
                e.downloading = t.downloads();
                e.download_dir = download_dir;
                e.saved_pieces = t.pieces.verified.count();
                e.torrent = Some(Arc::new(t));
                e.status = Status::Ready;
                if !e.paused || was_serving {
                    self.serve(id, e);
                }
            }
            Err(err) => {
                self.inner
                    .counters
                    .check_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(torrent = %e.meta.info.name, "check failed: {err}");
                e.status = Status::Error(format!("check failed: {err}"));
            }
        }
        let save = DataSave::of(id, e);
        drop(all);
        if let Err(err) = self.inner.db.call(move |c| save.run(c)) {
            self.inner
                .counters
                .db_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!("saving {}: {err}", hex(&id));
        }
        self.apply_queue();
    }

    /// Changes one torrent's settings with `f`: saves them, waits until that is durable, and
    /// only then applies them (serving or not, rate limits). A save that fails changes nothing.
    fn change(
        &self,
        id: [u8; 20],
        f: impl FnOnce(&mut state::Settings),
    ) -> Result<(), ControlError> {
        let _changing = self.changes();
        let wanted = {
            let all = self.lock();
            let e = all.get(&id).ok_or(ControlError::NotFound(hex(&id)))?;
            let mut s = e.settings();
            f(&mut s);
            s
        };
        let saved = wanted.clone();
        self.inner
            .db
            .call(move |c| state::save_settings(c, &id, &saved))?
            .recv_result()?;
        let mut all = self.lock();
        // The state lock kept it in the node meanwhile.
        if let Some(e) = all.get_mut(&id) {
            self.apply_settings(id, e, wanted);
        }
        drop(all);
        self.apply_queue();
        Ok(())
    }

    /// Makes `s` a torrent's settings in force: its rate limits, and served unless paused.
    fn apply_settings(&self, id: [u8; 20], e: &mut Entry, s: state::Settings) {
        let options = self.options();
        e.paused = s.paused;
        e.stopped_by = s.stopped_by;
        e.limits = s.limits;
        e.org.category = s.category;
        e.org.tags = s.tags;
        e.org.force_start = s.force_start;
        if e.org.force_start {
            e.queued = false;
        }
        if let Some(t) = &e.torrent {
            t.upload_limit
                .set_rate(e.limits.upload_rate.unwrap_or(options.torrent_upload_rate));
            t.fetch.download_limit.set_rate(
                e.limits
                    .download_rate
                    .unwrap_or(options.torrent_download_rate),
            );
        }
        if e.paused {
            self.unserve(id, e);
        } else if e.status == Status::Ready {
            if !e.serving() && !e.org.force_start && options.queue.enabled {
                // Resumed under the queue: it waits for [`Service::apply_queue`] to give it a
                // slot rather than announcing once before being queued.
                e.queued = true;
            }
            self.serve(id, e);
        }
    }

    pub fn pause(&self, id: [u8; 20]) -> Result<(), ControlError> {
        self.change(id, |s| s.paused = true)
    }

    pub fn resume(&self, id: [u8; 20]) -> Result<(), ControlError> {
        self.change(id, |s| {
            s.paused = false;
            s.stopped_by = None;
        })
    }

    /// Queues a check of one torrent; it keeps seeding what it has until the check ends.
    pub fn recheck(&self, id: [u8; 20]) -> Result<(), ControlError> {
        let mut all = self.lock();
        let e = all.get_mut(&id).ok_or(ControlError::NotFound(hex(&id)))?;
        if let Status::Moving(m) = &mut e.status {
            // Checked where the data lands, once it has.
            m.recheck = true;
            return Ok(());
        }
        if e.status == Status::Checking {
            return Ok(());
        }
        e.status = Status::Checking;
        drop(all);
        let _ = self.inner.checks.send((id, CheckReason::Requested));
        Ok(())
    }

    /// Sets a torrent's limits (`None` = back to the global value).
    pub fn set_limits(&self, id: [u8; 20], limits: Limits) -> Result<(), ControlError> {
        self.change(id, |s| s.limits = limits)
    }

    /// Removes a torrent once its removal is durable in the state; with `delete_data`, also its
    /// files (only the files it names, and the directories they leave empty inside its
    /// directory), except those another torrent of the node names too (cross-seeding: the same
    /// file under two torrents), which are kept and listed. A file is the same file when its
    /// device and inode are (so a path through a symlinked directory, a link to it or a hard
    /// link counts too); every other torrent's files are looked at, paused ones and those of
    /// magnets whose metadata has arrived included.
    pub fn remove(&self, id: [u8; 20], delete_data: bool) -> Result<Removal, ControlError> {
        let changing = self.changes();
        if delete_data
            && let Some(e) = self.lock().get(&id)
            && matches!(e.status, Status::Moving(_))
        {
            return Err(ControlError::BadRequest(format!(
                "the data of {} is being moved: delete it once the move is done",
                e.meta.info.name
            )));
        }
        if !self.lock().contains_key(&id) {
            // A magnet waiting for its metadata: it leaves the state, then its fetch stops (its
            // sender dropped); it has no data yet.
            if !crate::engine::lock(&self.inner.pending).contains_key(&id) {
                return Err(ControlError::NotFound(hex(&id)));
            }
            self.inner
                .db
                .call(move |c| state::delete_magnet(c, &id))?
                .recv_result()?;
            let _all = self.lock();
            if let Some(p) = crate::engine::lock(&self.inner.pending).remove(&id) {
                tracing::info!(name = %p.name, info_hash = %hex(&id), "removed the magnet waiting for its metadata");
            }
            return Ok(Removal::default());
        }
        self.inner
            .db
            .call(move |c| state::delete(c, &id))?
            .recv_result()?;
        let (mut e, others) = {
            let mut all = self.lock();
            // The state lock kept it in the node meanwhile.
            let Some(e) = all.remove(&id) else {
                return Ok(Removal::default());
            };
            // Every other torrent's files, to keep what they name.
            let others: Vec<PathBuf> = if delete_data {
                all.values()
                    .flat_map(|o| {
                        o.dirs().flat_map(|d| {
                            o.meta
                                .info
                                .layout
                                .data_files()
                                .map(move |(_, f)| d.join(f.rel_path()))
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (e, others)
        };
        self.unserve(id, &mut e);
        if let Some(s) = &e.source {
            // A watched file that is still there must not come back on the next poll.
            self.remember_source(Path::new(s));
        }
        tracing::info!(torrent = %e.meta.info.name, delete_data, "removed");
        let mut removal = Removal::default();
        if delete_data {
            // The torrent object holds the files open; close them first.
            e.torrent = None;
            let named = file_ids(&others);
            for dir in e.dirs() {
                delete_files(&e.meta, dir, &named, &mut removal);
            }
            if !removal.kept.is_empty() {
                tracing::info!(torrent = %e.meta.info.name, files = removal.kept.len(), "kept files another torrent names");
            }
        }
        // Held until the files are gone: no torrent naming them is added meanwhile.
        drop(changing);
        self.apply_queue();
        Ok(removal)
    }

    fn view(&self, id: &[u8; 20], e: &Entry) -> TorrentView {
        let size = e.meta.info.layout.total_length;
        let uploaded = e.uploaded();
        let (state, error) = match &e.status {
            Status::Checking => ("checking", None),
            Status::Moving(_) => ("moving", None),
            Status::Error(m) => ("error", Some(m.clone())),
            Status::Ready if e.queued && !e.paused => ("queued", None),
            Status::Ready if !e.serving() => ("paused", None),
            Status::Ready if e.downloading && e.download_rate < 1.0 => ("stalled", None),
            Status::Ready if e.downloading => ("downloading", None),
            Status::Ready => ("seeding", None),
        };
        let left = match (&e.torrent, &e.status) {
            (Some(t), _) => t.left(),
            (None, Status::Moving(m)) => m.left,
            (None, _) => size,
        };
        TorrentView {
            info_hash: hex(id),
            name: e.meta.info.name.clone(),
            state: state.into(),
            error,
            stopped_by: e.stopped_by.clone(),
            data_dir: e.data_dir.display().to_string(),
            size,
            pieces: e.meta.info.layout.num_pieces,
            verified_pieces: match (&e.torrent, &e.status) {
                (Some(t), _) => t.pieces.verified.count(),
                (None, Status::Moving(m)) => m.verified,
                (None, _) => 0,
            },
            uploaded,
            ratio: if size == 0 {
                0.0
            } else {
                uploaded as f64 / size as f64
            },
            seeding_s: e.seeding_s(),
            peers: e
                .torrent
                .as_ref()
                .filter(|_| e.serving())
                .map_or(0, |t| t.peers.load(Ordering::Relaxed)),
            limits: e.limits,
            added_at: e.added_at,
            checks: e.checks,
            resumed: e.resumed,
            progress: if size == 0 {
                1.0
            } else {
                (size - left) as f64 / size as f64
            },
            downloaded: e.downloaded(),
            download_rate: e.download_rate,
            eta_s: (e.downloading && e.download_rate >= 1.0)
                .then(|| (left as f64 / e.download_rate).ceil() as u64),
            category: e.org.category.clone(),
            tags: e.org.tags.clone(),
            queue_position: 0,
            force_start: e.org.force_start,
            last_activity: e.org.last_activity.unwrap_or(e.added_at),
            completed_at: e.org.completed_at,
            downloaded_total: e.downloaded_total(),
            qbt: e.org.qbt.clone(),
        }
    }

    pub fn list(&self) -> Vec<TorrentView> {
        let all = self.lock();
        let ranks = self.queue_ranks(&all);
        let mut v: Vec<TorrentView> = all
            .iter()
            .map(|(id, e)| {
                let mut v = self.view(id, e);
                v.queue_position = ranks.get(id).copied().unwrap_or(0);
                v
            })
            .collect();
        for (id, p) in crate::engine::lock(&self.inner.pending).iter() {
            v.push(Self::pending_view(id, p));
        }
        v.sort_by(|a, b| (a.added_at, &a.info_hash).cmp(&(b.added_at, &b.info_hash)));
        v
    }

    pub fn get(&self, id: [u8; 20]) -> Result<TorrentView, ControlError> {
        let all = self.lock();
        if let Some(e) = all.get(&id) {
            let mut v = self.view(&id, e);
            v.queue_position = self.queue_ranks(&all).get(&id).copied().unwrap_or(0);
            return Ok(v);
        }
        let pending = crate::engine::lock(&self.inner.pending);
        let p = pending.get(&id).ok_or(ControlError::NotFound(hex(&id)))?;
        Ok(Self::pending_view(&id, p))
    }

    /// A torrent's opened torrent: its metainfo, live counters and tracker reports (for the
    /// qBittorrent Web API, [`crate::control::qbt`]). `None` for an unknown id or a magnet still waiting
    /// for its metadata.
    pub fn handle_of(&self, id: [u8; 20]) -> Option<Arc<Torrent>> {
        self.lock().get(&id).and_then(|e| e.torrent.clone())
    }

    /// The file layout of a torrent whose metainfo is known (also while it is being checked and
    /// has no torrent object).
    pub fn layout_of(&self, id: [u8; 20]) -> Option<crate::metainfo::FileLayout> {
        self.lock().get(&id).map(|e| e.meta.info.layout.clone())
    }

    /// Where API-added data must be (`torrents.data_dir`), if set.
    pub fn data_root(&self) -> Option<PathBuf> {
        self.options().data_root
    }

    /// What a torrent at its share limit undergoes (`torrents.limit_action`).
    pub fn limit_action(&self) -> crate::config::LimitAction {
        self.options().limit_action
    }

    /// The port peers connect to.
    pub fn peer_port(&self) -> u16 {
        self.inner.session.engine().local_addr().port()
    }

    /// The connected peers of one torrent (asks every worker; waits up to a second).
    pub fn peers(&self, id: [u8; 20]) -> Result<Vec<PeerInfo>, ControlError> {
        if !self.lock().contains_key(&id) {
            return Err(ControlError::NotFound(hex(&id)));
        }
        Ok(self
            .inner
            .session
            .engine()
            .peers(id, Duration::from_secs(1)))
    }

    pub fn stats(&self) -> ServiceStats {
        let c = &self.inner.counters;
        let all = self.lock();
        ServiceStats {
            torrents: all.len(),
            resumed: c.resumed.load(Ordering::Relaxed),
            checks_new: c.checks_new.load(Ordering::Relaxed),
            checks_changed: c.checks_changed.load(Ordering::Relaxed),
            checks_requested: c.checks_requested.load(Ordering::Relaxed),
            check_failures: c.check_failures.load(Ordering::Relaxed),
            uploaded: all.values().map(Entry::uploaded).sum(),
            dht: self.inner.session.dht().map(|d| d.stats().status()),
        }
    }

    /// Torrents by state, for `/metrics`.
    pub fn count_by_state(&self) -> Vec<(&'static str, i64)> {
        let all = self.lock();
        let mut counts = [0i64; 9];
        for e in all.values() {
            let i = match &e.status {
                Status::Checking => 0,
                Status::Moving(_) => 8,
                Status::Ready if e.queued && !e.paused => 7,
                Status::Ready if !e.serving() => 2,
                Status::Ready if e.downloading && e.download_rate < 1.0 => 5,
                Status::Ready if e.downloading => 4,
                Status::Ready => 1,
                Status::Error(_) => 3,
            };
            counts[i] += 1;
        }
        for p in crate::engine::lock(&self.inner.pending).values() {
            counts[if p.error.is_some() { 3 } else { 6 }] += 1;
        }
        [
            "checking",
            "seeding",
            "paused",
            "error",
            "downloading",
            "stalled",
            "metadata",
            "queued",
            "moving",
        ]
        .into_iter()
        .zip(counts)
        .collect()
    }

    /// Adds the .torrent files of the config that are new (SIGHUP and the watch directory).
    pub fn add_config_torrents(&self, list: &[(PathBuf, PathBuf)]) -> usize {
        let (added, failed) = self.add_files(list);
        for (path, e) in failed {
            self.inner
                .counters
                .watch_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!("skipping {}: {e}", path.display());
        }
        added
    }

    /// The new .torrent files in the watch directory (those not seen before).
    fn scan_watch_dir(&self) -> Vec<(PathBuf, PathBuf)> {
        let options = self.options();
        let (Some(dir), Some(data)) = (options.watch_dir, options.data_root) else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let seen = self.inner.sources.lock().unwrap_or_else(|e| e.into_inner());
        let failed = self.inner.failed.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<(PathBuf, PathBuf)> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "torrent") && !seen.contains(p))
            .filter(|p| failed.get(p).is_none_or(|then| *then != file_stamp(p)))
            .map(|p| (p, data.clone()))
            .collect();
        found.sort();
        found
    }

    /// Stops or removes torrents that reached a limit. Returns how many.
    pub fn enforce_limits(&self) -> usize {
        let options = self.options();
        let now = now_unix();
        let reached: Vec<([u8; 20], &'static str)> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.serving() && !e.downloading)
            .filter_map(|(id, e)| {
                limit_reached(
                    &e.limits,
                    &options.global_limits,
                    e.uploaded(),
                    e.meta.info.layout.total_length,
                    e.seeding_s(),
                    e.inactive_s(now),
                )
                .map(|which| (*id, which))
            })
            .collect();
        for (id, which) in &reached {
            self.inner
                .counters
                .limits_reached
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(info_hash = %hex(id), limit = which, action = ?options.limit_action, "limit reached");
            let done = match options.limit_action {
                LimitAction::Stop => self.change(*id, |s| {
                    s.paused = true;
                    s.stopped_by = Some((*which).to_string());
                }),
                LimitAction::Remove => self.remove(*id, false).map(|_| ()),
                LimitAction::RemoveData => self.remove(*id, true).map(|removal| {
                    for f in removal.not_deleted {
                        tracing::warn!("{which} limit of {}: {f}", hex(id));
                    }
                }),
            };
            if let Err(e) = done {
                tracing::error!("applying the {which} limit to {}: {e}", hex(id));
            }
        }
        reached.len()
    }

    /// Once a second for every torrent being downloaded: its rate, its error, and when pieces
    /// were verified since the last save (or it completed), a durable save of its bitfield:
    /// the bitfield is read first, then the files written since the last save are
    /// `fdatasync`ed, and only the bits read before the sync are saved, so every bit in the
    /// state stands for data on the device (a power loss, unlike a `kill -9`, loses what is
    /// only in the page cache). The syncs run here, on a blocking thread of the control side
    /// and outside the torrents' lock, never on a worker. Completion (files created, moved out
    /// of the incomplete directory, seeding time from now, the state saved) follows its sync.
    fn download_tick(&self) {
        let now = Instant::now();
        let mut records = Vec::new();
        // Torrents with pieces verified since their last save, and their bitfield then.
        let mut to_sync = Vec::new();
        {
            let mut all = self.lock();
            for (id, e) in all.iter_mut() {
                let Some(t) = e.torrent.clone().filter(|_| e.downloading) else {
                    continue;
                };
                let got = t.downloaded();
                if let Some((at, before)) = e.rate_sample {
                    let dt = now.duration_since(at).as_secs_f64().max(1e-3);
                    let r = got.saturating_sub(before) as f64 / dt;
                    e.download_rate = (e.download_rate + r) / 2.0;
                }
                e.rate_sample = Some((now, got));
                if let Some(err) = t.error() {
                    tracing::error!(torrent = %e.meta.info.name, "download stopped: {err}");
                    e.status = Status::Error(err);
                    e.download_rate = 0.0;
                    self.unserve(*id, e);
                    e.downloading = false;
                    // Saved with the bitfield of its last durable save.
                    records.push(DataSave::of(*id, e));
                    continue;
                }
                if t.pieces.verified.count() != e.saved_pieces || t.wanted_complete() {
                    // Acquire loads: each bit read comes with its file's written mark.
                    let bits = t.verified_bitfield();
                    to_sync.push((*id, t, bits));
                }
            }
        }
        let mut synced = Vec::with_capacity(to_sync.len());
        for (id, t, bits) in to_sync {
            let started = Instant::now();
            let result = t.files.sync_written();
            let took = started.elapsed();
            let c = &self.inner.counters;
            c.resume_syncs.fetch_add(1, Ordering::Relaxed);
            c.resume_sync_us
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
            match result {
                Ok(stats) => {
                    tracing::debug!(
                        torrent = %t.meta.info.name,
                        files = stats.files,
                        ms = took.as_secs_f64() * 1e3,
                        "data synced before saving the resume bitfield"
                    );
                    synced.push((id, t, bits));
                }
                Err(err) => {
                    c.sync_errors.fetch_add(1, Ordering::Relaxed);
                    let file = t
                        .meta
                        .info
                        .layout
                        .files
                        .get(err.file)
                        .map_or_else(String::new, |f| f.rel_path().display().to_string());
                    // The next tick shows the error and saves the state without these bits.
                    t.fail(format!("syncing {file} to disk: {}", err.error));
                }
            }
        }
        let mut saves = Vec::new();
        let mut moves = Vec::new();
        {
            let mut all = self.lock();
            for (id, t, bits) in synced {
                // Removed, paused into another torrent object, rechecked or failed meanwhile:
                // those bits are no longer this entry's to save.
                let Some(e) = all.get_mut(&id).filter(|e| {
                    e.downloading && e.torrent.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, &t))
                }) else {
                    continue;
                };
                let pieces = e.meta.info.layout.num_pieces;
                let done = crate::pieces::count_wire(&bits, pieces);
                // finished: every wanted piece (all of them, without skipped files), whose
                // bits are these (read after the count said none was missing)
                if done == pieces || t.wanted_complete() {
                    // skipped files are not created (the bytes of pieces they share with
                    // wanted files are written into them, though: docs/qbittorrent-api.md)
                    let skip = file_ops::skipped_files(&e.meta.info.layout, &e.org.qbt.file_prio);
                    if let Err(err) = t.files.create_missing_except(|i| skip.contains(&i)) {
                        e.status = Status::Error(format!("creating files: {err}"));
                    }
                    tracing::info!(torrent = %e.meta.info.name, "download complete: seeding");
                    e.downloading = false;
                    e.download_rate = 0.0;
                    e.seeding_since = e.seeding_since.map(|_| now);
                    e.org.completed_at.get_or_insert(now_unix());
                    e.saved_pieces = done;
                    e.verified = Some(bits);
                    e.files = state::stamp_files(&e.meta.info.layout, &e.data_dir);
                    // Out of the incomplete directory: renamed at once on one file system (the
                    // open files stay valid, its peers stay), else copied on the mover thread,
                    // for a copy must not hold the torrent list (every API call and this tick).
                    let mut ends_move = false;
                    if let Some(from) = e.download_dir.clone()
                        && e.status == Status::Ready
                    {
                        let tops = e.tops_at(&from);
                        // Noted (durably, under the lock, once per completed
                        // download) before anything is renamed, so a crash before the save
                        // below finds the data where it went (`Service::recover_move`).
                        let noted = tops.is_empty() || self.note_move(id, &e.data_dir);
                        ends_move = noted && !tops.is_empty();
                        let moved = if noted {
                            move_data(&tops, &from, &e.data_dir, Across::Stop)
                        } else {
                            Err("its move could not be noted in the state".into())
                        };
                        match moved {
                            Ok(Moved::Renamed | Moved::Copied) => {
                                e.download_dir = None;
                                tracing::info!(torrent = %e.meta.info.name, to = %e.data_dir.display(), "moved the completed download");
                            }
                            Ok(Moved::Apart) => {
                                // The mover notes it again and ends it.
                                ends_move = false;
                                let to = e.data_dir.clone();
                                moves.push(self.start_move(id, e, &to, true));
                            }
                            Err(err) => {
                                tracing::error!(torrent = %e.meta.info.name, "moving the completed download (it seeds from the incomplete directory): {err}");
                            }
                        }
                        e.files = state::stamp_files(&e.meta.info.layout, &e.data_dir);
                    }
                    records.push(DataSave {
                        ends_move,
                        ..DataSave::of(id, e)
                    });
                } else if done != e.saved_pieces {
                    e.saved_pieces = done;
                    e.verified = Some(bits.clone());
                    saves.push((id, bits));
                }
            }
        }
        self.spawn_moves(moves);
        if saves.is_empty() && records.is_empty() {
            return;
        }
        let sent = self.inner.db.try_call(move |c| {
            for (id, bits) in &saves {
                state::save_verified(c, id, bits)?;
            }
            for r in &records {
                r.run(c)?;
            }
            Ok(())
        });
        if let Err(e) = sent {
            self.inner
                .counters
                .db_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!("saving download progress: {e}");
        }
    }

    fn progress(&self) -> Vec<Progress> {
        self.lock()
            .iter()
            .map(|(id, e)| Progress {
                info_hash: *id,
                uploaded: e.uploaded(),
                seeding_s: e.seeding_s(),
                last_activity: e.org.last_activity,
                completed_at: e.org.completed_at,
                downloaded: e.downloaded_total(),
            })
            .collect()
    }

    /// Saves upload totals and seeding time without waiting (a full queue skips this round).
    fn save_progress_async(&self) {
        let progress = self.progress();
        match self
            .inner
            .db
            .try_call(move |c| state::save_progress(c, &progress))
        {
            Ok(_) => {}
            Err(DbError::QueueFull) => {
                self.inner
                    .counters
                    .saves_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.inner
                    .counters
                    .db_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!("saving progress: {e}");
            }
        }
    }

    /// Final save at shutdown; waits until it is durable. Call after the engine has stopped, so
    /// the totals are final.
    pub fn save_all(&self) -> Result<(), ControlError> {
        {
            let mut all = self.lock();
            for e in all.values_mut() {
                if let Some(since) = e.seeding_since.take() {
                    e.seeding_base += since.elapsed().as_secs();
                }
            }
        }
        let progress = self.progress();
        self.inner
            .db
            .call(move |c| state::save_progress(c, &progress))?
            .recv_result()?;
        Ok(())
    }

    /// The service's periodic work on the control thread: limits every second, the watch
    /// directory and progress saves at their intervals. Blocking work goes to the blocking pool.
    async fn tick_loop(self) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_save = Instant::now();
        let mut last_watch = Instant::now();
        loop {
            every.tick().await;
            let options = self.options();
            let s = self.clone();
            // Limits may write to the state and wait for it: off the control thread. Activity
            // is noted first: a torrent that uploads and reaches its ratio within one second
            // is stopped by the limits, and its counters are gone by the next activity tick
            // (its last activity would stay at when it was added).
            let _ = tokio::task::spawn_blocking(move || {
                s.activity_tick();
                s.enforce_limits()
            })
            .await;
            let s = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                s.download_tick();
                s.apply_queue();
            })
            .await;
            if last_save.elapsed() >= options.save_interval {
                last_save = Instant::now();
                self.save_progress_async();
            }
            if !options.watch_interval.is_zero() && last_watch.elapsed() >= options.watch_interval {
                last_watch = Instant::now();
                let s = self.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let fresh = s.scan_watch_dir();
                    if !fresh.is_empty() {
                        let n = s.add_config_torrents(&fresh);
                        tracing::info!("watch directory: {n} torrent(s) added");
                    }
                })
                .await;
            }
        }
    }
}

/// What a check or a download found about a torrent's data, to save
/// ([`state::save_data`]): never what a change sets, and never a torrent removed meanwhile.
struct DataSave {
    id: [u8; 20],
    verified: Option<Vec<u8>>,
    files: Vec<Option<FileStamp>>,
    download_dir: Option<String>,
    /// A move noted in the state ([`state::save_moving_to`]) is over with this save.
    ends_move: bool,
}

impl DataSave {
    fn of(id: [u8; 20], e: &Entry) -> DataSave {
        DataSave {
            id,
            verified: e.verified.clone(),
            files: e.files.clone(),
            download_dir: e.download_dir.as_ref().map(|d| d.display().to_string()),
            ends_move: false,
        }
    }

    fn run(&self, c: &rusqlite::Connection) -> rusqlite::Result<()> {
        state::save_data(
            c,
            &self.id,
            self.verified.as_deref(),
            &self.files,
            self.download_dir.as_deref(),
        )?;
        if self.ends_move {
            state::end_move(c, &self.id)?;
        }
        Ok(())
    }
}

/// The first component of each of a torrent's files' paths: what moves when its data moves.
fn tops(meta: &Metainfo) -> BTreeSet<String> {
    meta.info
        .layout
        .data_files()
        .filter_map(|(_, f)| f.path.first().cloned())
        .collect()
}

/// Those of [`tops`] present in `dir`.
fn tops_at(meta: &Metainfo, dir: &Path) -> BTreeSet<String> {
    let mut t = tops(meta);
    t.retain(|t| dir.join(t).symlink_metadata().is_ok());
    t
}

/// What [`move_data`] does with files on another file system than their target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Across {
    /// Copies them (under a temporary name, synced), then removes the sources.
    Copy,
    /// Moves nothing, and says so ([`Moved::Apart`]): the caller copies elsewhere.
    Stop,
}

/// What [`move_data`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moved {
    /// Every item renamed (open files stay valid).
    Renamed,
    /// At least one item copied (open files are the removed copies).
    Copied,
    /// Nothing moved: the target is on another file system ([`Across::Stop`]).
    Apart,
}

/// Moves a torrent's top-level files and directories `tops` from `from` to `to` (created): a
/// rename each, or across file systems what `across` says. A name that exists at `to` already
/// stops the move there; a move that fails part way (or stops at another file system) puts back
/// what it had moved, so the torrent is whole at `from` again, and never removes a source
/// before its copy is complete and durable.
fn move_data(
    tops: &BTreeSet<String>,
    from: &Path,
    to: &Path,
    across: Across,
) -> Result<Moved, String> {
    std::fs::create_dir_all(to).map_err(|err| format!("creating {}: {err}", to.display()))?;
    let mut done: Vec<&String> = Vec::new();
    let mut moved = Moved::Renamed;
    for top in tops {
        let stop = match move_one(&from.join(top), &to.join(top), across) {
            Ok(Moved::Apart) => Ok(Moved::Apart),
            Ok(m) => {
                if m == Moved::Copied {
                    moved = Moved::Copied;
                }
                done.push(top);
                continue;
            }
            Err(why) => Err(why),
        };
        for t in done.into_iter().rev() {
            if let Err(back) = move_one(&to.join(t), &from.join(t), Across::Copy) {
                tracing::error!("putting back {} after a failed move: {back}", t);
            }
        }
        return stop;
    }
    Ok(moved)
}

/// Moves one file or directory tree: a rename, or across file systems (with [`Across::Copy`])
/// a copy under a temporary name beside `dst` (files and directories synced), a rename into
/// place, and only then the removal of `src`.
fn move_one(src: &Path, dst: &Path, across: Across) -> Result<Moved, String> {
    if dst.symlink_metadata().is_ok() {
        return Err(format!("moving the data: {} exists already", dst.display()));
    }
    match std::fs::rename(src, dst) {
        Ok(()) => Ok(Moved::Renamed),
        Err(err) if err.raw_os_error() == Some(libc::EXDEV) && across == Across::Stop => {
            Ok(Moved::Apart)
        }
        Err(err) if err.raw_os_error() == Some(libc::EXDEV) => {
            let name = dst
                .file_name()
                .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
            let tmp = dst.with_file_name(format!(".{name}.ringseed-moving"));
            let copy = || -> std::io::Result<()> {
                if tmp.symlink_metadata().is_ok() {
                    // Ours, from a move that was cut short (a restart): its source is whole.
                    remove_tree(&tmp)?;
                }
                copy_tree(src, &tmp)?;
                std::fs::rename(&tmp, dst)?;
                sync_dir(dst.parent().unwrap_or(Path::new(".")))?;
                remove_tree(src)
            };
            copy().map_err(|err| {
                let _ = remove_tree(&tmp);
                format!("copying {} to {}: {err}", src.display(), dst.display())
            })?;
            Ok(Moved::Copied)
        }
        Err(err) => Err(format!(
            "moving {} to {}: {err}",
            src.display(),
            dst.display()
        )),
    }
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Copies a file or a directory tree, each file and directory synced (no symlinks followed:
/// they are refused).
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    let m = std::fs::symlink_metadata(src)?;
    if m.is_dir() {
        std::fs::create_dir_all(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        sync_dir(dst)
    } else if m.is_file() {
        std::fs::copy(src, dst)?;
        std::fs::File::open(dst)?.sync_all()
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is neither a file nor a directory", src.display()),
        ))
    }
}

fn remove_tree(p: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(p)?.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
}

/// A file's size and mtime, to notice that it changed.
fn file_stamp(p: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Reads a .torrent file of at most [`MAX_TORRENT_FILE`] bytes.
fn read_bounded(path: &Path) -> Result<Vec<u8>, ControlError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |e: std::io::Error| ControlError::BadRequest(format!("{}: {e}", path.display()));
    // Non-blocking open and a regular file only: a FIFO or a device named by a client must not
    // hold one of the API's blocking threads forever.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(bad)?;
    let meta = f.metadata().map_err(bad)?;
    if !meta.is_file() {
        return Err(ControlError::BadRequest(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    // Refused on its size before anything is read, and read into a buffer of that size (the
    // bound still holds if the file grows meanwhile).
    let too_large = || {
        ControlError::BadRequest(format!(
            "{}: larger than {MAX_TORRENT_FILE} bytes",
            path.display()
        ))
    };
    if meta.len() > MAX_TORRENT_FILE as u64 {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    f.take(MAX_TORRENT_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(bad)?;
    if bytes.len() > MAX_TORRENT_FILE {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Device and inode of each of `paths` that exists, both of the path itself and of what a
/// symlink there leads to.
fn file_ids(paths: &[PathBuf]) -> HashSet<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut ids = HashSet::new();
    for p in paths {
        for m in [std::fs::symlink_metadata(p), std::fs::metadata(p)]
            .into_iter()
            .flatten()
        {
            ids.insert((m.dev(), m.ino()));
        }
    }
    ids
}

/// Deletes the files a torrent names under `dir`, then the directories that leaves empty
/// (never `dir` itself), except the files whose device and inode (of the name or of what a link
/// there leads to) are in `named`: another torrent's files, listed in `out.kept`. Paths come
/// from a validated layout, so none names a way out of `dir`; but someone who can write inside
/// `dir` could have put a symlink where the torrent has a directory, so every directory is
/// opened beneath `dir` one component at a time without following links (`O_NOFOLLOW`) and each
/// file is unlinked relative to its directory. A file reached only through a link is left alone
/// (in `out.not_deleted`): a deletion never leaves `dir`. A file that is itself a link loses the
/// link, never its target. The torrent is already gone from the node: whatever fails, the rest
/// is deleted and the failures are listed.
fn delete_files(meta: &Metainfo, dir: &Path, named: &HashSet<(u64, u64)>, out: &mut Removal) {
    use nix::errno::Errno;
    use nix::fcntl::AtFlags;
    use nix::unistd::{UnlinkatFlags, unlinkat};
    let root = match nix::fcntl::open(
        dir,
        dir_flags() & !nix::fcntl::OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Nothing left to delete.
        Err(Errno::ENOENT) => return,
        Err(e) => {
            out.not_deleted.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    let mut parents = std::collections::BTreeSet::new();
    for f in &meta.info.layout.files {
        if f.pad {
            continue;
        }
        let rel = f.rel_path();
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let path = dir.join(&rel);
        let unlinked = dir_beneath(&root, parent).and_then(|d| {
            let shared = [AtFlags::AT_SYMLINK_NOFOLLOW, AtFlags::empty()]
                .into_iter()
                .filter_map(|flags| nix::sys::stat::fstatat(&d, name, flags).ok())
                .any(|st| named.contains(&(st.st_dev, st.st_ino)));
            if shared {
                out.kept.push(path.clone());
                return Ok(());
            }
            unlinkat(&d, name, UnlinkatFlags::NoRemoveDir)
        });
        match unlinked {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                tracing::warn!(path = %path.display(), "not deleted: a directory on its path is a symlink or not a directory");
                out.not_deleted.push(format!(
                    "{}: a directory on its path is a symlink or not a directory",
                    path.display()
                ));
            }
            Err(e) => out.not_deleted.push(format!("{}: {e}", path.display())),
        }
        let mut up = Some(parent);
        while let Some(d) = up.filter(|d| !d.as_os_str().is_empty()) {
            parents.insert((std::cmp::Reverse(d.components().count()), d.to_path_buf()));
            up = d.parent();
        }
    }
    // Deepest first; a directory that still holds something (or is a link) stays.
    for (_, d) in parents {
        if let (Some(parent), Some(name)) = (d.parent(), d.file_name())
            && let Ok(pfd) = dir_beneath(&root, parent)
        {
            let _ = unlinkat(&pfd, name, UnlinkatFlags::RemoveDir);
        }
    }
}

fn dir_flags() -> nix::fcntl::OFlag {
    use nix::fcntl::OFlag;
    OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY
}

/// The directory `rel` beneath `root`, opened one component at a time without following links
/// (a link gives `ELOOP`; a file where a directory belongs, `ENOTDIR`).
fn dir_beneath(root: &std::os::fd::OwnedFd, rel: &Path) -> nix::Result<std::os::fd::OwnedFd> {
    let none = nix::sys::stat::Mode::empty();
    let mut cur = nix::fcntl::openat(root, ".", dir_flags(), none)?;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(nix::errno::Errno::EINVAL);
        };
        cur = nix::fcntl::openat(&cur, name, dir_flags(), none)?;
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of two top-level items, `a/x.bin` and `b.bin`, under `dir`.
    fn two_tops(dir: &Path) -> BTreeSet<String> {
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/x.bin"), b"xxxx").unwrap();
        std::fs::write(dir.join("b.bin"), b"bbbb").unwrap();
        ["a", "b.bin"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_move_that_fails_part_way_puts_back_what_it_moved() {
        // On one file system (renames) and across two (copies: /dev/shm to the disk).
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let disk = tempfile::tempdir().unwrap();
        for (from, to) in [
            (disk.path().join("from"), disk.path().join("to")),
            (shm.path().join("from"), disk.path().join("across")),
        ] {
            let tops = two_tops(&from);
            // `b.bin` is in the way at the target: `a` moves first, then comes back.
            std::fs::create_dir_all(&to).unwrap();
            std::fs::write(to.join("b.bin"), b"someone else's").unwrap();
            let err = move_data(&tops, &from, &to, Across::Copy).unwrap_err();
            assert!(err.contains("exists already"), "{err}");
            assert_eq!(std::fs::read(from.join("a/x.bin")).unwrap(), b"xxxx");
            assert_eq!(std::fs::read(from.join("b.bin")).unwrap(), b"bbbb");
            assert!(!to.join("a").exists(), "{}", to.display());
            assert_eq!(std::fs::read(to.join("b.bin")).unwrap(), b"someone else's");
            // With the way clear it moves, and nothing is left behind (no temporary names).
            std::fs::remove_file(to.join("b.bin")).unwrap();
            let moved = move_data(&tops, &from, &to, Across::Copy).unwrap();
            assert_eq!(moved == Moved::Copied, from.starts_with(shm.path()));
            assert_eq!(std::fs::read(to.join("a/x.bin")).unwrap(), b"xxxx");
            assert_eq!(std::fs::read(to.join("b.bin")).unwrap(), b"bbbb");
            let mut left: Vec<_> = std::fs::read_dir(&to)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert_eq!(left, ["a", "b.bin"]);
            assert_eq!(std::fs::read_dir(&from).unwrap().count(), 0);
        }
    }

    #[test]
    fn stopping_at_another_file_system_renames_all_or_nothing() {
        let disk = tempfile::tempdir().unwrap();
        let (from, to) = (disk.path().join("incomplete"), disk.path().join("data"));
        let tops = two_tops(&from);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(to.join("b.bin"), b"in the way").unwrap();
        assert!(move_data(&tops, &from, &to, Across::Stop).is_err());
        assert!(from.join("a/x.bin").exists() && from.join("b.bin").exists());
        assert!(!to.join("a").exists());
        std::fs::remove_file(to.join("b.bin")).unwrap();
        assert_eq!(
            move_data(&tops, &from, &to, Across::Stop),
            Ok(Moved::Renamed)
        );
        assert!(to.join("a/x.bin").exists() && to.join("b.bin").exists());
        // Across file systems nothing is renamed: the caller copies on the mover thread.
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let tops = two_tops(&shm.path().join("incomplete"));
        let target = disk.path().join("data2");
        assert_eq!(
            move_data(&tops, &shm.path().join("incomplete"), &target, Across::Stop),
            Ok(Moved::Apart)
        );
        assert!(shm.path().join("incomplete/a/x.bin").exists());
        assert!(!target.join("a").exists());
    }

    #[test]
    fn limits_own_before_global() {
        let none = Limits::default();
        let global = Limits {
            ratio: Some(2.0),
            seed_time_s: Some(3600),
            inactive_seed_time_s: Some(600),
            ..Limits::default()
        };
        assert_eq!(limit_reached(&none, &none, 10, 10, 10, 10), None);
        assert_eq!(limit_reached(&none, &global, 19, 10, 0, 0), None);
        assert_eq!(limit_reached(&none, &global, 20, 10, 0, 0), Some("ratio"));
        assert_eq!(
            limit_reached(&none, &global, 0, 10, 3600, 0),
            Some("seed_time")
        );
        assert_eq!(
            limit_reached(&none, &global, 0, 10, 599, 600),
            Some("inactive_seed_time")
        );
        let own = Limits {
            ratio: Some(5.0),
            seed_time_s: Some(0),
            inactive_seed_time_s: Some(0),
            ..Limits::default()
        };
        // The torrent's own ratio wins; its seed time 0 means none, not "at once".
        assert_eq!(limit_reached(&own, &global, 20, 10, 0, 0), None);
        assert_eq!(limit_reached(&own, &global, 50, 10, 0, 0), Some("ratio"));
        assert_eq!(limit_reached(&own, &global, 0, 10, 9999, 9999), None);
        // An empty torrent never reaches a ratio.
        assert_eq!(limit_reached(&none, &global, 0, 0, 0, 0), None);
    }

    #[test]
    fn save_paths_stay_in_the_data_dir() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("data");
        std::fs::create_dir_all(root.join("a")).unwrap();
        let r = root.to_str().unwrap();
        assert_eq!(confine_save_path(&root, "a").unwrap(), root.join("a"));
        assert_eq!(confine_save_path(&root, r).unwrap(), root);
        assert_eq!(
            confine_save_path(&root, "new/dir").unwrap(),
            root.join("new/dir")
        );
        for bad in ["../x", "a/../../x", "/etc", &format!("{r}/../x")] {
            assert!(
                matches!(
                    confine_save_path(&root, bad),
                    Err(ControlError::OutsideDataDir { .. })
                ),
                "{bad}"
            );
        }
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        assert!(matches!(
            confine_save_path(&root, "escape/etc"),
            Err(ControlError::OutsideDataDir { .. })
        ));
        assert!(confine_save_path(&root, "").is_err());
    }

    /// A file another torrent names (by the same path, through a symlinked directory, or
    /// through a link to it) is kept and listed; the rest goes.
    #[test]
    fn delete_data_keeps_what_another_torrent_names() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let t = data.join("t");
        std::fs::create_dir_all(&t).unwrap();
        for name in ["a.bin", "b.bin", "c.bin", "d.bin"] {
            std::fs::write(t.join(name), vec![1u8; 3000]).unwrap();
        }
        let (_, meta) = crate::create::create(
            &t,
            &crate::create::CreateOptions::default(),
            &crate::verify::Progress::default(),
        )
        .unwrap();
        // Another torrent's view: a.bin by its own path, b.bin through a directory link, c.bin
        // through a file link; d.bin it does not name.
        std::os::unix::fs::symlink(&t, tmp.path().join("alias")).unwrap();
        std::os::unix::fs::symlink(t.join("c.bin"), tmp.path().join("c-link")).unwrap();
        let named = file_ids(&[
            t.join("a.bin"),
            tmp.path().join("alias/b.bin"),
            tmp.path().join("c-link"),
            tmp.path().join("absent"),
        ]);
        let mut out = Removal::default();
        delete_files(&meta, &data, &named, &mut out);
        let mut kept = out.kept.clone();
        kept.sort();
        assert_eq!(
            kept,
            vec![t.join("a.bin"), t.join("b.bin"), t.join("c.bin")]
        );
        assert!(out.not_deleted.is_empty(), "{out:?}");
        assert!(!t.join("d.bin").exists());
        for name in ["a.bin", "b.bin", "c.bin"] {
            assert_eq!(std::fs::read(t.join(name)).unwrap().len(), 3000);
        }
    }

    #[test]
    fn info_hashes_parse_strictly() {
        assert_eq!(parse_info_hash(&"ab".repeat(20)).unwrap(), [0xab; 20]);
        assert!(parse_info_hash("ab").is_err());
        assert!(parse_info_hash(&"zz".repeat(20)).is_err());
        assert!(parse_info_hash(&"é".repeat(20)).is_err());
    }

    /// A symlink planted where the torrent has a directory must not lead the deletion out of
    /// the data directory; the torrent's other files still go, and a file that is itself a link
    /// loses only the link.
    #[test]
    fn delete_data_never_follows_a_symlinked_directory_out() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let t = data.join("t");
        std::fs::create_dir_all(t.join("sub")).unwrap();
        std::fs::write(t.join("a.bin"), vec![1u8; 3000]).unwrap();
        std::fs::write(t.join("sub/b.bin"), vec![2u8; 3000]).unwrap();
        std::fs::write(t.join("c.bin"), vec![3u8; 3000]).unwrap();
        let (_, meta) = crate::create::create(
            &t,
            &crate::create::CreateOptions::default(),
            &crate::verify::Progress::default(),
        )
        .unwrap();
        // Someone with write access to the data directory swaps sub/ for a link to a directory
        // outside, holding a file of the same name, and c.bin for a link to another one.
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("b.bin"), b"keep me").unwrap();
        std::fs::write(outside.join("c-target"), b"keep me too").unwrap();
        std::fs::remove_dir_all(t.join("sub")).unwrap();
        std::os::unix::fs::symlink(&outside, t.join("sub")).unwrap();
        std::fs::remove_file(t.join("c.bin")).unwrap();
        std::os::unix::fs::symlink(outside.join("c-target"), t.join("c.bin")).unwrap();
        let none = HashSet::new();
        let mut out = Removal::default();
        delete_files(&meta, &data, &none, &mut out);
        assert!(out.kept.is_empty());
        assert_eq!(out.not_deleted.len(), 1, "{out:?}");
        assert!(out.not_deleted[0].contains("sub/b.bin"), "{out:?}");
        // Deleting again, or from a data directory that is gone, is no error.
        let mut again = Removal::default();
        delete_files(&meta, &data, &none, &mut again);
        delete_files(&meta, &tmp.path().join("gone"), &none, &mut again);
        assert_eq!(
            again.not_deleted.len(),
            1,
            "only sub/b.bin again: {again:?}"
        );
        assert!(!t.join("a.bin").exists());
        assert!(
            std::fs::symlink_metadata(t.join("c.bin")).is_err(),
            "the link is gone"
        );
        assert_eq!(std::fs::read(outside.join("b.bin")).unwrap(), b"keep me");
        assert_eq!(
            std::fs::read(outside.join("c-target")).unwrap(),
            b"keep me too"
        );
        // sub (a link) stays, so t is not empty and stays too; nothing outside was touched.
        assert!(
            std::fs::symlink_metadata(t.join("sub"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 2);
    }
}
