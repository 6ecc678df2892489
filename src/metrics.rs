//! Prometheus exposition of the engine's counters.
//!
//! Nothing is counted twice: the workers' own atomics, the torrents' counters and the latency
//! histograms are read at scrape time by a [`Collector`], and `prometheus-client` writes the
//! text format. Torrent labels are bounded: the busiest `top_torrents` by upload get their own
//! series, the rest are summed under `torrent="other"`.

use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::engine::{Engine, Torrent};

/// Upper bounds (seconds) of the request-latency histogram's buckets.
const LATENCY_BUCKETS_S: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// What a scrape reads.
pub struct EngineCollector {
    pub engine: Arc<Engine>,
    pub torrents: Arc<RwLock<Vec<Arc<Torrent>>>>,
    pub top_torrents: usize,
    /// The speed layer's counters, when it runs.
    pub speed: Option<Arc<crate::speed::service::SpeedStats>>,
}

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCollector")
            .field("engine", &self.engine.local_addr())
            .field("top_torrents", &self.top_torrents)
            .finish()
    }
}

pub(crate) type Labels = Vec<(String, String)>;

pub(crate) fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

pub(crate) fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn worker_label(i: usize) -> Labels {
    vec![("worker".into(), i.to_string())]
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.engine.stats();
        let per_worker = |f: &dyn Fn(&crate::engine::StatsSnapshot) -> u64| -> Vec<(Labels, u64)> {
            stats
                .iter()
                .enumerate()
                .map(|(i, s)| (worker_label(i), f(s)))
                .collect()
        };
        counter(
            &mut enc,
            "ringseed_upload_bytes",
            "Piece payload bytes sent, by worker.",
            &per_worker(&|s| s.bytes_up),
        )?;
        counter(
            &mut enc,
            "ringseed_download_bytes",
            "Piece payload bytes received, by worker (duplicates and bad pieces included).",
            &per_worker(&|s| s.bytes_down),
        )?;
        counter(
            &mut enc,
            "ringseed_download_wasted_blocks",
            "Blocks received twice (endgame) or for a piece no longer fetched.",
            &per_worker(&|s| s.wasted_blocks),
        )?;
        counter(
            &mut enc,
            "ringseed_pieces_downloaded",
            "Pieces downloaded, checked and written, by worker.",
            &per_worker(&|s| s.pieces_done),
        )?;
        counter(
            &mut enc,
            "ringseed_download_parts_adopted",
            "Partial pieces continued by another peer (theirs left, choked or snubbed us).",
            &per_worker(&|s| s.parts_adopted),
        )?;
        counter(
            &mut enc,
            "ringseed_download_parts_released",
            "Partial pieces nobody fetched whose claims were given up (blocks kept).",
            &per_worker(&|s| s.parts_released),
        )?;
        counter(
            &mut enc,
            "ringseed_download_parts_dropped",
            "Partial pieces nobody fetched that were freed.",
            &per_worker(&|s| s.parts_dropped),
        )?;
        counter(
            &mut enc,
            "ringseed_download_endgame_copies",
            "Endgame copies of pieces another worker claimed.",
            &per_worker(&|s| s.endgame_copies),
        )?;
        counter(
            &mut enc,
            "ringseed_download_duplicate_pieces",
            "Complete piece copies thrown away: another worker wrote the piece first.",
            &per_worker(&|s| s.duplicate_pieces),
        )?;
        counter(
            &mut enc,
            "ringseed_hash_failures",
            "Downloaded pieces that failed their hash check, by worker.",
            &per_worker(&|s| s.hash_failures),
        )?;
        counter(
            &mut enc,
            "ringseed_pieces_hashed_in_lanes",
            "Downloaded pieces whose SHA-1 was computed sixteen at a time in AVX-512 lanes, by worker.",
            &per_worker(&|s| s.pieces_hashed_in_lanes),
        )?;
        counter(
            &mut enc,
            "ringseed_write_errors",
            "Piece writes that failed (the torrent stops downloading with an error).",
            &per_worker(&|s| s.write_errors),
        )?;
        counter(
            &mut enc,
            "ringseed_direct_write_bytes",
            "Downloaded bytes written with O_DIRECT (engine.download_writes = \"direct\"), by worker.",
            &per_worker(&|s| s.direct_write_bytes),
        )?;
        counter(
            &mut enc,
            "ringseed_blocks_sent",
            "Blocks sent, by worker.",
            &per_worker(&|s| s.blocks_up),
        )?;
        counter(
            &mut enc,
            "ringseed_upload_jobs_mapped",
            "Upload jobs sent straight from the files' mappings (upload path mmap); the others \
             were read into a buffer (copy path, or data not in the page cache).",
            &per_worker(&|s| s.jobs_mapped),
        )?;
        counter(
            &mut enc,
            "ringseed_connections_accepted",
            "Incoming connections accepted.",
            &per_worker(&|s| s.accepted),
        )?;
        counter(
            &mut enc,
            "ringseed_handshakes",
            "Peer handshakes completed.",
            &per_worker(&|s| s.handshakes),
        )?;
        counter(
            &mut enc,
            "ringseed_mse_rc4_handshakes",
            "MSE/PE handshakes completed with RC4 (the stream encrypted).",
            &per_worker(&|s| s.mse_rc4),
        )?;
        counter(
            &mut enc,
            "ringseed_mse_plaintext_handshakes",
            "MSE/PE handshakes completed with the plaintext method (only the handshake obfuscated).",
            &per_worker(&|s| s.mse_plaintext),
        )?;
        counter(
            &mut enc,
            "ringseed_hash_requests_answered",
            "BEP 52 hash requests answered with hashes.",
            &per_worker(&|s| s.hash_requests_answered),
        )?;
        let rejected: Vec<(Labels, u64)> = stats
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                crate::engine::HashReject::ALL.iter().map(move |r| {
                    let mut l = worker_label(i);
                    l.push(("reason".into(), r.name().into()));
                    (
                        l,
                        s.hash_requests_rejected.get(r.name()).copied().unwrap_or(0),
                    )
                })
            })
            .collect();
        counter(
            &mut enc,
            "ringseed_hash_requests_rejected",
            "BEP 52 hash requests rejected, by reason (invalid: no such tree or range; budget: \
             the peer's answers are spent for now; backlog: the answer would not fit the send \
             backlog).",
            &rejected,
        )?;
        counter(
            &mut enc,
            "ringseed_requests",
            "Block requests received.",
            &per_worker(&|s| s.requests),
        )?;
        counter(
            &mut enc,
            "ringseed_requests_rejected",
            "Requests answered with a reject (BEP 6).",
            &per_worker(&|s| s.rejected),
        )?;
        counter(
            &mut enc,
            "ringseed_requests_shed",
            "Of the rejected requests: those past the reqq a worker falling behind told its \
             peers (its queue budget shared among them), rejected so they ask again or elsewhere.",
            &per_worker(&|s| s.shed),
        )?;
        counter(
            &mut enc,
            "ringseed_io_uring_submissions",
            "io_uring submissions.",
            &per_worker(&|s| s.submissions),
        )?;
        counter(
            &mut enc,
            "ringseed_io_uring_completions",
            "io_uring completions.",
            &per_worker(&|s| s.completions),
        )?;
        gauge(
            &mut enc,
            "ringseed_peers",
            "Connections open, by worker.",
            &stats
                .iter()
                .enumerate()
                .map(|(i, s)| (worker_label(i), s.peers))
                .collect::<Vec<_>>(),
        )?;
        // Asked of the workers at scrape time (a scan of their peers; nothing on the peer path).
        let (states, answered) = self
            .engine
            .peer_states(std::time::Duration::from_millis(250));
        if answered == stats.len() {
            let state = |k: &str, v: u64| (vec![("state".to_string(), k.to_string())], v as i64);
            gauge(
                &mut enc,
                "ringseed_peers_by_state",
                "Connections by state: connecting (connect or handshake), unchoked (holding an \
                 upload slot), interested_choked (waiting for one), idle.",
                &[
                    state("connecting", states.connecting),
                    state("unchoked", states.unchoked),
                    state("interested_choked", states.interested_choked),
                    state("idle", states.idle),
                ],
            )?;
            let slots = self.engine.settings().upload_slots as i64;
            gauge(
                &mut enc,
                "ringseed_upload_slots",
                "Upload (unchoke) slots: used, and the configured total (0 = unlimited).",
                &[
                    (vec![("kind".into(), "used".into())], states.unchoked as i64),
                    (vec![("kind".into(), "total".into())], slots),
                ],
            )?;
        }
        let mut reasons: std::collections::BTreeMap<&str, u64> = Default::default();
        for s in &stats {
            for (k, v) in &s.disconnects {
                *reasons.entry(k).or_default() += v;
            }
        }
        let reasons: Vec<(Labels, u64)> = reasons
            .into_iter()
            .map(|(k, v)| (vec![("reason".into(), k.into())], v))
            .collect();
        counter(
            &mut enc,
            "ringseed_disconnects",
            "Peers disconnected, by reason.",
            &reasons,
        )?;

        // Torrents: the busiest by upload, the rest summed as "other".
        let torrents = self.torrents.read().map(|t| t.clone()).unwrap_or_default();
        let mut by_upload: Vec<(String, u64, i64, u64, u64)> = torrents
            .iter()
            .map(|t| {
                let name = crate::metainfo::hex(&t.id);
                (
                    name,
                    t.uploaded(),
                    i64::from(t.peers.load(std::sync::atomic::Ordering::Relaxed)),
                    t.downloaded(),
                    t.left(),
                )
            })
            .collect();
        by_upload.sort_by_key(|t| std::cmp::Reverse(t.1 + t.3));
        let mut up: Vec<(Labels, u64)> = Vec::new();
        let mut down: Vec<(Labels, u64)> = Vec::new();
        let mut left: Vec<(Labels, i64)> = Vec::new();
        let mut peers: Vec<(Labels, i64)> = Vec::new();
        let (mut other_up, mut other_peers, mut other_down, mut other_left) = (0u64, 0i64, 0, 0);
        for (i, (name, u, p, d, l)) in by_upload.into_iter().enumerate() {
            if i < self.top_torrents {
                let label = vec![("torrent".to_string(), name)];
                up.push((label.clone(), u));
                down.push((label.clone(), d));
                left.push((label.clone(), l as i64));
                peers.push((label, p));
            } else {
                other_up += u;
                other_peers += p;
                other_down += d;
                other_left += l as i64;
            }
        }
        if torrents.len() > self.top_torrents {
            let label = vec![("torrent".to_string(), "other".to_string())];
            up.push((label.clone(), other_up));
            down.push((label.clone(), other_down));
            left.push((label.clone(), other_left));
            peers.push((label, other_peers));
        }
        counter(
            &mut enc,
            "ringseed_torrent_download_bytes",
            "Payload bytes received, by torrent (info-hash; the rest as \"other\").",
            &down,
        )?;
        gauge(
            &mut enc,
            "ringseed_torrent_left_bytes",
            "Bytes still to download, by torrent (0 for a seed).",
            &left,
        )?;
        counter(
            &mut enc,
            "ringseed_torrent_upload_bytes",
            "Payload bytes sent, by torrent (info-hash; the rest as \"other\").",
            &up,
        )?;
        gauge(
            &mut enc,
            "ringseed_torrent_peers",
            "Peers connected, by torrent.",
            &peers,
        )?;
        gauge(
            &mut enc,
            "ringseed_torrents",
            "Torrents being seeded.",
            &[(vec![], torrents.len() as i64)],
        )?;

        // Request latency: request received → last byte of its block handed to the socket.
        let mut merged: Option<hdrhistogram::Histogram<u64>> = None;
        for s in &stats {
            match &mut merged {
                Some(m) => {
                    let _ = m.add(&s.latency_us);
                }
                None => merged = Some(s.latency_us.clone()),
            }
        }
        if let Some(h) = merged {
            // prometheus-client sums the buckets itself: give each its own share.
            let mut below = 0u64;
            let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_S
                .iter()
                .map(|&b| {
                    let upto = h.count_between(0, (b * 1e6) as u64);
                    let own = upto.saturating_sub(below);
                    below = upto;
                    (b, own)
                })
                .collect();
            buckets.push((f64::INFINITY, h.len().saturating_sub(below)));
            let sum = h.mean() * h.len() as f64 / 1e6;
            let mut m = enc.encode_descriptor(
                "ringseed_request_latency_seconds",
                "Time from a block request's arrival to its last byte entering the socket.",
                None,
                MetricType::Histogram,
            )?;
            m.encode_histogram::<Labels>(sum, h.len(), &buckets, None)?;
        }
        if let Some(sp) = &self.speed {
            encode_speed(&mut enc, sp)?;
        }
        Ok(())
    }
}

/// The BTT incentive layer's counters.
fn encode_speed(
    enc: &mut DescriptorEncoder,
    sp: &crate::speed::service::SpeedStats,
) -> Result<(), std::fmt::Error> {
    use crate::speed::voucher::Rejection;
    use std::sync::atomic::Ordering::Relaxed;
    // BTT has 18 decimals; a float counter in BTT keeps the series readable and never wraps.
    let mut m = enc.encode_descriptor(
        "ringseed_speed_earned_btt",
        "BTT accepted in durable vouchers since start.",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(sp.earned() as f64 / 1e18).encode(m.encode_family(&Labels::new())?)?;
    let none = Labels::new();
    counter(
        enc,
        "ringseed_speed_bytes_sold",
        "Payload bytes served to peers with a confirmed bid.",
        &[(none.clone(), sp.bytes_sold.load(Relaxed))],
    )?;
    counter(
        enc,
        "ringseed_speed_vouchers_accepted",
        "Vouchers committed to the ledger (and acknowledged).",
        &[(none.clone(), sp.vouchers_accepted.load(Relaxed))],
    )?;
    counter(
        enc,
        "ringseed_speed_vouchers_superseded",
        "Vouchers covered by a higher one of the same channel in the same verifier batch\n\
         (answered by its receipt, never checked or written on their own).",
        &[(none.clone(), sp.vouchers_superseded.load(Relaxed))],
    )?;
    counter(
        enc,
        "ringseed_speed_bids",
        "Bids whose channel the ledger confirmed.",
        &[(none.clone(), sp.bids.load(Relaxed))],
    )?;
    let mut m = enc.encode_descriptor(
        "ringseed_speed_credit_windows",
        "Live connections holding a credit window on a channel checked on chain ([speed] rpc):
         a channel's deposit must cover all of its windows at once.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(sp.windows_held.load(Relaxed) as i64).encode(m.encode_family(&none)?)?;
    let by_reason: Vec<(Labels, u64)> = Rejection::ALL
        .iter()
        .map(|r| (vec![("reason".into(), r.name().into())], sp.rejected(*r)))
        .collect();
    counter(
        enc,
        "ringseed_speed_vouchers_rejected",
        "Refused bids and vouchers, by reason.",
        &by_reason,
    )
}

/// The text a scrape returns.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// A collector its owner keeps a reference to (the registry wants a `Box`).
#[derive(Debug)]
pub struct Shared(pub Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(enc)
    }
}
