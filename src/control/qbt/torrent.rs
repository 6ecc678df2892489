//! ringseed's torrents as qBittorrent's torrent objects (`torrents/info`, `sync/maindata`):
//! its 49 field names (4.5.2), its units (bytes, bytes/s, Unix seconds, seconds, minutes for
//! share-limit times), its sentinels (`8640000` no ETA, `-2` global limit, `-1` none, `0` never)
//! and its state strings; and the filters and sorting of `torrents/info`. Pure: the caller
//! gathers a [`Facts`] per torrent.

use std::cmp::Ordering;

use serde_json::{Map, Value, json};

use crate::control::TorrentView;
use crate::state::GlobalLimits;
use crate::tracker::report::{TrackerReport, TrackerState};

/// qBittorrent's "no estimate" ETA (`MAX_ETA`, 100 days in seconds).
pub const MAX_ETA: i64 = 8_640_000;
/// qBittorrent caps ratios here.
const MAX_RATIO: f64 = 9999.0;

/// What the API knows of one torrent.
#[derive(Debug, Clone)]
pub struct Facts {
    pub view: TorrentView,
    /// Its metainfo's tracker tiers' reports (empty for a pending magnet).
    pub trackers: Vec<TrackerReport>,
    /// Upload rate now, bytes/s.
    pub upspeed: u64,
    /// Uploaded by this process (this run).
    pub uploaded_session: u64,
    /// Bytes of wanted files still missing.
    pub left: u64,
    /// Bytes of the wanted files, when some are skipped (`None`: all of the torrent): what
    /// qBittorrent shows as `size` and computes `progress` over (libtorrent's `total_wanted`).
    pub wanted_size: Option<u64>,
    /// `Some` once the metadata is known: (the content's path below the save path, `""` for
    /// the save path itself; is multi-file).
    pub content: Option<(String, bool)>,
    /// Whether it has metadata (a magnet waiting for it has not).
    pub has_metadata: bool,
    pub magnet_uri: String,
    /// 64 hex digits of its v2 info-hash, if it has one.
    pub infohash_v2: String,
    pub swarm: SwarmFacts,
}

/// What the engine knows of a torrent's swarm and schedule.
#[derive(Debug, Clone, Default)]
pub struct SwarmFacts {
    /// Connected peers with every piece (`have_all`, or a bitfield and `have`s covering all).
    pub complete_peers: u32,
    /// Distributed copies among the connected peers (for an incomplete torrent).
    pub distributed_copies: f64,
    /// Seconds to its next announce; 0 when none is scheduled.
    pub reannounce_s: i64,
    /// Unix seconds a complete copy was last seen (its own or a peer's) by this run; 0 never.
    pub seen_complete: i64,
}

/// The state string. ringseed keeps both dialects and answers the 5.x names for a stopped
/// torrent (`stoppedUP`/`stoppedDL`), which version-checking clients expect from the Web API
/// version it reports.
pub fn state(f: &Facts) -> &'static str {
    let complete = f.has_metadata && f.left == 0;
    match f.view.state.as_str() {
        "metadata" => "metaDL",
        "checking" if complete => "checkingUP",
        "checking" => "checkingDL",
        "error" => "error",
        "moving" => "moving",
        "queued" if complete => "queuedUP",
        "queued" => "queuedDL",
        "downloading" | "stalled" if f.view.force_start => "forcedDL",
        "seeding" if f.view.force_start => "forcedUP",
        "paused" if complete => "stoppedUP",
        "paused" => "stoppedDL",
        "downloading" => "downloading",
        "stalled" => "stalledDL",
        "seeding" if f.upspeed > 0 => "uploading",
        "seeding" => "stalledUP",
        _ => "unknown",
    }
}

fn ratio_of(view: &TorrentView) -> f64 {
    if view.ratio.is_finite() {
        view.ratio.clamp(0.0, MAX_RATIO)
    } else {
        MAX_RATIO
    }
}

/// The object of `torrents/info` (with `hash`; `sync/maindata` removes it).
pub fn info(f: &Facts, global: &GlobalLimits, inactive_global: Option<u64>) -> Map<String, Value> {
    let v = &f.view;
    let st = state(f);
    let complete = f.has_metadata && f.left == 0;
    let size = if f.has_metadata {
        f.wanted_size.unwrap_or(v.size)
    } else {
        0
    };
    // over the wanted bytes, as qBittorrent's `TorrentImpl::progress` (1 once they are done)
    let progress = match f.wanted_size {
        Some(0) => 0.0,
        Some(w) => w.saturating_sub(f.left) as f64 / w as f64,
        None => v.progress,
    };
    let own_ratio = v.limits.ratio;
    let own_seed = v.limits.seed_time_s;
    let eff_ratio = own_ratio.or(global.ratio).filter(|r| *r > 0.0);
    let eff_seed = own_seed.or(global.seed_time_s).filter(|s| *s > 0);
    // ringseed has no "no limit" of its own distinct from 0: a 0 of its own is -1 (none)
    let ratio_limit = match own_ratio {
        None => -2.0,
        Some(r) if r > 0.0 => r,
        Some(_) => -1.0,
    };
    let own_inactive = v.limits.inactive_seed_time_s;
    let eff_inactive = own_inactive.or(inactive_global).filter(|s| *s > 0);
    let inactive_limit = match own_inactive {
        None => -2,
        Some(s) if s > 0 => (s / 60) as i64,
        Some(_) => -1,
    };
    let seeding_time_limit = match own_seed {
        None => -2,
        Some(s) if s > 0 => (s / 60) as i64,
        Some(_) => -1,
    };
    let working = f
        .trackers
        .iter()
        .find(|t| t.state == TrackerState::Working && st != "stoppedUP" && st != "stoppedDL");
    let num_complete = working.and_then(|t| t.seeds).unwrap_or(0);
    let num_incomplete = working.and_then(|t| t.leeches).unwrap_or(0);
    // Connected peers by completeness (a complete torrent drops complete peers: both seeds)
    let num_seeds = f.swarm.complete_peers.min(v.peers);
    let num_leechs = v.peers - num_seeds;
    let eta = match v.eta_s {
        Some(s) if !complete => s.min(MAX_ETA as u64) as i64,
        _ => MAX_ETA,
    };
    let content_path = f
        .content
        .as_ref()
        .map(|(top, _)| match top.as_str() {
            // files without a common folder (`NoSubfolder`): the save path itself
            "" => v.data_dir.clone(),
            top => format!("{}/{}", v.data_dir.trim_end_matches('/'), top),
        })
        .unwrap_or_default();
    let completed = size.saturating_sub(f.left.min(size));
    let mut m = Map::new();
    let mut put = |k: &str, val: Value| {
        m.insert(k.to_string(), val);
    };
    put("added_on", json!(v.added_at));
    put(
        "amount_left",
        json!(if f.has_metadata { f.left } else { 0 }),
    );
    put("auto_tmm", json!(v.qbt.auto_tmm));
    put(
        "availability",
        json!(if complete {
            -1.0
        } else {
            f.swarm.distributed_copies
        }),
    );
    put("category", json!(v.category.clone().unwrap_or_default()));
    put("completed", json!(completed));
    put("completion_on", json!(v.completed_at.unwrap_or(0)));
    put("content_path", json!(content_path));
    put("dl_limit", json!(v.limits.download_rate.unwrap_or(0)));
    put("dlspeed", json!(v.download_rate.max(0.0) as u64));
    put("download_path", json!(""));
    put("downloaded", json!(v.downloaded_total.max(v.downloaded)));
    put("downloaded_session", json!(v.downloaded));
    put("eta", json!(eta));
    put("f_l_piece_prio", json!(v.qbt.first_last_prio));
    put("force_start", json!(v.force_start));
    put("hash", json!(v.info_hash));
    put("infohash_v1", json!(v.info_hash));
    put("infohash_v2", json!(f.infohash_v2));
    put("inactive_seeding_time_limit", json!(inactive_limit));
    put("last_activity", json!(v.last_activity));
    put("magnet_uri", json!(f.magnet_uri));
    put("max_ratio", json!(eff_ratio.unwrap_or(-1.0)));
    put(
        "max_seeding_time",
        json!(eff_seed.map_or(-1, |s| (s / 60) as i64)),
    );
    put(
        "max_inactive_seeding_time",
        json!(eff_inactive.map_or(-1, |s| (s / 60) as i64)),
    );
    put("name", json!(v.name));
    put("num_complete", json!(num_complete));
    put("num_incomplete", json!(num_incomplete));
    put("num_leechs", json!(num_leechs));
    put("num_seeds", json!(num_seeds));
    put("priority", json!(v.queue_position));
    put(
        "progress",
        json!(if f.has_metadata { progress } else { 0.0 }),
    );
    put("ratio", json!(ratio_of(v)));
    put("ratio_limit", json!(ratio_limit));
    put("save_path", json!(v.data_dir.trim_end_matches('/')));
    put("seeding_time", json!(v.seeding_s));
    put("seeding_time_limit", json!(seeding_time_limit));
    put("seen_complete", json!(f.swarm.seen_complete));
    put("seq_dl", json!(v.qbt.seq_dl));
    put("size", json!(size));
    put("state", json!(st));
    put("super_seeding", json!(false));
    put("tags", json!(v.tags.join(", ")));
    put("time_active", json!(v.seeding_s));
    put(
        "total_size",
        json!(if f.has_metadata { v.size as i64 } else { -1 }),
    );
    put("tracker", json!(working.map_or("", |t| t.url.as_str())));
    put("trackers_count", json!(f.trackers.len()));
    put("up_limit", json!(v.limits.upload_rate.unwrap_or(0)));
    put("uploaded", json!(v.uploaded));
    put("uploaded_session", json!(f.uploaded_session));
    put("upspeed", json!(f.upspeed));
    m
}

/// Whether a torrent in state `st` passes `filter` (an unknown filter passes everything, as
/// in qBittorrent). ringseed keeps both dialects: `paused` = `stopped`, `resumed` = `running`.
pub fn passes(filter: &str, st: &str, upspeed: u64) -> bool {
    let stopped = matches!(st, "stoppedUP" | "stoppedDL" | "pausedUP" | "pausedDL");
    let seeding = matches!(
        st,
        "uploading" | "stalledUP" | "checkingUP" | "queuedUP" | "forcedUP"
    );
    let downloading = matches!(
        st,
        "downloading"
            | "metaDL"
            | "forcedMetaDL"
            | "stalledDL"
            | "checkingDL"
            | "stoppedDL"
            | "pausedDL"
            | "queuedDL"
            | "forcedDL"
    );
    let active = matches!(
        st,
        "metaDL"
            | "forcedMetaDL"
            | "downloading"
            | "forcedDL"
            | "uploading"
            | "forcedUP"
            | "moving"
    ) || (st == "stalledDL" && upspeed > 0);
    match filter {
        "downloading" => downloading,
        "seeding" => seeding,
        "completed" => seeding || matches!(st, "stoppedUP" | "pausedUP"),
        "paused" | "stopped" => stopped,
        "resumed" | "running" => !stopped,
        "active" => active,
        "inactive" => !active,
        "stalled" => matches!(st, "stalledUP" | "stalledDL"),
        "stalled_uploading" => st == "stalledUP",
        "stalled_downloading" => st == "stalledDL",
        "checking" => matches!(st, "checkingUP" | "checkingDL" | "checkingResumeData"),
        "moving" => st == "moving",
        "errored" => matches!(st, "error" | "missingFiles"),
        _ => true,
    }
}

/// qBittorrent's order of two JSON values of one field: numbers by value, strings by code
/// point, booleans false first.
fn order(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// Why `torrents/info` refuses a request (400 with this text).
pub const BAD_SORT: &str = "'sort' parameter is invalid";

/// Sorts, reverses and pages a list as `torrents/info` does: `sort` must name a field (checked
/// only when the list is not empty); a negative `offset` counts from the end; an offset past
/// the end is 0; `limit` ≤ 0 is all.
pub fn arrange(
    mut list: Vec<Map<String, Value>>,
    sort: Option<&str>,
    reverse: bool,
    limit: i64,
    offset: i64,
) -> Result<Vec<Map<String, Value>>, &'static str> {
    if let Some(key) = sort.filter(|s| !s.is_empty()) {
        if list.first().is_some_and(|t| !t.contains_key(key)) {
            return Err(BAD_SORT);
        }
        list.sort_by(|a, b| order(&a[key], &b[key]));
    }
    if reverse {
        list.reverse();
    }
    let n = list.len() as i64;
    let mut off = if offset < 0 { n + offset } else { offset };
    if off < 0 || off >= n {
        off = 0;
    }
    let take = if limit > 0 { limit } else { n };
    Ok(list
        .into_iter()
        .skip(off as usize)
        .take(take.max(0) as usize)
        .collect())
}

/// A magnet link for a torrent, with lower-case percent escapes as qBittorrent writes them.
pub fn magnet_uri(hash: &str, name: &str, trackers: &[Vec<String>]) -> String {
    fn esc(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect()
    }
    let mut out = format!("magnet:?xt=urn:btih:{hash}&dn={}", esc(name));
    for url in trackers.iter().flatten() {
        out.push_str("&tr=");
        out.push_str(&esc(url));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Limits;

    fn view(state: &str) -> TorrentView {
        TorrentView {
            info_hash: "7c1ca6f37d3518156cb89307f42e9e94e60226d8".into(),
            name: "rs-single.bin".into(),
            state: state.into(),
            error: None,
            stopped_by: None,
            data_dir: "/data/".into(),
            size: 1000,
            pieces: 4,
            verified_pieces: 4,
            uploaded: 500,
            ratio: 0.5,
            seeding_s: 90,
            peers: 2,
            limits: Limits::default(),
            added_at: 1_700_000_000,
            checks: 1,
            resumed: false,
            progress: 1.0,
            downloaded: 0,
            download_rate: 0.0,
            eta_s: None,
            category: None,
            tags: Vec::new(),
            queue_position: 0,
            force_start: false,
            last_activity: 1_700_000_000,
            completed_at: None,
            downloaded_total: 0,
            qbt: Default::default(),
        }
    }

    fn facts(state: &str, left: u64) -> Facts {
        Facts {
            view: view(state),
            trackers: Vec::new(),
            upspeed: 0,
            uploaded_session: 0,
            left,
            wanted_size: None,
            content: Some(("rs-single.bin".into(), false)),
            has_metadata: true,
            magnet_uri: String::new(),
            infohash_v2: String::new(),
            swarm: SwarmFacts::default(),
        }
    }

    #[test]
    fn states() {
        assert_eq!(state(&facts("seeding", 0)), "stalledUP");
        let mut up = facts("seeding", 0);
        up.upspeed = 10;
        assert_eq!(state(&up), "uploading");
        assert_eq!(state(&facts("paused", 0)), "stoppedUP");
        assert_eq!(state(&facts("paused", 5)), "stoppedDL");
        assert_eq!(state(&facts("checking", 5)), "checkingDL");
        assert_eq!(state(&facts("stalled", 5)), "stalledDL");
        assert_eq!(state(&facts("metadata", 0)), "metaDL");
        assert_eq!(state(&facts("error", 0)), "error");
        assert_eq!(state(&facts("queued", 5)), "queuedDL");
        let mut forced = facts("seeding", 0);
        forced.view.force_start = true;
        assert_eq!(state(&forced), "forcedUP");
    }

    #[test]
    fn fields_units_and_sentinels() {
        let mut f = facts("seeding", 0);
        f.view.limits = Limits {
            upload_rate: Some(1 << 20),
            download_rate: None,
            ratio: Some(2.5),
            seed_time_s: Some(1440 * 60),
            inactive_seed_time_s: None,
        };
        let m = info(&f, &GlobalLimits::default(), None);
        assert_eq!(
            m.len(),
            51,
            "4.5.2's 49 keys and 4.6's inactive-seeding pair"
        );
        assert_eq!(m["inactive_seeding_time_limit"], json!(-2));
        assert_eq!(m["eta"], json!(MAX_ETA));
        assert_eq!(m["ratio_limit"], json!(2.5));
        assert_eq!(m["seeding_time_limit"], json!(1440), "minutes");
        assert_eq!(m["max_seeding_time"], json!(1440));
        assert_eq!(m["up_limit"], json!(1048576));
        assert_eq!(m["dl_limit"], json!(0), "0 = unlimited");
        assert_eq!(m["save_path"], json!("/data"), "no trailing slash");
        assert_eq!(m["content_path"], json!("/data/rs-single.bin"));
        assert!(m["progress"].is_f64() && m["ratio"].is_f64() && m["max_ratio"].is_f64());
        assert!(m["size"].is_u64() && m["added_on"].is_i64());
        let g = info(&facts("seeding", 0), &GlobalLimits::default(), None);
        assert_eq!(
            (g["ratio_limit"].clone(), g["max_ratio"].clone()),
            (json!(-2.0), json!(-1.0))
        );
        assert_eq!(g["seeding_time_limit"], json!(-2));
        let mut magnet = facts("metadata", 0);
        magnet.has_metadata = false;
        magnet.content = None;
        let m = info(&magnet, &GlobalLimits::default(), None);
        assert_eq!(
            (m["total_size"].clone(), m["size"].clone()),
            (json!(-1), json!(0))
        );
        assert_eq!(m["content_path"], json!(""));
    }

    #[test]
    fn filters() {
        assert!(passes("seeding", "stalledUP", 0) && !passes("seeding", "stoppedUP", 0));
        assert!(passes("completed", "stoppedUP", 0));
        assert!(passes("paused", "stoppedUP", 0) && passes("stopped", "stoppedDL", 0));
        assert!(passes("resumed", "metaDL", 0) && !passes("running", "stoppedUP", 0));
        assert!(passes("active", "metaDL", 0) && !passes("active", "stalledUP", 0));
        assert!(passes("inactive", "stalledUP", 0));
        assert!(!passes("stalled", "metaDL", 0));
        assert!(passes("downloading", "metaDL", 0) && passes("nosuchfilter", "error", 0));
        assert!(passes("errored", "error", 0));
    }

    #[test]
    fn sort_limit_offset() {
        let mk = |h: &str, size: u64| {
            let mut m = Map::new();
            m.insert("hash".into(), json!(h));
            m.insert("size".into(), json!(size));
            m
        };
        let list = vec![mk("a", 10), mk("m", 0)];
        let hashes = |l: Vec<Map<String, Value>>| -> Vec<String> {
            l.iter()
                .map(|t| t["hash"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            hashes(arrange(list.clone(), Some("size"), false, 0, 0).unwrap()),
            ["m", "a"]
        );
        assert_eq!(
            hashes(arrange(list.clone(), Some("size"), true, 0, 0).unwrap()),
            ["a", "m"]
        );
        assert_eq!(
            hashes(arrange(list.clone(), Some("size"), false, 1, 0).unwrap()),
            ["m"]
        );
        assert_eq!(
            hashes(arrange(list.clone(), Some("size"), false, 0, 1).unwrap()),
            ["a"]
        );
        assert_eq!(
            hashes(arrange(list.clone(), Some("size"), false, 0, -1).unwrap()),
            ["a"]
        );
        assert_eq!(
            hashes(arrange(list.clone(), Some("size"), false, 0, 5).unwrap()),
            ["m", "a"]
        );
        assert_eq!(
            hashes(arrange(list.clone(), Some("size"), true, 1, 1).unwrap()),
            ["m"]
        );
        assert_eq!(
            arrange(list.clone(), Some("nosuch"), false, 0, 0),
            Err(BAD_SORT)
        );
        assert!(arrange(Vec::new(), Some("nosuch"), false, 0, 0).is_ok());
        assert_eq!(
            magnet_uri("ab", "a b", &[vec!["http://x:1/announce".into()]]),
            "magnet:?xt=urn:btih:ab&dn=a%20b&tr=http%3a%2f%2fx%3a1%2fannounce"
        );
    }
}
