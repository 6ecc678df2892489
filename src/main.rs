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
use ringseed::hash::{self, Progress, VerifyReport};
use ringseed::metainfo::{Metainfo, hex};
use ringseed::storage::DataFiles;

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
    Bench(BenchArgs),
    /// Show what a .torrent or magnet link holds.
    Info {
        /// A .torrent file or a magnet URI.
        torrent: String,
        #[arg(long)]
        json: bool,
    },
    /// Print the node's wallet addresses (TRON and EVM/BTTC), creating its key on first use.
    Wallet,
    /// BTT earned: total, per day, per torrent and per payer, from the ledger (read-only).
    Earnings {
        #[arg(long)]
        json: bool,
    },
    /// Export the latest voucher of every unclaimed channel with its claim calldata, and mark
    /// them exported (each channel is claimed once; the claim closes it).
    Settle {
        /// Where to write the claims (JSON).
        #[arg(long)]
        out: PathBuf,
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
struct BenchArgs {
    /// The torrent to request (not with --spawn-seeder).
    #[arg(
        required_unless_present = "spawn_seeder",
        conflicts_with = "spawn_seeder"
    )]
    torrent: Option<PathBuf>,
    /// The seeder, HOST:PORT (not with --spawn-seeder).
    #[arg(
        long,
        required_unless_present = "spawn_seeder",
        conflicts_with = "spawn_seeder"
    )]
    peer: Option<String>,
    /// Synthetic leechers (1 … 10 000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    peers: u64,
    /// Requests each leecher keeps outstanding.
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
    /// Every leecher bids this price (BTT base units per MiB) and pays with vouchers as data
    /// arrives (`rs_speed`); the spawned seeder offers paid slots.
    #[arg(long, requires = "budget")]
    pay: Option<u128>,
    /// Each leecher's channel budget (its cap), BTT base units.
    #[arg(long, requires = "pay")]
    budget: Option<u128>,
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
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
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
                trackers: trackers
                    .iter()
                    .map(|t| {
                        t.split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .collect(),
                web_seeds,
                private,
                comment,
                no_date,
                hash,
            };
            let started = Instant::now();
            let progress = Progress::default();
            let total = dir_size(&path);
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
                let out = serde_json::json!({
                    "torrent": torrent,
                    "info_hash_v1": meta.info.hash.v1.map(|h| hex(&h)),
                    "info_hash_v2": meta.info.hash.v2.map(|h| hex(&h)),
                    "pieces": report.pieces,
                    "good": report.good,
                    "bad": report.bad,
                    "missing": report.missing,
                    "errors": report.errors,
                    "bytes": report.bytes,
                    "seconds": report.elapsed.as_secs_f64(),
                    "gib_per_s": report.bytes_per_sec() / GIB,
                });
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
        } => serve(Source::One(torrent, data), &args, &config),
        Command::Run { serve: args } => serve(Source::Config(cli.config.clone()), &args, &config),
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
                let out = serde_json::json!({
                    "info_hash_v1": m.info_hash.v1.map(|h| hex(&h)),
                    "info_hash_v2": m.info_hash.v2.map(|h| hex(&h)),
                    "name": m.name,
                    "trackers": m.trackers,
                    "peers": m.peers,
                    "web_seeds": m.web_seeds,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(ExitCode::SUCCESS);
            }
            let meta = load_torrent(Path::new(&torrent))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info_json(&meta))?);
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
        Command::Settle { out } => settle(&config, &out),
        Command::Demo { dir, size_mib } => demo(dir, size_mib, &config),
        Command::Bench(args) => bench(args),
    }
}

const GIB: f64 = (1u64 << 30) as f64;

fn load_torrent(path: &Path) -> Result<Metainfo> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.len() > ringseed::metainfo::MAX_TORRENT_BYTES as u64 {
        bail!(
            "{}: {} bytes is too large for a .torrent",
            path.display(),
            meta.len()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Metainfo::from_bytes(&bytes).with_context(|| format!("{}: not a valid torrent", path.display()))
}

fn verify_data(meta: &Metainfo, data: &Path, opts: hash::HashOptions) -> Result<VerifyReport> {
    let files = DataFiles::open(&meta.info.layout, data)?;
    let progress = Progress::default();
    Ok(with_progress(
        &progress,
        meta.info.layout.total_length,
        "verifying",
        || hash::verify(&meta.info, &files, opts, &progress),
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

fn dir_size(p: &Path) -> u64 {
    let Ok(m) = std::fs::metadata(p) else {
        return 0;
    };
    if m.is_file() {
        return m.len();
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

fn info_json(meta: &Metainfo) -> serde_json::Value {
    let i = &meta.info;
    serde_json::json!({
        "name": i.name,
        "version": i.version,
        "info_hash_v1": i.hash.v1.map(|h| hex(&h)),
        "info_hash_v2": i.hash.v2.map(|h| hex(&h)),
        "piece_length": i.layout.piece_length,
        "pieces": i.layout.num_pieces,
        "total_length": i.layout.data_length(),
        "private": i.private,
        "trackers": meta.trackers,
        "web_seeds": meta.url_list,
        "comment": meta.comment,
        "created_by": meta.created_by,
        "creation_date": meta.creation_date,
        "files": i.layout.data_files().map(|(_, f)| serde_json::json!({
            "path": f.path.join("/"),
            "length": f.length,
        })).collect::<Vec<_>>(),
    })
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

/// Makes a multi-file payload (odd sizes, an empty file), its torrent, and verifies it.
fn demo(dir: Option<PathBuf>, size_mib: u64, config: &Config) -> Result<ExitCode> {
    // A directory we made ourselves is removed afterwards; one the user named is kept.
    let (dir, cleanup) = match dir {
        Some(d) => (d, None),
        None => {
            let d = std::env::temp_dir().join(format!("ringseed-demo-{}", std::process::id()));
            (d.clone(), Some(RemoveOnDrop(d)))
        }
    };
    let payload = dir.join("demo-payload");
    std::fs::create_dir_all(payload.join("sub"))
        .with_context(|| format!("creating {}", payload.display()))?;
    let total = size_mib << 20;
    let sizes = [
        total / 2 + 12_345,
        total / 4 - 777,
        0,
        total - total / 2 - total / 4 - 11_568,
    ];
    let names = ["big.bin", "sub/quarter.bin", "sub/empty", "sub/rest.bin"];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (name, size) in names.iter().zip(sizes) {
        let mut data = vec![0u8; size as usize];
        for chunk in data.chunks_mut(8) {
            // xorshift: fast, deterministic payload bytes.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(payload.join(name), &data)?;
    }
    let torrent = dir.join("demo.torrent");
    let opts = CreateOptions {
        version: config.create.version.into(),
        hash: config.hash_options(),
        ..CreateOptions::default()
    };
    let progress = Progress::default();
    let (bytes, meta) = with_progress(&progress, total, "creating", || {
        create(&payload, &opts, &progress)
    })?;
    std::fs::write(&torrent, bytes)?;
    println!("created {}", torrent.display());
    print_summary(&meta);
    let report = verify_data(&meta, &dir, config.hash_options())?;
    print_report(&report);
    if !report.all_good() {
        bail!("demo payload failed verification");
    }

    // Seed it on loopback and fetch it back through the wire protocol.
    let mut settings = config.engine_settings();
    settings.listen = "127.0.0.1:0".parse()?;
    let engine = ringseed::engine::Engine::start(settings)?;
    let (t, _) = ringseed::engine::Torrent::open(meta.clone(), &dir, None)?;
    engine.add_torrent(std::sync::Arc::new(t))?;
    println!(
        "seeding on {} with {} workers; fetching it back...",
        engine.local_addr(),
        engine.stats().len()
    );
    let (data, fetched) = ringseed::fetch::fetch(&meta.info, engine.local_addr(), 256)?;
    let stats = engine.shutdown();
    for (_, f) in meta.info.layout.data_files() {
        let on_disk = std::fs::read(dir.join(f.rel_path()))?;
        let got = &data[f.offset as usize..(f.offset + f.length) as usize];
        if on_disk != got {
            bail!("{} came back different", f.path.join("/"));
        }
    }
    let up: u64 = stats.iter().map(|w| w.bytes_up).sum();
    println!(
        "fetched:    {:.3} GiB in {:.3} s = {:.2} GiB/s, every piece SHA-1 checked, every file byte-identical",
        fetched.bytes as f64 / GIB,
        fetched.elapsed.as_secs_f64(),
        fetched.bytes_per_sec() / GIB
    );
    println!(
        "engine:     {} bytes uploaded, {} blocks, {} connection(s)",
        up,
        stats.iter().map(|w| w.blocks_up).sum::<u64>(),
        stats.iter().map(|w| w.handshakes).sum::<u64>()
    );
    if cleanup.is_some() {
        println!(
            "demo ok (its files in {} are removed now; --dir keeps them)",
            dir.display()
        );
    } else {
        println!("demo ok: payload and torrent in {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The .torrent files `[torrents]` names: the list, then every .torrent in `dir`.
fn config_torrents(config: &Config) -> Result<Vec<(PathBuf, PathBuf)>> {
    let t = &config.torrents;
    let mut out: Vec<(PathBuf, PathBuf)> = t
        .list
        .iter()
        .map(|e| (PathBuf::from(&e.torrent), PathBuf::from(&e.data)))
        .collect();
    if !t.dir.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&t.dir)
            .with_context(|| format!("torrents.dir {}", t.dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "torrent"))
            .collect();
        found.sort();
        out.extend(found.into_iter().map(|p| (p, PathBuf::from(&t.data_dir))));
    }
    Ok(out)
}

/// Seeds `torrents` ((.torrent, download dir) pairs) until SIGINT or SIGTERM.
/// Opens one torrent's data for seeding: hashes it first unless `skip_check`.
fn open_torrent(
    path: &Path,
    data: &Path,
    config: &Config,
    skip_check: bool,
    verbose: bool,
) -> Result<ringseed::engine::Torrent> {
    let meta = load_torrent(path)?;
    if verbose {
        print_summary(&meta);
    }
    let verify = (!skip_check).then(|| config.hash_options());
    let (t, report) = ringseed::engine::Torrent::open(meta, data, verify)
        .with_context(|| format!("opening data in {}", data.display()))?;
    if let Some(r) = &report {
        if verbose {
            print_report(r);
        }
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

/// Where `serve` gets its torrents: one from the command line, or the config's `[torrents]`
/// (which SIGHUP re-reads).
enum Source {
    One(PathBuf, PathBuf),
    Config(Option<PathBuf>),
}

/// Seeds until SIGINT or SIGTERM; SIGHUP reloads what can change live.
fn serve(source: Source, args: &ServeArgs, config: &Config) -> Result<ExitCode> {
    use ringseed::session::Session;
    let mut settings = config.engine_settings();
    if let Some(l) = args.listen {
        settings.listen = l;
    }
    if let Some(w) = args.workers {
        settings.workers = w;
    }
    let mut options = config.session_options();
    options.announce &= !args.no_trackers;
    if let Some(m) = &args.metrics {
        options.metrics_listen = if m.is_empty() {
            None
        } else {
            Some(m.parse().with_context(|| format!("--metrics {m:?}"))?)
        };
    }
    let skip_check = args.skip_check || config.torrents.skip_check;
    let torrents = match &source {
        Source::One(t, d) => vec![(t.clone(), d.clone())],
        Source::Config(_) => config_torrents(config)?,
    };
    if torrents.is_empty() {
        bail!("the config lists no torrents: set [torrents] dir/data_dir or list");
    }
    let single = matches!(source, Source::One(..));
    let mut loaded: std::collections::HashSet<PathBuf> = Default::default();
    let mut opened = Vec::new();
    for (path, data) in &torrents {
        match open_torrent(path, data, config, skip_check, single) {
            Ok(t) => {
                loaded.insert(path.clone());
                opened.push(std::sync::Arc::new(t));
            }
            // One bad torrent must not keep a box of thousands from seeding the rest.
            Err(e) if !single => tracing::error!("skipping {}: {e:#}", path.display()),
            Err(e) => return Err(e),
        }
    }
    if opened.is_empty() {
        bail!("no torrent could be opened");
    }
    // Block the signals before any thread starts, so every thread inherits the mask and only
    // the signal thread receives them.
    let signals = signal_thread()?;
    let session = Session::start(settings, options)?;
    for t in &opened {
        session.add_torrent(t.clone())?;
    }
    say!(
        "seeding {} torrent(s) on {} with {} workers",
        opened.len(),
        session.engine().local_addr(),
        session.engine().stats().len()
    );
    if let Some(m) = session.metrics_addr() {
        say!("metrics on http://{m}/metrics");
    }
    if let Some(s) = session.speed() {
        say!(
            "earning BTT as {} ({})",
            s.offer.payee.to_tron(),
            s.offer.payee.to_evm()
        );
    }
    // systemd (Type=notify): ready once every worker listens; a no-op outside systemd.
    let status = format!(
        "seeding {} torrent(s) on {}",
        opened.len(),
        session.engine().local_addr()
    );
    if let Err(e) = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]) {
        tracing::warn!("telling systemd we are ready: {e}");
    }
    let mut torrents = opened;
    let signal = loop {
        match wait_for_signal(&signals, args.stats_every, session.engine()) {
            nix::sys::signal::Signal::SIGHUP => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                reload(
                    &source,
                    config,
                    skip_check,
                    &session,
                    &mut torrents,
                    &mut loaded,
                );
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            other => break other,
        }
    };
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    say!("{signal}: announcing stopped, closing peers");
    let stats = session.shutdown();
    say!("{}", serde_json::to_string(&stats)?);
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: re-reads the config file; applies the rate limits and starts torrents that are new
/// in `[torrents]`; says which changed keys need a restart. A bad file changes nothing.
fn reload(
    source: &Source,
    running: &Config,
    skip_check: bool,
    session: &ringseed::session::Session,
    torrents: &mut Vec<std::sync::Arc<ringseed::engine::Torrent>>,
    loaded: &mut std::collections::HashSet<PathBuf>,
) {
    let Source::Config(Some(path)) = source else {
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
    session
        .engine()
        .set_upload_limit(new.engine.upload_rate_limit_kib << 10);
    for t in torrents.iter() {
        t.upload_limit
            .set_rate(new.engine.torrent_upload_rate_limit_kib << 10);
    }
    let mut live = new.engine.clone();
    live.upload_rate_limit_kib = running.engine.upload_rate_limit_kib;
    live.torrent_upload_rate_limit_kib = running.engine.torrent_upload_rate_limit_kib;
    if live != running.engine || new.trackers != running.trackers || new.metrics != running.metrics
    {
        tracing::warn!(
            "SIGHUP: changes to [engine] (other than rate limits), [trackers] or [metrics] need a restart"
        );
    }
    let mut added = 0;
    match config_torrents(&new) {
        Ok(list) => {
            let fresh: Vec<(PathBuf, PathBuf)> = list
                .into_iter()
                .filter(|(p, _)| !loaded.contains(p))
                .collect();
            for (p, d) in fresh {
                match open_torrent(&p, &d, &new, skip_check, false) {
                    Ok(t) => {
                        let t = std::sync::Arc::new(t);
                        if session.add_torrent(t.clone()).is_ok() {
                            loaded.insert(p);
                            torrents.push(t);
                            added += 1;
                        }
                    }
                    Err(e) => tracing::error!("SIGHUP: skipping {}: {e:#}", p.display()),
                }
            }
        }
        Err(e) => tracing::error!("SIGHUP: {e:#}"),
    }
    say!(
        "SIGHUP: reloaded {}: {added} torrent(s) added, limits applied",
        path.display()
    );
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread started later) and
/// receives them on a thread of their own, which forwards them over a channel.
fn signal_thread() -> Result<crossbeam_channel::Receiver<nix::sys::signal::Signal>> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()?;
    let (tx, rx) = crossbeam_channel::bounded(16);
    std::thread::Builder::new()
        .name("ringseed-signals".into())
        .spawn(move || {
            while let Ok(sig) = set.wait() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// Waits for a signal, printing statistics every `stats_every` seconds (0 = never).
fn wait_for_signal(
    signals: &crossbeam_channel::Receiver<nix::sys::signal::Signal>,
    stats_every: u64,
    engine: &ringseed::engine::Engine,
) -> nix::sys::signal::Signal {
    let started = Instant::now();
    let mut last_bytes = 0u64;
    let mut last = Instant::now();
    loop {
        let timeout = Duration::from_secs(if stats_every == 0 { 3600 } else { stats_every });
        match signals.recv_timeout(timeout) {
            Ok(sig) => return sig,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return nix::sys::signal::Signal::SIGTERM;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        if stats_every > 0 {
            let s = engine.stats();
            let bytes: u64 = s.iter().map(|w| w.bytes_up).sum();
            let peers: i64 = s.iter().map(|w| w.peers).sum();
            let secs = last.elapsed().as_secs_f64();
            say!(
                "[{:>6.0}s] peers {peers}, uploaded {:.3} GiB, {:.1} MiB/s",
                started.elapsed().as_secs_f64(),
                bytes as f64 / GIB,
                (bytes - last_bytes) as f64 / secs / (1u64 << 20) as f64
            );
            last_bytes = bytes;
            last = Instant::now();
        }
    }
}

/// `ringseed earnings`: reads the ledger read-only, so it works beside a running node.
fn earnings(config: &Config, json: bool) -> Result<ExitCode> {
    let path = config.state.db_path();
    if !path.exists() {
        bail!("no ledger at {}: nothing earned yet", path.display());
    }
    let conn = ringseed::db::open_read_only(&path)?;
    let r = ringseed::speed::ledger::report(&conn)
        .with_context(|| format!("reading the ledger in {}", path.display()))?;
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

/// A decimal amount of base units as BTT (18 decimals), for reading, not for sums.
fn btt(base_units: &str) -> String {
    let padded = format!("{base_units:0>19}");
    let (int, frac) = padded.split_at(padded.len() - 18);
    format!("{int}.{}", &frac[..6])
}

/// `ringseed settle`: exports claims once; the file is written before the command returns.
fn settle(config: &Config, out: &Path) -> Result<ExitCode> {
    use ringseed::speed::ledger;
    let path = config.state.db_path();
    let mut conn = ringseed::db::open(&path)?;
    ringseed::db::migrate(&mut conn, ledger::COMPONENT, ledger::MIGRATIONS)?;
    if out.exists() {
        bail!(
            "{} exists: claims are exported once, so settle never overwrites a file",
            out.display()
        );
    }
    let claims = ledger::export_claims(&mut conn, ledger::unix_now(), |claims| {
        let doc = serde_json::json!({ "function": ledger::CLAIM_FUNCTION, "claims": claims });
        write_durably(out, (serde_json::to_string_pretty(&doc)? + "\n").as_bytes())
            .with_context(|| format!("writing {}", out.display()))
    })
    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    println!("{} claim(s) written to {}", claims.len(), out.display());
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` (never overwriting) with `bytes` and fsyncs it.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Removes a directory tree when dropped (also on an error return).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ringseed bench`: runs the swarm (against a spawned seeder or a given one) and prints.
fn bench(args: BenchArgs) -> Result<ExitCode> {
    use ringseed::bench::{self, BenchOptions, LocalSeeder, SeederReport, Stop};
    let seeder = if args.spawn_seeder {
        if !args.json {
            eprintln!(
                "generating {} MiB and seeding it on loopback...",
                args.size_mib
            );
        }
        Some(LocalSeeder::start_with(
            args.size_mib,
            args.seeder_workers,
            args.block_kib << 10,
            args.pay.is_some(),
        )?)
    } else {
        None
    };
    let (meta, addr) = match (&seeder, &args.torrent, &args.peer) {
        (Some(s), _, _) => (s.meta.clone(), s.addr()),
        (None, Some(t), Some(p)) => {
            use std::net::ToSocketAddrs;
            let addr = p
                .to_socket_addrs()
                .with_context(|| format!("resolving {p}"))?
                .next()
                .with_context(|| format!("{p}: no address"))?;
            (load_torrent(t)?, addr)
        }
        _ => bail!("give a torrent and --peer HOST:PORT, or --spawn-seeder"),
    };
    let stop = match (args.bytes, args.duration) {
        (Some(b), _) => Stop::Bytes(b),
        (None, Some(d)) if d.is_finite() && d > 0.0 => Stop::Duration(Duration::from_secs_f64(d)),
        (None, Some(d)) => bail!("--duration {d}: must be a positive number of seconds"),
        (None, None) => Stop::Duration(Duration::from_secs(10)),
    };
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!(
            "--timeout {}: must be a positive number of seconds",
            args.timeout
        );
    }
    let opts = BenchOptions {
        addr,
        peers: args.peers as usize,
        reqq: args.reqq as usize,
        block_len: args.block_kib << 10,
        stop,
        pattern: args.pattern,
        workers: args.workers as usize,
        verify_every: if args.verify_all { 1 } else { 64 },
        timeout: Duration::from_secs_f64(args.timeout),
        spread_sources: !args.one_source,
        pay: args.pay.zip(args.budget),
        ..BenchOptions::default()
    };
    let rss_before = bench::procstat::rss_bytes().unwrap_or(0);
    let cpu_before = seeder.as_ref().map(|s| (s.cpu(), s.bytes_up()));
    let live = std::io::stderr().is_terminal() && !args.json;
    let mut cpu_after = None;
    let mut report = bench::run(&meta.info, &opts, &mut |s| {
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
    if let Some(s) = &seeder {
        // Read before the seeder stops: its threads leave /proc/self/task when they end.
        cpu_after = Some((s.cpu(), s.bytes_up()));
    }
    if let (Some(s), Some((before, up_before)), Some((after, up_after))) =
        (&seeder, cpu_before, cpu_after)
    {
        let up = up_after - up_before;
        let (cpu, per_thread) = match (before, after) {
            (Some(a), Some(b)) => (b.cpu_seconds() - a.cpu_seconds(), true),
            _ => (
                bench::procstat::process_cpu().map_or(0.0, |c| c.cpu_seconds()),
                false,
            ),
        };
        report.seeder = Some(SeederReport {
            workers: s.engine.stats().len(),
            cpu_seconds: cpu,
            cpu_seconds_per_gib: cpu / (up as f64 / GIB).max(1e-9),
            per_thread,
            process_rss_bytes: bench::procstat::rss_bytes().unwrap_or(0),
            rss_before_bytes: rss_before,
            bytes_up: up,
        });
    }
    if let Some((svc, _)) = seeder.as_ref().and_then(|s| s.speed.as_ref()) {
        // Let the verifier and the ledger finish the last vouchers before counting.
        svc.stop();
        let st = &svc.stats;
        let rejected: Vec<String> = ringseed::speed::voucher::Rejection::ALL
            .iter()
            .filter(|r| st.rejected(**r) > 0)
            .map(|r| format!("{} {}", st.rejected(*r), r.name()))
            .collect();
        eprintln!(
            "speed: {} bids, {} vouchers accepted, refused: [{}], {} base units earned, {:.3} GiB sold",
            st.bids.load(Ordering::Relaxed),
            st.vouchers_accepted.load(Ordering::Relaxed),
            rejected.join(", "),
            st.earned(),
            st.bytes_sold.load(Ordering::Relaxed) as f64 / GIB
        );
    }
    drop(seeder);
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["passed"] = serde_json::Value::Bool(report.passed());
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
    println!(
        "  verified      {} piece(s), {} bad",
        r.pieces_verified,
        r.bad_pieces.len()
    );
    if let Some(c) = r.bench_cpu_seconds {
        println!("  bench CPU     {c:.2} s");
    }
    if let Some(s) = &r.seeder {
        println!(
            "  seeder        {} worker(s), {:.2} CPU-s ({:.2} CPU-s/GiB{}), {} bytes up",
            s.workers,
            s.cpu_seconds,
            s.cpu_seconds_per_gib,
            if s.per_thread {
                ", its threads only"
            } else {
                ", whole process: threads not separable"
            },
            s.bytes_up
        );
        println!(
            "  RSS           {:.1} MiB process (seeder + bench), {:.1} MiB before the swarm",
            s.process_rss_bytes as f64 / (1 << 20) as f64,
            s.rss_before_bytes as f64 / (1 << 20) as f64
        );
    }
    if !r.passed() {
        println!(
            "FAILED: {} piece(s) with wrong data: {}",
            r.bad_pieces.len(),
            list_preview(&r.bad_pieces)
        );
    }
}
