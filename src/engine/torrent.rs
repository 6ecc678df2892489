//! A torrent as the engine serves it: metadata, open data files, the shared piece table,
//! counters and limits. Shared read-mostly by every worker through an `Arc`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::ratelimit::TokenBucket;
use crate::metainfo::{Info, Metainfo};
use crate::pieces::PieceTable;
use crate::storage::DataFiles;
use crate::verify::{self, HashOptions, Progress, VerifyReport};

/// One torrent being seeded.
#[derive(Debug)]
pub struct Torrent {
    pub meta: Metainfo,
    /// The 20 bytes peers and trackers know it by.
    pub id: [u8; 20],
    pub data_dir: PathBuf,
    pub files: DataFiles,
    pub pieces: PieceTable,
    /// Bytes uploaded (piece payload only).
    pub uploaded: AtomicU64,
    pub downloaded: AtomicU64,
    /// Peers currently connected to this torrent, over all workers.
    pub peers: AtomicU32,
    pub upload_limit: TokenBucket,
    /// The connected peers' listening addresses (with BEP 11 flags), over all workers: what
    /// peer exchange tells the others. Written at extension handshakes and disconnects, read
    /// once per exchange round.
    pub swarm: std::sync::Mutex<super::swarm::Swarm>,
}

impl Torrent {
    /// Opens `meta`'s data under `data_dir`. With `verify`, hashes everything first and marks
    /// only good pieces; without, trusts the data (resume) and marks every piece.
    pub fn open(
        meta: Metainfo,
        data_dir: &Path,
        verify: Option<HashOptions>,
    ) -> std::io::Result<(Self, Option<VerifyReport>)> {
        let files = DataFiles::open(&meta.info.layout, data_dir)?;
        let pieces = PieceTable::new(meta.info.layout.num_pieces);
        let report = match verify {
            Some(opts) => {
                let r = verify::verify(&meta.info, &files, opts, &Progress::default());
                let bad: std::collections::HashSet<u32> =
                    r.bad.iter().chain(&r.missing).copied().collect();
                for i in 0..pieces.num_pieces() {
                    if !bad.contains(&i) {
                        pieces.verified.set(i);
                    }
                }
                Some(r)
            }
            None => {
                for i in 0..pieces.num_pieces() {
                    pieces.verified.set(i);
                }
                None
            }
        };
        Ok((
            Torrent {
                id: meta.info.hash.wire_id(),
                data_dir: data_dir.to_path_buf(),
                files,
                pieces,
                uploaded: AtomicU64::new(0),
                downloaded: AtomicU64::new(0),
                peers: AtomicU32::new(0),
                upload_limit: TokenBucket::new(0),
                swarm: Default::default(),
                meta,
            },
            report,
        ))
    }

    pub fn info(&self) -> &Info {
        &self.meta.info
    }

    /// Bytes still missing (what a tracker's `left` reports).
    pub fn left(&self) -> u64 {
        let l = &self.meta.info.layout;
        (0..l.num_pieces)
            .filter(|&i| !self.pieces.verified.get(i))
            .map(|i| l.piece_size(i))
            .sum()
    }

    pub fn uploaded(&self) -> u64 {
        // Relaxed: a statistic.
        self.uploaded.load(Ordering::Relaxed)
    }
}
