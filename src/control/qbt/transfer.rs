//! `transfer/info` and the data of `sync/maindata`.

use serde_json::{Map, Value, json};

use axum::http::StatusCode;

use super::Qbt;
use super::form::Params;
use super::reply::Reply;
use super::torrent::{self, Facts};

/// Session totals and rates over `facts`.
fn transfer(q: &Qbt, facts: &[Facts]) -> Map<String, Value> {
    let g = q.service.effective_global_limits();
    let dl_speed: u64 = facts
        .iter()
        .map(|f| f.view.download_rate.max(0.0) as u64)
        .sum();
    let up_speed: u64 = facts.iter().map(|f| f.upspeed).sum();
    let dl_data: u64 = facts.iter().map(|f| f.view.downloaded).sum();
    let up_data: u64 = facts.iter().map(|f| f.uploaded_session).sum();
    let peers: u64 = facts.iter().map(|f| u64::from(f.view.peers)).sum();
    let mut m = Map::new();
    for (k, v) in [
        // ringseed does not tell whether peers can reach it: connected once it has peers
        (
            "connection_status",
            json!(if peers > 0 { "connected" } else { "firewalled" }),
        ),
        ("dht_nodes", json!(0)),
        ("dl_info_data", json!(dl_data)),
        ("dl_info_speed", json!(dl_speed)),
        ("dl_rate_limit", json!(g.download_rate.unwrap_or(0))),
        ("up_info_data", json!(up_data)),
        ("up_info_speed", json!(up_speed)),
        ("up_rate_limit", json!(g.upload_rate.unwrap_or(0))),
    ] {
        m.insert(k.into(), v);
    }
    m
}

/// The `transfer/…` endpoints that change something (GET gets 405).
pub const POST_ONLY: &[&str] = &["setUploadLimit", "setDownloadLimit"];

/// `transfer/…`. The global rate limits are the node's (`app/setPreferences`' `up_limit`,
/// `dl_limit` set the same). ringseed has no alternative ("turtle") limits: `speedLimitsMode`
/// is `0` and `toggleSpeedLimitsMode` is not there (404), rather than pretend to switch.
pub fn call(q: &Qbt, name: &str, p: &Params) -> Reply {
    let g = q.service.effective_global_limits();
    match name {
        "info" => info(q),
        "uploadLimit" => Reply::text(g.upload_rate.unwrap_or(0).to_string()),
        "downloadLimit" => Reply::text(g.download_rate.unwrap_or(0).to_string()),
        "speedLimitsMode" => Reply::text("0"),
        "setUploadLimit" | "setDownloadLimit" => {
            let max_rate = (crate::control::types::MAX_RATE_KIB * 1024.0) as i64;
            // qBittorrent: 0 (or less) is unlimited
            let limit = p.int("limit").unwrap_or(0).clamp(0, max_rate) as u64;
            let mut new = q.service.global_limits();
            if name == "setUploadLimit" {
                new.upload_rate = Some(limit);
            } else {
                new.download_rate = Some(limit);
            }
            match q.service.set_global_limits(new) {
                Ok(()) => Reply::Empty,
                Err(e) => Reply::Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        _ => Reply::not_found(),
    }
}

pub fn info(q: &Qbt) -> Reply {
    Reply::Json(Value::Object(transfer(q, &q.all_facts())))
}

/// The full data of `sync/maindata` (before its `rid` and `full_update`).
pub fn maindata(q: &Qbt) -> Map<String, Value> {
    let facts = q.all_facts();
    let g = q.service.effective_global_limits();
    let inactive_global = q.service.org_settings().inactive_seed_time_s;
    let mut torrents = Map::new();
    let mut trackers: Map<String, Value> = Map::new();
    for f in &facts {
        let mut t = torrent::info(f, &g, inactive_global);
        t.remove("hash");
        torrents.insert(f.view.info_hash.clone(), Value::Object(t));
        for r in &f.trackers {
            if let Value::Array(list) = trackers
                .entry(r.url.clone())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                list.push(json!(f.view.info_hash));
            }
        }
    }
    let mut state = transfer(q, &facts);
    let all_up: u64 = facts.iter().map(|f| f.view.uploaded).sum();
    let all_dl: u64 = facts
        .iter()
        .map(|f| f.view.downloaded_total.max(f.view.downloaded))
        .sum();
    for (k, v) in [
        ("alltime_dl", json!(all_dl)),
        ("alltime_ul", json!(all_up)),
        ("average_time_queue", json!(0)),
        ("free_space_on_disk", json!(free_space(q))),
        (
            "global_ratio",
            json!(if all_dl == 0 {
                "-".to_string()
            } else {
                format!("{:.2}", all_up as f64 / all_dl as f64)
            }),
        ),
        ("queued_io_jobs", json!(0)),
        ("queueing", json!(q.service.org_settings().queueing)),
        ("read_cache_hits", json!("0")),
        ("read_cache_overload", json!("0")),
        ("refresh_interval", json!(1500)),
        ("total_buffers_size", json!(0)),
        (
            "total_peer_connections",
            json!(facts.iter().map(|f| u64::from(f.view.peers)).sum::<u64>()),
        ),
        ("total_queued_size", json!(0)),
        ("total_wasted_session", json!(0)),
        ("use_alt_speed_limits", json!(false)),
        ("write_cache_overload", json!("0")),
    ] {
        state.insert(k.into(), v);
    }
    let mut m = Map::new();
    let mut cats = Map::new();
    for c in q.service.categories() {
        cats.insert(
            c.name.clone(),
            json!({"name": c.name, "savePath": c.save_path}),
        );
    }
    m.insert("categories".into(), Value::Object(cats));
    m.insert("server_state".into(), Value::Object(state));
    m.insert("tags".into(), json!(q.service.tags()));
    m.insert("torrents".into(), Value::Object(torrents));
    m.insert("trackers".into(), Value::Object(trackers));
    m
}

/// Free bytes where data goes (the data root), `-1` unknown.
fn free_space(q: &Qbt) -> i64 {
    let Some(root) = q.service.data_root() else {
        return -1;
    };
    match nix::sys::statvfs::statvfs(&root) {
        Ok(s) => i64::try_from(s.blocks_available().saturating_mul(s.fragment_size()))
            .unwrap_or(i64::MAX),
        Err(_) => -1,
    }
}

/// `ringseed/earnings`: what the BTT layer took since the node started (`enabled` false when
/// `[speed]` is off). BTT has 18 decimals: a float of whole BTT for display, the base units as
/// a string (they may pass 2^64).
pub fn earnings(speed: Option<&crate::speed::service::SpeedStats>) -> Reply {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(sp) = speed else {
        return Reply::Json(json!({"enabled": false}));
    };
    let earned = sp.earned();
    Reply::Json(json!({
        "enabled": true,
        "earned_btt": earned as f64 / 1e18,
        "earned_base_units": earned.to_string(),
        "bytes_sold": sp.bytes_sold.load(Relaxed),
        "bids": sp.bids.load(Relaxed),
        "vouchers_accepted": sp.vouchers_accepted.load(Relaxed),
    }))
}
