//! `--spawn-seeder`: a ringseed engine in this process, seeding a generated payload on
//! loopback, so `ringseed bench --spawn-seeder` is a one-command run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::create::{CreateError, CreateOptions, create};
use crate::engine::{Engine, EngineError, Settings, Torrent, UploadPath};
use crate::metainfo::Metainfo;
use crate::verify::Progress;

use super::procstat::{self, CpuTimes};

/// Thread name prefix of the engine's workers.
pub const SEEDER_THREAD_PREFIX: &str = "ringseed-w";
/// Names of the speed layer's threads: the voucher verifier and the database writer.
pub const SPEED_THREAD_PREFIXES: [&str; 2] = ["ringseed-verify", "ringseed-db"];

/// What an in-process paying seeder's speed layer counted over its life.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeederSpeedReport {
    pub bids: u64,
    pub vouchers_accepted: u64,
    pub vouchers_superseded: u64,
    pub refused: u64,
    /// BTT base units, decimal.
    pub earned: String,
    pub bytes_sold: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SeederError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating the torrent: {0}")]
    Create(#[from] CreateError),
    #[error("starting the seeder: {0}")]
    Engine(#[from] EngineError),
    #[error("{0} torrents: give 1 … 10 000, and at least one byte each")]
    Torrents(usize),
    #[error("starting the seeder's speed layer: {0}")]
    Speed(#[from] crate::speed::service::SpeedStartError),
}

/// What `--spawn-seeder` seeds and how.
#[derive(Debug, Clone)]
pub struct SeederSpec {
    /// Payload size in MiB over all torrents.
    pub size_mib: u64,
    /// Engine worker threads (0 = one per core).
    pub workers: usize,
    /// Largest block leechers will ask for.
    pub max_request_len: u32,
    pub upload_path: UploadPath,
    /// Torrents the payload is split into (one file each).
    pub torrents: usize,
    /// Offer paid slots (`rs_speed`, ledger in the temp directory), for `bench --pay`.
    pub pay: bool,
    /// The payment-channel contract the paid seeder's vouchers are signed for: a deployment
    /// given with `bench --contract`, else [`BENCH_CONTRACT`] (no chain: nothing is claimed).
    pub contract: crate::speed::wallet::Address,
}

/// The contract a bench without a chain names in its offer: an address nothing is deployed at,
/// so its vouchers are exercised on the wire and never claimed.
pub const BENCH_CONTRACT: crate::speed::wallet::Address = crate::speed::wallet::Address([0xbe; 20]);

impl Default for SeederSpec {
    fn default() -> Self {
        SeederSpec {
            size_mib: 1024,
            workers: 1,
            max_request_len: 16 << 10,
            upload_path: UploadPath::Auto,
            torrents: 1,
            pay: false,
            contract: BENCH_CONTRACT,
        }
    }
}

/// Payloads in a fresh temp directory, their torrents, and an engine seeding them on
/// 127.0.0.1. The directory is removed when the seeder is dropped.
pub struct LocalSeeder {
    pub engine: Engine,
    /// The torrents, in the order they were made.
    pub metas: Vec<Metainfo>,
    /// The engine's handle of each torrent (for per-torrent upload counts).
    pub torrents: Vec<Arc<Torrent>>,
    pub torrent_files: Vec<PathBuf>,
    /// With `pay`: the seeder's speed layer and its ledger's writer (in the temp directory).
    pub speed: Option<(
        Arc<crate::speed::service::SpeedService>,
        crate::db::DbWriter,
    )>,
    dir: PathBuf,
}

impl LocalSeeder {
    /// Writes `spec.size_mib` MiB of pseudo-random data, split over `spec.torrents` files of one
    /// torrent each (hashing them leaves them in the page cache), and starts an engine seeding
    /// them. Every leecher gets an upload slot: a bench measures the data path, not the choker.
    pub fn start(spec: &SeederSpec) -> Result<Self, SeederError> {
        if spec.torrents == 0 || spec.torrents > 10_000 {
            return Err(SeederError::Torrents(spec.torrents));
        }
        let each = (spec.size_mib << 20) / spec.torrents as u64;
        if each == 0 {
            return Err(SeederError::Torrents(spec.torrents));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("ringseed-bench-{}-{nanos:08x}", std::process::id()));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SeederError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        // From here on the directory is ours: dropping `guard` on an error removes it.
        let guard = DirGuard(dir.clone());
        let speed = if spec.pay {
            let setup = crate::speed::service::SpeedSetup {
                db_path: dir.join("ringseed.db"),
                key_path: dir.join("wallet.key"),
                terms: crate::choking::auction::Terms {
                    paid_slots: 4,
                    min_price: 0,
                    credit_window: 32 << 20,
                },
                chain_id: 199,
                contract: spec.contract,
                chain: None,
            };
            Some(crate::speed::service::start_standalone(&setup)?)
        } else {
            None
        };
        let engine = Engine::start_with_speed(
            Settings {
                workers: spec.workers,
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                upload_slots: 0,
                upload_path: spec.upload_path,
                max_request_len: spec.max_request_len.max(16 << 10),
                ..Settings::default()
            },
            speed.as_ref().map(|(s, _)| s.clone()),
        )?;
        let (mut metas, mut torrents, mut torrent_files) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..spec.torrents {
            // Each torrent gets its own directory, so each seeds exactly its one file.
            let tdir = dir.join(format!("t{i}"));
            std::fs::create_dir_all(&tdir).map_err(io(&tdir))?;
            let payload = tdir.join(format!("bench-payload-{i}.bin"));
            write_payload(&payload, each, i as u64).map_err(io(&payload))?;
            let (bytes, meta) = create(&payload, &CreateOptions::default(), &Progress::default())?;
            let torrent_file = dir.join(format!("bench-{i}.torrent"));
            std::fs::write(&torrent_file, bytes).map_err(io(&torrent_file))?;
            let (t, _) = Torrent::open(meta.clone(), &tdir, None).map_err(io(&tdir))?;
            let t = Arc::new(t);
            engine.add_torrent(t.clone())?;
            metas.push(meta);
            torrents.push(t);
            torrent_files.push(torrent_file);
        }
        std::mem::forget(guard);
        Ok(LocalSeeder {
            engine,
            metas,
            torrents,
            torrent_files,
            speed,
            dir,
        })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.engine.local_addr()
    }

    /// CPU time of the seeder's threads so far: the engine's workers and, with `pay`, the
    /// voucher verifier and the ledger's database writer (the extension's whole cost).
    pub fn cpu(&self) -> Option<CpuTimes> {
        procstat::threads_cpu(&[
            SEEDER_THREAD_PREFIX,
            SPEED_THREAD_PREFIXES[0],
            SPEED_THREAD_PREFIXES[1],
        ])
    }

    /// CPU time of the speed layer's threads alone (`None` without `pay`).
    pub fn speed_cpu(&self) -> Option<CpuTimes> {
        self.speed.as_ref()?;
        procstat::threads_cpu(&SPEED_THREAD_PREFIXES)
    }

    /// What the seeder's speed layer counted (`None` without `pay`).
    pub fn speed_counts(&self) -> Option<SeederSpeedReport> {
        let (svc, _) = self.speed.as_ref()?;
        let st = &svc.stats;
        Some(SeederSpeedReport {
            bids: st.bids.load(Relaxed),
            vouchers_accepted: st.vouchers_accepted.load(Relaxed),
            vouchers_superseded: st.vouchers_superseded.load(Relaxed),
            refused: crate::speed::voucher::Rejection::ALL
                .iter()
                .map(|r| st.rejected(*r))
                .sum(),
            earned: st.earned().to_string(),
            bytes_sold: st.bytes_sold.load(Relaxed),
        })
    }

    /// Payload bytes uploaded by all workers.
    pub fn bytes_up(&self) -> u64 {
        self.engine.stats().iter().map(|s| s.bytes_up).sum()
    }
}

impl Drop for LocalSeeder {
    fn drop(&mut self) {
        self.engine.stop();
        if let Some((svc, writer)) = self.speed.take() {
            svc.stop();
            writer.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `len` bytes of xorshift output (a different stream for each `stream`), written 4 MiB at a
/// time.
fn write_payload(path: &Path, len: u64, stream: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ stream.wrapping_mul(0xd134_2543_de82_ef95) | 1;
    let mut chunk = vec![0u8; 4 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        for word in chunk[..n].chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            word.copy_from_slice(&seed.to_le_bytes()[..word.len()]);
        }
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.flush()
}
