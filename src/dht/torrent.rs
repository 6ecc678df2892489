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
    let limits = dht.limits().clone();
    let mut schedule = Schedule::new(Instant::now());
    loop {
        let complete = t.left() == 0;
        let connected = t.peers.load(Ordering::Relaxed);
        match schedule.next(Instant::now(), complete, connected, &limits) {
            Step::Lookup => {
                let found = tokio::select! {
                    found = dht.lookup(t.id) => found,
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
                    stored = dht.announce(t.id) => stored,
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

/// Looks up a magnet's peers at once, then after 5 s, 10 s, … up to `lookup_interval` apart,
/// handing each address to its metadata fetch; never returns (the fetch drops it when done). A
/// magnet has no private flag until its metadata arrives; once it has, the torrent it becomes
/// is added and [`torrent_loop`] applies BEP 27, so a private one does no more lookups.
pub async fn magnet_loop(dht: Dht, info_hash: [u8; 20], tx: mpsc::Sender<SocketAddr>) {
    let mut wait = MAGNET_FIRST_WAIT;
    loop {
        for p in dht.lookup(info_hash).await {
            // The fetch's channel is bounded; a full one drops the address (the fetch has
            // plenty to try).
            let _ = tx.try_send(p);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(dht.limits().lookup_interval.max(MAGNET_FIRST_WAIT));
    }
}
