//! A torrent as the engine serves it: metadata, open data files, the shared piece table,
//! counters and limits. Shared read-mostly by every worker through an `Arc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ratelimit::TokenBucket;
use crate::download::blame::Blame;
use crate::download::want::Want;
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
    /// A hybrid torrent's other name on the wire: its v2 info-hash truncated to 20 bytes (BEP
    /// 52), which v2 peers dial it by (for a pure v2 torrent that is `id` itself).
    pub v2_id: Option<[u8; 20]>,
    /// Its files' merkle trees above the piece layer, from which v2 peers' hash requests are
    /// answered (empty for v1 torrents and for v2 files of one piece).
    pub hash_trees: crate::merkle::Trees,
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
    /// Connections per peer address to this torrent, over all workers.
    pub ips: super::ip_limit::IpCounts,
    /// The download side, shared by the workers fetching its pieces.
    pub fetch: FetchShared,
    /// What its trackers last answered (written by its announce loop after each announce).
    pub trackers: Mutex<Vec<crate::tracker::report::TrackerReport>>,
    /// Wakes its announce loop to announce now (the qBittorrent API's `torrents/reannounce`).
    pub reannounce: tokio::sync::Notify,
    /// Its tracker tiers as edited through the API (`None`: the metainfo's), and a count of
    /// edits its announce loop compares to rebuild its schedule ([`Torrent::set_tiers`]).
    tiers: Mutex<Option<Vec<Vec<String>>>>,
    pub tiers_edits: AtomicU64,
    /// When its announce loop announces next (`None`: not running, or no trackers): the
    /// qBittorrent API's `reannounce`.
    pub next_announce: Mutex<Option<std::time::Instant>>,
}

/// What the workers downloading one torrent share. Written once per piece (or per bad piece,
/// or per peer learned), never per block.
#[derive(Debug)]
pub struct FetchShared {
    /// Missing pieces are fetched (cleared when the torrent stops or fails).
    active: AtomicBool,
    /// Pieces verified since the torrent was opened, in order: each worker tells its peers
    /// `have` from where it last read.
    pub done_log: Mutex<Vec<u32>>,
    /// The done log's length, readable without its lock: a worker with nothing new to tell
    /// (every tick, for every torrent) takes no lock.
    pub done_len: std::sync::atomic::AtomicUsize,
    /// Strikes and bans for bad data.
    pub blame: Mutex<Blame>,
    /// Why downloading stopped, if it failed (a full disk, say).
    pub error: Mutex<Option<String>>,
    /// Which pieces are wanted and which first (file priorities, sequential, first/last):
    /// read by the picker once per piece claimed, replaced by the control thread. Its lock
    /// also orders the recounts of `wanted_missing`.
    want: Mutex<Arc<Want>>,
    /// Wanted pieces not verified, recounted under `want`'s lock after each verified piece and
    /// each new plan: read per message (`fetching`), so it is kept rather than counted.
    wanted_missing: AtomicU32,
    pub download_limit: TokenBucket,
    /// Peer addresses learned from peer exchange, for the control thread to dial.
    pub learned: Mutex<Vec<SocketAddr>>,
    /// Addresses a worker dialled whose connection is still open (or opening): not dialled
    /// again meanwhile.
    pub dialled: Mutex<std::collections::HashSet<SocketAddr>>,
    /// Pieces that failed their hash check.
    pub hash_failures: AtomicU64,
    /// Connections to it refused or closed because the address is banned.
    pub banned_refusals: AtomicU64,
}

/// How a download's existing data is taken at open.
#[derive(Debug, Clone)]
pub enum Start {
    /// Nothing is on disk yet.
    Empty,
    /// Resume: these pieces (wire bit order) were verified before; the rest are fetched.
    Trust(Vec<u8>),
    /// Hash what is on disk first and keep the good pieces.
    Check(HashOptions),
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
        Self::with_files(meta, data_dir, files, verify)
    }

    /// Opens `meta`'s data under `data_dir` for downloading: existing files read-write, the
    /// missing ones created as their pieces arrive; `start` says which pieces are there.
    pub fn open_download(
        meta: Metainfo,
        data_dir: &Path,
        start: Start,
        preallocate: bool,
    ) -> std::io::Result<(Self, Option<VerifyReport>)> {
        let files = DataFiles::open_for_download(&meta.info.layout, data_dir, preallocate)?;
        match start {
            Start::Check(opts) => Self::with_files(meta, data_dir, files, Some(opts)),
            Start::Empty => {
                let (t, _) = Self::with_files(meta, data_dir, files, None)?;
                for i in 0..t.pieces.num_pieces() {
                    t.pieces.verified.clear(i);
                }
                Ok((t, None))
            }
            Start::Trust(bits) => {
                let (t, _) = Self::with_files(meta, data_dir, files, None)?;
                for i in 0..t.pieces.num_pieces() {
                    let set = bits
                        .get((i / 8) as usize)
                        .is_some_and(|b| b & (0x80 >> (i % 8)) != 0);
                    if !set {
                        t.pieces.verified.clear(i);
                    }
                }
                Ok((t, None))
            }
        }
        .map(|(t, r)| {
            t.recount_wanted();
            // Any torrent opened for download fetches what is missing.
            t.fetch.active.store(true, Ordering::Release);
            (t, r)
        })
    }

    fn with_files(
        meta: Metainfo,
        data_dir: &Path,
        files: DataFiles,
        verify: Option<HashOptions>,
    ) -> std::io::Result<(Self, Option<VerifyReport>)> {
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
        let n = pieces.num_pieces();
        let missing = n - pieces.verified.count().min(n);
        Ok((
            Torrent {
                id: meta.info.hash.wire_id(),
                v2_id: meta.info.hash.v2.map(|h| {
                    let mut id = [0; 20];
                    id.copy_from_slice(&h[..20]);
                    id
                }),
                hash_trees: crate::merkle::Trees::from_info(&meta.info),
                data_dir: data_dir.to_path_buf(),
                files,
                pieces,
                uploaded: AtomicU64::new(0),
                downloaded: AtomicU64::new(0),
                peers: AtomicU32::new(0),
                upload_limit: TokenBucket::new(0),
                swarm: Default::default(),
                ips: Default::default(),
                fetch: FetchShared {
                    active: AtomicBool::new(false),
                    done_log: Mutex::new(Vec::new()),
                    done_len: Default::default(),
                    blame: Mutex::new(Blame::default()),
                    error: Mutex::new(None),
                    want: Mutex::new(Arc::new(Want::everything(n))),
                    wanted_missing: AtomicU32::new(missing),
                    download_limit: TokenBucket::new(0),
                    learned: Mutex::new(Vec::new()),
                    dialled: Mutex::new(Default::default()),
                    hash_failures: AtomicU64::new(0),
                    banned_refusals: AtomicU64::new(0),
                },
                trackers: Mutex::new(crate::tracker::report::not_contacted(&meta.trackers)),
                reannounce: tokio::sync::Notify::new(),
                tiers: Mutex::new(None),
                tiers_edits: AtomicU64::new(0),
                next_announce: Mutex::new(None),
                meta,
            },
            report,
        ))
    }

    pub fn info(&self) -> &Info {
        &self.meta.info
    }

    /// Bytes of wanted files still missing (what a tracker's `left` and qBittorrent's
    /// `amount_left` report: libtorrent counts only wanted bytes too).
    pub fn left(&self) -> u64 {
        self.want()
            .left(&self.meta.info.layout, |i| self.pieces.verified.get(i))
    }

    /// Whether missing wanted pieces are being fetched: opened for download, not complete (as
    /// far as wanted), not stopped by an error.
    pub fn fetching(&self) -> bool {
        // Acquire pairs with the Release in `fail`/`open_download`: a worker that sees the flag
        // cleared also sees the error message.
        self.fetch.active.load(Ordering::Acquire)
            && self.fetch.wanted_missing.load(Ordering::Acquire) > 0
    }

    /// Every wanted piece is verified (qBittorrent's "finished": seeding, even with skipped
    /// files missing). Not the same as a complete torrent (`pieces.verified.is_full()`), which
    /// alone is announced `completed`.
    pub fn wanted_complete(&self) -> bool {
        self.fetch.wanted_missing.load(Ordering::Acquire) == 0
    }

    /// The plan of wanted pieces now.
    pub fn want(&self) -> Arc<Want> {
        super::lock(&self.fetch.want).clone()
    }

    /// Replaces the plan of wanted pieces (a plan for another piece count is ignored).
    pub fn set_want(&self, want: Want) {
        if want.num_pieces() != self.pieces.num_pieces() {
            return;
        }
        let mut w = super::lock(&self.fetch.want);
        *w = Arc::new(want);
        self.fetch
            .wanted_missing
            .store(w.missing(&self.pieces.verified), Ordering::Release);
    }

    /// Counts the wanted pieces not verified again (after a piece was verified). Under the
    /// plan's lock: each recount reads the bits after the ones set before it took the lock, so
    /// the last store is never a stale count.
    pub fn recount_wanted(&self) {
        let w = super::lock(&self.fetch.want);
        self.fetch
            .wanted_missing
            .store(w.missing(&self.pieces.verified), Ordering::Release);
    }

    /// Whether the torrent was opened for download (its files are writable).
    pub fn downloads(&self) -> bool {
        self.files.writable()
    }

    /// Stops downloading with `error` (the first error wins); seeding what is verified goes on.
    pub fn fail(&self, error: String) {
        let mut e = super::lock(&self.fetch.error);
        if e.is_none() {
            *e = Some(error);
        }
        self.fetch.active.store(false, Ordering::Release);
    }

    /// Why downloading stopped, if it failed.
    pub fn error(&self) -> Option<String> {
        super::lock(&self.fetch.error).clone()
    }

    /// Payload bytes received from peers.
    pub fn downloaded(&self) -> u64 {
        // Relaxed: a statistic.
        self.downloaded.load(Ordering::Relaxed)
    }

    /// Verified pieces in wire bit order (for resume).
    pub fn verified_bitfield(&self) -> Vec<u8> {
        self.pieces.verified.to_wire()
    }

    pub fn uploaded(&self) -> u64 {
        // Relaxed: a statistic.
        self.uploaded.load(Ordering::Relaxed)
    }

    /// The tracker tiers it announces to: as edited, else its metainfo's.
    pub fn tiers(&self) -> Vec<Vec<String>> {
        super::lock(&self.tiers)
            .clone()
            .unwrap_or_else(|| self.meta.trackers.clone())
    }

    /// Replaces its tracker tiers (`None`: back to the metainfo's). When they differ, its
    /// announce loop starts a new schedule on them and announces at once; until then the
    /// reports show the new trackers as not contacted.
    pub fn set_tiers(&self, tiers: Option<Vec<Vec<String>>>) {
        let new = tiers.clone().unwrap_or_else(|| self.meta.trackers.clone());
        if new == self.tiers() {
            *super::lock(&self.tiers) = tiers;
            return;
        }
        *super::lock(&self.tiers) = tiers;
        *super::lock(&self.trackers) = crate::tracker::report::not_contacted(&new);
        self.tiers_edits.fetch_add(1, Ordering::Release);
        self.reannounce.notify_one();
    }
}
