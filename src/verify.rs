//! Parallel piece hashing over a torrent's files.
//!
//! Threads take batches of consecutive pieces from a shared counter (so a slow disk region or a
//! fast one balances itself), read each batch with one positioned read per file span into a
//! reused buffer, and hash it. Before hashing a batch a thread asks the kernel to prefetch the
//! batch it will probably take next, so cold data streams in while the CPU hashes. Memory stays
//! at one batch buffer per thread whatever the torrent's size.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metainfo::{FileLayout, Info};
use crate::storage::{DataFiles, ReadOutcome};

/// Which digests to compute per piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashMode {
    pub v1: bool,
    pub v2: bool,
}

/// The digests of one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceDigest {
    pub v1: Option<[u8; 20]>,
    pub v2: Option<[u8; 32]>,
}

/// What hashing one piece found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceOutcome {
    Hashed(PieceDigest),
    /// Some of the piece's bytes are in a file that is absent or too short.
    Missing,
    /// The disk returned an error for this piece.
    ReadError(String),
}

/// Live counters a progress display can poll while hashing runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub pieces: AtomicU32,
}

/// Tuning for [`hash_pieces`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashOptions {
    /// Hashing threads; 0 means one per available core.
    pub threads: usize,
    /// Bytes read per batch (rounded to whole pieces, at least one piece).
    pub batch_bytes: u64,
}

impl Default for HashOptions {
    fn default() -> Self {
        HashOptions {
            threads: 0,
            batch_bytes: 4 << 20,
        }
    }
}

impl HashOptions {
    pub fn thread_count(&self) -> usize {
        crate::threads_or_cores(self.threads)
    }
}

/// Largest batch a thread reads to fill the SHA-1 lanes: sixteen pieces of up to 1 MiB, eight
/// of 2 MiB (a thread per core holds one, so a 32-core box holds 512 MiB while it rechecks).
const LANE_BATCH_BYTES: u64 = 16 << 20;

/// Hashes every piece of `layout` from `data`. Returns one outcome per piece, in piece order.
pub fn hash_pieces(
    layout: &FileLayout,
    data: &DataFiles,
    mode: HashMode,
    opts: HashOptions,
    progress: &Progress,
) -> Vec<PieceOutcome> {
    let n = layout.num_pieces;
    if n == 0 {
        return Vec::new();
    }
    let mut per_batch =
        (opts.batch_bytes / layout.piece_length).clamp(1, u64::from(u32::MAX)) as u32;
    if mode.v1 && crate::sha1x16::available() {
        // Up to sixteen pieces a batch where they fit in LANE_BATCH_BYTES, so their SHA-1s
        // run together in the lanes (about 3× SHA-NI's rate on this machine for sixteen).
        let lanes = (LANE_BATCH_BYTES / layout.piece_length).min(crate::sha1x16::LANES as u64);
        per_batch = per_batch.max(lanes as u32);
    }
    let threads = opts
        .thread_count()
        .min(n.div_ceil(per_batch) as usize)
        .max(1);
    let next = AtomicU32::new(0);
    let mut results: Vec<PieceOutcome> = vec![PieceOutcome::Missing; n as usize];
    let parts: Vec<Vec<(u32, PieceOutcome)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| hash_worker(layout, data, mode, per_batch, threads, &next, progress))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for (i, o) in parts.into_iter().flatten() {
        results[i as usize] = o;
    }
    results
}

fn hash_worker(
    layout: &FileLayout,
    data: &DataFiles,
    mode: HashMode,
    per_batch: u32,
    threads: usize,
    next: &AtomicU32,
    progress: &Progress,
) -> Vec<(u32, PieceOutcome)> {
    let n = layout.num_pieces;
    let pl = layout.piece_length;
    let mut out = Vec::new();
    let mut buf = vec![0u8; (u64::from(per_batch) * pl).min(layout.total_length) as usize];
    loop {
        // Relaxed: the counter only hands out disjoint ranges; no other memory hangs on it.
        let first = next.fetch_add(per_batch, Ordering::Relaxed);
        if first >= n {
            break;
        }
        let last = first.saturating_add(per_batch).min(n);
        let start = u64::from(first) * pl;
        let end = (u64::from(last) * pl).min(layout.total_length);
        let ahead = start + (threads as u64) * u64::from(per_batch) * pl;
        if ahead < layout.total_length {
            data.prefetch(layout, ahead, u64::from(per_batch) * pl);
        }
        let batch = &mut buf[..(end - start) as usize];
        let whole = data.read(layout, start, batch);
        // A batch read whole has its SHA-1s computed together (in lanes where there are).
        let sha1s = match &whole {
            Ok(ReadOutcome::Complete) if mode.v1 => {
                let pieces: Vec<&[u8]> = (first..last)
                    .enumerate()
                    .map(|(k, piece)| {
                        let off = k * pl as usize;
                        &batch[off..off + layout.piece_size(piece) as usize]
                    })
                    .collect();
                crate::sha1x16::sha1_many(&pieces)
            }
            _ => Vec::new(),
        };
        for (k, piece) in (first..last).enumerate() {
            let size = layout.piece_size(piece) as usize;
            let off = k * pl as usize;
            let bytes = &mut batch[off..off + size];
            let outcome = match &whole {
                Ok(ReadOutcome::Complete) => {
                    let v1 = sha1s.get(k).copied();
                    PieceOutcome::Hashed(digest_with(layout, piece, bytes, mode, v1))
                }
                // Part of the batch is missing or unreadable: sort it out piece by piece.
                _ => match data.read(layout, u64::from(piece) * pl, bytes) {
                    Ok(ReadOutcome::Complete) => {
                        PieceOutcome::Hashed(digest(layout, piece, bytes, mode))
                    }
                    Ok(ReadOutcome::Missing) => PieceOutcome::Missing,
                    Err(e) => PieceOutcome::ReadError(e.to_string()),
                },
            };
            out.push((piece, outcome));
            // Relaxed: progress is a statistic for display only.
            progress.bytes.fetch_add(size as u64, Ordering::Relaxed);
            progress.pieces.fetch_add(1, Ordering::Relaxed);
        }
    }
    out
}

fn digest(layout: &FileLayout, piece: u32, bytes: &[u8], mode: HashMode) -> PieceDigest {
    digest_with(layout, piece, bytes, mode, None)
}

/// [`digest`], with the piece's SHA-1 given when it was computed already (`sha1`).
fn digest_with(
    layout: &FileLayout,
    piece: u32,
    bytes: &[u8],
    mode: HashMode,
    sha1: Option<[u8; 20]>,
) -> PieceDigest {
    let v1 = mode
        .v1
        .then(|| sha1.unwrap_or_else(|| crate::hash::sha1(bytes)));
    let v2 = if mode.v2 {
        v2_digest(layout, piece, bytes)
    } else {
        None
    };
    PieceDigest { v1, v2 }
}

/// The BEP 52 hash of piece `piece` whose bytes (pads included) are `bytes`; `None` for a piece
/// that starts in a pad.
pub fn v2_digest(layout: &FileLayout, piece: u32, bytes: &[u8]) -> Option<[u8; 32]> {
    let start = u64::from(piece) * layout.piece_length;
    let i = layout.file_at(start)?;
    let f = &layout.files[i];
    if f.pad {
        return None;
    }
    // Files start on piece boundaries in v2, so the file's bytes lead the piece.
    let in_piece = (f.end() - start).min(bytes.len() as u64);
    let width = crate::hash::v2_leaf_width(f.length, layout.piece_length, in_piece);
    Some(crate::hash::v2_piece_hash(
        &bytes[..in_piece as usize],
        width,
    ))
}

/// The result of checking a torrent's data against its hashes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub pieces: u32,
    pub good: u32,
    /// Pieces whose data is present and hashes wrong (or could not be read).
    pub bad: Vec<u32>,
    /// Pieces with data absent from disk.
    pub missing: Vec<u32>,
    /// Read errors, by piece.
    pub errors: Vec<(u32, String)>,
    /// Bytes hashed.
    pub bytes: u64,
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl VerifyReport {
    pub fn all_good(&self) -> bool {
        self.good == self.pieces
    }

    /// Hashing throughput in bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Checks the data of `info` under `root` against its piece hashes: SHA-1 for v1, the BEP 52
/// merkle hashes for v2, both for hybrid (a hybrid piece is good only if both agree).
pub fn verify(
    info: &Info,
    data: &DataFiles,
    opts: HashOptions,
    progress: &Progress,
) -> VerifyReport {
    let started = Instant::now();
    let mode = HashMode {
        v1: info.version.has_v1(),
        v2: info.version.has_v2(),
    };
    let outcomes = hash_pieces(&info.layout, data, mode, opts, progress);
    let mut report = VerifyReport {
        pieces: info.layout.num_pieces,
        good: 0,
        bad: Vec::new(),
        missing: Vec::new(),
        errors: Vec::new(),
        bytes: progress.bytes.load(Ordering::Relaxed),
        elapsed: Duration::ZERO,
    };
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let i = i as u32;
        match outcome {
            PieceOutcome::Hashed(d) => {
                let v1_ok = !mode.v1 || d.v1.as_ref() == info.pieces.get(i as usize);
                let v2_ok = !mode.v2 || (d.v2.is_some() && d.v2 == info.v2_piece_hash(i));
                if v1_ok && v2_ok {
                    report.good += 1;
                } else {
                    report.bad.push(i);
                }
            }
            PieceOutcome::Missing => report.missing.push(i),
            PieceOutcome::ReadError(e) => {
                report.bad.push(i);
                report.errors.push((i, e));
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// A verification of `torrent`'s data: counts, the bad and missing pieces, read errors, speed.
pub fn report_json(
    torrent: &std::path::Path,
    meta: &crate::metainfo::Metainfo,
    report: &VerifyReport,
) -> serde_json::Value {
    let hex = crate::metainfo::hex;
    serde_json::json!({
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
        "gib_per_s": report.bytes_per_sec() / f64::from(1u32 << 30),
    })
}
