//! The drivers of `ringseed bench`, `bench sweep` and `bench ceiling`: the options as the
//! command line gives them (numbers and names, not yet checked), checked and turned into runs.
//! Printing stays with the command line; these return reports and call back with progress.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::ceiling::{self, CeilingError, CeilingOptions, CeilingReport};
use super::sweep::{self, SweepError, SweepOptions, SweepReport, SweepRow, SweepTarget};
use super::{
    BenchError, BenchOptions, BenchReport, LiveSample, LocalSeeder, Pattern, SeederError,
    SeederProbe, SeederSpec, Stop,
};
use crate::engine::UploadPath;
use crate::metainfo::{Info, LoadError, Metainfo};

/// What a bench driver could not do.
#[derive(Debug, thiserror::Error)]
pub enum BenchCliError {
    #[error("give a torrent and --peer HOST:PORT, or --spawn-seeder")]
    NoTarget,
    #[error("opening the paying leechers' channels on chain: {0}")]
    Chain(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("resolving {peer}")]
    Resolve {
        peer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no address")]
    NoAddress(String),
    /// A number of seconds that is not positive and finite (`what` is the option).
    #[error("{what} {secs}: must be a positive number of seconds")]
    Seconds { what: &'static str, secs: f64 },
    #[error("--cpus takes two cores: SENDER_CPU,RECEIVER_CPU")]
    Cpus,
    #[error("ceiling with {conns} connection(s)")]
    Ceiling {
        conns: usize,
        #[source]
        source: CeilingError,
    },
    #[error(transparent)]
    Seeder(#[from] SeederError),
    #[error(transparent)]
    Bench(#[from] BenchError),
    #[error(transparent)]
    Sweep(#[from] SweepError),
}

/// Parses an upload path name: auto, copy or mmap (a clap value parser).
pub fn parse_upload_path(s: &str) -> Result<UploadPath, String> {
    match s {
        "auto" => Ok(UploadPath::Auto),
        "copy" => Ok(UploadPath::Copy),
        "mmap" => Ok(UploadPath::Mmap),
        _ => Err(format!("{s:?}: one of auto, copy, mmap")),
    }
}

/// Positive, finite seconds below 10⁹ (the sweep's and the ceiling's durations).
pub fn seconds(what: &'static str, secs: f64) -> Result<Duration, BenchCliError> {
    if secs.is_finite() && secs > 0.0 && secs < 1e9 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(BenchCliError::Seconds { what, secs })
    }
}

/// Positive seconds of any size a [`Duration`] holds (the bench's duration and timeout).
fn positive_seconds(what: &'static str, secs: f64) -> Result<Duration, BenchCliError> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if secs > 0.0 => Ok(d),
        _ => Err(BenchCliError::Seconds { what, secs }),
    }
}

/// Resolves HOST:PORT to its first address.
pub fn resolve(peer: &str) -> Result<SocketAddr, BenchCliError> {
    use std::net::ToSocketAddrs;
    peer.to_socket_addrs()
        .map_err(|source| BenchCliError::Resolve {
            peer: peer.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| BenchCliError::NoAddress(peer.to_string()))
}

/// An external seeder to bench: its torrent(s), address and, when local, its process.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// With several, leecher i takes torrent i mod N.
    pub torrent_files: Vec<PathBuf>,
    /// HOST:PORT.
    pub peer: Option<String>,
    /// The seeder is this local process: its CPU and RSS are read from /proc/PID.
    pub seeder_pid: Option<u32>,
}

impl Target {
    /// The torrents' infos and the seeder's address.
    pub fn resolve(&self) -> Result<(Vec<Info>, SocketAddr), BenchCliError> {
        let peer = self.peer.as_deref().ok_or(BenchCliError::NoTarget)?;
        if self.torrent_files.is_empty() {
            return Err(BenchCliError::NoTarget);
        }
        let infos = self
            .torrent_files
            .iter()
            .map(|t| Metainfo::load(t).map(|m| m.info))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((infos, resolve(peer)?))
    }
}

/// The in-process seeder of `--spawn-seeder`.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    pub size_mib: u64,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// Torrents the payload is split into (default 8 with `Pattern::ManyTorrents`, else 1).
    pub torrents: Option<u64>,
    pub upload_path: UploadPath,
}

/// `ringseed bench` as the command line gives it.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    pub peers: u64,
    pub reqq: u64,
    pub block_kib: u32,
    /// Seconds to run (default 10 unless `bytes`).
    pub duration: Option<f64>,
    pub bytes: Option<u64>,
    pub pattern: Pattern,
    pub workers: u64,
    pub verify_all: bool,
    /// Seconds a connect, handshake or outstanding block may take.
    pub timeout: f64,
    pub one_source: bool,
    pub source_base: Option<std::net::Ipv4Addr>,
    pub idle: bool,
    /// Price (base units per MiB) and budget of every leecher.
    pub pay: Option<u128>,
    pub budget: Option<u128>,
    /// A mixed run: only the first N leechers pay (`None` with `pay`: all pay).
    pub paying_peers: Option<u64>,
    /// Leechers speak MSE/PE with RC4.
    pub encrypt: bool,
    /// `--rpc`: pay from channels opened on chain first.
    pub chain: Option<super::chain_pay::ChainPay>,
}

impl SwarmOptions {
    /// The spec of the seeder `--spawn-seeder` starts for this run.
    pub fn seeder_spec(&self, spawn: &SpawnOptions) -> SeederSpec {
        let many = self.pattern == Pattern::ManyTorrents;
        SeederSpec {
            size_mib: spawn.size_mib,
            workers: spawn.workers,
            max_request_len: self.block_kib << 10,
            upload_path: spawn.upload_path,
            torrents: spawn.torrents.unwrap_or(if many { 8 } else { 1 }) as usize,
            pay: self.pay.is_some(),
            contract: self
                .chain
                .as_ref()
                .map_or(super::seeder::BENCH_CONTRACT, |c| c.contract),
        }
    }

    /// The checked options of a run against `addr`.
    pub fn bench_options(&self, addr: SocketAddr) -> Result<BenchOptions, BenchCliError> {
        let stop = match (self.bytes, self.duration) {
            (Some(b), _) => Stop::Bytes(b),
            (None, Some(d)) => Stop::Duration(positive_seconds("--duration", d)?),
            (None, None) => Stop::Duration(Duration::from_secs(10)),
        };
        let timeout = positive_seconds("--timeout", self.timeout)?;
        Ok(BenchOptions {
            addr,
            peers: self.peers as usize,
            reqq: self.reqq as usize,
            block_len: self.block_kib << 10,
            stop,
            pattern: self.pattern,
            workers: self.workers as usize,
            verify_every: if self.verify_all { 1 } else { 64 },
            timeout,
            spread_sources: !self.one_source,
            source_base: self.source_base,
            idle: self.idle,
            pay: self.pay.zip(self.budget),
            paying_peers: self.paying_peers.map(|n| n as usize),
            encrypt: self.encrypt,
            ..BenchOptions::default()
        })
    }
}

/// Runs the swarm against `seeder` (spawned in this process) or else `target`, calling
/// `on_second` with the live figures.
pub fn run(
    seeder: Option<&LocalSeeder>,
    target: &Target,
    swarm: &SwarmOptions,
    on_second: &mut dyn FnMut(&LiveSample),
) -> Result<BenchReport, BenchCliError> {
    let (infos, addr) = match seeder {
        Some(s) => (s.metas.iter().map(|m| m.info.clone()).collect(), s.addr()),
        None => target.resolve()?,
    };
    let mut opts = swarm.bench_options(addr)?;
    if let (Some(chain), Some((_, budget))) = (&swarm.chain, opts.pay) {
        let payee = chain
            .payee
            .or_else(|| {
                seeder
                    .and_then(|s| s.speed.as_ref())
                    .map(|(svc, _)| svc.offer.payee)
            })
            .ok_or_else(|| BenchCliError::Chain("--payee is needed".into()))?;
        let n = opts.paying_peers.unwrap_or(opts.peers);
        let opened = super::chain_pay::open_channels(chain, payee, n, budget)
            .map_err(BenchCliError::Chain)?;
        opts.channels = Some(std::sync::Arc::new(opened));
    }
    let probe = match (seeder, target.seeder_pid) {
        (Some(s), _) => Some(SeederProbe::InProcess(s)),
        (None, Some(pid)) => Some(SeederProbe::Pid(pid)),
        (None, None) => None,
    };
    Ok(super::run_probed(&infos, &opts, probe.as_ref(), on_second)?)
}

/// What the spawned seeder's speed layer did in a paid run.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeedSummary {
    pub bids: u64,
    pub vouchers_accepted: u64,
    /// Refused vouchers by reason, reasons that happened only.
    pub rejected: Vec<(u64, &'static str)>,
    /// Base units.
    pub earned: u128,
    pub bytes_sold: u64,
}

/// Stops the spawned seeder's speed layer (so the verifier and the ledger finish the last
/// vouchers before counting) and sums up what it did; `None` without `pay`.
pub fn finish_speed(seeder: &LocalSeeder) -> Option<SpeedSummary> {
    let (svc, _) = seeder.speed.as_ref()?;
    svc.stop();
    let st = &svc.stats;
    Some(SpeedSummary {
        bids: st.bids.load(Ordering::Relaxed),
        vouchers_accepted: st.vouchers_accepted.load(Ordering::Relaxed),
        rejected: crate::speed::voucher::Rejection::ALL
            .iter()
            .filter(|r| st.rejected(**r) > 0)
            .map(|r| (st.rejected(*r), r.name()))
            .collect(),
        earned: st.earned(),
        bytes_sold: st.bytes_sold.load(Ordering::Relaxed),
    })
}

/// A report as JSON with its verdict added as `passed`.
pub fn json_with_passed<T: serde::Serialize>(
    report: &T,
    passed: bool,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut v = serde_json::to_value(report)?;
    v["passed"] = serde_json::Value::Bool(passed);
    Ok(v)
}

/// `ringseed bench sweep` as the command line gives it.
#[derive(Debug, Clone)]
pub struct SweepCliOptions {
    pub target: Target,
    /// `Some` with `--spawn-seeder` (its upload path is the grid's).
    pub spawn: Option<SpawnOptions>,
    pub peers: Vec<u64>,
    pub reqq: Vec<u64>,
    pub paths: Vec<UploadPath>,
    /// Seconds per point.
    pub duration: f64,
    pub block_kib: u32,
    pub pattern: Pattern,
    pub workers: u64,
}

/// Runs the sweep's grid: `on_start` once the options are checked and the target resolved,
/// then `on_row` as each point finishes.
pub fn sweep(
    args: &SweepCliOptions,
    on_start: &mut dyn FnMut(),
    on_row: &mut dyn FnMut(&SweepRow),
) -> Result<SweepReport, BenchCliError> {
    let duration = seconds("--duration", args.duration)?;
    let infos;
    let target = match &args.spawn {
        Some(spawn) => SweepTarget::Spawn(SeederSpec {
            size_mib: spawn.size_mib,
            workers: spawn.workers,
            max_request_len: args.block_kib << 10,
            torrents: if args.pattern == Pattern::ManyTorrents {
                8
            } else {
                1
            },
            ..SeederSpec::default()
        }),
        None => {
            let addr;
            (infos, addr) = args.target.resolve()?;
            SweepTarget::Peer {
                infos: &infos,
                addr,
                pid: args.target.seeder_pid,
            }
        }
    };
    let opts = SweepOptions {
        peers: args.peers.iter().map(|&p| p as usize).collect(),
        reqq: args.reqq.iter().map(|&r| r as usize).collect(),
        paths: args.paths.clone(),
        base: BenchOptions {
            block_len: args.block_kib << 10,
            stop: Stop::Duration(duration),
            pattern: args.pattern,
            workers: args.workers as usize,
            ..BenchOptions::default()
        },
    };
    on_start();
    Ok(sweep::run(target, &opts, on_row, &mut |_| {})?)
}

/// `ringseed bench ceiling`: one measurement per connection count in `conns`, `on_report`
/// called after each; `cpus` is empty or SENDER_CPU, RECEIVER_CPU.
pub fn ceiling(
    conns: &[usize],
    duration: f64,
    cpus: &[usize],
    on_report: &mut dyn FnMut(&CeilingReport),
) -> Result<Vec<CeilingReport>, BenchCliError> {
    let duration = seconds("--duration", duration)?;
    let cpus = match cpus {
        [] => None,
        [s, r] => Some((*s, *r)),
        _ => return Err(BenchCliError::Cpus),
    };
    let mut reports = Vec::new();
    for &n in conns {
        let r = ceiling::run(&CeilingOptions {
            conns: n,
            duration,
            cpus,
            ..CeilingOptions::default()
        })
        .map_err(|source| BenchCliError::Ceiling { conns: n, source })?;
        on_report(&r);
        reports.push(r);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swarm() -> SwarmOptions {
        SwarmOptions {
            peers: 1,
            reqq: 64,
            block_kib: 16,
            duration: None,
            bytes: None,
            pattern: Pattern::Sequential,
            workers: 1,
            verify_all: false,
            timeout: 10.0,
            one_source: false,
            source_base: None,
            idle: false,
            pay: None,
            budget: None,
            paying_peers: None,
            encrypt: false,
            chain: None,
        }
    }

    #[test]
    fn durations_and_timeouts_are_checked() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let o = swarm().bench_options(addr).unwrap();
        assert_eq!(o.stop, Stop::Duration(Duration::from_secs(10)));
        assert_eq!((o.block_len, o.verify_every), (16 << 10, 64));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            let e = SwarmOptions {
                duration: Some(bad),
                ..swarm()
            };
            let msg = e.bench_options(addr).unwrap_err().to_string();
            assert_eq!(
                msg,
                format!("--duration {bad}: must be a positive number of seconds")
            );
            let t = SwarmOptions {
                timeout: bad,
                ..swarm()
            };
            assert!(t.bench_options(addr).is_err());
        }
        let bytes = SwarmOptions {
            bytes: Some(5),
            duration: Some(-1.0),
            ..swarm()
        };
        assert_eq!(bytes.bench_options(addr).unwrap().stop, Stop::Bytes(5));
        assert!(seconds("--duration", 1e9).is_err() && seconds("--duration", 0.5).is_ok());
    }

    #[test]
    fn upload_paths_and_targets() {
        assert_eq!(parse_upload_path("mmap"), Ok(UploadPath::Mmap));
        assert!(
            parse_upload_path("splice").is_err(),
            "removed: it lost everywhere"
        );
        assert!(matches!(
            Target::default().resolve(),
            Err(BenchCliError::NoTarget)
        ));
        let many = SwarmOptions {
            pattern: Pattern::ManyTorrents,
            ..swarm()
        };
        let spawn = SpawnOptions {
            size_mib: 8,
            workers: 1,
            torrents: None,
            upload_path: UploadPath::Auto,
        };
        assert_eq!(many.seeder_spec(&spawn).torrents, 8);
        assert_eq!(swarm().seeder_spec(&spawn).torrents, 1);
    }

    #[test]
    fn ceiling_wants_two_cpus() {
        let e = ceiling(&[1], 1.0, &[0], &mut |_| {}).unwrap_err();
        assert!(matches!(e, BenchCliError::Cpus));
    }
}
