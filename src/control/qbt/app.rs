//! `app/…`: versions, build info, the default save path, and the preferences ringseed has.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::Qbt;
use super::form::Params;
use super::reply::Reply;
use crate::state::GlobalLimits;

/// The qBittorrent version reported: 5.0.x's, whose Web API (2.11.2) makes version-checking
/// clients (qbittorrent-api, Sonarr) use the 5.x dialect (`stop`/`start`, `stopped`
/// filters, `stoppedUP`), which ringseed serves whole; the 4.x names keep working too.
pub const APP_VERSION: &str = "v5.0.0";
/// Web API version of qBittorrent 5.0.x.
pub const WEBAPI_VERSION: &str = "2.11.2";

pub fn call(q: &Qbt, name: &str, p: &Params) -> Reply {
    match name {
        "version" => Reply::text(APP_VERSION),
        "webapiVersion" => Reply::text(WEBAPI_VERSION),
        "buildInfo" => Reply::Json(json!({
            "bitness": usize::BITS,
            "boost": "",
            "libtorrent": "",
            "openssl": "",
            "qt": "",
            "zlib": "",
        })),
        "defaultSavePath" => Reply::text(save_path(q)),
        "preferences" => Reply::Json(Value::Object(preferences(q))),
        "setPreferences" => set_preferences(q, p),
        _ => Reply::not_found(),
    }
}

fn save_path(q: &Qbt) -> String {
    q.service
        .data_root()
        .map(|p| p.display().to_string().trim_end_matches('/').to_string())
        .unwrap_or_default()
}

/// The preferences ringseed has: its global share limits and rate limits, its save path and
/// peer port, and the peer sources and queueing it does not have (shown off). Keys qBittorrent
/// has and ringseed does not are left out rather than invented.
pub fn preferences(q: &Qbt) -> Map<String, Value> {
    let g = q.service.effective_global_limits();
    let ratio = g.ratio.filter(|r| *r > 0.0);
    let seed = g.seed_time_s.filter(|s| *s > 0);
    let org = q.service.org_settings();
    let inactive = org.inactive_seed_time_s.filter(|s| *s > 0);
    let mut m = Map::new();
    for (k, v) in [
        ("save_path", json!(save_path(q))),
        ("temp_path_enabled", json!(false)),
        ("max_ratio_enabled", json!(ratio.is_some())),
        ("max_ratio", json!(ratio.unwrap_or(-1.0))),
        ("max_seeding_time_enabled", json!(seed.is_some())),
        (
            "max_seeding_time",
            json!(seed.map_or(-1, |s| (s / 60) as i64)),
        ),
        // the limit action: stop (0), remove (1), remove with its files (3)
        (
            "max_ratio_act",
            json!(match q.service.limit_action() {
                crate::config::LimitAction::Stop => 0,
                crate::config::LimitAction::Remove => 1,
                crate::config::LimitAction::RemoveData => 3,
            }),
        ),
        ("queueing_enabled", json!(org.queueing)),
        ("max_active_downloads", json!(org.max_active_downloads)),
        ("max_active_uploads", json!(org.max_active_uploads)),
        ("max_active_torrents", json!(org.max_active_torrents)),
        (
            "max_inactive_seeding_time_enabled",
            json!(inactive.is_some()),
        ),
        (
            "max_inactive_seeding_time",
            json!(inactive.map_or(-1, |s| (s / 60) as i64)),
        ),
        ("dht", json!(false)),
        ("pex", json!(true)),
        ("lsd", json!(false)),
        ("upnp", json!(false)),
        ("listen_port", json!(q.service.peer_port())),
        ("up_limit", json!(g.upload_rate.unwrap_or(0))),
        ("dl_limit", json!(g.download_rate.unwrap_or(0))),
        ("auto_tmm_enabled", json!(false)),
        ("torrent_content_layout", json!("Original")),
        ("start_paused_enabled", json!(false)),
        ("add_stopped_enabled", json!(false)),
        ("web_ui_username", json!(q.access.username)),
        (
            "web_ui_session_timeout",
            json!(super::auth::SESSION_TIMEOUT.as_secs()),
        ),
        ("web_ui_max_auth_fail_count", json!(super::auth::MAX_FAILS)),
        (
            "web_ui_ban_duration",
            json!(super::auth::BAN_DURATION.as_secs()),
        ),
        ("web_ui_csrf_protection_enabled", json!(true)),
        ("web_ui_host_header_validation_enabled", json!(true)),
        ("bypass_local_auth", json!(false)),
    ] {
        m.insert(k.into(), v);
    }
    m
}

/// `app/setPreferences`: form field `json`. The global ratio, seeding-time and rate limits are
/// ringseed's own and change; other keys are ignored (as qBittorrent ignores unknown ones);
/// invalid JSON is 200 and changes nothing (as in qBittorrent).
fn set_preferences(q: &Qbt, p: &Params) -> Reply {
    let Some(Value::Object(m)) = p.get("json").and_then(|j| serde_json::from_str(j).ok()) else {
        return Reply::Empty;
    };
    let cur = q.service.global_limits();
    let mut new: GlobalLimits = cur;
    let num = |k: &str| m.get(k).and_then(Value::as_f64).filter(|f| f.is_finite());
    let enabled = |k: &str| m.get(k).and_then(Value::as_bool);
    // max_ratio_enabled false turns the limit off whatever max_ratio says
    match (enabled("max_ratio_enabled"), num("max_ratio")) {
        (Some(false), _) => new.ratio = Some(0.0),
        (_, Some(r)) if r >= 0.0 => new.ratio = Some(r.min(crate::control::types::MAX_RATIO)),
        (_, Some(_)) => new.ratio = Some(0.0),
        _ => {}
    }
    match (enabled("max_seeding_time_enabled"), num("max_seeding_time")) {
        (Some(false), _) => new.seed_time_s = Some(0),
        (_, Some(min)) if min >= 0.0 => {
            new.seed_time_s =
                Some((min.min(crate::control::types::MAX_SEED_TIME_MIN) * 60.0) as u64)
        }
        (_, Some(_)) => new.seed_time_s = Some(0),
        _ => {}
    }
    let max_rate = crate::control::types::MAX_RATE_KIB * 1024.0;
    if let Some(r) = num("up_limit") {
        new.upload_rate = Some(r.clamp(0.0, max_rate) as u64);
    }
    if let Some(r) = num("dl_limit") {
        new.download_rate = Some(r.clamp(0.0, max_rate) as u64);
    }
    let cur_org = q.service.global_settings();
    let mut org = cur_org;
    let int = |k: &str| m.get(k).and_then(Value::as_i64);
    if let Some(b) = enabled("queueing_enabled") {
        org.queueing = Some(b);
    }
    for (k, slot) in [
        ("max_active_downloads", &mut org.max_active_downloads),
        ("max_active_uploads", &mut org.max_active_uploads),
        ("max_active_torrents", &mut org.max_active_torrents),
    ] {
        if let Some(v) = int(k) {
            *slot = Some(v.clamp(-1, 100_000));
        }
    }
    match (
        enabled("max_inactive_seeding_time_enabled"),
        num("max_inactive_seeding_time"),
    ) {
        (Some(false), _) => org.inactive_seed_time_s = Some(0),
        (_, Some(min)) if min >= 0.0 => {
            org.inactive_seed_time_s =
                Some((min.min(crate::control::types::MAX_SEED_TIME_MIN) * 60.0) as u64)
        }
        (_, Some(_)) => org.inactive_seed_time_s = Some(0),
        _ => {}
    }
    if let Some(a) = int("max_ratio_act") {
        use crate::config::LimitAction;
        // 2 (super seeding) ringseed has not: left as it is
        match a {
            0 => org.limit_action = Some(LimitAction::Stop),
            1 => org.limit_action = Some(LimitAction::Remove),
            3 => org.limit_action = Some(LimitAction::RemoveData),
            _ => {}
        }
    }
    if new != cur
        && let Err(e) = q.service.set_global_limits(new)
    {
        return Reply::Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    if org != cur_org
        && let Err(e) = q.service.set_global_settings(org)
    {
        return Reply::Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    Reply::Empty
}
