//! `ringseed demo`: a payload made on the spot, its torrent, a verification, and the whole
//! cycle of a seedbox on loopback: one engine seeds it, a second one is given only its magnet
//! link, fetches the metadata and the data from the first and writes it to disk, then seeds it
//! in turn to a third peer; every file is compared byte for byte.
//!
//! The demo runs in steps so the command line can print (and draw progress) between them: a
//! failure in a later step must not hide what the earlier ones already showed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::create::{CreateError, CreateOptions, create};
use crate::engine::{Engine, EngineError, Torrent};
use crate::fetch::{FetchError, FetchReport, fetch};
use crate::metainfo::Metainfo;
use crate::verify::Progress;

/// What stopped the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("creating {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the payload, the torrent or the data for seeding.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{0} came back different")]
    Mismatch(String),
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error(transparent)]
    Download(#[from] crate::leecher::DownloadError),
    #[error("the magnet: {0}")]
    Magnet(String),
    #[error("the download did not finish within {0} s")]
    Timeout(u64),
}

/// Removes a directory tree when dropped (also on an error return).
#[derive(Debug)]
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo's working directory: one the user named is kept, one made here is removed when
/// this is dropped.
#[derive(Debug)]
pub struct DemoDir {
    pub path: PathBuf,
    cleanup: Option<RemoveOnDrop>,
}

impl DemoDir {
    /// `dir`, or a fresh one under the system temp dir (removed on drop).
    pub fn new(dir: Option<PathBuf>) -> DemoDir {
        match dir {
            Some(d) => DemoDir {
                path: d,
                cleanup: None,
            },
            None => {
                let d = std::env::temp_dir().join(format!("ringseed-demo-{}", std::process::id()));
                DemoDir {
                    path: d.clone(),
                    cleanup: Some(RemoveOnDrop(d)),
                }
            }
        }
    }

    /// Whether the directory goes away when the demo ends.
    pub fn is_temporary(&self) -> bool {
        self.cleanup.is_some()
    }

    /// Where the payload (a directory) is written.
    pub fn payload(&self) -> PathBuf {
        self.path.join("demo-payload")
    }

    /// Where the torrent is written.
    pub fn torrent(&self) -> PathBuf {
        self.path.join("demo.torrent")
    }
}

/// The payload's file names and sizes for `total` bytes: odd sizes (pieces straddle files) and
/// an empty file, summing to `total`.
pub fn payload_files(total: u64) -> [(&'static str, u64); 4] {
    [
        ("big.bin", total / 2 + 12_345),
        ("sub/quarter.bin", total / 4 - 777),
        ("sub/empty", 0),
        ("sub/rest.bin", total - total / 2 - total / 4 - 11_568),
    ]
}

/// Writes the multi-file payload of `size_mib` MiB (deterministic pseudo-random bytes) into
/// `dir`'s payload directory; returns its total size.
pub fn write_payload(dir: &DemoDir, size_mib: u64) -> Result<u64, DemoError> {
    let payload = dir.payload();
    std::fs::create_dir_all(payload.join("sub")).map_err(|source| DemoError::CreateDir {
        path: payload.clone(),
        source,
    })?;
    let total = size_mib << 20;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (name, size) in payload_files(total) {
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
    Ok(total)
}

/// Makes the payload's torrent with the config's format and hashing, and writes it.
pub fn create_torrent(
    dir: &DemoDir,
    config: &Config,
    progress: &Progress,
) -> Result<Metainfo, DemoError> {
    let opts = CreateOptions {
        version: config.create.version.into(),
        hash: config.hash_options(),
        ..CreateOptions::default()
    };
    let (bytes, meta) = create(&dir.payload(), &opts, progress)?;
    std::fs::write(dir.torrent(), bytes)?;
    Ok(meta)
}

/// What the loopback seed-and-fetch did.
#[derive(Debug, Clone)]
pub struct DemoFetch {
    pub fetched: FetchReport,
    /// Bytes the engine uploaded, over all workers.
    pub bytes_up: u64,
    pub blocks_up: u64,
    /// Handshakes the engine completed.
    pub connections: u64,
}

/// Seeds `meta` (its data in `dir`) on loopback with the config's engine settings, fetches it
/// back through the wire protocol and compares every file byte for byte. `on_seeding` hears
/// the engine's address and worker count once it listens.
pub fn seed_and_fetch(
    meta: &Metainfo,
    dir: &DemoDir,
    config: &Config,
    on_seeding: impl FnOnce(SocketAddr, usize),
) -> Result<DemoFetch, DemoError> {
    let mut settings = config.engine_settings();
    settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let engine = Engine::start(settings)?;
    let (t, _) = Torrent::open(meta.clone(), &dir.path, None)?;
    engine.add_torrent(Arc::new(t))?;
    on_seeding(engine.local_addr(), engine.stats().len());
    let (data, fetched) = fetch(&meta.info, engine.local_addr(), 256)?;
    let stats = engine.shutdown();
    for (_, f) in meta.info.layout.data_files() {
        let on_disk = std::fs::read(dir.path.join(f.rel_path()))?;
        let got = data.get(f.offset as usize..(f.offset + f.length) as usize);
        if got != Some(on_disk.as_slice()) {
            return Err(DemoError::Mismatch(f.path.join("/")));
        }
    }
    Ok(DemoFetch {
        fetched,
        bytes_up: stats.iter().map(|w| w.bytes_up).sum(),
        blocks_up: stats.iter().map(|w| w.blocks_up).sum(),
        connections: stats.iter().map(|w| w.handshakes).sum(),
    })
}

/// What the download step did.
#[derive(Debug, Clone)]
pub struct DemoDownload {
    /// From adding the magnet to every piece verified and on disk.
    pub elapsed: std::time::Duration,
    pub bytes: u64,
    pub metadata_from: SocketAddr,
    /// The downloader's address, where it seeds the result.
    pub seeding_on: SocketAddr,
}

/// Seeds `meta` (its data in `dir`) with one engine; a second engine, given only the magnet
/// link and the first's address, fetches the metadata (BEP 9) and the data into
/// `dir/downloaded`, every piece checked; the files are compared with the originals; then the
/// downloader seeds them to a one-connection fetch, compared again. `on_step` hears each step.
pub fn download_cycle(
    meta: &Metainfo,
    dir: &DemoDir,
    config: &Config,
    mut on_step: impl FnMut(&str),
) -> Result<(DemoDownload, DemoFetch), DemoError> {
    let mut settings = config.engine_settings();
    settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let seeder = Engine::start(settings.clone())?;
    let (t, _) = Torrent::open(meta.clone(), &dir.path, None)?;
    seeder.add_torrent(Arc::new(t))?;
    on_step(&format!("seeding on {}", seeder.local_addr()));
    settings.peer_id = crate::engine::new_peer_id();
    let options = crate::session::SessionOptions {
        announce: false,
        ..Default::default()
    };
    let session = crate::session::Session::start(settings, options)?;
    let started = std::time::Instant::now();
    let magnet = crate::metainfo::Magnet {
        info_hash: meta.info.hash,
        name: None,
        trackers: Vec::new(),
        peers: Vec::new(),
        web_seeds: Vec::new(),
    };
    on_step(&format!(
        "downloading {} into {}",
        magnet.to_uri(),
        dir.path.join("downloaded").display()
    ));
    let r = crate::leecher::magnet::resolve(
        &magnet,
        &[seeder.local_addr()],
        session.engine().settings().peer_id,
        session.engine().local_addr().port(),
        std::time::Duration::from_secs(30),
    )
    .map_err(DemoError::Magnet)?;
    let into = dir.path.join("downloaded");
    let hash = config.hash_options();
    let t = Arc::new(crate::leecher::open(r.meta, &into, hash, false)?);
    session.add_torrent(t.clone())?;
    session
        .handle()
        .add_peers(t.id, vec![seeder.local_addr()])?;
    let limit = std::time::Duration::from_secs(120);
    while !t.pieces.verified.is_full() {
        if let Some(e) = t.error() {
            return Err(DemoError::Magnet(e));
        }
        if started.elapsed() > limit {
            return Err(DemoError::Timeout(limit.as_secs()));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    t.files.create_missing()?;
    let elapsed = started.elapsed();
    for (_, f) in meta.info.layout.data_files() {
        let original = std::fs::read(dir.path.join(f.rel_path()))?;
        if std::fs::read(into.join(f.rel_path()))? != original {
            return Err(DemoError::Mismatch(f.path.join("/")));
        }
    }
    drop(seeder);
    let seeding_on = session.engine().local_addr();
    on_step(&format!(
        "downloaded; the downloader seeds it on {seeding_on}, fetching it back..."
    ));
    let (data, fetched) = fetch(&meta.info, seeding_on, 256)?;
    let stats = session.shutdown();
    for (_, f) in meta.info.layout.data_files() {
        let on_disk = std::fs::read(dir.path.join(f.rel_path()))?;
        let got = data.get(f.offset as usize..(f.offset + f.length) as usize);
        if got != Some(on_disk.as_slice()) {
            return Err(DemoError::Mismatch(f.path.join("/")));
        }
    }
    Ok((
        DemoDownload {
            elapsed,
            bytes: meta.info.layout.total_length,
            metadata_from: r.from,
            seeding_on,
        },
        DemoFetch {
            fetched,
            bytes_up: stats.iter().map(|w| w.bytes_up).sum(),
            blocks_up: stats.iter().map(|w| w.blocks_up).sum(),
            connections: stats.iter().map(|w| w.handshakes).sum(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn payload_sizes_sum_to_the_total() {
        for mib in [1u64, 32, 256] {
            let total = mib << 20;
            assert_eq!(payload_files(total).iter().map(|f| f.1).sum::<u64>(), total);
        }
    }

    #[test]
    fn a_named_dir_is_kept() {
        let d = DemoDir::new(Some(PathBuf::from("/nonexistent/x")));
        assert!(!d.is_temporary());
        assert_eq!(d.torrent(), Path::new("/nonexistent/x/demo.torrent"));
    }
}
