//! `ringseed demo`: a payload made on the spot, its torrent, a verification, and a loopback
//! seed-and-fetch of it through the wire protocol.
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
