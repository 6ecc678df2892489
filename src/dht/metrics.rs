//! The DHT's series in `/metrics`: whether it runs, its UDP port, the routing table's size,
//! lookups, announces and peers found. Read from [`DhtStats`] at scrape time.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::filter::Verdict;
use super::stats::{DhtStats, DhtStatus};
use crate::metrics::{Labels, counter, gauge};

/// The DHT's collector; `stats` is `None` when the DHT is off (the series then say so).
#[derive(Debug)]
pub struct DhtCollector {
    pub stats: Option<Arc<DhtStats>>,
}

impl Collector for DhtCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let none: Labels = vec![];
        gauge(
            &mut enc,
            "ringseed_dht_enabled",
            "1 when the DHT (BEP 5) runs.",
            &[(none.clone(), i64::from(self.stats.is_some()))],
        )?;
        let Some(s) = &self.stats else {
            return Ok(());
        };
        let DhtStatus {
            port,
            nodes,
            lookups_started,
            lookups_finished,
            lookups_timed_out,
            announces,
            announces_failed,
            peers_found,
        } = s.status();
        let dropped = s.peers_dropped.load(std::sync::atomic::Ordering::Relaxed);
        let g = |v: u64| vec![(none.clone(), i64::try_from(v).unwrap_or(i64::MAX))];
        gauge(
            &mut enc,
            "ringseed_dht_port",
            "The DHT's UDP port.",
            &g(u64::from(port)),
        )?;
        gauge(
            &mut enc,
            "ringseed_dht_nodes",
            "Nodes in the DHT routing table (not stale).",
            &g(nodes),
        )?;
        counter(
            &mut enc,
            "ringseed_dht_lookups_started",
            "DHT get_peers lookups started (downloads and magnets).",
            &[(none.clone(), lookups_started)],
        )?;
        let outcome = |o: &str| -> Labels { vec![("outcome".into(), o.into())] };
        counter(
            &mut enc,
            "ringseed_dht_lookups_finished",
            "DHT lookups ended, by outcome: done (no closer node left, or the peer cap \
             reached) or timeout (cut off by the lookup time bound).",
            &[
                (outcome("done"), lookups_finished),
                (outcome("timeout"), lookups_timed_out),
            ],
        )?;
        counter(
            &mut enc,
            "ringseed_dht_announces",
            "DHT announce_peer rounds, by outcome (stored on at least one node, or failed).",
            &[
                (
                    outcome("stored"),
                    announces.saturating_sub(announces_failed),
                ),
                (outcome("failed"), announces_failed),
            ],
        )?;
        counter(
            &mut enc,
            "ringseed_dht_peers_found",
            "Distinct peer addresses DHT lookups handed to torrents and magnets.",
            &[(none.clone(), peers_found)],
        )?;
        counter(
            &mut enc,
            "ringseed_dht_peers_dropped",
            "Peer addresses of DHT replies dropped past the per-lookup cap.",
            &[(none, dropped)],
        )?;
        counter(
            &mut enc,
            "ringseed_dht_queries",
            "Queries other DHT nodes sent us, by verdict: answered, or not answered because \
             their source went past its rate now (over_rate) or earlier (blocked), the node's \
             own rate was spent (node_busy), or too many sources were remembered \
             (too_many_sources).",
            &Verdict::ALL
                .iter()
                .map(|&v| (vec![("verdict".into(), v.name().into())], s.queries(v)))
                .collect::<Vec<_>>(),
        )?;
        Ok(())
    }
}
