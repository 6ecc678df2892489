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

pub mod ceiling;
pub mod chain_pay;
pub mod chart;
pub mod cli;
mod crypt;
pub mod procstat;
mod seeder;
mod swarm;
pub mod sweep;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::metainfo::Info;

pub use seeder::{LocalSeeder, SEEDER_THREAD_PREFIX, SeederError, SeederSpec, SeederSpeedReport};

/// Which pieces leechers ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Each leecher walks the pieces in order from its own starting point (spread evenly over
    /// the torrent), wrapping around.
    Sequential,
    /// Each leecher picks pieces uniformly at random.
    Random,
    /// Rarest first, as a swarm of real leechers would: each leecher keeps the seeder's
    /// bitfield/have view and asks, among the pieces it has not yet had, for one that the
    /// fewest leechers of the swarm hold.
    RarestFirst,
    /// The load spread over several torrents on one seeder (leecher i takes torrent i mod N),
    /// random pieces within each. `--spawn-seeder` makes `--torrents` of them (8 by default).
    ManyTorrents,
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
    /// Bind leecher `i` to `source_base + i` for any target (overrides `spread_sources`); the
    /// addresses must be local, e.g. a range routed to `lo`.
    pub source_base: Option<std::net::Ipv4Addr>,
    /// Connect, handshake and hold the connection without asking for anything, until the end:
    /// what many idle peers cost a seeder.
    pub idle: bool,
    /// Every leecher bids this price per MiB and pays from a channel with this budget
    /// (`rs_speed`, BTT base units).
    pub pay: Option<(u128, u128)>,
    /// With `pay`, a mixed run: only leechers 0 … N-1 pay and the rest are free (`None`: all
    /// pay). The report then compares the two groups ([`BenchReport::groups`]).
    pub paying_peers: Option<usize>,
    /// Leechers dial with MSE/PE and RC4 (`--encrypt`).
    pub encrypt: bool,
    /// With `pay`: channels opened on chain for the paying leechers (`bench --rpc`).
    pub channels: Option<std::sync::Arc<chain_pay::PaidChannels>>,
}

/// First of the loopback source addresses leechers are spread over (all of 127.0.0.0/8 is local
/// on Linux): seeders that allow one connection per IP, as libtorrent does by default, then see
/// every leecher as a different peer.
pub const LOOPBACK_SOURCE_BASE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 2, 0, 1);

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
            source_base: None,
            idle: false,
            pay: None,
            paying_peers: None,
            encrypt: false,
            channels: None,
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
    #[error("no torrent to benchmark")]
    NoTorrent,
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
    #[error("{paying} paying leechers asked for, but the run has only {peers}")]
    PayingPeers { paying: usize, peers: usize },
    #[error("paying leechers ({0}) need a price and a budget to pay with")]
    PayingPeersWithoutPay(usize),
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

/// What the seeder cost, when it runs on this machine: in this process (`--spawn-seeder`) or as
/// another process (`--seeder-pid`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeederReport {
    /// Worker threads of an in-process seeder (0 for another process).
    pub workers: usize,
    /// The seeder's process id when it is another process.
    pub pid: Option<u32>,
    /// User + system CPU seconds of the seeder during the run: its worker threads in this
    /// process, or all threads of the other process.
    pub cpu_seconds: f64,
    pub cpu_seconds_per_gib: f64,
    /// Whether `cpu_seconds` counts only the seeder (its threads here, or its own process) or
    /// the whole process (bench included) because the threads could not be told apart.
    pub per_thread: bool,
    /// Resident set at the end of the run: of the whole process for an in-process seeder
    /// (seeder and bench share it), of the seeder alone for another process.
    pub process_rss_bytes: u64,
    /// The largest resident set seen, sampled once a second and at the end.
    pub rss_peak_bytes: u64,
    /// Resident set before the swarm started: the seeder alone, idle, with its torrent loaded.
    pub rss_before_bytes: u64,
    /// Payload bytes the seeder counts as uploaded (for another process: what the bench got).
    pub bytes_up: u64,
    /// Of `cpu_seconds`, what the speed layer's threads (voucher verifier, database writer)
    /// took: an in-process seeder with `--pay` only.
    pub speed_cpu_seconds: Option<f64>,
    /// What an in-process paying seeder's speed layer counted over its life.
    pub speed: Option<SeederSpeedReport>,
}

/// What the paying leechers of a run did (`--pay`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PaymentReport {
    pub payers: u64,
    /// Payers whose bid the seeder confirmed.
    pub confirmed: u64,
    pub vouchers_sent: u64,
    pub refusals: u64,
    /// Sum of the cumulative amounts signed, and of those the seeder acknowledged as durable
    /// (BTT base units, decimal).
    pub signed: String,
    pub acked: String,
}

/// What one group of leechers (the paying or the free ones) got in a `--pay` run: does paying
/// buy speed from the first second?
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupReport {
    pub leechers: u64,
    /// Leechers of the group that received at least one block (the first-block figures are
    /// over these).
    pub leechers_with_blocks: u64,
    /// Payload bytes the group received in blocks.
    pub bytes: u64,
    /// `bytes` over the whole run's [`BenchReport::seconds`], so the groups add up to the run.
    pub gib_per_s: f64,
    /// From the run's start to each leecher's first block: median and max over the group.
    pub first_block_median_seconds: Option<f64>,
    pub first_block_max_seconds: Option<f64>,
    /// Payers whose bid the seeder confirmed (always 0 for the free group).
    pub confirmed: u64,
    /// From a payer's confirmation (the receipt answering its bid) to its first block after
    /// it: median and max over the confirmed payers that got one.
    pub confirm_to_first_block_median_seconds: Option<f64>,
    pub confirm_to_first_block_max_seconds: Option<f64>,
    /// Request → block latency of the group's blocks, 99th percentile, µs.
    pub latency_p99_us: Option<u64>,
}

impl GroupReport {
    fn of(g: &swarm::GroupTotals, run_seconds: f64) -> GroupReport {
        let (fb_median, fb_max) = median_max(&g.first_block);
        let (cf_median, cf_max) = median_max(&g.confirm_to_first_block);
        GroupReport {
            leechers: g.leechers,
            leechers_with_blocks: g.first_block.len() as u64,
            bytes: g.bytes,
            gib_per_s: g.bytes as f64 / (1u64 << 30) as f64 / run_seconds.max(1e-9),
            first_block_median_seconds: fb_median,
            first_block_max_seconds: fb_max,
            confirmed: g.confirmed,
            confirm_to_first_block_median_seconds: cf_median,
            confirm_to_first_block_max_seconds: cf_max,
            latency_p99_us: (!g.latency_us.is_empty())
                .then(|| g.latency_us.value_at_quantile(0.99)),
        }
    }

    /// One line for the text report, e.g. `paying  2 leechers (2 with blocks, 2 confirmed) …`;
    /// the confirmation figures only for the paying group.
    fn line(&self, name: &str, paying: bool) -> String {
        // Milliseconds: on loopback a confirmed payer's next block is well under one.
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |s| format!("{:.3}", s * 1e3));
        let mut line = format!(
            "  {name:<12}  {} leechers ({} with blocks",
            self.leechers, self.leechers_with_blocks
        );
        if paying {
            line += &format!(", {} confirmed", self.confirmed);
        }
        line += &format!(
            "), {:.3} GiB, {:.3} GiB/s, first block median {} ms max {} ms",
            self.bytes as f64 / (1u64 << 30) as f64,
            self.gib_per_s,
            ms(self.first_block_median_seconds),
            ms(self.first_block_max_seconds),
        );
        if paying {
            line += &format!(
                ", after confirmation median {} ms max {} ms",
                ms(self.confirm_to_first_block_median_seconds),
                ms(self.confirm_to_first_block_max_seconds),
            );
        }
        line += &match self.latency_p99_us {
            Some(us) => format!(", latency p99 {:.3} ms", us as f64 / 1000.0),
            None => ", latency p99 -".to_string(),
        };
        line
    }
}

/// The median (mean of the two middle values for an even count) and the largest, in seconds.
fn median_max(values: &[Duration]) -> (Option<f64>, Option<f64>) {
    let mut v: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (None, None);
    }
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (Some(median), v.last().copied())
}

/// The paying and the free leechers of a `--pay` run, side by side.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupsReport {
    pub paying: GroupReport,
    pub free: GroupReport,
}

/// Where a local seeder's cost is read from while a run goes on.
pub enum SeederProbe<'a> {
    InProcess(&'a LocalSeeder),
    Pid(u32),
}

impl SeederProbe<'_> {
    fn cpu(&self) -> Option<procstat::CpuTimes> {
        match self {
            SeederProbe::InProcess(s) => s.cpu(),
            SeederProbe::Pid(pid) => procstat::pid_cpu(*pid),
        }
    }

    fn rss(&self) -> u64 {
        match self {
            SeederProbe::InProcess(_) => procstat::rss_bytes(),
            SeederProbe::Pid(pid) => procstat::pid_rss_bytes(*pid),
        }
        .unwrap_or(0)
    }

    fn speed_cpu(&self) -> Option<procstat::CpuTimes> {
        match self {
            SeederProbe::InProcess(s) => s.speed_cpu(),
            SeederProbe::Pid(_) => None,
        }
    }

    fn speed_counts(&self) -> Option<SeederSpeedReport> {
        match self {
            SeederProbe::InProcess(s) => s.speed_counts(),
            SeederProbe::Pid(_) => None,
        }
    }

    fn bytes_up(&self) -> Option<u64> {
        match self {
            SeederProbe::InProcess(s) => Some(s.bytes_up()),
            SeederProbe::Pid(_) => None,
        }
    }
}

/// [`run`], with the seeder's CPU time, upload count and resident set read before, during and
/// after the swarm.
pub fn run_probed(
    infos: &[Info],
    opts: &BenchOptions,
    probe: Option<&SeederProbe<'_>>,
    on_second: &mut dyn FnMut(&LiveSample),
) -> Result<BenchReport, BenchError> {
    let Some(probe) = probe else {
        return run_torrents(infos, opts, on_second);
    };
    let rss_before = probe.rss();
    let cpu_before = probe.cpu();
    let speed_before = probe.speed_cpu();
    let up_before = probe.bytes_up();
    let mut rss_peak = rss_before;
    let mut report = run_torrents(infos, opts, &mut |s| {
        rss_peak = rss_peak.max(probe.rss());
        on_second(s);
    })?;
    // Read before an in-process seeder stops: its threads leave /proc/self/task when they end.
    let cpu_after = probe.cpu();
    let speed_after = probe.speed_cpu();
    let up = match (up_before, probe.bytes_up()) {
        (Some(a), Some(b)) => b - a,
        _ => report.bytes,
    };
    let rss_end = probe.rss();
    let (cpu, per_thread) = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => (b.cpu_seconds() - a.cpu_seconds(), true),
        _ => (
            procstat::process_cpu().map_or(0.0, |c| c.cpu_seconds()),
            false,
        ),
    };
    report.seeder = Some(SeederReport {
        workers: match probe {
            SeederProbe::InProcess(s) => s.engine.stats().len(),
            SeederProbe::Pid(_) => 0,
        },
        pid: match probe {
            SeederProbe::InProcess(_) => None,
            SeederProbe::Pid(p) => Some(*p),
        },
        cpu_seconds: cpu,
        cpu_seconds_per_gib: cpu / (up as f64 / (1u64 << 30) as f64).max(1e-9),
        per_thread,
        process_rss_bytes: rss_end,
        rss_peak_bytes: rss_peak.max(rss_end),
        rss_before_bytes: rss_before,
        bytes_up: up,
        speed_cpu_seconds: speed_before
            .zip(speed_after)
            .map(|(a, b)| b.cpu_seconds() - a.cpu_seconds()),
        speed: probe.speed_counts(),
    });
    Ok(report)
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
    /// Payload bytes per torrent, in the order the torrents were given.
    pub bytes_by_torrent: Vec<u64>,
    pub blocks: u64,
    /// From the start to the last block received.
    pub seconds: f64,
    pub gib_per_s: f64,
    /// From the start to the first block received (connects, handshakes, waiting to be
    /// unchoked: Transmission unchokes at its first 10-second rechoke).
    pub first_block_seconds: Option<f64>,
    /// Throughput from the first block to the last: the steady rate, without the start-up.
    pub gib_per_s_after_first_block: f64,
    pub latency_us: LatencySummary,
    /// (quantile, µs) pairs of the latency distribution, from 0 (the fastest block) to 1 (the
    /// slowest), for charts.
    pub latency_percentiles_us: Vec<(f64, u64)>,
    /// Leechers whose handshake completed.
    pub connected: u64,
    /// Leechers still connected when the run ended.
    pub held_at_end: u64,
    pub errors: BTreeMap<&'static str, u64>,
    /// Requests still unanswered when the drain after the end timed out.
    pub unanswered_requests: u64,
    /// Requests the seeder rejected (BEP 6), each asked again; `latency_us` counts a block
    /// from the request it answered, so a seeder shedding its queue shows here.
    pub rejected_requests: u64,
    pub pieces_verified: u64,
    /// Pieces that failed their hash check (with repeats, one entry per failed check).
    pub bad_pieces: Vec<u32>,
    /// Payload bytes received in each whole second of the run.
    pub bytes_per_second: Vec<u64>,
    /// CPU seconds of the swarm's worker threads (each thread's own clock).
    pub bench_cpu_seconds: Option<f64>,
    pub seeder: Option<SeederReport>,
    /// With `--pay`: what the paying leechers did.
    pub payment: Option<PaymentReport>,
    /// With `--pay`: the paying and the free leechers apart (all pay unless `--paying-peers`
    /// made the run mixed).
    pub groups: Option<GroupsReport>,
}

impl BenchReport {
    /// A run passes when no piece failed its hash check.
    pub fn passed(&self) -> bool {
        self.bad_pieces.is_empty()
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The text report's lines for [`BenchReport::groups`] (none without `--pay`).
    pub fn group_lines(&self) -> Vec<String> {
        match &self.groups {
            Some(g) => vec![g.paying.line("paying", true), g.free.line("free", false)],
            None => Vec::new(),
        }
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

/// Where the latency distribution is sampled for [`BenchReport::latency_percentiles_us`].
const LATENCY_QUANTILES: [f64; 17] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
];

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
    run_torrents(std::slice::from_ref(info), opts, on_second)
}

/// [`run`] over several torrents of one seeder: leecher `i` downloads torrent `i mod N`.
pub fn run_torrents(
    infos: &[Info],
    opts: &BenchOptions,
    on_second: &mut dyn FnMut(&LiveSample),
) -> Result<BenchReport, BenchError> {
    if infos.is_empty() {
        return Err(BenchError::NoTorrent);
    }
    for info in infos {
        let layout = &info.layout;
        if layout.num_pieces > 0 && info.pieces.is_empty() {
            return Err(BenchError::NotV1);
        }
        if layout.total_length == 0 || layout.num_pieces == 0 {
            return Err(BenchError::Empty);
        }
    }
    let max_pieces = infos.iter().map(|i| i.layout.num_pieces).max().unwrap_or(0);
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
    if let Some(paying) = opts.paying_peers {
        if opts.pay.is_none() {
            return Err(BenchError::PayingPeersWithoutPay(paying));
        }
        if paying > opts.peers {
            return Err(BenchError::PayingPeers {
                paying,
                peers: opts.peers,
            });
        }
    }
    let workers = opts.workers.min(opts.peers);
    // Fewer, larger receive buffers when there are few leechers: fewer recv calls per byte.
    let recv_size: usize = if opts.peers <= 256 {
        256 << 10
    } else {
        64 << 10
    };
    // Room for two of the largest messages, so a partial one never has to wait for space.
    let recv_size = recv_size.max(2 * swarm::max_message(opts.block_len, max_pieces) as usize + 8);
    let started = Instant::now();
    let plan = Arc::new(swarm::Plan {
        addr: opts.addr,
        torrents: infos
            .iter()
            .map(|i| swarm::TorrentPlan::new(i, opts.pattern == Pattern::RarestFirst))
            .collect(),
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
        source_base: opts.source_base.or_else(|| {
            (opts.spread_sources && matches!(opts.addr, SocketAddr::V4(a) if a.ip().is_loopback()))
                .then_some(LOOPBACK_SOURCE_BASE)
        }),
        idle: opts.idle,
        requested: AtomicU64::new(0),
        requests_over: AtomicBool::new(false),
        pay: opts.pay,
        paying_peers: opts.paying_peers.unwrap_or(opts.peers),
        encrypt: opts.encrypt,
        channels: opts.channels.clone(),
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
        bytes_by_torrent: vec![0; infos.len()],
        blocks: 0,
        seconds: 0.0,
        gib_per_s: 0.0,
        first_block_seconds: None,
        gib_per_s_after_first_block: 0.0,
        latency_us: LatencySummary::of(&latency),
        latency_percentiles_us: Vec::new(),
        connected: 0,
        held_at_end: 0,
        errors: BTreeMap::new(),
        unanswered_requests: 0,
        rejected_requests: 0,
        pieces_verified: 0,
        bad_pieces: Vec::new(),
        bytes_per_second: series,
        bench_cpu_seconds: Some(0.0),
        seeder: None,
        payment: None,
        groups: None,
    };
    let mut payment = swarm::PaymentTotals::default();
    let mut groups = [swarm::GroupTotals::new(), swarm::GroupTotals::new()];
    let mut last_block = None;
    let mut first_block: Option<Instant> = None;
    for (w, h) in handles.into_iter().enumerate() {
        let r = h
            .join()
            .ok()
            .flatten()
            .ok_or(BenchError::WorkerPanicked(w))?;
        let _ = latency.add(&r.latency_us);
        report.bytes += r.bytes;
        for (total, b) in report.bytes_by_torrent.iter_mut().zip(&r.bytes_by_torrent) {
            *total += b;
        }
        report.blocks += r.blocks;
        report.connected += r.connected;
        report.held_at_end += r.held_at_end;
        report.pieces_verified += r.pieces_verified;
        report.unanswered_requests += r.unanswered;
        report.rejected_requests += r.rejected;
        payment.merge(&r.payment);
        for (g, o) in groups.iter_mut().zip(&r.groups) {
            g.merge(o);
        }
        report.bad_pieces.extend(r.bad_pieces);
        for (e, n) in errors.iter_mut().zip(r.errors) {
            *e += n;
        }
        last_block = last_block.max(r.last_block);
        first_block = match (first_block, r.first_block) {
            (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
            (a, b) => a.or(b),
        };
        report.bench_cpu_seconds = report
            .bench_cpu_seconds
            .zip(r.cpu_seconds)
            .map(|(a, b)| a + b);
    }
    if opts.pay.is_some() {
        report.payment = Some(PaymentReport {
            payers: payment.payers,
            confirmed: payment.confirmed,
            vouchers_sent: payment.vouchers,
            refusals: payment.refusals,
            signed: payment.signed.to_string(),
            acked: payment.acked.to_string(),
        });
    }
    report.bad_pieces.sort_unstable();
    report.latency_us = LatencySummary::of(&latency);
    if !latency.is_empty() {
        report.latency_percentiles_us = LATENCY_QUANTILES
            .iter()
            .map(|&q| (q, latency.value_at_quantile(q)))
            .collect();
    }
    report.errors = ErrorKind::ALL
        .iter()
        .map(|&k| (k.name(), errors[k as usize]))
        .filter(|&(_, n)| n > 0)
        .collect();
    let end = last_block.unwrap_or_else(Instant::now);
    report.seconds = end.saturating_duration_since(started).as_secs_f64();
    let gib = report.bytes as f64 / (1u64 << 30) as f64;
    report.gib_per_s = gib / report.seconds.max(1e-9);
    if opts.pay.is_some() {
        report.groups = Some(GroupsReport {
            paying: GroupReport::of(&groups[swarm::PAYING], report.seconds),
            free: GroupReport::of(&groups[swarm::FREE], report.seconds),
        });
    }
    if let Some(first) = first_block {
        report.first_block_seconds = Some(first.saturating_duration_since(started).as_secs_f64());
        let steady = end.saturating_duration_since(first).as_secs_f64();
        report.gib_per_s_after_first_block = if steady > 0.0 {
            gib / steady
        } else {
            report.gib_per_s
        };
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_max_of_first_blocks() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(median_max(&[]), (None, None));
        assert_eq!(median_max(&ms(&[300, 100, 200])), (Some(0.2), Some(0.3)));
        assert_eq!(median_max(&ms(&[400, 100])), (Some(0.25), Some(0.4)));
    }

    #[test]
    fn groups_print_one_line_each_and_only_with_pay() {
        let mut g = swarm::GroupTotals::new();
        g.leechers = 2;
        g.bytes = 1 << 30;
        g.first_block = vec![Duration::from_millis(10)];
        g.confirmed = 1;
        g.confirm_to_first_block = vec![Duration::from_millis(2)];
        let _ = g.latency_us.record(1500);
        let paying = GroupReport::of(&g, 2.0);
        assert_eq!(paying.gib_per_s, 0.5);
        assert_eq!(paying.leechers_with_blocks, 1);
        assert_eq!(
            paying.latency_p99_us,
            Some(g.latency_us.value_at_quantile(0.99))
        );
        let free = GroupReport::of(&swarm::GroupTotals::new(), 2.0);
        assert_eq!(free.first_block_median_seconds, None);
        assert_eq!(free.latency_p99_us, None);
        let p = paying.line("paying", true);
        assert!(p.contains("2 leechers (1 with blocks, 1 confirmed)"), "{p}");
        assert!(
            p.contains("after confirmation median 2.000 ms max 2.000 ms"),
            "{p}"
        );
        assert!(p.contains("first block median 10.000 ms"), "{p}");
        let f = free.line("free", false);
        assert!(!f.contains("confirm"), "{f}");
    }
}
