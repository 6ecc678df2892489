//! From a magnet link to a torrent: the info dictionary fetched from peers (BEP 9, see
//! [`crate::magnet_fetch`]), the peers found through the magnet's trackers, its `x.pe`
//! addresses and any given by hand; checked against the info-hash, then written out as a
//! .torrent so neither a restart nor a second run fetches it again.

use std::net::SocketAddr;
use std::time::Duration;

use crate::magnet_fetch::{self, FetchOptions};
use crate::metainfo::{Magnet, Metainfo};
use crate::tracker::{
    AnnounceOutcome, Announcer, AnnouncerConfig, ClientConfig, TrackerClient, TransferStats,
};

/// A magnet resolved: its torrent parsed, and the .torrent bytes to keep.
pub struct Resolved {
    pub meta: Metainfo,
    pub torrent: Vec<u8>,
    /// Where the metadata came from.
    pub from: SocketAddr,
}

/// Fetches `m`'s metadata from the peers it names, `peers`, and its trackers, for at most
/// `limit`. Blocks (it runs its own small runtime), so call it off the control thread.
pub fn resolve(
    m: &Magnet,
    peers: &[SocketAddr],
    peer_id: [u8; 20],
    port: u16,
    limit: Duration,
) -> Result<Resolved, String> {
    resolve_until(m, peers, peer_id, port, limit, std::future::pending())
}

/// As [`resolve`], given up (with an error) as soon as `stop` completes: the service stops the
/// fetch of a magnet that is deleted or given new peers.
pub fn resolve_until(
    m: &Magnet,
    peers: &[SocketAddr],
    peer_id: [u8; 20],
    port: u16,
    limit: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Resolved, String> {
    let opts = FetchOptions {
        peer_id,
        listen_port: port,
        ..FetchOptions::default()
    };
    resolve_with_dht(m, peers, opts, limit, stop, None)
}

/// As [`resolve_until`], with the peers that `dht` finds for the info-hash too (looked up at
/// once and again while the fetch lasts; the lookups end with it). `opts` says how peers are
/// dialled and treated ([`FetchOptions::for_engine`]: as the engine does).
pub fn resolve_with_dht(
    m: &Magnet,
    peers: &[SocketAddr],
    opts: FetchOptions,
    limit: Duration,
    stop: impl std::future::Future<Output = ()>,
    dht: Option<crate::dht::Dht>,
) -> Result<Resolved, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let fetched = rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut given: Vec<SocketAddr> = peers.to_vec();
        given.extend(m.peers.iter().filter_map(|p| p.parse::<SocketAddr>().ok()));
        for p in given {
            let _ = tx.try_send(p);
        }
        let (peer_id, port) = (opts.peer_id, opts.listen_port);
        let dht_tx = tx.clone();
        let lookups = async move {
            match dht {
                Some(d) => crate::dht::torrent::magnet_loop(d, m.info_hash, dht_tx).await,
                None => std::future::pending().await,
            }
        };
        let announce = announce_for_peers(m, peer_id, port, tx);
        let fetch = magnet_fetch::fetch_metadata(&m.info_hash, rx, opts);
        tokio::select! {
            r = tokio::time::timeout(limit, fetch) => match r {
                Ok(r) => r.map_err(|e| format!("fetching the metadata: {e}")),
                Err(_) => Err(format!("no peer gave the metadata within {} s", limit.as_secs())),
            },
            () = announce => Err("the trackers' announces ended".into()),
            () = lookups => Err("the DHT lookups ended".into()),
            () = stop => Err("stopped".into()),
        }
    })?;
    let mut meta = magnet_fetch::metainfo_from_info(&fetched.info, &m.trackers)
        .map_err(|e| format!("the fetched metadata: {e}"))?;
    meta.info.piece_layers = fetched.piece_layers;
    let torrent = torrent_bytes(&fetched.info, &m.trackers, &meta.info.piece_layers);
    if meta.info.version.has_v2() {
        // The .torrent kept must load as any other: its piece layers complete and right.
        Metainfo::from_bytes(&torrent).map_err(|e| format!("the fetched torrent: {e}"))?;
    }
    Ok(Resolved {
        torrent,
        meta,
        from: fetched.from,
    })
}

/// Announces to the magnet's trackers (each its own tier) until cancelled, handing the peers
/// they return to the fetch. Never returns while trackers are left to ask.
async fn announce_for_peers(
    m: &Magnet,
    peer_id: [u8; 20],
    port: u16,
    tx: tokio::sync::mpsc::Sender<SocketAddr>,
) {
    let tiers: Vec<Vec<String>> = m.trackers.iter().map(|t| vec![t.clone()]).collect();
    let Ok(client) = TrackerClient::new(ClientConfig::default()) else {
        return std::future::pending().await;
    };
    let mut a = Announcer::new(
        m.info_hash.wire_id(),
        peer_id,
        port,
        &tiers,
        AnnouncerConfig::default(),
    );
    loop {
        tokio::time::sleep_until(a.next_due().into()).await;
        let stats = TransferStats {
            uploaded: 0,
            downloaded: 0,
            // Unknown until the metadata arrives; anything but 0 asks for seeds.
            left: 1,
        };
        match a.announce_now(&client, stats).await {
            AnnounceOutcome::Announced { response, .. } => {
                for p in response.peers {
                    let _ = tx.try_send(p);
                }
            }
            AnnounceOutcome::Failed { error } => tracing::debug!("magnet announce: {error}"),
            AnnounceOutcome::NoTrackers | AnnounceOutcome::Stopped => {
                return std::future::pending().await;
            }
        }
    }
}

/// A .torrent of `info` (the exact bytes, so the info-hash is kept), `trackers`, one per tier,
/// and for v2 the `piece layers` fetched from peers (BEP 52: outside the info dictionary, and
/// needed to verify the pieces of every file longer than a piece), so a restart does not fetch
/// them again.
pub fn torrent_bytes(
    info: &[u8],
    trackers: &[String],
    layers: &magnet_fetch::PieceLayers,
) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(s.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(s);
    }
    let mut out = b"d".to_vec();
    if let Some(first) = trackers.first() {
        string(&mut out, b"announce");
        string(&mut out, first.as_bytes());
        string(&mut out, b"announce-list");
        out.push(b'l');
        for t in trackers {
            out.push(b'l');
            string(&mut out, t.as_bytes());
            out.push(b'e');
        }
        out.push(b'e');
    }
    string(&mut out, b"info");
    out.extend_from_slice(info);
    if !layers.is_empty() {
        // Keys in byte order, as strict bencode wants.
        let mut roots: Vec<&[u8; 32]> = layers.keys().collect();
        roots.sort();
        string(&mut out, b"piece layers");
        out.push(b'd');
        for root in roots {
            string(&mut out, root);
            let layer = layers.get(root).map(|l| l.concat()).unwrap_or_default();
            string(&mut out, &layer);
        }
        out.push(b'e');
    }
    out.push(b'e');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_torrent_written_keeps_the_info_hash_and_trackers() {
        let info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let none = magnet_fetch::PieceLayers::new();
        let bytes = torrent_bytes(info, &["http://127.0.0.1:1/announce".into()], &none);
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.info.raw, info);
        assert_eq!(m.info.hash.v1, Some(crate::hash::sha1(info)));
        assert_eq!(
            m.trackers,
            vec![vec!["http://127.0.0.1:1/announce".to_string()]]
        );
        assert!(Metainfo::from_bytes(&torrent_bytes(info, &[], &none)).is_ok());
    }

    #[test]
    fn the_torrent_written_keeps_the_piece_layers() {
        // A v2 file of 3 pieces of 16 KiB and a second of 2: two layers, written in key order.
        use crate::bencode::Bencode;
        let mut tree = Bencode::dict();
        let mut layers = magnet_fetch::PieceLayers::new();
        for (name, pieces) in [("a", 3u8), ("b", 2)] {
            let layer: Vec<[u8; 32]> = (0..pieces).map(|i| [i + pieces; 32]).collect();
            let root = crate::hash::root_from_piece_layer(&layer, 16384);
            layers.insert(root, layer);
            let mut attrs = Bencode::dict();
            attrs.insert("length", Bencode::Int(i64::from(pieces) * 16384));
            attrs.insert("pieces root", Bencode::bytes(root));
            let mut leaf = Bencode::dict();
            leaf.insert("", attrs);
            tree.insert(name, leaf);
        }
        let mut info = Bencode::dict();
        info.insert("file tree", tree);
        info.insert("meta version", Bencode::Int(2));
        info.insert("name", Bencode::bytes("d"));
        info.insert("piece length", Bencode::Int(16384));
        let info = info.encode();
        let bytes = torrent_bytes(&info, &[], &layers);
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.info.raw, info);
        assert_eq!(m.info.piece_layers, layers);
        // Without them the torrent does not load: what a restart would have faced.
        assert!(Metainfo::from_bytes(&torrent_bytes(&info, &[], &none_layers())).is_err());
    }

    fn none_layers() -> magnet_fetch::PieceLayers {
        magnet_fetch::PieceLayers::new()
    }
}
