//! What `ringseed info` and `ringseed verify --json` print: a torrent, a magnet link or a
//! verification as a JSON value (keys sorted, as JSON objects built as maps are).

use serde_json::{Value, json};

use super::{Magnet, Metainfo, hex};
use crate::hash::VerifyReport;

const GIB: f64 = (1u64 << 30) as f64;

/// A torrent's names, hashes, layout, trackers and files.
pub fn info_json(meta: &Metainfo) -> Value {
    let i = &meta.info;
    json!({
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
        "files": i.layout.data_files().map(|(_, f)| json!({
            "path": f.path.join("/"),
            "length": f.length,
        })).collect::<Vec<_>>(),
    })
}

/// A magnet link's hashes, name, trackers, peers and web seeds.
pub fn magnet_json(m: &Magnet) -> Value {
    json!({
        "info_hash_v1": m.info_hash.v1.map(|h| hex(&h)),
        "info_hash_v2": m.info_hash.v2.map(|h| hex(&h)),
        "name": m.name,
        "trackers": m.trackers,
        "peers": m.peers,
        "web_seeds": m.web_seeds,
    })
}

/// A verification of `torrent`'s data: counts, the bad and missing pieces, read errors, speed.
pub fn verify_json(torrent: &std::path::Path, meta: &Metainfo, report: &VerifyReport) -> Value {
    json!({
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
    })
}
