//! The DHT's work for one torrent, on the control thread: lookups while it downloads, an
//! announce every `announce_interval`, the peers found handed to its dial loop (the path tracker
//! and PEX peers take). And a magnet's lookups while its metadata is fetched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::Dht;
use super::policy::{Schedule, Step, may_use_dht};
use crate::engine::Torrent;
use crate::metainfo::InfoHash;

/// The DHT keys of a torrent: its v1 info-hash and its v2 one truncated to 20 bytes (BEP 52),
/// each once. A hybrid torrent has both and, as libtorrent does, is looked up and announced
/// under each, so v1-only and v2-capable peers both find it; a v2-only torrent has just the
/// truncated one.
pub fn dht_ids(hash: &InfoHash) -> Vec<[u8; 20]> {
    let mut ids = Vec::with_capacity(2);
    ids.extend(hash.v1);
    if let Some(v2) = hash.v2 {
        let mut id = [0u8; 20];
        id.copy_from_slice(&v2[..20]);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Looks up every id in turn: the distinct peers found under any.
async fn lookup_all(dht: &Dht, ids: &[[u8; 20]]) -> Vec<SocketAddr> {
    let mut found: Vec<SocketAddr> = Vec::new();
    for id in ids {
        for p in dht.lookup(*id).await {
            if !found.contains(&p) {
                found.push(p);
            }
        }
    }
    found
}

/// Longest sleep between two looks at a torrent's state (completion, peers connected).
const RECHECK: Duration = Duration::from_secs(5);

/// Runs `t`'s DHT schedule until either stop switch changes. A private torrent returns at once
/// ([`may_use_dht`]): it never looks up nor announces.
pub async fn torrent_loop(
    dht: Dht,
    t: Arc<Torrent>,
    peers: mpsc::UnboundedSender<Vec<SocketAddr>>,
    mut stop: watch::Receiver<bool>,
    mut own_stop: watch::Receiver<bool>,
) {
    if !may_use_dht(t.meta.info.private) {
        return;
    }
    let ids = dht_ids(&t.meta.info.hash);
    let limits = dht.limits().clone();
    let mut schedule = Schedule::new(Instant::now());
    loop {
        // a seed only with every piece (skipped files make a torrent finished, not a seed)
        let complete = t.pieces.verified.is_full();
        let connected = t.peers.load(Ordering::Relaxed);
        match schedule.next(Instant::now(), complete, connected, &limits) {
            Step::Lookup => {
                let found = tokio::select! {
                    found = lookup_all(&dht, &ids) => found,
                    _ = stop.changed() => return,
                    _ = own_stop.changed() => return,
                };
                tracing::debug!(torrent = %t.meta.info.name, peers = found.len(), "DHT lookup");
                if !found.is_empty() && peers.send(found).is_err() {
                    return;
                }
            }
            Step::Announce => {
                let stored = tokio::select! {
                    stored = async {
                        let mut any = false;
                        for id in &ids {
                            any |= dht.announce(*id).await;
                        }
                        any
                    } => stored,
                    _ = stop.changed() => return,
                    _ = own_stop.changed() => return,
                };
                tracing::debug!(torrent = %t.meta.info.name, stored, "DHT announce");
            }
            Step::WaitUntil(at) => {
                let wake = at.min(Instant::now() + RECHECK);
                tokio::select! {
                    _ = tokio::time::sleep_until(wake.into()) => {}
                    _ = stop.changed() => return,
                    _ = own_stop.changed() => return,
                }
            }
        }
    }
}

/// First wait between a magnet's lookups; it doubles up to `lookup_interval`. A magnet has
/// nothing until a peer gives its metadata, so it asks again soon at first.
const MAGNET_FIRST_WAIT: Duration = Duration::from_secs(5);

/// Looks up a magnet's peers (under each of its hashes, [`dht_ids`]) at once, then after 5 s, 10 s, … up to `lookup_interval` apart,
/// handing each address to its metadata fetch; never returns (the fetch drops it when done). A
/// magnet has no private flag until its metadata arrives; once it has, the torrent it becomes
/// is added and [`torrent_loop`] applies BEP 27, so a private one does no more lookups.
pub async fn magnet_loop(dht: Dht, info_hash: InfoHash, tx: mpsc::Sender<SocketAddr>) {
    let ids = dht_ids(&info_hash);
    let mut wait = MAGNET_FIRST_WAIT;
    loop {
        for p in lookup_all(&dht, &ids).await {
            // The fetch's channel is bounded; a full one drops the address (the fetch has
            // plenty to try).
            let _ = tx.try_send(p);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(dht.limits().lookup_interval.max(MAGNET_FIRST_WAIT));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrid_torrent_uses_both_hashes_and_others_their_one() {
        let v1 = [1u8; 20];
        let mut v2 = [2u8; 32];
        v2[20..].fill(9);
        let id = |v1, v2| dht_ids(&InfoHash { v1, v2 });
        assert_eq!(id(Some(v1), None), [v1]);
        assert_eq!(id(None, Some(v2)), [[2u8; 20]]);
        assert_eq!(id(Some(v1), Some(v2)), [v1, [2u8; 20]]);
        assert!(id(None, None).is_empty());
        // The same 20 bytes twice are used once.
        let mut same = [1u8; 32];
        same[20..].fill(7);
        assert_eq!(id(Some(v1), Some(same)), [v1]);
    }
}
