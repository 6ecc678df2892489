//! `--spawn-seeder`: a ringseed engine in this process, seeding a generated payload on
//! loopback, so `ringseed bench --spawn-seeder` is a one-command run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::create::{CreateError, CreateOptions, create};
use crate::engine::{Engine, EngineError, Settings, Torrent};
use crate::hash::Progress;
use crate::metainfo::Metainfo;

use super::procstat::{self, CpuTimes};

/// Thread name prefix of the engine's workers.
pub const SEEDER_THREAD_PREFIX: &str = "ringseed-w";

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
    #[error("starting the seeder's speed layer: {0}")]
    Speed(#[from] crate::speed::service::SpeedStartError),
}

/// A payload in a fresh temp directory, its torrent, and an engine seeding it on 127.0.0.1.
/// The directory is removed when the seeder is dropped.
pub struct LocalSeeder {
    pub engine: Engine,
    /// With `--pay`: the seeder's speed layer and its ledger's writer (in the temp directory).
    pub speed: Option<(
        Arc<crate::speed::service::SpeedService>,
        crate::db::DbWriter,
    )>,
    pub meta: Metainfo,
    pub torrent_file: PathBuf,
    dir: PathBuf,
}

impl LocalSeeder {
    /// Writes `size_mib` MiB of pseudo-random data (hashing it for the torrent leaves it in the
    /// page cache) and starts an engine with `workers` workers (0 = one per core). Every
    /// leecher gets an upload slot: a bench measures the data path, not the choker.
    pub fn start(size_mib: u64, workers: usize, max_request_len: u32) -> Result<Self, SeederError> {
        Self::start_with(size_mib, workers, max_request_len, false)
    }

    /// As [`LocalSeeder::start`]; with `speed`, the engine offers paid slots (`rs_speed`) and
    /// keeps its ledger in the temp directory.
    pub fn start_with(
        size_mib: u64,
        workers: usize,
        max_request_len: u32,
        speed: bool,
    ) -> Result<Self, SeederError> {
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
        let payload = dir.join("bench-payload.bin");
        write_payload(&payload, size_mib << 20).map_err(io(&payload))?;
        let (bytes, meta) = create(&payload, &CreateOptions::default(), &Progress::default())?;
        let torrent_file = dir.join("bench.torrent");
        std::fs::write(&torrent_file, bytes).map_err(io(&torrent_file))?;
        let speed = if speed {
            let setup = crate::speed::service::SpeedSetup {
                db_path: dir.join("ringseed.db"),
                key_path: dir.join("wallet.key"),
                terms: crate::speed::auction::Terms {
                    paid_slots: 4,
                    min_price: 0,
                    credit_window: 4 << 20,
                },
                chain_id: 199,
            };
            Some(crate::speed::service::start_node(&setup)?)
        } else {
            None
        };
        let engine = Engine::start(Settings {
            speed: speed.as_ref().map(|(s, _)| s.clone()),
            workers,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            upload_slots: 0,
            max_request_len: max_request_len.max(16 << 10),
            ..Settings::default()
        })?;
        let (t, _) = Torrent::open(meta.clone(), &dir, None).map_err(io(&dir))?;
        engine.add_torrent(Arc::new(t))?;
        std::mem::forget(guard);
        Ok(LocalSeeder {
            engine,
            speed,
            meta,
            torrent_file,
            dir,
        })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.engine.local_addr()
    }

    /// CPU time of the engine's worker threads so far.
    pub fn cpu(&self) -> Option<CpuTimes> {
        procstat::threads_cpu(SEEDER_THREAD_PREFIX)
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

/// `len` bytes of xorshift output, written 4 MiB at a time.
fn write_payload(path: &Path, len: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
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
