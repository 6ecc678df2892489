//! What `ringseed info` and `ringseed verify --json` print: a torrent, a magnet link or a
//! verification as a JSON value (keys sorted, as JSON objects built as maps are).

use serde_json::{Value, json};

use super::{Magnet, Metainfo, hex};

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
