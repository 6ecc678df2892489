//! The `ringseed` command line: parse, call the library, print.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ringseed::config::{self, Config, CreateVersion};
use ringseed::create::{CreateOptions, create};
use ringseed::metainfo::{Metainfo, hex};
use ringseed::storage::DataFiles;
use ringseed::verify::{self, Progress, VerifyReport};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `println!` for the long-running commands: a closed stdout (its reader gone) is ignored
/// rather than a panic, which would skip the clean shutdown and its `stopped` announces.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "ringseed",
    version,
    about = "Thread-per-core io_uring BitTorrent seedbox engine"
)]
struct Cli {
    /// Config file (TOML); see `ringseed config print-default`.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a .torrent of a file or a directory.
    Create {
        path: PathBuf,
        /// Where to write the .torrent.
        #[arg(short, long)]
        output: PathBuf,
        /// Format (default from config: v1).
        #[arg(long = "format", value_enum)]
        version: Option<CreateVersion>,
        /// Piece length in KiB (default: chosen from the payload size).
        #[arg(long)]
        piece_kib: Option<u32>,
        /// Tracker URL; repeat for more tiers, separate trackers of one tier by commas.
        #[arg(short, long = "tracker")]
        trackers: Vec<String>,
        /// Web seed URL (BEP 19); repeatable.
        #[arg(short, long = "web-seed")]
        web_seeds: Vec<String>,
        /// Mark the torrent private (no DHT, PEX or local discovery).
        #[arg(long)]
        private: bool,
        #[arg(long)]
        comment: Option<String>,
        /// Leave out the creation date (reproducible output).
        #[arg(long)]
        no_date: bool,
        /// Hashing threads (0 = one per core).
        #[arg(long)]
        threads: Option<u32>,
    },
    /// Check data against a .torrent's piece hashes.
    Verify {
        torrent: PathBuf,
        /// Download directory: the torrent's file or top directory is inside it.
        #[arg(long)]
        data: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Hashing threads (0 = one per core).
        #[arg(long)]
        threads: Option<u32>,
    },
    /// Seed a torrent whose data is in a download directory.
    Seed {
        torrent: PathBuf,
        /// Download directory: the torrent's file or top directory is inside it.
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Download a torrent (a .torrent file or a magnet link) into a directory from its swarm
    /// (trackers, peer exchange, --peer), every piece checked; then exit, or keep seeding with
    /// --seed. Data already in the directory is checked and kept.
    Download {
        /// A .torrent file or a magnet URI.
        source: String,
        /// Download directory: the torrent's file or top directory goes inside it.
        #[arg(long)]
        data: PathBuf,
        /// A peer to download from (repeatable), besides what trackers and peers name.
        #[arg(long)]
        peer: Vec<std::net::SocketAddr>,
        /// Keep seeding after the download completes, until SIGINT or SIGTERM.
        #[arg(long)]
        seed: bool,
        /// Print progress as JSON lines (one a second, and the final report).
        #[arg(long)]
        json: bool,
        /// Give up (exit 1) when no piece arrived for this many seconds (0 = never).
        #[arg(long, default_value_t = 300)]
        stall_timeout: u64,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Seed every torrent the config lists (`[torrents]`): the service mode.
    Run {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Download a whole torrent from one peer into memory, check every piece, print the speed
    /// (a one-connection leecher for checks and benchmarks; nothing is written to disk).
    Fetch {
        torrent: PathBuf,
        /// The peer to download from.
        #[arg(long)]
        peer: std::net::SocketAddr,
        /// Requests kept outstanding.
        #[arg(long, default_value_t = 256)]
        pipeline: usize,
        #[arg(long)]
        json: bool,
    },
    /// Load generator: a swarm of synthetic leechers (io_uring, one process) downloading from a
    /// seeder over the real wire protocol, with latency, errors by kind and sampled piece
    /// checks. Exit code 1 when a checked piece has wrong data, 2 when no block arrived.
    Bench(Box<BenchArgs>),
    /// Show what a .torrent or magnet link holds.
    Info {
        /// A .torrent file or a magnet URI.
        torrent: String,
        #[arg(long)]
        json: bool,
    },
    /// Drive a running `ringseed run` through its control API (address and token from the
    /// config's `[control]`).
    Ctl(CtlArgs),
    /// Print the node's wallet addresses (TRON and EVM/BTTC), creating its key on first use.
    Wallet,
    /// BTT earned: total, per day, per torrent and per payer, from the ledger (read-only).
    Earnings {
        #[arg(long)]
        json: bool,
    },
    /// Export the latest voucher of every unclaimed channel with its claim calldata, and mark
    /// them exported (each channel is claimed once; the claim closes it). With --submit, claim
    /// them on chain instead (the `[speed] contract`, signed by the node's wallet) and print a
    /// JSON summary; a channel is marked claimed only once its claim is mined with status 1.
    Settle {
        /// Where to write the claims (JSON).
        #[arg(long, required_unless_present = "submit", conflicts_with = "submit")]
        out: Option<PathBuf>,
        /// Send the claims to the chain at --rpc and wait for their receipts.
        #[arg(long, requires = "rpc")]
        submit: bool,
        /// The chain's JSON-RPC endpoint (http or https).
        #[arg(long, value_name = "URL")]
        rpc: Option<String>,
        /// Seconds to wait for each claim's receipt.
        #[arg(long, default_value_t = 120)]
        receipt_timeout: u64,
    },
    /// Payment channels, the paying side.
    Channel {
        #[command(subcommand)]
        cmd: ChannelCmd,
    },
    /// Config file tools.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// The one-command demo: makes a payload and its torrent, verifies it, seeds it on loopback
    /// and fetches it back byte-perfect, printing the speeds.
    Demo {
        /// Working directory (default: a fresh one under the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Payload size in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct BenchArgs {
    #[command(subcommand)]
    cmd: Option<BenchCmd>,
    #[command(flatten)]
    target: TargetArgs,
    /// Synthetic leechers (1 … 10 000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    peers: u64,
    /// Requests each leecher keeps outstanding, at most: fewer when the seeder advertises a
    /// smaller BEP 10 `reqq` (read from each of its extension handshakes, as libtorrent does).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    reqq: u64,
    /// Block size in KiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=128))]
    block_kib: u32,
    /// Run for this many seconds (default 10 unless --bytes is given).
    #[arg(long, conflicts_with = "bytes")]
    duration: Option<f64>,
    /// Request this many payload bytes in total, then stop.
    #[arg(long)]
    bytes: Option<u64>,
    #[arg(long, value_enum, default_value_t = ringseed::bench::Pattern::Sequential)]
    pattern: ringseed::bench::Pattern,
    /// io_uring worker threads of the swarm.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    workers: u64,
    /// Check every piece against its SHA-1 (default: one piece in 64).
    #[arg(long)]
    verify_all: bool,
    /// Seconds a connect, handshake or outstanding block may take before it is a timeout.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Connect every leecher from 127.0.0.1 (by default, against a loopback seeder, each gets
    /// its own source address in 127.2.0.0/16 and up, as seeders allowing one connection per IP
    /// need).
    #[arg(long)]
    one_source: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Start a ringseed seeder in this process on a generated payload and bench it.
    #[arg(long)]
    spawn_seeder: bool,
    /// Payload size for --spawn-seeder, in MiB.
    #[arg(long, default_value_t = 1024, requires = "spawn_seeder")]
    size_mib: u64,
    /// Worker threads of the spawned seeder (0 = one per core).
    #[arg(long, default_value_t = 1, requires = "spawn_seeder")]
    seeder_workers: usize,
    /// Torrents the spawned seeder splits its payload into (default 8 with --pattern
    /// many-torrents, else 1).
    #[arg(long, requires = "spawn_seeder", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    torrents: Option<u64>,
    /// Upload path of the spawned seeder: auto, copy or mmap.
    #[arg(long, default_value = "auto", value_parser = ringseed::bench::cli::parse_upload_path, requires = "spawn_seeder")]
    upload_path: ringseed::engine::UploadPath,
    /// Leechers connect, handshake and hold their connection without asking for anything (what
    /// idle peers cost a seeder; see perf/idle_peers.sh).
    #[arg(long)]
    idle: bool,
    /// Bind leecher i to source address BASE + i (the addresses must be local, e.g. a range
    /// routed to lo); by default loopback targets get 127.2.0.1 + i.
    #[arg(long, value_name = "BASE")]
    source_base: Option<std::net::Ipv4Addr>,
    /// Draw throughput per second and the latency distribution into this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Every leecher bids this price (BTT base units per MiB) and pays with vouchers as data
    /// arrives (`rs_speed`); the spawned seeder offers paid slots.
    #[arg(long, requires = "budget")]
    pay: Option<u128>,
    /// Each leecher's channel budget (its cap), BTT base units.
    #[arg(long, requires = "pay")]
    budget: Option<u128>,
    /// A mixed run: only the first N of --peers leechers pay, the rest are free; the report
    /// compares the two groups (default with --pay: all pay).
    #[arg(long, value_name = "N", requires = "pay")]
    paying_peers: Option<u64>,
    /// Leechers dial with MSE/PE and RC4 (the seeder must accept encrypted connections): the
    /// seeder's cost per GiB with every byte through the cipher.
    #[arg(long)]
    encrypt: bool,
    /// With --pay: open (and fund) each paying leecher's channel on this chain first, from
    /// --payer-key, on --contract, to --payee (or the spawned seeder), deposit = --budget.
    #[arg(long, value_name = "URL", requires_all = ["pay", "contract", "payer_key"])]
    rpc: Option<String>,
    /// The payment-channel contract (0x…), with --rpc.
    #[arg(long, requires = "rpc")]
    contract: Option<String>,
    /// The paying key file, with --rpc.
    #[arg(long, requires = "rpc")]
    payer_key: Option<PathBuf>,
    /// The seeder's address, with --rpc against a --peer.
    #[arg(long, requires = "rpc")]
    payee: Option<String>,
}

#[derive(Subcommand)]
enum ChannelCmd {
    /// Open (and fund, in the chain's native coin) a channel to a seeder on the
    /// payment-channel contract, and wait until it is mined; prints it as JSON.
    Open {
        /// The chain's JSON-RPC endpoint.
        #[arg(long, value_name = "URL")]
        rpc: String,
        /// The payment-channel contract (0x…).
        #[arg(long)]
        contract: String,
        /// The seeder's address (0x… or T…).
        #[arg(long)]
        payee: String,
        /// Deposit, base units (10^-18 BTT).
        #[arg(long)]
        deposit: u128,
        /// Absolute unix time (seconds) from which the payer may take back what is unclaimed.
        #[arg(long)]
        expiry: u64,
        /// The payer's key file (as `ringseed wallet` makes it).
        #[arg(long)]
        key: PathBuf,
        /// The channel id (0x + 64 hex digits); random by default.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Runs the bench over a grid of peers × reqq × upload path and prints one table (and
    /// --json, --svg), so an operator sees where the box saturates.
    Sweep(SweepArgs),
    /// The loopback ceiling of this box: TCP from memory over N connections with the engine's
    /// socket settings (no disk, no protocol), one sender and one receiver thread.
    Ceiling {
        /// Connections; a list measures each in turn.
        #[arg(long, default_value = "1,64", value_delimiter = ',')]
        conns: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Pin the sender and the receiver thread: SENDER_CPU,RECEIVER_CPU.
        #[arg(long, value_delimiter = ',', num_args = 1)]
        cpus: Vec<usize>,
        #[arg(long)]
        json: bool,
    },
}

/// An external seeder to bench: its torrent(s), address and, when local, its process.
#[derive(clap::Args)]
struct TargetArgs {
    /// The torrent(s) to request (not with --spawn-seeder); with several, leecher i takes
    /// torrent i mod N.
    #[arg(
        value_name = "TORRENT",
        required_unless_present = "spawn_seeder",
        conflicts_with = "spawn_seeder"
    )]
    torrent_files: Vec<PathBuf>,
    /// The seeder, HOST:PORT (not with --spawn-seeder).
    #[arg(
        long,
        required_unless_present = "spawn_seeder",
        conflicts_with = "spawn_seeder"
    )]
    peer: Option<String>,
    /// The seeder is this local process: report its CPU-s/GiB and RSS from /proc/PID.
    #[arg(long, conflicts_with = "spawn_seeder")]
    seeder_pid: Option<u32>,
}

impl TargetArgs {
    fn target(&self) -> ringseed::bench::cli::Target {
        ringseed::bench::cli::Target {
            torrent_files: self.torrent_files.clone(),
            peer: self.peer.clone(),
            seeder_pid: self.seeder_pid,
        }
    }
}

#[derive(clap::Args)]
struct SweepArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Peer counts of the grid.
    #[arg(long, default_value = "1,16,64,256,1024", value_delimiter = ',',
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    peers: Vec<u64>,
    /// Request queue depths of the grid.
    #[arg(long, default_value = "16,64,256", value_delimiter = ',',
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    reqq: Vec<u64>,
    /// Upload paths of the spawned seeder (one seeder per path).
    #[arg(long, default_value = "copy", value_delimiter = ',', value_parser = ringseed::bench::cli::parse_upload_path)]
    paths: Vec<ringseed::engine::UploadPath>,
    /// Seconds per point.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=128))]
    block_kib: u32,
    #[arg(long, value_enum, default_value_t = ringseed::bench::Pattern::Sequential)]
    pattern: ringseed::bench::Pattern,
    /// io_uring worker threads of the swarm.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    workers: u64,
    /// Start a ringseed seeder in this process (one per upload path) on a generated payload.
    #[arg(long)]
    spawn_seeder: bool,
    /// Payload size for --spawn-seeder, in MiB.
    #[arg(long, default_value_t = 256, requires = "spawn_seeder")]
    size_mib: u64,
    /// Worker threads of the spawned seeder (0 = one per core).
    #[arg(long, default_value_t = 1, requires = "spawn_seeder")]
    seeder_workers: usize,
    #[arg(long)]
    json: bool,
    /// Draw GiB/s and p99 against peers, one line per reqq and path, into this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// Options shared by `seed` and `run`; each overrides its config key.
#[derive(clap::Args)]
struct ServeArgs {
    /// Listening address (all workers share it through SO_REUSEPORT) [config: engine.listen].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Trust the data without hashing it first [config: torrents.skip_check].
    #[arg(long)]
    skip_check: bool,
    /// Worker threads, 0 = one per core [config: engine.workers].
    #[arg(long)]
    workers: Option<usize>,
    /// Do not announce to trackers [config: trackers.enabled].
    #[arg(long)]
    no_trackers: bool,
    /// Serve Prometheus metrics here ("" = off) [config: metrics.listen].
    #[arg(long)]
    metrics: Option<String>,
    /// Print engine statistics every this many seconds (0 = only at exit).
    #[arg(long, default_value_t = 10)]
    stats_every: u64,
}

#[derive(clap::Args)]
struct CtlArgs {
    /// API base URL [default: http:// + config control.listen].
    #[arg(long)]
    api: Option<String>,
    /// Token [default: config control.token or control.token_file, else $RINGSEED_TOKEN].
    #[arg(long)]
    token: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: CtlCmd,
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Torrents with their state and totals.
    List,
    /// One torrent.
    Show { hash: String },
    /// Add a .torrent (uploaded), or one the node reads itself (--path), or a magnet link.
    Add {
        /// A .torrent file to upload.
        #[arg(required_unless_present_any = ["path", "magnet"], conflicts_with_all = ["path", "magnet"])]
        file: Option<PathBuf>,
        /// A .torrent file on the node's machine.
        #[arg(long, conflicts_with = "magnet")]
        path: Option<String>,
        #[arg(long)]
        magnet: Option<String>,
        /// Data directory, inside the node's torrents.data_dir [default: data_dir].
        #[arg(long)]
        save_path: Option<String>,
        #[arg(long)]
        paused: bool,
        /// Trust the data without hashing it.
        #[arg(long)]
        skip_check: bool,
        /// A category of the node (without --save-path: saved in the category's save path).
        #[arg(long)]
        category: Option<String>,
        /// A tag (repeatable; unknown tags are created).
        #[arg(long)]
        tag: Vec<String>,
    },
    /// Remove a torrent (its data stays unless --delete-data).
    Remove {
        hash: String,
        #[arg(long)]
        delete_data: bool,
    },
    /// Stop serving a torrent (it stays listed; a restart keeps it paused).
    Pause { hash: String },
    /// Serve a paused torrent again.
    Resume { hash: String },
    /// Hash the torrent's data again.
    Recheck { hash: String },
    /// Its connected peers; with --add, peers to fetch from (a magnet waiting for its
    /// metadata tries every peer it knows again).
    Peers {
        hash: String,
        /// IP:port (repeatable).
        #[arg(long)]
        add: Vec<String>,
    },
    /// Set a torrent's limits, or without HASH the global ones; "none" returns a limit to the
    /// global value (the config's, for global limits). Without options: show them.
    Limits {
        hash: Option<String>,
        /// Upload rate in KiB/s (0 = unlimited).
        #[arg(long)]
        upload_rate_kib: Option<String>,
        /// Uploaded / size at which it stops (or is removed: torrents.limit_action).
        #[arg(long)]
        ratio: Option<String>,
        /// Minutes of seeding after which it stops.
        #[arg(long)]
        seed_time_min: Option<String>,
        /// Torrent only: minutes seeding without sending or receiving payload after which it
        /// stops (fractions allowed).
        #[arg(long, requires = "hash")]
        inactive_seed_time_min: Option<String>,
        /// Global only: the upload rate of each torrent without its own limit, KiB/s.
        #[arg(long, conflicts_with = "hash")]
        torrent_upload_rate_kib: Option<String>,
        /// Download rate in KiB/s (0 = unlimited).
        #[arg(long)]
        download_rate_kib: Option<String>,
        /// Global only: the download rate of each torrent without its own limit, KiB/s.
        #[arg(long, conflicts_with = "hash")]
        torrent_download_rate_kib: Option<String>,
    },
    /// Resumed torrents, checks by reason, upload total.
    Stats,
    /// The categories (name and save path).
    Categories,
    /// Create a category; its save path is inside torrents.data_dir ("" = data_dir).
    CategoryAdd {
        name: String,
        #[arg(long, default_value = "")]
        save_path: String,
    },
    /// Change a category's save path (its torrents stay where they are).
    CategoryEdit {
        name: String,
        #[arg(long, default_value = "")]
        save_path: String,
    },
    /// Remove a category (its torrents lose it).
    CategoryRemove { name: String },
    /// Set a torrent's category, or clear it without NAME.
    SetCategory { hash: String, name: Option<String> },
    /// The node's tags.
    Tags,
    /// Create tags.
    TagCreate {
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Delete tags (from every torrent too).
    TagDelete {
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Add tags to a torrent and/or remove tags from it.
    Tag {
        hash: String,
        #[arg(long)]
        add: Vec<String>,
        #[arg(long)]
        remove: Vec<String>,
    },
    /// Move a torrent in the download queue (needs queueing on).
    Queue {
        hash: String,
        #[arg(value_parser = ["top", "bottom", "up", "down"])]
        to: String,
    },
    /// Force-start a torrent (it skips the queue), or with --off put it back under the queue.
    ForceStart {
        hash: String,
        #[arg(long)]
        off: bool,
    },
    /// Show or set the queueing and share-limit settings; "none" returns one to the config's.
    Settings {
        /// true or false.
        #[arg(long)]
        queueing: Option<String>,
        /// -1 = no limit.
        #[arg(long, allow_hyphen_values = true)]
        max_active_downloads: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        max_active_uploads: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        max_active_torrents: Option<String>,
        /// stop, remove or remove_data.
        #[arg(long)]
        limit_action: Option<String>,
        /// Global inactive-seeding limit in minutes (0 = none).
        #[arg(long)]
        inactive_seed_time_min: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the default config with every key documented.
    PrintDefault,
    /// Validate a config file.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    raise_open_file_limit();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Raises the soft limit on open files to the hard one: every peer, API client and file is a
/// descriptor, and the soft default (1024 on most systems) is far below what a seedbox serves.
/// Unchanged (and logged at debug) if the kernel refuses.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let raised = getrlimit(Resource::RLIMIT_NOFILE)
        .and_then(|(_, hard)| setrlimit(Resource::RLIMIT_NOFILE, hard, hard));
    if let Err(e) = raised {
        tracing::debug!("could not raise the open-file limit: {e}");
    }
}

/// Logs go to stderr (the journal under systemd); `RINGSEED_LOG` sets the level
/// (error, warn, info, debug, trace; default info).
fn init_logging() {
    let level = std::env::var("RINGSEED_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    match cli.cmd {
        Command::Create {
            path,
            output,
            version,
            piece_kib,
            trackers,
            web_seeds,
            private,
            comment,
            no_date,
            threads,
        } => {
            let mut hash = config.hash_options();
            if let Some(t) = threads {
                hash.threads = t as usize;
            }
            let piece_kib = piece_kib.unwrap_or(config.create.piece_kib);
            let opts = CreateOptions {
                version: version.unwrap_or(config.create.version).into(),
                piece_length: (piece_kib != 0).then_some(u64::from(piece_kib) << 10),
                trackers: ringseed::create::tracker_tiers(&trackers),
                web_seeds,
                private,
                comment,
                no_date,
                hash,
            };
            let started = Instant::now();
            let progress = Progress::default();
            let total = ringseed::create::source_size(&path);
            let (bytes, meta) = with_progress(&progress, total, "hashing", || {
                create(&path, &opts, &progress)
            })?;
            std::fs::write(&output, &bytes)
                .with_context(|| format!("writing {}", output.display()))?;
            let secs = started.elapsed().as_secs_f64();
            print_summary(&meta);
            println!(
                "wrote {} ({} bytes) in {:.2} s",
                output.display(),
                bytes.len(),
                secs
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            torrent,
            data,
            json,
            threads,
        } => {
            let meta = load_torrent(&torrent)?;
            let mut opts = config.hash_options();
            if let Some(t) = threads {
                opts.threads = t as usize;
            }
            let report = verify_data(&meta, &data, opts)?;
            if json {
                let out = ringseed::verify::report_json(&torrent, &meta, &report);
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_summary(&meta);
                print_report(&report);
            }
            Ok(if report.all_good() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Seed {
            torrent,
            data,
            serve: args,
        } => serve(&torrent, &data, &args, &config),
        Command::Run { serve: args } => run_node(cli.config.as_deref(), &args, &config),
        Command::Download {
            source,
            data,
            peer,
            seed,
            json,
            stall_timeout,
            serve: args,
        } => {
            let opts = ringseed::leecher::DownloadOptions {
                source,
                data,
                peers: peer,
                seed,
                stall_timeout: std::time::Duration::from_secs(stall_timeout),
                hash: config.hash_options(),
            };
            download(&opts, json, &args, &config)
        }
        Command::Ctl(args) => ctl(args, &config),
        Command::Fetch {
            torrent,
            peer,
            pipeline,
            json,
        } => {
            let meta = load_torrent(&torrent)?;
            let (_, r) = ringseed::fetch::fetch(&meta.info, peer, pipeline.max(1))?;
            if json {
                let out = serde_json::json!({
                    "bytes": r.bytes,
                    "seconds": r.elapsed.as_secs_f64(),
                    "gib_per_s": r.bytes_per_sec() / GIB,
                });
                println!("{out}");
            } else {
                println!(
                    "fetched {:.3} GiB in {:.3} s = {:.2} GiB/s, every piece checked",
                    r.bytes as f64 / GIB,
                    r.elapsed.as_secs_f64(),
                    r.bytes_per_sec() / GIB
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Info { torrent, json } => {
            if torrent.starts_with("magnet:") {
                let m = ringseed::metainfo::Magnet::parse(&torrent)?;
                let out = ringseed::metainfo::summary::magnet_json(&m);
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(ExitCode::SUCCESS);
            }
            let meta = load_torrent(Path::new(&torrent))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&ringseed::metainfo::summary::info_json(&meta))?
                );
            } else {
                print_summary(&meta);
                for (_, f) in meta.info.layout.data_files() {
                    println!("  {:>14}  {}", f.length, f.path.join("/"));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { cmd } => match cmd {
            ConfigCmd::PrintDefault => {
                print!("{}", config::print_default());
                Ok(ExitCode::SUCCESS)
            }
            ConfigCmd::Check { file } => {
                Config::load(&file)?;
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Wallet => {
            let path = config.speed.key_path(&config.state);
            let (w, created) = ringseed::speed::wallet::Wallet::load_or_create(&path)?;
            if created {
                eprintln!("created a new wallet key in {} (mode 0600)", path.display());
            }
            println!("tron {}", w.address().to_tron());
            println!("evm  {}", w.address().to_evm());
            Ok(ExitCode::SUCCESS)
        }
        Command::Earnings { json } => earnings(&config, json),
        Command::Settle {
            out,
            submit,
            rpc,
            receipt_timeout,
        } => match (out, submit, rpc) {
            (_, true, Some(rpc)) => settle_submit(&config, &rpc, receipt_timeout),
            (Some(out), false, _) => settle(&config, &out),
            _ => bail!("settle needs --out FILE, or --submit --rpc URL"),
        },
        Command::Channel { cmd } => channel(cmd),
        Command::Demo { dir, size_mib } => demo(dir, size_mib, &config),
        Command::Bench(args) => bench(*args),
    }
}

const GIB: f64 = (1u64 << 30) as f64;

fn load_torrent(path: &Path) -> Result<Metainfo> {
    Ok(Metainfo::load(path)?)
}

fn verify_data(meta: &Metainfo, data: &Path, opts: verify::HashOptions) -> Result<VerifyReport> {
    let files = DataFiles::open(&meta.info.layout, data)?;
    let progress = Progress::default();
    Ok(with_progress(
        &progress,
        meta.info.layout.total_length,
        "verifying",
        || verify::verify(&meta.info, &files, opts, &progress),
    ))
}

/// Runs `work` while drawing a progress bar on a terminal (nothing when stderr is not one).
fn with_progress<T: Send>(
    progress: &Progress,
    total: u64,
    what: &str,
    work: impl FnOnce() -> T + Send,
) -> T {
    if !std::io::stderr().is_terminal() {
        return work();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    let out = std::thread::scope(|s| {
        let h = s.spawn(work);
        while !h.is_finished() {
            bar.set_position(progress.bytes.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    bar.finish_and_clear();
    out
}

fn print_summary(meta: &Metainfo) {
    let i = &meta.info;
    println!("name:       {}", i.name);
    if let Some(h) = i.hash.v1 {
        println!("info-hash:  {} (v1)", hex(&h));
    }
    if let Some(h) = i.hash.v2 {
        println!("info-hash:  {} (v2)", hex(&h));
    }
    println!(
        "layout:     {:?}, {} files, {} pieces of {} KiB, {:.3} GiB{}",
        i.version,
        i.layout.data_files().count(),
        i.layout.num_pieces,
        i.layout.piece_length >> 10,
        i.layout.data_length() as f64 / GIB,
        if i.private { ", private" } else { "" }
    );
}

fn print_report(r: &VerifyReport) {
    println!(
        "pieces:     {} good, {} bad, {} missing (of {})",
        r.good,
        r.bad.len(),
        r.missing.len(),
        r.pieces
    );
    if !r.bad.is_empty() {
        println!("bad:        {}", list_preview(&r.bad));
    }
    if !r.missing.is_empty() {
        println!("missing:    {}", list_preview(&r.missing));
    }
    for (piece, e) in r.errors.iter().take(10) {
        println!("read error: piece {piece}: {e}");
    }
    println!(
        "hashed:     {:.3} GiB in {:.3} s = {:.2} GiB/s",
        r.bytes as f64 / GIB,
        r.elapsed.as_secs_f64(),
        r.bytes_per_sec() / GIB
    );
}

fn list_preview(v: &[u32]) -> String {
    let mut s: Vec<String> = v.iter().take(20).map(u32::to_string).collect();
    if v.len() > 20 {
        s.push(format!("… ({} more)", v.len() - 20));
    }
    s.join(", ")
}

/// `ringseed demo`: payload, torrent, verification, loopback seed and fetch, each step printed.
fn demo(dir: Option<PathBuf>, size_mib: u64, config: &Config) -> Result<ExitCode> {
    use ringseed::demo::{self, DemoDir};
    let dir = DemoDir::new(dir);
    let total = demo::write_payload(&dir, size_mib)?;
    let progress = Progress::default();
    let meta = with_progress(&progress, total, "creating", || {
        demo::create_torrent(&dir, config, &progress)
    })?;
    println!("created {}", dir.torrent().display());
    print_summary(&meta);
    let report = verify_data(&meta, &dir.path, config.hash_options())?;
    print_report(&report);
    if !report.all_good() {
        bail!("demo payload failed verification");
    }
    let (d, r) = demo::download_cycle(&meta, &dir, config, |step| println!("{step}"))?;
    println!(
        "downloaded: {:.3} GiB from a magnet link in {:.3} s = {:.2} GiB/s (metadata from {}), every piece checked, every file byte-identical",
        d.bytes as f64 / GIB,
        d.elapsed.as_secs_f64(),
        d.bytes as f64 / GIB / d.elapsed.as_secs_f64().max(1e-9),
        d.metadata_from
    );
    println!(
        "seeded:     {:.3} GiB fetched back from the downloader in {:.3} s = {:.2} GiB/s, byte-identical",
        r.fetched.bytes as f64 / GIB,
        r.fetched.elapsed.as_secs_f64(),
        r.fetched.bytes_per_sec() / GIB
    );
    println!(
        "downloader: {} bytes uploaded, {} blocks, {} connection(s)",
        r.bytes_up, r.blocks_up, r.connections
    );
    if dir.is_temporary() {
        println!(
            "demo ok (its files in {} are removed now; --dir keeps them)",
            dir.path.display()
        );
    } else {
        println!("demo ok: payload and torrent in {}", dir.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens one torrent's data for seeding (`seed`): hashes it first unless `skip_check`, printing
/// its summary and the check's report.
fn open_torrent(
    path: &Path,
    data: &Path,
    config: &Config,
    skip_check: bool,
) -> Result<ringseed::engine::Torrent> {
    let meta = load_torrent(path)?;
    print_summary(&meta);
    let verify = (!skip_check).then(|| config.hash_options());
    let (t, report) = ringseed::engine::Torrent::open(meta, data, verify)
        .with_context(|| format!("opening data in {}", data.display()))?;
    if let Some(r) = &report {
        print_report(r);
        if r.good == 0 && r.pieces > 0 {
            bail!(
                "{}: no piece of the data in {} verifies",
                path.display(),
                data.display()
            );
        }
    }
    t.upload_limit
        .set_rate(config.engine.torrent_upload_rate_limit_kib << 10);
    Ok(t)
}

/// Engine settings and session options from the config with the command line's overrides.
fn serve_setup(
    args: &ServeArgs,
    config: &Config,
) -> Result<(
    ringseed::engine::Settings,
    ringseed::session::SessionOptions,
)> {
    let overrides = ringseed::serve::Overrides {
        listen: args.listen,
        workers: args.workers,
        no_trackers: args.no_trackers,
        metrics: args.metrics.clone(),
    };
    Ok(ringseed::serve::setup(&overrides, config)?)
}

/// `ringseed seed`: seeds one torrent until SIGINT or SIGTERM; SIGHUP applies the config's rate
/// limits again.
fn serve(torrent: &Path, data: &Path, args: &ServeArgs, config: &Config) -> Result<ExitCode> {
    use ringseed::session::Session;
    let (settings, options) = serve_setup(args, config)?;
    let skip_check = args.skip_check || config.torrents.skip_check;
    let opened = std::sync::Arc::new(open_torrent(torrent, data, config, skip_check)?);
    // Block the signals before any thread starts, so every thread inherits the mask and only
    // the signal thread receives them.
    let signals = ringseed::serve::signal_thread()?;
    let session = Session::start(settings, options)?;
    session.add_torrent(opened)?;
    let status = format!("seeding 1 torrent(s) on {}", session.engine().local_addr());
    say!("{status} with {} workers", session.engine().stats().len());
    if let Some(m) = session.metrics_addr() {
        say!("metrics on http://{m}/metrics");
    }
    say_earning(&session);
    if let Some(d) = session.dht() {
        say!("DHT on udp {}", d.local_addr());
    }
    ringseed::serve::notify_ready(&status);
    wait_for_stop(&signals, args.stats_every, session.engine(), || {
        tracing::info!("SIGHUP: `ringseed seed` has no config to reload");
    });
    let stats = session.shutdown();
    say!("{}", serde_json::to_string(&stats)?);
    Ok(ExitCode::SUCCESS)
}

/// `ringseed download`: a progress bar on a terminal (or JSON lines with `--json`), then the
/// final report; exit 0 once every piece is verified and on disk.
fn download(
    opts: &ringseed::leecher::DownloadOptions,
    json: bool,
    args: &ServeArgs,
    config: &Config,
) -> Result<ExitCode> {
    use ringseed::leecher;
    let (settings, options) = serve_setup(args, config)?;
    let signals = ringseed::serve::signal_thread()?;
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} pieces {prefix}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let every = std::time::Duration::from_millis(if json { 1000 } else { 250 });
    let result = leecher::run(opts, settings, options, &signals, every, |p| {
        if json {
            if let Ok(line) = serde_json::to_string(p) {
                println!("{line}");
            }
        } else if let Some(bar) = &bar {
            bar.set_length(u64::from(p.pieces));
            bar.set_position(u64::from(p.pieces_done));
            bar.set_message(format!("{} {}", p.state, p.name));
            bar.set_prefix(format!(
                "{:.1} MiB/s, {} peers, ETA {}",
                p.rate / f64::from(1u32 << 20),
                p.peers,
                p.eta_s.map_or("-".into(), |s| format!("{s} s"))
            ));
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let done = result?;
    let p = &done.progress;
    if json {
        println!(
            "{}",
            serde_json::json!({"done": true, "progress": p, "stats": done.stats})
        );
    } else {
        say!(
            "{}: {} pieces, {:.3} GiB verified and on disk in {:.1} s ({:.3} GiB received, {} bad pieces, {} peers banned)",
            p.name,
            p.pieces,
            p.size as f64 / GIB,
            p.elapsed_s,
            p.downloaded as f64 / GIB,
            p.hash_failures,
            p.banned
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Names the wallet a node with `[speed] enabled` earns into.
fn say_earning(session: &ringseed::session::Session) {
    if let Some(s) = session.speed() {
        say!(
            "earning BTT as {} ({})",
            s.offer.payee.to_tron(),
            s.offer.payee.to_evm()
        );
    }
}

/// `ringseed run`: the service. Resume state, the config's torrents, the control API; SIGHUP
/// re-reads the config (limits and new torrents at once, other keys at restart).
fn run_node(config_path: Option<&Path>, args: &ServeArgs, config: &Config) -> Result<ExitCode> {
    use ringseed::control::node::Node;
    let (settings, options) = serve_setup(args, config)?;
    let mut config = config.clone();
    config.torrents.skip_check |= args.skip_check;
    let signals = ringseed::serve::signal_thread()?;
    let node = Node::start(&config, settings, options)?;
    let engine = node.session().engine();
    let status = format!(
        "seeding {} torrent(s) on {}",
        node.service().list().len(),
        engine.local_addr()
    );
    say!("{status} with {} workers", engine.stats().len());
    if let Some(m) = node.session().metrics_addr() {
        say!("metrics on http://{m}/metrics");
    }
    if let Some(a) = node.api_addr() {
        say!("control API on http://{a}");
    }
    say_earning(node.session());
    if let Some(d) = node.session().dht() {
        say!("DHT on udp {}", d.local_addr());
    }
    ringseed::serve::notify_ready(&status);
    wait_for_stop(&signals, args.stats_every, node.session().engine(), || {
        reload(config_path, &config, &node)
    });
    let stats = node.shutdown();
    say!("{}", serde_json::to_string(&stats)?);
    Ok(ExitCode::SUCCESS)
}

/// Serves until SIGINT or SIGTERM, printing statistics every `stats_every` seconds and
/// calling `on_hup` for each SIGHUP; then says that it is stopping.
fn wait_for_stop(
    signals: &crossbeam_channel::Receiver<nix::sys::signal::Signal>,
    stats_every: u64,
    engine: &ringseed::engine::Engine,
    on_hup: impl FnMut(),
) {
    let signal = ringseed::serve::wait_for_stop(signals, stats_every, engine, on_hup, |t| {
        say!(
            "[{:>6.0}s] peers {}, uploaded {:.3} GiB, {:.1} MiB/s",
            t.elapsed.as_secs_f64(),
            t.peers,
            t.bytes as f64 / GIB,
            t.bytes_per_s / (1u64 << 20) as f64
        );
    });
    say!("{signal}: announcing stopped, closing peers");
}

/// SIGHUP: re-reads the config file and applies what can change live; says which changed keys
/// need a restart. A bad file changes nothing.
fn reload(path: Option<&Path>, running: &Config, node: &ringseed::control::node::Node) {
    let Some(path) = path else {
        tracing::info!("SIGHUP: no config file to reload");
        return;
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: keeping the running config: {e}");
            return;
        }
    };
    let plan = ringseed::control::node::reload_plan(running, new);
    if !plan.restart.is_empty() {
        tracing::warn!("{}", ringseed::control::node::RESTART_WARNING);
    }
    match node.reload(&plan.config) {
        Ok(added) => say!(
            "SIGHUP: reloaded {}: {added} torrent(s) added, limits applied",
            path.display()
        ),
        Err(e) => tracing::error!("SIGHUP: {e}"),
    }
}

/// `ringseed earnings`: reads the ledger read-only, so it works beside a running node.
fn earnings(config: &Config, json: bool) -> Result<ExitCode> {
    use ringseed::speed::settle::btt;
    let r = ringseed::speed::settle::earnings(&config.state.db_path())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "total earned      {} base units ({} BTT)",
        r.total,
        btt(&r.total)
    );
    println!("unclaimed         {} base units", r.unclaimed);
    println!("claimed on chain  {} base units", r.claimed);
    if r.unclaimable_v1 != "0" {
        println!(
            "unclaimable (v1) {} base units (vouchers of the old format)",
            r.unclaimable_v1
        );
    }
    println!(
        "channels          {} ({} open)",
        r.channels, r.channels_open
    );
    for (title, rows) in [
        ("day", &r.by_day),
        ("torrent", &r.by_torrent),
        ("payer", &r.by_payer),
    ] {
        println!("\n{title:<42} {:>28} {:>9}", "base units", "vouchers");
        for e in rows {
            println!("{:<42} {:>28} {:>9}", e.key, e.amount, e.vouchers);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ringseed settle`: exports claims once; the file is written before the command returns.
fn settle(config: &Config, out: &Path) -> Result<ExitCode> {
    let claims = ringseed::speed::settle::settle(&config.state.db_path(), out)?;
    println!("{} claim(s) written to {}", claims.len(), out.display());
    Ok(ExitCode::SUCCESS)
}

/// `ringseed settle --submit`: claims on chain; exits 1 if a claim was refused, reverted or is
/// still pending (it stays claimable: run again).
fn settle_submit(config: &Config, rpc: &str, receipt_timeout: u64) -> Result<ExitCode> {
    use ringseed::speed::submit::{SubmitOptions, submit};
    let contract = config
        .speed
        .contract_address()
        .context("settle --submit needs [speed] contract = \"0x…\"")?;
    let key = config.speed.key_path(&config.state);
    let wallet = ringseed::speed::wallet::Wallet::load(&key)
        .with_context(|| format!("the node's wallet key {}", key.display()))?;
    let domain = ringseed::speed::voucher::Domain {
        chain_id: config.speed.chain_id,
        contract,
    };
    let mut opts = SubmitOptions::new(rpc);
    opts.receipt_timeout = Duration::from_secs(receipt_timeout);
    let report = submit(&config.state.db_path(), &wallet, domain, &opts)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    let failed = report
        .channels
        .iter()
        .any(|c| matches!(c.status, "refused" | "reverted" | "pending"));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `ringseed channel open`: the paying side's channel, opened and funded on chain.
fn channel(cmd: ChannelCmd) -> Result<ExitCode> {
    use ringseed::speed::chain::rpc::Rpc;
    use ringseed::speed::chain::send::{OpenRequest, open_channel};
    use ringseed::speed::voucher::ChannelId;
    use ringseed::speed::wallet::{Address, Wallet};
    let ChannelCmd::Open {
        rpc,
        contract,
        payee,
        deposit,
        expiry,
        key,
        id,
    } = cmd;
    let contract = Address::parse(&contract).context("--contract")?;
    let payee = Address::parse(&payee).context("--payee")?;
    let wallet = Wallet::load(&key).with_context(|| format!("key {}", key.display()))?;
    let id = match id {
        Some(s) => ChannelId::from_hex(&s).context("--id: 0x + 64 hex digits")?,
        None => {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random channel id: {e}"))?;
            ChannelId(b)
        }
    };
    let rpc = Rpc::new(&rpc)?;
    let req = OpenRequest {
        contract,
        id,
        payee,
        deposit,
        expiry,
    };
    let opened = open_channel(&rpc, &wallet, &req, Duration::from_secs(120))?;
    println!("{}", serde_json::to_string_pretty(&opened)?);
    Ok(ExitCode::SUCCESS)
}

/// `ringseed ctl`: one API request, its answer printed.
fn ctl(args: CtlArgs, config: &Config) -> Result<ExitCode> {
    use ringseed::control::client::{ApiClient, Request, api_url};
    use ringseed::control::types::{
        AddPeersRequest, AddRequest, CategoryRequest, LimitChange, LimitsRequest,
        SetCategoryRequest, SettingsRequest, TagsRequest, TorrentTagsRequest,
    };
    use serde_json::Value;
    let api = match args.api {
        Some(a) => a,
        None => api_url(&config.control.listen)
            .context("control.listen is off or invalid; give --api")?,
    };
    // --token, then $RINGSEED_TOKEN, then the config's token or the node's token file.
    let token = match args.token.or_else(|| {
        std::env::var("RINGSEED_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    }) {
        Some(t) => Some(t),
        None => config
            .control
            .client_token(&config.state)
            .context("reading the control API token (give --token or $RINGSEED_TOKEN)")?,
    };
    let client = ApiClient::new(&api, token)?;
    let limit = |v: &Option<String>, key: &str| -> Result<LimitChange> {
        match v {
            Some(v) => {
                LimitChange::from_arg(v).with_context(|| format!("--{key} {v:?}: a number or none"))
            }
            None => Ok(LimitChange::Keep),
        }
    };
    let request = match &args.cmd {
        CtlCmd::List => Request::List,
        CtlCmd::Show { hash } => Request::Show(hash.clone()),
        CtlCmd::Add {
            file,
            path,
            magnet,
            save_path,
            paused,
            skip_check,
            category,
            tag,
        } => {
            let torrent = match file {
                Some(f) => {
                    let bytes = std::fs::read(f).with_context(|| f.display().to_string())?;
                    Some(AddRequest::encode_torrent(&bytes))
                }
                None => None,
            };
            Request::Add(AddRequest {
                torrent,
                path: path.clone(),
                magnet: magnet.clone(),
                save_path: save_path.clone(),
                paused: *paused,
                // Only sent when asked for: absent means the node's torrents.skip_check.
                skip_check: skip_check.then_some(true),
                category: category.clone(),
                tags: tag.clone(),
            })
        }
        CtlCmd::Remove { hash, delete_data } => Request::Remove {
            hash: hash.clone(),
            delete_data: *delete_data,
        },
        CtlCmd::Pause { hash } => Request::Pause(hash.clone()),
        CtlCmd::Resume { hash } => Request::Resume(hash.clone()),
        CtlCmd::Recheck { hash } => Request::Recheck(hash.clone()),
        CtlCmd::Peers { hash, add } if add.is_empty() => Request::Peers(hash.clone()),
        CtlCmd::Peers { hash, add } => Request::AddPeers {
            hash: hash.clone(),
            peers: AddPeersRequest { peers: add.clone() },
        },
        CtlCmd::Limits {
            hash,
            upload_rate_kib,
            ratio,
            seed_time_min,
            inactive_seed_time_min,
            torrent_upload_rate_kib,
            download_rate_kib,
            torrent_download_rate_kib,
        } => Request::Limits {
            hash: hash.clone(),
            change: LimitsRequest {
                upload_rate_kib: limit(upload_rate_kib, "upload-rate-kib")?,
                ratio: limit(ratio, "ratio")?,
                seed_time_min: limit(seed_time_min, "seed-time-min")?,
                inactive_seed_time_min: limit(inactive_seed_time_min, "inactive-seed-time-min")?,
                torrent_upload_rate_kib: limit(torrent_upload_rate_kib, "torrent-upload-rate-kib")?,
                download_rate_kib: limit(download_rate_kib, "download-rate-kib")?,
                torrent_download_rate_kib: limit(
                    torrent_download_rate_kib,
                    "torrent-download-rate-kib",
                )?,
            },
        },
        CtlCmd::Stats => Request::Stats,
        CtlCmd::Categories => Request::Categories,
        CtlCmd::CategoryAdd { name, save_path } => Request::CreateCategory(CategoryRequest {
            name: Some(name.clone()),
            save_path: save_path.clone(),
        }),
        CtlCmd::CategoryEdit { name, save_path } => Request::EditCategory {
            name: name.clone(),
            change: CategoryRequest {
                name: None,
                save_path: save_path.clone(),
            },
        },
        CtlCmd::CategoryRemove { name } => Request::RemoveCategory(name.clone()),
        CtlCmd::SetCategory { hash, name } => Request::SetCategory {
            hash: hash.clone(),
            change: SetCategoryRequest {
                category: name.clone(),
            },
        },
        CtlCmd::Tags => Request::Tags,
        CtlCmd::TagCreate { tags } => Request::CreateTags(TagsRequest { tags: tags.clone() }),
        CtlCmd::TagDelete { tags } => Request::DeleteTags(TagsRequest { tags: tags.clone() }),
        CtlCmd::Tag { hash, add, remove } => Request::TorrentTags {
            hash: hash.clone(),
            change: TorrentTagsRequest {
                add: add.clone(),
                remove: remove.clone(),
            },
        },
        CtlCmd::Queue { hash, to } => Request::Action {
            hash: hash.clone(),
            action: format!("queue_{to}"),
        },
        CtlCmd::ForceStart { hash, off } => Request::Action {
            hash: hash.clone(),
            action: if *off { "unforce_start" } else { "force_start" }.into(),
        },
        CtlCmd::Settings {
            queueing,
            max_active_downloads,
            max_active_uploads,
            max_active_torrents,
            limit_action,
            inactive_seed_time_min,
        } => {
            fn opt<T: std::str::FromStr>(
                v: &Option<String>,
                key: &str,
            ) -> Result<Option<Option<T>>> {
                match v.as_deref() {
                    None => Ok(None),
                    Some("none") => Ok(Some(None)),
                    Some(s) => s
                        .parse::<T>()
                        .map(|v| Some(Some(v)))
                        .map_err(|_| anyhow::anyhow!("--{key} {s:?}: not a valid value, or none")),
                }
            }
            let action = match limit_action.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(a) => Some(Some(
                    ringseed::config::LimitAction::from_name(a).with_context(|| {
                        format!("--limit-action {a:?}: stop, remove, remove_data or none")
                    })?,
                )),
            };
            let change = SettingsRequest {
                queueing: opt(queueing, "queueing")?,
                max_active_downloads: opt(max_active_downloads, "max-active-downloads")?,
                max_active_uploads: opt(max_active_uploads, "max-active-uploads")?,
                max_active_torrents: opt(max_active_torrents, "max-active-torrents")?,
                limit_action: action,
                inactive_seed_time_min: opt(inactive_seed_time_min, "inactive-seed-time-min")?,
            };
            Request::Settings((change != SettingsRequest::default()).then_some(change))
        }
    };
    let answer = client.send(&request)?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let row = |t: &Value| {
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let n = |k: &str| t.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let eta = t
            .get("eta_s")
            .and_then(Value::as_u64)
            .map_or("-".to_string(), |e| format!("{e}s"));
        format!(
            "{}  {:<11} {:>6.1}%  down {:>10} {:>8.1} MiB/s eta {:>6}  up {:>10}  ratio {:>5.2}  peers {:>4}  {}",
            s("info_hash"),
            s("state"),
            100.0 * n("verified_pieces") / n("pieces").max(1.0),
            n("downloaded") as u64,
            n("download_rate") / f64::from(1u32 << 20),
            eta,
            n("uploaded") as u64,
            n("ratio"),
            n("peers") as u64,
            s("name")
        )
    };
    match (&args.cmd, &answer) {
        (CtlCmd::List, Value::Array(list)) => {
            for t in list {
                say!("{}", row(t));
            }
        }
        (CtlCmd::Peers { .. }, Value::Array(list)) => {
            for p in list {
                say!(
                    "{}  up {}  {}  {}",
                    p.get("addr").and_then(Value::as_str).unwrap_or(""),
                    p.get("uploaded").and_then(Value::as_u64).unwrap_or(0),
                    if p.get("choked").and_then(Value::as_bool).unwrap_or(true) {
                        "choked"
                    } else {
                        "unchoked"
                    },
                    p.get("client").and_then(Value::as_str).unwrap_or("")
                );
            }
        }
        (
            CtlCmd::Stats
            | CtlCmd::Remove { .. }
            | CtlCmd::Categories
            | CtlCmd::CategoryAdd { .. }
            | CtlCmd::CategoryEdit { .. }
            | CtlCmd::CategoryRemove { .. }
            | CtlCmd::Tags
            | CtlCmd::TagCreate { .. }
            | CtlCmd::TagDelete { .. }
            | CtlCmd::Settings { .. },
            v,
        ) => say!("{v}"),
        (CtlCmd::Limits { .. }, v) if v.get("info_hash").is_none() => say!("{v}"),
        (_, t) => say!("{}", row(t)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `ringseed bench`: runs the swarm (against a spawned seeder or a given one) and prints.
fn bench(args: BenchArgs) -> Result<ExitCode> {
    use ringseed::bench::cli::{self as bench_cli, SpawnOptions, SwarmOptions};
    match args.cmd {
        Some(BenchCmd::Ceiling {
            conns,
            duration,
            cpus,
            json,
        }) => return bench_ceiling(&conns, duration, &cpus, json),
        Some(BenchCmd::Sweep(sweep)) => return bench_sweep(sweep),
        None => {}
    }
    let swarm = SwarmOptions {
        peers: args.peers,
        reqq: args.reqq,
        block_kib: args.block_kib,
        duration: args.duration,
        bytes: args.bytes,
        pattern: args.pattern,
        workers: args.workers,
        verify_all: args.verify_all,
        timeout: args.timeout,
        one_source: args.one_source,
        source_base: args.source_base,
        idle: args.idle,
        pay: args.pay,
        budget: args.budget,
        paying_peers: args.paying_peers,
        encrypt: args.encrypt,
        chain: match (args.rpc, args.contract, args.payer_key) {
            (Some(rpc), Some(contract), Some(payer_key)) => {
                Some(ringseed::bench::chain_pay::ChainPay {
                    rpc,
                    contract: ringseed::speed::wallet::Address::parse(&contract)
                        .context("--contract")?,
                    payer_key,
                    payee: args
                        .payee
                        .as_deref()
                        .map(ringseed::speed::wallet::Address::parse)
                        .transpose()
                        .context("--payee")?,
                })
            }
            _ => None,
        },
    };
    let seeder = if args.spawn_seeder {
        if !args.json {
            eprintln!(
                "generating {} MiB and seeding it on loopback...",
                args.size_mib
            );
        }
        let spawn = SpawnOptions {
            size_mib: args.size_mib,
            workers: args.seeder_workers,
            torrents: args.torrents,
            upload_path: args.upload_path,
        };
        Some(ringseed::bench::LocalSeeder::start(
            &swarm.seeder_spec(&spawn),
        )?)
    } else {
        None
    };
    let live = std::io::stderr().is_terminal() && !args.json;
    let report = bench_cli::run(seeder.as_ref(), &args.target.target(), &swarm, &mut |s| {
        if live {
            eprint!(
                "\r{:>5.0} s  {:>7.2} GiB/s  {:>9.3} GiB  {} held  {} connected  {} errors   ",
                s.elapsed.as_secs_f64(),
                s.bytes_last_second as f64 / GIB,
                s.bytes as f64 / GIB,
                s.held,
                s.connected,
                s.errors
            );
        }
    })?;
    if live {
        eprintln!();
    }
    if let Some(svg) = &args.svg {
        ringseed::bench::chart::draw_run(&report, svg)?;
    }
    if let Some(sp) = seeder.as_ref().and_then(bench_cli::finish_speed) {
        let rejected: Vec<String> = sp
            .rejected
            .iter()
            .map(|(n, name)| format!("{n} {name}"))
            .collect();
        eprintln!(
            "speed: {} bids, {} vouchers accepted, refused: [{}], {} base units earned, {:.3} GiB sold",
            sp.bids,
            sp.vouchers_accepted,
            rejected.join(", "),
            sp.earned,
            sp.bytes_sold as f64 / GIB
        );
    }
    drop(seeder);
    if args.json {
        let v = bench_cli::json_with_passed(&report, report.passed())?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_bench(&report);
    }
    if !report.passed() {
        return Ok(ExitCode::FAILURE);
    }
    if report.bytes == 0 {
        // Nothing was measured: not a pass, but not bad data either (the `verify` convention).
        eprintln!("error: no block was received (see the errors above)");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// `ringseed bench sweep`: the grid, one line per point as it finishes, then the table.
fn bench_sweep(args: SweepArgs) -> Result<ExitCode> {
    use ringseed::bench::cli::{SpawnOptions, SweepCliOptions};
    use ringseed::bench::sweep;
    let opts = SweepCliOptions {
        target: args.target.target(),
        spawn: args.spawn_seeder.then_some(SpawnOptions {
            size_mib: args.size_mib,
            workers: args.seeder_workers,
            torrents: None,
            upload_path: ringseed::engine::UploadPath::Auto,
        }),
        peers: args.peers.clone(),
        reqq: args.reqq.clone(),
        paths: args.paths.clone(),
        duration: args.duration,
        block_kib: args.block_kib,
        pattern: args.pattern,
        workers: args.workers,
    };
    let header = format!(
        "{:>6} {:>6} {:>9} {:>8} {:>10} {:>10} {:>10} {:>9} {:>6} {:>6}",
        "peers",
        "reqq",
        "path",
        "GiB/s",
        "p50 ms",
        "p99 ms",
        "CPU-s/GiB",
        "RSS MiB",
        "conn",
        "errors"
    );
    let line = |r: &sweep::SweepRow| {
        format!(
            "{:>6} {:>6} {:>9} {:>8.3} {:>10.3} {:>10.3} {:>10} {:>9} {:>6} {:>6}{}",
            r.peers,
            r.reqq,
            r.upload_path.map_or("-", sweep::path_name),
            r.gib_per_s,
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            r.seeder_cpu_seconds_per_gib
                .map_or("-".into(), |c| format!("{c:.3}")),
            r.seeder_rss_peak_bytes.map_or("-".into(), |b| format!(
                "{:.1}",
                b as f64 / (1 << 20) as f64
            )),
            r.connected,
            r.errors,
            if r.passed { "" } else { "  BAD DATA" }
        )
    };
    let live = !args.json;
    let report = ringseed::bench::cli::sweep(
        &opts,
        &mut || {
            if live {
                println!("{header}");
            }
        },
        &mut |r| {
            if live {
                println!("{}", line(r));
            }
        },
    )?;
    if args.json {
        let v = ringseed::bench::cli::json_with_passed(&report, report.passed())?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if let Some(best) = report.best() {
        println!("fastest: {}", line(best).trim_start());
    }
    if let Some(svg) = &args.svg {
        ringseed::bench::chart::draw_sweep(&report, svg)?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `ringseed bench ceiling`: loopback TCP from memory, one measurement per connection count.
fn bench_ceiling(conns: &[usize], duration: f64, cpus: &[usize], json: bool) -> Result<ExitCode> {
    let mut first = true;
    let reports = ringseed::bench::cli::ceiling(conns, duration, cpus, &mut |r| {
        if !json {
            if first {
                println!(
                    "{:>6} {:>9} {:>15} {:>15}",
                    "conns", "GiB/s", "send CPU-s/GiB", "recv CPU-s"
                );
                first = false;
            }
            println!(
                "{:>6} {:>9.3} {:>15.3} {:>15.2}",
                r.conns, r.gib_per_s, r.sender_cpu_seconds_per_gib, r.receiver_cpu_seconds
            );
        }
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_bench(r: &ringseed::bench::BenchReport) {
    let ms = |us: u64| us as f64 / 1000.0;
    let l = &r.latency_us;
    println!(
        "peers {}  reqq {}  block {} KiB  {:?}  {} worker(s)",
        r.peers,
        r.reqq,
        r.block_len >> 10,
        r.pattern,
        r.workers
    );
    println!("  throughput    {:>10.3} GiB/s", r.gib_per_s);
    println!(
        "  bytes         {:>10} ({:.3} GiB) in {} blocks",
        r.bytes,
        r.bytes as f64 / GIB,
        r.blocks
    );
    println!("  duration      {:>10.3} s", r.seconds);
    println!(
        "  latency (ms)  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p99_9),
        ms(l.max)
    );
    println!(
        "  connections   {} connected, {} held at the end",
        r.connected, r.held_at_end
    );
    if r.errors.is_empty() {
        println!("  errors        none");
    } else {
        let list: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("  errors        {}", list.join(", "));
    }
    if r.unanswered_requests > 0 {
        println!(
            "  unanswered    {} request(s) still out when the drain timed out",
            r.unanswered_requests
        );
    }
    if r.rejected_requests > 0 {
        println!(
            "  rejected      {} request(s), each asked again",
            r.rejected_requests
        );
    }
    println!(
        "  verified      {} piece(s), {} bad",
        r.pieces_verified,
        r.bad_pieces.len()
    );
    if let Some(c) = r.bench_cpu_seconds {
        println!("  bench CPU     {c:.2} s");
    }
    if let Some(s) = &r.seeder {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let who = match s.pid {
            Some(pid) => format!("pid {pid}"),
            None => format!("{} worker(s)", s.workers),
        };
        println!(
            "  seeder        {who}, {:.2} CPU-s ({:.2} CPU-s/GiB{}), {} bytes up",
            s.cpu_seconds,
            s.cpu_seconds_per_gib,
            match (s.pid, s.per_thread) {
                (Some(_), _) => ", its whole process",
                (None, true) => ", its threads only",
                (None, false) => ", whole process: threads not separable",
            },
            s.bytes_up
        );
        if let Some(sp) = &s.speed {
            println!(
                "  seeder speed  {} bids, {} vouchers accepted, {} superseded, {} refused, {} earned, {:.2} CPU-s in verifier + database",
                sp.bids,
                sp.vouchers_accepted,
                sp.vouchers_superseded,
                sp.refused,
                sp.earned,
                s.speed_cpu_seconds.unwrap_or(0.0)
            );
        }
        println!(
            "  RSS           {:.1} MiB {} at the end, {:.1} MiB peak, {:.1} MiB before the swarm",
            mib(s.process_rss_bytes),
            if s.pid.is_some() {
                "seeder"
            } else {
                "process (seeder + bench)"
            },
            mib(s.rss_peak_bytes),
            mib(s.rss_before_bytes)
        );
    }
    if let Some(p) = &r.payment {
        println!(
            "  payers        {} of {} confirmed, {} vouchers sent, {} refused, {} signed, {} acknowledged",
            p.confirmed, p.payers, p.vouchers_sent, p.refusals, p.signed, p.acked
        );
    }
    for line in r.group_lines() {
        println!("{line}");
    }
    if !r.passed() {
        println!(
            "FAILED: {} piece(s) with wrong data: {}",
            r.bad_pieces.len(),
            list_preview(&r.bad_pieces)
        );
    }
}
