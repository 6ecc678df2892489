//! `torrents/…`: the list, one torrent's properties, files and trackers, adding, removing,
//! stopping and starting (both dialects), rechecking and rate limits.
//!
//! Categories, tags, share limits and the queue are the service's ([`crate::control::org_ops`]);
//! these endpoints translate qBittorrent's parameters and errors.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::Qbt;
use super::form::Params;
use super::reply::Reply;
use super::torrent::{self, Facts};
use crate::control::{AddOptions, ControlError, parse_info_hash};
use crate::engine::Torrent;
use crate::metainfo::ContentLayout;
use crate::tracker::report::TrackerState;

/// Most hashes one request may name.
const MAX_HASHES: usize = 10_000;
/// Most URLs one `torrents/add` may carry.
const MAX_URLS: usize = 100;

/// The endpoints that change something (GET gets 405).
pub const POST_ONLY: &[&str] = &[
    "add",
    "delete",
    "stop",
    "start",
    "pause",
    "resume",
    "recheck",
    "reannounce",
    "setUploadLimit",
    "setDownloadLimit",
    "createCategory",
    "editCategory",
    "removeCategories",
    "setCategory",
    "createTags",
    "deleteTags",
    "addTags",
    "removeTags",
    "setShareLimits",
    "topPrio",
    "bottomPrio",
    "increasePrio",
    "decreasePrio",
    "setForceStart",
    "setLocation",
    "setAutoManagement",
    "addTrackers",
    "editTracker",
    "removeTrackers",
    "rename",
    "toggleSequentialDownload",
    "toggleFirstLastPiecePrio",
    "filePrio",
    "renameFile",
    "renameFolder",
];

/// An organisation error as qBittorrent answers it.
fn org_error(e: ControlError, conflict_text: &str) -> Reply {
    match e {
        ControlError::UnknownCategory(_) | ControlError::InvalidName(_) => {
            Reply::Error(StatusCode::CONFLICT, "Incorrect category name".into())
        }
        ControlError::CategoryExists(_) => {
            Reply::Error(StatusCode::CONFLICT, "Unable to create category".into())
        }
        ControlError::QueueingDisabled => Reply::Error(
            StatusCode::CONFLICT,
            "Torrent queueing must be enabled".into(),
        ),
        ControlError::OutsideDataDir { .. } => {
            Reply::Error(StatusCode::CONFLICT, "Cannot make save path".into())
        }
        ControlError::BadRequest(m) => {
            tracing::info!("qBittorrent API: {m}");
            Reply::Error(StatusCode::CONFLICT, conflict_text.into())
        }
        other => Reply::Error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

fn done(r: Result<(), ControlError>, conflict_text: &str) -> Reply {
    match r {
        Ok(()) => Reply::Empty,
        Err(e) => org_error(e, conflict_text),
    }
}

/// Tags from a comma-separated parameter; an invalid one is qBittorrent's 400.
fn tags_of(p: &Params) -> Result<Vec<String>, Reply> {
    crate::control::organise::parse_tags(p.get("tags").unwrap_or(""))
        .map_err(|_| Reply::bad_request())
}

fn org_call(q: &Qbt, name: &str, p: &Params) -> Option<Reply> {
    let known = |p: &Params| q.service.known(&hashes(q, p));
    Some(match name {
        "categories" => {
            let mut m = Map::new();
            for c in q.service.categories() {
                m.insert(
                    c.name.clone(),
                    json!({"name": c.name, "savePath": c.save_path}),
                );
            }
            Reply::Json(Value::Object(m))
        }
        "createCategory" | "editCategory" => {
            let cat = p.get("category").unwrap_or("");
            if cat.is_empty() {
                return Some(Reply::Error(
                    StatusCode::BAD_REQUEST,
                    "Category cannot be empty".into(),
                ));
            }
            let path = p.get("savePath").unwrap_or("");
            if name == "createCategory" {
                done(
                    q.service.create_category(cat, path),
                    "Unable to create category",
                )
            } else {
                match q.service.edit_category(cat, path) {
                    Err(ControlError::UnknownCategory(_)) => {
                        Reply::Error(StatusCode::CONFLICT, "Unable to edit category".into())
                    }
                    r => done(r, "Unable to edit category"),
                }
            }
        }
        "removeCategories" => {
            let names: Vec<String> = p
                .get("categories")
                .unwrap_or("")
                .split('\n')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .take(MAX_HASHES)
                .collect();
            done(q.service.remove_categories(&names), "Conflict")
        }
        "setCategory" => {
            let cat = p.get("category").unwrap_or("");
            let cat = (!cat.is_empty()).then_some(cat);
            done(
                q.service.set_category(&known(p), cat),
                "Incorrect category name",
            )
        }
        "tags" => Reply::Json(json!(q.service.tags())),
        "createTags" | "deleteTags" | "addTags" | "removeTags" => {
            let tags = match tags_of(p) {
                Ok(t) => t,
                Err(r) => return Some(r),
            };
            let r = match name {
                "createTags" => q.service.create_tags(&tags),
                "deleteTags" => q.service.delete_tags(&tags),
                "addTags" => q.service.add_tags(&known(p), &tags),
                _ => q.service.remove_tags(&known(p), &tags),
            };
            match r {
                Ok(()) => Reply::Empty,
                Err(ControlError::InvalidName(_) | ControlError::BadRequest(_)) => {
                    Reply::bad_request()
                }
                Err(e) => org_error(e, "Conflict"),
            }
        }
        "setShareLimits" => {
            let (Some(ratio), Some(seeding)) = (p.float("ratioLimit"), p.int("seedingTimeLimit"))
            else {
                return Some(Reply::bad_request());
            };
            let inactive = p.int("inactiveSeedingTimeLimit").unwrap_or(-2);
            match q
                .service
                .set_share_limits(&known(p), ratio, seeding, inactive)
            {
                Ok(()) => Reply::Empty,
                Err(ControlError::BadRequest(_)) => Reply::bad_request(),
                Err(e) => org_error(e, "Conflict"),
            }
        }
        "topPrio" => done(q.service.queue_top(&known(p)), "Conflict"),
        "bottomPrio" => done(q.service.queue_bottom(&known(p)), "Conflict"),
        "increasePrio" => done(q.service.queue_up(&known(p)), "Conflict"),
        "decreasePrio" => done(q.service.queue_down(&known(p)), "Conflict"),
        "setForceStart" => done(
            q.service
                .set_force_start(&known(p), p.flag("value").unwrap_or(false)),
            "Conflict",
        ),
        _ => return None,
    })
}

pub fn call(q: &Qbt, name: &str, p: &Params) -> Reply {
    match name {
        "info" => info(q, p),
        "properties" => with_torrent(q, p, properties),
        "files" => with_torrent(q, p, files),
        "trackers" => with_torrent(q, p, trackers),
        "webseeds" => with_torrent(q, p, webseeds),
        "pieceStates" => with_torrent(q, p, piece_states),
        "add" => add(q, p),
        "delete" => {
            let delete_files = p.flag("deleteFiles").unwrap_or(false);
            each(q, p, |q, id| q.service.remove(id, delete_files).map(drop))
        }
        "stop" | "pause" => each(q, p, |q, id| q.service.pause(id)),
        "start" | "resume" => each(q, p, |q, id| q.service.resume(id)),
        "recheck" => each(q, p, |q, id| q.service.recheck(id)),
        // wakes its announce loop (a stopped torrent has none: nothing happens, as in
        // qBittorrent)
        "reannounce" => each(q, p, |q, id| {
            if let Some(t) = q.service.handle_of(id) {
                t.reannounce.notify_one();
            }
            Ok(())
        }),
        "setUploadLimit" | "setDownloadLimit" => {
            let limit = p.int("limit").unwrap_or(0).max(0) as u64;
            let upload = name == "setUploadLimit";
            each(q, p, move |q, id| {
                let mut l = q.service.get(id)?.limits;
                let v = (limit > 0).then_some(limit);
                if upload {
                    l.upload_rate = v;
                } else {
                    l.download_rate = v;
                }
                q.service.set_limits(id, l)
            })
        }
        "uploadLimit" | "downloadLimit" => {
            let upload = name == "uploadLimit";
            let mut out = Map::new();
            for id in hashes(q, p) {
                if let Ok(v) = q.service.get(id) {
                    let l = if upload {
                        v.limits.upload_rate
                    } else {
                        v.limits.download_rate
                    };
                    out.insert(v.info_hash, json!(l.unwrap_or(0)));
                }
            }
            Reply::Json(Value::Object(out))
        }
        "setLocation" => set_location(q, p),
        "filePrio" => super::file_edit::file_prio(q, p),
        "renameFile" => super::file_edit::rename(q, p, false),
        "renameFolder" => super::file_edit::rename(q, p, true),
        "setAutoManagement" => {
            let on = p.flag("enable").unwrap_or(false);
            let ids = q.service.known(&hashes(q, p));
            match q.service.set_auto_tmm(&ids, on) {
                Ok(()) => Reply::Empty,
                Err(e) => location_error(e),
            }
        }
        "addTrackers" | "editTracker" | "removeTrackers" => edit_trackers(q, name, p),
        "rename" => {
            let Some(id) = one_hash(p) else {
                return Reply::not_found();
            };
            let new = p.get("name").unwrap_or("").trim().to_string();
            if new.is_empty() || new.len() > 1024 || new.contains(['\0', '\n', '\r']) {
                return Reply::Error(StatusCode::CONFLICT, "Incorrect torrent name".into());
            }
            if q.service.get(id).is_err() {
                return Reply::not_found();
            }
            done(
                q.service.set_qbt(&[id], |s, _| {
                    s.name = Some(new.clone());
                    Ok(())
                }),
                "Conflict",
            )
        }
        "toggleSequentialDownload" | "toggleFirstLastPiecePrio" => {
            let seq = name == "toggleSequentialDownload";
            let ids = q.service.known(&hashes(q, p));
            done(
                q.service.set_qbt(&ids, |s, _| {
                    if seq {
                        s.seq_dl = !s.seq_dl;
                    } else {
                        s.first_last_prio = !s.first_last_prio;
                    }
                    Ok(())
                }),
                "Conflict",
            )
        }
        "setCategory" => {
            // under automatic management a torrent follows its new category's save path
            let r = org_call(q, name, p).unwrap_or_else(Reply::not_found);
            if matches!(r, Reply::Empty) {
                let ids = q.service.known(&hashes(q, p));
                if let Err(e) = q.service.follow_categories(&ids) {
                    return location_error(e);
                }
            }
            r
        }
        other => org_call(q, other, p).unwrap_or_else(Reply::not_found),
    }
}

/// The one torrent a `hash` parameter names.
fn one_hash(p: &Params) -> Option<[u8; 20]> {
    parse_info_hash(&p.get("hash")?.trim().to_ascii_lowercase()).ok()
}

/// A move's error as qBittorrent answers `setLocation`'s.
fn location_error(e: ControlError) -> Reply {
    match e {
        ControlError::OutsideDataDir { .. } | ControlError::Io(_) => {
            tracing::warn!("qBittorrent API: {e}");
            Reply::Error(StatusCode::CONFLICT, "Cannot make save path".into())
        }
        ControlError::BadRequest(m) => Reply::Error(StatusCode::CONFLICT, m),
        other => Reply::Error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// `setLocation`: `hashes`, `location` (400 empty; 409 outside the data root or not movable).
fn set_location(q: &Qbt, p: &Params) -> Reply {
    let location = p.get("location").unwrap_or("").trim();
    if location.is_empty() {
        return Reply::Error(StatusCode::BAD_REQUEST, "Save path cannot be empty".into());
    }
    let ids = q.service.known(&hashes(q, p));
    let r = q.service.set_location(&ids, location);
    // a manual move ends automatic management (as in qBittorrent)
    let r = r.and_then(|()| {
        q.service.set_qbt(&ids, |s, _| {
            s.auto_tmm = false;
            Ok(())
        })
    });
    match r {
        Ok(()) => Reply::Empty,
        Err(e) => location_error(e),
    }
}

/// `addTrackers` (`hash`, `urls` one a line), `editTracker` (`hash`, `origUrl`, `newUrl`),
/// `removeTrackers` (`hash`, `urls` `|`-separated), as qBittorrent 4.5.2 answers them.
fn edit_trackers(q: &Qbt, name: &str, p: &Params) -> Reply {
    use crate::control::qbt_ops::{self, TrackerEditError};
    let Some(id) = one_hash(p) else {
        return Reply::not_found();
    };
    let Some(tiers) = q.service.tracker_tiers(id) else {
        return Reply::not_found();
    };
    let list = |sep: char| -> Vec<String> {
        p.get("urls")
            .unwrap_or("")
            .split(sep)
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .take(qbt_ops::MAX_TRACKERS)
            .map(str::to_string)
            .collect()
    };
    let new = match name {
        "addTrackers" => qbt_ops::add_trackers(tiers, &list('\n')),
        "editTracker" => {
            let from = p.get("origUrl").unwrap_or("").trim();
            let to = p.get("newUrl").unwrap_or("").trim();
            qbt_ops::edit_tracker(tiers, from, to)
        }
        // none of them there: nothing changes, 200 (as 4.5.2; 4.6+ answers 409)
        _ => match qbt_ops::remove_trackers(tiers, &list('|')) {
            Some(t) => Ok(t),
            None => return Reply::Empty,
        },
    };
    let new = match new {
        Ok(t) => t,
        Err(TrackerEditError::BadUrl) => {
            return Reply::Error(StatusCode::BAD_REQUEST, "New tracker URL is invalid".into());
        }
        Err(TrackerEditError::NoSuchTracker) => {
            return Reply::Error(StatusCode::CONFLICT, "Tracker not found".into());
        }
        Err(TrackerEditError::Exists) => {
            return Reply::Error(
                StatusCode::CONFLICT,
                "New tracker URL already exists".into(),
            );
        }
        Err(TrackerEditError::TooMany) => {
            return Reply::Error(StatusCode::CONFLICT, "Too many trackers".into());
        }
    };
    done(
        q.service.set_qbt(&[id], move |s, _| {
            s.trackers = Some(new.clone());
            Ok(())
        }),
        "Conflict",
    )
}

/// The ids a `hashes` parameter names: `|`-separated, or `all`; what is not a hash is skipped.
fn hashes(q: &Qbt, p: &Params) -> Vec<[u8; 20]> {
    let Some(h) = p.get("hashes") else {
        return Vec::new();
    };
    if h.trim().eq_ignore_ascii_case("all") {
        return q
            .service
            .list()
            .iter()
            .filter_map(|v| parse_info_hash(&v.info_hash).ok())
            .collect();
    }
    h.split('|')
        .take(MAX_HASHES)
        .filter_map(|s| parse_info_hash(&s.trim().to_ascii_lowercase()).ok())
        .collect()
}

/// Runs an action on each named torrent; unknown ones are ignored (200, as qBittorrent).
fn each(q: &Qbt, p: &Params, f: impl Fn(&Qbt, [u8; 20]) -> Result<(), ControlError>) -> Reply {
    for id in hashes(q, p) {
        match f(q, id) {
            Ok(()) | Err(ControlError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!("qBittorrent API: {e}");
                let code = match e {
                    ControlError::BadRequest(_) | ControlError::OutsideDataDir { .. } => {
                        StatusCode::BAD_REQUEST
                    }
                    ControlError::AlreadyAdded(_) => StatusCode::CONFLICT,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                return Reply::Error(code, e.to_string());
            }
        }
    }
    Reply::Empty
}

fn info(q: &Qbt, p: &Params) -> Reply {
    let g = q.service.effective_global_limits();
    let inactive_global = q.service.org_settings().inactive_seed_time_s;
    let filter = p.get("filter").unwrap_or("all");
    let wanted: Option<Vec<String>> = p.get("hashes").map(|h| {
        h.split('|')
            .take(MAX_HASHES)
            .map(|s| s.trim().to_ascii_lowercase())
            .collect()
    });
    let category = p.get("category");
    let tag = p.get("tag");
    let list: Vec<Map<String, Value>> = q
        .all_facts()
        .iter()
        .filter(|f| {
            wanted
                .as_ref()
                .is_none_or(|w| w.contains(&f.view.info_hash))
        })
        .filter(|f| torrent::passes(filter, torrent::state(f), f.upspeed))
        // `category=` (empty) is "no category", `tag=` "no tags"; absent: any
        .filter(|f| match category {
            None => true,
            Some("") => f.view.category.is_none(),
            Some(c) => f.view.category.as_deref() == Some(c),
        })
        .filter(|f| match tag {
            None => true,
            Some("") => f.view.tags.is_empty(),
            Some(t) => f.view.tags.iter().any(|x| x == t),
        })
        .map(|f| torrent::info(f, &g, inactive_global))
        .collect();
    match torrent::arrange(
        list,
        p.get("sort"),
        p.flag("reverse").unwrap_or(false),
        p.int("limit").unwrap_or(0),
        p.int("offset").unwrap_or(0),
    ) {
        Ok(l) => Reply::Json(Value::Array(l.into_iter().map(Value::Object).collect())),
        Err(why) => Reply::Error(StatusCode::BAD_REQUEST, why.into()),
    }
}

/// Runs `f` on the torrent `hash` names: no `hash` is 400, an unknown one 404.
fn with_torrent(q: &Qbt, p: &Params, f: fn(&Qbt, &Facts, Option<Arc<Torrent>>) -> Reply) -> Reply {
    let Some(h) = p.get("hash") else {
        return Reply::bad_request();
    };
    let Ok(id) = parse_info_hash(&h.trim().to_ascii_lowercase()) else {
        return Reply::not_found();
    };
    match q.service.get(id) {
        Ok(v) => {
            let facts = q.facts(v);
            f(q, &facts, q.service.handle_of(id))
        }
        Err(_) => Reply::not_found(),
    }
}

fn properties(q: &Qbt, f: &Facts, t: Option<Arc<Torrent>>) -> Reply {
    let g = q.service.effective_global_limits();
    let i = torrent::info(f, &g, q.service.org_settings().inactive_seed_time_s);
    let v = &f.view;
    let meta = t.as_ref().map(|t| &t.meta);
    let limit = |x: Option<u64>| x.filter(|r| *r > 0).map_or(-1, |r| r as i64);
    let seeds_total = i["num_complete"].clone();
    let peers_total = i["num_incomplete"].clone();
    let pieces_have = t
        .as_ref()
        .map_or(0, |t| i64::from(t.pieces.verified.count()));
    let mut m = Map::new();
    for (k, val) in [
        ("addition_date", json!(v.added_at)),
        (
            "comment",
            json!(meta.and_then(|m| m.comment.clone()).unwrap_or_default()),
        ),
        ("completion_date", json!(v.completed_at.unwrap_or(-1))),
        (
            "created_by",
            json!(meta.and_then(|m| m.created_by.clone()).unwrap_or_default()),
        ),
        (
            "creation_date",
            json!(meta.and_then(|m| m.creation_date).unwrap_or(-1)),
        ),
        ("dl_limit", json!(limit(v.limits.download_rate))),
        ("dl_speed", i["dlspeed"].clone()),
        ("dl_speed_avg", json!(0)),
        ("download_path", json!("")),
        ("eta", i["eta"].clone()),
        ("hash", json!(v.info_hash)),
        ("infohash_v1", json!(v.info_hash)),
        ("infohash_v2", json!(f.infohash_v2)),
        ("is_private", json!(meta.is_some_and(|m| m.info.private))),
        (
            "last_seen",
            json!(if f.swarm.seen_complete > 0 {
                f.swarm.seen_complete
            } else {
                -1
            }),
        ),
        ("name", json!(v.name)),
        ("nb_connections", json!(v.peers)),
        ("nb_connections_limit", json!(-1)),
        ("peers", i["num_leechs"].clone()),
        ("peers_total", peers_total),
        (
            "piece_size",
            json!(meta.map_or(-1, |m| m.info.layout.piece_length as i64)),
        ),
        ("pieces_have", json!(pieces_have)),
        (
            "pieces_num",
            json!(meta.map_or(-1, |m| i64::from(m.info.layout.num_pieces))),
        ),
        ("reannounce", json!(f.swarm.reannounce_s)),
        ("save_path", i["save_path"].clone()),
        ("seeding_time", json!(v.seeding_s)),
        ("seeds", i["num_seeds"].clone()),
        ("seeds_total", seeds_total),
        ("share_ratio", i["ratio"].clone()),
        ("time_elapsed", i["time_active"].clone()),
        (
            "total_downloaded",
            json!(v.downloaded_total.max(v.downloaded)),
        ),
        ("total_downloaded_session", json!(v.downloaded)),
        ("total_size", i["total_size"].clone()),
        ("total_uploaded", json!(v.uploaded)),
        ("total_uploaded_session", json!(f.uploaded_session)),
        (
            "total_wasted",
            json!(t.as_ref().map_or(0, |t| {
                t.fetch
                    .hash_failures
                    .load(std::sync::atomic::Ordering::Relaxed)
                    * t.meta.info.layout.piece_length
            })),
        ),
        ("up_limit", json!(limit(v.limits.upload_rate))),
        ("up_speed", json!(f.upspeed)),
        (
            "up_speed_avg",
            json!(v.uploaded.checked_div(v.seeding_s).unwrap_or(0)),
        ),
    ] {
        m.insert(k.into(), val);
    }
    Reply::Json(Value::Object(m))
}

fn files(q: &Qbt, f: &Facts, t: Option<Arc<Torrent>>) -> Reply {
    // A torrent being checked (just added, or reopened) has no torrent object yet: its files
    // come from the metainfo, none of their pieces verified, as qBittorrent lists them then.
    let from_meta;
    let layout = match &t {
        Some(t) => &t.meta.info.layout,
        None => {
            let id = crate::control::parse_info_hash(&f.view.info_hash).ok();
            match id.and_then(|id| q.service.layout_of(id)) {
                Some(l) => {
                    from_meta = l;
                    &from_meta
                }
                // a magnet without its metadata has no files yet
                None => return Reply::Json(json!([])),
            }
        }
    };
    let verified = |i: u32| t.as_ref().is_some_and(|t| t.pieces.verified.get(i));
    // every piece (a finished download with skipped files is not a seed)
    let complete = t.as_ref().is_some_and(|t| t.pieces.verified.is_full());
    let plen = layout.piece_length.max(1);
    let prio = &f.view.qbt.file_prio;
    let mut out = Vec::new();
    for (_, file) in layout.data_files() {
        let first = (file.offset / plen) as u32;
        let last = if file.length == 0 {
            first
        } else {
            ((file.offset + file.length - 1) / plen) as u32
        };
        // the file's bytes in verified pieces, as libtorrent's file progress (an empty file is
        // complete, qBittorrent's `filesProgress`)
        let have: u64 = (first..=last)
            .filter(|&i| verified(i))
            .map(|i| {
                let start = (u64::from(i) * plen).max(file.offset);
                let end = (u64::from(i) * plen + plen).min(file.end());
                end.saturating_sub(start)
            })
            .sum();
        let progress = if complete || file.length == 0 || have >= file.length {
            1.0
        } else {
            have as f64 / file.length as f64
        };
        let mut o = json!({
            "availability": match &t {
                _ if complete => -1.0,
                Some(t) => file_availability(t, first, last),
                None => 0.0,
            },
            "index": out.len(),
            "name": file.path.join("/"),
            "piece_range": [first, last],
            "priority": prio.get(out.len()).copied().unwrap_or(crate::download::want::NORMAL),
            "progress": progress,
            "size": file.length,
        });
        if out.is_empty()
            && let Some(m) = o.as_object_mut()
        {
            // qBittorrent's `isSeed`: finished (every wanted piece) or seeding
            m.insert("is_seed".into(), json!(f.has_metadata && f.left == 0));
        }
        out.push(o);
    }
    Reply::Json(Value::Array(out))
}

/// A file's availability as libtorrent gives it: the distributed copies over its pieces.
fn file_availability(t: &Torrent, first: u32, last: u32) -> f64 {
    let n = last - first + 1;
    let avail = |i| t.pieces.availability(i);
    let min = (first..=last).map(avail).min().unwrap_or(0);
    let above = (first..=last).filter(|&i| avail(i) > min).count();
    f64::from(min) + above as f64 / f64::from(n)
}

fn trackers(_q: &Qbt, f: &Facts, _t: Option<Arc<Torrent>>) -> Reply {
    let private = _t.as_ref().is_some_and(|t| t.meta.info.private);
    let mut out: Vec<Value> = ["** [DHT] **", "** [PeX] **", "** [LSD] **"]
        .iter()
        .map(|url| {
            // ringseed has peer exchange (not for private torrents), no DHT, no LSD
            let on = *url == "** [PeX] **" && !private;
            json!({
                "msg": if private { "This torrent is private" } else { "" },
                "num_downloaded": 0, "num_leeches": 0, "num_peers": 0, "num_seeds": 0,
                "status": if on { 2 } else { 0 }, "tier": -1, "url": url,
            })
        })
        .collect();
    let n = |x: Option<u32>| x.map_or(-1, i64::from);
    for r in &f.trackers {
        let status = match r.state {
            TrackerState::NotContacted => 1,
            TrackerState::Working => 2,
            TrackerState::Updating => 3,
            TrackerState::NotWorking => 4,
        };
        out.push(json!({
            "msg": r.message,
            "num_downloaded": -1,
            "num_leeches": n(r.leeches),
            "num_peers": n(r.peers),
            "num_seeds": n(r.seeds),
            "status": status,
            "tier": r.tier,
            "url": r.url,
        }));
    }
    Reply::Json(Value::Array(out))
}

fn webseeds(_q: &Qbt, _f: &Facts, t: Option<Arc<Torrent>>) -> Reply {
    let list = t.map_or_else(Vec::new, |t| {
        t.meta
            .url_list
            .iter()
            .map(|u| json!({ "url": u }))
            .collect()
    });
    Reply::Json(Value::Array(list))
}

fn piece_states(_q: &Qbt, _f: &Facts, t: Option<Arc<Torrent>>) -> Reply {
    let list = t.map_or_else(Vec::new, |t| {
        (0..t.meta.info.layout.num_pieces)
            .map(|i| json!(if t.pieces.verified.get(i) { 2 } else { 0 }))
            .collect()
    });
    Reply::Json(Value::Array(list))
}

/// The limits `torrents/add` may set on what it adds.
fn add_limits(p: &Params) -> crate::state::Limits {
    let rate = |k: &str| p.int(k).filter(|r| *r > 0).map(|r| r as u64);
    crate::state::Limits {
        upload_rate: rate("upLimit"),
        download_rate: rate("dlLimit"),
        // -2 (or absent) the global limit; -1 none, which ringseed writes as 0
        ratio: p.float("ratioLimit").and_then(|r| match r {
            r if r >= 0.0 => Some(r.min(crate::control::types::MAX_RATIO)),
            r if r > -1.5 => Some(0.0),
            _ => None,
        }),
        seed_time_s: p.int("seedingTimeLimit").and_then(|m| match m {
            m if m >= 0 => {
                Some((m as u64).min(crate::control::types::MAX_SEED_TIME_MIN as u64) * 60)
            }
            -1 => Some(0),
            _ => None,
        }),
        inactive_seed_time_s: p.int("inactiveSeedingTimeLimit").and_then(|m| match m {
            m if m >= 0 => {
                Some((m as u64).min(crate::control::types::MAX_SEED_TIME_MIN as u64) * 60)
            }
            -1 => Some(0),
            _ => None,
        }),
    }
}

/// `contentLayout` as qBittorrent 4.5.2 reads it: a name it does not know is `Original`, and
/// so is its absence (the preference `torrent_content_layout` is `Original` here). The older
/// `root_folder` is ignored, as qbittorrent-nox 4.5.2 ignores it.
fn content_layout_of(p: &Params) -> ContentLayout {
    p.get("contentLayout")
        .and_then(ContentLayout::parse)
        .unwrap_or_default()
}

fn add(q: &Qbt, p: &Params) -> Reply {
    let category = p
        .get("category")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let tags = match tags_of(p) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Some(c) = &category
        && crate::control::organise::check_category_name(c).is_err()
    {
        return Reply::Error(StatusCode::CONFLICT, "Incorrect category name".into());
    }
    for f in &p.files {
        if crate::metainfo::Metainfo::from_bytes(&f.data).is_err() {
            return Reply::Error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Error: '{}' is not a valid torrent file.", f.filename),
            );
        }
    }
    let save_path = p
        .get("savepath")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            p.get("savepath")
                .filter(|s| s.starts_with('/'))
                .map(|_| "/".into())
        });
    // a save path outside the data root is refused before anything is added
    if let (Some(path), Some(root)) = (&save_path, q.service.data_root())
        && crate::control::confine_save_path(&root, path).is_err()
    {
        return Reply::Error(StatusCode::CONFLICT, "Cannot make save path".into());
    }
    // automatic management: the category's save path, whatever `savepath` says
    let auto_tmm = p.flag("autoTMM").unwrap_or(false);
    let save_path = if auto_tmm { None } else { save_path };
    let rename = p
        .get("rename")
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 1024 && !n.contains(['\0', '\n', '\r']))
        .map(str::to_string);
    let qbt = crate::state::QbtSettings {
        name: rename,
        seq_dl: p.flag("sequentialDownload").unwrap_or(false),
        first_last_prio: p.flag("firstLastPiecePrio").unwrap_or(false),
        auto_tmm,
        trackers: None,
        file_prio: Vec::new(),
        file_paths: Vec::new(),
    };
    let options = AddOptions {
        save_path,
        paused: p.flag("paused").unwrap_or(false) || p.flag("stopped").unwrap_or(false),
        skip_check: (p.flag("skip_checking").unwrap_or(false)
            || p.flag("seedMode").unwrap_or(false))
        .then_some(true),
        source: None,
        trusted_path: false,
        peers: Vec::new(),
        category: category.clone(),
        tags,
        content_layout: content_layout_of(p),
    };
    // an unknown category is created (empty save path: the data root), as qBittorrent does,
    // and removed again if nothing was added (qBittorrent creates it only with a torrent)
    let mut created = None;
    if let Some(c) = &category
        && !q.service.categories().iter().any(|k| &k.name == c)
    {
        match q.service.create_category(c, "") {
            Ok(()) => created = Some(c.clone()),
            Err(ControlError::CategoryExists(_)) => {}
            Err(e) => return org_error(e, "Incorrect category name"),
        }
    }
    let limits = add_limits(p);
    let urls: Vec<&str> = p
        .get("urls")
        .unwrap_or("")
        .split('\n')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .take(MAX_URLS)
        .collect();
    let mut added = 0;
    let mut after = |id: [u8; 20]| {
        added += 1;
        if limits != crate::state::Limits::default()
            && let Err(e) = q.service.set_limits(id, limits)
        {
            tracing::warn!("qBittorrent API: limits of an added torrent: {e}");
        }
        // (a magnet's are kept once its metadata is there: not yet, see the docs)
        if qbt != crate::state::QbtSettings::default() {
            let want = qbt.clone();
            if let Err(e) = q.service.set_qbt(&[id], move |s, _| {
                *s = crate::state::QbtSettings {
                    trackers: s.trackers.take(),
                    ..want.clone()
                };
                Ok(())
            }) {
                tracing::warn!("qBittorrent API: settings of an added torrent: {e}");
            }
        }
    };
    for f in &p.files {
        match q.service.add(f.data.clone(), options.clone()) {
            Ok(id) => after(id),
            Err(e) => tracing::info!("qBittorrent API: {} not added: {e}", f.filename),
        }
    }
    for url in urls {
        if super::fetch_url::is_http(url) {
            let got = super::fetch_url::fetch_blocking(url, crate::control::MAX_TORRENT_FILE)
                .and_then(|bytes| {
                    crate::metainfo::Metainfo::from_bytes(&bytes)
                        .map_err(|e| format!("not a torrent file: {e}"))?;
                    q.service
                        .add(bytes, options.clone())
                        .map_err(|e| e.to_string())
                });
            match got {
                Ok(id) => after(id),
                Err(e) => tracing::info!("qBittorrent API: URL {url:?} not added: {e}"),
            }
            continue;
        }
        if !url.to_ascii_lowercase().starts_with("magnet:") {
            tracing::info!("qBittorrent API: URL {url:?} not added: not a magnet or http(s) link");
            continue;
        }
        match q.service.add_magnet(url, options.clone()) {
            Ok(id) => after(id),
            Err(e) => tracing::info!("qBittorrent API: magnet not added: {e}"),
        }
    }
    if added == 0
        && let Some(c) = created
        && let Err(e) = q.service.remove_categories(&[c])
    {
        tracing::warn!("qBittorrent API: category of a failed add: {e}");
    }
    Reply::text(if added > 0 { "Ok." } else { "Fails." })
}
