//! `ringseed download`: fetch one torrent (a .torrent file or a magnet link) into a directory
//! with the whole engine (workers, trackers, peer exchange), report progress, and then exit or
//! keep seeding.
//!
//! Existing data in the directory is hashed first and kept where it verifies, so an interrupted
//! `download` run again continues where it stopped.

pub mod magnet;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use nix::sys::signal::Signal;

use crate::engine::torrent::Start;
use crate::engine::{Settings, Torrent};
use crate::metainfo::Metainfo;
use crate::session::{Session, SessionOptions};
use crate::verify::HashOptions;

/// What to download, where, and what then.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// A .torrent file or a magnet URI.
    pub source: String,
    pub data: PathBuf,
    /// Peers to dial besides those trackers and peer exchange name.
    pub peers: Vec<SocketAddr>,
    /// Keep seeding after completion (until a signal).
    pub seed: bool,
    /// Give up when no piece arrived for this long (zero: never).
    pub stall_timeout: Duration,
    pub hash: HashOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    Source(String),
    /// The .torrent file could not be read or parsed (the message names it and says why).
    #[error(transparent)]
    Load(#[from] crate::metainfo::LoadError),
    #[error("opening the data in {dir}: {source}")]
    Open {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error("{0}")]
    Failed(String),
    #[error("stalled: no piece arrived for {secs} s ({done} of {total} pieces, {peers} peers)")]
    Stalled {
        secs: u64,
        done: u32,
        total: u32,
        peers: u32,
    },
    #[error("stopped by {0} before the download finished ({1} of {2} pieces)")]
    Interrupted(Signal, u32, u32),
}

/// Where a download stands, as the progress display and `--json` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    pub name: String,
    /// `metadata`, `checking`, `downloading`, `stalled`, `seeding` or `error`.
    pub state: &'static str,
    pub pieces_done: u32,
    pub pieces: u32,
    /// Bytes of verified pieces, and of the whole torrent.
    pub bytes_done: u64,
    pub size: u64,
    /// Piece payload received from peers (duplicates and bad pieces included).
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes per second over the last seconds.
    pub rate: f64,
    pub peers: u32,
    pub eta_s: Option<u64>,
    pub elapsed_s: f64,
    pub hash_failures: u64,
    pub banned: usize,
}

impl Progress {
    /// Before the metadata of a magnet is known.
    fn metadata(source: &str) -> Progress {
        Progress {
            name: source.chars().take(80).collect(),
            state: "metadata",
            pieces_done: 0,
            pieces: 0,
            bytes_done: 0,
            size: 0,
            downloaded: 0,
            uploaded: 0,
            rate: 0.0,
            peers: 0,
            eta_s: None,
            elapsed_s: 0.0,
            hash_failures: 0,
            banned: 0,
        }
    }
}

/// How a download ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finished {
    pub progress: Progress,
    /// The engine's counters at the end.
    pub stats: Vec<crate::engine::StatsSnapshot>,
}

/// Reads a .torrent source.
fn load(opts: &DownloadOptions) -> Result<Metainfo, DownloadError> {
    Ok(Metainfo::load(std::path::Path::new(&opts.source))?)
}

/// A magnet's torrent: from the copy kept in `DATA/.ringseed/` by an earlier run, or fetched
/// from peers (and then kept there).
fn from_magnet(opts: &DownloadOptions, session: &Session) -> Result<Metainfo, DownloadError> {
    let m = crate::metainfo::Magnet::parse(&opts.source)
        .map_err(|e| DownloadError::Source(format!("magnet link: {e}")))?;
    let id = m.info_hash.wire_id();
    let kept = opts
        .data
        .join(".ringseed")
        .join(format!("{}.torrent", crate::metainfo::hex(&id)));
    if let Ok(meta) = Metainfo::load(&kept)
        && meta.info.hash.wire_id() == id
    {
        return Ok(meta);
    }
    let engine = session.engine();
    let limit = if opts.stall_timeout.is_zero() {
        Duration::from_secs(24 * 3600)
    } else {
        opts.stall_timeout
    };
    let r = magnet::resolve_with_dht(
        &m,
        &opts.peers,
        crate::magnet_fetch::FetchOptions::for_engine(engine),
        limit,
        std::future::pending(),
        session.dht().cloned(),
    )
    .map_err(DownloadError::Failed)?;
    tracing::info!(from = %r.from, "metadata fetched");
    let saved = std::fs::create_dir_all(kept.parent().unwrap_or(&opts.data))
        .and_then(|()| std::fs::write(&kept, &r.torrent));
    if let Err(e) = saved {
        tracing::warn!("keeping the metadata in {}: {e}", kept.display());
    }
    Ok(r.meta)
}

/// Opens a download's data: hashes what is already there (a run that was interrupted), or
/// starts empty when none of its files exists.
pub fn open(
    meta: Metainfo,
    data: &std::path::Path,
    hash: HashOptions,
    preallocate: bool,
) -> Result<Torrent, DownloadError> {
    let any = meta
        .info
        .layout
        .data_files()
        .any(|(_, f)| data.join(f.rel_path()).exists());
    let start = if any {
        Start::Check(hash)
    } else {
        Start::Empty
    };
    let (t, _) = Torrent::open_download(meta, data, start, preallocate).map_err(|source| {
        DownloadError::Open {
            dir: data.to_path_buf(),
            source,
        }
    })?;
    Ok(t)
}

/// Downloads, calling `on_progress` about every `every`; returns once complete (or, with
/// `seed`, once a signal arrives after completion).
pub fn run(
    opts: &DownloadOptions,
    settings: Settings,
    session: SessionOptions,
    signals: &Receiver<Signal>,
    every: Duration,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Finished, DownloadError> {
    let preallocate = settings.preallocate;
    let magnet = opts.source.starts_with("magnet:");
    let meta = if magnet { None } else { Some(load(opts)?) };
    let session = Session::start(settings, session)?;
    let meta = match meta {
        Some(m) => m,
        None => {
            on_progress(&Progress::metadata(&opts.source));
            match from_magnet(opts, &session) {
                Ok(m) => m,
                Err(e) => {
                    session.shutdown();
                    return Err(e);
                }
            }
        }
    };
    let t = match open(meta, &opts.data, opts.hash, preallocate) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            session.shutdown();
            return Err(e);
        }
    };
    session.add_torrent(t.clone())?;
    if !opts.peers.is_empty() {
        session.handle().add_peers(t.id, opts.peers.clone())?;
    }
    let started = Instant::now();
    let mut meter = Meter::new(t.downloaded(), started);
    let mut last_piece = (t.pieces.verified.count(), started);
    let mut files_made = false;
    // Completion is looked for every 20 ms; progress is reported every `every`.
    let poll = every.min(Duration::from_millis(20));
    let mut last_report: Option<Instant> = None;
    let result = loop {
        let signal = match signals.recv_timeout(poll) {
            Ok(s) => Some(s),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => None,
        };
        let now = Instant::now();
        // Empty files have no piece: they are created once every piece is in, before a line
        // says so (`seeding`; with --seed the run goes on).
        if !files_made && t.pieces.verified.is_full() {
            if let Err(e) = t.files.create_missing() {
                break Err(DownloadError::Failed(format!("creating files: {e}")));
            }
            files_made = true;
        }
        let due = last_report.is_none_or(|at| now.duration_since(at) >= every);
        if due || signal.is_some() || t.pieces.verified.is_full() {
            last_report = Some(now);
            on_progress(&progress(&t, &mut meter, now, started));
        }
        let done = t.pieces.verified.count();
        if done != last_piece.0 {
            last_piece = (done, now);
        }
        if let Some(e) = t.error() {
            break Err(DownloadError::Failed(e));
        }
        let complete = t.pieces.verified.is_full();
        if let Some(s) = signal {
            if complete {
                break Ok(());
            }
            break Err(DownloadError::Interrupted(s, done, t.pieces.num_pieces()));
        }
        if complete && !opts.seed {
            break Ok(());
        }
        let stalled = now.duration_since(last_piece.1);
        if !complete && !opts.stall_timeout.is_zero() && stalled > opts.stall_timeout {
            break Err(DownloadError::Stalled {
                secs: stalled.as_secs(),
                done,
                total: t.pieces.num_pieces(),
                peers: t.peers.load(std::sync::atomic::Ordering::Relaxed),
            });
        }
    };
    if result.is_ok() {
        // The last piece may have landed after the check in the loop.
        if !files_made && let Err(e) = t.files.create_missing() {
            session.shutdown();
            return Err(DownloadError::Failed(format!("creating files: {e}")));
        }
        if !t.meta.trackers.is_empty() {
            // The announce loop notices completion within a second and sends `completed`.
            std::thread::sleep(Duration::from_millis(1500));
        }
    }
    let p = progress(&t, &mut meter, Instant::now(), started);
    let stats = session.shutdown();
    result.map(|()| Finished { progress: p, stats })
}

/// Download rate over a sliding few seconds.
struct Meter {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl Meter {
    fn new(bytes: u64, now: Instant) -> Meter {
        Meter {
            samples: [(now, bytes)].into(),
        }
    }

    fn rate(&mut self, bytes: u64, now: Instant) -> f64 {
        self.samples.push_back((now, bytes));
        while self.samples.len() > 2
            && now.duration_since(self.samples[0].0) > Duration::from_secs(5)
        {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples[0];
        let dt = now.duration_since(t0).as_secs_f64();
        if dt <= 0.0 {
            0.0
        } else {
            bytes.saturating_sub(b0) as f64 / dt
        }
    }
}

fn progress(t: &Torrent, meter: &mut Meter, now: Instant, started: Instant) -> Progress {
    let size = t.meta.info.layout.total_length;
    let left = t.left();
    let rate = meter.rate(t.downloaded(), now);
    let peers = t.peers.load(std::sync::atomic::Ordering::Relaxed);
    let state = if t.error().is_some() {
        "error"
    } else if left == 0 {
        "seeding"
    } else if rate < 1.0 {
        "stalled"
    } else {
        "downloading"
    };
    Progress {
        name: t.meta.info.name.clone(),
        state,
        pieces_done: t.pieces.verified.count(),
        pieces: t.pieces.num_pieces(),
        bytes_done: size - left,
        size,
        downloaded: t.downloaded(),
        uploaded: t.uploaded(),
        rate,
        peers,
        eta_s: (rate >= 1.0 && left > 0).then(|| (left as f64 / rate).ceil() as u64),
        elapsed_s: now.duration_since(started).as_secs_f64(),
        hash_failures: t
            .fetch
            .hash_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        banned: crate::engine::lock(&t.fetch.blame).banned(),
    }
}
