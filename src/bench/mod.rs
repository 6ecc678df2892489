//! `ringseed bench`: a swarm of synthetic leechers in one process, speaking the real wire
//! protocol to any seeder, measuring what it delivers and checking a sample of what it sends.
//!
//! ```text
//!  run() ── spawns ──► swarm worker 0 … N   (io_uring loop each; leechers split by number)
//!    │                     │ LiveStats (atomics), read once a second for the progress line
//!    └── joins ◄───────────┘ WorkerResult: counts, errors by kind, latency histogram
//! ```
//!
//! Block data is counted where it lies in each leecher's receive buffer. One piece in
//! [`BenchOptions::verify_every`] (every piece with 1) is assembled and checked against the
//! torrent's SHA-1; a piece that fails makes the whole run fail ([`BenchReport::passed`]).

pub mod procstat;
mod seeder;
mod swarm;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::metainfo::Info;

pub use seeder::{LocalSeeder, SEEDER_THREAD_PREFIX, SeederError};

/// Which pieces leechers ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Each leecher walks the pieces in order from its own starting point (spread evenly over
    /// the torrent), wrapping around.
    Sequential,
    /// Each leecher picks pieces uniformly at random.
    Random,
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// Stop requesting after this long, then wait for the blocks in flight.
    Duration(Duration),
    /// Request this many payload bytes in total over all leechers, then wait for them.
    Bytes(u64),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub addr: SocketAddr,
    /// Leechers (1 … 10 000 is the intended range).
    pub peers: usize,
    /// Requests each leecher keeps outstanding.
    pub reqq: usize,
    /// Block size in bytes.
    pub block_len: u32,
    pub stop: Stop,
    pub pattern: Pattern,
    /// io_uring worker threads of the swarm.
    pub workers: usize,
    /// Check one piece in this many against its SHA-1 (1 = every piece).
    pub verify_every: u64,
    /// A leecher that waits this long for a connect, a handshake or its next block fails with
    /// a timeout.
    pub timeout: Duration,
    /// After the end, how long blocks still in flight are waited for.
    pub drain_timeout: Duration,
    /// Against an IPv4 loopback seeder, give every leecher its own source address in
    /// 127.2.0.0/16 and up, so seeders that allow one connection per IP (libtorrent's default)
    /// accept them all. Ignored for other targets.
    pub spread_sources: bool,
    /// Every leecher bids this price per MiB and pays from a channel with this budget
    /// (`rs_speed`, BTT base units).
    pub pay: Option<(u128, u128)>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 6881)),
            peers: 1,
            reqq: 64,
            block_len: 16 << 10,
            stop: Stop::Duration(Duration::from_secs(10)),
            pattern: Pattern::Sequential,
            workers: 1,
            verify_every: 64,
            timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            spread_sources: true,
            pay: None,
        }
    }
}

/// Why a leecher ended early; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum ErrorKind {
    ConnectRefused,
    ConnectFailed,
    ClosedBySeeder,
    Protocol,
    BadPiece,
    Timeout,
    Io,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectFailed,
        ErrorKind::ClosedBySeeder,
        ErrorKind::Protocol,
        ErrorKind::BadPiece,
        ErrorKind::Timeout,
        ErrorKind::Io,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::ClosedBySeeder => "closed_by_seeder",
            ErrorKind::Protocol => "protocol_error",
            ErrorKind::BadPiece => "bad_piece",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io_error",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("only v1 and hybrid torrents can be benchmarked (SHA-1 piece hashes)")]
    NotV1,
    #[error("the torrent has no data")]
    Empty,
    #[error("{what} must be at least 1 (got {value})")]
    Zero { what: &'static str, value: u64 },
    #[error("block size {0} bytes is over 128 KiB")]
    BlockTooLarge(u32),
    #[error("creating the io_uring of bench worker {worker}: {source}")]
    Ring {
        worker: usize,
        source: std::io::Error,
    },
    #[error("starting bench worker {0}: {1}")]
    Spawn(usize, std::io::Error),
    #[error("bench worker {0} panicked")]
    WorkerPanicked(usize),
}

/// Request → block latency in microseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> Self {
        LatencySummary {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// What the local seeder cost, when it ran in this process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeederReport {
    pub workers: usize,
    /// User + system CPU seconds of the seeder's worker threads during the run.
    pub cpu_seconds: f64,
    pub cpu_seconds_per_gib: f64,
    /// Whether `cpu_seconds` counts only the seeder's threads (from /proc/self/task) or the
    /// whole process (bench included) because the threads could not be told apart.
    pub per_thread: bool,
    /// Resident set of the whole process (seeder and bench share it) at the end of the run.
    pub process_rss_bytes: u64,
    /// Resident set before the swarm started: the seeder alone, idle, with its torrent loaded.
    pub rss_before_bytes: u64,
    /// Payload bytes the seeder counts as uploaded.
    pub bytes_up: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub peers: usize,
    pub reqq: usize,
    pub block_len: u32,
    pub pattern: Pattern,
    pub workers: usize,
    /// Payload bytes received in blocks.
    pub bytes: u64,
    pub blocks: u64,
    /// From the start to the last block received.
    pub seconds: f64,
    pub gib_per_s: f64,
    pub latency_us: LatencySummary,
    /// Leechers whose handshake completed.
    pub connected: u64,
    /// Leechers still connected when the run ended.
    pub held_at_end: u64,
    pub errors: BTreeMap<&'static str, u64>,
    /// Requests still unanswered when the drain after the end timed out.
    pub unanswered_requests: u64,
    pub pieces_verified: u64,
    /// Pieces that failed their hash check (with repeats, one entry per failed check).
    pub bad_pieces: Vec<u32>,
    /// Payload bytes received in each whole second of the run.
    pub bytes_per_second: Vec<u64>,
    /// CPU seconds of the swarm's worker threads (each thread's own clock).
    pub bench_cpu_seconds: Option<f64>,
    pub seeder: Option<SeederReport>,
}

impl BenchReport {
    /// A run passes when no piece failed its hash check.
    pub fn passed(&self) -> bool {
        self.bad_pieces.is_empty()
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One second of a running bench, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct LiveSample {
    pub elapsed: Duration,
    pub bytes: u64,
    /// Bytes in the last second.
    pub bytes_last_second: u64,
    pub held: i64,
    pub connected: u64,
    pub errors: u64,
}

/// Thread name prefix of the swarm workers (so /proc can tell them from the seeder's).
pub const WORKER_THREAD_PREFIX: &str = "rsbench-w";

/// Runs the swarm against `opts.addr` for `info` and reports; `on_second` is called about once
/// a second from the calling thread while the run goes on.
///
/// ```no_run
/// use ringseed::bench::{BenchOptions, Stop, run};
/// # fn demo(info: &ringseed::metainfo::Info) -> Result<(), ringseed::bench::BenchError> {
/// let opts = BenchOptions {
///     addr: "127.0.0.1:6881".parse().unwrap(),
///     peers: 64,
///     stop: Stop::Bytes(1 << 30),
///     ..BenchOptions::default()
/// };
/// let report = run(info, &opts, &mut |_| {})?;
/// assert!(report.passed());
/// # Ok(()) }
/// ```
pub fn run(
    info: &Info,
    opts: &BenchOptions,
    on_second: &mut dyn FnMut(&LiveSample),
) -> Result<BenchReport, BenchError> {
    let layout = &info.layout;
    if layout.num_pieces > 0 && info.pieces.is_empty() {
        return Err(BenchError::NotV1);
    }
    if layout.total_length == 0 || layout.num_pieces == 0 {
        return Err(BenchError::Empty);
    }
    for (what, value) in [
        ("peers", opts.peers as u64),
        ("reqq", opts.reqq as u64),
        ("block size", u64::from(opts.block_len)),
        ("workers", opts.workers as u64),
        ("verify_every", opts.verify_every),
    ] {
        if value == 0 {
            return Err(BenchError::Zero { what, value });
        }
    }
    if opts.block_len > 128 << 10 {
        return Err(BenchError::BlockTooLarge(opts.block_len));
    }
    let workers = opts.workers.min(opts.peers);
    // Fewer, larger receive buffers when there are few leechers: fewer recv calls per byte.
    let recv_size: usize = if opts.peers <= 256 {
        256 << 10
    } else {
        64 << 10
    };
    // Room for two of the largest messages, so a partial one never has to wait for space.
    let recv_size =
        recv_size.max(2 * swarm::max_message(opts.block_len, layout.num_pieces) as usize + 8);
    let started = Instant::now();
    let plan = Arc::new(swarm::Plan {
        addr: opts.addr,
        info_hash: info.hash.wire_id(),
        piece_length: layout.piece_length,
        total_length: layout.total_length,
        num_pieces: layout.num_pieces,
        hashes: info.pieces.clone(),
        peers: opts.peers,
        reqq: opts.reqq,
        block_len: opts.block_len,
        pattern: opts.pattern,
        verify_every: opts.verify_every,
        stop: opts.stop,
        started,
        timeout: opts.timeout,
        drain_timeout: opts.drain_timeout,
        recv_size,
        spread_sources: opts.spread_sources
            && matches!(opts.addr, SocketAddr::V4(a) if a.ip().is_loopback()),
        requested: AtomicU64::new(0),
        requests_over: AtomicBool::new(false),
        pay: opts.pay,
    });

    let mut handles = Vec::with_capacity(workers);
    let mut lives = Vec::with_capacity(workers);
    for w in 0..workers {
        let live = Arc::new(swarm::LiveStats::default());
        let ids = (w..opts.peers).step_by(workers);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let (p, l) = (plan.clone(), live.clone());
        // The ring is built on its own thread: a single-issuer ring accepts submissions only
        // from the thread that created it.
        let h = std::thread::Builder::new()
            .name(format!("{WORKER_THREAD_PREFIX}{w}"))
            .spawn(move || match swarm::Worker::new(p, l, ids) {
                Ok(worker) => {
                    let _ = ready_tx.send(Ok(()));
                    Some(worker.run())
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    None
                }
            })
            .map_err(|e| BenchError::Spawn(w, e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(BenchError::Ring { worker: w, source }),
            Err(_) => return Err(BenchError::WorkerPanicked(w)),
        }
        handles.push(h);
        lives.push(live);
    }

    let mut series = Vec::new();
    let mut last_bytes = 0u64;
    let mut next = started + Duration::from_secs(1);
    while handles.iter().any(|h| !h.is_finished()) {
        let now = Instant::now();
        if now >= next {
            next += Duration::from_secs(1);
            let sum = |f: &dyn Fn(&swarm::LiveStats) -> u64| lives.iter().map(|l| f(l)).sum();
            let bytes: u64 = sum(&|l| l.bytes.load(Ordering::Relaxed));
            series.push(bytes - last_bytes);
            let sample = LiveSample {
                elapsed: now - started,
                bytes,
                bytes_last_second: bytes - last_bytes,
                held: lives.iter().map(|l| l.held.load(Ordering::Relaxed)).sum(),
                connected: sum(&|l| l.connected.load(Ordering::Relaxed)),
                errors: sum(&|l| l.errors.load(Ordering::Relaxed)),
            };
            last_bytes = bytes;
            on_second(&sample);
        }
        std::thread::sleep(Duration::from_millis(20).min(next.saturating_duration_since(now)));
    }

    let mut latency = swarm::new_histogram();
    let mut errors = [0u64; ErrorKind::ALL.len()];
    let mut report = BenchReport {
        peers: opts.peers,
        reqq: opts.reqq,
        block_len: opts.block_len,
        pattern: opts.pattern,
        workers,
        bytes: 0,
        blocks: 0,
        seconds: 0.0,
        gib_per_s: 0.0,
        latency_us: LatencySummary::of(&latency),
        connected: 0,
        held_at_end: 0,
        errors: BTreeMap::new(),
        unanswered_requests: 0,
        pieces_verified: 0,
        bad_pieces: Vec::new(),
        bytes_per_second: series,
        bench_cpu_seconds: Some(0.0),
        seeder: None,
    };
    let mut last_block = None;
    for (w, h) in handles.into_iter().enumerate() {
        let r = h
            .join()
            .ok()
            .flatten()
            .ok_or(BenchError::WorkerPanicked(w))?;
        let _ = latency.add(&r.latency_us);
        report.bytes += r.bytes;
        report.blocks += r.blocks;
        report.connected += r.connected;
        report.held_at_end += r.held_at_end;
        report.pieces_verified += r.pieces_verified;
        report.unanswered_requests += r.unanswered;
        report.bad_pieces.extend(r.bad_pieces);
        for (e, n) in errors.iter_mut().zip(r.errors) {
            *e += n;
        }
        last_block = last_block.max(r.last_block);
        report.bench_cpu_seconds = report
            .bench_cpu_seconds
            .zip(r.cpu_seconds)
            .map(|(a, b)| a + b);
    }
    report.bad_pieces.sort_unstable();
    report.latency_us = LatencySummary::of(&latency);
    report.errors = ErrorKind::ALL
        .iter()
        .map(|&k| (k.name(), errors[k as usize]))
        .filter(|&(_, n)| n > 0)
        .collect();
    let end = last_block.unwrap_or_else(Instant::now);
    report.seconds = end.saturating_duration_since(started).as_secs_f64();
    report.gib_per_s = report.bytes as f64 / (1u64 << 30) as f64 / report.seconds.max(1e-9);
    Ok(report)
}
